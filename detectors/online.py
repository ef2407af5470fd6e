"""Online learning in the stream: each elevator's trips and one-minute windows against a
Gaussian model it keeps learning, of itself and of its cohort.

The model (:class:`GaussianModel`) is river's ``AdaptiveStandardScaler`` made a scorer:
per feature an exponentially weighted mean and variance (river's ``EWMean`` / ``EWVar``,
Finch 2009), with the weight of a new value ``max(1 / n, fading factor)`` so that the first
values are weighed equally (river's start from the first value alone would leave the
variance a third too small after 100 values, and every car would alarm after warm-up).
A trip (or window) scores the χ² tail probability ``p`` of the sum of its squared
standardised features; the stored score is ``log p / (2 log online_alarm_p)``, capped at
1: 0.5 at the alarm threshold, as every score of ``tianyan score``.

Why not river's models themselves: Half-Space Trees pickles to 170 KB per model (two models
per elevator, 40,000 elevators: 13.6 GB) and scored 0.0 on NAB; LODA 48 KB; the scaler
alone 1.6 KB and 45 µs per pickle at every checkpoint. Here a model is 12 floats in the
state Struct, MessagePack like every other state, and learns in about 2 µs.

Two detectors, one per input: :class:`OnlineTrips` (every trip) and :class:`OnlineWindows`
(every active one-minute window). Each learns per elevator (its state) and per cohort (same
rated speed, floors band, building type: :func:`~detectors.stats.cohort_key`), the cohort
models held in :class:`CohortModels`, one per partition (see :mod:`streams.ingest`). An
elevator's own score stands once it has learnt ``online_warmup_trips`` (or ``_windows``);
until then its cohort's (once that has learnt ``online_cohort_warmup``) is stored, and
nothing alerts: a new elevator does not alarm. ``online_anomaly`` (info) is raised and
cleared by the trip or window that is the ``online_confirm_rows``-th in a row at or above the
alarm threshold (one alert per run of them), like ``trip_anomaly``: a single odd trip is a
heavy tail (a door held, a short trip), a run of them is the car.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec
from scipy.special import chdtrc

from foundation.records import Trip, WindowFeature

from .alerts import Alert, make_alert
from .protocol import Consumes
from .stats import TRIP_FEATURES, cohort_key, trip_features
from .thresholds import ElevatorLimits, Thresholds

#: The one-minute window features the window model looks at (speed relative to rated).
WINDOW_FEATURES: Final = (
    "accel_peak_mps2",
    "jerk_peak_mps3",
    "door_opening_s",
    "door_closing_s",
    "leveling_offset_mm",
    "speed_ratio",
)
#: The alert both detectors raise.
ONLINE_ANOMALY: Final = "online_anomaly"


def window_features(window: WindowFeature, limits: ElevatorLimits) -> dict[str, float] | None:
    """Numeric features of an active one-minute window (the car moved or its doors opened);
    None for an idle one (a heartbeat), which says nothing of the car's health."""
    if window.moving_s <= 0.0 and window.door_open_count == 0:
        return None
    nan = math.nan

    def f(v: float | None) -> float:
        return nan if v is None else float(v)

    rated = limits.rated_speed_mps or nan
    accel_frozen = window.jerk_peak_mps3 == 0.0  # never changed: a frozen sensor's, missing
    return {
        "accel_peak_mps2": nan if accel_frozen else f(window.accel_peak_mps2),
        "jerk_peak_mps3": nan if accel_frozen else f(window.jerk_peak_mps3),
        "door_opening_s": f(window.door_opening_s),
        "door_closing_s": f(window.door_closing_s),
        "leveling_offset_mm": f(window.leveling_offset_mm),
        "speed_ratio": f(window.speed_max_mps) / rated,
    }


class GaussianModel(msgspec.Struct):
    """Per feature an exponentially weighted mean and variance; scores the χ² tail
    probability of a row's standardised features.

    Non-finite features are neither learnt nor scored (a missing feature is absent).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> m = GaussianModel()
    >>> for _ in range(300):
    ...     m.learn_one({"a": float(rng.normal(1.0, 0.1)), "b": float(rng.normal(2.0, 0.1))}, 0.01)
    >>> m.p_value({"a": 1.0, "b": 2.0}, 0.02) > 0.5, m.p_value({"a": 2.0, "b": 2.0}, 0.02) < 1e-9
    (True, True)
    """

    #: feature → [values learnt, mean, variance]
    features: dict[str, list[float]] = {}
    learned: int = 0

    def learn_one(
        self,
        x: dict[str, float],
        fading_factor: float,
        clip_sigmas: float = math.inf,
        clip_after: int = 0,
    ) -> None:
        """Learn ``x``; once a feature has ``clip_after`` values, a value is learnt as at
        most ``clip_sigmas`` standard deviations from the mean (Huber), so one outlier
        cannot inflate the variance, while a lasting change is still followed."""
        learnt = False
        for name, value in x.items():
            if not math.isfinite(value):
                continue
            learnt = True
            st = self.features.get(name)
            if st is None:
                self.features[name] = [1.0, value, 0.0]
                continue
            if st[0] >= clip_after and st[0] >= 2:
                bound = clip_sigmas * math.sqrt(st[2])
                value = min(max(value, st[1] - bound), st[1] + bound)
            st[0] += 1.0
            weight = max(1.0 / st[0], fading_factor)
            diff = value - st[1]
            incr = weight * diff
            st[1] += incr
            st[2] = (1.0 - weight) * (st[2] + diff * incr)
        if learnt:
            self.learned += 1

    def p_value(self, x: dict[str, float], min_sigma_ratio: float) -> float:
        """χ² tail probability of ``x`` (1 = usual, → 0 = unlike anything learnt); NaN when
        no finite feature has been learnt twice."""
        q = 0.0
        dof = 0
        for name, value in x.items():
            st = self.features.get(name)
            if st is None or st[0] < 2 or not math.isfinite(value):
                continue
            sigma = max(math.sqrt(st[2]), min_sigma_ratio * abs(st[1]) + 1e-3)
            q += ((value - st[1]) / sigma) ** 2
            dof += 1
        if dof == 0:
            return math.nan
        return float(chdtrc(dof, q))

    def z_scores(self, x: dict[str, float], min_sigma_ratio: float) -> dict[str, float]:
        """Each feature's standardised value (for an alert's evidence)."""
        out = {}
        for name, value in x.items():
            st = self.features.get(name)
            if st is not None and st[0] >= 2 and math.isfinite(value):
                sigma = max(math.sqrt(st[2]), min_sigma_ratio * abs(st[1]) + 1e-3)
                out[name] = round((value - st[1]) / sigma, 2)
        return out


def calibrated_score(p: float, alarm_p: float) -> float:
    """``log p / (2 log alarm_p)`` in [0, 1]: 0.5 at ``alarm_p``, 1 at its square or below.

    >>> calibrated_score(1e-9, 1e-9), calibrated_score(1.0, 1e-9), calibrated_score(0.0, 1e-9)
    (0.5, 0.0, 1.0)
    """
    if math.isnan(p):
        return math.nan
    if p <= 0.0:
        return 1.0
    return min(1.0, max(0.0, math.log(p) / (2.0 * math.log(alarm_p))))


class OnlineState(msgspec.Struct):
    """One elevator's own model, for one input kind (trips or windows)."""

    elevator_id: str
    model: GaussianModel = msgspec.field(default_factory=GaussianModel)
    #: Consecutive rows at or above the alarm threshold (an alert at ``online_confirm_rows``).
    unusual_rows: int = 0


class CohortModels(msgspec.Struct):
    """The cohort models of one partition, for one input kind: cohort key → model, at most
    ``online_max_cohorts`` (the least recently used dropped first).

    Examples
    --------
    >>> from detectors.state import decode_state, encode_state
    >>> c = CohortModels()
    >>> c.model("1.00|7-11|residential", 2).learn_one({"a": 1.0}, 0.01)
    >>> decode_state(encode_state(c), CohortModels) == c
    True
    """

    models: dict[str, GaussianModel] = {}

    def model(self, key: str, max_cohorts: int) -> GaussianModel:
        m = self.models.pop(key, None)  # re-inserted last: dicts keep insertion order
        if m is None:
            m = GaussianModel()
            while self.models and len(self.models) >= max_cohorts:
                del self.models[next(iter(self.models))]
        self.models[key] = m
        return m


class Scored(msgspec.Struct, frozen=True):
    """What one trip or window scored: the score stored with it (None while both models
    warm up) and the alerts it raised."""

    score: float | None
    alerts: list[Alert]


class OnlineDetector:
    """The common fold of :class:`OnlineTrips` and :class:`OnlineWindows`."""

    name: str
    consumes: Consumes
    state_type = OnlineState
    cohort_type = CohortModels
    features: tuple[str, ...]

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds

    def new(self, elevator_id: str) -> OnlineState:
        return OnlineState(elevator_id)

    def new_cohorts(self) -> CohortModels:
        return CohortModels()

    def tick(self, state: OnlineState, now_ms: int, limits: ElevatorLimits) -> list[Alert]:
        return []

    def observe(self, state: OnlineState, item: Any, limits: ElevatorLimits) -> list[Alert]:
        """The protocol's fold: the elevator's own model alone (no cohort)."""
        return self.observe_in_cohort(state, None, item, limits).alerts

    def _row(self, item: Any, limits: ElevatorLimits) -> tuple[dict[str, float], int, int] | None:
        raise NotImplementedError

    def _warmup(self) -> int:
        raise NotImplementedError

    def observe_in_cohort(
        self,
        state: OnlineState,
        cohorts: CohortModels | None,
        item: Any,
        limits: ElevatorLimits,
    ) -> Scored:
        """Score ``item`` against the elevator's model and its cohort's, then learn it in
        both; the score to store and the alerts."""
        row = self._row(item, limits)
        if row is None:
            return Scored(None, [])
        x, start_ms, end_ms = row
        th = self.thresholds
        own = state.model
        cohort = None
        key = cohort_key(limits)
        if cohorts is not None:
            cohort = cohorts.model(key, th.online_max_cohorts)
        own_p = own.p_value(x, th.online_min_sigma_ratio)
        own_score = calibrated_score(own_p, th.online_alarm_p)
        cohort_p = math.nan
        if cohort is not None and cohort.learned >= th.online_cohort_warmup:
            cohort_p = cohort.p_value(x, th.online_min_sigma_ratio)
        cohort_score = calibrated_score(cohort_p, th.online_alarm_p)
        warm = own.learned >= self._warmup()
        alerts: list[Alert] = []
        if warm and own_score >= 0.5:
            state.unusual_rows += 1
        elif not math.isnan(own_score):
            state.unusual_rows = 0
        if warm and state.unusual_rows == th.online_confirm_rows:
            evidence = {
                "score": round(own_score, 4),
                "p_value": own_p,
                "cohort_score": None if math.isnan(cohort_score) else round(cohort_score, 4),
                "cohort": key,
                "z": own.z_scores(x, th.online_min_sigma_ratio),
                "input": self.consumes,
                "alarm_p": th.online_alarm_p,
                "rows": th.online_confirm_rows,
                "limits": "registry" if limits.from_registry else "defaults (not in registry)",
            }
            a = make_alert(state.elevator_id, ONLINE_ANOMALY, start_ms, end_ms, evidence)
            alerts += [a, msgspec.structs.replace(a, state="cleared")]
        clip = th.online_learn_clip_sigmas, th.online_learn_clip_after
        own.learn_one(x, th.online_fading_factor, *clip)
        if cohort is not None:
            cohort.learn_one(x, th.online_fading_factor, *clip)
        score = own_score if warm else cohort_score
        return Scored(None if math.isnan(score) else round(score, 4), alerts)


class OnlineTrips(OnlineDetector):
    """Online learning over every trip's :data:`~detectors.stats.TRIP_FEATURES`."""

    name = "online_trips"
    consumes: Consumes = "trip"
    features = TRIP_FEATURES

    def _row(self, item: Trip, limits: ElevatorLimits) -> tuple[dict[str, float], int, int]:
        return trip_features(item, limits), item.start_ms, item.end_ms

    def _warmup(self) -> int:
        return self.thresholds.online_warmup_trips


class OnlineWindows(OnlineDetector):
    """Online learning over every active one-minute window's :data:`WINDOW_FEATURES`."""

    name = "online_windows"
    consumes: Consumes = "window"
    features = WINDOW_FEATURES

    def _row(
        self, item: WindowFeature, limits: ElevatorLimits
    ) -> tuple[dict[str, float], int, int] | None:
        x = window_features(item, limits)
        if x is None:
            return None
        return x, item.bucket_start_ms, item.bucket_start_ms + item.width_s * 1000

    def _warmup(self) -> int:
        return self.thresholds.online_warmup_windows
