"""What decides: pure detectors (no Kafka, no database, no I/O) that turn telemetry,
windows and trips into alerts.

- :mod:`detectors.rules` — safety rules per message (:func:`observe`, :func:`tick`).
- :mod:`detectors.stats` — EWMA / CUSUM / robust z for slow degradation, per trip.
- :mod:`detectors.online` — river Half-Space Trees.
- :mod:`detectors.registry` — named detectors for any series (:func:`score_series`).
- :mod:`detectors.thresholds` — every limit, with its source; :mod:`detectors.diagnosis` —
  cause and handling per alert type; :mod:`detectors.alerts` — the :class:`Alert` record.
"""

from .alerts import Alert, alert_key
from .diagnosis import DIAGNOSIS, diagnose
from .online import HalfSpaceTreesDetector
from .registry import DETECTORS, SeriesError, score_series
from .rules import RuleState, observe, tick
from .stats import CohortState, Cusum, Ewma, RobustZ, TripHealthState, cohort_key, observe_trip
from .thresholds import ElevatorLimits, ThresholdError, Thresholds

__all__ = [
    "DETECTORS",
    "DIAGNOSIS",
    "Alert",
    "CohortState",
    "Cusum",
    "ElevatorLimits",
    "Ewma",
    "HalfSpaceTreesDetector",
    "RobustZ",
    "RuleState",
    "SeriesError",
    "ThresholdError",
    "Thresholds",
    "TripHealthState",
    "alert_key",
    "cohort_key",
    "diagnose",
    "observe",
    "observe_trip",
    "score_series",
    "tick",
]
