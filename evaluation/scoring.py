"""Detection quality: alerts compared with the simulator's fault labels — pure, no I/O.

A label (a line of the simulator's ``<stem>.labels.jsonl``: ``elevator_id``, ``fault_type``,
``gb_code``, ``onset_ms``, ``ended_ms``, ``params``) says when a fault's condition held in
the signals; an :class:`~detectors.alerts.Alert` says when a detector became sure of one.
:func:`score` matches the two per elevator and returns an :class:`Evaluation`.

How alerts and labels are matched
---------------------------------
- **Recall** (per label type): a label is *detected* when an alert of a type in
  :data:`DETECTS` for it is raised on the same elevator between the label's onset and
  :data:`SLACK_MS` after its end (the end of the run for a label without end); on a
  terminal whose clock was skewed, from ``clock_offset_tolerance_s`` before the onset
  (:func:`clock_margin_ms`: the detectors see its corrected times). Its *detection delay*
  is the first such alert's ``raised_at_ms`` minus the onset (the moment the condition
  holds, as the simulator labels it; 0 for one within the clock's margin before it).
- **Precision** (per alert type, and per label type over the alert types that detect it):
  a raised alert is *explained* when a label of a type in :data:`EXPLAINED_BY` for it covers
  it on the same elevator (same window; see :func:`explain_window` for the one widening,
  and the clock's margin as for recall).
  An unexplained alert is a **false alarm**; :attr:`Evaluation.false_alarms_per_1000_elevator_days`
  scales their count by the fleet's size and the simulated duration.
- **Censored labels** are left out of recall, each with its reason (:func:`censor_reason`):
  a fault the signals never showed (a dropout over all of it; an overload while the load
  reading was frozen, :data:`ONLY_SHOWN_BY`, which ``sensor_stuck`` reports), one that
  began too close to the end of the run for any detector to be sure, or a degradation
  still too small at the end of the run for the charts to be meant to see it.
- **Excluded alerts** are left out of precision (:func:`alert_excluded`): an alert whose
  label the simulator writes only after the run ended (:data:`LABEL_LAG_MS`).
- Label types absent from :data:`DETECTS` are not scored: device faults (``dropout``,
  ``stuck_sensor``, ``clock_skew``, ``duplicate``, ``out_of_order``, ``malformed``) are the
  terminal misbehaving, handled by validation and de-duplication; they only *explain* alerts
  (a dropout explains ``device_offline``; see :func:`_explained` for the two that explain
  through the alert's own evidence).

Degradations
------------
``leveling_drift`` and ``door_degradation`` labels have no end: the condition grows until
maintenance. :class:`DegradationScore` says whether each was flagged by an early warning
(:data:`EARLY_WARNINGS`) *before it became a safety fault* (:func:`safety_fault_ms`):

- leveling drift: the injected offset reaches the leveling accuracy, ±20 mm
  (``Thresholds.leveling_accuracy_mm``, GB/T 7588.1-2020 5.12.1.1.4), at
  ``onset + 20 / |mm_per_day|`` days;
- door degradation: the door times reach :data:`DOOR_FAULT_RATIO` × their own value at onset,
  at ``onset + (ratio − 1) / slowdown_per_day`` days.

>>> label = {"elevator_id": "E1", "fault_type": "overspeed", "gb_code": None,
...          "onset_ms": 10_000, "ended_ms": 12_000, "params": {}}
>>> from detectors.alerts import make_alert
>>> alert = make_alert("E1", "overspeed", 10_000, 10_100, {})
>>> ev = score([label], [alert], end_ms=60_000, sample_times={"E1": [10_000, 11_000]},
...            elevators=1, duration_s=60.0)
>>> ev.faults["overspeed"].recall, ev.faults["overspeed"].delay_median_s
(1.0, 0.1)
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from detectors.alerts import Alert
from detectors.thresholds import Thresholds
from simulator.fleet import LIMITER_MAX_S

#: How long after a label's end an alert still counts as its detection, ms: a clearing
#: condition is confirmed over a few samples and a message spans up to 5 s.
SLACK_MS: Final = 5_000
#: A label beginning less than this before the end of the run is too late to count, ms:
#: every instantaneous rule needs ``confirm_samples`` samples and up to a message to see it.
MIN_OBSERVABLE_MS: Final = 2_000
#: A trapping needs the trapped time (``Thresholds.trapped_after_s``) plus this, ms.
TRAPPED_MARGIN_MS: Final = 1_000
#: Alert type → how long before the end of the run it is not judged for precision, ms: the
#: simulator writes the label that explains it only later, which may be after the run. A
#: reopening's when its episode ends; a car stalled outside the door zone by a run-time
#: limiter fault is labelled when the limiter trips, up to ``LIMITER_MAX_S`` after the
#: stall (every seed of ``detector_faults_device_faults.toml`` had 1–4 such alerts in its
#: last 35 s, each a car standing where the fault stalled it); an overtravel when the car
#: stops beyond the landing, a second or two after it passed the margin.
LABEL_LAG_MS: Final = {
    "repeated_door_reopening": 60_000,
    "stopped_outside_door_zone": round(LIMITER_MAX_S * 1000),
    "overtravel_top": 5_000,
    "overtravel_bottom": 5_000,
}
#: Door times this multiple of their value at onset make a door degradation a safety fault.
#: No clause fixes a door time; at 1.5× a door operator is beyond its adjustment range and
#: door time-outs (doors not closing, then not opening: people trapped) are the next step.
DOOR_FAULT_RATIO: Final = 1.5
_MS_PER_DAY: Final = 86_400_000

#: Label type → the alert types that detect it (recall).
DETECTS: Final[dict[str, frozenset[str]]] = {
    "trapped_between_levels": frozenset({"trapped_between_levels"}),
    "trapped_at_level": frozenset({"trapped_at_level"}),
    "overtravel_top": frozenset({"overtravel_top"}),
    "overtravel_bottom": frozenset({"overtravel_bottom"}),
    "overspeed": frozenset({"overspeed"}),
    "door_open_while_running": frozenset({"door_open_while_running"}),
    "unintended_movement": frozenset({"unintended_movement"}),
    "stop_outside_door_zone": frozenset({"stopped_outside_door_zone"}),
    "runtime_limiter": frozenset({"run_time_limiter"}),
    "overload": frozenset({"overload"}),
    "power_loss": frozenset({"power_loss"}),
    "alarm_true": frozenset({"alarm_button"}),
    "alarm_nuisance": frozenset({"alarm_button"}),
    "door_reopening": frozenset({"repeated_door_reopening"}),
    # GB/T 24476 codes 01, 02, 07, 08: the terminal's word is the only evidence.
    "terminal_code": frozenset({"terminal_fault"}),
    # A drift shows first as stops beyond ±10 mm, then beyond ±20 mm with the doors open.
    "leveling_drift": frozenset({"leveling_drift", "stopping_accuracy", "leveling_accuracy"}),
    "door_degradation": frozenset({"door_operator_wear"}),
}
#: The safety faults: people at risk or the car out of service.
SAFETY_LABELS: Final = (
    "trapped_between_levels",
    "trapped_at_level",
    "overtravel_top",
    "overtravel_bottom",
    "overspeed",
    "door_open_while_running",
    "unintended_movement",
    "stop_outside_door_zone",
    "runtime_limiter",
    "overload",
    "power_loss",
)
#: Degradation label type → the alert types that warn of it before it is a safety fault
#: (``leveling_accuracy`` is the ±20 mm fault itself, so it is no early warning).
EARLY_WARNINGS: Final[dict[str, frozenset[str]]] = {
    "leveling_drift": frozenset({"leveling_drift", "stopping_accuracy"}),
    "door_degradation": frozenset({"door_operator_wear"}),
}
#: A car halted between landings is "stopped outside the door zone" whatever halted it.
_HALTS: Final = frozenset(
    {
        "trapped_between_levels",
        "stop_outside_door_zone",
        "runtime_limiter",
        "overtravel_top",
        "overtravel_bottom",
        "unintended_movement",
        "power_loss",
        "leveling_drift",
    }
)
#: Faults that change a trip's features (speed, acceleration, jerk, door times, leveling);
#: pressing the alarm button changes none.
_TRIP_CHANGES: Final = frozenset(DETECTS) - {"alarm_true", "alarm_nuisance"} | {
    "stuck_sensor",
    "clock_skew",
    "dropout",
}
#: Alert type → label types that explain it (precision). Beyond the inverse of
#: :data:`DETECTS`: the same physical situation seen by several rules — people in a car that
#: overtravels or loses power between landings are really trapped — and the generic trip
#: anomaly, which any fault that changes a trip explains.
EXPLAINED_BY: Final[dict[str, frozenset[str]]] = {
    "stopped_outside_door_zone": _HALTS,
    "trapped_between_levels": frozenset(
        {"trapped_between_levels", "power_loss", "overtravel_top", "overtravel_bottom"}
    ),
    "trapped_at_level": frozenset({"trapped_at_level", "power_loss"}),
    "terminal_fault": frozenset({"trapped_at_level"}),
    # A car halted off level by a power loss, or creeping off it, stops (and opens) there.
    "stopping_accuracy": frozenset({"leveling_drift", "power_loss", "unintended_movement"}),
    "leveling_accuracy": frozenset({"leveling_drift", "power_loss", "unintended_movement"}),
    "device_offline": frozenset({"dropout"}),
    "clock_fault": frozenset({"clock_skew"}),
    "sensor_stuck": frozenset({"stuck_sensor"}),
    "trip_anomaly": _TRIP_CHANGES,
    "online_anomaly": _TRIP_CHANGES,
}
_inverse: dict[str, set[str]] = defaultdict(set)
for _label, _alert_types in DETECTS.items():
    for _alert_type in _alert_types:
        _inverse[_alert_type].add(_label)
for _alert_type, _labels in _inverse.items():
    EXPLAINED_BY[_alert_type] = EXPLAINED_BY.get(_alert_type, frozenset()) | _labels
del _inverse
#: Alerts about a whole trip (raised at its end): judged on the trip's span, since the fault
#: that made the trip unusual may have ended before the car stood still.
TRIP_SPAN_ALERTS: Final = frozenset({"trip_anomaly", "online_anomaly"})

Label = Mapping[str, Any]


def label_window(label: Label, end_ms: int) -> tuple[int, int]:
    """Times in which a raised alert detects ``label``: onset to end + :data:`SLACK_MS`
    (``end_ms``, the end of the run, for a label still holding)."""
    end = label["ended_ms"] if label["ended_ms"] is not None else end_ms
    return int(label["onset_ms"]), int(end) + SLACK_MS


def explain_window(label: Label, end_ms: int) -> tuple[int, int]:
    """Times in which ``label`` explains an alert: :func:`label_window`, widened for a
    run-time limiter to the stall before it (the limiter trips ``limiter_s`` after the car
    stalled, and the car stood outside the door zone all that time), and for an unintended
    movement to the start of the creep (``creep_started_ms``: the car creeps off level, its
    doors open, before it leaves the door zone, the label's onset)."""
    lo, hi = label_window(label, end_ms)
    if label["fault_type"] == "runtime_limiter":
        lo -= int(label["params"]["limiter_s"] * 1000)
    elif label["fault_type"] == "unintended_movement":
        lo = min(lo, int(label["params"].get("creep_started_ms", lo)))
    return lo, hi


def safety_fault_ms(label: Label, thresholds: Thresholds | None = None) -> int | None:
    """When a degradation label becomes a safety fault (see the module's criteria), Unix
    ms; None for other labels.

    >>> safety_fault_ms({"fault_type": "leveling_drift", "onset_ms": 0,
    ...                  "params": {"mm_per_day": -4.0}}) / 86_400_000
    5.0
    """
    th = thresholds or Thresholds()
    kind, params = label["fault_type"], label["params"]
    if kind == "leveling_drift":
        days = th.leveling_accuracy_mm / abs(float(params["mm_per_day"]))
    elif kind == "door_degradation":
        days = (DOOR_FAULT_RATIO - 1.0) / float(params["slowdown_per_day"])
    else:
        return None
    return int(label["onset_ms"]) + round(days * _MS_PER_DAY)


#: Label types only one reading shows: frozen over all of such a label (``stuck_sensor``),
#: it was never seen — the frozen reading is reported instead (``sensor_stuck``).
ONLY_SHOWN_BY: Final[dict[str, str]] = {"overload": "load_kg"}


def censor_reason(
    label: Label,
    end_ms: int,
    sample_times: Mapping[str, Sequence[int] | np.ndarray],
    car_labels: Sequence[Label] = (),
) -> str | None:
    """Why ``label`` cannot count for recall, or None if it counts.

    Parameters
    ----------
    label
        A fault label.
    end_ms
        The last sample time of the run.
    sample_times
        Each elevator's sample times, sorted (what the detectors could see).
    car_labels
        Every label of the car (its frozen sensors).
    """
    lo = int(label["onset_ms"])
    hi = int(label["ended_ms"]) if label["ended_ms"] is not None else end_ms
    times = sample_times.get(label["elevator_id"], ())
    k = bisect.bisect_left(times, lo)
    if k >= len(times) or times[k] > hi:
        return "unobservable: no sample while it held (a dropout)"
    column = ONLY_SHOWN_BY.get(label["fault_type"])
    for lb in car_labels if column else ():
        if lb["fault_type"] == "stuck_sensor" and lb["params"].get("column") == column:
            frozen_to = lb["ended_ms"] if lb["ended_ms"] is not None else end_ms
            if int(lb["onset_ms"]) <= lo and hi <= int(frozen_to):
                return f"unobservable: {column} frozen all through it (stuck_sensor)"
    kind = label["fault_type"]
    if kind in EARLY_WARNINGS:
        return _too_small(label, end_ms)
    need_ms = MIN_OBSERVABLE_MS
    if kind.startswith("trapped"):
        need_ms = round(Thresholds().trapped_after_s * 1000) + TRAPPED_MARGIN_MS
    if end_ms - lo < need_ms:
        return f"too late: the run ended {(end_ms - lo) / 1000:.1f} s after onset"
    return None


def _too_small(label: Label, end_ms: int) -> str | None:
    """A degradation whose injected change at the end of the run is below what the trip
    charts are built to flag (``leveling_drift_min_shift_mm``, ``door_wear_min_ratio``)."""
    days = (end_ms - int(label["onset_ms"])) / _MS_PER_DAY
    th = Thresholds()
    if label["fault_type"] == "leveling_drift":
        change = abs(float(label["params"]["mm_per_day"])) * days
        if change < th.leveling_drift_min_shift_mm:
            return f"too small: {change:.1f} mm of drift by the end of the run"
    else:
        change = float(label["params"]["slowdown_per_day"]) * days
        if 1.0 + change < th.door_wear_min_ratio:
            return f"too small: door times ×{1 + change:.2f} by the end of the run"
    return None


def alert_excluded(alert: Alert, end_ms: int) -> bool:
    """True for an alert precision cannot judge (its label may be written after the run:
    :data:`LABEL_LAG_MS`)."""
    return end_ms - alert.raised_at_ms < LABEL_LAG_MS.get(alert.alert_type, 0)


@dataclass
class FaultScore:
    """Detection of one label type.

    Attributes
    ----------
    labels
        Labels that count (not censored).
    censored
        Labels left out, reason → count.
    detected
        Counted labels with a detecting alert.
    alerts, explained
        Raised alerts of the types that detect this label type, and how many of them some
        label explains (the same alert counts for every label type it can detect).
    delays_ms
        Per detected label, first detecting alert's ``raised_at_ms`` − onset.
    missed
        The counted labels not detected.
    """

    labels: int = 0
    censored: dict[str, int] = field(default_factory=dict)
    detected: int = 0
    alerts: int = 0
    explained: int = 0
    delays_ms: list[int] = field(default_factory=list)
    missed: list[Label] = field(default_factory=list)

    @property
    def recall(self) -> float:
        """Detected / labels; NaN without labels."""
        return self.detected / self.labels if self.labels else math.nan

    @property
    def precision(self) -> float:
        """Explained / alerts; NaN without alerts."""
        return self.explained / self.alerts if self.alerts else math.nan

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall; NaN if either is."""
        p, r = self.precision, self.recall
        if math.isnan(p) or math.isnan(r):
            return math.nan
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def delay_median_s(self) -> float:
        """Median detection delay, s; NaN if nothing was detected."""
        return _percentile_s(self.delays_ms, 50)

    @property
    def delay_p95_s(self) -> float:
        """95th percentile of the detection delay (linear interpolation), s."""
        return _percentile_s(self.delays_ms, 95)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "censored": dict(self.censored),
            "detected": self.detected,
            "alerts": self.alerts,
            "explained": self.explained,
            "precision": _json_float(self.precision),
            "recall": _json_float(self.recall),
            "f1": _json_float(self.f1),
            "delay_median_s": _json_float(self.delay_median_s),
            "delay_p95_s": _json_float(self.delay_p95_s),
        }


@dataclass
class AlertScore:
    """Precision of one alert type: raised alerts, how many a label explains, the rest."""

    alerts: int = 0
    explained: int = 0
    unexplained: list[Alert] = field(default_factory=list)

    @property
    def precision(self) -> float:
        """Explained / alerts; NaN without alerts."""
        return self.explained / self.alerts if self.alerts else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "alerts": self.alerts,
            "explained": self.explained,
            "false_alarms": len(self.unexplained),
            "precision": _json_float(self.precision),
        }


@dataclass
class DegradationScore:
    """Whether degradations were flagged before they became safety faults.

    Attributes
    ----------
    labels
        Degradation labels of this type.
    flagged_before
        Flagged by an early warning before their safety-fault time (in the run or not).
    reached_unflagged
        Reached the safety fault within the run with no warning before it.
    pending
        Neither flagged nor at the safety fault by the end of the run: outcome unknown.
    lead_times_ms
        Per flagged label, safety-fault time − first warning.
    progress
        Per flagged label, how far from onset to the safety fault the first warning came
        (0 at onset, 1 at the safety fault): independent of how fast the fault grows.
    """

    labels: int = 0
    flagged_before: int = 0
    reached_unflagged: int = 0
    pending: int = 0
    lead_times_ms: list[int] = field(default_factory=list)
    progress: list[float] = field(default_factory=list)

    @property
    def early_rate(self) -> float:
        """Flagged before / labels whose outcome is known; NaN if none is."""
        known = self.flagged_before + self.reached_unflagged
        return self.flagged_before / known if known else math.nan

    @property
    def lead_median_h(self) -> float:
        """Median warning lead time before the safety fault, hours."""
        return _percentile_s(self.lead_times_ms, 50) / 3600

    @property
    def progress_median(self) -> float:
        """Median of :attr:`progress`; NaN if nothing was flagged."""
        return float(np.median(self.progress)) if self.progress else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "flagged_before_safety_fault": self.flagged_before,
            "reached_safety_fault_unflagged": self.reached_unflagged,
            "pending": self.pending,
            "early_rate": _json_float(self.early_rate),
            "lead_median_h": _json_float(self.lead_median_h),
            "progress_median": _json_float(self.progress_median),
        }


@dataclass
class Evaluation:
    """Everything :func:`score` measured.

    Attributes
    ----------
    faults
        Label type → :class:`FaultScore`, for every label type of :data:`DETECTS` present.
    alerts
        Alert type → :class:`AlertScore`, for every alert type raised.
    degradations
        Degradation label type → :class:`DegradationScore`.
    elevators, duration_s
        Fleet size and simulated duration, for the false-alarm rate.
    excluded_alerts
        Raised alerts left out of precision (:func:`alert_excluded`).
    """

    faults: dict[str, FaultScore]
    alerts: dict[str, AlertScore]
    degradations: dict[str, DegradationScore]
    elevators: int
    duration_s: float
    excluded_alerts: int = 0

    @property
    def false_alarms(self) -> int:
        """Raised alerts no label explains."""
        return sum(len(s.unexplained) for s in self.alerts.values())

    def false_alarms_by_severity(self) -> dict[str, int]:
        """Unexplained alerts per severity (``info`` alerts ask for no action)."""
        out: dict[str, int] = {}
        for s in self.alerts.values():
            for a in s.unexplained:
                out[a.severity] = out.get(a.severity, 0) + 1
        return out

    @property
    def elevator_days(self) -> float:
        return self.elevators * self.duration_s / 86_400

    @property
    def false_alarms_per_1000_elevator_days(self) -> float:
        """:attr:`false_alarms` per 1,000 elevator-days; NaN for an empty fleet or run."""
        days = self.elevator_days
        return self.false_alarms / days * 1000 if days > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (NaN as null)."""
        return {
            "faults": {k: v.to_dict() for k, v in sorted(self.faults.items())},
            "alerts": {k: v.to_dict() for k, v in sorted(self.alerts.items())},
            "degradations": {k: v.to_dict() for k, v in sorted(self.degradations.items())},
            "elevators": self.elevators,
            "duration_s": self.duration_s,
            "elevator_days": round(self.elevator_days, 3),
            "false_alarms": self.false_alarms,
            "false_alarms_by_severity": self.false_alarms_by_severity(),
            "false_alarms_per_1000_elevator_days": _json_float(
                self.false_alarms_per_1000_elevator_days
            ),
            "excluded_alerts": self.excluded_alerts,
        }

    def table(self) -> str:
        """Fixed-width tables: per label type, per alert type, degradations, false alarms."""
        return table(self.faults, self.alerts, self.degradations, self)


def score(
    labels: Iterable[Label],
    alerts: Iterable[Alert],
    *,
    end_ms: int,
    sample_times: Mapping[str, Sequence[int] | np.ndarray],
    elevators: int,
    duration_s: float,
    thresholds: Thresholds | None = None,
) -> Evaluation:
    """Compare ``alerts`` with ``labels`` (see the module docstring for the rules).

    Parameters
    ----------
    labels
        Fault labels as the simulator writes them.
    alerts
        Every alert the detectors emitted; clearings are ignored.
    end_ms
        The last sample time of the run (labels without end hold until it).
    sample_times
        Each elevator's sample times, sorted, to censor labels the signals never showed.
    elevators, duration_s
        Fleet size and simulated seconds, for the false-alarm rate.
    thresholds
        The detectors' thresholds (leveling accuracy, trapped time); defaults if None.

    Returns
    -------
    Evaluation
    """
    th = thresholds or Thresholds()
    labels = list(labels)
    raised = [a for a in alerts if a.state == "raised"]
    alerts_by_car: dict[str, list[Alert]] = defaultdict(list)
    for a in raised:
        alerts_by_car[a.elevator_id].append(a)
    labels_by_car: dict[str, list[Label]] = defaultdict(list)
    for lb in labels:
        labels_by_car[lb["elevator_id"]].append(lb)

    faults: dict[str, FaultScore] = defaultdict(FaultScore)
    degradations: dict[str, DegradationScore] = defaultdict(DegradationScore)
    for lb in labels:
        kind = lb["fault_type"]
        detecting = DETECTS.get(kind)
        if detecting is None:
            continue
        car_alerts = alerts_by_car[lb["elevator_id"]]
        if kind in EARLY_WARNINGS:
            degradations[kind] = _degradation(
                degradations[kind], lb, car_alerts, end_ms, thresholds
            )
        fs = faults[kind]
        reason = censor_reason(lb, end_ms, sample_times, labels_by_car[lb["elevator_id"]])
        if reason is not None:
            fs.censored[reason] = fs.censored.get(reason, 0) + 1
            continue
        fs.labels += 1
        lo, hi = label_window(lb, end_ms)
        car_labels = labels_by_car[lb["elevator_id"]]
        first = min(
            (
                a.raised_at_ms
                for a in car_alerts
                if a.alert_type in detecting
                and lo - clock_margin_ms(a, car_labels, end_ms, th) <= a.raised_at_ms <= hi
            ),
            default=None,
        )
        if first is not None:
            fs.detected += 1
            # within the clock's margin before the onset: detected at once
            fs.delays_ms.append(max(0, first - lo))
        else:
            fs.missed.append(lb)

    per_alert: dict[str, AlertScore] = defaultdict(AlertScore)
    excluded = 0
    for a in raised:
        if alert_excluded(a, end_ms):
            excluded += 1
            continue
        s = per_alert[a.alert_type]
        s.alerts += 1
        if _explained(a, labels_by_car[a.elevator_id], end_ms, th):
            s.explained += 1
        else:
            s.unexplained.append(a)
    for kind, fs in faults.items():
        for alert_type in DETECTS[kind]:
            if alert_type in per_alert:
                fs.alerts += per_alert[alert_type].alerts
                fs.explained += per_alert[alert_type].explained
    return Evaluation(
        faults=dict(faults),
        alerts=dict(per_alert),
        degradations=dict(degradations),
        elevators=elevators,
        duration_s=duration_s,
        excluded_alerts=excluded,
    )


#: Device faults that keep a terminal's messages from arriving readable and on time: one
#: beginning during a ``device_offline`` alert's silence caused it (a message held back by
#: ``out_of_order`` or garbled by ``malformed`` was the one that would have ended it).
SILENCING_FAULTS: Final = frozenset({"dropout", "out_of_order", "malformed"})


def clock_margin_ms(
    alert: Alert, car_labels: Sequence[Label], end_ms: int, thresholds: Thresholds
) -> int:
    """How much earlier than a label's onset ``alert`` may be raised and still be of it:
    ``clock_offset_tolerance_s`` while a ``clock_skew`` label of the car held, else 0.

    Under a skew the detectors see the terminal's times corrected by its measured offset,
    which is right to within the tolerance (an offset is measured against arrival times);
    the labels are in true time. A frozen speed reading found 1.0 s before the label's onset
    on such a terminal (no-fault seed 261), and a run-time limiter 1.8 s before (seed 1403),
    were the fault itself, not false alarms and misses.
    """
    tolerance_ms = round(thresholds.clock_offset_tolerance_s * 1000)
    t = alert.raised_at_ms
    for lb in car_labels:
        if lb["fault_type"] == "clock_skew":
            lo, hi = label_window(lb, end_ms)
            if lo - tolerance_ms <= t <= hi:
                return tolerance_ms
    return 0


def _explained(
    alert: Alert, car_labels: Sequence[Label], end_ms: int, thresholds: Thresholds
) -> bool:
    """A label of the car explains ``alert`` (:data:`EXPLAINED_BY`, :func:`explain_window`,
    opened :func:`clock_margin_ms` earlier under a clock skew), or, judged on the alert's own
    evidence:

    - a ``device_offline`` whose silence (``condition_since_ms`` to ``raised_at_ms``) a
      :data:`SILENCING_FAULTS` label overlaps (a dropout that began a moment before the
      last message's estimated arrival, and ended before the terminal's next heartbeat
      was due, made the silence all the same);
    - a ``clock_fault`` whose offending sample was stamped while a ``clock_skew`` label
      held: its time less the label's skew falls in the label's window (a message stamped
      under the skew and delivered after it ended, held back by ``out_of_order``).
    """
    ok = EXPLAINED_BY.get(alert.alert_type, frozenset())
    since = alert.condition_since_ms if alert.alert_type in TRIP_SPAN_ALERTS else alert.raised_at_ms
    sample_ms = alert.evidence.get("sample_ms") if alert.alert_type == "clock_fault" else None
    margin_ms = clock_margin_ms(alert, car_labels, end_ms, thresholds)
    for lb in car_labels:
        kind = lb["fault_type"]
        if kind in ok:
            lo, hi = explain_window(lb, end_ms)
            if since <= hi and lo - margin_ms <= alert.raised_at_ms:
                return True
        if (
            alert.alert_type == "device_offline"
            and kind in SILENCING_FAULTS
            and int(lb["onset_ms"]) <= alert.raised_at_ms
            and alert.condition_since_ms <= int(lb["ended_ms"] or lb["onset_ms"])
        ):
            return True
        if sample_ms is not None and kind == "clock_skew":
            lo, hi = explain_window(lb, end_ms)
            if lo <= int(sample_ms) - int(lb["params"]["skew_ms"]) <= hi:
                return True
    return False


def _degradation(
    ds: DegradationScore,
    label: Label,
    car_alerts: Sequence[Alert],
    end_ms: int,
    thresholds: Thresholds | None,
) -> DegradationScore:
    warnings = EARLY_WARNINGS[label["fault_type"]]
    onset = int(label["onset_ms"])
    due = safety_fault_ms(label, thresholds)
    assert due is not None  # every EARLY_WARNINGS type has a criterion
    first = min(
        (
            a.raised_at_ms
            for a in car_alerts
            if a.alert_type in warnings and onset <= a.raised_at_ms < due
        ),
        default=None,
    )
    ds.labels += 1
    if first is not None:
        ds.flagged_before += 1
        ds.lead_times_ms.append(due - first)
        ds.progress.append((first - onset) / (due - onset))
    elif due <= end_ms:
        ds.reached_unflagged += 1
    else:
        ds.pending += 1
    return ds


def table(
    faults: Mapping[str, FaultScore],
    alerts: Mapping[str, AlertScore],
    degradations: Mapping[str, DegradationScore] | None = None,
    evaluation: Evaluation | None = None,
) -> str:
    """Fixed-width text: a row per label type, per alert type, per degradation type, and
    the false-alarm rate when ``evaluation`` is given."""
    lines = [
        f"{'fault type':24} {'labels':>6} {'cens':>4} {'detected':>8} {'precision':>9} "
        f"{'recall':>6} {'F1':>5} {'delay med s':>11} {'p95 s':>7}"
    ]
    for k in sorted(faults):
        s = faults[k]
        lines.append(
            f"{k:24} {s.labels:6d} {sum(s.censored.values()):4d} {s.detected:8d} "
            f"{_fmt(s.precision, 9, 3)} {_fmt(s.recall, 6, 3)} {_fmt(s.f1, 5, 2)} "
            f"{_fmt(s.delay_median_s, 11, 1)} {_fmt(s.delay_p95_s, 7, 1)}"
        )
    lines += ["", f"{'alert type':24} {'alerts':>6} {'explained':>9} {'false':>5} {'precision':>9}"]
    for k in sorted(alerts):
        a = alerts[k]
        lines.append(
            f"{k:24} {a.alerts:6d} {a.explained:9d} {len(a.unexplained):5d} "
            f"{_fmt(a.precision, 9, 3)}"
        )
    if degradations:
        lines += [
            "",
            f"{'degradation':24} {'labels':>6} {'flagged before safety fault':>27} "
            f"{'reached unflagged':>17} {'pending':>7} {'lead med h':>10} {'at med':>6}",
        ]
        for k in sorted(degradations):
            d = degradations[k]
            lines.append(
                f"{k:24} {d.labels:6d} {d.flagged_before:27d} {d.reached_unflagged:17d} "
                f"{d.pending:7d} {_fmt(d.lead_median_h, 10, 1)} {_fmt(d.progress_median, 6, 2)}"
            )
    if evaluation is not None:
        days = evaluation.elevator_days
        by_severity = evaluation.false_alarms_by_severity()
        lines += [
            "",
            f"false alarms: {evaluation.false_alarms} over {days:.2f} elevator-days = "
            f"{evaluation.false_alarms_per_1000_elevator_days:.1f} per 1,000 elevator-days"
            + (f" (by severity: {by_severity})" if by_severity else ""),
        ]
        actionable = evaluation.false_alarms - by_severity.get("info", 0)
        if days > 0 and by_severity.get("info"):
            lines.append(
                f"  of which critical/major/minor: {actionable} = "
                f"{actionable / days * 1000:.1f} per 1,000 elevator-days"
            )
    return "\n".join(lines)


def _percentile_s(values_ms: Sequence[int], q: float) -> float:
    if not values_ms:
        return math.nan
    return float(np.percentile(np.asarray(values_ms, dtype=float), q)) / 1000


def _fmt(x: float, width: int, digits: int) -> str:
    return f"{'—':>{width}}" if math.isnan(x) else f"{x:{width}.{digits}f}"


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)
