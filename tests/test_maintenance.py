"""Maintenance visits, measured (issue 16 part 6) and the simulator's service modes (issue 14
part 4): the session fold with explicit timestamps, the scenario keys, and one run on the
real stack — simulator → Kafka → worker → ``maintenance_session``, ``maintenance_overdue``
alerts, the risk grade and the maintenance board."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

import simulator
from dashboards.boards import maintenance as maintenance_board
from dashboards.check import check_board
from dashboards.macros import TimeRange
from detectors import ElevatorLimits, SafetyRules, Thresholds
from detectors.testing import ELEVATOR_ID, car, message
from foundation.records import MaintenanceSession
from foundation.settings import Settings
from registry.generate import generate
from registry.store import upsert
from simulator.scenario import Scenario, ScenarioError
from streams.grading import grade_fleet
from streams.maintenance import initial_maintenance_state, segment_sessions
from streams.sinks import MaintenanceSessionSink
from tianyan.harness import pipeline

T0 = 1_800_000_000_000


def _msg(rows: list[dict[str, Any]], seq: int, **kw: Any) -> Any:
    return message(rows, seq=seq, **kw)


# -- the session fold, explicit timestamps --------------------------------------------------


def test_a_session_opens_at_event_43_and_closes_at_the_first_sample_out_of_inspection() -> None:
    st = initial_maintenance_state(ELEVATOR_ID)
    out = []
    st, s = segment_sessions(st, _msg([car(t_ms=T0, service_mode=1)], 0))
    out += s
    # event 43 reported 300 ms before the first sample in mode 2
    rows = [car(t_ms=T0 + 1_000 + 100 * k, service_mode=2) for k in range(10)]
    st, s = segment_sessions(st, _msg(rows, 1, events=[(T0 + 700, "43")]))
    out += s
    assert st.in_inspection(T0 + 5_000)
    # an inspection run, then silence (a dropout keeps the session), then normal again
    rows = [car(t_ms=T0 + 2_000 + 100 * k, service_mode=2, speed_mps=0.3) for k in range(5)]
    st, s = segment_sessions(st, _msg(rows, 2))
    out += s
    st, s = segment_sessions(st, _msg([car(t_ms=T0 + 600_000, service_mode=2)], 3))
    out += s
    # a repeated (old) message changes nothing
    st, s = segment_sessions(st, _msg([car(t_ms=T0 + 1_500, service_mode=1)], 1))
    assert s == []
    st, s = segment_sessions(st, _msg([car(t_ms=T0 + 601_000, service_mode=1)], 4))
    out += s
    assert [(x.start_ms, x.end_ms, x.duration_s, x.inspection_runs, x.event_43) for x in out] == [
        (T0 + 700, None, None, 0, True),
        (T0 + 700, T0 + 601_000, 600.3, 1, True),
    ]
    assert st.in_inspection(T0 + 5_000) and not st.in_inspection(T0 + 601_000)


def test_another_elevators_message_is_refused_by_name() -> None:
    st = initial_maintenance_state(ELEVATOR_ID)
    other = _msg([car(t_ms=T0)], 0, elevator_id="32070620200000000002")
    with pytest.raises(ValueError, match="is not the elevator of this state"):
        segment_sessions(st, other)


# -- the safety rules out of normal service --------------------------------------------------

LIM = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000.0, floors=10)


def _types(
    mode: int, seconds: int, *, events: tuple[tuple[int, str], ...] = (), **row: Any
) -> list[str]:
    rules = SafetyRules(Thresholds())
    st = rules.new(ELEVATOR_ID)
    out = []
    for sec in range(seconds):
        rows = [car(t_ms=T0 + sec * 1000 + k * 100, service_mode=mode, **row) for k in range(10)]
        ev = [e for e in events if sec * 1000 <= e[0] - T0 < (sec + 1) * 1000]
        out += rules.observe(st, message(rows, seq=sec, events=ev), LIM)
    return [a.alert_type for a in out if a.state == "raised"]


def test_a_car_stopped_between_floors_in_inspection_is_the_technicians_doing() -> None:
    between = {"position_m": 4.5, "door_zone": False}
    assert _types(2, 60, **between) == []
    assert _types(1, 60, **between) == ["stopped_outside_door_zone"]


def test_a_car_taken_out_of_service_by_a_code_has_no_power_loss() -> None:
    assert _types(0, 10) == ["power_loss"]
    assert _types(0, 10, events=((T0, "42"),)) == []  # out of service, said so


def test_a_new_terminal_code_replaces_the_fault_of_another() -> None:
    rules = SafetyRules(Thresholds())
    st = rules.new(ELEVATOR_ID)
    out = []
    for sec, code in ((0, "03"), (5, "08")):
        rows = [car(t_ms=T0 + sec * 1000 + k * 100) for k in range(10)]
        out += rules.observe(st, message(rows, seq=sec, faults=[(T0 + sec * 1000, code)]), LIM)
    assert [(a.alert_type, a.gb_code, a.state) for a in out] == [
        ("terminal_fault", "03", "raised"),
        ("terminal_fault", "03", "cleared"),
        ("terminal_fault", "08", "raised"),
    ]


# -- the scenario keys and what the simulator makes of them ---------------------------------


def test_service_sections_are_validated_by_key() -> None:
    base = {"scenario": {"name": "s", "seed": 1}}
    with pytest.raises(ScenarioError, match=r"service\.tea_break: unknown service episode"):
        Scenario.from_dict({**base, "service": {"tea_break": {"rate_per_day": 1}}})
    with pytest.raises(ScenarioError, match=r"service\.maintenance_visit\.rate_per_day: requ"):
        Scenario.from_dict({**base, "service": {"maintenance_visit": {}}})
    with pytest.raises(ScenarioError, match=r"inspection_speed_mps: 1\.0 is above 0\.63"):
        Scenario.from_dict(
            {
                **base,
                "service": {"maintenance_visit": {"rate_per_day": 1, "inspection_speed_mps": 1.0}},
            }
        )
    with pytest.raises(ScenarioError, match=r"codes: '03' is not one of 01, 02, 07, 08"):
        Scenario.from_dict(
            {**base, "faults": {"terminal_code": {"rate_per_day": 1, "codes": ["03"]}}}
        )
    # a scenario without service sections keeps its run id
    assert (
        Scenario.from_dict(base).fingerprint()
        == Scenario.from_dict({**base, "service": {}}).fingerprint()
    )


SERVICE_TOML = Path(__file__).parent / "scenarios" / "detector_faults_service.toml"


def test_the_simulator_produces_every_service_mode_event_and_terminal_code(tmp_path: Path) -> None:
    cars = generate(3, 40, dt.date(2025, 3, 3))
    cars = [e for e in cars if e.has_terminal][:20]
    out = tmp_path / "run.jsonl"
    simulator.simulate(
        simulator.load_scenario(SERVICE_TOML),
        cars,
        start=dt.datetime(2025, 3, 3, 1, 0, tzinfo=dt.UTC),
        duration_s=3600.0,
        output=simulator.FileOutput(out),
        progress=False,
    )
    modes: Counter[int] = Counter()
    codes: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        try:
            m = json.loads(line)
            modes.update(m["samples"]["service_mode"])
        except (ValueError, KeyError, TypeError):
            continue  # the scenario's malformed messages
        codes.update(c["code"] for c in (*m["faults"], *m["events"]))
    assert set(range(0, 8)) <= set(modes), modes
    assert {"42", "43", "44", "45", "46", "47", "40"} <= set(codes), codes
    assert {"01", "02", "07", "08"} <= set(codes), codes
    labels = [json.loads(x) for x in out.with_name("run.labels.jsonl").read_text().splitlines()]
    visits = [lb for lb in labels if lb["fault_type"] == "maintenance_visit"]
    assert visits and all(lb["gb_code"] == "43" for lb in visits)


# -- the sink -----------------------------------------------------------------------------


def test_the_sink_completes_an_open_session_and_never_reopens_it(scratch_db: str) -> None:
    from sql.migrate import migrate

    migrate(scratch_db)
    opened = MaintenanceSession(T0, ELEVATOR_ID, None, None, 0, True)
    closed = MaintenanceSession(T0, ELEVATOR_ID, T0 + 1_800_000, 1800.0, 4, True)
    with MaintenanceSessionSink(scratch_db) as sink:
        assert sink.write([opened])["maintenance_session"] == 1
        assert sink.write([opened, closed])["maintenance_session"] == 1  # the end, once
        assert sink.write([opened])["maintenance_session"] == 0  # a replay's opening
        assert sink.write([closed])["maintenance_session"] == 0
    with psycopg.connect(scratch_db) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM end_time - start_time), duration_s, inspection_runs"
            " FROM tianyan.maintenance_session"
        ).fetchall()
    assert row == [(1800, 1800.0, 4)]


# -- the real stack -----------------------------------------------------------------------

VISITS_TOML = """
[scenario]
name = "maintenance-visits"
seed = 16
duration_s = 1800
[service.maintenance_visit]
rate_per_day = 40
duration_min_s = 120
duration_max_s = 400
runs_per_hour = 30
"""
#: The maintenance interval of the run, shortened from 15 days so that a half-hour run
#: shows it lapse: 0.01 day = 864 s.
INTERVAL_S = 864.0
START = dt.datetime(2026, 11, 3, 2, 0, tzinfo=dt.UTC)


def test_visits_become_sessions_overdue_alerts_grades_and_board_rows(
    settings: Settings, tmp_path: Path
) -> None:
    cars = [e for e in generate(11, 60, START.date()) if e.has_terminal][:12]
    # every car's declared maintenance is 40 days old: only a visit seen can make it recent
    cars = [
        dataclasses.replace(e, last_maintenance_on=START.date() - dt.timedelta(40)) for e in cars
    ]
    (tmp_path / "visits.toml").write_text(VISITS_TOML)
    (tmp_path / "thresholds.toml").write_text(
        f"maintenance_visit_interval_days = {INTERVAL_S / 86400}\n"
    )
    stream = tmp_path / "run.jsonl"
    sim = simulator.simulate(
        simulator.load_scenario(tmp_path / "visits.toml"),
        cars,
        start=START,
        duration_s=1800.0,
        output=simulator.FileOutput(stream),
        progress=False,
    )
    labels = [json.loads(x) for x in stream.with_name("run.labels.jsonl").read_text().splitlines()]
    visits = [lb for lb in labels if lb["fault_type"] == "maintenance_visit"]
    with pipeline(
        settings,
        "tianyan_test_maintenance",
        tmp_path / "run",
        thresholds_file=tmp_path / "thresholds.toml",
    ) as run:
        upsert(run.admin_url, cars)
        run.start_worker()
        run.publish(stream)
        run.wait(
            lambda: run.scalar("SELECT count(*) FROM telemetry_sample"),
            lambda n: n >= sim.samples,
            f"the worker storing {sim.samples} samples",
        )
        run.wait(
            lambda: run.scalar(
                "SELECT count(*) FROM alert WHERE alert_type = 'maintenance_overdue'"
            ),
            lambda n: n > 0,
            "the overdue alerts",
        )
        run.group.stop_all()
        with psycopg.connect(run.admin_url) as conn:
            sessions = conn.execute(
                "SELECT elevator_id, (extract(epoch FROM start_time) * 1000)::bigint,"
                " (extract(epoch FROM end_time) * 1000)::bigint, inspection_runs, event_43"
                " FROM maintenance_session ORDER BY 1, 2"
            ).fetchall()
            overdue = {
                r[0]
                for r in conn.execute(
                    # standing at the end: raised and not cleared by a visit since
                    "SELECT elevator_id FROM alert a WHERE alert_type = 'maintenance_overdue'"
                    " AND state = 'raised' AND NOT EXISTS (SELECT 1 FROM alert c"
                    " WHERE c.alert_key = a.alert_key AND c.state = 'cleared')"
                )
            }
            first_last = {
                r[0]: (r[1], r[2])
                for r in conn.execute(
                    "SELECT elevator_id, (extract(epoch FROM min(time)) * 1000)::bigint,"
                    " (extract(epoch FROM max(time)) * 1000)::bigint FROM telemetry_sample"
                    " GROUP BY 1"
                )
            }

        # 1. every visit the simulator made is one session, its start and end within 2 s
        assert len(visits) >= 3, "the run made too few visits to test anything"
        got = {(e, s): (end, runs, ev43) for e, s, end, runs, ev43 in sessions}
        assert len(got) == len(visits)
        for lb in visits:
            key = (lb["elevator_id"], lb["onset_ms"])
            near = [k for k in got if k[0] == key[0] and abs(k[1] - key[1]) <= 2_000]
            assert near, f"no session for the visit {lb}"
            end, _, ev43 = got[near[0]]
            assert ev43
            if lb["ended_ms"] is None:
                assert end is None  # still going on when the run ended
            else:
                assert end is not None and abs(end - lb["ended_ms"]) <= 2_000

        # 2. maintenance_overdue stands at the end for a car with no visit in the interval,
        # not for a car with one (cars within a minute of the boundary are not judged)
        run_end = max(last for _, last in first_last.values())
        expect_overdue, expect_fine = set(), set()
        for eid, (first, _) in first_last.items():
            seen = [lb for lb in visits if lb["elevator_id"] == eid]
            last_visit = max(
                (lb["ended_ms"] if lb["ended_ms"] is not None else run_end for lb in seen),
                default=-1,
            )
            due = max(first, last_visit) + INTERVAL_S * 1000
            if due < run_end - 60_000:
                expect_overdue.add(eid)
            elif due > run_end + 60_000:
                expect_fine.add(eid)
        assert expect_overdue and expect_fine, (expect_overdue, expect_fine)
        assert expect_overdue <= overdue
        assert not expect_fine & overdue

        # 3. the risk grade counts a visit seen: 0 days since maintenance, not 40
        grade_fleet(run.writer_url, START + dt.timedelta(seconds=1800))
        with psycopg.connect(run.admin_url) as conn:
            days = dict(
                conn.execute(
                    "SELECT elevator_id, (factors->'factors'->'maintenance'->>'value')::int"
                    " FROM current_risk_grade"
                ).fetchall()
            )
        visited = {lb["elevator_id"] for lb in visits if lb["ended_ms"] is not None}
        assert visited and all(days[e] == 0 for e in visited), days
        assert all(
            days[e.registration_code] == 40
            for e in cars
            if e.registration_code not in {lb["elevator_id"] for lb in visits}
        )

        # 4. the maintenance board: every panel passes, and the visit panels have rows
        rows: dict[str, int] = {}

        def on_rows(panel: Any, columns: list[str], data: list[Any]) -> None:
            rows[str(panel.get("title"))] = len(data)

        board = maintenance_board.build()
        results = check_board(
            board.to_json(),
            run.url("tianyan_analyst"),
            TimeRange(START, START + dt.timedelta(seconds=1800)),
            shows=board.shows,
            typed=board.typed,
            on_rows=on_rows,
        )
        assert [r.describe() for r in results if not r.ok] == []
        assert rows["Maintenance visits seen"] == len(visits)
        assert rows["Companies: maintenance visits seen in the last 15 days"] > 0
