"""``tianyan bench city``: the whole city's telemetry at real-time rate through as many
workers as asked, on this machine (issue 13 part 4).

1. The busy scenario for ``elevators`` cars and ``minutes`` is simulated to a JSON Lines
   file before the clock starts, and every message's samples are counted (each
   ``(elevator, seq)`` once: the duplicates the scenario injects are no new samples).
2. A run of its own (:func:`~tianyan.harness.pipeline`: topics, consumer group, database)
   with ``workers`` stream workers in one consumer group; the file is published to the raw
   topic paced by its sample times at real time, each message when its last sample
   happened, as terminals send.
3. Every second, the workers' own consumer lag, summed over the partitions: read
   (``tianyan_consumer_read_lag_messages``, what they have yet to see) and committed
   (``tianyan_consumer_lag_messages``, which adds what they saw but have not checkpointed:
   up to ``TIANYAN_CHECKPOINT_INTERVAL_MS``, 5 s, whatever the load); and messages folded.
   A lag in seconds is the lag in messages over the run's arrival rate; the read lag's p99
   over the publishing time is the figure (goal < 5 s). Sample → row durable p50 and p99
   come from the workers' histogram, as in ``bench stream``.
   The publisher shares the machine: how far it fell behind real time is printed too.
4. When the file is out, the workers drain what is left; then every sample must be stored
   once (``raw_sample``; the primary key forbids a second copy, so a count below the
   expected one is a loss), and memory and storage per elevator are printed.
5. The rate the workers folded at while a backlog waited for them (:func:`saturated_rate`)
   is what they hold together; from it, the workers a city of ``elevators`` needs at its
   mean arrival rate (and the CPU they used).

The last line is one JSON object.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from foundation import contract
from foundation.settings import Settings
from tianyan.bench import (
    BenchConfig,
    _metrics,
    _pipeline,
    _quantile,
    _say,
    _workload,
    scratch_dir,
)
from tianyan.harness import Run
from tianyan.procstat import cpu_s, peak_rss_kb

#: The consumer-lag goal of issue 13, s (p99 over the publishing time).
LAG_GOAL_S = 5.0
#: Raw-topic partitions: enough for several workers to share.
PARTITIONS = 16
#: Time to simulate and count before publishing: a fixed part and a part per simulated
#: elevator-second (this machine: ~15 µs; the busy scenario, simulation and counting).
PREPARE_LEAD_S = 30.0
PREPARE_S_PER_ELEVATOR_SECOND = 25e-6


@dataclass
class CityBenchConfig:
    elevators: int = 40_000
    minutes: float = 10.0
    workers: int = 2


def expected_samples(path: Path) -> tuple[int, int]:
    """(messages, samples) of the file's valid messages, each ``(elevator, seq)`` once."""
    seen: set[tuple[str, int]] = set()
    samples = 0
    with path.open("rb") as f:
        for line in f:
            try:
                m = contract.decode(line.rstrip(b"\n"))
            except contract.InvalidMessage:
                continue
            key = (m.elevator_id, m.seq)
            if key not in seen:
                seen.add(key)
                samples += len(m.samples.t_ms)
    return len(seen), samples


class _Sampler:
    """Every second: the workers' summed consumer lag — read (messages they have yet to
    see) and committed (also those seen but not yet checkpointed) — and messages folded."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.points: list[tuple[float, float, float]] = []  # (t, read lag, folded)
        self.committed: list[tuple[float, float]] = []  # (t, committed lag)
        self.histogram: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            read = committed = folded = 0.0
            histogram: dict[str, float] = {}
            for port in self.ports:
                for name, value in _metrics(port).items():
                    if name.startswith("tianyan_consumer_read_lag_messages"):
                        read += value
                    elif name.startswith("tianyan_consumer_lag_messages"):
                        committed += value
                    elif name == "tianyan_messages_total":
                        folded += value
                    elif name.startswith("tianyan_sample_to_durable_seconds_bucket"):
                        histogram[name] = histogram.get(name, 0.0) + value
            now = time.perf_counter()
            self.points.append((now, read, folded))
            self.committed.append((now, committed))
            if histogram:
                self.histogram = histogram

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _p99(values: list[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def saturated_rate(points: list[tuple[float, float, float]], backlog_msgs: float) -> float | None:
    """Messages/s the workers folded together while a backlog of at least ``backlog_msgs``
    waited for them (so they were never idle), over every such second of the run; None if
    there were fewer than 10 such seconds.

    >>> saturated_rate([(float(t), 5_000.0, 1_000.0 * t) for t in range(12)], 1_000.0)
    1000.0
    >>> saturated_rate([(float(t), 10.0, 1_000.0 * t) for t in range(12)], 1_000.0) is None
    True
    """
    seconds = folded = 0.0
    for (ta, lag_a, fa), (tb, lag_b, fb) in itertools.pairwise(points):
        if lag_a >= backlog_msgs and lag_b >= backlog_msgs:
            seconds += tb - ta
            folded += fb - fa
    return folded / seconds if seconds >= 10.0 else None


def _storage_bytes(run: Run) -> int:
    """Bytes the run's rows take, indexes included: raw samples (recent and packed),
    windows and trips (hypertables), and alerts."""
    hypertables = ("telemetry_sample", "telemetry_sample_minute", "window_feature", "trip")
    size = sum(int(run.scalar("SELECT hypertable_size(%s::regclass)", t) or 0) for t in hypertables)
    return size + int(run.scalar("SELECT pg_total_relation_size('alert')") or 0)


def run(settings: Settings, cfg: CityBenchConfig) -> dict[str, object]:
    with scratch_dir("tianyan-city-") as tmp:
        path = tmp / "city.jsonl"
        seconds = cfg.minutes * 60.0
        result: dict[str, object] = {"elevators": cfg.elevators, "minutes": cfg.minutes}
        _say(f"bench city: simulating {cfg.elevators} elevators for {cfg.minutes:g} min")
        # The simulated day starts when publishing will: a lead for simulating and counting,
        # so that every message is published when its last sample happens.
        lead_s = PREPARE_LEAD_S + PREPARE_S_PER_ELEVATOR_SECOND * cfg.elevators * seconds
        start = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead_s)).replace(microsecond=0)
        result["simulated_messages"] = _workload(
            BenchConfig(elevators=cfg.elevators), start, seconds, path
        )
        messages, samples = expected_samples(path)
        result |= {"expected_messages": messages, "expected_samples": samples}
        mean_rate = messages / seconds
        result["mean_arrival_msgs_per_s"] = mean_rate
        try:
            with _pipeline(settings, tmp / "run", PARTITIONS, "tianyan_city") as city:
                ports = [city.start_worker(f"worker {i + 1}") for i in range(cfg.workers)]
                pids = [city.group.procs[f"worker {i + 1}"].pid for i in range(cfg.workers)]
                cpu0 = [cpu_s([p]) for p in pids]
                late_s = (dt.datetime.now(dt.UTC) - start).total_seconds()
                if late_s < 0:
                    time.sleep(-late_s)
                result["publish_started_after_simulated_start_s"] = max(0.0, late_s)
                _say(f"bench city: publishing at real time through {cfg.workers} worker(s)")
                with _Sampler(ports) as sampler:
                    t0 = time.perf_counter()
                    published = city.publish(path, speed=1.0)
                    t1 = time.perf_counter()

                    def stored() -> int:
                        return int(city.scalar("SELECT count(*) FROM raw_sample") or 0)

                    _say("bench city: the workers draining what is left")
                    city.wait(stored, lambda n: n >= samples, f"{samples} samples stored")
                    t2 = time.perf_counter()
                cpu = [cpu_s([p]) - c for p, c in zip(pids, cpu0, strict=True)]
                rss_kb = [peak_rss_kb(p) for p in pids]
                stored_samples = stored()
                storage = _storage_bytes(city)
        finally:
            path.unlink(missing_ok=True)
        arrival_rate = published.messages / (t1 - t0)
        lags_s = [lag / arrival_rate for t, lag, _ in sampler.points if t0 <= t <= t1]
        lag_p99 = _p99(lags_s)
        committed_s = [lag / arrival_rate for t, lag in sampler.committed if t0 <= t <= t1]
        buckets = sorted(
            (float(k.split('le="')[1].split('"')[0]), v) for k, v in sampler.histogram.items()
        )
        result |= {
            "workers": cfg.workers,
            "published_messages": published.messages,
            "publish_s": t1 - t0,
            # The publisher shares the machine: when it cannot keep real time, arrivals are
            # slower than the city's and the lag below is the lag at that slower rate.
            "publisher_behind_real_time_s": max(0.0, (t1 - t0) - seconds),
            "arrival_msgs_per_s": published.messages / (t1 - t0),
            "drain_after_publish_s": t2 - t1,
            "consumer_lag_p99_s": lag_p99,
            "consumer_lag_max_s": max(lags_s, default=math.nan),
            "lag_goal_met": lag_p99 < LAG_GOAL_S,
            "committed_lag_p99_s": _p99(committed_s),
            "sample_to_durable_p50_s": _quantile(buckets, 0.50) if buckets else math.nan,
            "sample_to_durable_p99_s": _quantile(buckets, 0.99) if buckets else math.nan,
            "stored_samples": stored_samples,
            "every_sample_stored_once": stored_samples == samples,
            "worker_peak_rss_mb": [round(k / 1024, 1) for k in rss_kb],
            "memory_per_elevator_kb": sum(rss_kb) / cfg.elevators,
            "storage_bytes_per_elevator": storage / cfg.elevators,
            "storage_per_elevator_day_mb": storage / cfg.elevators * (86_400 / seconds) / 1e6,
            "worker_cpu_cores": [round(c / (t2 - t0), 2) for c in cpu],
        }
        # A backlog of 2 s of arrivals: the workers had work waiting every moment.
        drain = saturated_rate(sampler.points, 2.0 * arrival_rate)
        if drain is not None:
            per_worker = drain / cfg.workers
            result["saturated_msgs_per_s_per_worker"] = per_worker
            result["workers_needed"] = math.ceil(mean_rate / per_worker)
        else:
            result["saturated_msgs_per_s_per_worker"] = None
            result["workers_needed"] = cfg.workers  # they kept up: never a backlog for long
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}
