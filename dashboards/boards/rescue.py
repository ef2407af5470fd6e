"""Emergency rescue (应急救援): open incidents, people trapped, time to arrival against the
30-minute target, escalations and the rescue webhook's deliveries."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard

from dashboards.board import (
    Board,
    BoardBuilder,
    board_url,
    link_column,
    percent_table,
    stat,
    table,
    timeseries,
)
from dashboards.boards import shared
from dashboards.datasources import ANALYST

_OPEN = shared.INCIDENT_OPEN_AT_END
_ELEVATOR_LINK = link_column(
    "registration_code",
    "Elevator ${__value.raw}",
    board_url(shared.ELEVATOR, elevator="${__value.raw}"),
)
#: Alerts of a car with people inside, from the detectors (before or without an incident).
_TRAPPING_ALERTS = "('trapped_at_level', 'trapped_between_levels', 'alarm_button')"


def build() -> Board:
    b = BoardBuilder(
        shared.RESCUE,
        "Emergency rescue",
        ANALYST,
        "Incidents from the dispatcher: what is open at the end of the range, how many "
        "people are trapped, how fast rescuers arrived against the 30-minute target, and "
        "rescue performance per maintenance company and per district.",
        "rescue",
    )
    b.panel(
        stat(),
        "Open incidents",
        f"""SELECT count(*) AS open,
       count(*) FILTER (WHERE i.arrived_at IS NULL OR i.arrived_at > $__timeTo())
           AS awaiting_rescuers,
       count(*) FILTER (WHERE i.escalation_level <> 'enterprise') AS escalated
FROM incident i WHERE {_OPEN}""",
        width=8,
        height=5,
    )
    b.panel(
        stat(),
        "People trapped",
        f"""SELECT coalesce(sum(i.estimated_trapped), 0) AS people_trapped
FROM incident i
WHERE {_OPEN} AND (i.arrived_at IS NULL OR i.arrived_at > $__timeTo())""",
        width=6,
        height=5,
    )
    b.panel(
        stat(),
        "Arrivals against the 30-minute target",
        """SELECT count(*) FILTER (WHERE arrival_on_time) AS on_time,
       count(*) FILTER (WHERE NOT arrival_on_time) AS late,
       round((avg(arrival_s) / 60)::numeric, 1) AS mean_minutes
FROM incident
WHERE $__timeFilter(opened_at) AND arrived_at IS NOT NULL""",
        width=10,
        height=5,
    )
    for by, column in (("company", "maintenance_company"), ("district", "district")):
        b.panel(
            percent_table("on_time_share", "false_alarm_share"),
            f"Rescue performance by {column.replace('_', ' ')}, 365 days to the end of the range",
            f"""SELECT name AS {column}, elevators,
       monitored_elevators, trappings, trappings_per_100_elevator_years, rescue_incidents,
       arrivals, arrival_p50_min, arrival_p90_min, on_time_share, incidents, false_alarms,
       false_alarm_share
FROM rescue_performance({shared.YEAR_TO_END})
WHERE by = '{by}'
ORDER BY on_time_share NULLS LAST, arrival_p90_min DESC NULLS LAST, name""",
            shows="SELECT 1 FROM elevator",
            width=24,
            height=8,
        )
    b.panel(
        table().override_by_name(*_ELEVATOR_LINK),
        "Open incidents now",
        f"""SELECT i.opened_at, i.elevator_id AS registration_code, e.address, e.district,
       i.fault_type, i.severity, i.state, i.escalation_level, i.estimated_trapped,
       round((extract(epoch FROM $__timeTo()::timestamptz - i.opened_at) / 60)::numeric, 1)
           AS minutes_open,
       round(((i.arrival_target_s
               - extract(epoch FROM $__timeTo()::timestamptz - i.opened_at)) / 60)::numeric, 1)
           AS minutes_to_target,
       e.maintenance_company, e.maintenance_contact
FROM incident i JOIN elevator e ON e.registration_code = i.elevator_id
WHERE {_OPEN}
ORDER BY i.estimated_trapped DESC NULLS LAST, i.opened_at""",
        shows=f"SELECT 1 FROM incident i WHERE {_OPEN}",
        width=24,
        height=8,
    )
    b.panel(
        timeseries("m").override_by_name(
            "target_minutes",
            [dashboard.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash"})],
        ),
        "Time to arrival",
        """SELECT opened_at AS time, arrival_s / 60 AS arrival_minutes,
       arrival_target_s / 60.0 AS target_minutes
FROM incident
WHERE $__timeFilter(opened_at) AND arrived_at IS NOT NULL
ORDER BY opened_at""",
        format="time_series",
        shows="SELECT 1 FROM incident WHERE $__timeFilter(opened_at) AND arrived_at IS NOT NULL",
    )
    b.panel(
        table(),
        "Rescue webhook deliveries",
        """SELECT d.endpoint, d.status, count(*) AS deliveries, max(d.attempts) AS most_attempts,
       round(max(extract(epoch FROM d.delivered_at - coalesce(d.source_time, d.created_at)))
             ::numeric, 3) AS slowest_delivery_s,
       max(d.last_status_code) AS last_status_code, max(d.last_error) AS last_error
FROM webhook_delivery d JOIN incident i ON i.incident_id = d.incident_id
WHERE $__timeFilter(i.opened_at)
GROUP BY d.endpoint, d.status
ORDER BY d.endpoint, d.status""",
        shows="""SELECT 1 FROM webhook_delivery d JOIN incident i ON i.incident_id = d.incident_id
WHERE $__timeFilter(i.opened_at)""",
    )
    b.panel(
        table().override_by_name(*_ELEVATOR_LINK),
        "Incidents in range",
        """SELECT i.opened_at, i.elevator_id AS registration_code, e.district, i.fault_type,
       i.severity, i.state, i.escalation_level, i.estimated_trapped, i.repeats,
       i.arrived_at, round((i.arrival_s / 60)::numeric, 1) AS arrival_minutes,
       i.arrival_on_time, i.closed_at, i.closed_by
FROM incident i JOIN elevator e ON e.registration_code = i.elevator_id
WHERE $__timeFilter(i.opened_at)
ORDER BY i.opened_at DESC""",
        shows="SELECT 1 FROM incident WHERE $__timeFilter(opened_at)",
        width=24,
        height=9,
    )
    b.panel(
        table(),
        "Incident events",
        """SELECT v.time, i.elevator_id AS registration_code, i.fault_type, v.event_type,
       v.from_state, v.to_state, v.actor, v.note
FROM incident_event v JOIN incident i ON i.incident_id = v.incident_id
WHERE $__timeFilter(v.time)
ORDER BY v.time DESC
LIMIT 500""",
        shows="SELECT 1 FROM incident_event WHERE $__timeFilter(time)",
    )
    b.panel(
        table().override_by_name(*_ELEVATOR_LINK),
        "Trapping alerts from the detectors",
        f"""SELECT a.raised_at, a.elevator_id AS registration_code, e.address, a.alert_type,
       a.severity, a.estimated_trapped,
       (SELECT min(c.raised_at) FROM alert c
         WHERE c.alert_key = a.alert_key AND c.state = 'cleared') AS cleared_at
FROM alert a JOIN elevator e ON e.registration_code = a.elevator_id
WHERE a.state = 'raised' AND a.alert_type IN {_TRAPPING_ALERTS}
  AND $__timeFilter(a.raised_at)
ORDER BY a.raised_at DESC""",
        shows=f"""SELECT 1 FROM alert WHERE state = 'raised' AND alert_type IN {_TRAPPING_ALERTS}
  AND $__timeFilter(raised_at)""",
    )
    return b.build()
