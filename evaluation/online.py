"""What the online-learning detectors add on slow degradation, and what they cost.

A fleet is simulated under a degradation scenario (``tests/scenarios/degradation.toml``:
accelerated leveling drift and door-operator wear) and run through the worker's own
detection loop (:func:`evaluation.runs.run_detectors`). For every degradation label: how
long after its onset the EWMA chart of its kind (``leveling_drift``, ``door_operator_wear``)
first alerted, and how long the online detectors' ``online_anomaly``; and how many online
alerts came from cars not (yet) degrading. Then the same stream again without the online
detectors: the detection loop's cost per message, before and after.

>>> report = measure("tests/scenarios/degradation.toml", seed=1, elevators=4,
...                  duration_s=600)  # doctest: +SKIP
>>> print(report.table())  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import simulator
from detectors.online import ONLINE_ANOMALY
from detectors.thresholds import ElevatorLimits, Thresholds
from evaluation.runs import DEFAULT_START, fleet, read_labels, run_detectors

#: Degradation label → the EWMA chart's alert type that should catch it.
CHART_OF: dict[str, str] = {
    "leveling_drift": "leveling_drift",
    "door_degradation": "door_operator_wear",
}
#: Degradation label → the features it changes: an online alert counts for it only when
#: its most deviant feature (evidence ``z``) is one of them, so that another fault of the
#: same car, or a chance alert, is not taken for a detection.
FEATURES_OF: dict[str, frozenset[str]] = {
    "leveling_drift": frozenset({"leveling_offset_mm"}),
    "door_degradation": frozenset({"door_opening_s", "door_closing_s"}),
}
#: The online detectors (:mod:`detectors.online`), left out for the "before" cost.
ONLINE_DETECTORS = ("online_trips", "online_windows")


@dataclass
class Timing:
    """One degradation: its onset and each detector's first alert after it (s; None: none
    in the run)."""

    elevator_id: str
    fault: str
    onset_ms: int
    chart_after_s: float | None
    online_after_s: float | None


@dataclass
class OnlineReport:
    """See the module docstring. Costs are the detection loop's wall time per message
    (validation, folds, every detector), µs, one core."""

    scenario: str
    seed: int
    elevators: int
    duration_s: float
    messages: int
    trips: int
    timings: list[Timing] = field(default_factory=list)
    online_alerts: int = 0
    online_false_alerts: int = 0
    cost_before_us: float = 0.0
    cost_after_us: float = 0.0
    #: The online detectors alone, µs per trip / window scored (:func:`scoring_cost_us`).
    scoring_us: float = 0.0
    #: Trips and active one-minute windows scored per message in this run.
    scored_per_message: float = 0.0

    def table(self) -> str:
        rows = [
            f"{self.scenario} seed {self.seed}: {self.elevators} elevators × "
            f"{self.duration_s:.0f} s; {self.messages} messages, {self.trips} trips",
            "",
            f"{'degradation':18} {'n':>3} {'chart first':>11} {'online first':>12} "
            f"{'chart delay p50 s':>17} {'online delay p50 s':>18}",
        ]
        for fault in CHART_OF:
            ts = [t for t in self.timings if t.fault == fault]
            if not ts:
                continue
            chart = [t.chart_after_s for t in ts if t.chart_after_s is not None]
            online = [t.online_after_s for t in ts if t.online_after_s is not None]
            online_first = sum(
                1
                for t in ts
                if t.online_after_s is not None
                and (t.chart_after_s is None or t.online_after_s < t.chart_after_s)
            )
            chart_first = sum(
                1
                for t in ts
                if t.chart_after_s is not None
                and (t.online_after_s is None or t.chart_after_s <= t.online_after_s)
            )
            rows.append(
                f"{fault:18} {len(ts):>3} {chart_first:>11} {online_first:>12} "
                f"{_p50(chart):>17} {_p50(online):>18}"
            )
        days = self.elevators * self.duration_s / 86400
        rows += [
            "",
            f"online_anomaly alerts: {self.online_alerts}, of which {self.online_false_alerts} "
            f"on cars not degrading ({self.online_false_alerts / days:.1f} per elevator-day)",
            f"detection loop per message: {self.cost_before_us:.1f} µs without the online "
            f"detectors, {self.cost_after_us:.1f} µs with them (best of 3 each, alternated;"
            " the machine is shared, so the difference is within noise)",
            f"online detectors alone: {self.scoring_us:.1f} µs per trip or window scored × "
            f"{self.scored_per_message:.3f} scored per message = "
            f"{self.scoring_us * self.scored_per_message:.2f} µs per message",
        ]
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _p50(xs: list[float]) -> str:
    return f"{statistics.median(xs):.0f} ({len(xs)})" if xs else "—"


def measure(
    scenario_path: str | Path,
    seed: int | None = None,
    elevators: int = 30,
    duration_s: float | None = None,
    thresholds: Thresholds | None = None,
) -> OnlineReport:
    """Simulate, detect twice (with and without the online detectors), compare."""
    th = thresholds or Thresholds()
    scenario = simulator.load_scenario(scenario_path, seed=seed)
    duration = float(duration_s if duration_s is not None else scenario.duration_s)
    start = DEFAULT_START
    cars = fleet(elevators, start.astimezone(dt.UTC).date())
    limits = {e.registration_code: ElevatorLimits.of(e) for e in cars}
    unknown = ElevatorLimits.unknown(th)

    def limits_for(elevator_id: str) -> ElevatorLimits:
        return limits.get(elevator_id, unknown)

    with tempfile.TemporaryDirectory(prefix="tianyan-online-") as tmp:
        path = Path(tmp) / "run.jsonl"
        simulator.simulate(
            scenario,
            cars,
            start=start,
            duration_s=duration,
            output=simulator.FileOutput(path),
            progress=False,
        )
        labels = read_labels(path)
        lines = path.read_bytes().splitlines()
    costs: dict[str, float] = {}
    runs = {}
    # Alternated, the best of three each: the machine is shared and a run's first pass warms
    # caches.
    for _ in range(3):
        for name, without in (("before", ONLINE_DETECTORS), ("after", ())):
            t0 = time.perf_counter()
            runs[name] = run_detectors(((None, v) for v in lines), limits_for, th, without=without)
            cost_us = (time.perf_counter() - t0) / max(1, runs[name].messages) * 1e6
            costs[name] = min(costs.get(name, cost_us), cost_us)
    run = runs["after"]
    report = OnlineReport(
        scenario=str(scenario_path),
        seed=scenario.seed,
        elevators=elevators,
        duration_s=duration,
        messages=run.messages,
        trips=run.trips,
        cost_before_us=costs["before"],
        cost_after_us=costs["after"],
    )
    raised = [a for a in run.alerts if a.state == "raised"]
    onsets: dict[str, int] = {}
    for label in labels:
        if label["fault_type"] in CHART_OF:
            eid, onset = label["elevator_id"], int(label["onset_ms"])
            onsets[eid] = min(onsets.get(eid, onset), onset)

            def first_after(
                alert_type: str,
                eid: str = eid,
                onset: int = onset,
                features: frozenset[str] | None = None,
            ) -> float | None:
                ts = [
                    a.raised_at_ms
                    for a in raised
                    if a.elevator_id == eid
                    and a.alert_type == alert_type
                    and a.raised_at_ms >= onset
                    and (features is None or _most_deviant(a.evidence) in features)
                ]
                return (min(ts) - onset) / 1000 if ts else None

            report.timings.append(
                Timing(
                    eid,
                    label["fault_type"],
                    onset,
                    first_after(CHART_OF[label["fault_type"]]),
                    first_after(ONLINE_ANOMALY, features=FEATURES_OF[label["fault_type"]]),
                )
            )
    report.scoring_us = scoring_cost_us(th)
    report.scored_per_message = run.scored / max(1, run.messages)
    online = [a for a in raised if a.alert_type == ONLINE_ANOMALY]
    report.online_alerts = len(online)
    report.online_false_alerts = sum(
        1 for a in online if a.raised_at_ms < onsets.get(a.elevator_id, 2**62)
    )
    return report


def _most_deviant(evidence: dict[str, Any]) -> str | None:
    z = evidence.get("z") or {}
    return max(z, key=lambda k: abs(z[k]), default=None)


def scoring_cost_us(thresholds: Thresholds, items: int = 20_000) -> float:
    """µs per trip scored by :class:`~detectors.online.OnlineTrips` in a cohort (learning
    both models; windows cost the same), on a steady synthetic car: the detectors' own cost,
    which the whole loop's timing on a shared machine cannot resolve."""
    import numpy as np

    from detectors.online import OnlineTrips
    from foundation.records import Trip

    rng = np.random.default_rng(0)
    det = OnlineTrips(thresholds)
    state, cohorts = det.new("32070620200000000001"), det.new_cohorts()
    limits = ElevatorLimits(1.0, 1000.0, 10, building_type="residential")
    trips = [
        Trip(
            start_ms=i * 60_000,
            elevator_id="32070620200000000001",
            end_ms=i * 60_000 + 12_000,
            start_floor=1,
            end_floor=4,
            direction=1,
            duration_s=12.0,
            distance_m=9.0,
            peak_speed_mps=float(rng.normal(1.0, 0.01)),
            peak_accel_mps2=float(rng.normal(0.7, 0.02)),
            peak_jerk_mps3=float(rng.normal(1.2, 0.05)),
            load_kg=300.0,
            leveling_offset_mm=float(rng.normal(0, 3)),
            door_opening_s=float(rng.normal(2.5, 0.05)),
            door_closing_s=float(rng.normal(2.6, 0.05)),
        )
        for i in range(items)
    ]
    t0 = time.perf_counter()
    for trip in trips:
        det.observe_in_cohort(state, cohorts, trip, limits)
    return (time.perf_counter() - t0) / items * 1e6
