"""Maintenance sessions per elevator: a pure step over its telemetry messages.

A maintenance visit shows in the telemetry as the car in inspection operation: service mode
2 (GB/T 24476; a technician drives the car from the car top or the control panel), usually
announced by event 43 (inspection mode) and ended by event 40 (back to normal). The worker
keeps one :class:`MaintenanceState` per elevator (checkpointed with the rest of its state),
calls :func:`segment_sessions` for each validated message and writes the sessions it returns
to the ``maintenance_session`` table::

    initial_maintenance_state(elevator_id)   -> MaintenanceState
    segment_sessions(state, message)         -> (MaintenanceState, [MaintenanceSession])

Segmentation, on sample (event) time only
-----------------------------------------
- A session starts at the first sample in service mode 2, or at event 43 if the terminal
  reported it in the same message before that sample.
- It ends at the first later sample in any other mode. A silence of the terminal in between
  (a dropout) does not end it: the car was last seen in inspection.
- A session is emitted twice: open (``end_ms`` None) when it starts, so the boards know the
  car is under maintenance now, and closed when it ends. The sink keeps the closed one.
- Runs in inspection are counted: a sample faster than :data:`~streams.windows.MOVING_SPEED_MPS`
  after a standing one.

Samples at or before the latest sample seen (duplicates, out-of-order messages) are skipped,
as the trip segmenter does.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from foundation.contract import TelemetryMessage
from foundation.records import MaintenanceSession
from streams.windows import MOVING_SPEED_MPS

#: Service mode of inspection (maintenance) operation, GB/T 24476.
INSPECTION_MODE: Final = 2
#: GB/T 24476 event: the car entered inspection mode.
INSPECTION_EVENT: Final = "43"


class MaintenanceState(msgspec.Struct):
    """One elevator's session state: the last sample seen and the session in progress, plus
    the span of the last finished one (trips in it were inspection runs). Fixed scalars.

    Attributes
    ----------
    elevator_id
        Registration code.
    last_t_ms, last_moving
        The latest sample seen (None before the first).
    start_ms
        Start of the session in progress; None when the car is not in inspection.
    runs, event_43
        Inspection runs so far and whether event 43 was seen, for the session in progress.
    last_start_ms, last_end_ms
        The last finished session's span; None before one.
    """

    elevator_id: str
    last_t_ms: int | None = None
    last_moving: bool = False
    start_ms: int | None = None
    runs: int = 0
    event_43: bool = False
    last_start_ms: int | None = None
    last_end_ms: int | None = None

    def in_inspection(self, t_ms: int) -> bool:
        """Whether ``t_ms`` falls in the session in progress or the last finished one."""
        if self.start_ms is not None and t_ms >= self.start_ms:
            return True
        return (
            self.last_start_ms is not None
            and self.last_end_ms is not None
            and self.last_start_ms <= t_ms < self.last_end_ms
        )

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-able builtins."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


def initial_maintenance_state(elevator_id: str) -> MaintenanceState:
    """A state for an elevator with no samples seen yet."""
    return MaintenanceState(elevator_id)


def segment_sessions(
    state: MaintenanceState, message: TelemetryMessage
) -> tuple[MaintenanceState, list[MaintenanceSession]]:
    """Advance the elevator's maintenance sessions over every sample of ``message``.

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
    sessions
        Sessions opened (``end_ms`` None) or closed by this message, in time order.

    Raises
    ------
    ValueError
        If the message is another elevator's.

    Examples
    --------
    >>> from detectors.testing import ELEVATOR_ID, car, message
    >>> st = initial_maintenance_state(ELEVATOR_ID)
    >>> rows = [car(t_ms=1_000 + 100 * k, service_mode=2 if 3 <= k < 8 else 1)
    ...         for k in range(10)]
    >>> st, sessions = segment_sessions(st, message(rows, seq=0))
    >>> [(s.start_ms, s.end_ms, s.duration_s) for s in sessions]
    [(1300, None, None), (1300, 1800, 0.5)]
    """
    if message.elevator_id != state.elevator_id:
        raise ValueError(
            f"message.elevator_id: {message.elevator_id} is not the elevator of this state "
            f"({state.elevator_id})"
        )
    s = message.samples
    ts, modes, speeds = s.t_ms, s.service_mode, s.speed_mps
    last_t = state.last_t_ms
    event_43_ms = min((e.t_ms for e in message.events if e.code == INSPECTION_EVENT), default=None)
    if event_43_ms is not None and state.start_ms is not None:
        state.event_43 = True
    sessions: list[MaintenanceSession] = []
    for i in range(len(ts)):
        t = ts[i]
        if last_t is not None and t <= last_t:
            continue  # already seen or out of order: sessions need order
        moving = speeds[i] > MOVING_SPEED_MPS
        if modes[i] == INSPECTION_MODE:
            if state.start_ms is None:
                start = t
                if event_43_ms is not None and (last_t is None or event_43_ms > last_t):
                    start = min(t, event_43_ms)
                state.start_ms, state.runs = start, 0
                state.event_43 = event_43_ms is not None
                sessions.append(_session(state, None))
            elif moving and not state.last_moving:
                state.runs += 1
        elif state.start_ms is not None:
            sessions.append(_session(state, t))
            state.last_start_ms, state.last_end_ms = state.start_ms, t
            state.start_ms, state.runs, state.event_43 = None, 0, False
        state.last_moving = moving
        last_t = t
    state.last_t_ms = last_t
    return state, sessions


def _session(state: MaintenanceState, end_ms: int | None) -> MaintenanceSession:
    assert state.start_ms is not None
    return MaintenanceSession(
        state.start_ms,
        state.elevator_id,
        end_ms,
        None if end_ms is None else (end_ms - state.start_ms) / 1000.0,
        state.runs,
        state.event_43,
    )
