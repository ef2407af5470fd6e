"""Shared helpers for the detector tests: simulate a fleet, run the detectors over its
messages in file order through the one detection loop (:func:`evaluation.runs.run_detectors`,
the worker's :class:`streams.ingest.Ingest`), match alerts to fault labels, and time the rules.

Also a script::

    .venv/bin/python -m tests.detectors_support eval  [--cars 12] [--minutes 30] [--seed N]
    .venv/bin/python -m tests.detectors_support bench [--cars 40] [--minutes 30]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from detectors.alerts import Alert
from detectors.rules import SafetyRules
from detectors.thresholds import ElevatorLimits, Thresholds
from evaluation.runs import run_detectors

# The matching rules are product code (evaluation.scoring); SAFETY_LABELS re-exported.
from evaluation.scoring import SAFETY_LABELS as SAFETY_LABELS
from evaluation.scoring import AlertScore, FaultScore, score
from evaluation.scoring import table as report
from foundation.contract import InvalidMessage, TelemetryMessage, decode
from registry.generate import generate
from registry.model import Elevator
from simulator import FileOutput, load_scenario, simulate

HERE = Path(__file__).parent
FAULTS_TOML = HERE / "scenarios" / "detector_faults.toml"
NO_FAULTS_TOML = HERE.parent / "simulator" / "scenarios" / "no_faults.toml"
#: 01:00 UTC is 09:00 in Lianyungang: the morning peak.
START = dt.datetime(2025, 3, 3, 1, 0, tzinfo=dt.UTC)


def elevators(count: int, seed: int = 3) -> list[Elevator]:
    return generate(seed, count, dt.date(2025, 1, 1))


def run_simulation(
    path: Path, scenario_path: Path, cars: list[Elevator], duration_s: float, seed: int | None
) -> None:
    sc = (
        load_scenario(scenario_path, seed=seed)
        if seed is not None
        else load_scenario(scenario_path)
    )
    simulate(sc, cars, start=START, duration_s=duration_s, output=FileOutput(path), progress=False)


def read_messages(path: Path) -> list[TelemetryMessage]:
    """Well-formed messages in file order (malformed lines are the worker's quarantine)."""
    out = []
    for line in path.read_bytes().splitlines():
        try:
            out.append(decode(line))
        except InvalidMessage:
            continue
    return out


def read_labels(path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in path.with_name(f"{path.stem}.labels.jsonl").read_text().splitlines()
    ]


def detect(path: Path, cars: list[Elevator], thresholds: Thresholds | None = None) -> list[Alert]:
    """Every detector over the file's lines, as the worker runs them (the one loop)."""
    limits = {e.registration_code: ElevatorLimits.of(e) for e in cars}
    with path.open("rb") as f:
        run = run_detectors(
            ((None, line.rstrip(b"\r\n")) for line in f),
            limits.__getitem__,
            thresholds or Thresholds(),
        )
    return run.alerts


def sample_times(messages: list[TelemetryMessage]) -> dict[str, list[int]]:
    per: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        per[m.elevator_id].extend(m.samples.t_ms)
    return {k: sorted(v) for k, v in per.items()}


def evaluate(
    labels: list[dict[str, Any]],
    alerts: list[Alert],
    end_ms: int,
    times: dict[str, list[int]],
) -> tuple[dict[str, FaultScore], dict[str, AlertScore]]:
    """(recall per label type, precision per alert type), by :func:`evaluation.scoring.score`.
    ``times``: each car's sample times, to censor labels the signals never showed."""
    start_ms = min((t[0] for t in times.values() if t), default=end_ms)
    ev = score(
        labels,
        alerts,
        end_ms=end_ms,
        sample_times=times,
        elevators=len(times),
        duration_s=(end_ms - start_ms) / 1000,
    )
    return ev.faults, ev.alerts


def bench(messages: list[TelemetryMessage], cars: list[Elevator], repeat: int = 3) -> str:
    """µs per message for the rules over ``messages`` (file order), best of ``repeat``."""
    rules = SafetyRules(Thresholds())
    limits = {e.registration_code: ElevatorLimits.of(e) for e in cars}
    best = float("inf")
    quiet_best = float("inf")
    for _ in range(repeat):
        states = {e: rules.new(e) for e in limits}
        t0 = time.perf_counter()
        for m in messages:
            e = m.elevator_id
            rules.observe(states[e], m, limits[e])
        best = min(best, time.perf_counter() - t0)
    # The common case alone: 10-sample batches that raise nothing, timed one by one.
    states = {e: rules.new(e) for e in limits}
    quiet: list[float] = []
    clock = time.perf_counter
    for m in messages:
        e = m.elevator_id
        t0 = clock()
        out = rules.observe(states[e], m, limits[e])
        dt_s = clock() - t0
        if not out and len(m.samples.t_ms) == 10 and not states[e].active:
            quiet.append(dt_s)
    quiet.sort()
    quiet_best = sum(quiet) / max(1, len(quiet))
    batches = sum(1 for m in messages if m.kind == "batch")
    return (
        f"{len(messages)} messages ({batches} batches) of {len(cars)} elevators: "
        f"{best / len(messages) * 1e6:.2f} µs/message overall (best of {repeat}); "
        f"quiet 10-sample batches: mean {quiet_best * 1e6:.2f} µs, "
        f"median {quiet[len(quiet) // 2] * 1e6 if quiet else float('nan'):.2f} µs "
        f"(timed singly, includes timer overhead ≈ 0.1 µs)"
    )


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("what", choices=("eval", "bench"))
    ap.add_argument("--cars", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--scenario", type=Path, default=None)
    args = ap.parse_args()
    cars = elevators(args.cars)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.jsonl"
        scenario = args.scenario or (FAULTS_TOML if args.what == "eval" else NO_FAULTS_TOML)
        run_simulation(path, scenario, cars, args.minutes * 60, args.seed)
        messages = read_messages(path)
        if args.what == "bench":
            print(bench(messages, cars))
            return
        labels = read_labels(path)
        alerts = detect(path, cars)
        end_ms = max(m.samples.t_ms[-1] for m in messages)
        recall, precision = evaluate(labels, alerts, end_ms, sample_times(messages))
        print(report(recall, precision))
        for k, s in sorted(recall.items()):
            for lb in s.missed[:3]:
                print("MISSED", k, lb["elevator_id"], lb["onset_ms"], lb["ended_ms"], lb["params"])
        for k, s in sorted(precision.items()):
            for a in s.unexplained[:3]:
                print(
                    "UNEXPLAINED",
                    k,
                    a.elevator_id,
                    a.condition_since_ms,
                    a.raised_at_ms,
                    {
                        x: a.evidence.get(x)
                        for x in ("how", "source", "speed_mps", "door", "door_zone", "service_mode")
                    },
                )


if __name__ == "__main__":
    main()
