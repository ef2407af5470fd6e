"""Risk grading: one elevator's recent record and registry facts → a score, a grade and the
points each factor contributed (the explanation of the grade).

No official formula is published (MISSION.md); the factors used in practice are fault and
trapping frequency, age, maintenance and inspection compliance and anomaly trends. Here
every factor earns points, each factor capped, and

    score = min(100, Σ points)

========================  ===============================================================
factor                    points (weights: :class:`~detectors.thresholds.Thresholds`
                          ``risk_*``, defaults in brackets)
========================  ===============================================================
``trapping``              per trapping alert in the window [25], capped [50]
``critical_faults``       per other critical alert (overspeed, overtravel, …) [15], cap [30]
``major_faults``          per major alert (stopped outside the door zone, …) [5], cap [20]
``minor_faults``          per minor fault alert (overload, device offline, …) [1], cap [5]
``degradation``           per leveling-drift / door-wear alert [5], cap [10]
``anomalies``             per trip anomaly [0.5], cap [5]
``age``                   older than [15] years, or installation date unknown: [10]
``maintenance``           last maintenance > [15] days ago: [10]; > 2 × 15 days or none: [20]
``inspection``            last inspection > [365] days ago, or none: [15]
``terminal``              no IoT terminal fitted: [10]
========================  ===============================================================

The window is the [30] days before the grading. Grades: **red 重大** at score ≥ [60],
**orange 较大** ≥ [40], **yellow 一般** ≥ [20], else **blue 低**. Alerts count once per
condition (raised, not cleared). Scores are rounded to 0.1.

Examples
--------
>>> from detectors.thresholds import Thresholds
>>> r = assess(RiskInputs(elevator_id="31103207062016000001", trappings=1,
...     age_years=18.2, days_since_maintenance=20, days_since_inspection=100,
...     has_terminal=True), Thresholds())
>>> r.score, r.grade, r.grade_zh
(45.0, 'orange', '较大')
>>> [(f.name, f.points) for f in r.top_factors()]
[('trapping', 25.0), ('age', 10.0), ('maintenance', 10.0)]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, Final, Literal

from .alerts import TRAPPED_TYPES
from .thresholds import Thresholds

Grade = Literal["red", "orange", "yellow", "blue"]

#: Most severe first.
GRADES: Final[tuple[Grade, ...]] = ("red", "orange", "yellow", "blue")
#: The four levels of graded risk control (风险分级管控).
GRADE_ZH: Final[dict[Grade, str]] = {
    "red": "重大",
    "orange": "较大",
    "yellow": "一般",
    "blue": "低",
}
GRADE_EN: Final[dict[Grade, str]] = {
    "red": "major",
    "orange": "considerable",
    "yellow": "general",
    "blue": "low",
}

#: Alert types of the trip-health charts (detectors.stats) that show slow degradation.
DEGRADATION_TYPES: Final = frozenset({"leveling_drift", "door_operator_wear"})
#: Alert types that flag an unusual trip without a fault (detectors.stats, robust z;
#: detectors.online).
ANOMALY_TYPES: Final = frozenset({"trip_anomaly", "online_anomaly"})
#: Compliance alerts the registry factors already weigh (maintenance lapsed: the
#: ``maintenance`` factor), so they count toward no alert factor.
COMPLIANCE_TYPES: Final = frozenset({"maintenance_overdue"})

AlertCategory = Literal[
    "trapping", "critical_faults", "major_faults", "minor_faults", "degradation", "anomalies"
]


def alert_category(alert_type: str, severity: str) -> AlertCategory | None:
    """The risk factor an alert counts toward, or None (``info`` alerts other than trip
    anomalies count toward none).

    Examples
    --------
    >>> alert_category("trapped_at_level", "critical"), alert_category("overspeed", "critical")
    ('trapping', 'critical_faults')
    """
    if alert_type in COMPLIANCE_TYPES:
        return None
    if alert_type in TRAPPED_TYPES:
        return "trapping"
    if alert_type in DEGRADATION_TYPES:
        return "degradation"
    if alert_type in ANOMALY_TYPES:
        return "anomalies"
    if severity == "critical":
        return "critical_faults"
    if severity == "major":
        return "major_faults"
    if severity == "minor":
        return "minor_faults"
    return None


class RiskInputError(ValueError):
    """A grading input that cannot be right (a negative count or age)."""


@dataclass(frozen=True, kw_only=True)
class RiskInputs:
    """What grading knows of one elevator as of the grading time.

    Attributes
    ----------
    elevator_id
        Registration code.
    trappings, critical_faults, major_faults, minor_faults, degradations, anomalies
        Alerts raised in the window, by :func:`alert_category`.
    age_years
        Since installation; None when the registry has no installation date.
    days_since_maintenance, days_since_inspection
        Since the last one on record; None when there is none.
    has_terminal
        An IoT terminal is fitted.
    """

    elevator_id: str
    trappings: int = 0
    critical_faults: int = 0
    major_faults: int = 0
    minor_faults: int = 0
    degradations: int = 0
    anomalies: int = 0
    age_years: float | None = None
    days_since_maintenance: int | None = None
    days_since_inspection: int | None = None
    has_terminal: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise RiskInputError(f"{self.elevator_id}: {f.name} = {value!r} is negative")

    @classmethod
    def from_alerts(
        cls, elevator_id: str, alerts: Iterable[tuple[str, str, int]], **registry: Any
    ) -> RiskInputs:
        """Inputs with the alert counts from ``(alert_type, severity, count)`` rows.

        ``registry`` holds the other attributes (``age_years``, ``has_terminal``, …).
        """
        counts = {
            "trapping": 0,
            "critical_faults": 0,
            "major_faults": 0,
            "minor_faults": 0,
            "degradation": 0,
            "anomalies": 0,
        }
        for alert_type, severity, n in alerts:
            category = alert_category(alert_type, severity)
            if category is not None:
                counts[category] += int(n)
        return cls(
            elevator_id=elevator_id,
            trappings=counts["trapping"],
            critical_faults=counts["critical_faults"],
            major_faults=counts["major_faults"],
            minor_faults=counts["minor_faults"],
            degradations=counts["degradation"],
            anomalies=counts["anomalies"],
            **registry,
        )


@dataclass(frozen=True)
class FactorContribution:
    """One factor's value, the points it added and why, in words."""

    name: str
    value: float | int | bool | None
    points: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "points": self.points, "reason": self.reason}


@dataclass(frozen=True)
class RiskAssessment:
    """A score, its grade and every factor's contribution (zero ones included)."""

    elevator_id: str
    score: float
    grade: Grade
    factors: tuple[FactorContribution, ...]
    weights_version: str
    window_days: int

    @property
    def grade_zh(self) -> str:
        return GRADE_ZH[self.grade]

    def top_factors(self, n: int = 3) -> list[FactorContribution]:
        """The ``n`` factors that added most points (only those that added any)."""
        ranked = sorted(
            (f for f in self.factors if f.points > 0), key=lambda f: (-f.points, f.name)
        )
        return ranked[:n]

    def factors_json(self) -> dict[str, Any]:
        """The explanation as stored in ``risk_grade.factors``."""
        return {
            "weights_version": self.weights_version,
            "window_days": self.window_days,
            "factors": {f.name: f.to_dict() for f in self.factors},
        }


def weights_version(th: Thresholds) -> str:
    """A short digest of the ``risk_*`` weights: grades made with other weights differ in it."""
    weights = {f.name: getattr(th, f.name) for f in fields(th) if f.name.startswith("risk_")}
    digest = hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()
    return f"risk-{digest[:10]}"


def grade_of(score: float, th: Thresholds) -> Grade:
    """The grade of a score under the cut-offs of ``th``."""
    if score >= th.risk_red_min_score:
        return "red"
    if score >= th.risk_orange_min_score:
        return "orange"
    if score >= th.risk_yellow_min_score:
        return "yellow"
    return "blue"


def _per_event(
    name: str, count: int, points: float, cap: float, what: str, window_days: int
) -> FactorContribution:
    added = min(cap, count * points)
    noun = what if count == 1 else what[:-1] + "ies" if what.endswith("y") else f"{what}s"
    return FactorContribution(name, count, float(added), f"{count} {noun} in {window_days} days")


def assess(inputs: RiskInputs, th: Thresholds) -> RiskAssessment:
    """Score and grade one elevator; see the module docstring for the formula."""
    w = th.risk_window_days
    factors = [
        _per_event(
            "trapping",
            inputs.trappings,
            th.risk_trapping_points,
            th.risk_trapping_cap,
            "trapping",
            w,
        ),
        _per_event(
            "critical_faults",
            inputs.critical_faults,
            th.risk_critical_fault_points,
            th.risk_critical_fault_cap,
            "critical fault",
            w,
        ),
        _per_event(
            "major_faults",
            inputs.major_faults,
            th.risk_major_fault_points,
            th.risk_major_fault_cap,
            "major fault",
            w,
        ),
        _per_event(
            "minor_faults",
            inputs.minor_faults,
            th.risk_minor_fault_points,
            th.risk_minor_fault_cap,
            "minor fault",
            w,
        ),
        _per_event(
            "degradation",
            inputs.degradations,
            th.risk_degradation_points,
            th.risk_degradation_cap,
            "degradation alert",
            w,
        ),
        _per_event(
            "anomalies",
            inputs.anomalies,
            th.risk_anomaly_points,
            th.risk_anomaly_cap,
            "trip anomaly",
            w,
        ),
        _age(inputs.age_years, th),
        _maintenance(inputs.days_since_maintenance, th),
        _inspection(inputs.days_since_inspection, th),
        _terminal(inputs.has_terminal, th),
    ]
    score = round(min(100.0, sum(f.points for f in factors)), 1)
    return RiskAssessment(
        elevator_id=inputs.elevator_id,
        score=score,
        grade=grade_of(score, th),
        factors=tuple(factors),
        weights_version=weights_version(th),
        window_days=w,
    )


def _age(age_years: float | None, th: Thresholds) -> FactorContribution:
    old = th.risk_old_age_years
    if age_years is None:
        return FactorContribution(
            "age", None, th.risk_old_age_points, "installation date unknown: taken as old"
        )
    years = round(age_years, 1)
    if age_years > old:
        return FactorContribution(
            "age", years, th.risk_old_age_points, f"{years:g} years old (old: > {old:g})"
        )
    return FactorContribution("age", years, 0.0, f"{years:g} years old")


def _maintenance(days: int | None, th: Thresholds) -> FactorContribution:
    every = th.risk_maintenance_interval_days
    if days is None:
        return FactorContribution(
            "maintenance", None, th.risk_maintenance_lapsed_points, "no maintenance on record"
        )
    if days > 2 * every:
        points, state = th.risk_maintenance_lapsed_points, "lapsed"
    elif days > every:
        points, state = th.risk_maintenance_overdue_points, "overdue"
    else:
        points, state = 0.0, "in time"
    return FactorContribution(
        "maintenance", days, float(points), f"last {days} days ago, {state} (every {every} days)"
    )


def _inspection(days: int | None, th: Thresholds) -> FactorContribution:
    every = th.risk_inspection_interval_days
    if days is None:
        return FactorContribution(
            "inspection", None, th.risk_inspection_overdue_points, "no inspection on record"
        )
    overdue = days > every
    return FactorContribution(
        "inspection",
        days,
        float(th.risk_inspection_overdue_points if overdue else 0.0),
        f"last {days} days ago, {'overdue' if overdue else 'in time'} (every {every} days)",
    )


def _terminal(has_terminal: bool, th: Thresholds) -> FactorContribution:
    if has_terminal:
        return FactorContribution("terminal", True, 0.0, "IoT terminal fitted")
    return FactorContribution(
        "terminal", False, th.risk_no_terminal_points, "no IoT terminal: faults go unseen"
    )
