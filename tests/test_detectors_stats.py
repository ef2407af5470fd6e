"""Degradation charts on synthetic trips, and the series registry's errors."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from detectors import (
    ElevatorLimits,
    GaussianModel,
    SeriesError,
    Thresholds,
    TripHealth,
    cohort_key,
    decode_state,
    encode_state,
    score_series,
)
from detectors.stats import trip_features
from foundation.records import Trip

LIM = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000.0, floors=10)
T0 = 1_700_000_000_000


def trip(i: int, offset_mm: float, opening_s: float) -> Trip:
    t = T0 + i * 60_000
    return Trip(
        start_ms=t,
        elevator_id="32070620200000000001",
        end_ms=t + 10_000,
        start_floor=1,
        end_floor=3,
        direction=1,
        duration_s=10.0,
        distance_m=6.0,
        peak_speed_mps=1.0,
        peak_accel_mps2=0.7,
        peak_jerk_mps3=1.2,
        load_kg=150.0,
        leveling_offset_mm=offset_mm,
        door_opening_s=opening_s,
        door_closing_s=2.6,
    )


def run(offsets: np.ndarray, openings: np.ndarray) -> list[str]:
    health = TripHealth(Thresholds())
    st = health.new("32070620200000000001")
    kinds = []
    for i, (o, d) in enumerate(zip(offsets, openings, strict=True)):
        out = health.observe(st, trip(i, float(o), float(d)), LIM)
        kinds += [a.alert_type for a in out if a.state == "raised"]
    return kinds


def test_no_alarm_on_a_healthy_car() -> None:
    rng = np.random.default_rng(0)
    n = 3000  # ~10 elevator-days of trips
    kinds = run(np.clip(rng.normal(0, 3, n), -9, 9), np.round(rng.normal(2.5, 0.03, n), 1))
    assert "leveling_drift" not in kinds and "door_operator_wear" not in kinds


def test_leveling_drift_flagged_before_it_breaks_20_mm() -> None:
    rng = np.random.default_rng(1)
    base = np.clip(rng.normal(0, 3, 400), -9, 9)
    drift = np.linspace(0, 20, 400)
    kinds = run(base + np.r_[np.zeros(100), drift[:300]], np.full(400, 2.5))
    assert "leveling_drift" in kinds


def test_door_operator_wear() -> None:
    rng = np.random.default_rng(2)
    openings = 2.5 * (1 + np.r_[np.zeros(100), np.linspace(0, 0.5, 200)])
    kinds = run(np.clip(rng.normal(0, 3, 300), -9, 9), openings + rng.normal(0, 0.03, 300))
    assert "door_operator_wear" in kinds


def test_series_errors_are_clear() -> None:
    with pytest.raises(SeriesError, match=r"nope: unknown detector \(known: contextual, cusum"):
        score_series("nope", [0, 1], {"x": [1, 2]})
    with pytest.raises(SeriesError, match=r"timestamps\[1\]: 1.0 is before timestamps\[0\]"):
        score_series("ewma", [2, 1], {"x": [1, 2]}, strict_time=True)
    with pytest.raises(SeriesError, match="columns"):
        score_series("ewma", [1, 2], {"x": [1, 2, 3]})
    with pytest.raises(SeriesError, match="bad parameters"):
        score_series("ewma", [1, 2], {"x": [1, 2]}, lam=3)


def test_online_model_learns_mean_and_variance_then_forgets_with_its_fading_factor() -> None:
    """The first values weigh equally (mean and variance as numpy's), later ones with the
    fading factor; a value far from what was learnt scores a tiny tail probability."""
    rng = np.random.default_rng(4)
    x = rng.normal(2.5, 0.05, 150)
    m = GaussianModel()
    for v in x:
        m.learn_one({"door_opening_s": float(v)}, fading_factor=0.005)
    n, mean, var = m.features["door_opening_s"]
    assert n == 150 and mean == pytest.approx(x.mean()) and var == pytest.approx(x.var())
    assert m.p_value({"door_opening_s": 2.5}, 0.0) > 0.5
    assert m.p_value({"door_opening_s": 2.9}, 0.0) < 1e-12
    for v in rng.normal(3.0, 0.05, 1500):  # a new normal, after maintenance
        m.learn_one({"door_opening_s": float(v)}, fading_factor=0.005)
    assert m.features["door_opening_s"][1] == pytest.approx(3.0, abs=0.01)
    assert m.p_value({"door_opening_s": 3.0}, 0.0) > 0.5
    assert np.isnan(m.p_value({"door_opening_s": float("nan")}, 0.0))
    restored = decode_state(encode_state(m), GaussianModel)
    assert restored == m
    # ``trip_features`` and ``cohort_key`` give the model its rows and its cohort.
    assert set(trip_features(trip(0, 1.0, 2.5), LIM)) >= {"door_opening_s"}
    assert cohort_key(LIM, "residential") == "1.00|7-11|residential"


def test_a_robust_z_history_is_packed_and_reads_an_older_checkpoint() -> None:
    """Eight bytes a value, not a Python float's 32; a checkpoint that kept the values as a
    list (before they were packed) reads as the same history and goes on from it."""
    import msgspec

    from detectors.state import decode_state, encode_state
    from detectors.stats import RobustZ

    rz = RobustZ(size=200, min_count=3)
    for x in np.linspace(1.0, 2.0, 250):
        rz.learn_one(float(x))
    assert isinstance(rz.values, bytearray) and len(rz.values) == 200 * 8 and len(rz) == 200
    assert rz.history()[0] == pytest.approx(np.linspace(1.0, 2.0, 250)[50])
    restored = decode_state(encode_state(rz), RobustZ)
    assert restored.history().tolist() == rz.history().tolist()
    assert restored.score_one(1.9) == rz.score_one(1.9)
    older = msgspec.msgpack.encode(
        {"size": 3, "min_count": 1, "min_mad": 1e-6, "values": [1.0, 2.0, 3.0], "pos": 1}
    )
    old = decode_state(older, RobustZ)
    assert old.history().tolist() == [2.0, 3.0, 1.0]
    old.learn_one(9.0)
    assert old.history().tolist() == [3.0, 1.0, 9.0]
    old.resize(2)
    assert old.history().tolist() == [1.0, 9.0] and old.pos == 0


def test_a_frozen_acceleration_reading_is_neither_judged_nor_learnt() -> None:
    """Trips whose acceleration never changed (peak jerk exactly 0) carry no acceleration
    or jerk; learnt, their one value made every live trip after the sensor recovered an
    anomaly (seen on no-fault traffic with stuck sensors)."""
    frozen = msgspec.structs.replace(trip(0, 2.0, 3.0), peak_accel_mps2=0.35, peak_jerk_mps3=0.0)
    features = trip_features(frozen, LIM)
    assert math.isnan(features["peak_accel_mps2"]) and math.isnan(features["peak_jerk_mps3"])
    health = TripHealth(Thresholds())
    st = health.new("32070620200000000001")
    raised = []
    for i in range(400):
        t = trip(i, 2.0 + 0.1 * (i % 7), 3.0 + 0.01 * (i % 5))
        if i < 300:
            t = msgspec.structs.replace(t, peak_accel_mps2=0.35, peak_jerk_mps3=0.0)
        raised += [a.alert_type for a in health.observe(st, t, LIM) if a.state == "raised"]
    assert raised == []


def test_one_wild_leveling_reading_is_no_drift_and_a_drift_still_is() -> None:
    """A sensor freezing mid-approach reports one stop 60 mm off: the chart takes it clipped
    to 3 σ, and a single stop raises nothing. A drift of 0.3 mm a stop is still flagged."""
    rng = np.random.default_rng(5)
    base = rng.normal(0.0, 2.0, 120)
    one_wild = run(np.concatenate([base, [60.0], base[:20]]), np.full(141, 3.0))
    assert "leveling_drift" not in one_wild  # (a trip anomaly it is)
    drift = base + np.concatenate([np.zeros(60), np.arange(60) * 0.3])
    assert "leveling_drift" in run(drift, np.full(120, 3.0))


@pytest.mark.parametrize(
    ("changes", "anomaly"),
    [
        # doors that always took 2.2 s (MAD 0): one sample longer is no anomaly, 1.5 s is
        ({"door_opening_s": 2.3}, False),
        ({"door_opening_s": 3.7}, True),
        # jerk always 1.2 m/s³: 0.6 above it is within a 10-Hz difference's noise
        ({"peak_jerk_mps3": 1.8}, False),
        ({"peak_jerk_mps3": 3.4}, True),
    ],
)
def test_a_car_whose_trips_are_alike_is_judged_at_its_sensors_resolution(
    changes: dict[str, float], anomaly: bool
) -> None:
    """With every trip alike the median absolute deviation is 0: with no floor on the
    robust z's scale, any trip off by one reading was a ``trip_anomaly`` (no-fault seed 296:
    z 8.2 for a jerk 0.6 m/s³ above its median)."""
    health = TripHealth(Thresholds())
    st = health.new("32070620200000000001")
    for i in range(60):
        assert health.observe(st, trip(i, 1.0, 2.2), LIM) == []
    odd = msgspec.structs.replace(trip(60, 1.0, 2.2), **changes)
    alerts = health.observe(st, odd, LIM)
    assert ("trip_anomaly" in {a.alert_type for a in alerts}) is anomaly


@pytest.mark.parametrize(("charted_mm", "alarm"), [(-2.3, False), (-3.2, True)])
def test_an_ewma_limit_counts_its_baseline_mean_s_own_uncertainty(
    charted_mm: float, alarm: bool
) -> None:
    """A baseline mean of 50 stops of σ 3 mm is itself uncertain by 0.42 mm: the limit is
    L σ √(λ/(2−λ) + 1/n), not L σ √(λ/(2−λ)). With the EWMA alone a car whose baseline sat
    1 mm above its true mean raised ``leveling_drift`` on ordinary stops (no-fault seeds
    342, 371, 377): here an EWMA settled 3.3 mm from the baseline (1.06 of the old limit)
    is inside the limit, 4.2 mm is beyond it."""
    from detectors.stats import Ewma

    chart = Ewma(alpha=0.1, limit_sigmas=4.5, warmup=50, min_sigma=1.0)
    for k in range(50):
        chart.learn_one(1.0 + (3.0 if k % 2 else -3.0))  # mean 1.0 mm, σ ≈ 3.03 mm
    for _ in range(200):
        chart.learn_one(charted_mm)
    assert (chart.score_one() >= 1.0) is alarm
