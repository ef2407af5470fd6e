"""Comprehensive supervision (综合监管), for the regulator: the risk-grade heatmap by district
and grade, the map of elevators coloured by grade, terminal coverage against the plan's
targets, overdue maintenance and inspection, and faults by district."""

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
    stat,
    table,
)
from dashboards.boards import shared
from dashboards.datasources import REGULATOR

#: Lianyungang's centre, for the map's initial view.
_CITY_LAT, _CITY_LON, _CITY_ZOOM = 34.6, 119.2, 9
_GRADES = ("red", "orange", "yellow", "blue")
_TARGET = {"true": ("met", "green"), "false": ("not met", "red")}


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
        .layers([markers])
        .controls(geomap.ControlsOptions().show_zoom(True).show_scale(True))
        .mappings(GRADE_COLOURS)
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
    b.panel(
        stat("percentunit"),
        "City coverage",
        """SELECT with_terminal, reporting_24h, declared_silent_24h, units_target, terminal_share,
       managed_residential_share, districts_meeting_terminal_target, districts
FROM city_coverage""",
        width=24,
        height=5,
    )
    heatmap = table()
    for grade in _GRADES:
        heatmap = heatmap.override_by_name(grade, _shades(grade))
    b.panel(
        heatmap,
        "Risk-grade heatmap: elevators by district and grade",
        """SELECT district, red, orange, yellow, blue, ungraded
FROM district_risk_grade
ORDER BY red DESC, orange DESC, yellow DESC, district""",
        shows="SELECT 1 FROM district_risk_grade",
        width=12,
        height=10,
    )
    b.panel(
        _elevator_map(),
        "Elevators by risk grade",
        """SELECT elevator_id AS registration_code, district, address, latitude, longitude,
       grade, score, top_factor
FROM current_risk_grade
WHERE latitude IS NOT NULL AND longitude IS NOT NULL
ORDER BY grade_rank DESC""",
        shows="SELECT 1 FROM current_risk_grade WHERE latitude IS NOT NULL",
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
        """SELECT district, elevators, with_terminal, terminal_share, terminal_target_share,
       terminal_target_met, managed_residential, managed_residential_share,
       managed_residential_target_share, managed_residential_target_met,
       reporting_24h, reporting_24h_share, declared_silent_24h
FROM district_coverage
ORDER BY terminal_target_met, terminal_share, district""",
        shows="SELECT 1 FROM district_coverage",
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
GROUP BY e.district
ORDER BY maintenance_overdue DESC, e.district""",
        shows="SELECT 1 FROM elevator",
    )
    b.panel(
        table(),
        "Faults and trappings by district",
        """SELECT e.district,
       count(*) FILTER (WHERE a.severity = 'critical') AS critical,
       count(*) FILTER (WHERE a.estimated_trapped > 0) AS trappings,
       count(*) AS alerts
FROM alert a JOIN elevator e ON e.registration_code = a.elevator_id
WHERE a.state = 'raised' AND $__timeFilter(a.raised_at)
GROUP BY e.district
ORDER BY critical DESC, alerts DESC, e.district""",
        shows="SELECT 1 FROM alert WHERE state = 'raised' AND $__timeFilter(raised_at)",
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
        """SELECT elevator_id AS registration_code, district, address, grade, score,
       top_factor, top_factor_points, graded_at
FROM current_risk_grade
WHERE grade IN ('red', 'orange')
ORDER BY grade_rank, score DESC
LIMIT 100""",
        shows="SELECT 1 FROM current_risk_grade WHERE grade IN ('red', 'orange')",
        width=24,
        height=9,
    )
    return b.build()
