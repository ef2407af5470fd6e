"""``tianyan bench stream``: what one worker does on this machine, measured on the real stack.

(a) ceiling     a plain aiokafka consumer decoding the same messages (msgspec, the contract)
(b) end to end  one ``tianyan worker`` from Kafka into TimescaleDB, messages and samples/s,
                and the CPU the worker, PostgreSQL and the Kafka broker spent a message
(c) latency     last sample time → rows committed, p50 and p99, while messages arrive in real
                time at a set rate (from the worker's histogram, interpolated within buckets)
(d) COPY        the sink's rows/s against psql's own COPY of the same rows into the same table
(e) memory      the worker's peak resident memory, with every simulated elevator's state;
                and, measured offline, one elevator's state once its trip histories are
                full (a worker that ran for days; the bench's minute or two fills them
                with a few trips only), per elevator and per 10,000

The workload is a simulated city (``simulator``) written to JSON Lines. Each stage runs on
a :func:`~tianyan.harness.pipeline` of its own (topics, consumer group and database, all
removed afterwards), so one stage's rows never meet the next one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from foundation import contract
from foundation.kafka_security import aiokafka_config
from foundation.settings import PROJECT_ROOT, Settings
from replay.sources import peek_key
from streams.producer import RawPublisher
from streams.sinks import TimescaleSink
from tianyan.harness import Run, pipeline
from tianyan.procstat import cpu_s, peak_rss_kb, tree_cpu_s

PARTITIONS = 8


@dataclass
class BenchConfig:
    elevators: int = 12_000
    duration_s: float = 90.0
    rate_msgs_per_s: float = 10_000.0
    latency_s: float = 30.0
    detectors: bool = True


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A folder under ``var/`` for one bench run (its workload, a few hundred MB at the
    defaults, and its services' logs): removed when the run completes, kept and named when
    it fails. Every run used to leave its folder behind."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=PROJECT_ROOT / "var"))
    try:
        yield tmp
    except BaseException:
        _say(f"bench: kept {tmp} (the workload and the services' logs)")
        raise
    shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _pipeline(
    settings: Settings, work: Path, partitions: int = PARTITIONS, prefix: str = "tianyan_bench"
) -> Iterator[Run]:
    """A pipeline of its own for one bench stage: database ``<prefix>_<random>``."""
    with pipeline(settings, f"{prefix}_{uuid.uuid4().hex[:8]}", work, partitions=partitions) as run:
        yield run


def _workload(cfg: BenchConfig, start: dt.datetime, duration_s: float, path: Path) -> int:
    import simulator
    from registry.generate import generate

    scenario = simulator.load_scenario(simulator.SCENARIO_DIR / "busy.toml")
    fleet = generate(2026, cfg.elevators, start.date())
    summary = simulator.simulate(
        scenario,
        fleet,
        start=start,
        duration_s=duration_s,
        output=simulator.FileOutput(path),
        progress=False,
    )
    return summary.messages


#: Elevators of the workload whose states are measured at a full history.
STATE_SAMPLE_ELEVATORS = 300


def state_memory(path: Path, sample: int = STATE_SAMPLE_ELEVATORS) -> dict[str, float]:
    """(e) One elevator's state in the worker's memory once its trip histories are full:
    the detectors folded over the first ``sample`` elevators of the workload, each robust
    z-score's history then filled to its size, every state checkpointed and restored ten
    times over, and the restored copies' Python heap measured (tracemalloc)."""
    import gc
    import tracemalloc

    import numpy as np

    from detectors.catalog import detectors as catalog
    from detectors.stats import TripHealthState
    from detectors.thresholds import ElevatorLimits, Thresholds
    from streams.ingest import ElevatorState, Ingest, RawRecord

    limits = ElevatorLimits(rated_speed_mps=1.75, rated_load_kg=1000.0, floors=20)
    ingest = Ingest(0, limits_for=lambda _: limits, thresholds=Thresholds())
    chosen: set[bytes] = set()
    with path.open("rb") as f:
        for offset, line in enumerate(f):
            key = peek_key(line)
            if key is None or (key not in chosen and len(chosen) >= sample):
                continue
            chosen.add(key)
            ingest.process([RawRecord(key, line.rstrip(b"\n"), 0, offset, None)])
    rng = np.random.default_rng(0)
    for st in ingest.states.values():
        for det in st.detectors.values():
            if isinstance(det, TripHealthState):
                for rz in det.history.values():
                    for x in rng.normal(1.0, 0.1, rz.size):
                        rz.learn_one(float(x))
    saved = [st.encode() for st in ingest.states.values()]
    detectors = catalog()
    gc.collect()
    tracemalloc.start()
    try:
        copies = [ElevatorState.decode(b, detectors) for b in saved for _ in range(10)]
        heap_bytes, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_elevator = heap_bytes / len(copies)
    return {
        "state_full_history_kb_per_elevator": per_elevator / 1000,
        "state_full_history_mb_per_10000": per_elevator * 10_000 / 1e6,
        "state_checkpoint_kb_per_elevator": sum(map(len, saved)) / len(saved) / 1000,
    }


def ceiling(settings: Settings, topic: str, expected: int) -> float:
    """(a) messages/s of a plain aiokafka consumer decoding every message."""
    from aiokafka import AIOKafkaConsumer

    async def run() -> float:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            max_poll_records=5000,
            **aiokafka_config(settings.kafka_security),
        )
        await consumer.start()
        n, started = 0, None
        try:
            while n < expected:
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                if started is None and batches:
                    started = time.perf_counter()
                for records in batches.values():
                    for r in records:
                        with contextlib.suppress(contract.InvalidMessage):
                            contract.decode(r.value)
                    n += len(records)
        finally:
            await consumer.stop()
        return n / (time.perf_counter() - (started or time.perf_counter()))

    return asyncio.run(run())


def _metrics(port: int) -> dict[str, float]:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("tianyan_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _stop_worker(run: Run, name: str) -> int:
    """Stop the worker; returns its peak resident memory in kB."""
    peak = peak_rss_kb(run.group.procs[name].pid)
    run.group.stop(name)
    return peak


def end_to_end(run: Run, expected: int, detectors: bool) -> dict[str, Any]:
    """(b) one worker draining ``expected`` messages already in the run's raw topic."""
    port = run.start_worker(TIANYAN_DETECTORS="on" if detectors else "off")

    def folded() -> float:
        m = _metrics(port)
        return sum(
            m.get(f"tianyan_{what}_total", 0.0)
            for what in ("messages", "duplicates", "quarantined")
        )

    try:
        first = run.wait(folded, lambda n: n > 0, "the worker's first batch")
        if first >= expected:
            raise RuntimeError(
                f"bench: all {expected} messages fit in the worker's first batch, so no rate can"
                " be measured; give it more elevators or a longer --duration"
            )
        cpu0, t0, m0 = _cpu_by_part(run), time.perf_counter(), _metrics(port)
        run.wait(folded, lambda n: n >= expected, f"the worker folding {expected} messages")
        cpu1, t1, m1 = _cpu_by_part(run), time.perf_counter(), _metrics(port)
    finally:
        peak_kb = _stop_worker(run, "worker")
    seconds = t1 - t0
    messages = m1["tianyan_messages_total"] - m0["tianyan_messages_total"]
    return {
        "messages_per_s": messages / seconds,
        "samples_per_s": (m1["tianyan_samples_total"] - m0["tianyan_samples_total"]) / seconds,
        "peak_rss_mb": peak_kb / 1024,
        # Where the machine's cores went while the rate was measured. A worker near one core
        # is limited by its own Python (one interpreter lock); well below it, by what it
        # waits on or by its threads handing that lock to each other (a profile tells which).
        "cpu_cores": {part: round((cpu1[part] - cpu0[part]) / seconds, 2) for part in cpu0},
        "cpu_us_per_msg": {
            part: round((cpu1[part] - cpu0[part]) / messages * 1e6, 1) for part in cpu0
        },
    }


def _cpu_by_part(run: Run) -> dict[str, float]:
    """CPU seconds used so far by the run's worker, PostgreSQL (its postmaster and every
    backend) and the Kafka broker."""
    from tianyan.stack import LocalKafka, LocalPostgres

    postmaster, broker = LocalPostgres(run.settings).pid(), LocalKafka(run.settings).pid()
    return {
        "worker": cpu_s([run.group.procs["worker"].pid]),
        "postgres": tree_cpu_s(postmaster) if postmaster else math.nan,
        "kafka": cpu_s([broker]) if broker else math.nan,
    }


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Quantile from cumulative histogram buckets, linear within the bucket."""
    total = buckets[-1][1]
    target = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= target:
            if le == float("inf"):
                return prev_le
            span = n - prev_n
            return prev_le + (le - prev_le) * ((target - prev_n) / span if span else 1.0)
        prev_le, prev_n = le, n
    return prev_le


def latency(run: Run, cfg: BenchConfig, tmp: Path) -> dict[str, float]:
    """(c) real-time arrival at ``rate`` messages/s; p50/p99 of sample → durable."""
    lead_s = 20.0
    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead_s)
    path = tmp / "realtime.jsonl"
    _workload(cfg, start.replace(microsecond=0), cfg.latency_s, path)
    lines = path.read_bytes().splitlines()
    # Thin the city to the target rate: keep whole elevators (their order and seq intact).
    wanted = cfg.rate_msgs_per_s * cfg.latency_s
    keep_every = max(1, round(len(lines) / wanted)) if len(lines) > wanted else 1
    timed = []
    for ln in lines:
        key = peek_key(ln) or b""
        if key and int(key) % keep_every:
            continue
        try:
            due = contract.decode(ln).samples.t_ms[-1] / 1000
        except contract.InvalidMessage:
            due = 0.0  # malformed: sent at once
        timed.append((due, key, ln))
    timed.sort(key=lambda item: item[0])
    port = run.start_worker(TIANYAN_DETECTORS="on" if cfg.detectors else "off")
    try:
        # Publish each message when its last sample has happened, as a terminal would.
        raw = run.settings.raw_topic
        with RawPublisher(
            run.settings.kafka_bootstrap, raw, linger_ms=5, security=run.settings.kafka_security
        ) as pub:
            for due, key, line in timed:
                wait = due - time.time()
                if wait > 0:
                    time.sleep(wait)
                pub.publish(key, line)
        time.sleep(5)
        m = _metrics(port)
    finally:
        _stop_worker(run, "worker")
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), v)
        for k, v in m.items()
        if k.startswith("tianyan_sample_to_durable_seconds_bucket")
    )
    return {
        "latency_rate_msgs_per_s": len(timed) / cfg.latency_s,
        "latency_p50_s": _quantile(buckets, 0.50),
        "latency_p99_s": _quantile(buckets, 0.99),
    }


def copy_rates(run: Run, path: Path, tmp: Path, limit: int = 100_000) -> dict[str, float]:
    """(d) the sink's rows/s, then psql COPY of the same rows into the same empty table."""
    messages, originals = [], []
    with path.open("rb") as f:
        for line in f:
            raw = line.rstrip(b"\n")
            try:
                messages.append(contract.decode(raw))
            except contract.InvalidMessage:
                continue
            originals.append(raw)  # as the worker does: COPY of the bytes received
            if len(messages) >= limit:
                break
    with psycopg.connect(run.admin_url, autocommit=True) as conn:
        conn.execute("TRUNCATE tianyan.telemetry_sample")
    started = time.perf_counter()
    rows = 0
    with TimescaleSink(run.writer_url) as sink:
        for i in range(0, len(messages), 2000):
            rows += sink.write_batch(
                messages[i : i + 2000], originals=originals[i : i + 2000]
            ).samples
    sink_s = time.perf_counter() - started
    csv_path = tmp / "rows.csv"
    # COPY of a hypertable itself reads only its (empty) parent: select from it instead.
    subprocess.run(
        [
            "psql",
            run.admin_url,
            "-q",
            "-c",
            f"\\copy (SELECT * FROM tianyan.telemetry_sample) TO '{csv_path}' (FORMAT csv)",
        ],
        check=True,
    )
    with psycopg.connect(run.admin_url, autocommit=True) as conn:
        conn.execute("TRUNCATE tianyan.telemetry_sample")
    started = time.perf_counter()
    subprocess.run(
        [
            "psql",
            run.admin_url,
            "-q",
            "-c",
            f"\\copy tianyan.telemetry_sample FROM '{csv_path}' (FORMAT csv)",
        ],
        check=True,
    )
    psql_s = time.perf_counter() - started
    with psycopg.connect(run.admin_url) as conn:
        copied = conn.execute("SELECT count(*) FROM tianyan.telemetry_sample").fetchone()
    if not copied or copied[0] != rows:
        raise RuntimeError(f"bench: psql copied {copied} rows, expected {rows}")
    return {
        "copy_rows": rows,
        "sink_rows_per_s": rows / sink_s,
        "psql_copy_rows_per_s": rows / psql_s,
    }


def run(settings: Settings, cfg: BenchConfig) -> dict[str, object]:
    with scratch_dir("tianyan-bench-") as tmp:
        result: dict[str, object] = {"elevators": cfg.elevators}
        start = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
        _say(f"bench: simulating {cfg.elevators} elevators for {cfg.duration_s:.0f} s")
        path = tmp / "workload.jsonl"
        result["simulated_messages"] = _workload(cfg, start, cfg.duration_s, path)
        with _pipeline(settings, tmp / "detectors-off") as off_run:
            published = off_run.publish(path).messages
            result["messages"] = published
            _say(f"bench: (a) plain aiokafka consumer over {published} messages")
            ceiling_msgs_per_s = ceiling(settings, off_run.settings.raw_topic, published)
            result["ceiling_msgs_per_s"] = ceiling_msgs_per_s
            _say("bench: (b) one worker end to end, detectors off then on")
            off = end_to_end(off_run, published, detectors=False)
            result |= {f"worker_{k}": v for k, v in off.items()}
            result["ratio_b_over_a"] = off["messages_per_s"] / ceiling_msgs_per_s
            _say("bench: (d) COPY rows/s, sink against psql")
            result |= copy_rates(off_run, path, tmp)
        if cfg.detectors:
            with _pipeline(settings, tmp / "detectors-on") as on_run:
                on_run.publish(path)
                on = end_to_end(on_run, published, detectors=True)
                result |= {f"worker_with_detectors_{k}": v for k, v in on.items()}
        _say(
            f"bench: (c) latency at {cfg.rate_msgs_per_s:.0f} messages/s for {cfg.latency_s:.0f} s"
        )
        with _pipeline(settings, tmp / "latency") as rt_run:
            result |= latency(rt_run, cfg, tmp)
        result["peak_rss_mb"] = off["peak_rss_mb"]
        _say("bench: (e) one elevator's state at a full trip history, offline")
        result |= state_memory(path)
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}
