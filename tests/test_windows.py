"""Tumbling-window folds, driven with hand-built messages and explicit timestamps.

No broker and no database: the fold is pure, so a test is a list of messages in and rows out.
The message builders here are shared with ``test_trips``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from typing import Any

import pytest
from msgspec.structs import astuple

from foundation.contract import SCHEMA_NAME, DoorState, Samples, TelemetryMessage
from streams.windows import (
    FoldStats,
    WindowFeature,
    WindowState,
    flush,
    fold_message,
    initial_window_state,
)

EID = "32070000000000000001"
#: A whole minute (2023-11-14T22:14:00Z), so the first 1-s and 60-s windows start here.
T0 = 1_700_000_040_000
FLOOR_HEIGHT_M = 3.0
CLOSED, OPENING, OPEN, CLOSING = (int(d) for d in DoorState)

_DEFAULTS: dict[str, Any] = {
    "speed_mps": 0.0,
    "accel_mps2": 0.0,
    "position_m": 0.0,
    "floor": 1,
    "direction": 0,
    "load_kg": 0.0,
    "door": CLOSED,
    "door_zone": True,
    "leveling_offset_mm": 0.0,
    "passengers": False,
    "alarm": False,
    "service_mode": 1,
}


def row(t_ms: int, **values: Any) -> dict[str, Any]:
    """One sample: a standing, empty car with closed doors unless ``values`` say otherwise."""
    unknown = set(values) - set(_DEFAULTS)
    assert not unknown, f"not sample columns: {unknown}"
    return {"t_ms": t_ms, **_DEFAULTS, **values}


def message(rows: list[dict[str, Any]], seq: int = 0, kind: str = "batch") -> TelemetryMessage:
    """A message of ``rows`` (column-oriented, as terminals send them)."""
    columns = {name: [r[name] for r in rows] for name in ("t_ms", *_DEFAULTS)}
    return TelemetryMessage(
        schema=SCHEMA_NAME, elevator_id=EID, seq=seq, kind=kind, samples=Samples(**columns)
    )


def per_second(rows: list[dict[str, Any]]) -> list[TelemetryMessage]:
    """``rows`` as terminals batch them: one message per (epoch) second of samples."""
    messages: list[TelemetryMessage] = []
    batch: list[dict[str, Any]] = []
    for r in rows:
        if batch and r["t_ms"] // 1000 != batch[0]["t_ms"] // 1000:
            messages.append(message(batch, seq=len(messages)))
            batch = []
        batch.append(r)
    if batch:
        messages.append(message(batch, seq=len(messages)))
    return messages


def ride(
    t0_ms: int,
    from_floor: int,
    to_floor: int,
    *,
    speed_mps: float = 1.0,
    accel_mps2: float = 1.0,
    load_kg: float = 150.0,
    arrival_offset_mm: float = 4.0,
    open_doors: bool = True,
    stop_short_m: float = 0.0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One trip at 10 Hz with its door cycles, and the trip it should give.

    Timeline from ``t0_ms``: doors OPEN 0.5 s, CLOSING 3.0 s, CLOSED 0.5 s, then a trapezoidal run
    (first moving sample 0.1 s after departure at 4.0 s), a 0.5 s standstill with doors
    closed, then (if ``open_doors``) OPENING 2.5 s and OPEN 4.0 s. ``stop_short_m`` stops the
    car that far before the landing, outside the door zone, with the doors shut for 10 s.
    """
    rows: list[dict[str, Any]] = []
    h = FLOOR_HEIGHT_M
    p0 = (from_floor - 1) * h
    sign = 1.0 if to_floor >= from_floor else -1.0
    distance_m = abs(to_floor - from_floor) * h - stop_short_m
    base = {"load_kg": load_kg, "passengers": True}
    for k in range(40):
        door = OPEN if k < 5 else CLOSING if k < 35 else CLOSED
        rows.append(row(t0_ms + 100 * k, position_m=p0, floor=from_floor, door=door, **base))
    ramp_s = speed_mps / accel_mps2
    cruise_s = (distance_m - speed_mps * ramp_s) / speed_mps
    run_s = 2 * ramp_s + cruise_s
    steps = round(run_s * 10)
    depart_ms = t0_ms + 4000
    for k in range(1, steps + 1):
        tau = k / 10
        if tau <= ramp_s:
            v, a, s = accel_mps2 * tau, accel_mps2, accel_mps2 * tau * tau / 2
        elif tau <= ramp_s + cruise_s:
            v, a, s = speed_mps, 0.0, speed_mps * (tau - ramp_s / 2)
        else:
            left = max(0.0, run_s - tau)
            v, a, s = accel_mps2 * left, -accel_mps2, distance_m - accel_mps2 * left * left / 2
        if k == steps:
            v, a, s = 0.0, 0.0, distance_m
        pos = p0 + sign * s
        nearest = round(pos / h)
        off_m = pos - nearest * h
        rows.append(
            row(
                depart_ms + 100 * k,
                speed_mps=round(v, 6),
                accel_mps2=sign * a,
                position_m=pos,
                floor=1 + nearest,
                direction=(1 if sign > 0 else 2) if k < steps else 0,
                door_zone=abs(off_m) < 0.2,
                leveling_offset_mm=arrival_offset_mm if k == steps else off_m * 1000,
                **base,
            )
        )
    stop_ms = depart_ms + 100 * steps
    end = rows[-1]
    standing = {k: end[k] for k in ("position_m", "floor", "door_zone", "leveling_offset_mm")}
    if stop_short_m:
        doors = [CLOSED] * 100
    elif open_doors:
        doors = [CLOSED] * 5 + [OPENING] * 25 + [OPEN] * 40
    else:
        doors = [CLOSED] * 70
    for k, door in enumerate(doors, start=1):
        rows.append(row(stop_ms + 100 * k, door=door, **standing, **base))
    expected = {
        "start_ms": depart_ms + 100,
        "end_ms": stop_ms,
        "start_floor": from_floor,
        "end_floor": end["floor"],
        "direction": 1 if sign > 0 else 2,
        "duration_s": (stop_ms - depart_ms - 100) / 1000,
        "distance_m": distance_m,
        "peak_speed_mps": speed_mps,
        "peak_accel_mps2": accel_mps2,
        "load_kg": load_kg,
        "leveling_offset_mm": None if stop_short_m else arrival_offset_mm,
        "door_opening_s": 2.5 if open_doors and not stop_short_m else None,
        "door_closing_s": 3.0,
    }
    return rows, expected


def fold_all(
    messages: Iterable[TelemetryMessage],
    grace_ms: int = 0,
    state: WindowState | None = None,
    do_flush: bool = True,
) -> tuple[WindowState, list[WindowFeature], list[FoldStats]]:
    """Fold ``messages`` (and flush at the end); every window and the stats of each call."""
    state = state or initial_window_state(EID)
    windows: list[WindowFeature] = []
    stats: list[FoldStats] = []
    for m in messages:
        state, closed, st = fold_message(state, m, grace_ms)
        windows += closed
        stats.append(st)
    if do_flush:
        state, rest = flush(state)
        windows += rest
    return state, windows, stats


def by_key(windows: list[WindowFeature]) -> dict[tuple[int, int], WindowFeature]:
    """Windows by (width_s, bucket_start_ms); fails on a window emitted twice."""
    keyed = {(w.width_s, w.bucket_start_ms): w for w in windows}
    assert len(keyed) == len(windows), "a window was emitted more than once"
    return keyed


def test_samples_at_999_and_1000_ms_fall_in_different_1s_windows() -> None:
    _, windows, _ = fold_all([message([row(T0 + 999, speed_mps=1.0), row(T0 + 1000)])])
    w = by_key(windows)
    assert sorted(w) == [(1, T0), (1, T0 + 1000), (60, T0)]
    assert w[1, T0].samples == 1 and w[1, T0].speed_max_mps == 1.0
    assert w[1, T0 + 1000].samples == 1 and w[1, T0 + 1000].speed_max_mps == 0.0
    assert w[60, T0].samples == 2


def test_minute_window_combines_its_second_windows() -> None:
    rng = random.Random(42)
    rows = []
    door = CLOSED
    for k in range(700):  # 70 s at 10 Hz: one full minute and a bit of the next
        if rng.random() < 0.05:
            door = (door + 1) % 4
        rows.append(
            row(
                T0 + 100 * k,
                speed_mps=rng.choice([0.0, 0.02, rng.uniform(0, 2)]),
                accel_mps2=rng.uniform(-1, 1),
                load_kg=rng.uniform(0, 800),
                door=door,
                door_zone=rng.random() < 0.5,
                leveling_offset_mm=rng.uniform(-20, 20),
                passengers=rng.random() < 0.5,
            )
        )
    _, windows, _ = fold_all(per_second(rows), grace_ms=1500)
    w = by_key(windows)
    minute = w[60, T0]
    seconds = [w[1, T0 + 1000 * k] for k in range(60)]
    assert minute.samples == sum(s.samples for s in seconds) == 600
    assert minute.speed_max_mps == max(s.speed_max_mps for s in seconds)
    assert minute.accel_peak_mps2 == max(s.accel_peak_mps2 for s in seconds)
    assert minute.jerk_peak_mps3 == max(s.jerk_peak_mps3 or 0.0 for s in seconds)
    assert minute.load_max_kg == max(s.load_max_kg for s in seconds)
    assert minute.speed_mean_mps == pytest.approx(
        sum(s.speed_mean_mps * s.samples for s in seconds) / 600
    )
    for name in ("moving_s", "occupied_s", "door_open_s"):
        assert getattr(minute, name) == pytest.approx(sum(getattr(s, name) for s in seconds))
    for name in ("door_open_count", "door_close_count"):
        assert getattr(minute, name) == sum(getattr(s, name) for s in seconds)
    assert minute.door_open_count > 0
    stops = [s.leveling_offset_mm for s in seconds if s.leveling_offset_mm is not None]
    assert minute.leveling_offset_mm == stops[-1]
    # Sample time weights cover the minute: every sample speaks for 0.1 s.
    assert minute.occupied_s + sum(0.1 for r in rows[:600] if not r["passengers"]) == pytest.approx(
        60.0
    )


def test_window_is_emitted_once_only_after_watermark_passes_end_plus_grace() -> None:
    state = initial_window_state(EID)
    emitted: list[WindowFeature] = []

    def feed(*times: int) -> list[WindowFeature]:
        nonlocal state
        state, closed, _ = fold_message(state, message([row(T0 + t) for t in times]), 500)
        emitted.extend(closed)
        return closed

    assert feed(0, 100, 900) == []
    assert feed(1000, 1499) == []  # watermark 1499 < end 1000 + grace 500
    closed = feed(1500)
    assert [(w.width_s, w.bucket_start_ms, w.samples) for w in closed] == [(1, T0, 3)]
    assert feed(1600) == []  # not again
    closed = feed(60_400, 60_499)
    assert [(w.width_s, w.bucket_start_ms) for w in closed] == [(1, T0 + 1000)]
    closed = feed(60_500)
    assert [(w.width_s, w.bucket_start_ms, w.samples) for w in closed] == [(60, T0, 7)]
    state, rest = flush(state)
    assert [(w.width_s, w.bucket_start_ms) for w in rest] == [(1, T0 + 60_000), (60, T0 + 60_000)]
    state, again = flush(state)
    assert again == []
    by_key(emitted + rest)


def test_sample_in_a_flushed_window_is_not_emitted_again() -> None:
    state, windows, _ = fold_all([message([row(T0 + 100), row(T0 + 200)])])
    state, closed, stats = fold_message(state, message([row(T0 + 300), row(T0 + 1300)]), 0)
    state, rest = flush(state)
    assert stats.samples_after_flush == 1 and stats.samples_folded == 1
    w = by_key(windows + closed + rest)
    assert sorted(w) == [(1, T0), (1, T0 + 1000), (60, T0)]
    assert w[1, T0].samples == 2 and w[60, T0].samples == 2


def test_out_of_order_sample_within_grace_is_folded() -> None:
    first = message([row(T0 + 100 * k, speed_mps=1.0) for k in range(13)])  # up to 1200 ms
    late_arrival = message([row(T0 + 550, speed_mps=3.0, load_kg=900.0)], seq=1)
    _, windows, stats = fold_all([first, late_arrival], grace_ms=1000)
    assert stats[1] == FoldStats(samples_folded=1, samples_out_of_order=1)
    w = by_key(windows)
    assert w[1, T0].samples == 11
    assert w[1, T0].speed_max_mps == 3.0
    assert w[1, T0].load_max_kg == 900.0
    assert w[1, T0].speed_mean_mps == pytest.approx(13.0 / 11)
    assert w[60, T0].samples == 14


def test_sample_older_than_grace_is_late_and_not_folded() -> None:
    first = message([row(T0 + 100 * k, speed_mps=1.0) for k in range(16)])  # up to 1500 ms
    too_late = message(
        [row(T0 + 1200, speed_mps=3.0), row(T0 + 1299, speed_mps=3.0), row(T0 + 1300)], seq=1
    )
    duplicate = message([row(T0 + 1500, speed_mps=3.0)], seq=2)
    _, windows, stats = fold_all([first, too_late, duplicate], grace_ms=200)
    assert stats[1] == FoldStats(samples_folded=1, samples_out_of_order=1, samples_late=2)
    assert stats[2] == FoldStats(samples_duplicate=1)
    w = by_key(windows)
    assert w[1, T0 + 1000].samples == 7  # 1000..1500 and the one at 1300
    assert w[1, T0 + 1000].speed_max_mps == 1.0
    assert w[60, T0].samples == 17


def test_door_cycle_timings_and_counts() -> None:
    doors = [CLOSED] * 10 + [OPENING] * 25 + [OPEN] * 40 + [CLOSING] * 30 + [CLOSED] * 10
    rows = [row(T0 + 100 * k, door=d, passengers=True) for k, d in enumerate(doors)]
    _, windows, _ = fold_all(per_second(rows))
    w = by_key(windows)
    minute = w[60, T0]
    assert minute.door_opening_s == pytest.approx(2.5)
    assert minute.door_open_s == pytest.approx(4.0)
    assert minute.door_closing_s == pytest.approx(3.0)
    assert (minute.door_open_count, minute.door_close_count) == (1, 1)
    # Each event lands in the second it happened: opening begins at 1.0 s and completes at
    # 3.5 s, closing begins at 7.5 s and completes at 10.5 s.
    assert w[1, T0 + 1000].door_open_count == 1
    assert w[1, T0 + 3000].door_opening_s == pytest.approx(2.5)
    assert w[1, T0 + 7000].door_close_count == 1
    assert w[1, T0 + 10_000].door_closing_s == pytest.approx(3.0)
    assert w[1, T0 + 5000].door_open_s == pytest.approx(1.0)
    assert w[1, T0].door_opening_s is None and w[1, T0].door_open_s == 0.0
    # Flush credits the last sample with the 0.1 s cadence it was sent at.
    assert minute.occupied_s == pytest.approx(11.5)


def test_mean_of_two_door_openings_in_one_window() -> None:
    doors = [CLOSED] * 2 + [OPENING] * 20 + [OPEN] * 5 + [CLOSING] * 5 + [OPENING] * 30 + [OPEN]
    rows = [row(T0 + 100 * k, door=d) for k, d in enumerate(doors)]
    _, windows, _ = fold_all(per_second(rows))
    minute = by_key(windows)[60, T0]
    assert minute.door_opening_s == pytest.approx(2.5)  # (2.0 + 3.0) / 2
    assert minute.door_closing_s is None  # the closing was reversed, never completed
    assert (minute.door_open_count, minute.door_close_count) == (2, 1)


def test_door_phase_edge_across_a_gap_gives_no_duration() -> None:
    rows = [row(T0, door=CLOSED), row(T0 + 100, door=OPENING), row(T0 + 2000, door=OPEN)]
    _, windows, _ = fold_all([message(rows)])
    minute = by_key(windows)[60, T0]
    assert minute.door_opening_s is None
    assert minute.door_open_count == 1


def test_speed_accel_and_jerk_peaks() -> None:
    profile = [  # (t ms, speed m/s, accel m/s²)
        (0, 0.0, 0.0),
        (100, 0.05, 0.5),  # jerk 5
        (200, 0.15, 1.0),  # jerk 5
        (300, 0.25, 1.0),
        (350, 0.3, 0.6),  # jerk 0.4 / 0.05 s = 8
        (950, 1.2, -2.0),  # 0.6 s apart: no jerk, but the accel peak is |−2|
        (1000, 1.25, -1.9),  # jerk 2, in the second window
    ]
    rows = [row(T0 + t, speed_mps=v, accel_mps2=a) for t, v, a in profile]
    _, windows, _ = fold_all([message(rows)])
    w = by_key(windows)
    first = w[1, T0]
    assert first.speed_max_mps == 1.2
    assert first.speed_mean_mps == pytest.approx((0.05 + 0.15 + 0.25 + 0.3 + 1.2) / 6)
    assert first.accel_peak_mps2 == 2.0
    assert first.jerk_peak_mps3 == pytest.approx(8.0)
    assert w[1, T0 + 1000].jerk_peak_mps3 == pytest.approx(2.0)
    # Moving time (0.05 m/s is standing): 0.1 s from 200 ms, 0.05 s from 300 ms (the next
    # sample is 50 ms later), 0.5 s (capped) from 350 ms, 0.05 s from 950 ms.
    assert first.moving_s == pytest.approx(0.1 + 0.05 + 0.5 + 0.05)
    assert w[60, T0].jerk_peak_mps3 == pytest.approx(8.0)


def test_time_of_a_sample_is_split_at_the_window_boundary() -> None:
    # 10 Hz, 50 ms off the second: the sample at 950 ms speaks for 950-1050 ms.
    rows = [row(T0 + 50 + 100 * k, speed_mps=1.0, passengers=True) for k in range(30)]
    _, windows, _ = fold_all(per_second(rows))
    w = by_key(windows)
    assert w[1, T0].moving_s == pytest.approx(0.95)
    assert w[1, T0 + 1000].moving_s == pytest.approx(1.0)
    assert w[1, T0 + 1000].occupied_s == pytest.approx(1.0)
    assert w[60, T0].moving_s == pytest.approx(2.95)  # 50 ms to 3000 ms (flush: to its end)


def test_time_running_into_a_second_without_samples_is_dropped() -> None:
    rows = [row(T0 + 800, speed_mps=1.0), row(T0 + 900, speed_mps=1.0), row(T0 + 3000)]
    _, windows, _ = fold_all([message(rows)])
    w = by_key(windows)
    # 800 ms: 0.1 s; 900 ms: capped at 0.5 s, of which only 0.1 s lies in its second.
    assert w[1, T0].moving_s == pytest.approx(0.2)
    assert all(x.moving_s <= x.width_s for x in windows)


def test_single_sample_window_has_no_jerk() -> None:
    _, windows, _ = fold_all([message([row(T0 + 10, accel_mps2=-0.7)])])
    w = by_key(windows)[1, T0]
    assert w.jerk_peak_mps3 is None
    assert w.accel_peak_mps2 == 0.7
    assert w.door_opening_s is None and w.door_closing_s is None
    assert w.leveling_offset_mm is None


def test_leveling_offset_is_that_of_the_last_stop_in_the_window() -> None:
    rows = [
        row(T0 + 0, speed_mps=0.3, door_zone=True, leveling_offset_mm=-40.0),  # moving
        row(T0 + 100, door=OPENING, leveling_offset_mm=6.0),
        row(T0 + 200, door=OPEN, leveling_offset_mm=7.0),
        row(T0 + 300, door=CLOSED, leveling_offset_mm=9.0),  # doors shut: not a stop
        row(T0 + 1000, door=OPEN, door_zone=False, leveling_offset_mm=300.0),  # outside zone
    ]
    _, windows, _ = fold_all([message(rows)])
    w = by_key(windows)
    assert w[1, T0].leveling_offset_mm == 7.0
    assert w[1, T0 + 1000].leveling_offset_mm is None
    assert w[60, T0].leveling_offset_mm == 7.0


def test_heartbeats_do_not_make_30_s_of_moving_time() -> None:
    beats = [
        message([row(T0 + 30_000 * k, speed_mps=0.3, passengers=True)], seq=k, kind="heartbeat")
        for k in range(5)
    ]
    _, windows, _ = fold_all(beats, grace_ms=2000)
    w = by_key(windows)
    seconds = [x for x in windows if x.width_s == 1]
    assert len(seconds) == 5
    assert all(x.moving_s == 0.5 and x.occupied_s == 0.5 for x in seconds[:-1])
    assert seconds[-1].moving_s == 0.5  # flushed: its gap to the one before, capped
    assert w[60, T0].moving_s == 1.0
    assert all(x.jerk_peak_mps3 is None for x in windows)


def test_idle_heartbeats_make_no_moving_time() -> None:
    beats = [message([row(T0 + 30_000 * k)], seq=k, kind="heartbeat") for k in range(4)]
    _, windows, _ = fold_all(beats)
    assert windows and all(x.moving_s == 0.0 for x in windows)


def test_ride_features() -> None:
    rows, expected = ride(T0, 1, 4)
    _, windows, _ = fold_all(per_second(rows), grace_ms=1000)
    minute = by_key(windows)[60, T0]
    assert minute.samples == len(rows)
    assert minute.speed_max_mps == 1.0
    assert minute.accel_peak_mps2 == 1.0
    assert minute.jerk_peak_mps3 == pytest.approx(10.0)
    assert minute.moving_s == pytest.approx(expected["duration_s"])
    assert minute.door_opening_s == pytest.approx(2.5)
    assert minute.door_closing_s == pytest.approx(3.0)
    assert (minute.door_open_count, minute.door_close_count) == (1, 1)
    assert minute.leveling_offset_mm == 4.0
    assert minute.load_max_kg == 150.0


def day_stream(seed: int = 5) -> list[TelemetryMessage]:
    """A few minutes of one elevator: rides with door cycles, a trapped stop, heartbeats
    while idle, and some messages delivered late (in and beyond a 2-s grace)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    t = T0 + 17_300
    floor = 1
    for n in range(8):
        target = rng.choice([f for f in range(1, 10) if f != floor])
        ride_rows, _ = ride(
            t,
            floor,
            target,
            load_kg=75.0 * rng.randint(1, 8),
            arrival_offset_mm=rng.uniform(-9, 9),
            open_doors=n != 3,
            stop_short_m=1.4 if n == 5 else 0.0,
        )
        rows += ride_rows
        t = ride_rows[-1]["t_ms"] + 100
        floor = ride_rows[-1]["floor"]
        for _ in range(rng.randint(0, 3)):  # idle: one heartbeat every 30 s
            t += 30_000
            rows.append(row(t, position_m=rows[-1]["position_m"], floor=floor))
        t += rng.randint(1, 3000)
    messages = per_second(rows)
    # Deliver a few messages late: one second behind (within grace) and three behind.
    for i in (12, 40, 77):
        messages[i], messages[i + 1] = messages[i + 1], messages[i]
    messages.insert(90, messages.pop(86))
    return messages


def roundtrip(state: Any) -> Any:
    """Through the changelog: to plain builtins, JSON text and back."""
    return type(state).from_dict(json.loads(json.dumps(state.to_dict())))


def test_day_stream_is_well_formed() -> None:
    messages = day_stream()
    _, windows, stats = fold_all(messages, grace_ms=2000)
    assert sum(s.samples_out_of_order for s in stats) > 0
    assert sum(s.samples_late for s in stats) > 0
    by_key(windows)
    assert sum(w.samples for w in windows if w.width_s == 60) == sum(
        s.samples_folded for s in stats
    )
    for w in windows:
        for name in ("moving_s", "occupied_s", "door_open_s"):
            assert 0.0 <= getattr(w, name) <= w.width_s + 1e-9
        assert all(math.isfinite(v) for v in astuple(w) if isinstance(v, float))


@pytest.mark.parametrize("grace_ms", [0, 2000])
def test_state_round_trip_mid_stream_gives_identical_output(grace_ms: int) -> None:
    messages = day_stream()
    _, reference, reference_stats = fold_all(messages, grace_ms=grace_ms)
    for split in range(len(messages) + 1):
        state, head, head_stats = fold_all(messages[:split], grace_ms=grace_ms, do_flush=False)
        restored = roundtrip(state)
        assert restored == state
        _, tail, tail_stats = fold_all(messages[split:], grace_ms=grace_ms, state=restored)
        assert head + tail == reference, f"split at message {split}"
        assert head_stats + tail_stats == reference_stats


def test_state_stays_bounded() -> None:
    state, _, _ = fold_all(day_stream(), grace_ms=2000, do_flush=False)
    assert len(state.open_1s) <= 2000 // 1000 + 2
    assert len(state.open_60s) <= 2
    assert len(json.dumps(state.to_dict())) < 2000


def test_grace_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="grace_ms"):
        fold_message(initial_window_state(EID), message([row(T0)]), -1)


def test_message_of_another_elevator_is_refused() -> None:
    with pytest.raises(ValueError, match="elevator_id"):
        fold_message(initial_window_state("32070000000000000002"), message([row(T0)]), 0)
