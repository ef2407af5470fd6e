"""What decides: pure detectors (no Kafka, no database, no I/O) that turn telemetry,
windows and trips into alerts.

- :mod:`detectors.protocol` — the one interface of a stream detector (``new``, ``observe``,
  ``tick``; msgspec state); :mod:`detectors.catalog` — every detector, the one list all
  callers walk; :mod:`detectors.state` — the one codec of detector state.
- :mod:`detectors.rules` — safety rules per message (:class:`SafetyRules`).
- :mod:`detectors.stats` — EWMA / CUSUM / robust z for slow degradation, per trip
  (:class:`TripHealth`).
- :mod:`detectors.online` — online learning per trip and per one-minute window, per
  elevator and per cohort (:class:`OnlineTrips`, :class:`OnlineWindows`).
- :mod:`detectors.series` — scorers for any series (:func:`score_series`).
- :mod:`detectors.thresholds` — every limit, with its source; :mod:`detectors.diagnosis` —
  cause and handling per alert type; :mod:`detectors.alerts` — the :class:`Alert` record.
"""

from .alerts import Alert, alert_key
from .catalog import DETECTOR_TYPES, SERIES_SCORERS, detectors
from .diagnosis import DIAGNOSIS, diagnose
from .maintenance import MaintenanceDue, MaintenanceDueState
from .online import CohortModels, GaussianModel, OnlineState, OnlineTrips, OnlineWindows
from .protocol import Detector
from .rules import RuleState, SafetyRules
from .series import SeriesError, score_series
from .state import decode_state, encode_state
from .stats import Cusum, Ewma, RobustZ, TripHealth, TripHealthState, cohort_key
from .thresholds import ElevatorLimits, ThresholdError, Thresholds

__all__ = [
    "DETECTOR_TYPES",
    "DIAGNOSIS",
    "SERIES_SCORERS",
    "Alert",
    "CohortModels",
    "Cusum",
    "Detector",
    "ElevatorLimits",
    "Ewma",
    "GaussianModel",
    "MaintenanceDue",
    "MaintenanceDueState",
    "OnlineState",
    "OnlineTrips",
    "OnlineWindows",
    "RobustZ",
    "RuleState",
    "SafetyRules",
    "SeriesError",
    "ThresholdError",
    "Thresholds",
    "TripHealth",
    "TripHealthState",
    "alert_key",
    "cohort_key",
    "decode_state",
    "detectors",
    "diagnose",
    "encode_state",
    "score_series",
]
