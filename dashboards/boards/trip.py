"""One trip of one elevator: its summary and its raw samples (while raw retention keeps
them, 7 days by default)."""

from __future__ import annotations

from dashboards.board import Board, BoardBuilder, name_values, table, timeseries
from dashboards.boards import shared
from dashboards.boards.elevator import TRIP_ID
from dashboards.datasources import ANALYST

#: The trip picked: ``$trip`` is its start in Unix milliseconds (elevator.TRIP_ID). Quoted and
#: typed (issue 15): a value put in the URL (``var-trip=0 OR true``) is a bad bigint, not SQL.
_TRIP_START = "'epoch'::timestamptz + ${trip:sqlstring}::bigint * interval '1 ms'"
_THIS_TRIP = f"elevator_id = '$elevator' AND start_time = {_TRIP_START}"
#: Samples a few seconds either side of the trip, to see the doors and the start.
_MARGIN = "interval '5 s'"
#: raw_sample holds recent and packed samples (migration 0012); the bound on stored_time lets
#: the planner reach the packed minutes by their key.
_SAMPLES = f"""FROM trip t
JOIN raw_sample s ON s.elevator_id = t.elevator_id
 AND s.time BETWEEN t.start_time - {_MARGIN} AND t.end_time + {_MARGIN}
 AND s.stored_time > t.start_time - {_MARGIN} - interval '1 minute'
 AND s.stored_time <= t.end_time + {_MARGIN}
WHERE t.elevator_id = '$elevator' AND t.start_time = {_TRIP_START}"""


def build() -> Board:
    b = BoardBuilder(
        shared.TRIP,
        "Trip",
        ANALYST,
        "One trip: summary, and the raw samples from 5 s before its start to 5 s after its "
        "end (raw samples are kept 7 days).",
        "operation",
    )
    b.textbox_variable(
        "elevator",
        "Elevator (registration code)",
        checked_with="SELECT elevator_id FROM trip WHERE $__timeFilter(start_time)"
        " ORDER BY start_time, elevator_id LIMIT 1",
    )
    b.query_variable(
        "trip",
        "Trip",
        f"""SELECT to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS "UTC"')
           || ' floor ' || start_floor || ' → ' || end_floor AS __text,
       {TRIP_ID} AS __value
FROM trip
WHERE elevator_id = '$elevator' AND $__timeFilter(start_time)
ORDER BY start_time DESC""",
    )
    b.link("Elevator", shared.ELEVATOR)
    b.panel(
        table(),
        "Trip summary",
        f"""SELECT start_time, end_time, start_floor, end_floor, direction, duration_s,
       distance_m, peak_speed_mps, peak_accel_mps2, peak_jerk_mps3, load_kg,
       leveling_offset_mm, door_opening_s, door_closing_s
FROM trip WHERE {_THIS_TRIP}""",
        shows=f"SELECT 1 FROM trip WHERE {_THIS_TRIP}",
        width=24,
        height=5,
    )
    shows_samples = f"SELECT 1 {_SAMPLES}"
    b.panel(
        timeseries("velocityms"),
        "Speed and acceleration",
        f"SELECT s.time, s.speed_mps, s.accel_mps2 {_SAMPLES} ORDER BY s.time",
        format="time_series",
        shows=shows_samples,
    )
    b.panel(
        timeseries("lengthm"),
        "Position and floor",
        f"SELECT s.time, s.position_m, s.floor {_SAMPLES} ORDER BY s.time",
        format="time_series",
        shows=shows_samples,
    )
    b.panel(
        timeseries().override_by_name(*name_values("door", shared.DOOR_STATES)),
        "Door and load",
        f"SELECT s.time, s.door, s.load_kg {_SAMPLES} ORDER BY s.time",
        format="time_series",
        shows=shows_samples,
    )
    b.panel(
        timeseries("lengthmm"),
        "Leveling offset",
        f"SELECT s.time, s.leveling_offset_mm {_SAMPLES} ORDER BY s.time",
        format="time_series",
        shows=shows_samples,
    )
    return b.build()
