"""A board as code: the Grafana dashboard built with grafana-foundation-sdk, the role its
users have, and what ``tianyan dashboards check`` needs to know about its panels.

Every panel carries one SQL target on its board's data source. A panel either always returns
rows (an aggregate) or names the *data it shows* as a query of its own (``shows``): ``check``
fails a panel whose query returned nothing while that query found rows, and lets it be empty
otherwise (nothing to show in the range).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import stat as stat_builder
from grafana_foundation_sdk.builders import table as table_builder
from grafana_foundation_sdk.builders import timeseries as timeseries_builder
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard

from dashboards.datasources import RoleDataSource
from dashboards.query import SQL, Format

#: Tag on every tianyan board (the dashboards' provisioning folder is also ``tianyan``).
TAG = "tianyan"
#: Default time range of the boards.
DEFAULT_RANGE = ("now-6h", "now")


class BoardError(ValueError):
    """A board definition is inconsistent (e.g. two panels with one title)."""


@dataclass(frozen=True)
class Board:
    """One Grafana board and how to check it."""

    uid: str
    title: str
    source: RoleDataSource
    model: dashboard.Dashboard
    #: panel title → SQL that finds the rows the panel shows; absent: it always returns rows
    shows: Mapping[str, str] = field(default_factory=dict)
    #: textbox variable → SQL whose first value ``check`` types in
    typed: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The dashboard as Grafana stores it (plain JSON types, keys sorted)."""
        return json.loads(json.dumps(self.model, cls=JSONEncoder, sort_keys=True))

    def dumps(self) -> str:
        """The committed file's text: indented, keys sorted, final newline."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def board_url(uid: str, **variables: str) -> str:
    """A link to another board keeping the time range, with variables set.

    Values are Grafana templates (``${__value.raw}``, ``${district:queryparam}`` …).
    """
    query = "&".join(f"var-{name}={value}" for name, value in variables.items())
    return f"/d/{uid}?{query + '&' if query else ''}${{__url_time_range}}"


#: A table override: the column's name and the properties it sets.
Override = tuple[str, list[dashboard.DynamicConfigValue]]

#: Paint a table cell with its field's colour (from mappings or the colour scheme).
COLOUR_CELL = dashboard.DynamicConfigValue(
    id_val="custom.cellOptions", value={"type": "color-background", "mode": "basic"}
)


def link_column(column: str, title: str, url: str) -> Override:
    """Make a table column's cells a link (a data link on that field)."""
    return column, [
        dashboard.DynamicConfigValue(id_val="links", value=[{"title": title, "url": url}])
    ]


def named_codes(names: Mapping[str, str]) -> list[dashboard.ValueMapping]:
    """Value mappings showing codes with their names (``"2"`` → ``"2 inspection"``)."""
    options = {
        code: dashboard.ValueMappingResult(text=f"{code} {name}", index=i)
        for i, (code, name) in enumerate(names.items())
    }
    return [dashboard.ValueMap(options)]


def name_values(column: str, names: Mapping[str, str]) -> Override:
    """Show a column's codes with their names."""
    return column, [dashboard.DynamicConfigValue(id_val="mappings", value=named_codes(names))]


def value_colours(colours: Mapping[str, tuple[str, str]]) -> list[dashboard.ValueMapping]:
    """Value mappings with text and colour: ``{value: (text, colour)}``."""
    options = {
        value: dashboard.ValueMappingResult(text=text, color=colour, index=i)
        for i, (value, (text, colour)) in enumerate(colours.items())
    }
    return [dashboard.ValueMap(options)]


def coloured_values(column: str, colours: Mapping[str, tuple[str, str]]) -> Override:
    """Paint a table column's cells by value: ``{value: (text, colour)}``."""
    mappings = value_colours(colours)
    return column, [dashboard.DynamicConfigValue(id_val="mappings", value=mappings), COLOUR_CELL]


#: Risk grades as Grafana colours them (the four-colour scheme of graded risk control).
GRADES = {
    "red": ("red 重大", "red"),
    "orange": ("orange 较大", "orange"),
    "yellow": ("yellow 一般", "yellow"),
    "blue": ("blue 低", "blue"),
}
GRADE_COLOURS = value_colours(GRADES)


def grade_cells(column: str) -> Override:
    """Show a risk-grade column in its colour."""
    return coloured_values(column, GRADES)


def stat(unit: str = "none") -> stat_builder.Panel:
    """A stat panel: one big number per column of the query's single row."""
    return (
        stat_builder.Panel()
        .unit(unit)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
    )


def table() -> table_builder.Panel:
    """A table panel with a header."""
    return table_builder.Panel().show_header(True).cell_height(common.TableCellHeight.SM)


def percent_table(*shares: str) -> table_builder.Panel:
    """A table whose ``shares`` columns (fractions 0..1) show as percentages, and every
    number to one decimal."""
    panel = table().decimals(1)
    for column in shares:
        panel = panel.override_by_name(
            column, [dashboard.DynamicConfigValue(id_val="unit", value="percentunit")]
        )
    return panel


def timeseries(unit: str = "none", *, bars: bool = False) -> timeseries_builder.Panel:
    """A time-series panel (lines, or bars for counts per interval)."""
    panel = (
        timeseries_builder.Panel()
        .unit(unit)
        .legend(
            common_builder.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    )
    if bars:
        return panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
    return panel.draw_style(common.GraphDrawStyle.LINE).line_width(1).fill_opacity(10)


class BoardBuilder:
    """Assembles a :class:`Board`: a dashboard builder that puts every panel, target and
    variable on the board's data source, numbers the panels and records what they show."""

    def __init__(
        self, uid: str, title: str, source: RoleDataSource, description: str, *tags: str
    ) -> None:
        self.uid, self.title, self.source = uid, title, source
        self._dashboard = (
            dashboard_builder.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags([TAG, *tags])
            .timezone("utc")
            .time(*DEFAULT_RANGE)
            .refresh("1m")
            .readonly()
            .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        )
        self._shows: dict[str, str] = {}
        self._typed: dict[str, str] = {}
        self._titles: set[str] = set()
        self._next_id = 1

    def default_range(self, start: str, end: str = "now") -> BoardBuilder:
        """The time range the board opens with (Grafana's relative syntax, e.g. ``now-1h``)."""
        self._dashboard.time(start, end)
        return self

    def query_variable(
        self, name: str, label: str, sql: str, *, include_all: bool = False, multi: bool = False
    ) -> BoardBuilder:
        """A drop-down filled by ``sql`` (its first column), refreshed with the time range."""
        variable = (
            dashboard_builder.QueryVariable(name)
            .label(label)
            .datasource(self.source.ref)
            .query(sql)
            .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard.VariableSort.DISABLED)
            .include_all(include_all)
            .multi(multi)
        )
        self._dashboard.with_variable(variable)
        return self

    def textbox_variable(self, name: str, label: str, *, checked_with: str) -> BoardBuilder:
        """A value the user types; ``check`` types the first value ``checked_with`` returns."""
        self._dashboard.with_variable(dashboard_builder.TextBoxVariable(name).label(label))
        self._typed[name] = checked_with
        return self

    def link(self, title: str, uid: str) -> BoardBuilder:
        """A link in the board's header to board ``uid``, passing time range and variables."""
        self._dashboard.link(
            dashboard_builder.DashboardLink(title)
            .type(dashboard.DashboardLinkType.LINK)
            .url(f"/d/{uid}")
            .include_vars(True)
            .keep_time(True)
        )
        return self

    def row(self, title: str) -> BoardBuilder:
        """A row heading; the panels added next sit under it."""
        self._dashboard.with_row(dashboard_builder.Row(title).id(self._take_id()))
        return self

    def panel(
        self,
        panel: cogbuilder.Builder[dashboard.Panel],
        title: str,
        sql: str,
        *,
        format: Format = "table",
        shows: str | None = None,
        width: int = 12,
        height: int = 8,
    ) -> BoardBuilder:
        """Add ``panel`` titled ``title`` with its one SQL target.

        ``shows``: SQL finding the rows the panel shows (may be empty in a range without them);
        omit it for a panel that always returns rows (an aggregate).
        """
        if title in self._titles:
            raise BoardError(f"board {self.uid!r}: two panels titled {title!r}")
        self._titles.add(title)
        built = panel.build()
        built.id_val = self._take_id()
        built.title = title
        built.datasource = self.source.ref
        built.targets = [SQL(sql).format(format).datasource(self.source.ref).build()]
        built.grid_pos = dashboard.GridPos(h=height, w=width)
        self._dashboard.with_panel(_Built(built))
        if shows is not None:
            self._shows[title] = shows
        return self

    def build(self) -> Board:
        return Board(
            uid=self.uid,
            title=self.title,
            source=self.source,
            model=self._dashboard.build(),
            shows=dict(self._shows),
            typed=dict(self._typed),
        )

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1


class _Built(cogbuilder.Builder[dashboard.Panel]):
    """An already built panel, for the dashboard builder's layout."""

    def __init__(self, panel: dashboard.Panel) -> None:
        self._panel = panel

    def build(self) -> dashboard.Panel:
        return self._panel
