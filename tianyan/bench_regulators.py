"""``tianyan bench regulators``: what the regulators' figures cost on a city-sized history.

A database of the run's own gets a generated city (``--elevators``, default 40,000, the
city's estimated size), a year of incidents (``--incidents``, default 29,000: ≈ 0.55 % of the
elevators trapped a month, the rest other critical faults, a third of them with an arrival
5–45 min after opening, one in 17 a false alarm) and a year of monthly gradings (each
elevator regraded in about one month in four, with a random score). Then each function of
``sql/idempotent/30_regulator_figures.sql`` is called ``--calls`` times as
``tianyan_regulator``, as a board or the report calls it: the median and slowest call.

Figures are printed, the last line as JSON; the database is dropped afterwards unless
``--keep``.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg

from foundation.settings import Settings, role_url

#: The end of the generated history (and of every call's range).
END = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
YEAR = dt.timedelta(days=365)

_INCIDENTS = """
INSERT INTO tianyan.incident (incident_id, elevator_id, fault_type, severity, state, opened_at,
                              arrived_at, updated_at, details, arrival_target_s)
SELECT gen_random_uuid(), e.registration_code,
       CASE WHEN n %% 11 = 0 THEN 'trapped_at_level' ELSE 'overspeed' END, 'critical',
       CASE WHEN n %% 17 = 0 THEN 'false_alarm' ELSE 'resolved' END,
       x.opened, CASE WHEN n %% 3 = 0 THEN x.opened + (5 + random() * 40) * interval '1 minute' END,
       x.opened, '{"route": "rescue"}', 1800
  FROM (SELECT n, %(end)s - random() * interval '365 days' AS opened,
               1 + (random() * (%(elevators)s - 1))::int AS k
          FROM generate_series(1, %(incidents)s) n) x
  JOIN (SELECT registration_code, row_number() OVER (ORDER BY registration_code) AS k
          FROM tianyan.elevator) e USING (k)
"""
_GRADES = """
INSERT INTO tianyan.risk_grade (elevator_id, graded_at, score, grade, factors)
SELECT registration_code, %(end)s - m * interval '30 days', score,
       CASE WHEN score >= 60 THEN 'red' WHEN score >= 40 THEN 'orange'
            WHEN score >= 20 THEN 'yellow' ELSE 'blue' END, '{}'
  FROM (SELECT e.registration_code, m, (random() * random() * 100 + 0 * m)::real AS score
          FROM tianyan.elevator e, generate_series(0, 11) m) g
 WHERE hashtext(registration_code || m) %% 4 = 0 OR m = 11
"""
#: name → the call, as the boards and the report make it
CALLS = {
    "rescue_performance_year": "SELECT * FROM tianyan.rescue_performance(%(start)s, %(end)s)",
    "rescue_performance_year_one_district": (
        "SELECT * FROM tianyan.rescue_performance(%(start)s, %(end)s, ARRAY['Haizhou'])"
    ),
    "maintenance_company_ranking_year": (
        "SELECT * FROM tianyan.maintenance_company_ranking(%(start)s, %(end)s)"
    ),
    "grade_history_13_months": "SELECT * FROM tianyan.grade_history(%(start)s, %(end)s)",
}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(settings: Settings, *, elevators: int, incidents: int, calls: int, keep: bool) -> dict:
    from registry.generate import generate
    from registry.store import upsert
    from sql.migrate import migrate
    from tianyan.harness import create_database, drop_database

    dbname = f"tianyan_bench_regulators_{uuid.uuid4().hex[:8]}"
    admin_url = create_database(settings, dbname)
    summary: dict[str, Any] = {"elevators": elevators, "incidents": incidents}
    try:
        migrate(admin_url)
        started = time.monotonic()
        upsert(admin_url, generate(5, elevators, END.date()))
        params = {"end": END, "elevators": elevators, "incidents": incidents}
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(_INCIDENTS, params)
            conn.execute(_GRADES, params)
            conn.execute("ANALYZE")
            row = conn.execute("SELECT count(*) FROM tianyan.risk_grade").fetchone()
        summary["risk_grade_rows"] = row[0] if row else 0
        _say(f"filled in {time.monotonic() - started:.1f} s")
        ranges = {"start": END - YEAR, "end": END}
        with psycopg.connect(role_url(admin_url, "tianyan_regulator")) as conn:
            for name, sql in CALLS.items():
                seconds = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    rows = len(conn.execute(sql, ranges).fetchall())
                    seconds.append(time.perf_counter() - t0)
                summary[f"{name}_rows"] = rows
                summary[f"{name}_p50_ms"] = round(1000 * statistics.median(seconds), 1)
                summary[f"{name}_max_ms"] = round(1000 * max(seconds), 1)
    finally:
        if keep:
            _say(f"kept {dbname}")
        else:
            drop_database(settings, dbname)
    return summary
