"""Use-safety management (使用安全管理) for one user unit: its elevators, their dues and
risk grades, and what happened to them in the range."""

from __future__ import annotations

from dashboards.board import (
    Board,
    BoardBuilder,
    board_url,
    grade_cells,
    link_column,
    stat,
    table,
)
from dashboards.boards import shared
from dashboards.datasources import UNIT

_OURS = "SELECT registration_code FROM elevator WHERE user_unit = '$user_unit'"
_ELEVATOR_LINK = link_column(
    "registration_code",
    "Elevator ${__value.raw}",
    board_url(shared.ELEVATOR, elevator="${__value.raw}"),
)


def build() -> Board:
    b = BoardBuilder(
        shared.USE_SAFETY,
        "Use-safety management",
        UNIT,
        "One user unit's elevators: maintenance and inspection due dates, risk grades, "
        "alerts and incidents.",
        "use-safety",
    )
    b.query_variable(
        "user_unit",
        "User unit",
        "SELECT DISTINCT user_unit FROM elevator WHERE user_unit IS NOT NULL ORDER BY user_unit",
    )
    b.panel(
        stat(),
        "Our elevators",
        f"""SELECT count(*) AS elevators,
       count(*) FILTER (WHERE {shared.MAINTENANCE_OVERDUE}) AS maintenance_overdue,
       count(*) FILTER (WHERE {shared.INSPECTION_OVERDUE}) AS inspection_overdue,
       count(*) FILTER (WHERE g.grade IN ('red', 'orange')) AS red_or_orange
FROM elevator e LEFT JOIN current_risk_grade g ON g.elevator_id = e.registration_code
WHERE e.user_unit = '$user_unit'""",
        width=12,
        height=5,
    )
    b.panel(
        stat(),
        "In range",
        f"""SELECT count(*) FILTER (WHERE severity = 'critical') AS critical_alerts,
       count(*) AS alerts,
       count(*) FILTER (WHERE estimated_trapped > 0) AS trappings
FROM alert
WHERE state = 'raised' AND $__timeFilter(raised_at) AND elevator_id IN ({_OURS})""",
        width=12,
        height=5,
    )
    b.panel(
        table().override_by_name(*_ELEVATOR_LINK).override_by_name(*grade_cells("risk_grade")),
        "Elevators, dues and grades",
        f"""SELECT e.registration_code, e.address, e.building_type, e.has_terminal,
       e.maintenance_company, e.maintenance_contact,
       e.last_maintenance_on + {shared.MAINTENANCE_INTERVAL_DAYS} AS maintenance_due_on,
       e.last_inspection_on + {shared.INSPECTION_INTERVAL_DAYS} AS inspection_due_on,
       {shared.MAINTENANCE_OVERDUE} AS maintenance_overdue,
       g.grade AS risk_grade, g.score AS risk_score, g.top_factor
FROM elevator e LEFT JOIN current_risk_grade g ON g.elevator_id = e.registration_code
WHERE e.user_unit = '$user_unit'
ORDER BY g.grade_rank NULLS LAST, maintenance_due_on NULLS FIRST""",
        shows="SELECT 1 FROM elevator WHERE user_unit = '$user_unit'",
        width=24,
        height=8,
    )
    b.panel(
        table().override_by_name(*_ELEVATOR_LINK),
        "Alerts on our elevators",
        f"""SELECT a.raised_at, a.elevator_id AS registration_code, a.alert_type, a.severity,
       a.estimated_trapped, a.probable_cause, a.suggested_handling
FROM alert a
WHERE a.state = 'raised' AND $__timeFilter(a.raised_at) AND a.elevator_id IN ({_OURS})
ORDER BY a.raised_at DESC""",
        shows=f"""SELECT 1 FROM alert WHERE state = 'raised' AND $__timeFilter(raised_at)
  AND elevator_id IN ({_OURS})""",
    )
    b.panel(
        table().override_by_name(*_ELEVATOR_LINK),
        "Incidents on our elevators",
        f"""SELECT i.opened_at, i.elevator_id AS registration_code, i.fault_type, i.state,
       i.estimated_trapped, i.arrived_at, i.arrival_on_time, i.closed_at
FROM incident i
WHERE $__timeFilter(i.opened_at) AND i.elevator_id IN ({_OURS})
ORDER BY i.opened_at DESC""",
        shows=f"""SELECT 1 FROM incident WHERE $__timeFilter(opened_at)
  AND elevator_id IN ({_OURS})""",
    )
    return b.build()
