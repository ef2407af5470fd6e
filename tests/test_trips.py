"""Trip segmentation, driven with hand-built messages and explicit timestamps."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

import pytest
from msgspec.structs import asdict

from foundation.contract import TelemetryMessage
from streams.trips import (
    DOOR_OPENING_WAIT_MS,
    STOP_CONFIRM_MS,
    Trip,
    TripState,
    flush_trip,
    initial_trip_state,
    segment_message,
)
from streams.windows import MAX_SAMPLE_GAP_MS
from tests.test_windows import (
    EID,
    OPEN,
    OPENING,
    T0,
    day_stream,
    message,
    per_second,
    ride,
    row,
)


def segment_all(
    messages: Iterable[TelemetryMessage], state: TripState | None = None, do_flush: bool = True
) -> tuple[TripState, list[Trip], list[int]]:
    """Segment ``messages``; the state, every trip, and the index of the message that
    completed each trip (-1 for the flush)."""
    state = state or initial_trip_state(EID)
    trips: list[Trip] = []
    when: list[int] = []
    for i, m in enumerate(messages):
        state, done = segment_message(state, m)
        trips += done
        when += [i] * len(done)
    if do_flush:
        state, done = flush_trip(state)
        trips += done
        when += [-1] * len(done)
    return state, trips, when


def check(trip: Trip, expected: dict[str, Any]) -> None:
    got = asdict(trip)
    for name, value in expected.items():
        if isinstance(value, float):
            assert got[name] == pytest.approx(value, abs=1e-6), name
        else:
            assert got[name] == value, name


@pytest.mark.parametrize(("from_floor", "to_floor"), [(1, 2), (1, 4), (9, 3), (2, 12)])
def test_trip_of_n_floors(from_floor: int, to_floor: int) -> None:
    rows, expected = ride(T0, from_floor, to_floor, load_kg=300.0, arrival_offset_mm=-6.5)
    _, trips, when = segment_all(per_second(rows))
    assert len(trips) == 1
    check(trips[0], expected)
    assert trips[0].elevator_id == EID
    assert trips[0].peak_jerk_mps3 == pytest.approx(10.0)  # 1 m/s² reached in one sample
    # Emitted when the doors finished opening, not at the end of the stream.
    assert when == [(expected["end_ms"] + 500 + 2500) // 1000 - T0 // 1000]


def test_trip_emitted_by_the_message_in_which_doors_reach_open() -> None:
    rows, expected = ride(T0, 1, 3)
    opened_ms = expected["end_ms"] + 3000
    state = initial_trip_state(EID)
    for m in per_second(rows):
        state, done = segment_message(state, m)
        if m.samples.t_ms[-1] < opened_ms:
            assert done == []
        elif m.samples.t_ms[0] <= opened_ms:
            assert [t.start_ms for t in done] == [expected["start_ms"]]
        else:
            assert done == []


def test_stop_outside_the_door_zone_ends_the_trip_without_leveling() -> None:
    rows, expected = ride(T0, 1, 4, stop_short_m=1.4)  # 7.6 m up: 1.4 m below floor 4
    _, trips, when = segment_all(per_second(rows))
    assert len(trips) == 1
    check(trips[0], expected)
    assert trips[0].leveling_offset_mm is None
    assert trips[0].end_floor == 4  # the nearest landing
    assert trips[0].door_opening_s is None
    # Known as soon as the standstill is confirmed: a trapped car must not wait.
    confirmed_ms = expected["end_ms"] + STOP_CONFIRM_MS
    assert when == [confirmed_ms // 1000 - T0 // 1000]


def test_arrival_without_door_opening_is_emitted_after_the_wait() -> None:
    rows, expected = ride(T0, 5, 2, open_doors=False)
    _, trips, when = segment_all(per_second(rows))
    check(trips[0], {**expected, "door_opening_s": None})
    assert trips[0].direction == 2
    assert when == [(expected["end_ms"] + DOOR_OPENING_WAIT_MS) // 1000 - T0 // 1000]


def test_consecutive_trips_and_the_door_closing_before_each_departure() -> None:
    first, expected_first = ride(T0, 1, 3)
    second, expected_second = ride(first[-1]["t_ms"] + 100, 3, 1, arrival_offset_mm=-2.0)
    _, trips, _ = segment_all(per_second(first + second))
    assert len(trips) == 2
    check(trips[0], expected_first)
    check(trips[1], expected_second)
    assert trips[1].door_closing_s == pytest.approx(3.0)


def test_departure_without_a_door_cycle_has_no_closing_time() -> None:
    first, _ = ride(T0, 1, 3, open_doors=False)
    second, expected = ride(first[-1]["t_ms"] + 100, 3, 1)
    second = second[40:]  # no door closing at floor 3: leave at once
    _, trips, _ = segment_all(per_second(first + second))
    assert trips[1].door_closing_s is None
    assert trips[1].start_ms == expected["start_ms"]


def test_a_door_phase_through_a_silence_has_no_length() -> None:
    """The terminal falls silent while the doors close before the second departure and
    comes back as they finish: the closing went on unseen, so it has no measured length
    (it used to count the silence, and one 4-minute dropout made a door-wear alarm)."""
    first, _ = ride(T0, 1, 3)
    second, _ = ride(first[-1]["t_ms"] + 100, 3, 1)
    silence_ms = MAX_SAMPLE_GAP_MS + 5_000
    second = second[:15] + [{**r, "t_ms": r["t_ms"] + silence_ms} for r in second[15:]]
    _, trips, _ = segment_all(per_second(first + second))
    assert len(trips) == 2
    assert trips[1].door_closing_s is None


def test_leveling_offset_at_arrival() -> None:
    rows, _ = ride(T0, 2, 1, arrival_offset_mm=12.5)
    _, trips, _ = segment_all(per_second(rows))
    assert trips[0].leveling_offset_mm == 12.5


def test_short_dip_below_moving_speed_does_not_split_a_trip() -> None:
    rows, expected = ride(T0, 1, 5)
    for r in rows[60:63]:  # 0.3 s at a crawl while cruising
        r["speed_mps"] = 0.01
    _, trips, _ = segment_all(per_second(rows))
    assert len(trips) == 1
    check(trips[0], expected)


def test_heartbeats_make_no_trips() -> None:
    idle = [message([row(T0 + 30_000 * k)], seq=k, kind="heartbeat") for k in range(10)]
    _, trips, _ = segment_all(idle)
    assert trips == []
    # Heartbeats that report motion (noise, or a terminal between batches) are not trips.
    noisy = [
        message(
            [row(T0 + 30_000 * k, speed_mps=0.4 if k % 2 else 0.0, position_m=3.0 * k)],
            seq=k,
            kind="heartbeat",
        )
        for k in range(10)
    ]
    _, trips, _ = segment_all(noisy)
    assert trips == []


def test_single_moving_sample_is_not_a_trip() -> None:
    rows = [row(T0 + 100 * k, speed_mps=0.2 if k == 5 else 0.0) for k in range(30)]
    _, trips, _ = segment_all(per_second(rows))
    assert trips == []


def test_repeated_or_older_messages_are_skipped() -> None:
    rows, expected = ride(T0, 1, 3)
    messages = per_second(rows)
    replayed = [*messages[:8], *messages[3:6], *messages[8:]]
    _, trips, _ = segment_all(replayed)
    assert len(trips) == 1
    check(trips[0], expected)


def test_flush_emits_a_stopped_trip_and_keeps_a_moving_one() -> None:
    rows, expected = ride(T0, 1, 3)
    stopped_at = rows.index(next(r for r in rows if r["t_ms"] == expected["end_ms"]))
    state, trips, _ = segment_all(per_second(rows[: stopped_at + 2]))
    assert len(trips) == 1
    check(trips[0], {**expected, "door_opening_s": None})
    state, trips, _ = segment_all(per_second(rows[: stopped_at - 20]))
    assert trips == []
    assert state.phase == 1  # _MOVING: the trip goes on after the flush


def test_advance_door_opening_while_levelling_in_counts_from_its_start() -> None:
    rows, expected = ride(T0, 1, 2)
    stop = next(i for i, r in enumerate(rows) if r["t_ms"] == expected["end_ms"])
    # Doors begin opening 0.3 s before the stop, then the usual phases follow.
    doors = [OPENING] * 28 + [OPEN] * 40
    for r, d in zip(rows[stop - 3 :], doors, strict=False):
        r["door"] = d
    _, trips, _ = segment_all(per_second(rows))
    assert trips[0].door_opening_s == pytest.approx(2.8)


def test_state_round_trip_mid_stream_gives_identical_trips() -> None:
    messages = day_stream()
    _, reference, _ = segment_all(messages)
    assert len(reference) == 8
    for split in range(len(messages) + 1):
        state, head, _ = segment_all(messages[:split], do_flush=False)
        restored = TripState.from_dict(json.loads(json.dumps(state.to_dict())))
        assert restored == state
        _, tail, _ = segment_all(messages[split:], state=restored)
        assert head + tail == reference, f"split at message {split}"


def test_day_stream_trips() -> None:
    _, trips, _ = segment_all(day_stream())
    assert len(trips) == 8
    assert [t.leveling_offset_mm is None for t in trips].count(True) == 1  # the trapped stop
    for a, b in itertools.pairwise(trips):
        assert a.end_ms < b.start_ms
    for t in trips:
        assert t.direction in (1, 2)
        assert t.distance_m == pytest.approx(abs(t.end_floor - t.start_floor) * 3.0, abs=1.5)
        assert t.door_opening_s in (None, pytest.approx(2.5))


def test_message_of_another_elevator_is_refused() -> None:
    with pytest.raises(ValueError, match="elevator_id"):
        segment_message(initial_trip_state("32070000000000000002"), message([row(T0)]))


def test_a_leveling_reading_frozen_through_the_ride_is_no_measurement() -> None:
    """A healthy leveling reading follows the car from departure to arrival; one that never
    changed is a frozen sensor's, and the trip carries no leveling offset (the drift charts
    would learn a constant, then take the live reading for a fault)."""
    rows, _ = ride(T0, 2, 1, arrival_offset_mm=12.5)
    frozen = [{**r, "leveling_offset_mm": 12.5} for r in rows]
    _, trips, _ = segment_all(per_second(frozen))
    assert trips[0].leveling_offset_mm is None
    _, trips, _ = segment_all(per_second(rows))
    assert trips[0].leveling_offset_mm == 12.5
