"""The static risk report for regulators who do not use Grafana (``tianyan report``).

:func:`write_report` writes, to one directory:

- ``risk_grid_map.png`` — the risk heatmap on the city's map: a grid of ≈ 2 km cells, each
  coloured by the share of its graded elevators graded red or orange;
- ``grades_by_district.png`` — districts × the four grades, counts annotated;
- ``elevators_by_grade.png`` — every elevator at its position, coloured by grade;
- ``grade_history.png`` — red and orange elevators per district at each month's end, and
  the elevators whose grade worsened or improved each month;
- ``index.html`` — the tables: grades by district, coverage against the plan's targets,
  rescue performance per maintenance company and per district, the companies ranked by
  risk and by rescue, grade history by month, red and orange elevators with the factors
  behind their grades, overdue maintenance and inspections. Self-contained apart from the
  PNGs beside it.

Rescue performance, the ranking and grade history come from the database's own functions
(``rescue_performance``, ``maintenance_company_ranking``, ``grade_history`` in
sql/idempotent/30_regulator_figures.sql), which the Grafana boards call too.

It reads as a read-only role (the command uses ``tianyan_regulator``).
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Grade colours (the four-colour scheme of graded risk control), most severe first.
GRADE_COLOURS = {"red": "#d62728", "orange": "#ff7f0e", "yellow": "#f2c80f", "blue": "#1f77b4"}
UNGRADED_COLOUR = "#9e9e9e"
#: At most this many rows in each per-elevator list of the HTML; the rest are counted.
MAX_LIST_ROWS = 500


_GRADES_AS_OF = """
SELECT e.registration_code, e.district, e.address, e.latitude, e.longitude,
       g.graded_at, g.score, g.grade, g.factors
FROM tianyan.elevator e
LEFT JOIN LATERAL (
    SELECT graded_at, score, grade, factors FROM tianyan.risk_grade r
    WHERE r.elevator_id = e.registration_code AND r.graded_at <= %(at)s
    ORDER BY r.graded_at DESC LIMIT 1
) g ON true
ORDER BY e.registration_code
"""
_COVERAGE = """
SELECT district, elevators, with_terminal, terminal_share, terminal_target_share,
       terminal_target_met, managed_residential, managed_residential_with_terminal,
       managed_residential_share, managed_residential_target_share,
       managed_residential_target_met, reporting_24h, declared_silent_24h
FROM tianyan.district_coverage
"""
_CITY = "SELECT * FROM tianyan.city_coverage"
_RESCUE = "SELECT * FROM tianyan.rescue_performance(%(since)s, %(at)s)"
_RANKING = "SELECT * FROM tianyan.maintenance_company_ranking(%(since)s, %(at)s)"
_HISTORY = "SELECT * FROM tianyan.grade_history(%(history_since)s, %(at)s)"
#: Rescue performance and the ranking cover the year before the report's time; grade history
#: the 12 months before it.
RESCUE_DAYS = 365
HISTORY_MONTHS = 12
#: Side of a cell of the risk grid map, km.
GRID_CELL_KM = 2.0
_OVERDUE = """
SELECT registration_code, district, address, maintenance_company,
       last_maintenance_on, last_inspection_on, maintenance_overdue, inspection_overdue
FROM (
    SELECT *,
           coalesce(last_maintenance_on < %(today)s - %(maint)s::int, true) AS maintenance_overdue,
           coalesce(last_inspection_on < %(today)s - %(insp)s::int, true) AS inspection_overdue
    FROM tianyan.elevator
) e
WHERE maintenance_overdue OR inspection_overdue
ORDER BY coalesce(last_maintenance_on, '-infinity'::date), registration_code
"""


@dataclass
class ReportData:
    """Everything the report shows, read in one transaction."""

    at: dt.datetime
    today: dt.date
    maintenance_interval_days: int
    inspection_interval_days: int
    elevators: list[dict[str, Any]]  # one per registry elevator, with its grade as of `at`
    coverage: list[dict[str, Any]]  # district_coverage rows
    city: dict[str, Any]  # the city_coverage row
    overdue: list[dict[str, Any]]
    districts: list[str] = field(default_factory=list)  # known and registered, in order
    since: dt.datetime | None = None  # start of the rescue figures' range (ends at `at`)
    rescue: list[dict[str, Any]] = field(default_factory=list)  # rescue_performance rows
    ranking: list[dict[str, Any]] = field(default_factory=list)  # maintenance_company_ranking
    history: list[dict[str, Any]] = field(default_factory=list)  # grade_history rows


def read_report(url: str, at: dt.datetime, maint_days: int, insp_days: int) -> ReportData:
    """The report's data as of ``at`` (grades as of then; registry and coverage as stored)."""
    import psycopg
    from psycopg.rows import dict_row

    from foundation.city import CITY_TZ
    from registry.model import DISTRICT_NAMES

    today = at.astimezone(CITY_TZ).date()
    since = at - dt.timedelta(days=RESCUE_DAYS)
    local = at.astimezone(CITY_TZ)
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    month = first.month - HISTORY_MONTHS
    history_since = first.replace(year=first.year + (month - 1) // 12, month=(month - 1) % 12 + 1)
    ranges = {"since": since, "at": at, "history_since": history_since}
    with psycopg.connect(url, row_factory=dict_row) as conn, conn.transaction():
        elevators = conn.execute(_GRADES_AS_OF, {"at": at}).fetchall()
        coverage = conn.execute(_COVERAGE).fetchall()
        city = conn.execute(_CITY).fetchone() or {}
        overdue = conn.execute(
            _OVERDUE, {"today": today, "maint": maint_days, "insp": insp_days}
        ).fetchall()
        rescue = conn.execute(_RESCUE, ranges).fetchall()
        ranking = conn.execute(_RANKING, ranges).fetchall()
        history = conn.execute(_HISTORY, ranges).fetchall()
    registered = {e["district"] for e in elevators}
    districts = list(DISTRICT_NAMES) + sorted(registered - set(DISTRICT_NAMES))
    return ReportData(
        at,
        today,
        maint_days,
        insp_days,
        elevators,
        coverage,
        dict(city),
        overdue,
        districts,
        since,
        rescue,
        ranking,
        history,
    )


def grade_counts(data: ReportData) -> dict[str, dict[str, int]]:
    """Elevators per district and grade (``"ungraded"`` for those with no grade yet)."""
    counts = {d: dict.fromkeys([*GRADE_COLOURS, "ungraded"], 0) for d in data.districts}
    for e in data.elevators:
        counts[e["district"]][e["grade"] or "ungraded"] += 1
    return counts


def cjk_font() -> str | None:
    """A font that can draw Chinese, if one is installed (the set-up installs WenQuanYi Micro
    Hei). Fonts installed after matplotlib cached its font list are found on disk and added."""
    from matplotlib import font_manager

    def known() -> str | None:
        for f in font_manager.fontManager.ttflist:
            if any(k in f.name for k in CJK_FONT_NAMES):
                return str(f.name)
        return None

    if (name := known()) is None:
        for path in font_manager.findSystemFonts():
            if any(k in Path(path).name.lower() for k in ("wqy", "cjk", "droidsansfallback")):
                font_manager.fontManager.addfont(path)
        name = known()
    return name


#: Names of fonts that draw Chinese.
CJK_FONT_NAMES = ("CJK", "WenQuanYi", "Hei", "Song", "Droid Sans Fallback")


def _district_label(name: str, chinese: bool) -> str:
    from registry.model import DISTRICTS

    zh = {d.name: d.name_zh for d in DISTRICTS}
    return f"{name} {zh[name]}" if chinese and name in zh else name


def render_heatmap(data: ReportData, path: Path) -> None:
    """Districts × grades, counts and shares annotated; each cell the grade's colour, deeper
    the larger the share of the district's graded elevators in that grade (so that a large
    district does not look riskier for being large)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import to_rgb

    from detectors.risk import GRADE_ZH, GRADES

    font = cjk_font()
    counts = grade_counts(data)
    districts = data.districts
    grid = np.array([[counts[d][g] for g in GRADES] for d in districts], dtype=float)
    graded = grid.sum(axis=1, keepdims=True)
    share = np.divide(grid, graded, out=np.zeros_like(grid), where=graded > 0)
    peak = share.max(axis=0)
    depth = np.divide(share, peak, out=np.zeros_like(share), where=peak > 0)
    # White for none, the grade's full colour for the district with the largest share.
    strength = np.where(grid > 0, 0.25 + 0.75 * depth, 0.0)
    rgb = np.ones((len(districts), len(GRADES), 3))
    for j, g in enumerate(GRADES):
        rgb[:, j, :] = 1.0 - strength[:, j, None] * (1.0 - np.array(to_rgb(GRADE_COLOURS[g])))
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(districts) + 1.8), dpi=110)
    if font:
        plt.rcParams["font.family"] = [font]
    ax.imshow(rgb, aspect="auto")
    ax.set_xticks(range(len(GRADES)))
    ax.set_xticklabels([f"{g}\n{GRADE_ZH[g]}" if font else g for g in GRADES])
    ax.set_yticks(range(len(districts)))
    ax.set_yticklabels([_district_label(d, bool(font)) for d in districts])
    ax.xaxis.tick_top()
    for i in range(len(districts)):
        for j in range(len(GRADES)):
            n = int(grid[i, j])
            label = f"{n}\n{100 * share[i, j]:.1f} %" if n else "0"
            dark = strength[i, j] > 0.6 and GRADES[j] != "yellow"
            ax.text(
                j, i, label, ha="center", va="center", fontsize=8,
                color="white" if dark else "black",
            )  # fmt: skip
    ax.set_title(
        f"Elevators by risk grade and district, {data.at:%Y-%m-%d %H:%M} UTC\n"
        "count and share of the district's graded elevators; deeper = larger share",
        pad=28,
        fontsize=10,
    )
    ax.set_xticks(np.arange(-0.5, len(GRADES)), minor=True)
    ax.set_yticks(np.arange(-0.5, len(districts)), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_grid_map(data: ReportData, path: Path, cell_km: float = GRID_CELL_KM) -> None:
    """The risk heatmap on the city's map: the graded elevators binned into square cells of
    ``cell_km`` on longitude × latitude, each cell coloured by the share of its graded
    elevators graded red or orange (empty cells left blank); districts labelled at their
    centres. The share, not the count, so that a dense centre does not look riskier for
    being dense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LinearSegmentedColormap

    from registry.model import DISTRICTS

    font = cjk_font()
    if font:
        plt.rcParams["font.family"] = [font]
    graded = [
        e for e in data.elevators
        if e["grade"] is not None and e["latitude"] is not None and e["longitude"] is not None
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    # degrees per cell: 111.2 km a degree of latitude, times cos(latitude) for longitude
    lat0 = float(np.mean([e["latitude"] for e in graded])) if graded else 34.6
    dlat = cell_km / 111.2
    dlon = cell_km / (111.2 * np.cos(np.radians(lat0)))
    if graded:
        lon = np.array([e["longitude"] for e in graded])
        lat = np.array([e["latitude"] for e in graded])
        flagged = np.array([e["grade"] in ("red", "orange") for e in graded], dtype=float)
        lon_edges = np.arange(lon.min() - dlon, lon.max() + 2 * dlon, dlon)
        lat_edges = np.arange(lat.min() - dlat, lat.max() + 2 * dlat, dlat)
        count, _, _ = np.histogram2d(lon, lat, bins=(lon_edges, lat_edges))
        red_orange, _, _ = np.histogram2d(lon, lat, bins=(lon_edges, lat_edges), weights=flagged)
        share = np.ma.masked_where(count == 0, red_orange / np.where(count == 0, 1, count))
        colours = LinearSegmentedColormap.from_list(
            "risk",
            ["#e8f1fa", GRADE_COLOURS["yellow"], GRADE_COLOURS["orange"], GRADE_COLOURS["red"]],
        )
        mesh = ax.pcolormesh(
            lon_edges, lat_edges, share.T, cmap=colours, vmin=0, vmax=1,
            edgecolors="white", linewidth=0.3,
        )  # fmt: skip
        bar = fig.colorbar(mesh, ax=ax, shrink=0.8, format=lambda x, _: f"{100 * x:.0f} %")
        bar.set_label("share of the cell's graded elevators graded red or orange")
        ax.set_xlim(lon_edges[0], lon_edges[-1])
        ax.set_ylim(lat_edges[0], lat_edges[-1])
    registered = set(data.districts)
    for d in DISTRICTS:
        if d.name in registered:
            ax.annotate(
                _district_label(d.name, bool(font)),
                (d.longitude, d.latitude),
                ha="center",
                fontsize=8,
                annotation_clip=True,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.6, "lw": 0},
            )
    ax.set_xlabel("longitude, °E")
    ax.set_ylabel("latitude, °N")
    ax.set_aspect(1 / float(np.cos(np.radians(lat0))))  # kilometres equal both ways
    ax.set_title(
        f"Risk heatmap: {cell_km:g} km cells, {len(graded)} graded elevators,"
        f" {data.at:%Y-%m-%d %H:%M} UTC",
        fontsize=10,
    )
    ax.set_facecolor("#f7f7f7")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_history(data: ReportData, path: Path) -> None:
    """Month by month: red and orange elevators per district at each month's end (lines), and
    the city's elevators whose grade worsened or improved in the month (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from foundation.city import CITY_TZ

    font = cjk_font()
    if font:
        plt.rcParams["font.family"] = [font]
    months = sorted({r["month"] for r in data.history})
    labels = [m.astimezone(CITY_TZ).strftime("%Y-%m") for m in months]
    x = range(len(months))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), dpi=110, sharex=True)
    for d in data.districts:
        mine = {r["month"]: r for r in data.history if r["district"] == d}
        flagged = [mine[m]["red"] + mine[m]["orange"] if m in mine else 0 for m in months]
        if any(flagged):
            top.plot(x, flagged, marker="o", label=_district_label(d, bool(font)))
    top.set_ylabel("red + orange at month end")
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize=7, ncols=2)
    top.set_title("Grade history by month (Lianyungang's calendar)", fontsize=10)
    top.grid(alpha=0.3)
    worse = [sum(r["worsened"] for r in data.history if r["month"] == m) for m in months]
    better = [sum(r["improved"] for r in data.history if r["month"] == m) for m in months]
    bottom.bar([i - 0.2 for i in x], worse, width=0.4, color=GRADE_COLOURS["red"], label="worsened")
    bottom.bar(
        [i + 0.2 for i in x], better, width=0.4, color=GRADE_COLOURS["blue"], label="improved"
    )
    bottom.set_ylabel("elevators")
    for axes in (top, bottom):
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    bottom.set_xticks(list(x))
    bottom.set_xticklabels(labels, rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_map(data: ReportData, path: Path) -> None:
    """Elevators at their registered positions, coloured by grade; districts labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from detectors.risk import GRADES

    font = cjk_font()
    if font:
        plt.rcParams["font.family"] = [font]
    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    placed = [e for e in data.elevators if e["latitude"] is not None and e["longitude"] is not None]
    # Least severe first, so red and orange are drawn on top. Markers shrink as the fleet
    # grows, so that a city of 40,000 does not hide its blue under its yellow; red and
    # orange stay visible at any size.
    scale = min(1.0, (2000 / max(len(placed), 1)) ** 0.5)
    layers: list[tuple[str, str, float]] = [("ungraded", UNGRADED_COLOUR, 10 * scale)]
    for i, g in reversed(list(enumerate(GRADES))):
        size = (14 + 10 * (3 - i)) * scale
        layers.append((g, GRADE_COLOURS[g], max(size, 14.0) if g in ("red", "orange") else size))
    for grade, colour, size in layers:
        pts = [e for e in placed if (e["grade"] or "ungraded") == grade]
        if not pts:
            continue
        ax.scatter(
            [e["longitude"] for e in pts],
            [e["latitude"] for e in pts],
            s=size,
            c=colour,
            label=f"{grade} ({len(pts)})",
            edgecolors="black" if grade in ("red", "orange") else "none",
            linewidths=0.4,
            alpha=0.85,
        )
    for d in data.districts:
        mine = [e for e in placed if e["district"] == d]
        if mine:
            lon = sum(e["longitude"] for e in mine) / len(mine)
            lat = sum(e["latitude"] for e in mine) / len(mine)
            ax.annotate(
                _district_label(d, bool(font)),
                (lon, lat),
                ha="center",
                fontsize=8,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0},
            )
    ax.set_xlabel("longitude, °E")
    ax.set_ylabel("latitude, °N")
    ax.set_aspect(1 / 0.82)  # ≈ 1 / cos(34.6°): kilometres equal both ways
    ax.legend(loc="lower left", title="risk grade", fontsize=8)
    ax.set_title(f"Elevators by risk grade, {data.at:%Y-%m-%d %H:%M} UTC")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _e(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.1f}"
    return html.escape(str(value))


def _share(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def _met(value: bool | None) -> str:
    if value is None:
        return '<td class="na">n/a</td>'
    return '<td class="ok">met</td>' if value else '<td class="no">not met</td>'


def _table(head: list[str], rows: list[str]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "\n".join(rows) if rows else f'<tr><td colspan="{len(head)}">none</td></tr>'
    return f"<table><thead><tr>{th}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _more(total: int) -> str:
    return f"<p>… and {total - MAX_LIST_ROWS} more.</p>" if total > MAX_LIST_ROWS else ""


def _one_decimal(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _rescue_table(rows: list[dict[str, Any]], first: str, name: Any) -> str:
    """Rescue performance rows (``rescue_performance``) as an HTML table."""
    body = [
        f"<tr><td>{name(r['name'])}</td><td>{r['elevators']}</td>"
        f"<td>{r['monitored_elevators']}</td><td>{r['trappings']}</td>"
        f"<td>{_one_decimal(r['trappings_per_100_elevator_years'])}</td><td>{r['arrivals']}</td>"
        f"<td>{_one_decimal(r['arrival_p50_min'])}</td><td>{_one_decimal(r['arrival_p90_min'])}</td>"
        f"<td>{_share(r['on_time_share'])}</td><td>{r['false_alarms']} of {r['incidents']}</td>"
        f"<td>{_share(r['false_alarm_share'])}</td></tr>"
        for r in rows
    ]
    return _table(
        [
            first,
            "elevators",
            "monitored",
            "trappings",
            "per 100 elevators a year",
            "arrivals",
            "median arrival, min",
            "p90 arrival, min",
            "on time",
            "false alarms",
            "false-alarm share",
        ],
        body,
    )


def render_html(
    data: ReportData,
    path: Path,
    heatmap: str,
    map_png: str,
    grid_map: str,
    history_png: str,
) -> None:
    """The report page: tables, with the images beside it referenced."""
    from detectors.risk import GRADE_ZH, GRADES
    from foundation.city import CITY_TZ
    from registry.model import DISTRICTS

    zh = {d.name: d.name_zh for d in DISTRICTS}
    counts = grade_counts(data)

    def district(name: str) -> str:
        return f"{_e(name)} {_e(zh.get(name, ''))}".strip()

    grade_head = ["District 区县"] + [
        f'<span class="chip {g}"></span>{g} {GRADE_ZH[g]}' for g in GRADES
    ]
    grade_rows = []
    totals = dict.fromkeys([*GRADES, "ungraded"], 0)
    for d in data.districts:
        c = counts[d]
        for k in totals:
            totals[k] += c[k]
        cells = "".join(f"<td>{c[g]}</td>" for g in GRADES)
        grade_rows.append(
            f"<tr><td>{district(d)}</td>{cells}<td>{c['ungraded']}</td>"
            f"<td>{sum(c.values())}</td></tr>"
        )
    cells = "".join(f"<td>{totals[g]}</td>" for g in GRADES)
    grade_rows.append(
        f'<tr class="total"><td>City 全市</td>{cells}<td>{totals["ungraded"]}</td>'
        f"<td>{sum(totals.values())}</td></tr>"
    )
    grades_table = _table([*grade_head, "ungraded 未评", "elevators"], grade_rows)

    by_district = {r["district"]: r for r in data.coverage}
    cov_rows = []
    for d in data.districts:
        r = by_district.get(d)
        if r is None:
            cov_rows.append(f'<tr><td>{district(d)}</td><td colspan="10">no elevators</td></tr>')
            continue
        cov_rows.append(
            f"<tr><td>{district(d)}</td><td>{r['elevators']}</td><td>{r['with_terminal']}</td>"
            f"<td>{_share(r['terminal_share'])}</td>{_met(r['terminal_target_met'])}"
            f"<td>{r['managed_residential']}</td><td>{r['managed_residential_with_terminal']}</td>"
            f"<td>{_share(r['managed_residential_share'])}</td>"
            f"{_met(r['managed_residential_target_met'])}"
            f"<td>{r['reporting_24h']}</td><td>{r['declared_silent_24h']}</td></tr>"
        )
    c = data.city
    if c:
        cov_rows.append(
            f'<tr class="total"><td>City 全市</td><td>{c["elevators"]}</td>'
            f"<td>{c['with_terminal']}</td><td>{_share(c['terminal_share'])}</td>"
            f"{_met(c['units_target_met'])}<td>{c['managed_residential']}</td>"
            f"<td>{c['managed_residential_with_terminal']}</td>"
            f"<td>{_share(c['managed_residential_share'])}</td>"
            f"{_met(c['managed_residential_target_met'])}"
            f"<td>{c['reporting_24h']}</td><td>{c['declared_silent_24h']}</td></tr>"
        )
    coverage_table = _table(
        [
            "District 区县",
            "elevators",
            "with terminal",
            "share",
            "≥ 30 % (city: ≥ 3,500 units)",
            "managed residential",
            "with terminal",
            "share",
            "≥ 90 %",
            "reported in the last 24 h 24小时内在线",
            "declared, silent 24 h 登记未上报",
        ],
        cov_rows,
    )

    flagged = sorted(
        (e for e in data.elevators if e["grade"] in ("red", "orange")),
        key=lambda e: (GRADES.index(e["grade"]), -e["score"], e["registration_code"]),
    )
    flagged_rows = []
    for e in flagged[:MAX_LIST_ROWS]:
        factors = (e["factors"] or {}).get("factors", {})
        top = sorted(
            ((k, v) for k, v in factors.items() if v.get("points", 0) > 0),
            key=lambda kv: (-kv[1]["points"], kv[0]),
        )[:3]
        why = "<br>".join(f"{_e(k)} +{v['points']:g}: {_e(v.get('reason', ''))}" for k, v in top)
        flagged_rows.append(
            f'<tr><td class="code">{_e(e["registration_code"])}</td>'
            f"<td>{district(e['district'])}</td><td>{_e(e['address'])}</td>"
            f'<td><span class="chip {e["grade"]}"></span>{e["grade"]} {GRADE_ZH[e["grade"]]}</td>'
            f"<td>{e['score']:.1f}</td><td>{why}</td></tr>"
        )
    flagged_table = _table(
        ["Registration code", "District", "Address", "Grade", "Score", "Top factors"],
        flagged_rows,
    ) + _more(len(flagged))

    od_counts: dict[str, list[int]] = {d: [0, 0] for d in data.districts}
    for r in data.overdue:
        od_counts[r["district"]][0] += bool(r["maintenance_overdue"])
        od_counts[r["district"]][1] += bool(r["inspection_overdue"])
    od_summary = _table(
        ["District 区县", "maintenance overdue", "inspection overdue"],
        [
            f"<tr><td>{district(d)}</td><td>{m}</td><td>{i}</td></tr>"
            for d, (m, i) in od_counts.items()
        ],
    )
    od_rows = [
        f'<tr><td class="code">{_e(r["registration_code"])}</td><td>{district(r["district"])}</td>'
        f"<td>{_e(r['address'])}</td><td>{_e(r['maintenance_company'])}</td>"
        f'<td class="{"no" if r["maintenance_overdue"] else ""}">'
        f"{_e(r['last_maintenance_on'])}</td>"
        f'<td class="{"no" if r["inspection_overdue"] else ""}">'
        f"{_e(r['last_inspection_on'])}</td></tr>"
        for r in data.overdue[:MAX_LIST_ROWS]
    ]
    od_table = _table(
        [
            "Registration code",
            "District",
            "Address",
            "Maintenance company",
            "Last maintenance",
            "Last inspection",
        ],
        od_rows,
    ) + _more(len(data.overdue))

    by_company = [r for r in data.rescue if r["by"] == "company"]
    rescue_by_district = [r for r in data.rescue if r["by"] == "district"]
    rescue_tables = (
        "<h3>By maintenance company 按维保单位</h3>"
        + _rescue_table(by_company, "Maintenance company 维保单位", _e)
        + "<h3>By district 按区县</h3>"
        + _rescue_table(rescue_by_district, "District 区县", district)
    )
    ranking_rows = [
        f"<tr><td>{_e(r['risk_rank'])}</td><td>{_e(r['rescue_rank'])}</td>"
        f"<td>{_e(r['maintenance_company'])}</td><td>{r['elevators']}</td>"
        f"<td>{r['red']}</td><td>{r['orange']}</td><td>{r['yellow']}</td><td>{r['blue']}</td>"
        f"<td>{_share(r['red_orange_share'])}</td><td>{_one_decimal(r['mean_risk_score'])}</td>"
        f"<td>{_one_decimal(r['trappings_per_100_elevator_years'])}</td>"
        f"<td>{_one_decimal(r['arrival_p90_min'])}</td><td>{_share(r['on_time_share'])}</td>"
        f"<td>{_share(r['false_alarm_share'])}</td></tr>"
        for r in data.ranking
    ]
    ranking_table = _table(
        [
            "risk rank",
            "rescue rank",
            "Maintenance company 维保单位",
            "elevators",
            "red",
            "orange",
            "yellow",
            "blue",
            "red + orange",
            "mean score",
            "trappings per 100 a year",
            "p90 arrival, min",
            "on time",
            "false-alarm share",
        ],
        ranking_rows,
    )
    history_rows = [
        f"<tr><td>{r['month'].astimezone(CITY_TZ):%Y-%m}</td><td>{district(r['district'])}</td>"
        f"<td>{r['red']}</td><td>{r['orange']}</td><td>{r['yellow']}</td><td>{r['blue']}</td>"
        f"<td>{r['worsened']}</td><td>{r['improved']}</td><td>{r['orange_to_red']}</td>"
        f"<td>{r['red_to_orange']}</td></tr>"
        for r in sorted(data.history, key=lambda r: (r["month"], r["district"]), reverse=True)
        if r["worsened"] or r["improved"] or r["red"] or r["orange"]
    ]
    history_table = _table(
        [
            "Month 月份",
            "District 区县",
            "red at month end",
            "orange",
            "yellow",
            "blue",
            "worsened",
            "improved",
            "orange → red",
            "red → orange",
        ],
        history_rows,
    )
    since = f"{data.since:%Y-%m-%d %H:%M} UTC" if data.since else "—"

    version = next(
        (e["factors"].get("weights_version") for e in data.elevators if e["factors"]), None
    )
    page = f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>Elevator risk report 电梯风险分级报告 — {data.at:%Y-%m-%d %H:%M} UTC</title>
<style>
body {{ font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 2em;
       color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left;
          vertical-align: top; }}
th {{ background: #f2f2f2; }}
tr.total td {{ font-weight: bold; background: #fafafa; }}
td.ok {{ color: #1b7f2a; }} td.no {{ color: #b00020; font-weight: bold; }}
td.na {{ color: #888; }} td.code {{ font-family: monospace; }}
.chip {{ display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em;
         border-radius: 2px; }}
{"".join(f".chip.{g} {{ background: {c}; }} " for g, c in GRADE_COLOURS.items())}
img {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head><body>
<h1>Elevator risk report 电梯风险分级报告</h1>
<p>Lianyungang, as of {data.at:%Y-%m-%d %H:%M} UTC (local date {data.today}).
Grades: red 重大, orange 较大, yellow 一般, blue 低; weights {_e(version)}.
A grade is explained by the points each factor added (README, "Risk grading").</p>
<h2>Risk heatmap 风险热力图</h2>
<img src="{html.escape(grid_map)}" alt="Risk heatmap on a grid of the city">
<h2>Grades by district 各区县风险等级</h2>
<img src="{html.escape(heatmap)}" alt="Elevators by risk grade and district">
{grades_table}
<h2>Elevators by grade 电梯分布</h2>
<img src="{html.escape(map_png)}" alt="Map of elevators coloured by risk grade">
<h2>Terminal coverage against the plan's targets 智能监测终端覆盖率</h2>
<p>Targets: at least 30 % of the elevators in every district, at least 90 % of the
residential elevators managed by property companies, at least 3,500 units city-wide.
Beside the terminals the registry declares, those that actually reported in the 24 hours
before the report was drawn (any message, heartbeats included), and the declared ones
silent all that time.</p>
{coverage_table}
<h2>Rescue performance 应急救援绩效</h2>
<p>Incidents opened from {since} to {data.at:%Y-%m-%d %H:%M} UTC. Trappings exclude false
alarms and are counted per 100 elevators with a terminal (only those report them) per year.
Arrival times run from the incident's opening to the rescuers' arrival on site, for incidents
routed to the rescue platform; on time is within the incident's arrival target (the plan's
30 minutes). False alarms: incidents closed as a false alarm, of all incidents.</p>
{rescue_tables}
<h2>Maintenance companies ranked 维保单位排名</h2>
<p>Risk rank 1: the highest mean risk score of the company's graded elevators, as of
{data.at:%Y-%m-%d %H:%M} UTC. Rescue rank 1: the poorest rescue — lowest on-time share, then
slowest p90 arrival, then most trappings; a company with no arrival on record is not ranked.</p>
{ranking_table}
<h2>Grade history 风险等级变化</h2>
<img src="{html.escape(history_png)}" alt="Grade history by month">
<p>Per district and month (Lianyungang's calendar): elevators holding each grade at the
month's end, and the elevators whose grade worsened, improved, or moved between orange and red
in the month. Months and districts with nothing red, orange or changed are left out.</p>
{history_table}
<h2>Red and orange elevators 重大、较大风险电梯 ({len(flagged)})</h2>
{flagged_table}
<h2>Overdue maintenance and inspections 维保、检验超期</h2>
<p>Maintenance at least every {data.maintenance_interval_days} days (TSG T5002-2017);
periodic inspection every {data.inspection_interval_days} days. Overdue as of
{data.today}; none on record counts as overdue.</p>
{od_summary}
{od_table}
</body></html>
"""
    path.write_text(page, encoding="utf-8")


@dataclass(frozen=True)
class ReportFiles:
    heatmap: Path
    map: Path
    html: Path
    grid_map: Path
    history: Path


def write_report(
    url: str, out: Path, at: dt.datetime, maint_days: int = 15, insp_days: int = 365
) -> ReportFiles:
    """Read as of ``at`` from ``url`` and write the three files into ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    data = read_report(url, at, maint_days, insp_days)
    files = ReportFiles(
        out / "grades_by_district.png",
        out / "elevators_by_grade.png",
        out / "index.html",
        out / "risk_grid_map.png",
        out / "grade_history.png",
    )
    render_grid_map(data, files.grid_map)
    render_heatmap(data, files.heatmap)
    render_map(data, files.map)
    render_history(data, files.history)
    render_html(
        data,
        files.html,
        files.heatmap.name,
        files.map.name,
        files.grid_map.name,
        files.history.name,
    )
    return files
