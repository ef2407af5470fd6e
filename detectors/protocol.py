"""The one interface every stream detector has.

A detector is a small object built from the shared
:class:`~detectors.thresholds.Thresholds`; everything it remembers about one elevator is a
msgspec Struct it makes with :meth:`Detector.new` and updates in place — state as data,
checkpointed by :mod:`detectors.state`, never by the detector. It does no I/O::

    detector = SafetyRules(thresholds)                  # from detectors.catalog.detectors()
    state = detector.new(elevator_id)
    alerts = detector.observe(state, message, limits)   # a TelemetryMessage, or a Trip
    alerts = detector.tick(state, now_ms, limits)       # stream time, no new input

``consumes`` says which input ``observe`` takes: ``"message"`` (every validated,
de-duplicated telemetry message, in order), ``"trip"`` (every trip the segmenter closes) or
``"window"`` (every one-minute window the fold closes).
``limits`` is the elevator's :class:`~detectors.thresholds.ElevatorLimits`, passed on each
call because the registry may change under a running worker.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypeVar

import msgspec

from .alerts import Alert
from .thresholds import ElevatorLimits

Consumes = Literal["message", "trip", "window"]
StateT = TypeVar("StateT", bound=msgspec.Struct)


class Detector(Protocol[StateT]):
    """A stream detector: see the module docstring."""

    #: Its name in :mod:`detectors.catalog` and in checkpoints.
    name: str
    #: The input :meth:`observe` takes.
    consumes: Consumes
    #: The type of its per-elevator state.
    state_type: type[StateT]

    def new(self, elevator_id: str) -> StateT:
        """The state of an elevator never seen."""
        ...

    def observe(self, state: StateT, item: Any, limits: ElevatorLimits) -> list[Alert]:
        """Fold one input into ``state`` (in place); the alerts raised and cleared by it."""
        ...

    def tick(self, state: StateT, now_ms: int, limits: ElevatorLimits) -> list[Alert]:
        """Conditions that arise from time passing with no input, at stream time ``now_ms``."""
        ...
