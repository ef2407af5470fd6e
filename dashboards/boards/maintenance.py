"""Maintenance online monitoring (维保在线监测): overdue maintenance and inspection, by
maintenance company, the maintenance visits the terminals showed (``maintenance_session``:
inspection mode, the maintenance mode), companies whose visits are missing or too short,
and the periods cars spent out of normal service.

The last maintenance is the later of the registry's declared date and the last visit seen
(``shared.LAST_MAINTAINED_ON``), as the risk grade counts it (streams/grading.py)."""

from __future__ import annotations

from dashboards.board import (
    Board,
    BoardBuilder,
    board_url,
    link_column,
    name_values,
    stat,
    table,
    timeseries,
)
from dashboards.boards import shared
from dashboards.datasources import MAINTENANCE
from foundation.contract import ServiceMode

_SELECTED = "e.district IN ($district) AND e.maintenance_company IN ($maintenance_company)"
#: Two samples of one mode further apart than this belong to two periods: an idle terminal
#: sends a heartbeat every 30 s (foundation/contract.py), so a longer silence is a break.
PERIOD_GAP_S = 60
_NORMAL = int(ServiceMode.NORMAL)
_INSPECTION = int(ServiceMode.INSPECTION)
#: Visits seen that overlap the range (a visit still going on has no end yet).
_VISITS = f"""FROM maintenance_session m
JOIN elevator e ON e.registration_code = m.elevator_id
WHERE m.start_time <= $__timeTo() AND coalesce(m.end_time, $__timeTo()) >= $__timeFrom()
  AND {_SELECTED}"""
#: Per elevator with a terminal: visits seen in the interval before the end of the range.
_INTERVAL_VISITS = f"""SELECT e.registration_code, e.maintenance_company,
       e.last_maintenance_on >= {shared.LOCAL_DATE_AT_END} - {shared.MAINTENANCE_INTERVAL_DAYS}
           AS declared_in_interval,
       count(m.start_time) AS visits,
       count(m.start_time) FILTER (WHERE m.duration_s < {shared.MAINTENANCE_VISIT_MIN_S})
           AS short_visits,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY m.duration_s) AS median_visit_s
FROM elevator e
LEFT JOIN maintenance_session m ON m.elevator_id = e.registration_code
     AND m.end_time <= $__timeTo()
     AND m.end_time > $__timeTo()::timestamptz - interval '{shared.MAINTENANCE_INTERVAL_DAYS} days'
WHERE e.has_terminal AND {_SELECTED}
GROUP BY e.registration_code, e.maintenance_company, e.last_maintenance_on"""
#: Raw samples through service_mode_sample (sql/idempotent/15_scoped_views.sql): a company's
#: role cannot read the telemetry_sample hypertable, and the view shows it only its own. The
#: bound on stored_time reaches packed minutes by their key (raw_sample, migration 0012).
_OUT_OF_SERVICE_SAMPLES = f"""FROM service_mode_sample s
JOIN elevator e ON e.registration_code = s.elevator_id
WHERE $__timeFilter(s.time)
  AND s.stored_time > $__timeFrom()::timestamptz - interval '1 minute'
  AND s.stored_time <= $__timeTo()::timestamptz
  AND s.service_mode <> {_NORMAL} AND {_SELECTED}"""


def build() -> Board:
    b = BoardBuilder(
        shared.MAINTENANCE,
        "Maintenance online monitoring",
        MAINTENANCE,
        f"Maintenance at least every {shared.MAINTENANCE_INTERVAL_DAYS} days (TSG T5002-2017) "
        f"and inspection every {shared.INSPECTION_INTERVAL_DAYS} days, as of the end of the "
        "range; the last maintenance is the later of the declared date and the last visit the "
        "terminal showed (service_mode 2 = inspection, the maintenance mode); visits under "
        f"{shared.MAINTENANCE_VISIT_MIN_S / 60:g} min are too short.",
        "maintenance",
    )
    # the out-of-service panels scan raw samples: open on an hour, not the usual 6
    b.default_range("now-1h")
    b.query_variable(
        "district",
        "District",
        "SELECT DISTINCT district FROM elevator ORDER BY district",
        include_all=True,
        multi=True,
    )
    b.query_variable(
        "maintenance_company",
        "Maintenance company",
        "SELECT DISTINCT maintenance_company FROM elevator"
        " WHERE district IN ($district) AND maintenance_company IS NOT NULL"
        " ORDER BY maintenance_company",
        include_all=True,
        multi=True,
    )
    b.panel(
        stat(),
        "Overdue",
        f"""SELECT count(*) AS elevators,
       count(*) FILTER (WHERE {shared.MAINTENANCE_OVERDUE}) AS maintenance_overdue,
       count(*) FILTER (WHERE {shared.INSPECTION_OVERDUE}) AS inspection_overdue
FROM elevator e WHERE {_SELECTED}""",
        width=12,
        height=5,
    )
    b.panel(
        stat(),
        "Cars out of normal service in range",
        f"""SELECT count(DISTINCT s.elevator_id) FILTER (WHERE s.service_mode = {_INSPECTION})
           AS inspection,
       count(DISTINCT s.elevator_id) AS any_mode
{_OUT_OF_SERVICE_SAMPLES}""",
        width=12,
        height=5,
    )
    b.panel(
        table().override_by_name(
            *link_column(
                "registration_code",
                "Elevator ${__value.raw}",
                board_url(shared.ELEVATOR, elevator="${__value.raw}"),
            )
        ),
        "Overdue maintenance and inspection",
        f"""SELECT e.registration_code, e.address, e.district, e.maintenance_company,
       e.maintenance_contact, e.last_maintenance_on AS declared_on,
       {shared.LAST_VISIT_ON} AS last_visit_seen_on,
       {shared.LOCAL_DATE_AT_END} - {shared.LAST_MAINTAINED_ON} AS days_since_maintenance,
       e.last_inspection_on,
       {shared.LOCAL_DATE_AT_END} - e.last_inspection_on AS days_since_inspection
FROM elevator e
WHERE {_SELECTED} AND ({shared.MAINTENANCE_OVERDUE} OR {shared.INSPECTION_OVERDUE})
ORDER BY days_since_maintenance DESC NULLS FIRST, e.registration_code""",
        shows=f"""SELECT 1 FROM elevator e
WHERE {_SELECTED} AND ({shared.MAINTENANCE_OVERDUE} OR {shared.INSPECTION_OVERDUE})""",
        width=24,
        height=9,
    )
    b.panel(
        table(),
        "Maintenance companies",
        f"""SELECT e.maintenance_company, count(*) AS elevators,
       count(*) FILTER (WHERE {shared.MAINTENANCE_OVERDUE}) AS maintenance_overdue,
       round(100.0 * count(*) FILTER (WHERE {shared.MAINTENANCE_OVERDUE}) / count(*), 1)
           AS overdue_percent,
       count(*) FILTER (WHERE {shared.INSPECTION_OVERDUE}) AS inspection_overdue
FROM elevator e
WHERE {_SELECTED}
GROUP BY e.maintenance_company
ORDER BY overdue_percent DESC, e.maintenance_company""",
        shows=f"SELECT 1 FROM elevator e WHERE {_SELECTED}",
    )
    b.panel(
        table(),
        "Companies: maintenance visits seen in the last 15 days",
        f"""SELECT v.maintenance_company, count(*) AS elevators_with_terminal,
       count(*) FILTER (WHERE v.visits > 0) AS visited,
       count(*) FILTER (WHERE v.declared_in_interval AND v.visits = 0) AS declared_not_seen,
       sum(v.visits) AS visits, sum(v.short_visits) AS short_visits,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY v.median_visit_s) / 60)::numeric, 1)
           AS median_visit_min,
       concat_ws(', ',
           CASE WHEN count(*) FILTER (WHERE v.visits = 0) > 0 THEN 'visits missing' END,
           CASE WHEN sum(v.short_visits) > 0 THEN 'visits too short' END) AS flag
FROM ({_INTERVAL_VISITS}) v
GROUP BY v.maintenance_company
ORDER BY count(*) FILTER (WHERE v.visits = 0) DESC, sum(v.short_visits) DESC,
         v.maintenance_company""",
        shows=f"SELECT 1 FROM elevator e WHERE e.has_terminal AND {_SELECTED}",
        width=24,
        height=8,
    )
    b.panel(
        table().override_by_name(
            *link_column(
                "registration_code",
                "Elevator ${__value.raw}",
                board_url(shared.ELEVATOR, elevator="${__value.raw}"),
            )
        ),
        "Maintenance visits seen",
        f"""SELECT m.elevator_id AS registration_code, e.address, e.maintenance_company,
       m.start_time, m.end_time,
       round((m.duration_s / 60)::numeric, 1) AS duration_min, m.inspection_runs,
       m.event_43,
       CASE WHEN m.end_time IS NULL THEN 'in progress'
            WHEN m.duration_s < {shared.MAINTENANCE_VISIT_MIN_S} THEN 'too short'
            ELSE '' END AS flag
{_VISITS}
ORDER BY m.start_time DESC
LIMIT 1000""",
        shows=f"SELECT 1 {_VISITS}",
        width=24,
        height=9,
    )
    b.panel(
        timeseries(bars=True).interval("1m"),
        "Cars out of normal service",
        f"""SELECT $__timeGroupAlias(s.time, $__interval), s.service_mode::text AS metric,
       count(DISTINCT s.elevator_id) AS cars
{_OUT_OF_SERVICE_SAMPLES}
GROUP BY 1, 2
ORDER BY 1""",
        format="time_series",
        shows=f"SELECT 1 {_OUT_OF_SERVICE_SAMPLES}",
    )
    b.panel(
        table()
        .override_by_name(*name_values("service_mode", shared.SERVICE_MODES))
        .override_by_name(
            *link_column(
                "registration_code",
                "Elevator ${__value.raw}",
                board_url(shared.ELEVATOR, elevator="${__value.raw}"),
            )
        ),
        "Periods out of normal service",
        f"""WITH samples AS (
    SELECT s.elevator_id, s.time, s.service_mode {_OUT_OF_SERVICE_SAMPLES}
), marked AS (
    SELECT *, CASE WHEN lag(time) OVER w IS NULL
                     OR time - lag(time) OVER w > interval '{PERIOD_GAP_S} s'
                     OR service_mode <> lag(service_mode) OVER w THEN 1 ELSE 0 END AS starts
    FROM samples WINDOW w AS (PARTITION BY elevator_id ORDER BY time)
), periods AS (
    SELECT *, sum(starts) OVER (PARTITION BY elevator_id ORDER BY time) AS period FROM marked
)
SELECT p.elevator_id AS registration_code, e.address, e.maintenance_company,
       p.service_mode, min(p.time) AS started, max(p.time) AS last_sample,
       round(extract(epoch FROM max(p.time) - min(p.time))::numeric, 1) AS duration_s
FROM periods p JOIN elevator e ON e.registration_code = p.elevator_id
GROUP BY p.elevator_id, e.address, e.maintenance_company, p.service_mode, p.period
ORDER BY started DESC
LIMIT 1000""",
        shows=f"SELECT 1 {_OUT_OF_SERVICE_SAMPLES}",
        width=24,
        height=9,
    )
    return b.build()
