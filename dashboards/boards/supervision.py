"""Comprehensive supervision (综合监管), for the regulator: the risk heatmap on the city map,
elevators by district and grade, the map of elevators coloured by grade, terminal coverage
against the plan's targets, overdue maintenance and inspection, faults by district, the
maintenance companies ranked by risk and by rescue, rescue performance by district and grade
history month by month. Every panel shows the districts chosen in the board's drop-down."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import geomap
from grafana_foundation_sdk.models import common, dashboard

from dashboards.board import (
    COLOUR_CELL,
    GRADE_COLOURS,
    Board,
    BoardBuilder,
    board_url,
    coloured_values,
    grade_cells,
    link_column,
    percent_table,
    stat,
    table,
    timeseries,
)
from dashboards.boards import shared
from dashboards.datasources import REGULATOR

#: Lianyungang's centre, for the map's initial view.
_CITY_LAT, _CITY_LON, _CITY_ZOOM = 34.6, 119.2, 9
_GRADES = ("red", "orange", "yellow", "blue")
_TARGET = {"true": ("met", "green"), "false": ("not met", "red")}
#: The districts chosen in the board's drop-down (a row with a ``district`` column).
_CHOSEN = "district IN ($district)"
#: The same as an array, for the regulators' functions (sql/idempotent/30_regulator_figures.sql).
_CHOSEN_ARRAY = "ARRAY[$district]::text[]"
#: Grade history of the chosen districts, month by month, for the 12 months to the range's end.
_HISTORY = (
    f"grade_history($__timeTo()::timestamptz - interval '12 months', $__timeTo(), {_CHOSEN_ARRAY})"
)


def _shades(colour: str) -> list[dashboard.DynamicConfigValue]:
    """A count column painted in shades of one colour: darker where there are more."""
    shades = {"mode": "shades", "fixedColor": colour}
    return [dashboard.DynamicConfigValue(id_val="color", value=shades), COLOUR_CELL]


def _elevator_map() -> geomap.Panel:
    markers = (
        common_builder.MapLayerOptions()
        .type("markers")
        .name("Elevators by risk grade")
        .location(
            common_builder.FrameGeometrySource()
            .mode(common.FrameGeometrySourceMode.COORDS)
            .latitude("latitude")
            .longitude("longitude")
        )
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": "grade", "fixed": "dark-green"},
                    "size": {"fixed": 5},
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                    "opacity": 0.8,
                },
            }
        )
        .tooltip(True)
    )
    return _city_map(markers).mappings(GRADE_COLOURS)


def _city_map(layer: common_builder.MapLayerOptions) -> geomap.Panel:
    """A geomap of the city with one data layer."""
    return (
        geomap.Panel()
        # the SDK types lat/lon as int; Grafana stores degrees as numbers
        .view(
            geomap.MapViewConfig()
            .id("coords")
            .lat(_CITY_LAT)  # type: ignore[arg-type]
            .lon(_CITY_LON)  # type: ignore[arg-type]
            .zoom(_CITY_ZOOM)
        )
        .basemap(common_builder.MapLayerOptions().type("default").name("Basemap"))
        .layers([layer])
        .controls(geomap.ControlsOptions().show_zoom(True).show_scale(True))
    )


def build() -> Board:
    b = BoardBuilder(
        shared.SUPERVISION,
        "Comprehensive supervision",
        REGULATOR,
        "For the regulator: current risk grades by district and on the map, terminal "
        "coverage against the plan's targets, overdue maintenance and inspection, faults.",
        "supervision",
    )
    b.query_variable(
        "district",
        "District",
        "SELECT DISTINCT district FROM elevator ORDER BY district",
        include_all=True,
        multi=True,
    )
    b.panel(
        stat("percentunit"),
        "Coverage of the districts shown",
        f"""SELECT sum(with_terminal) AS with_terminal, sum(reporting_24h) AS reporting_24h,
       sum(declared_silent_24h) AS declared_silent_24h,
       (SELECT units_target FROM city_coverage) AS city_units_target,
       sum(with_terminal)::double precision / nullif(sum(elevators), 0) AS terminal_share,
       sum(managed_residential_with_terminal)::double precision
           / nullif(sum(managed_residential), 0) AS managed_residential_share,
       count(*) FILTER (WHERE terminal_target_met) AS districts_meeting_terminal_target,
       count(*) AS districts
FROM district_coverage WHERE {_CHOSEN}""",
        width=24,
        height=5,
    )
    b.panel(
        _risk_heatmap(),
        "Risk heatmap on the city map",
        f"""SELECT grade, elevator_id AS registration_code, district, latitude, longitude, score
FROM current_risk_grade
WHERE latitude IS NOT NULL AND longitude IS NOT NULL AND {_CHOSEN}
ORDER BY score""",
        shows=f"SELECT 1 FROM current_risk_grade WHERE latitude IS NOT NULL AND {_CHOSEN}",
        width=12,
        height=10,
    )
    counts = table()
    for grade in _GRADES:
        counts = counts.override_by_name(grade, _shades(grade))
    b.panel(
        counts,
        "Elevators by district and grade",
        f"""SELECT district, red, orange, yellow, blue, ungraded
FROM district_risk_grade
WHERE {_CHOSEN}
ORDER BY red DESC, orange DESC, yellow DESC, district""",
        shows=f"SELECT 1 FROM district_risk_grade WHERE {_CHOSEN}",
        width=12,
        height=10,
    )
    b.panel(
        _elevator_map(),
        "Elevators by risk grade",
        f"""SELECT grade, elevator_id AS registration_code, district, address, latitude,
       longitude, score, top_factor
FROM current_risk_grade
WHERE latitude IS NOT NULL AND longitude IS NOT NULL AND {_CHOSEN}
ORDER BY grade_rank DESC""",
        shows=f"SELECT 1 FROM current_risk_grade WHERE latitude IS NOT NULL AND {_CHOSEN}",
        width=12,
        height=10,
    )
    coverage = table()
    for column in ("terminal_target_met", "managed_residential_target_met"):
        coverage = coverage.override_by_name(*coloured_values(column, _TARGET))
    b.panel(
        coverage.override_by_name(
            *link_column(
                "district",
                "Operation in ${__value.raw}",
                board_url(shared.OPERATION, district="${__value.raw}"),
            )
        ),
        "Terminal coverage against targets",
        f"""SELECT district, elevators, with_terminal, terminal_share, terminal_target_share,
       terminal_target_met, managed_residential, managed_residential_share,
       managed_residential_target_share, managed_residential_target_met,
       reporting_24h, reporting_24h_share, declared_silent_24h
FROM district_coverage
WHERE {_CHOSEN}
ORDER BY terminal_target_met, terminal_share, district""",
        shows=f"SELECT 1 FROM district_coverage WHERE {_CHOSEN}",
        width=24,
        height=9,
    )
    b.panel(
        table(),
        "Overdue maintenance and inspection by district",
        f"""SELECT e.district, count(*) AS elevators,
       count(*) FILTER (WHERE {shared.MAINTENANCE_OVERDUE}) AS maintenance_overdue,
       count(*) FILTER (WHERE {shared.INSPECTION_OVERDUE}) AS inspection_overdue
FROM elevator e
WHERE e.{_CHOSEN}
GROUP BY e.district
ORDER BY maintenance_overdue DESC, e.district""",
        shows=f"SELECT 1 FROM elevator e WHERE e.{_CHOSEN}",
    )
    b.panel(
        table(),
        "Faults and trappings by district",
        f"""SELECT e.district,
       count(*) FILTER (WHERE a.severity = 'critical') AS critical,
       count(*) FILTER (WHERE a.estimated_trapped > 0) AS trappings,
       count(*) AS alerts
FROM alert a JOIN elevator e ON e.registration_code = a.elevator_id
WHERE a.state = 'raised' AND $__timeFilter(a.raised_at) AND e.{_CHOSEN}
GROUP BY e.district
ORDER BY critical DESC, alerts DESC, e.district""",
        shows=f"""SELECT 1 FROM alert a JOIN elevator e ON e.registration_code = a.elevator_id
WHERE a.state = 'raised' AND $__timeFilter(a.raised_at) AND e.{_CHOSEN}""",
    )
    b.panel(
        table()
        .override_by_name(*grade_cells("grade"))
        .override_by_name(
            *link_column(
                "registration_code",
                "Elevator ${__value.raw}",
                board_url(shared.ELEVATOR, elevator="${__value.raw}"),
            )
        ),
        "Highest-risk elevators",
        f"""SELECT elevator_id AS registration_code, district, address, grade, score,
       top_factor, top_factor_points, graded_at
FROM current_risk_grade
WHERE grade IN ('red', 'orange') AND {_CHOSEN}
ORDER BY grade_rank, score DESC
LIMIT 100""",
        shows=f"SELECT 1 FROM current_risk_grade WHERE grade IN ('red', 'orange') AND {_CHOSEN}",
        width=24,
        height=9,
    )
    b.row("Maintenance companies and rescue")
    b.panel(
        percent_table("red_orange_share", "on_time_share", "false_alarm_share"),
        "Maintenance companies ranked by risk and by rescue, 365 days to the end of the range",
        f"""SELECT risk_rank, rescue_rank, maintenance_company, elevators, graded, red, orange,
       yellow, blue, red_orange_share, mean_risk_score, trappings_per_100_elevator_years,
       arrivals, arrival_p50_min, arrival_p90_min, on_time_share, false_alarms,
       false_alarm_share
FROM maintenance_company_ranking({shared.YEAR_TO_END}, {_CHOSEN_ARRAY})
ORDER BY risk_rank NULLS LAST, maintenance_company""",
        shows=f"SELECT 1 FROM elevator WHERE {_CHOSEN}",
        width=24,
        height=9,
    )
    b.panel(
        percent_table("on_time_share", "false_alarm_share"),
        "Rescue performance by district, 365 days to the end of the range",
        f"""SELECT name AS district, elevators, monitored_elevators, trappings,
       trappings_per_100_elevator_years, arrivals, arrival_p50_min, arrival_p90_min,
       on_time_share, false_alarms, false_alarm_share
FROM rescue_performance({shared.YEAR_TO_END}, {_CHOSEN_ARRAY})
WHERE by = 'district'
ORDER BY on_time_share NULLS LAST, name""",
        shows=f"SELECT 1 FROM elevator WHERE {_CHOSEN}",
        width=24,
        height=7,
    )
    b.row("Grade history")
    b.panel(
        timeseries(bars=True),
        "Grade changes by month, 12 months to the end of the range",
        f"""SELECT month AS time, sum(worsened) AS worsened, sum(improved) AS improved,
       sum(orange_to_red) AS orange_to_red, sum(red_to_orange) AS red_to_orange,
       sum(red) AS red_at_month_end, sum(orange) AS orange_at_month_end
FROM {_HISTORY}
GROUP BY month
ORDER BY month""",
        format="time_series",
        shows=f"SELECT 1 FROM {_HISTORY}",
    )
    b.panel(
        table(),
        "Grade history by district and month",
        f"""SELECT to_char(month AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM') AS month, district, red,
       orange, yellow, blue, worsened, improved, orange_to_red, red_to_orange
FROM {_HISTORY}
ORDER BY month DESC, district""",
        shows=f"SELECT 1 FROM {_HISTORY}",
    )
    return b.build()


def _risk_heatmap() -> geomap.Panel:
    """The graded elevators as a heat layer on the city map, each weighted by its risk score
    (0..100): hot where high-risk elevators gather."""
    heat = (
        common_builder.MapLayerOptions()
        .type("heatmap")
        .name("Risk score")
        .location(
            common_builder.FrameGeometrySource()
            .mode(common.FrameGeometrySourceMode.COORDS)
            .latitude("latitude")
            .longitude("longitude")
        )
        .config(
            {
                "blur": 15,
                "radius": 6,
                "weight": {"field": "score", "fixed": 1, "min": 0, "max": 100},
            }
        )
        .tooltip(True)
    )
    return _city_map(heat)
