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


#: Every sample column, in table order, as raw_sample and telemetry_sample both have them.
_SAMPLE_COLUMNS = "time, elevator_id, seq, " + ", ".join(contract.COLUMNS[1:])


def _raw_samples(conn: psycopg.Connection, table: str) -> list[tuple]:
    return conn.execute(f"SELECT {_SAMPLE_COLUMNS} FROM tianyan.{table} ORDER BY 2, 1").fetchall()


def test_old_raw_chunks_are_packed_and_read_back_unchanged(scratch_db: str) -> None:
    """Chunks older than the pack age become elevator-minute rows (migration 0012), read
    back by raw_sample exactly as stored; a sample stored again after its minute was packed
    is merged by the next pack, not kept twice; retention drops packed hours too."""
    migrate(scratch_db)
    now = dt.datetime.now(dt.UTC)
    # At a minute's start, the trip's 6 s of samples are one row, over TOAST's 2 kB. Begun in
    # a minute's last 6 s (one run in ten), it was two rows under it, as was the 9-day-old
    # trip begun at the same second: nothing was compressed.
    three_hours_ago = (now - dt.timedelta(hours=3)).replace(second=0, microsecond=0)
    old = _store(scratch_db, three_hours_ago)
    recent = _store(scratch_db, now - dt.timedelta(minutes=5))
    very_old = _store(scratch_db, now - dt.timedelta(days=9))
    with psycopg.connect(_writer(scratch_db), autocommit=True) as conn:
        before = _raw_samples(conn, "telemetry_sample")
        packed = conn.execute("SELECT tianyan.pack_raw_chunks(60)").fetchone()
        left = conn.execute("SELECT count(*) FROM tianyan.telemetry_sample").fetchone()
        minutes = conn.execute("SELECT count(*) FROM tianyan.telemetry_sample_minute").fetchone()
        after = _raw_samples(conn, "raw_sample")
        compressed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_column_compression(speed_mps) = 'lz4')"
            " FROM tianyan.telemetry_sample_minute"
        ).fetchone()
        again = _store(scratch_db, three_hours_ago)  # a replay of packed history
        doubled = conn.execute("SELECT count(*) FROM tianyan.raw_sample").fetchone()
        conn.execute("SELECT tianyan.pack_raw_chunks(60)")
        merged = _raw_samples(conn, "raw_sample")
        minutes_merged = conn.execute(
            "SELECT count(*) FROM tianyan.telemetry_sample_minute"
        ).fetchone()
        with pytest.raises(psycopg.errors.RaiseException, match="at least 1"):
            conn.execute("SELECT tianyan.pack_raw_chunks(0)")
        conn.execute("SELECT tianyan.drop_old_raw_chunks(7)")
        kept = conn.execute("SELECT count(*) FROM tianyan.raw_sample").fetchone()
    assert len(before) == old + recent + very_old
    assert packed is not None and packed[0] >= 2  # the 3-hour-old and the 9-day-old chunks
    assert left == (recent,)
    assert minutes is not None and 0 < minutes[0] < old + very_old
    assert after == before
    assert compressed is not None and compressed[0] >= 1  # a moving minute's arrays are lz4
    assert again == old and doubled == (len(before) + old,)
    assert merged == before and minutes_merged == minutes
    assert kept == (old + recent,)


@pytest.mark.parametrize("packed", [False, True], ids=["recent", "packed"])
def test_incident_evidence_survives_retention(scratch_db: str, packed: bool) -> None:
    migrate(scratch_db)
    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=6)
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
        if packed:
            conn.execute("SELECT tianyan.pack_raw_chunks(60)")
        args = [incident, ELEVATOR, when - dt.timedelta(minutes=5), when + dt.timedelta(minutes=5)]
        copied = conn.execute(
            "SELECT tianyan.copy_incident_evidence(%s, %s, %s, %s)", args
        ).fetchone()
        again = conn.execute(
            "SELECT tianyan.copy_incident_evidence(%s, %s, %s, %s)", args
        ).fetchone()
        conn.execute("SELECT tianyan.drop_old_raw_chunks(5)")
        raw = conn.execute("SELECT count(*) FROM tianyan.raw_sample").fetchone()
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
