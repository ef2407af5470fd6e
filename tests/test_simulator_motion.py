"""Physics of the simulated cars: S-curve limits and trip times, doors, leveling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator import plan_scurve

from .simulator_support import fleet, read_messages, run, scenario, signals

ACCEL_MPS2, JERK_MPS3, H_M = 0.8, 1.5, 3.0
DOORS = {
    "opening_min_s": 2.0,
    "opening_max_s": 3.0,
    "closing_min_s": 2.2,
    "closing_max_s": 2.8,
    "dwell_min_s": 3.0,
    "dwell_max_s": 6.0,
    "reopen_probability": 0.0,
}
DT_S = 0.1


def s_curve_time(d: float, v: float, a: float, j: float) -> float:
    """Rest-to-rest time of a jerk-limited trip, written out independently of the simulator."""
    # Time to reach v from rest: with a constant-acceleration phase, or without one.
    t_reach_v = v / a + a / j if v >= a * a / j else 2 * math.sqrt(v / j)
    if d >= v * t_reach_v:
        return d / v + t_reach_v
    # No cruise: peak speed vp with d = vp * t_reach(vp).
    vp = (a / 2) * (math.sqrt((a / j) ** 2 + 4 * d / a) - a / j)
    if vp >= a * a / j:
        return 2 * (vp / a + a / j)
    return 4 * (d / (2 * j)) ** (1 / 3)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    sc = scenario(
        "physics",
        seed=11,
        physics={
            "accel_min_mps2": ACCEL_MPS2,
            "accel_max_mps2": ACCEL_MPS2,
            "jerk_min_mps3": JERK_MPS3,
            "jerk_max_mps3": JERK_MPS3,
            "floor_height_m": H_M,
        },
        doors=DOORS,
        leveling={"stop_sigma_mm": 0.0},
        noise={
            "speed_sigma_mps": 0.0,
            "accel_sigma_mps2": 0.0,
            "position_sigma_m": 0.0,
            "load_sigma_kg": 0.0,
            "leveling_sigma_mm": 0.0,
        },
        traffic={"intensity": 3.0},
    )
    cars = fleet(6)
    path = tmp_path_factory.mktemp("physics") / "clean.jsonl"
    run(sc, cars, path, duration_s=900.0)
    messages, _, bad = read_messages(path)
    assert not bad
    return signals(messages), {e.registration_code: e for e in cars}


def test_planner_matches_the_closed_form() -> None:
    for d in (0.05, 0.5, 3.0, 6.0, 9.0, 30.0, 120.0):
        for v in (1.0, 1.75, 4.0):
            p = plan_scurve(d, v, ACCEL_MPS2, JERK_MPS3)
            assert p.duration_s == pytest.approx(s_curve_time(d, v, ACCEL_MPS2, JERK_MPS3))
            assert p.peak_speed_mps <= v + 1e-12


def test_motion_stays_within_the_limits(clean_run: tuple[dict, dict]) -> None:
    sig, cars = clean_run
    moved = 0
    for eid, s in sig.items():
        speed, accel, t = s["speed_mps"], s["accel_mps2"], s["t_ms"]
        assert speed.max() <= cars[eid].rated_speed_mps + 1e-9
        assert np.abs(accel).max() <= ACCEL_MPS2 + 1e-3
        contiguous = np.diff(t) == 100
        jerk = np.abs(np.diff(accel))[contiguous] / DT_S
        assert jerk.max() <= JERK_MPS3 + 0.0101  # accel is rounded to 1 mm/s² each side
        moved += int((speed > 0).sum())
    assert moved > 1000


def test_trips_take_the_s_curve_time(clean_run: tuple[dict, dict]) -> None:
    sig, cars = clean_run
    checked = 0
    for eid, s in sig.items():
        moving = s["speed_mps"] > 0
        t, floor = s["t_ms"], s["floor"]
        edges = np.flatnonzero(np.diff(moving.astype(int)))
        starts, ends = edges[moving[edges + 1]] + 1, edges[~moving[edges + 1]] + 1
        for a in starts:
            after = ends[ends > a]
            if not after.size or a == 0:
                continue
            b = after[0]  # first sample at rest again (the arrival tick)
            if t[b] - t[a - 1] != (b - a + 1) * 100:
                continue  # a gap in the samples: not a clean trip
            floors = abs(int(floor[b]) - int(floor[a - 1]))
            if floors == 0:
                continue
            expected = s_curve_time(floors * H_M, cars[eid].rated_speed_mps, ACCEL_MPS2, JERK_MPS3)
            # The ticks strictly inside (0, T) move; the last one may round to 0.000 m/s.
            moving_samples = b - a
            assert moving_samples * DT_S < expected + 1e-6 <= (moving_samples + 2) * DT_S
            checked += 1
    assert checked >= 20


def _runs(values: np.ndarray, state: int) -> list[tuple[int, int]]:
    """(start index, length) of each maximal run of ``state``."""
    hit = np.concatenate([[False], values == state, [False]])
    d = np.diff(hit.astype(int))
    return list(
        zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - np.flatnonzero(d == 1), strict=True)
    )


def test_door_cycles_and_leveling_fall_in_their_ranges(clean_run: tuple[dict, dict]) -> None:
    sig, _ = clean_run
    counted = {1: 0, 2: 0, 3: 0}
    bounds = {
        1: ("opening_min_s", "opening_max_s"),
        2: ("dwell_min_s", "dwell_max_s"),
        3: ("closing_min_s", "closing_max_s"),
    }
    for s in sig.values():
        door, t = s["door"], s["t_ms"]
        for state, (lo, hi) in bounds.items():
            for start, length in _runs(door, state):
                end = start + length
                if start == 0 or end >= len(door) or t[end] - t[start - 1] != (length + 1) * 100:
                    continue  # cut by the run's edges
                assert DOORS[lo] - DT_S - 1e-9 <= length * DT_S <= DOORS[hi] + DT_S + 1e-9
                counted[state] += 1
        at_level = door == 2
        assert np.all(np.abs(s["leveling_offset_mm"][at_level]) <= 9.0 + 1e-9)
        assert s["door_zone"][at_level].all()
    assert min(counted.values()) >= 20


def test_a_fixed_local_hour_makes_the_traffic_independent_of_the_clock(tmp_path) -> None:
    """``traffic.local_hour``: a run at 00:10 local time moves as much as one at 08:00 (the
    demo's data ends now, whatever the hour; at night it was nearly idle)."""
    import datetime as dt

    from simulator import FileOutput, simulate

    cars = fleet(10)
    tz_cst = dt.timezone(dt.timedelta(hours=8))
    midnight = dt.datetime(2026, 12, 2, 0, 10, tzinfo=tz_cst)
    morning = dt.datetime(2026, 12, 2, 8, 0, tzinfo=tz_cst)

    def samples(start: dt.datetime, **traffic: int) -> int:
        sc = scenario("clock", seed=5, traffic={"intensity": 1.5, **traffic})
        out = tmp_path / f"{start:%H%M}-{traffic}.jsonl"
        return simulate(
            sc, cars, start=start, duration_s=300.0, output=FileOutput(out), progress=False
        ).samples

    at_night, in_the_morning = samples(midnight), samples(morning)
    assert at_night < in_the_morning / 2, "the clock's own hour shapes the traffic by default"
    assert samples(midnight, local_hour=8) == samples(morning, local_hour=8) == in_the_morning
