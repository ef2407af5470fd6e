"""Each terminal's clock, judged against when its messages arrive — pure, no I/O.

A terminal stamps its samples with its own clock; the platform knows when each message
arrived (the Kafka record timestamp, or offline the send time). :func:`judge_clock` compares
the two for one message and says how to correct its sample times, or that it must be
quarantined, and raises or clears ``clock_fault``:

- an offset within ``clock_offset_tolerance_s`` of the one already applied refines it: the
  offset in force is the median of the episode's last :data:`OFFSET_MEASUREMENTS`
  measurements, so one message's arrival jitter (up to a message's span) neither sets it
  nor moves the terminal's times about;
- a new offset beyond the tolerance is adopted at once and held while the terminal keeps
  it: every sample is corrected by it (a steady offset leaves the car's own timings
  untouched, and a trapping keeps its timers), and ``clock_fault`` is raised once for the
  episode with the measured offset. An episode that opens with an offset behind, on a
  message whose samples still follow the terminal's earlier ones, may be late delivery, not
  a clock behind: a message whose successors were lost, or a backlog sent after an outage.
  Its samples are corrected all the same (a clock behind must not shift a trapping's
  times), but ``clock_fault`` is raised only when in-order messages arriving at least
  ``clock_behind_confirm_s`` later still measure the offset: sample time kept pace with
  arrival time, as a clock's does. A backlog sent in a burst changes its offset faster
  than that, and the next message on time closes the episode unannounced;
- an offset beyond ``clock_offset_max_s`` (a year 2999, an unset 1970 clock) is not
  corrected: the message is quarantined with the reason, and ``clock_fault`` raised;
- an offset back within the tolerance (of 0) clears the episode;
- a correction that moves a message's samples back more than ``clock_rebase_s`` before the
  terminal's newest corrected one says those were in a wrong frame (a clock trusted before
  it could be judged): the verdict says ``rebased``, and the caller starts the car's state
  again rather than take every later sample for an old one.

Messages that arrive out of sequence order (a resend, a reordering) are late by nature:
they are corrected by the offset in force but do not measure it. One that the offset in force
would put ahead of its own arrival was stamped before the clock last changed (held back
across the change): it is corrected by the offset before the change, or, ahead by that one
too, quarantined. Corrected by the new offset, it would move the car's time hours ahead and
blind its rules to every sample until then.

>>> th = Thresholds()
>>> st = ClockState()
>>> v = judge_clock(st, "E1", 1_000_600_000, 1_000_601_000, 1_000_001_000, True, th)
>>> v.correction_ms, v.alerts[0].alert_type, v.alerts[0].evidence["offset_ms"]
(600000, 'clock_fault', 600000)
>>> judge_clock(st, "E1", 1_000_601_000, 1_000_602_000, 1_000_002_300, True, th).alerts
[]
>>> judge_clock(st, "E1", 1_000_002_000, 1_000_003_000, 1_000_003_000, True, th).alerts[0].state
'cleared'
"""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Final, NamedTuple

import msgspec

from .alerts import Alert, clear_alert, make_alert
from .thresholds import Thresholds

#: In-order measurements of an episode whose median is the offset in force: enough that
#: one message's arrival jitter does not set it, few enough to follow a clock that drifts.
OFFSET_MEASUREMENTS: Final = 9


class ClockState(msgspec.Struct):
    """One terminal's clock as judged so far (checkpointed with the elevator's state).

    Attributes
    ----------
    offset_ms
        The correction in force: terminal time minus arrival time, ms; subtracted from
        every sample time. 0 while the clock is right.
    since_ms
        Corrected time at which the open ``clock_fault`` episode began, Unix ms; None when
        none is open.
    raised_offset_ms
        The offset the open episode was raised with (its alert is rebuilt from it to clear).
    last_corrected_ms
        The newest corrected sample time of an in-order message, Unix ms (-1 before any):
        a newly adopted offset never moves the terminal's samples back before it.
    """

    offset_ms: int = 0
    since_ms: int | None = None
    raised_offset_ms: int = 0
    last_corrected_ms: int = -1
    #: The open episode's last in-order measurements, ms (at most :data:`OFFSET_MEASUREMENTS`).
    measured_ms: list[int] = msgspec.field(default_factory=list)
    #: The offset in force before the latest change (0 if the clock was right): a message
    #: stamped before the change and delivered after it is corrected by it.
    previous_offset_ms: int = 0
    #: The open episode is not announced yet: ``clock_fault`` is raised by an in-order
    #: message arriving from this time on, Unix ms, that still measures its offset (one
    #: that opened behind, on a message that may only be late, waits
    #: ``clock_behind_confirm_s``). None when announced, or none is open.
    confirm_from_ms: int | None = None


class ClockVerdict(NamedTuple):
    """What to do with one message: correct its times by ``correction_ms`` (subtract), or
    quarantine it for ``refused`` (a reason); and the alerts raised or cleared."""

    correction_ms: int
    refused: str | None
    alerts: list[Alert]
    #: The correction moves this message's samples back before the terminal's newest
    #: corrected one by more than ``clock_rebase_s``: the times before were in a wrong frame
    #: (a clock trusted ahead before it could be judged); its elevator's state is rebased.
    rebased: bool = False


def _iso(ms: int) -> str:
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def _raised(elevator_id: str, state: ClockState, at_ms: int, evidence: dict[str, int]) -> Alert:
    assert state.since_ms is not None
    return make_alert(elevator_id, "clock_fault", state.since_ms, at_ms, evidence)


def judge_clock(
    state: ClockState,
    elevator_id: str,
    first_ms: int,
    last_ms: int,
    arrival_ms: int,
    in_order: bool,
    thresholds: Thresholds,
    arrival_uncertainty_ms: int = 0,
) -> ClockVerdict:
    """Judge one message's clock; updates ``state`` in place.

    Parameters
    ----------
    state
        The terminal's :class:`ClockState`.
    elevator_id
        For the alerts.
    first_ms, last_ms
        The message's first and newest sample times, as the terminal stamped them, Unix ms.
    arrival_ms
        When the message arrived, in the same time base as correct sample times, Unix ms
        (the caller removes the partition's usual arrival lag).
    in_order
        The message's ``seq`` is the newest of its terminal: only such messages measure
        the offset.
    thresholds
        ``clock_offset_tolerance_s`` and ``clock_offset_max_s``.
    arrival_uncertainty_ms
        How far ``arrival_ms`` may be from the true send time, ms, added to the tolerance:
        0 when arrival times are exact; large when they are coarse (a replay published
        faster than real time, whose records share one timestamp per batch).
    """
    tolerance_ms = round(thresholds.clock_offset_tolerance_s * 1000) + arrival_uncertainty_ms
    measured_ms = last_ms - arrival_ms
    alerts: list[Alert] = []
    evidence = {
        "offset_ms": measured_ms,
        "sample_ms": last_ms,
        "arrival_ms": arrival_ms,
        "tolerance_ms": tolerance_ms,
    }
    if abs(measured_ms) > thresholds.clock_offset_max_s * 1000:
        announce = state.since_ms is None or state.confirm_from_ms is not None
        if state.since_ms is None:
            state.since_ms = arrival_ms
        if announce:  # no late message is this far off
            state.raised_offset_ms = measured_ms
            state.confirm_from_ms = None
            alerts.append(_raised(elevator_id, state, arrival_ms, evidence))
        reason = (
            f"clock fault: the newest sample time {_iso(last_ms)} is {measured_ms / 1000:+.0f} s "
            f"from the message's arrival {_iso(arrival_ms)}, beyond the "
            f"{thresholds.clock_offset_max_s:.0f} s that are corrected (clock_offset_max_s)"
        )
        return ClockVerdict(state.offset_ms, reason, alerts)
    if not in_order and measured_ms - state.offset_ms > tolerance_ms:
        # Ahead of its own arrival once corrected, which no late message is.
        if measured_ms - state.previous_offset_ms <= tolerance_ms:
            return ClockVerdict(state.previous_offset_ms, None, alerts)
        reason = (
            f"clock fault: a message out of sequence order whose newest sample time "
            f"{_iso(last_ms)} is {measured_ms / 1000:+.0f} s from its arrival {_iso(arrival_ms)}: "
            f"ahead of its arrival whether corrected by the terminal's offset in force "
            f"({state.offset_ms / 1000:+.0f} s) or the one before it "
            f"({state.previous_offset_ms / 1000:+.0f} s)"
        )
        return ClockVerdict(state.offset_ms, reason, alerts)
    if in_order and arrival_uncertainty_ms and state.offset_ms:
        # Arrival times say little here (a replay, a partition's first minute): an episode is
        # neither ended nor changed by this message, which is corrected by the offset in
        # force or by none, whichever its measurement is nearer. (Taken for a right clock,
        # a terminal a day ahead had its samples stored a day ahead, and its car blinded.)
        correction_ms = (
            state.offset_ms if abs(measured_ms - state.offset_ms) <= abs(measured_ms) else 0
        )
        state.last_corrected_ms = max(state.last_corrected_ms, last_ms - correction_ms)
        return ClockVerdict(correction_ms, None, alerts)
    new_offset = maybe_late = rebased = False
    rebase_ms = round(thresholds.clock_rebase_s * 1000)
    if in_order and abs(measured_ms) <= tolerance_ms:
        if state.offset_ms:
            state.previous_offset_ms = state.offset_ms
        state.offset_ms = 0  # the clock may be right: it is trusted
        state.measured_ms = []
        rebased = state.last_corrected_ms - first_ms > rebase_ms
    elif in_order:
        if abs(measured_ms - state.offset_ms) > tolerance_ms:
            new_offset = True
            # Behind, yet after the samples already corrected: a late message, or a clock
            # behind (one that steps back further folds them back, and is not late).
            maybe_late = measured_ms < 0 and first_ms - state.offset_ms > state.last_corrected_ms
            state.previous_offset_ms = state.offset_ms
            state.measured_ms = [measured_ms]  # a new offset
        else:
            state.measured_ms = [*state.measured_ms[-(OFFSET_MEASUREMENTS - 1) :], measured_ms]
        offset = statistics.median_low(state.measured_ms)
        rebased = state.last_corrected_ms - (first_ms - offset) > rebase_ms
        if state.last_corrected_ms >= 0 and not rebased:
            # Arrival times are coarser than sample spacing: never fold the terminal's new
            # samples back over the ones already corrected (by the arrival jitter; beyond
            # clock_rebase_s, those were in a wrong frame, and the state is rebased).
            offset = min(offset, first_ms - state.last_corrected_ms - 1)
        state.offset_ms = offset
    if rebased:
        state.last_corrected_ms = -1
    # When to announce the episode: at once, or if it may be late delivery, when messages
    # arriving clock_behind_confirm_s later measure the offset still.
    announce_from_ms = arrival_ms + (
        round(thresholds.clock_behind_confirm_s * 1000) if maybe_late else 0
    )
    if state.offset_ms and state.since_ms is None:
        state.since_ms = first_ms - state.offset_ms
        state.confirm_from_ms = announce_from_ms
    elif state.since_ms is not None and state.offset_ms == 0:
        if state.confirm_from_ms is None:  # announced: cleared (else it was late delivery)
            raised_evidence = {**evidence, "offset_ms": state.raised_offset_ms}
            raised = _raised(elevator_id, state, state.since_ms, raised_evidence)
            alerts.append(clear_alert(raised, max(last_ms, state.since_ms), evidence))
        state.since_ms = None
        state.raised_offset_ms = 0
        state.confirm_from_ms = None
    elif state.confirm_from_ms is not None and new_offset:
        state.confirm_from_ms = announce_from_ms  # a burst moved on, or a clock stepped
    if state.confirm_from_ms is not None and in_order and arrival_ms >= state.confirm_from_ms:
        state.raised_offset_ms = state.offset_ms
        state.confirm_from_ms = None
        alerts.append(_raised(elevator_id, state, last_ms - state.offset_ms, evidence))
    if in_order:
        state.last_corrected_ms = max(state.last_corrected_ms, last_ms - state.offset_ms)
    return ClockVerdict(state.offset_ms, None, alerts, rebased)


__all__ = ["ClockState", "ClockVerdict", "judge_clock"]
