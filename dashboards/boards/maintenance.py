"""Maintenance online monitoring (维保在线监测): overdue maintenance and inspection, by
maintenance company, and the periods cars spent out of normal service (inspection mode is
the maintenance mode)."""

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
        "range; periods out of normal service (service_mode 2 = inspection, the maintenance "
        "mode).",
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
       e.maintenance_contact, e.last_maintenance_on,
       {shared.LOCAL_DATE_AT_END} - e.last_maintenance_on AS days_since_maintenance,
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
