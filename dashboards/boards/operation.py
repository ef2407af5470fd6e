"""Operation monitoring (运行监测): the city, then one district's elevators.

Drill-down: a district in the district table opens this board for that district; an
elevator opens the elevator board, and a trip there the trip board.
"""

from __future__ import annotations

from dashboards.board import Board, BoardBuilder, board_url, link_column, stat, table, timeseries
from dashboards.boards import shared
from dashboards.datasources import ANALYST

#: Elevators reporting in the range: those with a 1-min window there (far fewer rows than
#: raw samples: one per elevator-minute).
_REPORTING = """SELECT DISTINCT elevator_id FROM window_feature
    WHERE width_s = 60 AND $__timeFilter(bucket_start)"""
_TRIPS = """SELECT elevator_id, count(*) AS trips FROM trip
    WHERE $__timeFilter(start_time) GROUP BY elevator_id"""
_ALERTS = """SELECT elevator_id, count(*) AS alerts,
           count(*) FILTER (WHERE severity = 'critical') AS critical
    FROM alert WHERE state = 'raised' AND $__timeFilter(raised_at) GROUP BY elevator_id"""


def build() -> Board:
    b = BoardBuilder(
        shared.OPERATION,
        "Operation monitoring",
        ANALYST,
        "The city's elevators in operation: reporting, trips and alerts by district; "
        "pick a district, then an elevator.",
        "operation",
    )
    b.query_variable(
        "district",
        "District",
        "SELECT DISTINCT district FROM elevator ORDER BY district",
        include_all=True,
        multi=True,
    )
    b.row("City")
    b.panel(
        stat(),
        "Elevators",
        "SELECT count(*) AS registered, count(*) FILTER (WHERE has_terminal) AS with_terminal"
        " FROM elevator",
        width=6,
        height=5,
    )
    b.panel(
        stat(),
        "Reporting in range",
        f"SELECT count(*) AS reporting FROM ({_REPORTING}) r",
        width=6,
        height=5,
    )
    b.panel(
        stat(),
        "Trips in range",
        "SELECT count(*) AS trips FROM trip WHERE $__timeFilter(start_time)",
        width=6,
        height=5,
    )
    b.panel(
        stat(),
        "Alerts raised in range",
        "SELECT count(*) AS alerts, count(*) FILTER (WHERE severity = 'critical') AS critical"
        " FROM alert WHERE state = 'raised' AND $__timeFilter(raised_at)",
        width=6,
        height=5,
    )
    b.panel(
        table().override_by_name(
            *link_column(
                "district",
                "Elevators of ${__value.raw}",
                board_url(shared.OPERATION, district="${__value.raw}"),
            )
        ),
        "Districts",
        f"""SELECT e.district,
       count(*) AS elevators,
       count(*) FILTER (WHERE e.has_terminal) AS with_terminal,
       count(r.elevator_id) AS reporting,
       coalesce(sum(t.trips), 0) AS trips,
       coalesce(sum(a.alerts), 0) AS alerts,
       coalesce(sum(a.critical), 0) AS critical_alerts
FROM elevator e
LEFT JOIN ({_REPORTING}) r ON r.elevator_id = e.registration_code
LEFT JOIN ({_TRIPS}) t ON t.elevator_id = e.registration_code
LEFT JOIN ({_ALERTS}) a ON a.elevator_id = e.registration_code
GROUP BY e.district
ORDER BY critical_alerts DESC, alerts DESC, e.district""",
        shows="SELECT 1 FROM elevator",
        width=24,
        height=9,
    )
    b.panel(
        timeseries(bars=True).interval("1m"),
        "Trips by district",
        """SELECT $__timeGroupAlias(t.start_time, $__interval), e.district AS metric,
       count(*) AS trips
FROM trip t JOIN elevator e ON e.registration_code = t.elevator_id
WHERE $__timeFilter(t.start_time)
GROUP BY 1, 2
ORDER BY 1""",
        format="time_series",
        shows="SELECT 1 FROM trip WHERE $__timeFilter(start_time)",
    )
    b.panel(
        timeseries(bars=True).interval("1m"),
        "Alerts by type",
        """SELECT $__timeGroupAlias(raised_at, $__interval), alert_type AS metric,
       count(*) AS alerts
FROM alert
WHERE state = 'raised' AND $__timeFilter(raised_at)
GROUP BY 1, 2
ORDER BY 1""",
        format="time_series",
        shows="SELECT 1 FROM alert WHERE state = 'raised' AND $__timeFilter(raised_at)",
    )
    b.panel(
        table()
        .decimals(3)
        .override_by_name(
            *link_column(
                "registration_code",
                "Elevator ${__value.raw}",
                board_url(shared.ELEVATOR, elevator="${__value.raw}"),
            )
        ),
        "Most unusual elevators: online-learning scores (0.5 alarms)",
        """SELECT t.elevator_id AS registration_code, e.district, e.building_type,
       count(*) AS trips_scored,
       avg(t.online_score) AS mean_score,
       max(t.online_score) AS max_score,
       count(*) FILTER (WHERE t.online_score >= 0.5) AS trips_at_or_above_alarm
FROM trip t JOIN elevator e ON e.registration_code = t.elevator_id
WHERE t.online_score IS NOT NULL AND $__timeFilter(t.start_time)
GROUP BY 1, 2, 3
ORDER BY mean_score DESC, max_score DESC
LIMIT 50""",
        shows="SELECT 1 FROM trip WHERE online_score IS NOT NULL AND $__timeFilter(start_time)",
        width=24,
        height=9,
    )
    b.row("District: $district")
    b.panel(
        table().override_by_name(
            *link_column(
                "registration_code",
                "Elevator ${__value.raw}",
                board_url(
                    shared.ELEVATOR,
                    district="${__data.fields.district}",
                    elevator="${__value.raw}",
                ),
            )
        ),
        "Elevators of the district",
        f"""SELECT e.registration_code, e.district, e.address, e.building_type, e.has_terminal,
       coalesce(t.trips, 0) AS trips,
       coalesce(a.alerts, 0) AS alerts,
       coalesce(a.critical, 0) AS critical_alerts,
       g.grade AS risk_grade
FROM elevator e
LEFT JOIN ({_TRIPS}) t ON t.elevator_id = e.registration_code
LEFT JOIN ({_ALERTS}) a ON a.elevator_id = e.registration_code
LEFT JOIN current_risk_grade g ON g.elevator_id = e.registration_code
WHERE e.district IN ($district)
ORDER BY critical_alerts DESC, alerts DESC, trips DESC, e.registration_code""",
        shows="SELECT 1 FROM elevator WHERE district IN ($district)",
        width=24,
        height=10,
    )
    b.panel(
        table().override_by_name(
            *link_column(
                "registration_code",
                "Elevator ${__value.raw}",
                board_url(shared.ELEVATOR, elevator="${__value.raw}"),
            )
        ),
        "Alerts in the district",
        """SELECT a.raised_at, a.elevator_id AS registration_code, e.address, a.alert_type,
       a.severity, a.gb_code, a.estimated_trapped, a.probable_cause,
       (SELECT min(c.raised_at) FROM alert c
         WHERE c.alert_key = a.alert_key AND c.state = 'cleared') AS cleared_at
FROM alert a JOIN elevator e ON e.registration_code = a.elevator_id
WHERE a.state = 'raised' AND $__timeFilter(a.raised_at) AND e.district IN ($district)
ORDER BY a.raised_at DESC
LIMIT 500""",
        shows="""SELECT 1 FROM alert a JOIN elevator e ON e.registration_code = a.elevator_id
WHERE a.state = 'raised' AND $__timeFilter(a.raised_at) AND e.district IN ($district)""",
        width=24,
        height=10,
    )
    b.panel(
        table().override_by_name(
            *link_column(
                "registration_code",
                "Elevator ${__value.raw}",
                board_url(shared.ELEVATOR, elevator="${__value.raw}"),
            )
        ),
        "Terminal clocks off (clock_fault)",
        # The offset each terminal's clock was measured at (terminal minus arrival time,
        # detectors/clock.py), the episodes per terminal, the latest first.
        """SELECT a.elevator_id AS registration_code, e.address,
       count(*) AS clock_faults,
       (array_agg((a.evidence->>'offset_ms')::bigint / 1000.0
                  ORDER BY a.raised_at DESC))[1] AS latest_offset_s,
       max(abs((a.evidence->>'offset_ms')::bigint)) / 1000.0 AS largest_offset_s,
       max(a.raised_at) AS latest_at
FROM alert a JOIN elevator e ON e.registration_code = a.elevator_id
WHERE a.state = 'raised' AND a.alert_type = 'clock_fault' AND $__timeFilter(a.raised_at)
  AND e.district IN ($district)
GROUP BY a.elevator_id, e.address
ORDER BY latest_at DESC
LIMIT 500""",
        shows="""SELECT 1 FROM alert a JOIN elevator e ON e.registration_code = a.elevator_id
WHERE a.state = 'raised' AND a.alert_type = 'clock_fault' AND $__timeFilter(a.raised_at)
  AND e.district IN ($district)""",
        width=24,
        height=8,
    )
    return b.build()
