"""``tianyan bench evidence``: what recording an incident costs when the raw table is large.

A database of the run's own gets ``--rows`` raw samples (default 50 million: 5,000 elevators
× 10,000 one-second samples, 12 chunks of 15 minutes), generated in SQL. Then, per call:

- ``copy_incident_evidence`` for random elevators (the ±5-minute window around an incident);
- ``ledger_append`` alone;
- ``store.apply_alert`` of a trapping: the whole transaction the dispatcher runs (incident,
  event, outbox row, evidence request, ledger), without the device command;
- ``store.copy_requested_evidence``: the copy that request asks for, made by the
  dispatcher's evidence timer outside the alert's transaction;
- the same with ``--contenders`` other connections appending to the ledger meanwhile, to
  show that nothing slow runs while the ledger lock is held.

Figures are printed, the last line as JSON; the database is dropped afterwards unless
``--keep``.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import threading
import time
import uuid
from typing import Any

import numpy as np
import psycopg

from foundation.settings import Settings

#: Samples per elevator: one a second.
SAMPLES_PER_ELEVATOR = 10_000
#: Rows inserted per statement while filling (keeps each transaction a few seconds long).
FILL_STEP_ELEVATORS = 250


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _ms(samples: list[float]) -> dict[str, float]:
    a = np.array(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "max_ms": round(float(a.max()), 2),
    }


def run(settings: Settings, *, rows: int, calls: int, contenders: int, keep: bool) -> dict:
    from detectors.alerts import make_alert
    from rescue import store
    from sql.migrate import migrate
    from tianyan.harness import create_database, drop_database

    elevators = max(1, rows // SAMPLES_PER_ELEVATOR)
    tag = uuid.uuid4().hex[:8]
    dbname = f"tianyan_bench_evidence_{tag}"
    admin_url = create_database(settings, dbname)
    try:
        migrate(admin_url)
        t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        started = time.monotonic()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for first in range(0, elevators, FILL_STEP_ELEVATORS):
                last = min(elevators, first + FILL_STEP_ELEVATORS) - 1
                conn.execute(
                    "INSERT INTO telemetry_sample SELECT %s + make_interval(secs => s),"
                    " lpad(e::text, 20, '0'), s, 1.0, 0.0, 3.0 * (s %% 30), s %% 30, 1, 450.0,"
                    " 0, true, 0.0, true, false, 1"
                    " FROM generate_series(%s::int, %s::int) e,"
                    " generate_series(0, %s - 1) s",
                    (t0, first, last, SAMPLES_PER_ELEVATOR),
                )
                _say(
                    f"  filled {(last + 1) * SAMPLES_PER_ELEVATOR:,} of"
                    f" {elevators * SAMPLES_PER_ELEVATOR:,} samples"
                    f" ({time.monotonic() - started:.0f} s)"
                )
            conn.execute("ANALYZE telemetry_sample")
            total = conn.execute("SELECT count(*) FROM telemetry_sample").fetchone()
            chunks = conn.execute("SELECT count(*) FROM show_chunks('telemetry_sample')").fetchone()
        fill_s = time.monotonic() - started
        assert total is not None and chunks is not None
        _say(f"{total[0]:,} samples in {chunks[0]} chunks, filled in {fill_s:.0f} s")

        rng = random.Random(24476)
        span_s = SAMPLES_PER_ELEVATOR - 700

        def window() -> tuple[str, dt.datetime, dt.datetime]:
            e = str(rng.randrange(elevators)).zfill(20)
            at = t0 + dt.timedelta(seconds=rng.randrange(350, span_s))
            return e, at - dt.timedelta(seconds=300), at + dt.timedelta(seconds=300)

        copy_s, copied = [], []
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for _ in range(calls):
                e, lo, hi = window()
                t = time.perf_counter()
                n = conn.execute(
                    "SELECT copy_incident_evidence(%s, %s, %s, %s)", (uuid.uuid4(), e, lo, hi)
                ).fetchone()
                copy_s.append(time.perf_counter() - t)
                copied.append(n[0] if n else 0)
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS) SELECT s.* FROM telemetry_sample s"
                    ' WHERE s.elevator_id = %s::char(20) COLLATE "C"'
                    " AND s.time >= %s AND s.time <= %s",
                    window(),
                )
            )
            ledger_s = []
            for i in range(calls):
                t = time.perf_counter()
                with conn.transaction():
                    conn.execute("SELECT ledger_append('bench', %s, '{}')", (str(i),))
                ledger_s.append(time.perf_counter() - t)

        config = store.DispatchConfig(("http://127.0.0.1:9/96333",), (300, 900, 1800), 1800)

        def trapping() -> Any:
            e, lo, _ = window()
            since_ms = int((lo + dt.timedelta(seconds=300)).timestamp() * 1000)
            return make_alert(
                e, "trapped_between_levels", since_ms, since_ms + 30_000, {}, estimated_trapped=1
            )

        def apply_many(n: int) -> list[float]:
            out = []
            with psycopg.connect(admin_url, autocommit=True) as conn:
                for _ in range(n):
                    alert = trapping()
                    t = time.perf_counter()
                    store.apply_alert(conn, alert, config, received_at=dt.datetime.now(dt.UTC))
                    out.append(time.perf_counter() - t)
            return out

        apply_s = apply_many(calls)
        request_s = []
        with psycopg.connect(admin_url, autocommit=True) as conn:
            while True:  # the dispatcher's evidence timer, one request per transaction
                t = time.perf_counter()
                done, _ = store.copy_requested_evidence(conn, 1)
                if not done:
                    break
                request_s.append(time.perf_counter() - t)
        stop = threading.Event()

        def contend() -> None:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                while not stop.is_set():
                    with conn.transaction():
                        conn.execute("SELECT ledger_append('contender', 'x', '{}')")

        threads = [threading.Thread(target=contend, daemon=True) for _ in range(contenders)]
        for th in threads:
            th.start()
        contended_s = apply_many(calls)
        stop.set()
        for th in threads:
            th.join(10)
        summary = {
            "raw_samples": total[0],
            "raw_chunks": chunks[0],
            "fill_seconds": round(fill_s, 1),
            "calls": calls,
            "evidence_rows_per_call_mean": round(float(np.mean(copied)), 1),
            **{f"copy_incident_evidence_{k}": v for k, v in _ms(copy_s).items()},
            **{f"ledger_append_{k}": v for k, v in _ms(ledger_s).items()},
            **{f"apply_trapping_{k}": v for k, v in _ms(apply_s).items()},
            **{f"requested_evidence_copy_{k}": v for k, v in _ms(request_s).items()},
            "contenders": contenders,
            **{f"apply_trapping_contended_{k}": v for k, v in _ms(contended_s).items()},
        }
        _say(plan)
        return summary
    finally:
        if not keep:
            drop_database(settings, dbname)
        else:
            _say(f"kept: {admin_url}")
