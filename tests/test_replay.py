"""Replay: history from files or TimescaleDB back into the real Kafka, per-elevator order and
event times preserved, nothing duplicated downstream."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import time
from pathlib import Path

import psycopg

from foundation import contract
from foundation.settings import Settings
from replay import from_database, from_jsonl, replay
from streams.producer import RawPublisher
from streams.sinks import TimescaleSink
from tianyan.demo import trip_messages

from .conftest import TIANYAN, consume_all


def _history(first_id: int, t0_ms: int, elevators: int = 6, trips: int = 3) -> list:
    """Several elevators, several trips each, interleaved in time as a fleet would send them."""
    messages = []
    for e in range(elevators):
        eid = f"{first_id + e:020d}"
        seq = 0
        for trip in range(trips):
            for m in trip_messages(eid, t0_ms + trip * 20_000 + e * 137):
                messages.append(
                    contract.TelemetryMessage(
                        schema=m.schema, elevator_id=eid, seq=seq, kind=m.kind, samples=m.samples
                    )
                )
                seq += 1
    return sorted(messages, key=lambda m: m.samples.t_ms[0])


def _by_elevator(records: list) -> dict[str, list[contract.TelemetryMessage]]:
    out: dict[str, list[contract.TelemetryMessage]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        m = contract.decode(r.value)
        assert r.key == m.elevator_id.encode()
        out.setdefault(m.elevator_id, []).append(m)
    return out


def test_jsonl_replay_preserves_bytes_order_and_times(
    settings: Settings, fresh_topic: str, tmp_path: Path
) -> None:
    history = _history(32079900000000000000, 1_795_000_000_000)
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"".join(contract.encode(m) + b"\n" for m in history) + b'{"broken\n')
    with RawPublisher(settings.kafka_bootstrap, fresh_topic) as pub:
        summary = replay(from_jsonl(path), pub, progress=False)
    assert summary.messages == len(history) + 1 and summary.without_key == 1
    assert summary.first_event_ms == history[0].samples.t_ms[0]
    records = consume_all(settings.kafka_bootstrap, fresh_topic, len(history) + 1)
    assert len(records) == len(history) + 1
    good = [r for r in records if r.key]
    assert sorted(r.value for r in good) == sorted(contract.encode(m) for m in history)
    for eid, msgs in _by_elevator(good).items():
        assert [m.seq for m in msgs] == sorted(m.seq for m in msgs), eid
        original = [m for m in history if m.elevator_id == eid]
        assert [m.samples.t_ms for m in msgs] == [m.samples.t_ms for m in original]


def test_database_replay_twice_duplicates_nothing_downstream(
    settings: Settings, fresh_topic: str
) -> None:
    t0 = (int(time.time()) - 7200) * 1000
    # Elevator ids of this run only: (elevator, seq) identifies a message.
    history = _history(32079800000000000000 + random.randrange(10**9) * 100, t0)
    ids = sorted({m.elevator_id for m in history})
    with TimescaleSink(settings.database_url) as sink:
        stored = sink.write_samples(history)
    lo = dt.datetime.fromtimestamp(t0 / 1000 - 1, dt.UTC)
    hi = dt.datetime.fromtimestamp(t0 / 1000 + 120, dt.UTC)
    for _ in range(2):
        with RawPublisher(settings.kafka_bootstrap, fresh_topic) as pub:
            summary = replay(
                from_database(settings.database_url, lo, hi, elevators=ids), pub, progress=False
            )
        assert summary.messages == len(history)
    records = consume_all(settings.kafka_bootstrap, fresh_topic, 2 * len(history))
    assert len(records) == 2 * len(history)
    replayed = _by_elevator(records)
    for eid in ids:
        original = [m for m in history if m.elevator_id == eid]
        got = replayed[eid]
        # Twice, each time in the original per-elevator order with the original times.
        assert [m.seq for m in got] == [m.seq for m in original] * 2
        assert [m.samples.t_ms for m in got] == [m.samples.t_ms for m in original] * 2
        assert [m.samples.position_m for m in got[: len(original)]] == [
            m.samples.position_m for m in original
        ]
    # Downstream, the idempotent sink stores each sample once however often it is replayed.
    with TimescaleSink(settings.database_url) as sink:
        assert sink.write_samples([m for msgs in replayed.values() for m in msgs]) == 0
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM tianyan.telemetry_sample WHERE elevator_id = ANY(%s)", [ids]
        ).fetchone()
    assert rows == (stored,)


def test_database_replay_reads_packed_history(
    settings: Settings, fresh_topic: str, scratch_db: str
) -> None:
    """History already packed into elevator-minute rows (migration 0012) replays as the
    messages that were stored: same seq, times and values."""
    from replay.sources import count_database
    from sql.migrate import migrate

    migrate(scratch_db)
    t0 = (int(time.time()) - 7200) * 1000
    history = _history(32079700000000000000, t0, elevators=3, trips=2)
    with TimescaleSink(scratch_db) as sink:
        sink.write_samples(history)
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        packed = conn.execute("SELECT tianyan.pack_raw_chunks(60)").fetchone()
        left = conn.execute("SELECT count(*) FROM tianyan.telemetry_sample").fetchone()
    assert packed is not None and packed[0] >= 1 and left == (0,)
    lo = dt.datetime.fromtimestamp(t0 / 1000 - 1, dt.UTC)
    hi = dt.datetime.fromtimestamp(t0 / 1000 + 120, dt.UTC)
    assert count_database(scratch_db, lo, hi) == len(history)
    with RawPublisher(settings.kafka_bootstrap, fresh_topic) as pub:
        summary = replay(from_database(scratch_db, lo, hi), pub, progress=False)
    assert summary.messages == len(history)
    replayed = _by_elevator(consume_all(settings.kafka_bootstrap, fresh_topic, len(history)))
    for eid, got in replayed.items():
        original = [m for m in history if m.elevator_id == eid]
        assert [(m.seq, m.samples) for m in got] == [(m.seq, m.samples) for m in original]


def test_replay_command_prints_a_json_summary(
    settings: Settings, fresh_topic: str, tmp_path: Path
) -> None:
    history = _history(32079700000000000000, 1_795_100_000_000, elevators=2, trips=1)
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"".join(contract.encode(m) + b"\n" for m in history))
    res = subprocess.run(
        [TIANYAN, "replay", "--from", str(path), "--topic", fresh_topic, "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["messages"] == len(history)
    bad = subprocess.run(
        [TIANYAN, "replay", "--start", "2026-01-02", "--end", "2026-01-01", "--topic", fresh_topic],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "is not after start" in bad.stderr
