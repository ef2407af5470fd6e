"""Maintenance due: a car whose terminal has shown no maintenance visit for longer than the
maintenance interval raises ``maintenance_overdue`` (minor).

A visit shows as the car in inspection operation: service mode 2, or event 43 (inspection
mode), GB/T 24476. TSG T5002-2017 asks for maintenance at least every 15 days (半月保;
``Thresholds.maintenance_visit_interval_days``). The worker stores each visit as a
``maintenance_session`` (:mod:`streams.maintenance`); this detector judges the rule in the
stream, per elevator, on its own sample times::

    state = MaintenanceDueState(elevator_id)
    alerts = MaintenanceDue(th).observe(state, message, limits)   # notes inspection
    alerts = MaintenanceDue(th).tick(state, now_ms, limits)        # raises when overdue

The interval is counted from the last sample in inspection, or, for a car with none seen
yet, from the first sample the worker saw of it: a terminal just fitted has not had an
interval to show a visit. The alert's condition begins when the interval ran out, so every
check of the same lapse gives the same alert; it clears at the next sample in inspection.
"""

from __future__ import annotations

from typing import Final

import msgspec

from foundation.contract import TelemetryMessage

from .alerts import Alert, make_alert
from .protocol import Consumes
from .thresholds import ElevatorLimits, Thresholds

#: Service mode 2, inspection (maintenance) operation, GB/T 24476.
INSPECTION_MODE: Final = 2
#: GB/T 24476 event 43: the car entered inspection mode.
INSPECTION_EVENT: Final = "43"
_NONE: Final = -1
_MS_PER_DAY: Final = 86_400_000


class MaintenanceDueState(msgspec.Struct):
    """One elevator's maintenance clock. Times are Unix ms; ``-1`` means "none".

    Attributes
    ----------
    elevator_id
        Registration code.
    first_seen_ms, last_t_ms
        The first and the latest sample seen.
    last_inspection_ms
        The latest sample in inspection (or event 43).
    overdue_since_ms
        When the raised ``maintenance_overdue`` began; -1 when none is raised.
    """

    elevator_id: str
    first_seen_ms: int = _NONE
    last_t_ms: int = _NONE
    last_inspection_ms: int = _NONE
    overdue_since_ms: int = _NONE


class MaintenanceDue:
    """The 15-day maintenance rule as a :class:`~detectors.protocol.Detector`.

    Examples
    --------
    >>> from detectors.testing import car, message
    >>> det = MaintenanceDue(Thresholds(maintenance_visit_interval_days=1.0))
    >>> lim = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000, floors=10)
    >>> st = det.new("32070620200000000001")
    >>> day = 86_400_000
    >>> det.observe(st, message([car(t_ms=0)]), lim)
    []
    >>> [(a.alert_type, a.severity, a.condition_since_ms) for a in det.tick(st, day + 1, lim)]
    [('maintenance_overdue', 'minor', 86400000)]
    >>> out = det.observe(st, message([car(t_ms=day + 5, service_mode=2)], seq=1), lim)
    >>> [(a.alert_type, a.state) for a in out]
    [('maintenance_overdue', 'cleared')]
    """

    name = "maintenance_due"
    consumes: Consumes = "message"
    state_type = MaintenanceDueState

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds

    def new(self, elevator_id: str) -> MaintenanceDueState:
        return MaintenanceDueState(elevator_id)

    def observe(
        self, state: MaintenanceDueState, item: TelemetryMessage, limits: ElevatorLimits
    ) -> list[Alert]:
        ts, modes = item.samples.t_ms, item.samples.service_mode
        if not ts:
            return []
        if state.first_seen_ms == _NONE:
            state.first_seen_ms = ts[0]
        seen: int = _NONE
        for t, mode in zip(ts, modes, strict=True):
            if mode == INSPECTION_MODE and t > state.last_inspection_ms:
                seen = t if seen == _NONE else min(seen, t)
                state.last_inspection_ms = t
        for e in item.events:
            if e.code == INSPECTION_EVENT and e.t_ms > state.last_inspection_ms:
                seen = e.t_ms if seen == _NONE else min(seen, e.t_ms)
                state.last_inspection_ms = e.t_ms
        state.last_t_ms = max(state.last_t_ms, ts[-1])
        if seen == _NONE or state.overdue_since_ms == _NONE:
            return []
        raised = self._alert(state, state.overdue_since_ms, seen)
        state.overdue_since_ms = _NONE
        cleared = msgspec.structs.replace(raised, state="cleared")
        return [msgspec.structs.replace(cleared, evidence={**raised.evidence, "visit_ms": seen})]

    def tick(self, state: MaintenanceDueState, now_ms: int, limits: ElevatorLimits) -> list[Alert]:
        if state.overdue_since_ms != _NONE or state.first_seen_ms == _NONE:
            return []
        basis = max(state.first_seen_ms, state.last_inspection_ms)
        due_ms = basis + round(self.thresholds.maintenance_visit_interval_days * _MS_PER_DAY)
        if now_ms <= due_ms:
            return []
        state.overdue_since_ms = due_ms
        return [self._alert(state, due_ms, now_ms)]

    def _alert(self, state: MaintenanceDueState, since_ms: int, t_ms: int) -> Alert:
        return make_alert(
            state.elevator_id,
            "maintenance_overdue",
            since_ms,
            t_ms,
            {
                "detector": self.name,
                "last_visit_ms": None
                if state.last_inspection_ms == _NONE
                else state.last_inspection_ms,
                "monitored_since_ms": state.first_seen_ms,
                "interval_days": self.thresholds.maintenance_visit_interval_days,
            },
        )
