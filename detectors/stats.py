"""Statistical detectors for slow degradation: EWMA and CUSUM charts, a robust z-score
against a bounded history, and the per-trip fold that applies them to leveling offsets and
door times (leveling drift, door-operator wear) and trip features (trip anomalies).

Every chart is a small msgspec Struct with ``learn_one(x)`` / ``score_one(x)``: its fields
are its state, so it is checkpointed by :mod:`detectors.state` like every other detector
state, with no serialisation of its own; memory is fixed (EWMA, CUSUM) or bounded by a
reservoir size (robust z). Non-finite values are ignored (not learned) and score NaN.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Final

import msgspec
import numpy as np

from foundation.records import Trip

from .alerts import Alert, make_alert
from .protocol import Consumes
from .thresholds import ElevatorLimits, Thresholds

_F8: Final = np.dtype("<f8")
_F8_BYTES: Final = 8
_PACK_F8: Final = struct.Struct("<d").pack

#: The trip features the robust and online detectors look at.
TRIP_FEATURES: Final = (
    "peak_accel_mps2",
    "peak_jerk_mps3",
    "door_opening_s",
    "door_closing_s",
    "leveling_offset_mm",
    "speed_ratio",
)
#: Features judged by the trip-anomaly z-score, and in which direction. Only the harmful
#: side counts: a harsher ride, slower doors, a larger leveling error. Peak speed is left to
#: the overspeed rule: a one-floor trip never reaches rated speed, so its low speed ratio
#: is normal (measured: 310 false alarms in 16.7 elevator-days on the fault-free scenario
#: when both sides of every feature counted).
ANOMALY_SIDES: Final = {
    "peak_accel_mps2": 1,
    "peak_jerk_mps3": 1,
    "door_opening_s": 1,
    "door_closing_s": 1,
    "leveling_offset_mm": 0,  # either side: |z|
}


def trip_features(trip: Trip, limits: ElevatorLimits) -> dict[str, float]:
    """Numeric features of one trip (missing ones NaN); speeds relative to rated.

    A trip's acceleration readings that never changed (peak jerk exactly 0) are a frozen
    sensor's: its acceleration and jerk are missing, so that neither is judged nor learnt
    (a history of one frozen value makes every healthy trip after it look extreme). The
    segmenter leaves out a frozen leveling reading the same way (``Trip.leveling_offset_mm``).
    """
    nan = math.nan

    def f(v: float | None) -> float:
        return nan if v is None else float(v)

    rated = limits.rated_speed_mps or nan
    accel_frozen = trip.peak_jerk_mps3 == 0.0
    return {
        "peak_accel_mps2": nan if accel_frozen else f(trip.peak_accel_mps2),
        "peak_jerk_mps3": nan if accel_frozen else f(trip.peak_jerk_mps3),
        "door_opening_s": f(trip.door_opening_s),
        "door_closing_s": f(trip.door_closing_s),
        "leveling_offset_mm": f(trip.leveling_offset_mm),
        "speed_ratio": f(trip.peak_speed_mps) / rated,
    }


class Ewma(msgspec.Struct):
    """EWMA chart of one series against a baseline learned over its first ``warmup`` values.

    ``score_one`` is ``|ewma − mean| / (L σ_d)``: ≥ 1 beyond the control limit. ``σ_d`` is
    the standard deviation of that difference: the EWMA's own, ``σ √(λ / (2 − λ))``, and
    the baseline mean's, ``σ / √n``, for the mean is itself estimated from ``n`` values
    (Jensen et al., "Effects of parameter estimation on control chart properties", *J.
    Quality Technology* 38, 2006). Left out, a baseline that happened to sit 1 mm off
    its car's true mean after 50 stops raised ``leveling_drift`` on ordinary stops
    (no-fault seeds 342, 371, 377).

    Parameters
    ----------
    alpha
        Smoothing weight of a new value (λ).
    limit_sigmas
        L, the control limit in standard deviations of the EWMA statistic.
    warmup
        Values that form the in-control baseline (mean and variance, Welford).
    min_sigma
        Floor on the baseline standard deviation (a quantised sensor can read constant).
    clip_sigmas
        After warm-up a value counts clipped to the baseline ± this many σ (infinite: not
        clipped), so that one wild value cannot cross the limit alone.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> chart = Ewma(alpha=0.1, limit_sigmas=4.0, warmup=50, min_sigma=0.1)
    >>> for x in rng.normal(0.0, 1.0, 200):
    ...     chart.learn_one(float(x))
    >>> chart.score_one(0.0) < 1.0
    True
    >>> for x in rng.normal(3.0, 1.0, 30):
    ...     chart.learn_one(float(x))
    >>> chart.score_one(3.0) > 1.0
    True
    """

    alpha: float = 0.1
    limit_sigmas: float = 4.0
    warmup: int = 50
    min_sigma: float = 0.0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    ewma: float = math.nan
    clip_sigmas: float = math.inf

    def _clipped(self, x: float) -> float:
        if self.clip_sigmas == math.inf:
            return x
        reach = self.clip_sigmas * self.sigma
        return min(max(x, self.mean - reach), self.mean + reach)

    def learn_one(self, x: float) -> None:
        if not math.isfinite(x):
            return
        if self.n < self.warmup:
            self.n += 1
            delta = x - self.mean
            self.mean += delta / self.n
            self.m2 += delta * (x - self.mean)
            self.ewma = self.mean
            return
        self.ewma = self.alpha * self._clipped(x) + (1 - self.alpha) * self.ewma

    @property
    def sigma(self) -> float:
        var = self.m2 / (self.n - 1) if self.n > 1 else 0.0
        return max(math.sqrt(var), self.min_sigma)

    def score_one(self, x: float | None = None) -> float:
        """Distance of the (current, or ``x``-updated) EWMA from baseline in control limits;
        NaN during warm-up or for a non-finite ``x``."""
        if self.n < self.warmup:
            return math.nan
        e = self.ewma
        if x is not None:
            if not math.isfinite(x):
                return math.nan
            e = self.alpha * self._clipped(x) + (1 - self.alpha) * e
        sd = self.sigma * math.sqrt(self.alpha / (2 - self.alpha) + 1 / self.n)
        if sd <= 0:
            return math.inf if e != self.mean else 0.0
        return abs(e - self.mean) / (self.limit_sigmas * sd)


class Cusum(msgspec.Struct):
    """Two-sided tabular CUSUM (Page) in baseline standard deviations: slack ``k``,
    decision interval ``h``; ``score_one`` is ``max(S+, S−) / h`` (≥ 1 alarms).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> c = Cusum(k=0.5, h=8.0, warmup=50)
    >>> for x in rng.normal(10.0, 1.0, 300):
    ...     c.learn_one(float(x))
    >>> c.score_one() < 1.0
    True
    >>> for x in rng.normal(11.5, 1.0, 30):
    ...     c.learn_one(float(x))
    >>> c.score_one() >= 1.0
    True
    """

    k: float = 0.5
    h: float = 8.0
    warmup: int = 50
    min_sigma: float = 0.0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    s_hi: float = 0.0
    s_lo: float = 0.0

    def learn_one(self, x: float) -> None:
        if not math.isfinite(x):
            return
        if self.n < self.warmup:
            self.n += 1
            delta = x - self.mean
            self.mean += delta / self.n
            self.m2 += delta * (x - self.mean)
            return
        var = self.m2 / (self.n - 1) if self.n > 1 else 0.0
        sd = max(math.sqrt(var), self.min_sigma, 1e-12)
        z = (x - self.mean) / sd
        self.s_hi = max(0.0, self.s_hi + z - self.k)
        self.s_lo = max(0.0, self.s_lo - z - self.k)

    def score_one(self, x: float | None = None) -> float:
        if self.n < self.warmup:
            return math.nan
        if x is not None and not math.isfinite(x):
            return math.nan
        return max(self.s_hi, self.s_lo) / self.h

    def reset(self) -> None:
        self.s_hi = self.s_lo = 0.0


#: The median absolute deviation of a normal variable, in σ: a robust z of
#: ``MAD_PER_SIGMA (x − median) / MAD`` reads as a z-score.
MAD_PER_SIGMA: Final = 0.6745


class RobustZ(msgspec.Struct):
    """Robust z-score ``0.6745 (x − median) / MAD`` against the last ``size`` values
    (a ring buffer: bounded memory, the history follows slow change).

    The values are packed float64s (``values``, 8 bytes each): as a list of Python floats
    they took 32 bytes each, and six full 200-trip histories per elevator were most of a
    worker's state (≈ 37 kB of an elevator's ≈ 52 kB). A checkpoint written with a list
    reads as before.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> rz = RobustZ(size=200)
    >>> for x in rng.normal(2.5, 0.05, 300):
    ...     rz.learn_one(float(x))
    >>> abs(rz.score_one(2.5)) < 1, rz.score_one(3.5) > 6
    (True, True)
    """

    size: int = 200
    min_count: int = 30
    min_mad: float = 1e-6
    #: The ring's values, packed little-endian float64 (a list in older checkpoints).
    values: bytearray | list[float] = msgspec.field(default_factory=bytearray)
    pos: int = 0

    def _packed(self) -> bytearray:
        if isinstance(self.values, list):
            self.values = bytearray(np.asarray(self.values, dtype=_F8).tobytes())
        return self.values

    def __len__(self) -> int:
        """How many values the ring holds."""
        return len(self._packed()) // _F8_BYTES

    def history(self) -> np.ndarray:
        """The ring's values (a copy), oldest first."""
        arr = np.frombuffer(bytes(self._packed()), dtype=_F8)
        return np.concatenate((arr[self.pos :], arr[: self.pos]))

    def learn_one(self, x: float) -> None:
        if not math.isfinite(x):
            return
        packed = self._packed()
        if len(packed) < self.size * _F8_BYTES:
            packed += _PACK_F8(x)
        else:
            at = self.pos * _F8_BYTES
            packed[at : at + _F8_BYTES] = _PACK_F8(x)
            self.pos = (self.pos + 1) % self.size

    def resize(self, size: int) -> None:
        """Keep the newest ``size`` values (a changed ``trip_anomaly_history_trips``)."""
        kept = self.history()[-size:] if size else np.empty(0, dtype=_F8)
        self.values, self.pos, self.size = bytearray(kept.tobytes()), 0, size

    def score_one(self, x: float) -> float:
        """Signed robust z of ``x``; NaN with fewer than ``min_count`` values or bad ``x``."""
        if not math.isfinite(x) or len(self) < self.min_count:
            return math.nan
        arr = np.frombuffer(bytes(self._packed()), dtype=_F8)
        med = float(np.median(arr))
        mad = max(float(np.median(np.abs(arr - med))), self.min_mad)
        return MAD_PER_SIGMA * (x - med) / mad


class TripHealthState(msgspec.Struct):
    """One elevator's degradation charts, folded per trip.

    Leveling drift: EWMA of the stop's leveling offset and a mean shift of at least
    ``leveling_drift_min_shift_mm``. Door-operator wear: EWMA of door opening and closing
    times whose mean must also be ``door_wear_min_ratio`` × the baseline. Trip anomaly:
    robust z of :data:`TRIP_FEATURES` beyond ``trip_anomaly_z_limit``. Every parameter is a
    :class:`~detectors.thresholds.Thresholds` field, applied at each trip (so an override
    reaches charts restored from a checkpoint).

    Examples
    --------
    >>> from detectors.state import decode_state, encode_state
    >>> saved = encode_state(TripHealthState.new("32070620200000000001"))
    >>> encode_state(decode_state(saved, TripHealthState)) == saved
    True
    """

    elevator_id: str
    leveling: Ewma = msgspec.field(default_factory=Ewma)
    door_opening: Ewma = msgspec.field(default_factory=Ewma)
    door_closing: Ewma = msgspec.field(default_factory=Ewma)
    history: dict[str, RobustZ] = msgspec.field(
        default_factory=lambda: {k: RobustZ() for k in TRIP_FEATURES}
    )
    active: dict[str, int] = {}

    @classmethod
    def new(cls, elevator_id: str, thresholds: Thresholds | None = None) -> TripHealthState:
        st = cls(elevator_id)
        _configure(st, thresholds or Thresholds())
        return st


def _configure(st: TripHealthState, th: Thresholds) -> None:
    """Set the charts' parameters from ``th`` (cheap: a few attributes per trip)."""
    ch = st.leveling
    ch.alpha, ch.limit_sigmas = th.leveling_drift_ewma_alpha, th.leveling_drift_limit_sigmas
    ch.warmup, ch.min_sigma = th.leveling_drift_baseline_stops, th.leveling_drift_min_sigma_mm
    ch.clip_sigmas = th.leveling_drift_clip_sigmas
    for ch in (st.door_opening, st.door_closing):
        ch.alpha, ch.limit_sigmas = th.door_wear_ewma_alpha, th.door_wear_limit_sigmas
        ch.warmup, ch.min_sigma = th.door_wear_baseline_cycles, th.door_wear_min_sigma_s
    # The robust z's scale is never below the feature's measurement resolution (as σ).
    min_sigma = {
        "peak_accel_mps2": th.trip_anomaly_min_sigma_accel_mps2,
        "peak_jerk_mps3": th.trip_anomaly_min_sigma_jerk_mps3,
        "door_opening_s": th.door_wear_min_sigma_s,
        "door_closing_s": th.door_wear_min_sigma_s,
        "leveling_offset_mm": th.leveling_drift_min_sigma_mm,
    }
    for name, rz in st.history.items():
        rz.min_count = th.trip_anomaly_min_trips
        rz.min_mad = max(MAD_PER_SIGMA * min_sigma.get(name, 0.0), 1e-6)
        if rz.size != th.trip_anomaly_history_trips:
            rz.resize(th.trip_anomaly_history_trips)


def observe_trip(
    state: TripHealthState, trip: Trip, limits: ElevatorLimits, th: Thresholds | None = None
) -> tuple[TripHealthState, list[Alert]]:
    """Fold one trip into the elevator's charts; alerts raised (and cleared) by it.

    Leveling drift and door wear are raised once and cleared when the chart returns within
    its limits; a trip anomaly is an instant (raised and cleared by the same trip).
    """
    st = state
    th = th or Thresholds()
    _configure(st, th)
    out: list[Alert] = []
    t = trip.end_ms
    feats = trip_features(trip, limits)
    src = "registry" if limits.from_registry else "defaults (not in registry)"

    def chart(kind: str, flagged: bool, evidence: dict[str, Any]) -> None:
        if flagged and kind not in st.active:
            st.active[kind] = t
            out.append(make_alert(st.elevator_id, kind, t, t, {**evidence, "limits": src}))
        elif not flagged and kind in st.active:
            since = st.active.pop(kind)
            a = make_alert(st.elevator_id, kind, since, t, {**evidence, "reason": "in control"})
            out.append(_cleared(a))

    off = feats["leveling_offset_mm"]
    if math.isfinite(off):
        st.leveling.learn_one(off)
        score = st.leveling.score_one()
        shift = abs(st.leveling.ewma - st.leveling.mean) if st.leveling.n else 0.0
        if math.isfinite(score):
            chart(
                "leveling_drift",
                score >= 1.0 and shift >= th.leveling_drift_min_shift_mm,
                {"ewma_mm": st.leveling.ewma, "baseline_mm": st.leveling.mean, "score": score},
            )
    wear = False
    wear_ev: dict[str, Any] = {}
    judged = False
    for name, ch in (("door_opening_s", st.door_opening), ("door_closing_s", st.door_closing)):
        x = feats[name]
        if not math.isfinite(x):
            continue
        ch.learn_one(x)
        score = ch.score_one()
        if not math.isfinite(score):
            continue
        judged = True
        ratio = ch.ewma / ch.mean if ch.mean > 0 else math.nan
        wear_ev[name] = {"ewma_s": ch.ewma, "baseline_s": ch.mean, "score": score}
        wear |= score >= 1.0 and ratio >= th.door_wear_min_ratio
    if judged:
        chart("door_operator_wear", wear, wear_ev)
    zs: dict[str, float] = {}
    for name, x in feats.items():
        z = st.history[name].score_one(x)
        if math.isfinite(z):
            zs[name] = z
        st.history[name].learn_one(x)
    harmful = {
        k: (abs(z) if ANOMALY_SIDES[k] == 0 else z * ANOMALY_SIDES[k])
        for k, z in zs.items()
        if k in ANOMALY_SIDES
    }
    worst = max(harmful, key=harmful.__getitem__, default=None)
    if worst is not None and harmful[worst] > th.trip_anomaly_z_limit:
        a = make_alert(
            st.elevator_id,
            "trip_anomaly",
            trip.start_ms,
            t,
            {"robust_z": zs, "feature": worst, "limit": th.trip_anomaly_z_limit, "limits": src},
        )
        out += [a, _cleared(a)]
    return st, out


def _cleared(a: Alert) -> Alert:
    return msgspec.structs.replace(a, state="cleared")


def cohort_key(limits: ElevatorLimits, building_type: str | None = None) -> str:
    """Elevators judged together: same rated speed, floors band (≤ 6, 7–11, 12–18, 19–33,
    34+) and building type (``limits.building_type`` unless given)."""
    if building_type is None:
        building_type = limits.building_type
    f = limits.floors
    band = "≤6" if f <= 6 else "7-11" if f <= 11 else "12-18" if f <= 18 else "19-33"
    if f > 33:
        band = "34+"
    return f"{limits.rated_speed_mps:.2f}|{band}|{building_type}"


class TripHealth:
    """The degradation charts, per trip: the :class:`~detectors.protocol.Detector` over
    :func:`observe_trip`. Nothing arises from time alone, so :meth:`tick` raises nothing."""

    name = "trip_health"
    consumes: Consumes = "trip"
    state_type = TripHealthState

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds

    def new(self, elevator_id: str) -> TripHealthState:
        return TripHealthState.new(elevator_id, self.thresholds)

    def observe(self, state: TripHealthState, item: Trip, limits: ElevatorLimits) -> list[Alert]:
        return observe_trip(state, item, limits, self.thresholds)[1]

    def tick(self, state: TripHealthState, now_ms: int, limits: ElevatorLimits) -> list[Alert]:
        return []
