"""``tianyan dashboards preview``: every board drawn from its real SQL results, laid out as
Grafana lays it out, one PNG per board and an index page.

There is no Grafana server on this project's machines, so analysts and reviewers look at the
boards here. Each board's variables and panels are run exactly as ``dashboards check`` runs
them (:func:`dashboards.check.check_board`, as the board's role); each panel is then drawn in
its grid position (Grafana's 24-column grid, 30 px a row unit):

- ``timeseries``: one line per series (Grafana's long format: a text column names the series,
  or wide: one line per numeric column);
- ``stat``: each numeric field's last value, large;
- ``table``: the first rows, with the row count;
- ``geomap``: the rows' longitude and latitude as a scatter, coloured by the first text column.

A panel whose query failed is drawn with PostgreSQL's message in red; an empty one says
"no data", as Grafana does.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from dashboards.board import Board
from dashboards.check import PanelResult, check, panels_of
from dashboards.macros import TimeRange

#: Grafana's grid: 24 columns; a row unit is 30 px high (plus the 8 px gap Grafana draws).
GRID_COLUMNS = 24
ROW_UNIT_PX = 30
#: WenQuanYi Micro Hei, the CJK font the set-up installs, has no bold face: titles are drawn
#: in its one weight (matplotlib would warn once per title and substitute it anyway).
TITLE_WEIGHT = "normal"
#: Width of the drawn board in pixels (a 1080p screen's dashboard area).
BOARD_WIDTH_PX = 1600
#: Rows a table panel draws at most (the rest are counted).
TABLE_ROWS = 12
#: Characters of a table cell drawn at most.
CELL_CHARS = 22
DPI = 100


@dataclass(frozen=True)
class PanelData:
    """What one panel's first target returned."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True)
class BoardPreview:
    """One drawn board."""

    uid: str
    title: str
    png: Path
    panels: int
    results: list[PanelResult]  # every variable's and panel's query, as ``check`` reports it

    @property
    def failed(self) -> list[PanelResult]:
        return [r for r in self.results if not r.ok]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | Decimal):
        f = float(value)
        return f if math.isfinite(f) else None
    return None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        text = value.astimezone(dt.UTC).strftime("%m-%d %H:%M:%S")
    elif isinstance(value, float | Decimal):
        text = f"{float(value):.4g}"
    else:
        text = str(value)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def _draw_timeseries(ax: Any, data: PanelData) -> None:
    cols = data.columns
    at_time = cols.index("time")
    text_cols = [
        i
        for i, c in enumerate(cols)
        if i != at_time and any(isinstance(r[i], str) for r in data.rows)
    ]
    value_cols = [
        i
        for i, c in enumerate(cols)
        if i != at_time and i not in text_cols and any(_number(r[i]) is not None for r in data.rows)
    ]
    series: dict[str, tuple[list[Any], list[float]]] = {}
    for row in data.rows:
        prefix = " ".join(str(row[i]) for i in text_cols)
        for i in value_cols:
            y = _number(row[i])
            if y is None:
                continue
            name = (prefix + " " + cols[i]).strip() if len(value_cols) > 1 or not prefix else prefix
            xs, ys = series.setdefault(name, ([], []))
            xs.append(row[at_time])
            ys.append(y)
    for name, (xs, ys) in sorted(series.items())[:12]:
        ax.plot(xs, ys, linewidth=1.2, label=name)
    if series:
        ax.legend(fontsize=6, loc="upper left", ncol=2, frameon=False)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)
    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))


def _draw_stat(ax: Any, data: PanelData) -> None:
    last = data.rows[-1]
    shown = [(c, _number(v)) for c, v in zip(data.columns, last, strict=True)]
    values = [(c, v) for c, v in shown if v is not None] or [
        (c, v) for c, v in zip(data.columns, last, strict=True) if v is not None
    ]
    ax.axis("off")
    for k, (name, value) in enumerate(values[:4]):
        x = (k + 0.5) / min(len(values), 4)
        text = f"{value:,.4g}" if isinstance(value, float) else _cell(value)
        ax.text(x, 0.45, text, ha="center", va="center", fontsize=20, weight=TITLE_WEIGHT)
        if len(values) > 1:
            ax.text(x, 0.1, name, ha="center", va="center", fontsize=7, color="0.4")


def _draw_table(ax: Any, data: PanelData) -> None:
    ax.axis("off")
    rows = [[_cell(v) for v in row] for row in data.rows[:TABLE_ROWS]]
    table = ax.table(cellText=rows, colLabels=data.columns, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(6)
    table.scale(1, 0.9)
    if len(data.rows) > TABLE_ROWS:
        ax.text(1, 0, f"{len(data.rows)} rows", ha="right", va="bottom", fontsize=6, color="0.4")


def _draw_geomap(ax: Any, data: PanelData) -> None:
    cols = [c.lower() for c in data.columns]
    lon = next(i for i, c in enumerate(cols) if c in ("longitude", "lon", "lng"))
    lat = next(i for i, c in enumerate(cols) if c in ("latitude", "lat"))
    label = next(
        (
            i
            for i in range(len(cols))
            if i not in (lon, lat) and any(isinstance(r[i], str) for r in data.rows)
        ),
        None,
    )
    groups: dict[str, tuple[list[float], list[float]]] = {}
    for row in data.rows:
        x, y = _number(row[lon]), _number(row[lat])
        if x is None or y is None:
            continue
        xs, ys = groups.setdefault(str(row[label]) if label is not None else "", ([], []))
        xs.append(x)
        ys.append(y)
    for name, (xs, ys) in sorted(groups.items()):
        ax.scatter(xs, ys, s=6, label=name or None, color=_grade_colour(name))
    if label is not None:
        ax.legend(fontsize=6, loc="upper left", frameon=False)
    ax.set_xlabel("longitude", fontsize=7)
    ax.set_ylabel("latitude", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_aspect("equal", adjustable="datalim")


def _grade_colour(name: str) -> str | None:
    from dashboards.report import GRADE_COLOURS

    return GRADE_COLOURS.get(name)


def _draw_message(ax: Any, text: str, colour: str) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color=colour, wrap=True)


DRAW = {
    "timeseries": _draw_timeseries,
    "stat": _draw_stat,
    "table": _draw_table,
    "geomap": _draw_geomap,
}


def draw_board(
    board_json: Mapping[str, Any],
    data: Mapping[int, PanelData],
    errors: Mapping[int, str],
    path: Path,
) -> None:
    """Draw one board's panels in their grid positions into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dashboards.report import cjk_font

    font = cjk_font()
    if font:
        plt.rcParams["font.family"] = [font]
    panels = list(panels_of(board_json))
    bottom = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels), default=1)
    unit_px = BOARD_WIDTH_PX / GRID_COLUMNS
    height_px = bottom * ROW_UNIT_PX + 60
    fig = plt.figure(figsize=(BOARD_WIDTH_PX / DPI, height_px / DPI), dpi=DPI)
    fig.suptitle(str(board_json.get("title")), x=0.01, ha="left", fontsize=13, weight=TITLE_WEIGHT)
    top_px = 50
    for panel in panels:
        g = panel["gridPos"]
        pad = 8
        left = (g["x"] * unit_px + pad) / BOARD_WIDTH_PX
        width = (g["w"] * unit_px - 2 * pad) / BOARD_WIDTH_PX
        # a panel's title takes ~22 px at its top
        top = top_px + g["y"] * ROW_UNIT_PX + 22
        h = g["h"] * ROW_UNIT_PX - 22 - 2 * pad
        ax = fig.add_axes((left, 1 - (top + h) / height_px, width, h / height_px))
        fig.text(
            left,
            1 - (top - 4) / height_px,
            str(panel.get("title") or ""),
            fontsize=8,
            weight=TITLE_WEIGHT,
            va="bottom",
        )
        pid = int(panel["id"])
        found = data.get(pid)
        if pid in errors:
            _draw_message(ax, errors[pid], "red")
        elif found is None or not found.rows:
            _draw_message(ax, "No data", "0.5")
        else:
            try:
                DRAW.get(str(panel.get("type")), _draw_table)(ax, found)
            except (StopIteration, ValueError, KeyError) as e:
                ax.clear()
                _draw_message(ax, f"cannot draw as {panel.get('type')}: {e}", "red")
    fig.savefig(path)
    plt.close(fig)


def preview_board(
    board: Board, database_url: str, time_range: TimeRange, out: Path
) -> BoardPreview:
    """Run one board's queries as ``dashboards check`` does (as its role, a scoped board as
    one unit's or company's role) and draw it to ``out/<uid>.png``."""
    board_json = board.to_json()
    data: dict[int, PanelData] = {}

    def keep(panel: Mapping[str, Any], columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        data.setdefault(int(panel["id"]), PanelData(columns, rows))

    results = check([board], database_url, time_range, on_rows=keep)
    by_title = {str(p.get("title")): int(p["id"]) for p in panels_of(board_json)}
    errors = {by_title[r.panel]: r.error or "" for r in results if not r.ok and r.panel in by_title}
    path = out / f"{board.uid}.png"
    draw_board(board_json, data, errors, path)
    return BoardPreview(board.uid, board.title, path, len(by_title), results)


def write_index(previews: Sequence[BoardPreview], time_range: TimeRange, path: Path) -> None:
    """An HTML page showing every board's PNG, with the range and any failed query."""
    items = []
    for p in previews:
        problems = "".join(
            f"<li>{html.escape(r.panel)}: {html.escape(r.error or '')}</li>" for r in p.failed
        )
        items.append(
            f'<h2 id="{html.escape(p.uid)}">{html.escape(p.title)}</h2>'
            f"<p>{p.panels} panels{', failed:' if p.failed else ''}</p>"
            f"{'<ul>' + problems + '</ul>' if problems else ''}"
            f'<img src="{html.escape(p.png.name)}" alt="{html.escape(p.title)}" width="100%">'
        )
    span = f"{time_range.start:%Y-%m-%d %H:%M} – {time_range.end:%Y-%m-%d %H:%M} UTC"
    path.write_text(
        '<!doctype html><html lang="zh-CN"><meta charset="utf-8">'
        "<title>tianyan boards preview</title>"
        "<body style='font-family:sans-serif;max-width:1640px;margin:auto'>"
        f"<h1>tianyan boards, drawn from the database</h1><p>{span}</p>"
        + "".join(items)
        + "</body></html>\n",
        encoding="utf-8",
    )


def preview(
    boards: Sequence[Board], database_url: str, time_range: TimeRange, out: Path
) -> list[BoardPreview]:
    """Draw every board into ``out`` (created), and ``out/index.html``."""
    out.mkdir(parents=True, exist_ok=True)
    previews = [preview_board(b, database_url, time_range, out) for b in boards]
    write_index(previews, time_range, out / "index.html")
    return previews
