"""Database roles on the real TimescaleDB: who may read and write what."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from foundation.settings import Settings
from sql.migrate import migrate

SAMPLE = (
    "INSERT INTO tianyan.telemetry_sample VALUES (now(), '32070000000000000099', 1, 0, 0, 0, 1, 0,"
    " 0, 0, true, 0, false, false, 1)"
)
ELEVATOR = (
    "INSERT INTO tianyan.elevator (registration_code, address, district, building_type,"
    " rated_speed_mps, rated_load_kg, floors) VALUES ('32070000000000000099', '1 Test Rd',"
    " 'Haizhou', 'residential', 1.0, 800, 6)"
)


@pytest.fixture
def db(scratch_db: str, settings: Settings) -> str:
    migrate(scratch_db)
    with psycopg.connect(scratch_db) as conn:
        conn.execute(ELEVATOR)
        conn.execute(SAMPLE)
    return scratch_db


def _as(url: str, role: str) -> psycopg.Connection:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["user"] = role
    return psycopg.connect(psycopg.conninfo.make_conninfo(**params))


@pytest.mark.parametrize("role", ["tianyan_analyst", "tianyan_regulator"])
def test_read_only_roles_read_but_cannot_write(db: str, role: str) -> None:
    with _as(db, role) as conn:
        assert conn.execute("SELECT count(*) FROM tianyan.telemetry_sample").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM tianyan.public_elevator").fetchone() == (1,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(SAMPLE)
    with _as(db, role) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("UPDATE tianyan.elevator SET floors = 7")
    with _as(db, role) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("CREATE TABLE tianyan.mine (x int)")


def test_public_role_sees_only_the_public_view(db: str) -> None:
    with _as(db, "tianyan_public") as conn:
        row = conn.execute(
            "SELECT registration_code, district, maintenance_overdue FROM tianyan.public_elevator"
        ).fetchone()
        assert row == ("32070000000000000099", "Haizhou", True)
    for table in ("telemetry_sample", "elevator", "incident", "trip", "audit_ledger"):
        with _as(db, "tianyan_public") as conn, pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"SELECT * FROM tianyan.{table} LIMIT 1")


def test_writer_writes_but_only_appends_to_the_ledger(db: str) -> None:
    with _as(db, "tianyan_writer") as conn:
        conn.execute(SAMPLE.replace("now()", "now() - interval '1 second'"))
        conn.execute("SELECT tianyan.ledger_append('test', 'x', '{}')")
        conn.commit()
        assert conn.execute("SELECT count(*) FROM tianyan.telemetry_sample").fetchone() == (2,)
    with _as(db, "tianyan_writer") as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("UPDATE tianyan.audit_ledger SET entity_id = 'y'")
    with _as(db, "tianyan_writer") as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("DELETE FROM tianyan.audit_ledger")
    with _as(db, "tianyan_writer") as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("DELETE FROM tianyan.telemetry_sample")
