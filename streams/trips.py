"""Trip segmentation per elevator: a pure step over its telemetry messages.

A trip is one run from standstill to standstill. The Faust worker keeps one
:class:`TripState` per elevator in a changelog-backed table, calls :func:`segment_message`
for each validated message and writes the trips it returns to the ``trip`` table::

    initial_trip_state(elevator_id)    -> TripState
    segment_message(state, message)    -> (TripState, [Trip])
    flush_trip(state)                  -> (TripState, [Trip])      # end of a stream

Segmentation, on sample (event) time only
-----------------------------------------
- A trip starts at the first sample faster than :data:`MOVING_SPEED_MPS`.
- It ends at the first sample of a standstill (speed at most :data:`MOVING_SPEED_MPS`) that
  lasts :data:`STOP_CONFIRM_MS`; a shorter dip belongs to the trip. The car is then
  *arrived*, wherever it stopped: a car stopped between landings (outside the door zone) has
  ended its trip too, with the nearest floor as ``end_floor`` and no leveling offset.
- Motion seen only in samples more than :data:`MAX_SAMPLE_GAP_MS` apart, or in one lone
  sample, is not a trip: a heartbeat or a noise spike cannot show a run.

When a trip is emitted
----------------------
After arrival the trip waits, at most :data:`DOOR_OPENING_WAIT_MS` after the stop for the
doors to begin opening and at most :data:`ARRIVAL_WAIT_MAX_MS` in all, so that it can carry
the arrival's door-opening time. It is emitted at the first of:

1. the doors reaching OPEN (``door_opening_s`` is the OPENING phase's duration when both of
   its edges were seen, else None);
2. the stop being confirmed outside the door zone (doors cannot open there, and a trapped
   car should be known at once);
3. the car moving again (the next trip starts with that sample);
4. a sample :data:`DOOR_OPENING_WAIT_MS` after the stop with the doors not OPENING, or
   :data:`ARRIVAL_WAIT_MAX_MS` after the stop in any case.

The waits are measured on sample times, so a trip whose last samples are followed only by
30-s heartbeats is emitted with the next heartbeat; :func:`flush_trip` emits it at the end of
a stream.

Samples at or before the latest sample seen (duplicates, out-of-order messages) are skipped:
segmentation needs order, and the window fold's :class:`~streams.windows.FoldStats` already
counts them.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from foundation.contract import Direction, DoorState, TelemetryMessage
from foundation.records import Trip
from streams.windows import MAX_SAMPLE_GAP_MS, MOVING_SPEED_MPS

#: A standstill this long ends a trip: shorter dips below the moving speed happen while
#: levelling in, and 0.5 s is five samples at 10 Hz.
STOP_CONFIRM_MS: Final = 500
#: How long after the stop the doors may take to begin opening before the trip is emitted
#: without an opening time: doors start opening within about a second of stopping.
DOOR_OPENING_WAIT_MS: Final = 5_000
#: The latest a trip is emitted after its stop, even while the doors are still opening:
#: opening takes 2-3 s, so a phase this long is a door fault that detectors see in windows.
ARRIVAL_WAIT_MAX_MS: Final = 15_000

_OPENING: Final = int(DoorState.OPENING)
_OPEN: Final = int(DoorState.OPEN)
_CLOSING: Final = int(DoorState.CLOSING)
_CLOSED: Final = int(DoorState.CLOSED)
_UP: Final = int(Direction.UP)
_NO_TIME_MS: Final = -(2**62)
_DOWN: Final = int(Direction.DOWN)

# Segmentation phases.
_IDLE: Final = 0  # standing, no trip open
_MOVING: Final = 1  # in a trip, last sample moving
_STOPPING: Final = 2  # in a trip, standing for less than STOP_CONFIRM_MS
_ARRIVED: Final = 3  # trip ended, waiting for the doors before emitting it


class TripState(msgspec.Struct):
    """One elevator's segmentation state: the last sample and the trip in progress.

    A fixed set of scalars, so its size is bounded. Serialise with :meth:`to_dict` (plain
    JSON types) and restore with :meth:`from_dict`.

    Attributes
    ----------
    elevator_id
        Registration code of the elevator.
    phase
        0 standing, 1 moving, 2 stopping (standing less than :data:`STOP_CONFIRM_MS`),
        3 arrived (trip ended, not yet emitted).
    last_t_ms, last_accel_mps2, last_moving, last_position_m, last_floor, last_door
        The latest sample seen (None/zero before the first).
    door_phase_start_ms
        When the current door state began, if that edge was seen within
        :data:`MAX_SAMPLE_GAP_MS`; else None.
    closing_before_departure_ms
        The last completed door-closing phase while standing, ms; cleared by an opening
        and taken by the next trip.
    start_ms, start_floor, start_position_m, door_closing_ms
        The trip in progress: departure and the closing before it.
    peak_speed_mps, peak_accel_mps2, peak_jerk_mps3, load_max_kg, last_direction
        Running peaks of the trip (jerk -1 while none) and its last non-zero direction.
    linked
        Whether two consecutive moving samples within :data:`MAX_SAMPLE_GAP_MS` were seen.
    stop_ms, stop_floor, stop_position_m
        The first standing sample of the current standstill.
    stop_in_door_zone, stop_leveling_offset_mm
        Door zone and leveling offset of the latest standing sample up to confirmation.
    door_opening_ms, doors_opened
        The arrival's door-opening time and whether the doors have reached OPEN.
    start_leveling_offset_mm, leveling_changed
        The leveling reading at departure, and whether the trip's readings have differed
        from it since: a healthy sensor's follows the car; one that never moved is frozen.
    continuous
        False when the next sample is in another clock frame than the last (the ingest's
        correction of the terminal's clock changed between their messages): the gap
        between them was not measured, so no jerk, door phase or link is taken across it.
    """

    elevator_id: str
    phase: int = _IDLE
    last_t_ms: int | None = None
    last_accel_mps2: float = 0.0
    last_moving: bool = False
    last_position_m: float = 0.0
    last_floor: int = 0
    last_door: int = _CLOSED
    door_phase_start_ms: int | None = None
    closing_before_departure_ms: int | None = None
    start_ms: int = 0
    start_floor: int = 0
    start_position_m: float = 0.0
    door_closing_ms: int | None = None
    peak_speed_mps: float = 0.0
    peak_accel_mps2: float = 0.0
    peak_jerk_mps3: float = -1.0
    load_max_kg: float = 0.0
    last_direction: int = 0
    linked: bool = False
    stop_ms: int = 0
    stop_floor: int = 0
    stop_position_m: float = 0.0
    stop_in_door_zone: bool = False
    stop_leveling_offset_mm: float = 0.0
    door_opening_ms: int | None = None
    doors_opened: bool = False
    start_leveling_offset_mm: float = 0.0
    leveling_changed: bool = True
    continuous: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-able builtins."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TripState:
        """Restore a state written by :meth:`to_dict`, also after a JSON round trip."""
        return msgspec.convert(data, cls, strict=False)


def initial_trip_state(elevator_id: str) -> TripState:
    """A state for an elevator with no samples seen yet."""
    return TripState(elevator_id)


def segment_message(state: TripState, message: TelemetryMessage) -> tuple[TripState, list[Trip]]:
    """Advance the elevator's trip segmentation over every sample of ``message``.

    Parameters
    ----------
    state
        The elevator's state; it is updated in place and returned.
    message
        A validated message of this elevator.

    Returns
    -------
    state
        The updated state.
    trips
        Trips completed by this message, in time order (usually none, at most a few).

    Raises
    ------
    ValueError
        If the message is another elevator's.

    Examples
    --------
    >>> from tianyan.demo import trip_messages
    >>> elevator_id = "32070000000000000001"
    >>> state, trips = initial_trip_state(elevator_id), []
    >>> for m in trip_messages(elevator_id, start_ms=1_700_000_000_000):
    ...     state, done = segment_message(state, m)
    ...     trips += done
    >>> state, done = flush_trip(state)
    >>> trip = (trips + done)[0]
    >>> trip.start_floor, trip.end_floor, trip.direction, trip.duration_s, trip.peak_speed_mps
    (1, 3, 1, 5.9, 1.6)
    """
    if message.elevator_id != state.elevator_id:
        raise ValueError(
            f"message.elevator_id: {message.elevator_id} is not the elevator of this state "
            f"({state.elevator_id})"
        )
    s = message.samples
    ts = s.t_ms
    speeds = s.speed_mps
    accels = s.accel_mps2
    positions = s.position_m
    floors = s.floor
    directions = s.direction
    loads = s.load_kg
    doors = s.door
    zones = s.door_zone
    offsets = s.leveling_offset_mm
    moving_mps = MOVING_SPEED_MPS
    gap_cap_ms = MAX_SAMPLE_GAP_MS
    opening, open_, closing, closed = _OPENING, _OPEN, _CLOSING, _CLOSED
    opened = (_OPENING, _OPEN)
    trips: list[Trip] = []

    # Before the first sample, a time so long ago that no gap to it is near.
    last_t = _NO_TIME_MS if state.last_t_ms is None else state.last_t_ms
    last_a = state.last_accel_mps2
    last_moving = state.last_moving
    last_door = state.last_door
    phase_start = state.door_phase_start_ms
    phase = state.phase
    n = len(ts)
    first = 0
    while first < n and ts[first] <= last_t:
        first += 1  # already seen or out of order: segmentation needs order
    # Across a change of clock frame the gap to the last sample is not measured.
    cap = gap_cap_ms if state.continuous else -1

    for i in range(first, n):
        t = ts[i]
        v = speeds[i]
        a = accels[i]
        d = doors[i]
        moving = v > moving_mps
        gap_ms = t - last_t
        near = gap_ms <= cap
        cap = gap_cap_ms
        if not near:
            phase_start = None  # a door phase that went on unseen has no measured length

        if d != last_door:
            if d in opened:
                state.closing_before_departure_ms = None
            if near and phase_start is not None:
                if last_door == opening and d == open_:
                    if phase >= _STOPPING:
                        state.door_opening_ms = t - phase_start
                elif last_door == closing and d == closed:
                    state.closing_before_departure_ms = t - phase_start
            if d == open_ and phase >= _STOPPING:
                state.doors_opened = True
            phase_start = t if near else None
            last_door = d

        if phase == _ARRIVED:
            since_stop_ms = t - state.stop_ms
            if (
                moving
                or state.doors_opened
                or since_stop_ms >= ARRIVAL_WAIT_MAX_MS
                or (d != opening and since_stop_ms >= DOOR_OPENING_WAIT_MS)
            ):
                trips.append(_trip(state))
                phase = _IDLE

        if phase == _IDLE:
            if moving:
                phase = _MOVING
                state.start_ms = t
                if near:
                    state.start_floor = state.last_floor
                    state.start_position_m = state.last_position_m
                else:
                    state.start_floor = floors[i]
                    state.start_position_m = positions[i]
                state.door_closing_ms = state.closing_before_departure_ms
                state.closing_before_departure_ms = None
                state.peak_speed_mps = v
                state.peak_accel_mps2 = abs(a)
                state.peak_jerk_mps3 = abs(a - last_a) * 1000.0 / gap_ms if near else -1.0
                state.load_max_kg = loads[i]
                state.last_direction = directions[i]
                state.linked = False
                state.door_opening_ms = None
                state.doors_opened = False
                state.start_leveling_offset_mm = offsets[i]
                state.leveling_changed = False
        elif phase != _ARRIVED:  # moving or stopping: the sample belongs to the trip
            if not state.leveling_changed and offsets[i] != state.start_leveling_offset_mm:
                state.leveling_changed = True
            if v > state.peak_speed_mps:
                state.peak_speed_mps = v
            a_abs = a if a >= 0.0 else -a
            if a_abs > state.peak_accel_mps2:
                state.peak_accel_mps2 = a_abs
            if near:
                jerk = abs(a - last_a) * 1000.0 / gap_ms
                if jerk > state.peak_jerk_mps3:
                    state.peak_jerk_mps3 = jerk
            if loads[i] > state.load_max_kg:
                state.load_max_kg = loads[i]
            if directions[i]:
                state.last_direction = directions[i]
            if moving:
                if near and last_moving:
                    state.linked = True
                phase = _MOVING
            else:
                if phase == _MOVING:
                    phase = _STOPPING
                    state.stop_ms = t
                    state.stop_floor = floors[i]
                    state.stop_position_m = positions[i]
                state.stop_in_door_zone = zones[i]
                state.stop_leveling_offset_mm = offsets[i]
                if t - state.stop_ms >= STOP_CONFIRM_MS:
                    if not state.linked:
                        # Not a run: give the departure's door closing back.
                        state.closing_before_departure_ms = state.door_closing_ms
                        phase = _IDLE
                    elif state.doors_opened or not state.stop_in_door_zone:
                        trips.append(_trip(state))
                        phase = _IDLE
                    else:
                        phase = _ARRIVED

        last_t = t
        last_a = a
        last_moving = moving
        state.last_position_m = positions[i]
        state.last_floor = floors[i]

    state.phase = phase
    if first < n:
        state.last_t_ms = last_t
        state.continuous = True
    state.last_accel_mps2 = last_a
    state.last_moving = last_moving
    state.last_door = last_door
    state.door_phase_start_ms = phase_start
    return state, trips


def flush_trip(state: TripState) -> tuple[TripState, list[Trip]]:
    """Emit the trip that has stopped but is not yet emitted: at the end of a stream.

    A trip still moving stays in the state; a standstill shorter than
    :data:`STOP_CONFIRM_MS` counts as the end here, because no more samples will come.

    Returns
    -------
    state
        The state, standing with no trip open unless the car was still moving.
    trips
        The trip, if there was one to emit.
    """
    if state.phase in (_STOPPING, _ARRIVED) and state.linked:
        state.phase = _IDLE
        return state, [_trip(state)]
    if state.phase == _STOPPING:
        state.phase = _IDLE
    return state, []


def _trip(state: TripState) -> Trip:
    """The trip in ``state`` as a record."""
    change_m = state.stop_position_m - state.start_position_m
    if change_m > 0.0:
        direction = _UP
    elif change_m < 0.0:
        direction = _DOWN
    else:
        direction = state.last_direction
    return Trip(
        state.start_ms,
        state.elevator_id,
        state.stop_ms,
        state.start_floor,
        state.stop_floor,
        direction,
        (state.stop_ms - state.start_ms) / 1000.0,
        abs(change_m),
        state.peak_speed_mps,
        state.peak_accel_mps2,
        state.peak_jerk_mps3 if state.peak_jerk_mps3 >= 0.0 else None,
        state.load_max_kg,
        # A reading that did not change from departure to arrival is a frozen sensor's.
        state.stop_leveling_offset_mm
        if state.stop_in_door_zone and state.leveling_changed
        else None,
        None if state.door_opening_ms is None else state.door_opening_ms / 1000.0,
        None if state.door_closing_ms is None else state.door_closing_ms / 1000.0,
    )
