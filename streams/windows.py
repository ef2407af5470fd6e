"""Tumbling-window features per elevator: a pure fold over its telemetry messages.

The Faust worker keeps one :class:`WindowState` per elevator in a changelog-backed table and
calls :func:`fold_message` for each validated message; the windows it returns go to the
``window_feature`` table. Nothing here reads a clock, a topic or a database, so a replay of
the same messages gives the same rows.

Shape of the fold, as in quix-streams' window aggregations (``initialize`` → ``agg`` →
``result``), but one call folds a whole columnar message::

    initial_window_state(elevator_id)        -> WindowState
    fold_message(state, message, grace_ms)   -> (WindowState, [WindowFeature], FoldStats)
    flush(state)                             -> (WindowState, [WindowFeature])

Time
----
Windows are tumbling, aligned to the epoch: ``bucket_start = t - t mod width``, widths 1 s
and 60 s. The elevator's watermark is the latest sample time seen; a window is emitted, once,
when ``watermark >= bucket_start + width + grace_ms``. A sample older than the watermark but
not older than ``watermark - grace_ms`` still joins its window; an older one is *late*, counted
in :class:`FoldStats` and not folded (the worker stores every raw sample anyway).

Order-dependent features (time weights, jerk, door transitions and phase durations) follow the
chain of in-order samples, each sample compared with the one before it. A sample that arrives
after a later one (out of order, within grace) adds only its point features — sample count,
speed, acceleration, load and a stop's leveling offset — because the chain has already moved
past it; re-sorting would need a buffer of every sample for ``grace_ms`` in the state.

A sample stands for the time until the next in-order sample, capped at
:data:`MAX_SAMPLE_GAP_MS` (time weights: ``moving_s``, ``occupied_s``, ``door_open_s``). That
time is credited to the 1-s windows it overlaps (the sample's own and the next), so no window
holds more time than its width.

The 60-s windows are built by merging the 1-s windows as those close (a 1-s window always
closes before its 60-s window), so a 60-s row is by construction the combination of its 1-s
rows: max of maxes, sum of times and counts, sample-weighted mean speed.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from foundation.contract import DoorState, TelemetryMessage
from foundation.records import WindowFeature

#: A car faster than this is moving. Terminals report a few mm/s of creep and sensor noise
#: at standstill; 0.05 m/s is far below any lift's levelling speed (≈ 0.1-0.3 m/s).
MOVING_SPEED_MPS: Final = 0.05
#: Longest time one sample speaks for, and the longest gap across which jerk and door-phase
#: edges are measured: batches are 0.1 s apart, idle heartbeats 30 s apart.
MAX_SAMPLE_GAP_MS: Final = 500
#: Window widths, seconds (the ``width_s`` column allows exactly these).
WIDTHS_S: Final = (1, 60)

_WIDTH_1S_MS: Final = 1_000
_WIDTH_60S_MS: Final = 60_000
# Door states as plain ints: the hot loop compares them per sample, and an IntEnum member
# costs an attribute lookup each time.
_CLOSED: Final = int(DoorState.CLOSED)
_OPENING: Final = int(DoorState.OPENING)
_OPEN: Final = int(DoorState.OPEN)
_CLOSING: Final = int(DoorState.CLOSING)
#: Door states of a car stopped at a landing for passengers: its leveling offset counts.
_STOP_DOORS: Final = (_OPENING, _OPEN)
#: Marks "no value yet" in accumulators whose real values are never negative.
_NONE: Final = -1.0


class FoldStats(msgspec.Struct, frozen=True):
    """What one :func:`fold_message` call did with the message's samples.

    Attributes
    ----------
    samples_folded
        Samples folded into a 1-s window (in order plus out of order).
    samples_out_of_order
        Of those, samples older than the watermark but within grace: only their point
        features were folded.
    samples_late
        Samples older than ``watermark - grace_ms``: not folded.
    samples_duplicate
        Samples at exactly the watermark time (already folded): not folded.
    samples_after_flush
        Samples whose 1-s window had already been emitted by :func:`flush`: not folded.
    samples_unmerged_60s
        Samples in 1-s windows closed by this call whose 60-s window had already been
        emitted by :func:`flush`: in their 1-s rows but not in a 60-s row.
    """

    samples_folded: int = 0
    samples_out_of_order: int = 0
    samples_late: int = 0
    samples_duplicate: int = 0
    samples_after_flush: int = 0
    samples_unmerged_60s: int = 0


class _Window(msgspec.Struct, array_like=True):
    """Running aggregates of one open window. Times in integer ms so that sums are exact."""

    samples: int = 0
    speed_max_mps: float = _NONE
    speed_sum_mps: float = 0.0
    accel_peak_mps2: float = _NONE
    jerk_peak_mps3: float = _NONE
    load_max_kg: float = _NONE
    moving_ms: int = 0
    occupied_ms: int = 0
    door_open_ms: int = 0
    door_open_count: int = 0
    door_close_count: int = 0
    opening_ms: int = 0
    opening_n: int = 0
    closing_ms: int = 0
    closing_n: int = 0
    leveling_offset_mm: float | None = None
    #: Time of the sample that gave ``leveling_offset_mm``, so an out-of-order stop sample
    #: does not replace a later one.
    leveling_t_ms: int = -1

    def merge(self, other: _Window) -> None:
        """Fold a later, disjoint window into this one."""
        self.samples += other.samples
        self.speed_max_mps = max(self.speed_max_mps, other.speed_max_mps)
        self.speed_sum_mps += other.speed_sum_mps
        self.accel_peak_mps2 = max(self.accel_peak_mps2, other.accel_peak_mps2)
        self.jerk_peak_mps3 = max(self.jerk_peak_mps3, other.jerk_peak_mps3)
        self.load_max_kg = max(self.load_max_kg, other.load_max_kg)
        self.moving_ms += other.moving_ms
        self.occupied_ms += other.occupied_ms
        self.door_open_ms += other.door_open_ms
        self.door_open_count += other.door_open_count
        self.door_close_count += other.door_close_count
        self.opening_ms += other.opening_ms
        self.opening_n += other.opening_n
        self.closing_ms += other.closing_ms
        self.closing_n += other.closing_n
        if other.leveling_t_ms > self.leveling_t_ms:
            self.leveling_offset_mm = other.leveling_offset_mm
            self.leveling_t_ms = other.leveling_t_ms

    def feature(self, elevator_id: str, bucket_start_ms: int, width_s: int) -> WindowFeature:
        n = self.samples
        return WindowFeature(
            bucket_start_ms,
            elevator_id,
            width_s,
            n,
            self.speed_max_mps,
            self.speed_sum_mps / n,
            self.accel_peak_mps2,
            self.jerk_peak_mps3 if self.jerk_peak_mps3 >= 0.0 else None,
            self.load_max_kg,
            self.moving_ms / 1000.0,
            self.occupied_ms / 1000.0,
            self.door_open_count,
            self.door_close_count,
            self.opening_ms / self.opening_n / 1000.0 if self.opening_n else None,
            self.closing_ms / self.closing_n / 1000.0 if self.closing_n else None,
            self.door_open_ms / 1000.0,
            self.leveling_offset_mm,
        )


class WindowState(msgspec.Struct):
    """One elevator's open windows of both widths and the last in-order sample.

    Its size is bounded: at most ``grace_ms / 1000 + 2`` open 1-s windows and
    ``grace_ms / 60000 + 2`` open 60-s windows, plus a few scalars. Serialise with
    :meth:`to_dict` (plain JSON types) and restore with :meth:`from_dict`.

    Attributes
    ----------
    elevator_id
        Registration code of the elevator.
    watermark_ms
        Latest sample time seen, epoch ms (None before the first sample); also the time of
        the last sample of the in-order chain.
    last_gap_ms
        Gap between that sample and the in-order sample before it, ms (None if none).
    last_accel_mps2, last_moving, last_passengers, last_door
        That sample's acceleration, whether it was moving, passenger presence, door state.
    door_phase_start_ms
        When the current door state began, if that edge was seen within
        :data:`MAX_SAMPLE_GAP_MS`; else None.
    pending_bucket_ms
        1-s window of the last sample while its time weight awaits the next sample.
    open_1s, open_60s
        Open windows by start, epoch ms.
    flushed_1s_until_ms, flushed_60s_until_ms
        End of the latest window of each width emitted by :func:`flush`; windows starting
        before it are never opened again, so each window is emitted at most once.
    continuous
        False when the next sample is in another clock frame than the last (the ingest's
        correction of the terminal's clock changed between their messages): the gap
        between them was not measured, so no jerk or door phase is taken across it.
    """

    elevator_id: str
    watermark_ms: int | None = None
    last_gap_ms: int | None = None
    last_accel_mps2: float = 0.0
    last_moving: bool = False
    last_passengers: bool = False
    last_door: int = _CLOSED
    door_phase_start_ms: int | None = None
    pending_bucket_ms: int | None = None
    open_1s: dict[int, _Window] = {}
    open_60s: dict[int, _Window] = {}
    flushed_1s_until_ms: int = 0
    flushed_60s_until_ms: int = 0
    continuous: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-able builtins (window keys become strings)."""
        out: dict[str, Any] = msgspec.to_builtins(self, str_keys=True)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowState:
        """Restore a state written by :meth:`to_dict`, also after a JSON round trip."""
        return msgspec.convert(data, cls, strict=False)


def initial_window_state(elevator_id: str) -> WindowState:
    """A state for an elevator with no samples seen yet."""
    return WindowState(elevator_id)


def fold_message(
    state: WindowState, message: TelemetryMessage, grace_ms: int
) -> tuple[WindowState, list[WindowFeature], FoldStats]:
    """Fold every sample of ``message`` into the elevator's windows.

    Parameters
    ----------
    state
        The elevator's state; it is updated in place and returned.
    message
        A validated message of this elevator (exact duplicates already dropped).
    grace_ms
        How long after a window's end its samples are still accepted, ms, ≥ 0. Use one value
        for every call on a state.

    Returns
    -------
    state
        The updated state.
    windows
        Windows that closed because the watermark reached their end + ``grace_ms``: the 1-s
        windows in time order, then the 60-s windows. Each window is returned exactly once.
    stats
        What happened to the message's samples.

    Raises
    ------
    ValueError
        If ``grace_ms`` is negative or the message is another elevator's.

    Examples
    --------
    >>> from tianyan.demo import trip_messages
    >>> elevator_id = "32070000000000000001"
    >>> state, rows = initial_window_state(elevator_id), []
    >>> for m in trip_messages(elevator_id, start_ms=1_700_000_000_000):
    ...     state, closed, stats = fold_message(state, m, grace_ms=2_000)
    ...     rows += closed
    >>> state, rest = flush(state)
    >>> minute = [r for r in rows + rest if r.width_s == 60]
    >>> len(rows + rest) - len(minute), minute[0].samples, minute[0].moving_s
    (7, 61, 5.9)
    """
    if grace_ms < 0:
        raise ValueError(f"grace_ms: {grace_ms} is negative; a grace period is 0 ms or more")
    if message.elevator_id != state.elevator_id:
        raise ValueError(
            f"message.elevator_id: {message.elevator_id} is not the elevator of this state "
            f"({state.elevator_id})"
        )
    ts = message.samples.t_ms
    n = len(ts)
    wm = state.watermark_ms
    # Sample times strictly increase within a message, so the samples not after the
    # watermark form a prefix; the rest extend the in-order chain.
    first = 0
    if wm is not None:
        while first < n and ts[first] <= wm:
            first += 1
    old = _fold_old_samples(state, message, first, grace_ms) if first else (0, 0, 0, 0)
    in_order_after_flush = _fold_in_order(state, message, first) if first < n else 0
    assert state.watermark_ms is not None  # set by the first sample ever folded
    closed, unmerged = _close_windows(state, state.watermark_ms - grace_ms)
    out_of_order, late, duplicate, old_after_flush = old
    after_flush = in_order_after_flush + old_after_flush
    return (
        state,
        closed,
        FoldStats(
            samples_folded=n - late - duplicate - after_flush,
            samples_out_of_order=out_of_order,
            samples_late=late,
            samples_duplicate=duplicate,
            samples_after_flush=after_flush,
            samples_unmerged_60s=unmerged,
        ),
    )


def flush(state: WindowState) -> tuple[WindowState, list[WindowFeature]]:
    """Close every open window now: at the end of a stream or for an idle elevator.

    The last sample's time weight, still waiting for a next sample, is taken as the gap to
    the sample before it (capped at :data:`MAX_SAMPLE_GAP_MS` and at its window's end): the
    cadence it was sent at.
    Windows emitted here are never opened again: a later sample that falls in one is
    counted in :attr:`FoldStats.samples_after_flush` (1-s) or
    :attr:`FoldStats.samples_unmerged_60s` (60-s) instead.

    Returns
    -------
    state
        The state, with no open windows; the in-order chain is kept.
    windows
        The 1-s windows in time order, then the 60-s windows.
    """
    pending, wm = state.pending_bucket_ms, state.watermark_ms
    if pending is not None and wm is not None:
        gap_ms = state.last_gap_ms
        to_end_ms = pending + _WIDTH_1S_MS - wm
        weight_ms = 0 if gap_ms is None else min(gap_ms, MAX_SAMPLE_GAP_MS, to_end_ms)
        window = state.open_1s[pending]
        if state.last_moving:
            window.moving_ms += weight_ms
        if state.last_passengers:
            window.occupied_ms += weight_ms
        if state.last_door == _OPEN:
            window.door_open_ms += weight_ms
        state.pending_bucket_ms = None
    if state.open_1s:
        state.flushed_1s_until_ms = max(state.open_1s) + _WIDTH_1S_MS
    closed, _ = _close_windows(state, None)
    if closed and closed[-1].width_s == 60:
        state.flushed_60s_until_ms = closed[-1].bucket_start_ms + _WIDTH_60S_MS
    return state, closed


def _fold_in_order(state: WindowState, message: TelemetryMessage, first: int) -> int:
    """Fold samples ``first:`` (all after the watermark); returns how many fell in windows
    already flushed.

    The hot path, so one plain loop over locals. (Cutting the message into per-window runs
    and taking point features with builtins over slices measured slower for 10 samples.)
    """
    s = message.samples
    ts = s.t_ms
    speeds = s.speed_mps
    accels = s.accel_mps2
    loads = s.load_kg
    doors = s.door
    zones = s.door_zone
    offsets = s.leveling_offset_mm
    passengers = s.passengers
    open_1s = state.open_1s
    flushed_until_ms = state.flushed_1s_until_ms
    moving_mps = MOVING_SPEED_MPS
    gap_cap_ms = MAX_SAMPLE_GAP_MS
    opening, open_, closing, closed = _OPENING, _OPEN, _CLOSING, _CLOSED
    stop_doors = _STOP_DOORS
    width_ms = _WIDTH_1S_MS
    prev_t = state.watermark_ms
    prev_gap = state.last_gap_ms
    prev_a = state.last_accel_mps2
    prev_moving = state.last_moving
    prev_passengers = state.last_passengers
    prev_door = state.last_door
    phase_start = state.door_phase_start_ms
    pending = state.pending_bucket_ms
    # Across a change of clock frame the gap to the last sample is not measured.
    cap = gap_cap_ms if state.continuous else -1
    scratch = _Window()  # takes samples whose 1-s window was flushed; thrown away
    # The window that receives the previous sample's time weight (None once credited);
    # the loop starts in it, so a sample in the same second needs no lookup.
    prev_window: _Window | None
    if pending is None:
        prev_window, window, bucket, bucket_end = None, scratch, -1, -1
    else:
        prev_window = window = open_1s[pending]
        bucket, bucket_end = pending, pending + width_ms
    for i in range(first, len(ts)):
        t = ts[i]
        prev_end = bucket_end
        if t >= bucket_end:
            bucket = t - t % width_ms
            bucket_end = bucket + width_ms
            if bucket < flushed_until_ms:
                window = scratch
            else:
                found = open_1s.get(bucket)
                if found is None:
                    found = open_1s[bucket] = _Window()
                window = found
        v = speeds[i]
        a = accels[i]
        d = doors[i]
        window.samples += 1
        window.speed_sum_mps += v
        if v > window.speed_max_mps:
            window.speed_max_mps = v
        a_abs = a if a >= 0.0 else -a
        if a_abs > window.accel_peak_mps2:
            window.accel_peak_mps2 = a_abs
        load = loads[i]
        if load > window.load_max_kg:
            window.load_max_kg = load
        if prev_t is not None:
            prev_gap = gap = t - prev_t
            if gap <= gap_cap_ms:
                if gap <= cap:
                    jerk = abs(a - prev_a) * 1000.0 / gap
                    if jerk > window.jerk_peak_mps3:
                        window.jerk_peak_mps3 = jerk
                weight = gap
            else:
                weight = gap_cap_ms
            if prev_window is not None:
                over = prev_t + weight - prev_end
                if over > 0:
                    # The previous sample's time runs into the next second: credit each
                    # window its share, so no window holds more time than its width. If
                    # that second has no in-order sample (a gap), its share is dropped.
                    weight -= over
                    if bucket == prev_end:
                        if prev_moving:
                            window.moving_ms += over
                        if prev_passengers:
                            window.occupied_ms += over
                        if prev_door == open_:
                            window.door_open_ms += over
                if prev_moving:
                    prev_window.moving_ms += weight
                if prev_passengers:
                    prev_window.occupied_ms += weight
                if prev_door == open_:
                    prev_window.door_open_ms += weight
            if d != prev_door:
                if d == opening or (d == open_ and prev_door != opening):
                    window.door_open_count += 1
                elif d == closing or (d == closed and prev_door != closing):
                    window.door_close_count += 1
                if phase_start is not None and gap <= cap:
                    if prev_door == opening and d == open_:
                        window.opening_ms += t - phase_start
                        window.opening_n += 1
                    elif prev_door == closing and d == closed:
                        window.closing_ms += t - phase_start
                        window.closing_n += 1
                phase_start = t if gap <= cap else None
        cap = gap_cap_ms
        if d in stop_doors and v <= moving_mps and zones[i]:
            window.leveling_offset_mm = offsets[i]
            window.leveling_t_ms = t
        prev_t = t
        prev_a = a
        prev_moving = v > moving_mps
        prev_passengers = passengers[i]
        prev_door = d
        prev_window = window
    state.watermark_ms = prev_t
    state.last_gap_ms = prev_gap
    state.last_accel_mps2 = prev_a
    state.last_moving = prev_moving
    state.last_passengers = prev_passengers
    state.last_door = prev_door
    state.door_phase_start_ms = phase_start
    state.pending_bucket_ms = None if window is scratch else bucket
    if first < len(ts):
        state.continuous = True
    return scratch.samples


def _fold_old_samples(
    state: WindowState, message: TelemetryMessage, stop: int, grace_ms: int
) -> tuple[int, int, int, int]:
    """Fold samples ``:stop`` (none after the watermark): point features only.

    Returns (out of order and folded, late, duplicate, after flush).
    """
    s = message.samples
    wm = state.watermark_ms
    assert wm is not None  # old samples exist only once a watermark does
    late_before_ms = wm - grace_ms
    folded = late = duplicate = after_flush = 0
    for i in range(stop):
        t = s.t_ms[i]
        if t == wm:
            duplicate += 1
            continue
        if t < late_before_ms:
            late += 1
            continue
        bucket = t - t % _WIDTH_1S_MS
        if bucket < state.flushed_1s_until_ms:
            after_flush += 1
            continue
        window = state.open_1s.get(bucket)
        if window is None:
            window = state.open_1s[bucket] = _Window()
        folded += 1
        v = s.speed_mps[i]
        window.samples += 1
        window.speed_sum_mps += v
        window.speed_max_mps = max(window.speed_max_mps, v)
        window.accel_peak_mps2 = max(window.accel_peak_mps2, abs(s.accel_mps2[i]))
        window.load_max_kg = max(window.load_max_kg, s.load_kg[i])
        d = s.door[i]
        if (
            d in _STOP_DOORS
            and v <= MOVING_SPEED_MPS
            and s.door_zone[i]
            and t > window.leveling_t_ms
        ):
            window.leveling_offset_mm = s.leveling_offset_mm[i]
            window.leveling_t_ms = t
    return folded, late, duplicate, after_flush


def _close_windows(state: WindowState, end_by_ms: int | None) -> tuple[list[WindowFeature], int]:
    """Emit the windows ending at or before ``end_by_ms`` (all if None), 1-s ones merged
    into their 60-s window first. Returns the windows and the samples of 1-s windows whose
    60-s window had already been flushed."""
    out: list[WindowFeature] = []
    unmerged = 0
    eid = state.elevator_id
    open_1s = state.open_1s
    due = (
        list(open_1s)
        if end_by_ms is None
        else [b for b in open_1s if b + _WIDTH_1S_MS <= end_by_ms]
    )
    if due:
        due.sort()
        open_60s = state.open_60s
        for b in due:
            window = open_1s.pop(b)
            out.append(window.feature(eid, b, 1))
            minute = b - b % _WIDTH_60S_MS
            if minute < state.flushed_60s_until_ms:
                unmerged += window.samples
                continue
            parent = open_60s.get(minute)
            if parent is None:
                open_60s[minute] = window  # now owned by the 60-s window; popped above
            else:
                parent.merge(window)
    open_60s = state.open_60s
    if open_60s and (end_by_ms is None or min(open_60s) + _WIDTH_60S_MS <= end_by_ms):
        for b in sorted(open_60s):
            if end_by_ms is None or b + _WIDTH_60S_MS <= end_by_ms:
                out.append(open_60s.pop(b).feature(eid, b, 60))
    return out, unmerged
