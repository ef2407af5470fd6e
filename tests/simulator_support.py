"""Shared helpers for the simulator tests: scenarios as dicts, runs into files, signal tables."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from foundation.contract import COLUMNS, InvalidMessage, TelemetryMessage, decode
from registry.generate import generate
from registry.model import Elevator
from simulator import FileOutput, Scenario, SimulationSummary, simulate

#: 01:00 UTC is 09:00 in Lianyungang: the morning peak, so cars are busy.
START = dt.datetime(2025, 3, 3, 1, 0, tzinfo=dt.UTC)

PHYSICAL_FAULTS: dict[str, dict[str, Any]] = {
    "trapped_between_levels": {"rate_per_day": 150, "duration_min_s": 40, "duration_max_s": 90},
    "trapped_at_level": {"rate_per_day": 150, "duration_min_s": 40, "duration_max_s": 90},
    "overtravel_top": {"rate_per_day": 300, "duration_min_s": 20, "duration_max_s": 60},
    "overtravel_bottom": {"rate_per_day": 150, "duration_min_s": 20, "duration_max_s": 60},
    "overspeed": {"probability": 0.05},
    "door_open_while_running": {"probability": 0.03},
    "unintended_movement": {"rate_per_day": 150, "duration_min_s": 20, "duration_max_s": 60},
    "stop_outside_door_zone": {"rate_per_day": 150},
    "runtime_limiter": {"rate_per_day": 150, "duration_min_s": 20, "duration_max_s": 60},
    "overload": {"probability": 0.05},
    "leveling_drift": {"rate_per_day": 50, "mm_per_day_min": 2000, "mm_per_day_max": 3000},
    "door_degradation": {"rate_per_day": 50, "slowdown_per_day_min": 5, "slowdown_per_day_max": 8},
    "door_reopening": {"probability": 0.05},
    "power_loss": {"rate_per_day": 150, "duration_min_s": 20, "duration_max_s": 60},
    "alarm_nuisance": {"probability": 0.05},
}
DEVICE_FAULTS: dict[str, dict[str, Any]] = {
    "dropout": {"rate_per_day": 100, "duration_min_s": 20, "duration_max_s": 60},
    "stuck_sensor": {"rate_per_day": 100, "duration_min_s": 20, "duration_max_s": 60},
    "clock_skew": {
        "rate_per_day": 100,
        "duration_min_s": 20,
        "duration_max_s": 60,
        "skew_min_s": 120,
        "skew_max_s": 600,
    },
    "duplicate": {"probability": 0.005},
    "out_of_order": {"probability": 0.005},
    "malformed": {"probability": 0.005},
}


def scenario(
    name: str = "test",
    seed: int = 7,
    faults: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Scenario:
    doc: dict[str, Any] = {"scenario": {"name": name, "seed": seed}, **sections}
    if faults:
        doc["faults"] = faults
    return Scenario.from_dict(doc)


def fleet(count: int, seed: int = 3) -> list[Elevator]:
    return generate(seed, count, dt.date(2025, 1, 1))


def run(
    sc: Scenario, elevators: list[Elevator], path: Path, duration_s: float = 900.0
) -> SimulationSummary:
    return simulate(
        sc, elevators, start=START, duration_s=duration_s, output=FileOutput(path), progress=False
    )


#: The stream-processing tests' stream: 60 registered elevators (registry seed 99, as of
#: 2026-11-01) for 240 s of ``tests/scenarios/device_faults.toml``: repeats, reordering,
#: garbling, dropouts and overloads.
DEVICE_FAULTS_FLEET = (99, 60, dt.date(2026, 11, 1))


def device_faults_stream(path: Path) -> Path:
    """Simulate the stream-processing tests' stream (:data:`DEVICE_FAULTS_FLEET`) to
    ``path``."""
    from simulator import load_scenario

    simulate(
        load_scenario(Path(__file__).parent / "scenarios" / "device_faults.toml"),
        generate(*DEVICE_FAULTS_FLEET),
        start=dt.datetime(2026, 11, 2, 0, 30, tzinfo=dt.UTC),
        duration_s=240.0,
        output=FileOutput(path),
        progress=False,
    )
    return path


def read_messages(path: Path) -> tuple[list[TelemetryMessage], list[bytes], list[bytes]]:
    """(valid messages in file order, their raw lines, lines failing the contract)."""
    good, raw, bad = [], [], []
    for line in path.read_bytes().splitlines():
        try:
            good.append(decode(line))
            raw.append(line)
        except InvalidMessage:
            bad.append(line)
    return good, raw, bad


def read_labels(path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in path.with_name(f"{path.stem}.labels.jsonl").read_text().splitlines()
    ]


def signals(messages: list[TelemetryMessage]) -> dict[str, dict[str, np.ndarray]]:
    """Per elevator, every sample column (sorted by time, one copy of duplicates), plus
    ``fault_codes`` / ``event_codes``: lists of (t_ms, code)."""
    per: dict[str, dict[int, TelemetryMessage]] = defaultdict(dict)
    for m in messages:
        per[m.elevator_id][m.seq] = m
    out: dict[str, dict[str, Any]] = {}
    for eid, by_seq in per.items():
        cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        codes: list[tuple[int, str]] = []
        events: list[tuple[int, str]] = []
        for seq in sorted(by_seq):
            m = by_seq[seq]
            for c in COLUMNS:
                cols[c].extend(getattr(m.samples, c))
            codes += [(f.t_ms, f.code) for f in m.faults]
            events += [(e.t_ms, e.code) for e in m.events]
        arrays = {c: np.array(v) for c, v in cols.items()}
        order = np.argsort(arrays["t_ms"], kind="stable")
        out[eid] = {c: a[order] for c, a in arrays.items()}
        out[eid]["fault_codes"] = codes
        out[eid]["event_codes"] = events
    return out


def window(sig: dict[str, np.ndarray], onset_ms: int, ended_ms: int | None) -> np.ndarray:
    t = sig["t_ms"]
    end = t[-1] if ended_ms is None else ended_ms
    return (t >= onset_ms) & (t <= end)
