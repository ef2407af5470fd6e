"""One elevator: its registry record, its signals in 1-s windows, its trips, alerts and
terminal codes. A trip opens the trip board."""

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
from dashboards.datasources import ANALYST

_THIS = "elevator_id = '$elevator'"
#: A trip's id on the trip board: its start, in Unix milliseconds (exact, URL-safe).
TRIP_ID = "(extract(epoch FROM start_time) * 1000)::bigint"


def build() -> Board:
    b = BoardBuilder(
        shared.ELEVATOR,
        "Elevator",
        ANALYST,
        "One elevator: registry record, speed and load in 1-s windows, trips, alerts and "
        "terminal codes. Pick a trip to see its samples.",
        "operation",
    )
    b.query_variable(
        "district", "District", "SELECT DISTINCT district FROM elevator ORDER BY district"
    )
    b.query_variable(
        "elevator",
        "Elevator (registration code)",
        "SELECT registration_code FROM elevator"
        " WHERE district = '$district' AND has_terminal ORDER BY registration_code",
    )
    b.link("Operation monitoring", shared.OPERATION)
    b.panel(
        table(),
        "Registry record",
        """SELECT registration_code, address, district, building_type, user_unit,
       rated_speed_mps, rated_load_kg, floors, installed_on, maintenance_company,
       maintenance_contact, last_maintenance_on, last_inspection_on, has_terminal
FROM elevator WHERE registration_code = '$elevator'""",
        shows="SELECT 1 FROM elevator WHERE registration_code = '$elevator'",
        width=16,
        height=6,
    )
    b.panel(
        stat(),
        "In range",
        f"""SELECT (SELECT count(*) FROM trip WHERE {_THIS} AND $__timeFilter(start_time)) AS trips,
       (SELECT count(*) FROM alert
         WHERE {_THIS} AND state = 'raised' AND $__timeFilter(raised_at)) AS alerts,
       (SELECT grade FROM current_risk_grade WHERE {_THIS}) AS risk_grade""",
        width=8,
        height=6,
    )
    b.panel(
        timeseries("velocityms"),
        "Speed",
        f"""SELECT $__timeGroupAlias(bucket_start, $__interval),
       max(speed_max_mps) AS speed_max_mps,
       avg(speed_mean_mps) AS speed_mean_mps,
       (SELECT rated_speed_mps FROM elevator WHERE registration_code = '$elevator')
           AS rated_speed_mps
FROM window_feature
WHERE {_THIS} AND width_s = 1 AND $__timeFilter(bucket_start)
GROUP BY 1
ORDER BY 1""",
        format="time_series",
        shows=f"SELECT 1 FROM window_feature WHERE {_THIS} AND width_s = 1"
        " AND $__timeFilter(bucket_start)",
    )
    b.panel(
        timeseries("masskg"),
        "Load",
        f"""SELECT $__timeGroupAlias(bucket_start, $__interval),
       max(load_max_kg) AS load_max_kg,
       (SELECT rated_load_kg FROM elevator WHERE registration_code = '$elevator')
           AS rated_load_kg
FROM window_feature
WHERE {_THIS} AND width_s = 1 AND $__timeFilter(bucket_start)
GROUP BY 1
ORDER BY 1""",
        format="time_series",
        shows=f"SELECT 1 FROM window_feature WHERE {_THIS} AND width_s = 1"
        " AND $__timeFilter(bucket_start)",
    )
    b.panel(
        timeseries().min(0).max(1),
        "Online-learning score (0.5 alarms)",
        f"""SELECT t AS time, metric, score FROM (
    SELECT end_time AS t, 'trip' AS metric, online_score AS score FROM trip
    WHERE {_THIS} AND online_score IS NOT NULL AND $__timeFilter(start_time)
    UNION ALL
    SELECT bucket_start + interval '1 minute', 'minute', online_score FROM window_feature
    WHERE {_THIS} AND width_s = 60 AND online_score IS NOT NULL
      AND $__timeFilter(bucket_start)
) s
ORDER BY 1""",
        format="time_series",
        shows=f"""SELECT 1 FROM trip WHERE {_THIS} AND online_score IS NOT NULL
  AND $__timeFilter(start_time)""",
        width=24,
    )
    b.panel(
        table().override_by_name(
            *link_column(
                "trip",
                "Trip samples",
                board_url(shared.TRIP, elevator="$elevator", trip="${__value.raw}"),
            )
        ),
        "Trips",
        f"""SELECT {TRIP_ID} AS trip, start_time, end_time, start_floor, end_floor,
       duration_s, distance_m, peak_speed_mps, peak_accel_mps2, load_kg,
       leveling_offset_mm, door_opening_s, door_closing_s, online_score
FROM trip
WHERE {_THIS} AND $__timeFilter(start_time)
ORDER BY start_time DESC
LIMIT 1000""",
        shows=f"SELECT 1 FROM trip WHERE {_THIS} AND $__timeFilter(start_time)",
        width=24,
        height=9,
    )
    b.panel(
        table(),
        "Alerts",
        f"""SELECT raised_at, state, alert_type, severity, gb_code, detector, estimated_trapped,
       probable_cause, suggested_handling
FROM alert
WHERE {_THIS} AND $__timeFilter(raised_at)
ORDER BY raised_at DESC""",
        shows=f"SELECT 1 FROM alert WHERE {_THIS} AND $__timeFilter(raised_at)",
    )
    b.panel(
        table().override_by_name(*name_values("code", shared.CODES)),
        "Terminal fault and event codes",
        f"""SELECT time, code, kind FROM telemetry_code
WHERE {_THIS} AND $__timeFilter(time)
ORDER BY time DESC""",
        shows=f"SELECT 1 FROM telemetry_code WHERE {_THIS} AND $__timeFilter(time)",
    )
    return b.build()
