"""The regulators' figures (issue 16, parts 7 and 9) on a hand-built city in TimescaleDB:
rescue performance per maintenance company and per district, the companies ranked by risk
and by rescue, and grade history month by month — each figure worked out here by hand from
the incidents and grades inserted, and read as the regulator's role."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from dashboards.boards import all_boards, shared
from dashboards.check import check, panels_of
from dashboards.macros import TimeRange, Variable, interpolate
from dashboards.report import write_report
from foundation.settings import role_url
from registry.model import Elevator
from registry.store import upsert
from sql.migrate import migrate

from .registry_support import registry_elevator

A, B = "甲维保", "乙维保"
NONE = "(none recorded)"
#: The rescue range: 30 days of November 2026 (UTC).
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
END = START + dt.timedelta(days=30)
DAY, MINUTE = dt.timedelta(days=1), dt.timedelta(minutes=1)


def _elevator(n: int, district: str, company: str | None, terminal: bool = True) -> Elevator:
    return registry_elevator(
        n,
        district,
        code_base=32070000000000000000,
        address=f"连云港市测试路{n}号",
        installed_on=dt.date(2015, 1, 1),
        maintenance_company=company,
        maintenance_contact=None,
        last_maintenance_on=dt.date(2026, 11, 20),
        last_inspection_on=dt.date(2026, 6, 1),
        has_terminal=terminal,
    )


E1, E2, E3 = (_elevator(n, "Haizhou", A) for n in (1, 2, 3))
E4 = _elevator(4, "Haizhou", A, terminal=False)
E5 = _elevator(5, "Lianyun", A)
E6, E7 = (_elevator(n, "Lianyun", B) for n in (6, 7))
E8 = _elevator(8, "Ganyu", None)


def _incident(
    conn: psycopg.Connection,
    elevator: Elevator,
    fault_type: str,
    opened_at: dt.datetime,
    *,
    arrival: dt.timedelta | None = None,
    state: str = "resolved",
    route: str = "rescue",
    target_s: int = 1800,
) -> None:
    arrived_at = None if arrival is None else opened_at + arrival
    conn.execute(
        "INSERT INTO tianyan.incident (incident_id, elevator_id, fault_type, severity, state,"
        " opened_at, arrived_at, closed_at, updated_at, details, arrival_target_s)"
        " VALUES (%s, %s, %s, 'critical', %s, %s, %s, %s, %s, %s, %s)",
        [
            uuid.uuid4(),
            elevator.registration_code,
            fault_type,
            state,
            opened_at,
            arrived_at,
            opened_at + 2 * dt.timedelta(hours=1),
            opened_at + 2 * dt.timedelta(hours=1),
            Jsonb({"route": route}),
            target_s,
        ],
    )


def _grade(
    conn: psycopg.Connection, elevator: Elevator, at: dt.datetime, grade: str, score: float
) -> None:
    conn.execute(
        "INSERT INTO tianyan.risk_grade (elevator_id, graded_at, score, grade, factors)"
        " VALUES (%s, %s, %s, %s, %s)",
        [elevator.registration_code, at, score, grade, Jsonb({"factors": {}})],
    )


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.fixture
def city(scratch_db: str) -> str:
    """The hand-built city, its incidents and grades; the regulator's URL."""
    migrate(scratch_db)
    upsert(scratch_db, [E1, E2, E3, E4, E5, E6, E7, E8])
    with psycopg.connect(scratch_db) as conn:
        # company A: 3 trappings with arrivals after 10, 20 and 40 min, an overspeed
        # (rescue route) reached in exactly 30 min, a trapping closed as a false alarm, and
        # a maintenance-route incident without arrival
        _incident(conn, E1, "trapped_at_level", START + DAY, arrival=10 * MINUTE)
        _incident(conn, E2, "trapped_between_levels", START + 2 * DAY, arrival=20 * MINUTE)
        _incident(conn, E3, "trapped_at_level", START + 3 * DAY, arrival=40 * MINUTE)
        _incident(conn, E1, "trapped_at_level", START + 4 * DAY, state="false_alarm")
        _incident(conn, E2, "overspeed", START + 5 * DAY, arrival=30 * MINUTE)
        _incident(conn, E5, "repeated_door_reopening", START + 6 * DAY, route="maintenance")
        # company B: one trapping reached in 12 min against a 10-min target: late
        _incident(conn, E6, "trapped_at_level", START + 7 * DAY, arrival=12 * MINUTE, target_s=600)
        # outside the range: before it, and at its (exclusive) end
        _incident(conn, E1, "trapped_at_level", START - DAY, arrival=90 * MINUTE)
        _incident(conn, E6, "trapped_at_level", END, arrival=90 * MINUTE)

        _grade(conn, E1, _utc(2026, 10, 5), "blue", 10)
        _grade(conn, E1, _utc(2026, 10, 20), "orange", 60)
        _grade(conn, E1, _utc(2026, 11, 3), "red", 80)
        _grade(conn, E1, _utc(2026, 11, 10), "orange", 65)
        _grade(conn, E1, _utc(2026, 11, 20), "red", 85)
        _grade(conn, E2, _utc(2026, 10, 10), "orange", 60)
        # 04:00 on 1 November in Lianyungang: a November change
        _grade(conn, E2, _utc(2026, 10, 31, 20), "red", 75)
        _grade(conn, E3, _utc(2026, 10, 2), "blue", 10)
        _grade(conn, E5, _utc(2026, 10, 3), "yellow", 30)
        _grade(conn, E6, _utc(2026, 10, 15), "red", 70)
        _grade(conn, E6, _utc(2026, 10, 25), "orange", 55)
        _grade(conn, E7, _utc(2026, 10, 4), "blue", 5)
        _grade(conn, E7, _utc(2026, 12, 2), "red", 95)  # after the range: not counted
        _grade(conn, E8, _utc(2026, 10, 6), "red", 90)
    return role_url(scratch_db, "tianyan_regulator")


def _rows(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, list(params)).fetchall()


def _performance(url: str, districts: list[str] | None = None) -> dict[tuple[str, str], dict]:
    rows = _rows(url, "SELECT * FROM tianyan.rescue_performance(%s, %s, %s)", START, END, districts)
    return {(r.pop("by"), r.pop("name")): r for r in rows}


YEAR_OVER_RANGE = 365 / 30


def test_rescue_performance_per_company_and_district(city: str) -> None:
    p = _performance(city)
    assert set(p) == {
        ("company", A),
        ("company", B),
        ("company", NONE),
        ("district", "Haizhou"),
        ("district", "Lianyun"),
        ("district", "Ganyu"),
    }
    a = p[("company", A)]
    # 3 trappings (the false alarm is none) over 4 monitored elevators (E4 has no terminal)
    assert (a["elevators"], a["monitored_elevators"], a["trappings"]) == (5, 4, 3)
    assert a["trappings_per_100_elevator_years"] == pytest.approx(3 * 100 / 4 * YEAR_OVER_RANGE)
    # rescue route: 3 trappings, the false alarm, the overspeed; arrivals 10, 20, 30, 40 min
    assert (a["rescue_incidents"], a["arrivals"]) == (5, 4)
    assert a["arrival_p50_min"] == pytest.approx(25.0)
    assert a["arrival_p90_min"] == pytest.approx(37.0)  # 30 + 0.7 × (40 − 30)
    assert (a["on_time"], a["on_time_share"]) == (3, pytest.approx(0.75))  # 30 min is on time
    assert (a["incidents"], a["false_alarms"]) == (6, 1)
    assert a["false_alarm_share"] == pytest.approx(1 / 6)

    b = p[("company", B)]
    assert b["trappings_per_100_elevator_years"] == pytest.approx(1 * 100 / 2 * YEAR_OVER_RANGE)
    assert (b["arrivals"], b["arrival_p50_min"], b["arrival_p90_min"]) == (1, 12.0, 12.0)
    # the incident's own 10-minute target, not 30
    assert (b["on_time"], b["on_time_share"]) == (0, 0.0)
    assert (b["incidents"], b["false_alarms"], b["false_alarm_share"]) == (1, 0, 0.0)

    none = p[("company", NONE)]
    assert (none["elevators"], none["trappings"], none["trappings_per_100_elevator_years"]) == (
        1,
        0,
        0.0,
    )
    assert none["arrival_p50_min"] is None and none["on_time_share"] is None
    assert none["false_alarm_share"] is None

    h = p[("district", "Haizhou")]
    assert (h["elevators"], h["monitored_elevators"], h["trappings"]) == (4, 3, 3)
    assert h["trappings_per_100_elevator_years"] == pytest.approx(100 * YEAR_OVER_RANGE)
    assert (h["arrival_p50_min"], h["arrival_p90_min"]) == (pytest.approx(25), pytest.approx(37))
    assert (h["incidents"], h["false_alarms"]) == (5, 1)
    lianyun = p[("district", "Lianyun")]
    assert (lianyun["trappings"], lianyun["incidents"], lianyun["rescue_incidents"]) == (1, 2, 1)
    assert lianyun["on_time_share"] == 0.0


def test_rescue_performance_of_chosen_districts_and_a_bad_range(city: str) -> None:
    p = _performance(city, ["Lianyun"])
    assert set(p) == {("company", A), ("company", B), ("district", "Lianyun")}
    a = p[("company", A)]  # only E5, with its maintenance-route incident
    assert (a["elevators"], a["trappings"], a["rescue_incidents"], a["incidents"]) == (1, 0, 0, 1)
    with pytest.raises(psycopg.errors.RaiseException, match="must end after it starts"):
        _rows(city, "SELECT * FROM tianyan.rescue_performance(%s, %s)", END, START)


def test_companies_ranked_by_risk_and_by_rescue(city: str) -> None:
    rows = _rows(city, "SELECT * FROM tianyan.maintenance_company_ranking(%s, %s)", START, END)
    by = {r["maintenance_company"]: r for r in rows}
    # grades as of the end: A holds 85, 75, 10, 30 (E4 ungraded); B 55, 5 (E7's red comes later)
    assert [r["maintenance_company"] for r in rows] == [NONE, A, B]  # by risk rank
    a, b, none = by[A], by[B], by[NONE]
    assert (a["elevators"], a["graded"], a["red"], a["orange"], a["yellow"], a["blue"]) == (
        5,
        4,
        2,
        0,
        1,
        1,
    )
    assert a["mean_risk_score"] == pytest.approx(50.0)
    assert a["red_orange_share"] == pytest.approx(0.5)
    assert (b["mean_risk_score"], b["orange"], b["red"]) == (pytest.approx(30.0), 1, 0)
    assert (none["risk_rank"], a["risk_rank"], b["risk_rank"]) == (1, 2, 3)
    # rescue: B on time 0 of 1 is poorer than A's 3 of 4; no arrival, no rescue rank
    assert (b["rescue_rank"], a["rescue_rank"], none["rescue_rank"]) == (1, 2, None)
    assert a["on_time_share"] == pytest.approx(0.75) and a["arrival_p90_min"] == pytest.approx(37)


def test_grade_history_month_by_month_in_the_citys_months(city: str) -> None:
    start = dt.datetime(2026, 10, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    end = dt.datetime(2026, 12, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    rows = _rows(city, "SELECT * FROM tianyan.grade_history(%s, %s)", start, end)
    got = {
        (r["month"].astimezone(start.tzinfo).strftime("%Y-%m"), r["district"]): (
            r["red"],
            r["orange"],
            r["yellow"],
            r["blue"],
            r["worsened"],
            r["improved"],
            r["orange_to_red"],
            r["red_to_orange"],
        )
        for r in rows
    }
    assert got == {
        # E1 blue → orange; E2 first graded orange; E3 blue
        ("2026-10", "Haizhou"): (0, 2, 0, 1, 1, 0, 0, 0),
        # E1 orange → red → orange → red, E2 orange → red (04:00 on 1 Nov, local)
        ("2026-11", "Haizhou"): (2, 0, 0, 1, 2, 1, 2, 1),
        # E6 red → orange
        ("2026-10", "Lianyun"): (0, 1, 1, 1, 0, 1, 0, 1),
        ("2026-11", "Lianyun"): (0, 1, 1, 1, 0, 0, 0, 0),
        ("2026-10", "Ganyu"): (1, 0, 0, 0, 0, 0, 0, 0),
        ("2026-11", "Ganyu"): (1, 0, 0, 0, 0, 0, 0, 0),
    }
    only = _rows(city, "SELECT * FROM tianyan.grade_history(%s, %s, %s)", start, end, ["Haizhou"])
    assert {r["district"] for r in only} == {"Haizhou"} and len(only) == 2


def test_the_report_shows_the_figures_of_the_year_before_it(city: str, tmp_path: Path) -> None:
    files = write_report(city, tmp_path / "report", END)
    for png in (files.grid_map, files.heatmap, files.map, files.history):
        assert png.stat().st_size > 15_000, png
        assert Image.open(png).format == "PNG"
    page = files.html.read_text(encoding="utf-8")
    rescue = page.split("<h2>Rescue performance")[1].split("<h2>")[0]
    by_company = rescue.split("By district")[0]
    # the year before END adds E1's trapping of 31 October, reached in 90 min: A's arrivals
    # are 10, 20, 30, 40, 90 min; 4 trappings over 4 monitored elevators in 365 days
    assert (
        f"<tr><td>{A}</td><td>5</td><td>4</td><td>4</td><td>100.0</td><td>5</td><td>30.0</td>"
        "<td>70.0</td><td>60.0 %</td><td>1 of 7</td><td>14.3 %</td></tr>"
    ) in by_company
    assert f"<tr><td>{NONE}</td><td>1</td><td>1</td><td>0</td><td>0.0</td><td>0</td>" in by_company
    assert "<td>Haizhou 海州区</td><td>4</td><td>3</td><td>4</td>" in rescue.split("By district")[1]
    ranking = page.split("<h2>Maintenance companies ranked")[1].split("<h2>")[0]
    assert ranking.index(NONE) < ranking.index(A) < ranking.index(B)
    assert f"<tr><td>3</td><td>1</td><td>{B}</td>" in ranking
    history = page.split("<h2>Grade history")[1].split("<h2>")[0]
    assert (
        "<tr><td>2026-11</td><td>Haizhou 海州区</td><td>2</td><td>0</td><td>0</td><td>1</td>"
        "<td>2</td><td>1</td><td>2</td><td>1</td></tr>"
    ) in history
    # a month with nothing red, orange or changed is left out
    assert "<td>2026-09</td>" not in history


# -- the boards ---------------------------------------------------------------------------------
def _board_json(uid: str) -> dict[str, Any]:
    return next(b for b in all_boards() if b.uid == uid).to_json()


def test_every_supervision_panel_follows_the_district_filter() -> None:
    board = _board_json(shared.SUPERVISION)
    district = next(v for v in board["templating"]["list"] if v["name"] == "district")
    assert district["multi"] and district["includeAll"]
    panels = list(panels_of(board))
    assert len(panels) >= 11
    for panel in panels:
        assert "$district" in panel["targets"][0]["rawSql"], panel["title"]


def test_the_boards_show_the_functions_figures(scratch_db: str, city: str) -> None:
    shown: dict[str, list[dict[str, Any]]] = {}

    def keep(panel: Any, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        shown[panel["title"]] = [dict(zip(columns, r, strict=True)) for r in rows]

    boards = [b for b in all_boards() if b.uid in (shared.RESCUE, shared.SUPERVISION)]
    results = check(boards, scratch_db, TimeRange(START, END), on_rows=keep)
    assert [r.describe() for r in results if not r.ok] == []
    company = {
        r["maintenance_company"]: r
        for r in shown[
            "Rescue performance by maintenance company, 365 days to the end of the range"
        ]
    }
    # the boards look at the year to the range's end, as the report does: 70 min as there
    assert company[A]["arrival_p90_min"] == pytest.approx(70.0)
    assert company[B]["on_time_share"] == 0.0
    ranking = shown[
        "Maintenance companies ranked by risk and by rescue, 365 days to the end of the range"
    ]
    assert [(r["maintenance_company"], r["risk_rank"], r["rescue_rank"]) for r in ranking] == [
        (NONE, 1, None),
        (A, 2, 2),
        (B, 3, 1),
    ]
    assert ranking[1]["arrival_p90_min"] == pytest.approx(70.0)
    # grade history: the 12 months to the end of November; E1 and E2 turned red in November
    changes = {
        r["time"].astimezone(dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m"): r
        for r in shown["Grade changes by month, 12 months to the end of the range"]
    }
    assert (changes["2026-11"]["worsened"], changes["2026-11"]["orange_to_red"]) == (2, 2)
    assert changes["2026-10"]["red_to_orange"] == 1  # E6


def test_the_district_filter_reaches_the_figures(city: str) -> None:
    board = _board_json(shared.SUPERVISION)
    panel = next(
        p for p in panels_of(board) if p["title"].startswith("Maintenance companies ranked")
    )
    lianyun = {"district": Variable("district", ("Lianyun",), multi=True, include_all=True)}
    sql = interpolate(panel["targets"][0]["rawSql"], TimeRange(START, END), lianyun)
    rows = {r["maintenance_company"]: r for r in _rows(city, sql)}
    # in Lianyun, A has only E5 (yellow), B its two
    assert set(rows) == {A, B}
    assert (rows[A]["elevators"], rows[A]["mean_risk_score"], rows[A]["arrivals"]) == (1, 30.0, 0)
    assert rows[B]["elevators"] == 2
