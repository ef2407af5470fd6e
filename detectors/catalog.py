"""The catalogue of detectors: the one list the worker, offline evaluation, ``tianyan
score`` and the contract test walk.

- :func:`detectors` — the stream detectors (:class:`~detectors.protocol.Detector`), in the
  order they run on each message and trip; :mod:`streams.ingest` runs every one of them
  for the worker and for ``tianyan evaluate`` alike, and ``tests/test_detectors_contract.py``
  checks every one.
- :data:`SERIES_SCORERS` — the detectors for any numeric series (``tianyan score``;
  :mod:`detectors.series`).

(Not to be confused with the elevator registry, :mod:`registry`.)
"""

from __future__ import annotations

from typing import Any, Final

from .maintenance import MaintenanceDue
from .online import OnlineTrips, OnlineWindows
from .protocol import Detector
from .rules import SafetyRules
from .series import SCORERS
from .stats import TripHealth
from .thresholds import Thresholds

#: Every stream detector's class, in running order.
DETECTOR_TYPES: Final = (SafetyRules, TripHealth, MaintenanceDue, OnlineTrips, OnlineWindows)
#: Series scorers by name: ``tianyan score --detector NAME``.
SERIES_SCORERS: Final = SCORERS


def detectors(thresholds: Thresholds | None = None) -> tuple[Detector[Any], ...]:
    """Every stream detector, built with ``thresholds`` (the defaults if None)."""
    th = thresholds or Thresholds()
    return tuple(cls(th) for cls in DETECTOR_TYPES)
