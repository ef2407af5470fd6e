"""Risk grading of the whole fleet as of one time: the registry and recent alerts in, one
``risk_grade`` row out per elevator whose grade or score changed.

Shape of the data::

    elevator ⟕ alerts raised in the window ⟕ previous risk_grade   # one SQL read, per elevator
      → detectors.risk.assess                                       # score, grade, factors
      → risk_grade rows (only where grade or score changed)         # one transaction

History stays compact: an elevator gets a row when it has none yet or when its grade or
score differs from its latest row at or before the grading time, so an unchanged fleet
graded every hour writes nothing. ``current_risk_grade`` (sql/idempotent/10_views.sql) is
the latest row per elevator. Grading the same time twice writes nothing the second time
(the first grading of a time stands). Concurrent gradings serialise on an advisory lock;
the worker's timer skips a turn when another process holds it.

Registry dates (installation, maintenance, inspection) are local dates in the city; the
days elapsed are counted from the grading time's date in China Standard Time. The last
maintenance is the later of the registry's declared date and the local date the last visit
the terminal showed ended (``maintenance_session``, :mod:`streams.maintenance`): a visit
seen counts even if the company has not declared it yet.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from detectors.risk import GRADES, RiskAssessment, RiskInputs, assess, weights_version
from detectors.thresholds import Thresholds
from foundation.city import CITY_TZ  # registry dates are local dates

#: Held (transaction-scoped) while grading; any constant shared by every tianyan process.
GRADING_LOCK_KEY = 0x7479_7269_736B  # "tyrisk"

_READ = """
SELECT e.registration_code, e.installed_on,
       GREATEST(e.last_maintenance_on, (v.visited_at AT TIME ZONE %(tz)s)::date),
       e.last_inspection_on, e.has_terminal, a.alerts, p.score, p.grade
FROM tianyan.elevator e
LEFT JOIN LATERAL (
    SELECT max(m.end_time) AS visited_at
    FROM tianyan.maintenance_session m
    WHERE m.elevator_id = e.registration_code AND m.end_time <= %(at)s
) v ON true
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_array(alert_type, severity, n)) AS alerts
    FROM (
        SELECT alert_type, severity, count(*) AS n
        FROM tianyan.alert
        WHERE elevator_id = e.registration_code AND state = 'raised'
          AND raised_at > %(since)s AND raised_at <= %(at)s
        GROUP BY alert_type, severity
    ) counted
) a ON true
LEFT JOIN LATERAL (
    SELECT score, grade
    FROM tianyan.risk_grade r
    WHERE r.elevator_id = e.registration_code AND r.graded_at <= %(at)s
    ORDER BY r.graded_at DESC
    LIMIT 1
) p ON true
ORDER BY e.registration_code
"""

_WRITE = (
    "INSERT INTO tianyan.risk_grade (elevator_id, graded_at, score, grade, factors) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (elevator_id, graded_at) DO NOTHING"
)


class GradingError(RuntimeError):
    """Grading could not read the registry and alerts or write the grades."""


@dataclass
class GradingSummary:
    """What one grading found and wrote.

    Attributes
    ----------
    at
        The grading time (UTC).
    elevators
        Elevators graded (the whole registry).
    grades
        Elevators per grade after this grading, red first.
    written
        ``risk_grade`` rows written: elevators new to grading or whose score changed.
    grade_changes
        Of those, elevators whose grade changed (not counting first grades).
    weights_version
        Version of the weights used (:func:`detectors.risk.weights_version`).
    skipped
        True when another process was grading and ``skip_if_busy`` was asked for.
    elapsed_s
        Wall time of the grading.
    """

    at: dt.datetime
    elevators: int = 0
    grades: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GRADES, 0))
    written: int = 0
    grade_changes: int = 0
    weights_version: str = ""
    skipped: bool = False
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "at": self.at.isoformat(),
            "elevators": self.elevators,
            "grades": dict(self.grades),
            "written": self.written,
            "grade_changes": self.grade_changes,
            "weights_version": self.weights_version,
            "skipped": self.skipped,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def _days(since: dt.date | None, today: dt.date) -> int | None:
    # A date after the grading day (a record entered ahead) counts as today.
    return None if since is None else max(0, (today - since).days)


def inputs_of(row: tuple[Any, ...], today: dt.date) -> RiskInputs:
    """Grading inputs of one row of the read (registration code first)."""
    code, installed_on, maintained_on, inspected_on, has_terminal, alerts = row[:6]
    age_days = _days(installed_on, today)
    return RiskInputs.from_alerts(
        code,
        [(t, s, int(n)) for t, s, n in alerts or ()],
        age_years=None if age_days is None else age_days / 365.25,
        days_since_maintenance=_days(maintained_on, today),
        days_since_inspection=_days(inspected_on, today),
        has_terminal=bool(has_terminal),
    )


def _changed(result: RiskAssessment, prev_score: float | None, prev_grade: str | None) -> bool:
    if prev_grade is None or prev_score is None:
        return True
    # Scores are stored as real: compare at the 0.1 they are rounded to.
    return prev_grade != result.grade or round(float(prev_score), 1) != result.score


def grade_fleet(
    url: str,
    at: dt.datetime,
    thresholds: Thresholds | None = None,
    *,
    skip_if_busy: bool = False,
) -> GradingSummary:
    """Grade every elevator in the registry as of ``at`` and record what changed.

    Parameters
    ----------
    url
        A role that may read ``elevator``, ``alert`` and ``risk_grade`` and insert into
        ``risk_grade`` (``tianyan_writer`` or the owner).
    at
        Grading time, timezone-aware. Alerts raised in the ``risk_window_days`` before it
        count; registry dates are compared with its local date.
    thresholds
        Weights and cut-offs (the ``risk_*`` fields); defaults when None.
    skip_if_busy
        Return at once (``skipped=True``) when another process is grading, instead of
        waiting for it.

    Raises
    ------
    GradingError
        ``at`` is naive, or the database refused the read or the write.
    """
    if at.tzinfo is None:
        raise GradingError(f"grading time {at.isoformat()} has no time zone; give it in UTC")
    th = thresholds or Thresholds()
    at = at.astimezone(dt.UTC)
    summary = GradingSummary(at=at, weights_version=weights_version(th))
    started = time.perf_counter()
    today = at.astimezone(CITY_TZ).date()
    since = at - dt.timedelta(days=th.risk_window_days)
    try:
        with psycopg.connect(url) as conn, conn.transaction(), conn.cursor() as cur:
            lock = "pg_try_advisory_xact_lock" if skip_if_busy else "pg_advisory_xact_lock"
            cur.execute(f"SELECT {lock}(%s)", [GRADING_LOCK_KEY])
            row = cur.fetchone()
            if skip_if_busy and not (row and row[0]):
                summary.skipped = True
                return summary
            cur.execute(_READ, {"since": since, "at": at, "tz": str(CITY_TZ)})
            rows = cur.fetchall()
            writes = _assess_all(rows, today, th, at, summary)
            if writes:
                cur.executemany(_WRITE, writes)
    except psycopg.Error as e:
        raise GradingError(f"grading as of {at.isoformat()} failed: {e}") from e
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _assess_all(
    rows: Iterable[tuple[Any, ...]],
    today: dt.date,
    th: Thresholds,
    at: dt.datetime,
    summary: GradingSummary,
) -> list[tuple[Any, ...]]:
    writes: list[tuple[Any, ...]] = []
    for row in rows:
        result = assess(inputs_of(row, today), th)
        prev_score, prev_grade = row[6], row[7]
        summary.elevators += 1
        summary.grades[result.grade] += 1
        if _changed(result, prev_score, prev_grade):
            writes.append(
                (result.elevator_id, at, result.score, result.grade, Jsonb(result.factors_json()))
            )
            if prev_grade is not None and prev_grade != result.grade:
                summary.grade_changes += 1
    summary.written = len(writes)
    return writes
