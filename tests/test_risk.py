"""Risk grading: pure scoring, grading a hand-built registry in TimescaleDB (history,
idempotence, the lock), the coverage views, and ``tianyan report``."""

from __future__ import annotations

import datetime as dt
import doctest
import json
import re
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from PIL import Image
from psycopg.types.json import Jsonb

import detectors.risk
from dashboards.report import write_report
from detectors.risk import (
    GRADE_ZH,
    RiskInputError,
    RiskInputs,
    alert_category,
    assess,
    weights_version,
)
from detectors.thresholds import ThresholdError, Thresholds
from foundation.settings import Settings, role_url
from registry.model import Elevator
from registry.store import upsert
from sql.migrate import migrate
from streams.grading import GRADING_LOCK_KEY, GradingError, grade_fleet
from tianyan.cli import main

from .registry_support import registry_elevator

TH = Thresholds()
AT = dt.datetime(2026, 11, 2, 8, 15, tzinfo=dt.UTC)  # 16:15 in Lianyungang, 2 Nov 2026


def points(result: detectors.risk.RiskAssessment) -> dict[str, float]:
    return {f.name: f.points for f in result.factors}


# -- pure scoring ----------------------------------------------------------------------------
def test_docstring_examples_hold() -> None:
    assert doctest.testmod(detectors.risk).failed == 0


def test_a_clean_elevator_is_blue_with_nothing_to_explain() -> None:
    r = assess(
        RiskInputs(
            elevator_id="1" * 20,
            age_years=6.0,
            days_since_maintenance=5,
            days_since_inspection=200,
            has_terminal=True,
        ),
        TH,
    )
    assert (r.score, r.grade, r.grade_zh) == (0.0, "blue", "低")
    assert r.top_factors() == []
    assert set(points(r)) == {
        "trapping",
        "critical_faults",
        "major_faults",
        "minor_faults",
        "degradation",
        "anomalies",
        "age",
        "maintenance",
        "inspection",
        "terminal",
    }
    assert all(p == 0 for p in points(r).values())


def test_each_factor_explains_its_points() -> None:
    r = assess(
        RiskInputs(
            elevator_id="1" * 20,
            trappings=1,
            critical_faults=1,
            major_faults=2,
            minor_faults=3,
            degradations=1,
            anomalies=4,
            age_years=18.4,
            days_since_maintenance=20,
            days_since_inspection=400,
            has_terminal=True,
        ),
        TH,
    )
    assert points(r) == {
        "trapping": 25.0,
        "critical_faults": 15.0,
        "major_faults": 10.0,
        "minor_faults": 3.0,
        "degradation": 5.0,
        "anomalies": 2.0,
        "age": 10.0,
        "maintenance": 10.0,
        "inspection": 15.0,
        "terminal": 0.0,
    }
    assert r.score == 95.0 and r.grade == "red"
    by_name = {f.name: f for f in r.factors}
    assert by_name["trapping"].reason == "1 trapping in 30 days"
    assert by_name["major_faults"].reason == "2 major faults in 30 days"
    assert by_name["anomalies"].reason == "4 trip anomalies in 30 days"
    assert by_name["age"].reason == "18.4 years old (old: > 15)"
    assert by_name["maintenance"].reason == "last 20 days ago, overdue (every 15 days)"
    assert by_name["inspection"].reason == "last 400 days ago, overdue (every 365 days)"
    assert [f.name for f in r.top_factors(2)] == ["trapping", "critical_faults"]


def test_factors_are_capped_and_the_score_at_100() -> None:
    r = assess(
        RiskInputs(
            elevator_id="1" * 20,
            trappings=5,
            critical_faults=4,
            major_faults=10,
            minor_faults=50,
            degradations=7,
            anomalies=40,
            has_terminal=False,
        ),
        TH,
    )
    p = points(r)
    assert (p["trapping"], p["critical_faults"], p["major_faults"]) == (50.0, 30.0, 20.0)
    assert (p["minor_faults"], p["degradation"], p["anomalies"]) == (5.0, 10.0, 5.0)
    assert r.score == 100.0 and r.grade == "red"


@pytest.mark.parametrize(
    ("inputs", "score", "grade"),
    [
        # one trapping, old, maintenance a cycle late
        (dict(trappings=1, age_years=18.0, days_since_maintenance=20), 45.0, "orange"),
        # two trappings and anything else: red
        (dict(trappings=2, days_since_maintenance=16), 60.0, "red"),
        # compliance lapses alone stop short of red: nothing on record, no terminal
        (
            dict(
                has_terminal=False,
                age_years=None,
                days_since_maintenance=None,
                days_since_inspection=None,
            ),
            55.0,
            "orange",
        ),
        # maintenance lapsed (two cycles) alone: yellow
        (dict(days_since_maintenance=31), 20.0, "yellow"),
        # exactly two cycles is still only overdue
        (dict(days_since_maintenance=30), 10.0, "blue"),
        # 15 years is not yet "old"
        (dict(age_years=15.0), 0.0, "blue"),
        (dict(anomalies=3, minor_faults=2), 3.5, "blue"),
    ],
)
def test_expected_grades(inputs: dict, score: float, grade: str) -> None:
    defaults = dict(
        age_years=5.0, days_since_maintenance=3, days_since_inspection=100, has_terminal=True
    )
    r = assess(RiskInputs(elevator_id="1" * 20, **{**defaults, **inputs}), TH)
    assert (r.score, r.grade) == (score, grade)


def test_unknown_dates_count_against_theregistry_elevator() -> None:
    r = assess(RiskInputs(elevator_id="1" * 20), TH)
    by_name = {f.name: f for f in r.factors}
    assert by_name["age"].reason == "installation date unknown: taken as old"
    assert by_name["maintenance"].reason == "no maintenance on record"
    assert by_name["inspection"].reason == "no inspection on record"
    assert r.score == 45.0 and r.grade == "orange"


def test_alerts_are_counted_by_category() -> None:
    r = RiskInputs.from_alerts(
        "1" * 20,
        [
            ("trapped_between_levels", "critical", 1),
            ("trapped_at_level", "critical", 2),
            ("overspeed", "critical", 1),
            ("run_time_limiter", "major", 2),
            ("overload", "minor", 4),
            ("leveling_drift", "minor", 1),
            ("door_operator_wear", "minor", 1),
            ("trip_anomaly", "info", 6),
            ("something_informative", "info", 9),
        ],
        has_terminal=True,
    )
    assert (r.trappings, r.critical_faults, r.major_faults, r.minor_faults) == (3, 1, 2, 4)
    assert (r.degradations, r.anomalies) == (2, 6)
    assert alert_category("something_informative", "info") is None


def test_weights_and_cut_offs_are_configurable() -> None:
    strict = Thresholds.from_mapping({"risk_yellow_min_score": 5, "risk_trapping_points": 40})
    r = assess(
        RiskInputs(
            elevator_id="1" * 20,
            trappings=1,
            age_years=1,
            days_since_maintenance=1,
            days_since_inspection=1,
        ),
        strict,
    )
    assert (r.score, r.grade) == (40.0, "orange")
    assert weights_version(strict) != weights_version(TH)
    assert r.factors_json()["weights_version"] == weights_version(strict)
    with pytest.raises(ThresholdError, match="risk grade cut-offs"):
        Thresholds(risk_orange_min_score=70)  # above red's 60
    with pytest.raises(ThresholdError, match="risk_tapping_points: unknown"):
        Thresholds.from_mapping({"risk_tapping_points": 1})
    with pytest.raises(RiskInputError, match="trappings = -1 is negative"):
        RiskInputs(elevator_id="1" * 20, trappings=-1)


def test_the_explanation_is_plain_json() -> None:
    r = assess(RiskInputs(elevator_id="1" * 20, trappings=1, has_terminal=False), TH)
    stored = json.loads(json.dumps(r.factors_json()))
    assert stored["window_days"] == 30
    assert stored["factors"]["trapping"] == {
        "value": 1,
        "points": 25.0,
        "reason": "1 trapping in 30 days",
    }
    assert stored["factors"]["terminal"]["value"] is False


# -- grading a hand-built registry -------------------------------------------------------------
CLEAN = registry_elevator(1, "Haizhou")
TRAPPED = registry_elevator(
    2,
    "Haizhou",
    installed_on=dt.date(2008, 5, 1),
    last_maintenance_on=dt.date(2026, 10, 13),
)
RED = registry_elevator(
    3,
    "Lianyun",
    building_type="office",
    property_managed=False,
    address="连云港市连云区<测试>&路3号",
)
UNRECORDED = registry_elevator(
    4,
    "Lianyun",
    installed_on=None,
    last_maintenance_on=None,
    last_inspection_on=None,
    has_terminal=False,
)
LAPSED = registry_elevator(5, "Lianyun", last_maintenance_on=dt.date(2026, 9, 20))
UNCOVERED = registry_elevator(
    6,
    "Ganyu",
    building_type="mall",
    property_managed=False,
    has_terminal=False,
)
REGISTRY = [CLEAN, TRAPPED, RED, UNRECORDED, LAPSED, UNCOVERED]


def _alert(
    conn: psycopg.Connection,
    elevator: Elevator,
    alert_type: str,
    severity: str,
    raised_at: dt.datetime,
    state: str = "raised",
) -> None:
    key = f"{elevator.registration_code}:{alert_type}:{int(raised_at.timestamp() * 1000)}"
    conn.execute(
        "INSERT INTO tianyan.alert (alert_id, alert_key, raised_at, condition_since, elevator_id,"
        " alert_type, severity, detector, evidence, state)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, 'rules', %s, %s)",
        [
            uuid.uuid4(),
            key,
            raised_at,
            raised_at,
            elevator.registration_code,
            alert_type,
            severity,
            Jsonb({}),
            state,
        ],
    )


def _grade_inputs(url: str) -> None:
    """The hand-built registry with its alerts, in the migrated database at ``url``."""
    upsert(url, REGISTRY)
    day = dt.timedelta(days=1)
    with psycopg.connect(url) as conn:
        _alert(conn, TRAPPED, "trapped_between_levels", "critical", AT - 2 * day)
        # its clearing is the same condition: it must not count twice
        _alert(conn, TRAPPED, "trapped_between_levels", "critical", AT - 2 * day, "cleared")
        _alert(conn, TRAPPED, "trip_anomaly", "info", AT - 3 * day)
        _alert(conn, RED, "trapped_at_level", "critical", AT - 1 * day)
        _alert(conn, RED, "trapped_at_level", "critical", AT - 5 * day)
        _alert(conn, RED, "overspeed", "critical", AT - 6 * day)
        _alert(conn, RED, "stopped_outside_door_zone", "major", AT - 6 * day)
        # outside the 30-day window, and after the grading time: neither counts
        _alert(conn, RED, "trapped_at_level", "critical", AT - 31 * day)
        _alert(conn, CLEAN, "trapped_at_level", "critical", AT + dt.timedelta(hours=2))


@pytest.fixture
def graded_city(scratch_db: str) -> str:
    """The hand-built registry with its alerts, migrated; the owner URL."""
    migrate(scratch_db)
    _grade_inputs(scratch_db)
    return scratch_db


def _rows(url: str, elevator: Elevator) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT graded_at, score, grade, factors FROM tianyan.risk_grade"
            " WHERE elevator_id = %s ORDER BY graded_at",
            [elevator.registration_code],
        ).fetchall()


def test_grade_fleet_grades_explains_and_keeps_history_on_change_only(graded_city: str) -> None:
    writer = role_url(graded_city, "tianyan_writer")
    first = grade_fleet(writer, AT)
    assert first.elevators == 6 and first.written == 6 and first.grade_changes == 0
    assert first.grades == {"red": 1, "orange": 2, "yellow": 1, "blue": 2}

    expected = {
        # 25 trapping + 10 old + 10 maintenance 20 days ago + 0.5 anomaly
        TRAPPED: (45.5, "orange"),
        # 2 × 25 trapping + 15 overspeed + 5 stopped outside the door zone
        RED: (70.0, "red"),
        # age unknown 10 + no maintenance 20 + no inspection 15 + no terminal 10
        UNRECORDED: (55.0, "orange"),
        # maintenance 43 days ago: lapsed
        LAPSED: (20.0, "yellow"),
        CLEAN: (0.0, "blue"),
        UNCOVERED: (10.0, "blue"),
    }
    for elevator, (score, grade) in expected.items():
        [(graded_at, got_score, got_grade, factors)] = _rows(graded_city, elevator)
        assert (graded_at, got_score, got_grade) == (AT, score, grade), elevator.address
        assert factors["weights_version"] == first.weights_version
    factors = _rows(graded_city, TRAPPED)[0][3]["factors"]
    assert factors["trapping"] == {"value": 1, "points": 25.0, "reason": "1 trapping in 30 days"}
    assert factors["anomalies"]["value"] == 1
    assert factors["age"]["value"] == 18.5 and factors["age"]["points"] == 10.0
    assert factors["maintenance"]["value"] == 20
    red = _rows(graded_city, RED)[0][3]["factors"]
    assert (red["trapping"]["value"], red["critical_faults"]["value"]) == (2, 1)
    assert red["major_faults"]["value"] == 1

    # the same time again: nothing new
    again = grade_fleet(writer, AT)
    assert again.written == 0 and again.grades == first.grades

    # a trapping in LAPSED's car: only its grade changes, one new row
    later = AT + dt.timedelta(hours=1)
    with psycopg.connect(graded_city) as conn:
        _alert(conn, LAPSED, "trapped_at_level", "critical", AT + dt.timedelta(minutes=10))
    second = grade_fleet(writer, later)
    assert (second.written, second.grade_changes) == (1, 1)
    history = _rows(graded_city, LAPSED)
    assert [(r[0], r[1], r[2]) for r in history] == [(AT, 20.0, "yellow"), (later, 45.0, "orange")]
    for elevator in (CLEAN, TRAPPED, RED, UNRECORDED, UNCOVERED):
        assert len(_rows(graded_city, elevator)) == 1

    # graded as of the first time again: history as it stood then, nothing written
    assert grade_fleet(writer, AT).written == 0

    regulator = role_url(graded_city, "tianyan_regulator")
    with psycopg.connect(regulator) as conn:
        current = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT elevator_id, graded_at, grade, grade_zh, grade_rank, top_factor,"
                " top_factor_points, district FROM tianyan.current_risk_grade"
            )
        }
        heat = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT district, red, orange, yellow, blue, graded, ungraded"
                " FROM tianyan.district_risk_grade"
            )
        }
    assert current[LAPSED.registration_code] == (
        later,
        "orange",
        "较大",
        2,
        "trapping",
        25.0,
        "Lianyun",
    )
    assert current[RED.registration_code][1:5] == ("red", "重大", 1, "trapping")
    assert current[CLEAN.registration_code][4] is None  # nothing contributes
    assert current[UNRECORDED.registration_code][4] == "maintenance"
    assert heat == {
        "Haizhou": (0, 1, 0, 1, 2, 0),
        "Lianyun": (1, 2, 0, 0, 3, 0),
        "Ganyu": (0, 0, 0, 1, 1, 0),
    }


def test_grading_waits_or_skips_while_another_grades(graded_city: str) -> None:
    writer = role_url(graded_city, "tianyan_writer")
    with psycopg.connect(graded_city) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [GRADING_LOCK_KEY])
        skipped = grade_fleet(writer, AT, skip_if_busy=True)
        assert skipped.skipped and skipped.written == 0 and skipped.elevators == 0
        holder.execute("SELECT pg_advisory_unlock(%s)", [GRADING_LOCK_KEY])
    done = grade_fleet(writer, AT, skip_if_busy=True)
    assert not done.skipped and done.written == 6
    with pytest.raises(GradingError, match="has no time zone"):
        grade_fleet(writer, AT.replace(tzinfo=None))


def test_district_coverage_against_the_targets(graded_city: str) -> None:
    regulator = role_url(graded_city, "tianyan_regulator")
    with psycopg.connect(regulator) as conn:
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT district, elevators, with_terminal, terminal_share, terminal_target_met,"
                " managed_residential, managed_residential_with_terminal,"
                " managed_residential_share, managed_residential_target_met"
                " FROM tianyan.district_coverage"
            )
        }
        city = conn.execute(
            "SELECT elevators, with_terminal, terminal_share, units_target, units_target_met,"
            " managed_residential, managed_residential_with_terminal, managed_residential_share,"
            " managed_residential_target_met, districts, districts_meeting_terminal_target"
            " FROM tianyan.city_coverage"
        ).fetchone()
    assert rows["Haizhou"] == (2, 2, 1.0, True, 2, 2, 1.0, True)
    assert rows["Lianyun"] == (3, 2, pytest.approx(2 / 3), True, 2, 1, 0.5, False)
    # no managed residential elevators: no share, target not applicable
    assert rows["Ganyu"] == (1, 0, 0.0, False, 0, 0, None, None)
    assert city == (6, 4, pytest.approx(4 / 6), 3500, False, 4, 3, 0.75, False, 3, 2)


def test_report_of_the_hand_built_city_escapes_and_counts(graded_city: str, tmp_path: Path) -> None:
    grade_fleet(role_url(graded_city, "tianyan_writer"), AT)
    files = write_report(role_url(graded_city, "tianyan_regulator"), tmp_path / "r", AT)
    page = files.html.read_text(encoding="utf-8")
    assert "连云港市连云区&lt;测试&gt;&amp;路3号" in page and "<测试>" not in page
    # red and orange elevators listed with their top factors
    flagged = page.split("Red and orange elevators")[1].split("<h2>")[0]
    for e in (RED, TRAPPED, UNRECORDED):
        assert e.registration_code in flagged
    assert CLEAN.registration_code not in flagged and LAPSED.registration_code not in flagged
    assert "trapping +50: 2 trappings in 30 days" in flagged
    # overdue: LAPSED's maintenance (43 days), UNRECORDED's everything
    overdue = page.split("Overdue maintenance and inspections")[1]
    assert LAPSED.registration_code in overdue and UNRECORDED.registration_code in overdue
    assert CLEAN.registration_code not in overdue
    assert re.search(r"<td>City 全市</td><td>1</td><td>2</td><td>1</td><td>2</td>", page)


def test_tianyan_grade_prints_the_summary(graded_city: str) -> None:
    env = {"TIANYAN_DATABASE_URL": role_url(graded_city, "tianyan_writer")}
    result = CliRunner().invoke(main, ["grade", "--at", "2026-11-02T08:15:00"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "graded 6 elevators as of 2026-11-02T08:15:00+00:00"
    assert re.fullmatch(r"\s*red\s+重大\s+1", lines[1])
    summary = json.loads(lines[-1])
    assert summary["written"] == 6 and summary["grades"] == {
        "red": 1,
        "orange": 2,
        "yellow": 1,
        "blue": 2,
    }
    bad = CliRunner().invoke(main, ["grade", "--at", "2 Nov"], env=env)
    assert bad.exit_code != 0 and "--at" in bad.output


def test_role_url_swaps_the_user_only() -> None:
    assert (
        role_url("postgresql://tianyan:secret@db.example:5432/tianyan?sslmode=require", "r")
        == "postgresql://r@db.example:5432/tianyan?sslmode=require"
    )
    assert role_url("postgresql://127.0.0.1:55432/x", "r") == "postgresql://r@127.0.0.1:55432/x"


# -- the report on the simulated city -------------------------------------------------------------
def _check_png(path: Path, min_colours: int) -> Image.Image:
    assert path.stat().st_size > 15_000, path
    image = Image.open(path)
    assert image.format == "PNG"
    assert image.width >= 600 and image.height >= 500, image.size
    rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) >= min_colours, path
    return rgb


def _has_colour(image: Image.Image, hex_colour: str, tolerance: int = 12) -> bool:
    want = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    colours = image.getcolors(maxcolors=1_000_000) or []
    return any(
        all(abs(a - b) <= tolerance for a, b in zip(c, want, strict=True)) for _, c in colours
    )


@pytest.mark.slow
def test_report_on_the_city_run(city_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # city_run graded itself as of its end; grading again is a no-op
    assert grade_fleet(city_run.writer_url, city_run.end).written == 0
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        [
            "report",
            "--out",
            str(out),
            "--at",
            city_run.end.strftime("%Y-%m-%dT%H:%M:%S"),
            "--database-url",
            city_run.regulator_url,
        ],
    )
    assert result.exit_code == 0, result.output
    heat = _check_png(out / "grades_by_district.png", min_colours=50)
    assert _has_colour(heat, "#1f77b4")  # the fullest blue cell
    _check_png(out / "elevators_by_grade.png", min_colours=50)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="grades_by_district.png"' in page and 'src="elevators_by_grade.png"' in page
    for district in {e.district for e in city_run.elevators}:
        assert district in page
    for zh in GRADE_ZH.values():
        assert zh in page
    total = len(city_run.elevators)
    assert re.search(rf"<td>City 全市</td>(<td>\d+</td>){{5}}<td>{total}</td>", page)

    # every car that trapped someone in the run carries it in its grade
    with psycopg.connect(city_run.regulator_url) as conn:
        trapped = {
            r[0]
            for r in conn.execute(
                "SELECT elevator_id FROM tianyan.alert WHERE state = 'raised'"
                " AND alert_type IN ('trapped_between_levels', 'trapped_at_level')"
            )
        }
        grades = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT elevator_id, grade, factors -> 'factors' -> 'trapping' -> 'value'"
                " FROM tianyan.current_risk_grade"
            )
        }
    assert len(grades) == total
    assert trapped, "the city run injects trappings"
    for elevator_id in trapped:
        grade, trappings = grades[elevator_id]
        assert grade != "blue" and trappings >= 1, elevator_id


# -- the worker's timer ---------------------------------------------------------------------------
@pytest.mark.slow
def test_the_worker_grades_on_its_timer_unless_another_holds_the_lock(
    settings: Settings, tmp_path: Path
) -> None:
    import time

    from tianyan.harness import pipeline

    name = f"tianyan_test_risk_{uuid.uuid4().hex[:8]}"
    with pipeline(settings, name, tmp_path, partitions=1, grading_interval_s=1) as run:
        _grade_inputs(run.admin_url)

        def graded_since(t: dt.datetime) -> int:
            return int(run.scalar("SELECT count(*) FROM risk_grade WHERE graded_at >= %s", t))

        started = dt.datetime.now(dt.UTC)
        with psycopg.connect(run.admin_url) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", [GRADING_LOCK_KEY])
            run.start_worker()
            # another process grading: once the worker is up, its timer's turns are skipped
            time.sleep(3.0)  # three turns of the 1-s timer
            assert graded_since(started) == 0
            holder.execute("SELECT pg_advisory_unlock(%s)", [GRADING_LOCK_KEY])
            graded = run.wait(
                lambda: graded_since(started),
                lambda n: n >= len(REGISTRY),
                "the worker's timer grading the fleet",
            )
    assert graded == len(REGISTRY)
