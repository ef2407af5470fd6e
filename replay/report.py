"""A replay run's alerts against the live alerts of the same range and elevators.

Raised alerts only (a clearing follows its alert). Two alerts are the same condition when
they have the same elevator and type and their onsets (``condition_since``) lie within a
tolerance; each run alert is paired with the nearest unpaired live one. Then:

- ``new``: the run raised it, live did not;
- ``gone``: live raised it, the run did not;
- ``changed``: both raised it, but severity, people trapped or evidence differ (numbers
  compared to a relative tolerance: stored samples are float4, live ones were float64);
- ``same``: both raised it alike.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg

from .runs import ReplayRun, ReplayRunError, thresholds_json

Change = Literal["new", "gone", "changed", "same"]
#: Numbers in evidence closer than this (relative) are equal.
EVIDENCE_REL_TOL = 1e-3


@dataclass(frozen=True)
class AlertFact:
    """What the comparison reads of a raised alert."""

    alert_key: str
    elevator_id: str
    alert_type: str
    condition_since: dt.datetime
    raised_at: dt.datetime
    severity: str
    estimated_trapped: int | None
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Difference:
    change: Change
    live: AlertFact | None
    run: AlertFact | None
    #: For ``changed``: what differs, e.g. ``severity major→critical``, ``evidence.limit``.
    differs: tuple[str, ...] = ()

    @property
    def fact(self) -> AlertFact:
        fact = self.run or self.live
        assert fact is not None
        return fact

    def as_dict(self) -> dict[str, Any]:
        f = self.fact
        return {
            "change": self.change,
            "elevator_id": f.elevator_id,
            "alert_type": f.alert_type,
            "live_condition_since": self.live.condition_since.isoformat() if self.live else None,
            "run_condition_since": self.run.condition_since.isoformat() if self.run else None,
            "live_alert_key": self.live.alert_key if self.live else None,
            "run_alert_key": self.run.alert_key if self.run else None,
            "live_severity": self.live.severity if self.live else None,
            "run_severity": self.run.severity if self.run else None,
            "differs": list(self.differs),
        }


@dataclass
class Comparison:
    differences: list[Difference] = field(default_factory=list)

    def count(self, change: Change) -> int:
        return sum(1 for d in self.differences if d.change == change)


def compare(
    live: Sequence[AlertFact], run: Sequence[AlertFact], onset_tolerance_s: float
) -> Comparison:
    """Pair ``run`` with ``live`` alerts (see the module docstring); pure.

    >>> t = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    >>> a = AlertFact("k1", "1", "overload", t, t, "minor", None, {"load_kg": 900.0})
    >>> b = AlertFact("k2", "1", "overload", t + dt.timedelta(seconds=2), t, "major", None,
    ...               {"load_kg": 900.00001})
    >>> [(d.change, d.differs) for d in compare([a], [b], 5).differences]
    [('changed', ('severity minor→major',))]
    """
    if onset_tolerance_s < 0:
        raise ValueError(f"onset tolerance: {onset_tolerance_s} s is negative")
    tol = dt.timedelta(seconds=onset_tolerance_s)
    by_kind: dict[tuple[str, str], list[AlertFact]] = defaultdict(list)
    for a in live:
        by_kind[(a.elevator_id, a.alert_type)].append(a)
    paired: set[str] = set()
    out = Comparison()
    for r in sorted(run, key=lambda a: (a.elevator_id, a.alert_type, a.condition_since)):
        candidates = [
            a
            for a in by_kind.get((r.elevator_id, r.alert_type), ())
            if a.alert_key not in paired and abs(a.condition_since - r.condition_since) <= tol
        ]
        if not candidates:
            out.differences.append(Difference("new", None, r))
            continue
        match = min(candidates, key=lambda a: abs(a.condition_since - r.condition_since))
        paired.add(match.alert_key)
        differs = _differs(match, r)
        out.differences.append(Difference("changed" if differs else "same", match, r, differs))
    for a in live:
        if a.alert_key not in paired:
            out.differences.append(Difference("gone", a, None))
    out.differences.sort(key=lambda d: (d.fact.condition_since, d.fact.elevator_id))
    return out


def _differs(live: AlertFact, run: AlertFact) -> tuple[str, ...]:
    out = []
    if live.severity != run.severity:
        out.append(f"severity {live.severity}→{run.severity}")
    if live.estimated_trapped != run.estimated_trapped:
        out.append(f"estimated_trapped {live.estimated_trapped}→{run.estimated_trapped}")
    out.extend(f"evidence.{p}" for p in _paths_differing(live.evidence, run.evidence, ""))
    return tuple(out)


def _paths_differing(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            p
            for k in sorted(set(a) | set(b), key=str)
            for p in _paths_differing(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            p
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for p in _paths_differing(x, y, f"{path}[{i}]")
        ]
    if _number(a) and _number(b):
        return [] if math.isclose(a, b, rel_tol=EVIDENCE_REL_TOL, abs_tol=1e-9) else [path]
    return [] if a == b else [path or "(all)"]


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


# -- from the database ------------------------------------------------------------------------
_FACTS = (
    "SELECT alert_key, elevator_id, alert_type, condition_since, raised_at, severity,"
    " estimated_trapped, evidence FROM tianyan.{table} a"
    " WHERE state = 'raised' AND condition_since >= %(lo)s AND condition_since < %(hi)s"
    "{run}{elevators}{districts}"
)


def load_facts(url: str, run: ReplayRun) -> tuple[list[AlertFact], list[AlertFact]]:
    """The live alerts and the run's, both raised with their onset in the run's range and
    on the run's elevators: its ``--elevator`` and ``--district`` filters, and the elevators
    the replay worker met in it (a live alert of an elevator the run carried nothing of
    cannot be compared; all elevators before the worker ran).

    Raises
    ------
    ReplayRunError
        The run has no range yet (it was never published).
    """
    if run.range_start is None or run.range_end is None:
        raise ReplayRunError(
            f"replay run {run.run_id!r} has no time range yet: its `tianyan replay` did not"
            " finish publishing"
        )
    params: dict[str, Any] = {
        "lo": run.range_start,
        "hi": run.range_end,
        "run_id": run.run_id,
        "elevators": list(run.elevators),
        "districts": list(run.districts),
        "seen": list(run.elevators_seen or ()),
    }
    parts = {
        "elevators": " AND a.elevator_id = ANY(%(elevators)s)" if run.elevators else "",
        "districts": (
            " AND a.elevator_id IN (SELECT registration_code FROM tianyan.elevator"
            " WHERE district = ANY(%(districts)s))"
            if run.districts
            else ""
        )
        + (" AND a.elevator_id = ANY(%(seen)s)" if run.elevators_seen is not None else ""),
    }
    with psycopg.connect(url) as conn:
        live = conn.execute(_FACTS.format(table="alert", run="", **parts), params).fetchall()
        mine = conn.execute(
            _FACTS.format(table="replay_alert", run=" AND run_id = %(run_id)s", **parts), params
        ).fetchall()
    return [_fact(r) for r in live], [_fact(r) for r in mine]


def _fact(row: tuple[Any, ...]) -> AlertFact:
    return AlertFact(row[0], row[1].strip(), row[2], row[3], row[4], row[5], row[6], row[7] or {})


# -- printing ---------------------------------------------------------------------------------
def render(run: ReplayRun, comparison: Comparison, live_n: int, run_n: int, tol_s: float) -> str:
    """The report a person reads: the run, its thresholds that differ from the defaults,
    one line per new, gone or changed alert, the counts; then one JSON line."""
    from detectors.thresholds import Thresholds

    lines = [
        f"replay run {run.run_id}: {run.source}, onsets in"
        f" [{_iso(run.range_start)}, {_iso(run.range_end)})"
        + (f", elevators {', '.join(run.elevators)}" if run.elevators else "")
        + (f", districts {', '.join(run.districts)}" if run.districts else ""),
    ]
    changed_thresholds = {}
    if run.thresholds is None:
        lines.append("  not detected yet: run `tianyan worker --replay-run RUN` first")
    else:
        defaults = thresholds_json(Thresholds())
        changed_thresholds = {
            k: {"run": v, "default": defaults.get(k)}
            for k, v in run.thresholds.items()
            if defaults.get(k) != v
        }
        lines.append(
            "  thresholds: "
            + (
                ", ".join(
                    f"{k} = {v['run']} (default {v['default']})"
                    for k, v in changed_thresholds.items()
                )
                or "the defaults"
            )
            + (f"  [{run.thresholds_file}]" if run.thresholds_file else "")
        )
    lines.append(f"  live alerts {live_n}, run alerts {run_n}; onset tolerance {tol_s:g} s")
    shown = [d for d in comparison.differences if d.change != "same"]
    header = (
        f"  {'change':<8} {'elevator':<20} {'alert type':<28} {'onset (UTC, live)':<24}"
        f" {'live':<9} {'run':<9} what differs"
    )
    if shown:
        lines.append(header)
        for d in shown:
            f = d.fact
            onset = (d.live or f).condition_since  # the live onset, where there is one
            row = (
                f"  {d.change:<8} {f.elevator_id:<20} {f.alert_type:<28}"
                f" {onset.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}Z{'':<4}"
                f" {d.live.severity if d.live else '-':<9} {d.run.severity if d.run else '-':<9}"
                f" {', '.join(d.differs[:4]) + (' …' if len(d.differs) > 4 else '')}"
            )
            lines.append(row.rstrip())
    counts = {c: comparison.count(c) for c in ("new", "gone", "changed", "same")}
    lines.append("  " + ", ".join(f"{n} {c}" for c, n in counts.items()))
    summary = {
        "run_id": run.run_id,
        "range_start": _iso(run.range_start),
        "range_end": _iso(run.range_end),
        "live_alerts": live_n,
        "run_alerts": run_n,
        "onset_tolerance_s": tol_s,
        "thresholds_changed": changed_thresholds,
        **counts,
        "differences": [d.as_dict() for d in shown],
    }
    lines.append(json.dumps(summary, ensure_ascii=False))
    return "\n".join(lines)


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()
