"""One contract over every detector, in the spirit of river's estimator checks: state
survives a checkpoint mid-stream (identical outputs after restore), runs are deterministic,
memory per elevator is bounded, nothing does I/O, and bad input never raises."""

from __future__ import annotations

import builtins
import math
import socket
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import numpy as np
import pytest

from detectors import (
    SERIES_SCORERS,
    Detector,
    ElevatorLimits,
    Thresholds,
    decode_state,
    detectors,
    encode_state,
    score_series,
)
from detectors.online import CohortModels, OnlineDetector
from detectors.testing import UncheckedMessage, car, message
from foundation.records import Trip, WindowFeature

EID = "32070620200000000001"
T0 = 1_700_000_000_000
LIM = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000.0, floors=10)
# The maintenance interval shortened to 72 min, so that the random streams below (hours of
# stream time) lapse and catch up on maintenance.
TH = Thresholds(maintenance_visit_interval_days=0.05)


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
                service_mode=int(rng.choice([1, 1, 1, 0, 2] if seq % 400 < 5 else [1, 1, 1, 0])),
                direction=int(rng.integers(0, 3)),
            )
            for k in range(10)
        ]
        yield message(rows, seq=seq)


def trips(seed: int, count: int) -> Iterator[Trip]:
    rng = np.random.default_rng(seed)
    t = T0
    for i in range(count):
        t += int(rng.integers(10_000, 600_000))
        drift_mm = max(0, i - 120) * 0.1  # the leveling drifts after 120 trips
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
            leveling_offset_mm=None if rng.random() < 0.05 else float(rng.normal(drift_mm, 3)),
            door_opening_s=float(rng.normal(2.5, 0.05)),
            # Now and then three doors in a row that close a second late: trips unlike the others.
            door_closing_s=float(rng.normal(2.6, 0.05)) + (1.0 if i % 97 >= 94 else 0.0),
        )


def windows(seed: int, count: int) -> Iterator[WindowFeature]:
    """One-minute windows of a car at work (some idle), its door closing slowing after 120."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        idle = rng.random() < 0.2
        wear = max(0, i - 120) * 0.0004  # door closing 0.04 % slower per minute after 120
        yield WindowFeature(
            bucket_start_ms=T0 + i * 60_000,
            elevator_id=EID,
            width_s=60,
            samples=1 if idle else 600,
            speed_max_mps=0.0 if idle else float(rng.normal(1.0, 0.01)),
            speed_mean_mps=0.0 if idle else 0.4,
            accel_peak_mps2=0.0 if idle else float(rng.normal(0.7, 0.02)),
            jerk_peak_mps3=None if idle else float(rng.normal(1.2, 0.05)),
            load_max_kg=float(rng.uniform(0, 600)),
            moving_s=0.0 if idle else float(rng.uniform(5, 40)),
            occupied_s=0.0,
            door_open_count=0 if idle else 2,
            door_close_count=0 if idle else 2,
            door_opening_s=None if idle else float(rng.normal(2.5, 0.05)),
            door_closing_s=None
            if idle
            else float(rng.normal(2.6 * (1 + wear), 0.05)) + (1.0 if i % 97 >= 94 else 0.0),
            door_open_s=0.0 if idle else 8.0,
            leveling_offset_mm=None if idle else float(rng.normal(0, 3)),
        )


def _bad_rows() -> list[Any]:
    nan, inf = math.nan, math.inf
    rows = [
        car(t_ms=T0 + 10**9 + k * 100, speed_mps=v, position_m=p, load_kg=ld, leveling_offset_mm=o)
        for k, (v, p, ld, o) in enumerate(
            [(nan, 1.0, 0.0, 0.0), (inf, nan, inf, nan), (-inf, -inf, nan, inf)]
        )
    ]
    return [UncheckedMessage(rows, seq=10**6)]


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

#: What each kind of input is made of, and the bad inputs every detector must survive.
INPUTS: dict[str, Callable[[int, int], Iterator[Any]]] = {
    "message": messages,
    "trip": trips,
    "window": windows,
}
_bad_window = WindowFeature(
    bucket_start_ms=T0,
    elevator_id=EID,
    width_s=60,
    samples=3,
    speed_max_mps=math.nan,
    speed_mean_mps=math.inf,
    accel_peak_mps2=-math.inf,
    jerk_peak_mps3=None,
    load_max_kg=math.nan,
    moving_s=math.inf,
    occupied_s=math.nan,
    door_open_count=1,
    door_close_count=0,
    door_opening_s=math.nan,
    door_closing_s=None,
    door_open_s=math.nan,
    leveling_offset_mm=math.inf,
)
BAD: dict[str, list[Any]] = {"message": _bad_rows(), "trip": [_bad_trip], "window": [_bad_window]}
#: Every stream detector of the catalogue: the one list the worker and evaluation run.
DETECTORS = detectors(TH)


def step(det: Detector[Any], state: Any, item: Any) -> list[dict[str, Any]]:
    """One input through the protocol, then a tick 70 s of stream time later."""
    out = det.observe(state, item, LIM)
    if det.consumes == "message":
        t_ms = item.samples.t_ms[-1]
    elif det.consumes == "window":
        t_ms = item.bucket_start_ms + item.width_s * 1000
    else:
        t_ms = item.end_ms
    out += det.tick(state, t_ms + 70_000, LIM)
    return [a.to_dict() for a in out]


def run(det: Detector[Any], state: Any, items: list[Any]) -> tuple[Any, list[Any]]:
    return state, [step(det, state, x) for x in items]


def checkpoint(det: Detector[Any], state: Any) -> Any:
    return decode_state(encode_state(state), det.state_type)


def test_the_catalogue_holds_every_detector_once() -> None:
    names = [d.name for d in DETECTORS]
    assert names == [
        "safety_rules",
        "trip_health",
        "maintenance_due",
        "online_trips",
        "online_windows",
    ]
    assert len(set(names)) == len(names)
    assert {d.consumes for d in DETECTORS} <= set(INPUTS)


@pytest.mark.parametrize("det", DETECTORS, ids=lambda d: d.name)
def test_checkpoint_mid_stream_gives_identical_outputs(det: Detector[Any]) -> None:
    items = list(INPUTS[det.consumes](1, 300))
    _, expected = run(det, det.new(EID), items)
    state, head = run(det, det.new(EID), items[:150])
    restored = checkpoint(det, state)
    assert encode_state(restored) == encode_state(state)
    _, tail = run(det, restored, items[150:])
    assert head + tail == expected
    assert any(expected), "no alert at all: the check proves nothing"


@pytest.mark.parametrize("det", DETECTORS, ids=lambda d: d.name)
def test_deterministic(det: Detector[Any]) -> None:
    items = list(INPUTS[det.consumes](2, 200))
    assert run(det, det.new(EID), items)[1] == run(det, det.new(EID), items)[1]


@pytest.mark.parametrize("det", DETECTORS, ids=lambda d: d.name)
def test_bounded_memory(det: Detector[Any]) -> None:
    state = det.new(EID)
    sizes = []
    for i, x in enumerate(INPUTS[det.consumes](3, 10_000)):
        step(det, state, x)
        if i in (2_000, 9_999):
            sizes.append(len(encode_state(state)))
    assert sizes[1] < 1.2 * sizes[0] + 2_000, sizes
    assert sizes[1] < 200_000


@pytest.mark.parametrize("det", DETECTORS, ids=lambda d: d.name)
def test_no_io(det: Detector[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    items = list(INPUTS[det.consumes](4, 100))
    state = det.new(EID)

    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("a detector did I/O")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(socket, "socket", refuse)
    run(det, state, items)


@pytest.mark.parametrize("det", DETECTORS, ids=lambda d: d.name)
def test_bad_input_never_raises(det: Detector[Any]) -> None:
    state, _ = run(det, det.new(EID), list(INPUTS[det.consumes](5, 60)))
    state, _ = run(det, state, BAD[det.consumes])
    # ... and the detector still works afterwards, with serialisable state.
    state, _ = run(det, state, list(INPUTS[det.consumes](6, 20)))
    checkpoint(det, state)


@pytest.mark.parametrize("name", sorted(SERIES_SCORERS))
def test_series_detectors_contract(name: str) -> None:
    rng = np.random.default_rng(0)
    rows = 1500  # past every scorer's warm-up (Half-Space Trees: 700 rows)
    t = np.arange(rows) * 1000.0
    t[800:] += 3_600_000  # a gap
    t[1200:] -= 7_200_000  # a clock reset
    x = rng.normal(0, 1, rows)
    x[[10, 50]] = [np.nan, np.inf]
    cols = {"x": x, "y": rng.normal(5, 0.1, rows)}
    a = score_series(name, t, cols)
    assert np.array_equal(a, score_series(name, t, cols), equal_nan=True)
    assert np.isnan(a[10]) and np.isnan(a[50])
    finite = a[np.isfinite(a)]
    assert finite.size > 700 and np.all((finite >= 0) & (finite <= 1))


#: The detectors that also learn per cohort (one model per cohort and partition).
COHORT_DETECTORS = [d for d in DETECTORS if isinstance(d, OnlineDetector)]
#: Three elevators of one cohort and one of another.
PEERS = [f"3207062020000000000{i}" for i in range(4)]
COHORT_LIMITS = [LIM, LIM, LIM, ElevatorLimits(2.5, 1600.0, 30, building_type="office")]


def run_cohort(
    det: OnlineDetector, states: dict[str, Any], cohorts: CohortModels, items: list[Any]
) -> list[Any]:
    """Each item for each of :data:`PEERS` in turn, through the cohort path the worker runs."""
    out = []
    for x in items:
        for eid, lim in zip(PEERS, COHORT_LIMITS, strict=True):
            item = msgspec.structs.replace(x, elevator_id=eid)
            scored = det.observe_in_cohort(states[eid], cohorts, item, lim)
            out.append((scored.score, [a.to_dict() for a in scored.alerts]))
    return out


@pytest.mark.parametrize("det", COHORT_DETECTORS, ids=lambda d: d.name)
def test_cohort_models_checkpoint_mid_stream_and_are_deterministic(det: OnlineDetector) -> None:
    items = list(INPUTS[det.consumes](7, 300))

    def fresh() -> tuple[dict[str, Any], CohortModels]:
        return {e: det.new(e) for e in PEERS}, det.new_cohorts()

    expected = run_cohort(det, *fresh(), items)
    assert expected == run_cohort(det, *fresh(), items)
    states, cohorts = fresh()
    head = run_cohort(det, states, cohorts, items[:150])
    states = {e: checkpoint(det, s) for e, s in states.items()}
    cohorts = decode_state(encode_state(cohorts), CohortModels)
    assert head + run_cohort(det, states, cohorts, items[150:]) == expected
    assert sorted(cohorts.models) == ["1.00|7-11|", "2.50|19-33|office"]
    # The cohort's score stands for an elevator still warming up, its own after.
    scores = [s for s, _ in expected]
    warm_own = det._warmup() * len(PEERS)
    assert any(s is not None for s in scores[:warm_own])
    assert any(alerts for _, alerts in expected[warm_own:])
    assert not any(alerts for _, alerts in expected[:warm_own]), "alerted while warming up"


@pytest.mark.parametrize("det", COHORT_DETECTORS, ids=lambda d: d.name)
def test_cohort_models_are_bounded(det: OnlineDetector) -> None:
    cohorts = det.new_cohorts()
    item = next(INPUTS[det.consumes](8, 1))
    for i in range(3 * TH.online_max_cohorts):
        lim = ElevatorLimits(1.0 + i / 100, 1000.0, 10, building_type="residential")
        det.observe_in_cohort(det.new(EID), cohorts, item, lim)
    assert len(cohorts.models) == TH.online_max_cohorts
    assert len(encode_state(cohorts)) < 400 * TH.online_max_cohorts  # ~300 bytes a model
