"""``tianyan bench backfill``: what re-deriving history costs.

A database of the run's own gets a simulated fleet (``--scenario``, default the demo's
faults; ``--elevators`` × ``--minutes``) stored as the worker stores it (:func:`store_stream`: the
worker's :class:`streams.ingest.Ingest` and :class:`streams.sinks.TimescaleSink`), its raw
samples then packed into elevator-minutes (``pack_raw_chunks``, as the worker does after
an hour), and then, timed, over the whole run but its first and last ten minutes:

- a backfill with the thresholds the rows were derived with (nothing to replace: every row
  compared, none written);
- a backfill with changed thresholds (``overspeed_ratio`` 1.05, ``trapped_after_s`` 45);
- the same again (nothing to replace);
- ``audit verify`` afterwards (must pass).

Figures are printed, the last line as JSON; the database is dropped unless ``--keep``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from detectors.thresholds import ElevatorLimits, Thresholds
from foundation.settings import Settings, role_url
from streams.ingest import Ingest, RawRecord
from streams.sinks import TimescaleSink

#: 01:00 UTC is 09:00 in Lianyungang: the morning peak.
START = dt.datetime(2025, 3, 3, 1, 0, tzinfo=dt.UTC)
#: The changed thresholds the second backfill applies.
CHANGED = {"overspeed_ratio": 1.05, "trapped_after_s": 45.0}
#: Records per batch, as the worker takes them.
BATCH = 500


def store_stream(
    writer_url: str,
    records: Sequence[bytes],
    limits_for: Callable[[str], ElevatorLimits],
    thresholds: Thresholds,
    grace_ms: int,
) -> int:
    """Store raw records as the worker does, offline: one partition, in batches, a tick
    after each (no arrival times: terminals' clocks are not judged). Returns the messages
    stored."""
    ingest = Ingest(grace_ms, limits_for=limits_for, thresholds=thresholds)
    stored = 0
    with TimescaleSink(writer_url) as sink:
        for i in range(0, len(records), BATCH):
            batch = ingest.process(
                [RawRecord(None, v, 0, i + k) for k, v in enumerate(records[i : i + BATCH])]
            )
            ticked = ingest.tick()
            sink.write_batch(
                batch.messages,
                batch.windows,
                batch.trips,
                batch.alerts + ticked.alerts,
                maintenance_sessions=batch.maintenance_sessions,
            )
            stored += len(batch.messages)
    return stored


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(
    settings: Settings, *, elevators: int, minutes: float, scenario: str, keep: bool
) -> dict[str, object]:
    import simulator
    from registry.generate import generate
    from registry.store import upsert
    from replay.backfill import backfill
    from rescue.ledger import verify
    from sql.migrate import migrate
    from tianyan.harness import create_database, drop_database

    dbname = f"tianyan_bench_backfill_{uuid.uuid4().hex[:8]}"
    admin_url = create_database(settings, dbname)
    writer_url = role_url(admin_url, "tianyan_writer")
    result: dict[str, object] = {
        "scenario": scenario,
        "elevators": elevators,
        "minutes": minutes,
    }
    try:
        migrate(admin_url)
        fleet = generate(2026, elevators, START.date())
        upsert(admin_url, fleet)
        limits = {e.registration_code: ElevatorLimits.of(e) for e in fleet}
        _say(f"bench: simulating {elevators} elevators × {minutes:g} min")
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / "run.jsonl"
            simulator.simulate(
                simulator.load_scenario(simulator.SCENARIO_DIR / f"{scenario}.toml"),
                fleet,
                start=START,
                duration_s=minutes * 60,
                output=simulator.FileOutput(path),
                progress=False,
            )
            records = [line for line in path.read_bytes().splitlines() if line.strip()]
        _say(f"bench: storing {len(records):,} messages as the worker does")
        result["messages_stored"] = store_stream(
            writer_url, records, limits.__getitem__, Thresholds(), settings.grace_ms
        )
        with psycopg.connect(writer_url, autocommit=True) as conn:
            conn.execute("SELECT tianyan.pack_raw_chunks(1)")
        lo = START + dt.timedelta(minutes=10)
        hi = START + dt.timedelta(minutes=minutes - 10)
        result["range_minutes"] = (hi - lo).total_seconds() / 60
        for name, th in (
            ("same_thresholds", Thresholds()),
            ("changed_thresholds", Thresholds.from_mapping(CHANGED)),
            ("changed_again", Thresholds.from_mapping(CHANGED)),
        ):
            _say(f"bench: backfill, {name.replace('_', ' ')}")
            summary = backfill(
                writer_url, lo, hi, thresholds=th, grace_ms=settings.grace_ms, progress=False
            )
            result[f"{name}_s"] = summary.wall_s
            result[f"{name}_slices_per_s"] = round(summary.slices / summary.wall_s, 1)
            result[f"{name}_messages_per_s"] = round(summary.messages / summary.wall_s)
            result[f"{name}_rows"] = {
                "windows": summary.windows.__dict__,
                "trips": summary.trips.__dict__,
                "alerts": summary.alerts.__dict__,
            }
        started = time.perf_counter()
        report = verify(admin_url)
        result["audit_verify_s"] = round(time.perf_counter() - started, 2)
        result["audit_verify_ok"] = report.ok
    finally:
        if keep:
            _say(f"bench: database kept: {admin_url}")
        else:
            drop_database(settings, dbname)
    return result


def as_json(result: dict[str, object]) -> str:
    return json.dumps(result, ensure_ascii=False)
