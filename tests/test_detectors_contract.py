"""One contract over every detector, in the spirit of river's estimator checks: state
survives a checkpoint mid-stream (identical outputs after restore), runs are deterministic,
memory per elevator is bounded, nothing does I/O, and bad input never raises."""

from __future__ import annotations

import builtins
import json
import math
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from detectors import (
    DETECTORS,
    CohortState,
    ElevatorLimits,
    HalfSpaceTreesDetector,
    RuleState,
    Thresholds,
    TripHealthState,
    cohort_key,
    observe,
    observe_trip,
    score_series,
    tick,
)
from detectors.stats import trip_features
from detectors.testing import UncheckedMessage, car, message
from foundation.records import Trip

EID = "32070620200000000001"
T0 = 1_700_000_000_000
LIM = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000.0, floors=10)
TH = Thresholds()


def messages(seed: int, count: int) -> Iterator[Any]:
    """A car doing random things, now and then broken: trips, stops between floors,
    open doors, passengers, alarms, overspeed, gaps."""
    rng = np.random.default_rng(seed)
    t = T0
    for seq in range(count):
        t += int(rng.choice([1000, 1000, 1000, 30_000, 90_000]))
        state = int(rng.integers(0, 6))
        rows = [
            car(
                t_ms=t + k * 100,
                speed_mps=float(rng.choice([0.0, 1.0, 1.2])) if state == 0 else 0.0,
                position_m=float(rng.uniform(-0.5, 28.0)),
                door=int(rng.integers(0, 4)) if state == 1 else 0,
                door_zone=bool(rng.random() < 0.7),
                passengers=bool(state in (2, 3)),
                alarm=bool(state == 3 and rng.random() < 0.3),
                load_kg=float(rng.uniform(0, 1200)),
                leveling_offset_mm=float(rng.normal(0, 12)),
                service_mode=int(rng.choice([1, 1, 1, 0])),
                direction=int(rng.integers(0, 3)),
            )
            for k in range(10)
        ]
        yield message(rows, seq=seq)


def trips(seed: int, count: int) -> Iterator[Trip]:
    rng = np.random.default_rng(seed)
    t = T0
    for _ in range(count):
        t += int(rng.integers(10_000, 600_000))
        yield Trip(
            start_ms=t,
            elevator_id=EID,
            end_ms=t + 12_000,
            start_floor=1,
            end_floor=4,
            direction=1,
            duration_s=12.0,
            distance_m=9.0,
            peak_speed_mps=float(rng.normal(1.0, 0.01)),
            peak_accel_mps2=float(rng.normal(0.7, 0.02)),
            peak_jerk_mps3=None if rng.random() < 0.1 else float(rng.normal(1.2, 0.05)),
            load_kg=float(rng.uniform(0, 600)),
            leveling_offset_mm=None if rng.random() < 0.05 else float(rng.normal(0, 3)),
            door_opening_s=float(rng.normal(2.5, 0.05)),
            door_closing_s=float(rng.normal(2.6, 0.05)),
        )


@dataclass
class Case:
    """How to drive one detector: make state, feed one input, checkpoint and restore."""

    name: str
    new: Callable[[], Any]
    inputs: Callable[[int, int], Iterator[Any]]
    step: Callable[[Any, Any], tuple[Any, Any]]
    dump: Callable[[Any], bytes]
    load: Callable[[bytes], Any]
    bad: list[Any]


def _rules_step(st: RuleState, m: Any) -> tuple[RuleState, Any]:
    st, out = observe(st, m, LIM, TH)
    st, more = tick(st, m.samples.t_ms[-1] + 70_000, LIM, TH)
    return st, [a.to_dict() for a in out + more]


def _json_dump(st: Any) -> bytes:
    return json.dumps(st.to_dict()).encode()


def _bad_rows() -> list[Any]:
    nan, inf = math.nan, math.inf
    rows = [
        car(t_ms=T0 + 10**9 + k * 100, speed_mps=v, position_m=p, load_kg=ld, leveling_offset_mm=o)
        for k, (v, p, ld, o) in enumerate(
            [(nan, 1.0, 0.0, 0.0), (inf, nan, inf, nan), (-inf, -inf, nan, inf)]
        )
    ]
    return [UncheckedMessage(rows, seq=10**6)]


def _trip_step(st: TripHealthState, trip: Trip) -> tuple[TripHealthState, Any]:
    st, out = observe_trip(st, trip, LIM)
    return st, [a.to_dict() for a in out]


def _cohort_step(st: CohortState, trip: Trip) -> tuple[CohortState, Any]:
    z = st.score_trip(cohort_key(LIM, "residential"), trip_features(trip, LIM))
    return st, {k: None if math.isnan(v) else round(v, 12) for k, v in z.items()}


def _hst_step(det: HalfSpaceTreesDetector, trip: Trip) -> tuple[HalfSpaceTreesDetector, Any]:
    x = trip_features(trip, LIM)
    s = det.score_one(x)
    det.learn_one(x)
    return det, None if math.isnan(s) else s


_bad_trip = Trip(
    start_ms=T0,
    elevator_id=EID,
    end_ms=T0,
    start_floor=1,
    end_floor=1,
    direction=0,
    duration_s=math.nan,
    distance_m=math.inf,
    peak_speed_mps=math.nan,
    peak_accel_mps2=math.inf,
    peak_jerk_mps3=None,
    load_kg=math.nan,
    leveling_offset_mm=math.nan,
    door_opening_s=None,
    door_closing_s=-math.inf,
)

CASES = [
    Case(
        "rules",
        lambda: RuleState.new(EID),
        messages,
        _rules_step,
        _json_dump,
        lambda b: RuleState.from_dict(json.loads(b)),
        _bad_rows(),
    ),
    Case(
        "trip_health",
        lambda: TripHealthState.new(EID),
        trips,
        _trip_step,
        _json_dump,
        lambda b: TripHealthState.from_dict(json.loads(b)),
        [_bad_trip],
    ),
    Case(
        "cohort_robust_z",
        CohortState,
        trips,
        _cohort_step,
        _json_dump,
        lambda b: CohortState.from_dict(json.loads(b)),
        [_bad_trip],
    ),
    Case(
        "half_space_trees",
        lambda: HalfSpaceTreesDetector(seed=7),
        trips,
        _hst_step,
        lambda d: d.to_bytes(),
        HalfSpaceTreesDetector.from_bytes,
        [_bad_trip],
    ),
]


def run(case: Case, state: Any, items: list[Any]) -> tuple[Any, list[Any]]:
    outs = []
    for x in items:
        state, out = case.step(state, x)
        outs.append(out)
    return state, outs


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_checkpoint_mid_stream_gives_identical_outputs(case: Case) -> None:
    items = list(case.inputs(1, 300))
    _, expected = run(case, case.new(), items)
    state, head = run(case, case.new(), items[:150])
    restored = case.load(case.dump(state))
    _, tail = run(case, restored, items[150:])
    assert head + tail == expected


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_deterministic(case: Case) -> None:
    items = list(case.inputs(2, 200))
    assert run(case, case.new(), items)[1] == run(case, case.new(), items)[1]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bounded_memory(case: Case) -> None:
    state = case.new()
    sizes = []
    for i, x in enumerate(case.inputs(3, 10_000)):
        state, _ = case.step(state, x)
        if i in (2_000, 9_999):
            sizes.append(len(case.dump(state)))
    assert sizes[1] < 1.2 * sizes[0] + 2_000, sizes
    assert sizes[1] < 200_000 if case.name != "half_space_trees" else sizes[1] < 2_000_000


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_no_io(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    items = list(case.inputs(4, 100))
    state = case.new()

    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("a detector did I/O")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(socket, "socket", refuse)
    run(case, state, items)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_never_raises(case: Case) -> None:
    state, _ = run(case, case.new(), list(case.inputs(5, 60)))
    state, _ = run(case, state, case.bad)
    # ... and the detector still works afterwards, with serialisable state.
    state, _ = run(case, state, list(case.inputs(6, 20)))
    case.load(case.dump(state))


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_series_detectors_contract(name: str) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(400) * 1000.0
    t[200:] += 3_600_000  # a gap
    x = rng.normal(0, 1, 400)
    x[[10, 50]] = [np.nan, np.inf]
    cols = {"x": x, "y": rng.normal(5, 0.1, 400)}
    a = score_series(name, t, cols)
    assert np.array_equal(a, score_series(name, t, cols), equal_nan=True)
    assert np.isnan(a[10]) and np.isnan(a[50])
    finite = a[np.isfinite(a)]
    assert finite.size > 300 and np.all((finite >= 0) & (finite <= 1))
