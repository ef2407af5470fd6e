"""Migrations against the real TimescaleDB: fresh install, re-run no-op, edits refused."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from sql.migrate import MigrationError, discover, migrate

HYPERTABLES = {"telemetry_sample", "telemetry_code", "window_feature", "trip", "evidence_sample"}
TABLES = HYPERTABLES | {
    "elevator",
    "alert",
    "incident",
    "incident_event",
    "webhook_delivery",
    "risk_grade",
    "audit_ledger",
}


def _schema_snapshot(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'tianyan' ORDER BY 1, 2"
        ).fetchall()


def test_fresh_install(scratch_db: str) -> None:
    report = migrate(scratch_db)
    assert report.applied == [m.filename for m in discover()]
    assert report.idempotent == ["10_views.sql", "20_functions.sql", "90_grants.sql"]
    with psycopg.connect(scratch_db) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'tianyan' AND table_type = 'BASE TABLE'"
            ).fetchall()
        }
        hypertables = {
            r[0]
            for r in conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables "
                "WHERE hypertable_schema = 'tianyan'"
            ).fetchall()
        }
        license_ = conn.execute("SELECT current_setting('timescaledb.license')").fetchone()
        raw_chunk = conn.execute(
            "SELECT time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'telemetry_sample'"
        ).fetchone()
    assert tables >= TABLES
    assert hypertables == HYPERTABLES
    assert license_ == ("apache",)
    assert raw_chunk is not None and raw_chunk[0].total_seconds() == 15 * 60


def test_rerun_is_a_no_op(scratch_db: str) -> None:
    migrate(scratch_db)
    before = _schema_snapshot(scratch_db)
    report = migrate(scratch_db)
    assert report.applied == []
    assert report.already_applied == len(discover())
    assert _schema_snapshot(scratch_db) == before


def test_edited_migration_is_refused(scratch_db: str, migrations_copy: Path) -> None:
    mig_dir, idem_dir = migrations_copy / "migrations", migrations_copy / "idempotent"
    migrate(scratch_db, mig_dir, idem_dir)
    first = sorted(mig_dir.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- a quiet edit\n")
    with pytest.raises(MigrationError, match=rf"{first.name} was edited after it was applied"):
        migrate(scratch_db, mig_dir, idem_dir)


def test_removed_migration_is_refused(scratch_db: str, migrations_copy: Path) -> None:
    mig_dir, idem_dir = migrations_copy / "migrations", migrations_copy / "idempotent"
    migrate(scratch_db, mig_dir, idem_dir)
    sorted(mig_dir.glob("*.sql"))[0].unlink()
    with pytest.raises(MigrationError, match="its file is gone"):
        migrate(scratch_db, mig_dir, idem_dir)


def test_new_migration_applies_after_the_old(scratch_db: str, migrations_copy: Path) -> None:
    mig_dir, idem_dir = migrations_copy / "migrations", migrations_copy / "idempotent"
    migrate(scratch_db, mig_dir, idem_dir)
    (mig_dir / "9999_test_column.sql").write_text("ALTER TABLE elevator ADD COLUMN test_note text;")
    assert migrate(scratch_db, mig_dir, idem_dir).applied == ["9999_test_column.sql"]
    with psycopg.connect(scratch_db) as conn:
        conn.execute("SELECT test_note FROM tianyan.elevator")


def test_failing_migration_rolls_back(scratch_db: str, migrations_copy: Path) -> None:
    mig_dir, idem_dir = migrations_copy / "migrations", migrations_copy / "idempotent"
    migrate(scratch_db, mig_dir, idem_dir)
    (mig_dir / "9999_broken.sql").write_text(
        "CREATE TABLE tianyan.half_done (x int);\nSELECT no_such_function();"
    )
    with pytest.raises(MigrationError, match=r"9999_broken\.sql failed"):
        migrate(scratch_db, mig_dir, idem_dir)
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT to_regclass('tianyan.half_done')").fetchone() == (None,)


def test_badly_named_file_is_refused(migrations_copy: Path) -> None:
    (migrations_copy / "migrations" / "2_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_lowercase_name\.sql"):
        discover(migrations_copy / "migrations")
