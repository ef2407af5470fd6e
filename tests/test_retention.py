"""Retention and evidence on the real TimescaleDB: old raw chunks dropped by the pipeline's
own function (as the writer role), windows, trips and incident evidence kept."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from foundation import contract
from foundation.settings import role_url
from sql.migrate import migrate
from streams.sinks import TimescaleSink
from tianyan.demo import trip_messages

ELEVATOR = "32070000000000000777"


def _writer(url: str) -> str:
    return role_url(url, "tianyan_writer")


def _store(url: str, when: dt.datetime) -> int:
    messages = trip_messages(ELEVATOR, int(when.timestamp() * 1000))
    with TimescaleSink(_writer(url)) as sink:
        return sink.write_samples(messages)


def test_old_raw_chunks_are_dropped_and_the_rest_kept(scratch_db: str) -> None:
    migrate(scratch_db)
    now = dt.datetime.now(dt.UTC)
    old = _store(scratch_db, now - dt.timedelta(days=9))
    recent = _store(scratch_db, now - dt.timedelta(hours=2))
    with psycopg.connect(scratch_db) as conn:
        conn.execute(
            "INSERT INTO tianyan.trip VALUES (%s, %s, %s, 1, 3, 1, 6.0, 6.0, 1.6, 0.8, 1.0, 150,"
            " 2.0, 2.5, 2.5)",
            [now - dt.timedelta(days=9), ELEVATOR, now - dt.timedelta(days=9)],
        )
    with psycopg.connect(_writer(scratch_db)) as conn:
        dropped = conn.execute("SELECT tianyan.drop_old_raw_chunks(7)").fetchone()
        left = conn.execute("SELECT count(*) FROM tianyan.telemetry_sample").fetchone()
        trips = conn.execute("SELECT count(*) FROM tianyan.trip").fetchone()
        with pytest.raises(psycopg.errors.RaiseException, match="at least 1"):
            conn.execute("SELECT tianyan.drop_old_raw_chunks(0)")
    assert old > 0 and dropped is not None and dropped[0] >= 1
    assert left == (recent,)
    assert trips == (1,)  # trips and windows are kept for years


def test_incident_evidence_survives_retention(scratch_db: str) -> None:
    migrate(scratch_db)
    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    stored = _store(scratch_db, when)
    incident = uuid.uuid4()
    with psycopg.connect(scratch_db) as conn:
        conn.execute(
            "INSERT INTO tianyan.incident (incident_id, elevator_id, fault_type, severity, state,"
            " opened_at, updated_at) VALUES (%s, %s, 'trapped_between_levels', 'critical',"
            " 'open', %s, %s)",
            [incident, ELEVATOR, when, when],
        )
    with psycopg.connect(_writer(scratch_db)) as conn:
        args = [incident, ELEVATOR, when - dt.timedelta(minutes=5), when + dt.timedelta(minutes=5)]
        copied = conn.execute(
            "SELECT tianyan.copy_incident_evidence(%s, %s, %s, %s)", args
        ).fetchone()
        again = conn.execute(
            "SELECT tianyan.copy_incident_evidence(%s, %s, %s, %s)", args
        ).fetchone()
        conn.execute("SELECT tianyan.drop_old_raw_chunks(7)")
        raw = conn.execute("SELECT count(*) FROM tianyan.telemetry_sample").fetchone()
        evidence = conn.execute(
            "SELECT count(*) FROM tianyan.evidence_sample WHERE incident_id = %s", [incident]
        ).fetchone()
    assert copied == (stored,) and again == (0,)
    assert raw == (0,)
    assert evidence == (stored,)


def test_late_samples_are_stored_but_not_windowed() -> None:
    from streams.ingest import Ingest, RawRecord

    ingest = Ingest(grace_ms=2_000)
    t0 = 1_795_000_000_000
    trip = trip_messages(ELEVATOR, t0)
    records = [RawRecord(ELEVATOR.encode(), contract.encode(m), 0, i) for i, m in enumerate(trip)]
    # The first second arrives last, long after its window closed.
    late_first, rest = records[0], records[1:]
    out = ingest.process(rest)
    late = ingest.process([late_first])
    assert late.messages == [trip[0]]  # still stored raw
    assert late.late_samples == len(trip[0].samples.t_ms)
    assert out.late_samples == 0
    assert not any(w.bucket_start_ms == t0 // 1000 * 1000 and w.width_s == 1 for w in late.windows)
