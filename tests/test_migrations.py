"""Migrations against the real TimescaleDB: fresh install, re-run no-op, edits refused."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from sql.migrate import MigrationError, discover, migrate

HYPERTABLES = {
    "telemetry_sample",
    "telemetry_sample_minute",
    "telemetry_code",
    "window_feature",
    "trip",
    "evidence_sample",
}
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
    assert report.idempotent == [
        "10_views.sql",
        "15_scoped_views.sql",
        "20_functions.sql",
        "25_backfill.sql",
        "30_regulator_figures.sql",
        "90_grants.sql",
    ]
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


def test_0006_carries_applied_alerts_over_to_the_alert_s_one_id(
    scratch_db: str, migrations_copy: Path
) -> None:
    """Before 0006 the dispatcher kept its own record of an alert (key and state); after it,
    a reference to the alert's row by the alert's id. Every record is carried over: linked
    to the alert's row, or to a row rebuilt from what is known when the alert had none."""
    import datetime as dt
    import uuid

    from detectors.alerts import ALERT_NAMESPACE

    mig_dir, idem_dir = migrations_copy / "migrations", migrations_copy / "idempotent"
    later = [p for p in mig_dir.glob("*.sql") if p.name >= "0006"]
    held = {p: p.read_text() for p in later}
    for p in later:
        p.unlink()
    migrate(scratch_db, mig_dir, idem_dir)

    def one_id(key: str, state: str) -> uuid.UUID:
        return uuid.uuid5(ALERT_NAMESPACE, f"{key}|{state}")

    car, other = "32070000000000000001", "32070000000000000002"
    t0 = dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC)
    ms = int(t0.timestamp() * 1000)
    opening, repeat = f"{car}:trapped_at_level:{ms}", f"{car}:trapped_at_level:{ms + 5000}"
    orphan = f"{other}:overload:{ms}"
    incident = uuid.uuid4()
    applied = t0 + dt.timedelta(minutes=1)
    with psycopg.connect(scratch_db) as conn:
        conn.execute("SET search_path = tianyan")
        alert_sql = (
            "INSERT INTO alert (alert_id, alert_key, state, raised_at, condition_since,"
            " elevator_id, alert_type, severity, detector, evidence)"
            " VALUES (%s, %s, 'raised', %s, %s, %s, 'trapped_at_level', 'critical', 'rules',"
            " '{}')"
        )
        conn.execute(alert_sql, (one_id(opening, "raised"), opening, t0, t0, car))
        # a row under another id than the one id (none was ever written so; still carried)
        conn.execute(alert_sql, (uuid.uuid4(), repeat, t0, t0, car))
        conn.execute(
            "INSERT INTO incident (incident_id, elevator_id, fault_type, gb_code, severity,"
            " state, opened_at, updated_at, closed_at, closed_by, alert_key)"
            " VALUES (%s, %s, 'trapped_at_level', '11', 'critical', 'resolved', %s, %s, %s,"
            " 'detector', %s)",
            (incident, car, t0, t0, t0 + dt.timedelta(minutes=9), opening),
        )
        conn.cursor().executemany(
            "INSERT INTO incident_alert (alert_key, state, incident_id, applied_at)"
            " VALUES (%s, %s, %s, %s)",
            [
                (opening, "raised", incident, applied),
                (repeat, "raised", incident, applied),
                (repeat, "cleared", incident, applied),  # applied; its row never stored
                (orphan, "cleared", None, applied),  # applied, changed nothing; no row
            ],
        )
    for p, text in held.items():
        p.write_text(text)
    assert migrate(scratch_db, mig_dir, idem_dir).applied == [p.name for p in sorted(later)]

    with psycopg.connect(scratch_db) as conn:
        conn.execute("SET search_path = tianyan")
        links = conn.execute(
            "SELECT l.alert_id, a.alert_key, a.state, l.incident_id, l.applied_at"
            " FROM incident_alert l JOIN alert a USING (alert_id) ORDER BY a.alert_key, a.state"
        ).fetchall()
        rebuilt = conn.execute(
            "SELECT alert_key, state, elevator_id, alert_type, gb_code, severity, raised_at,"
            " condition_since, evidence ? 'reconstructed' FROM alert"
            " WHERE detector = 'unknown' ORDER BY alert_key"
        ).fetchall()
        alerts = conn.execute("SELECT count(*) FROM alert").fetchone()
    assert links == [
        (one_id(opening, "raised"), opening, "raised", incident, applied),
        (one_id(repeat, "cleared"), repeat, "cleared", incident, applied),
        (one_id(repeat, "raised"), repeat, "raised", incident, applied),
        (one_id(orphan, "cleared"), orphan, "cleared", None, applied),
    ]
    assert alerts == (4,)
    assert rebuilt == [
        (
            repeat,
            "cleared",
            car,
            "trapped_at_level",
            "11",
            "critical",
            t0 + dt.timedelta(minutes=9),  # the incident it resolved closed then
            t0 + dt.timedelta(seconds=5),
            True,
        ),
        (orphan, "cleared", other, "overload", None, "info", t0, t0, True),
    ]
