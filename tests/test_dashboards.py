"""Grafana boards as code: build, macro expansion, check against the shared city run (as each
board's role), publish's refusals. There is no Grafana here: publish is tested against a
closed port and a small local HTTP server answering as Grafana's API does."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards import build, macros
from dashboards.board import Board, BoardBuilder, table, timeseries
from dashboards.boards import all_boards
from dashboards.check import check, check_board
from dashboards.datasources import ANALYST, DATASOURCES, PUBLIC
from dashboards.macros import TimeRange, Variable
from dashboards.publish import PublishError, publish
from dashboards.query import register
from foundation.settings import role_url
from tianyan.cli import main

from .city_run import CityRun

# Most read the shared city run.
pytestmark = pytest.mark.slow

T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
RANGE = TimeRange(T0, T0 + dt.timedelta(minutes=15))


# -- build --------------------------------------------------------------------------------


def test_build_is_deterministic_and_the_committed_files_have_no_drift() -> None:
    first, second = build.rendered(all_boards()), build.rendered(all_boards())
    assert first == second
    assert len([f for f in first if f.startswith("json/")]) == 8
    assert build.drift(all_boards()) == []


def test_build_command_reports_no_drift() -> None:
    result = CliRunner().invoke(main, ["dashboards", "build", "--check-drift"])
    assert result.exit_code == 0, result.output
    assert "no drift: 8 boards" in result.output


def test_drift_names_a_changed_file(tmp_path: Any) -> None:
    boards = all_boards()
    build.write(boards, tmp_path)
    assert build.drift(boards, tmp_path) == []
    (tmp_path / "json" / "tianyan-rescue.json").write_text("{}\n")
    (tmp_path / "json" / "old-board.json").write_text("{}\n")
    assert build.drift(boards, tmp_path) == [
        "json/tianyan-rescue.json: differs from what the code builds",
        "json/old-board.json: no board builds it",
    ]


def test_every_committed_board_round_trips_through_the_sdk_models() -> None:
    register_default_plugins()
    register()  # after the defaults: PostgreSQL targets decode into PostgresQuery
    for path in sorted((build.HERE / "json").glob("*.json")):
        committed = json.loads(path.read_text())
        model = Dashboard.from_json(committed)
        again = json.loads(json.dumps(model, cls=JSONEncoder))
        assert again == committed, path.name
        assert all(
            type(t).__name__ == "PostgresQuery"
            for p in model.panels or []
            for t in getattr(p, "targets", None) or []
        )


def test_each_board_uses_its_roles_data_source_everywhere() -> None:
    roles = {b.uid: b.source.role for b in all_boards()}
    assert roles["tianyan-public-lookup"] == "tianyan_public"
    assert roles["tianyan-supervision"] == "tianyan_regulator"
    assert roles["tianyan-use-safety"] == "tianyan_unit"
    assert roles["tianyan-maintenance"] == "tianyan_maintenance"
    others = ("tianyan-public-lookup", "tianyan-supervision", "tianyan-use-safety")
    assert {r for u, r in roles.items() if u not in (*others, "tianyan-maintenance")} == {
        "tianyan_analyst"
    }
    for board in all_boards():
        text = board.dumps()
        uids = {s.uid for s in DATASOURCES if s.uid in text}
        assert uids == {board.source.uid}, board.uid


def test_provisioning_names_one_source_per_role_with_timescaledb_on() -> None:
    text = build.rendered(all_boards())["provisioning/datasources/tianyan.yaml"]
    for source in DATASOURCES:
        assert f'uid: "{source.uid}"' in text
        assert f'user: "{source.role}"' in text or source.scope
    assert 'user: "${TIANYAN_GRAFANA_UNIT_ROLE}"' in text
    assert 'user: "${TIANYAN_GRAFANA_MAINTENANCE_ROLE}"' in text
    assert text.count("timescaledb: true") == len(DATASOURCES)
    payload = ANALYST.api_payload("postgresql://tianyan@db.example:5433/tianyan")
    assert payload["url"] == "db.example:5433" and payload["user"] == "tianyan_analyst"
    assert payload["jsonData"]["database"] == "tianyan"  # type: ignore[index]


# -- macros -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "WHERE $__timeFilter(time)",
            "WHERE time BETWEEN '2026-11-02T08:00:00Z' AND '2026-11-02T08:15:00Z'",
        ),
        ("$__timeFrom() .. $__timeTo()", "'2026-11-02T08:00:00Z' .. '2026-11-02T08:15:00Z'"),
        ("SELECT $__timeGroup(time, '5m') AS t", "SELECT time_bucket('300.000s',time) AS t"),
        (
            "SELECT $__timeGroupAlias(time,'1h'), 1",
            "SELECT time_bucket('3600.000s',time) AS \"time\", 1",
        ),
        # before Grafana 5.3 a ',' after $__timeGroup meant the alias form; it still does
        ("SELECT $__timeGroup(t, 30s), v", "SELECT time_bucket('30.000s',t) AS \"time\", v"),
        ("$__time(c)", 'c AS "time"'),
        ("$__timeEpoch(c)", 'extract(epoch from c) as "time"'),
        ("WHERE $__unixEpochFilter(ts)", "WHERE ts >= 1793606400 AND ts <= 1793607300"),
        ("$__unixEpochFrom() $__unixEpochTo()", "1793606400 1793607300"),
        (
            "$__unixEpochNanoFilter(ns)",
            "ns >= 1793606400000000000 AND ns <= 1793607300000000000",
        ),
        ("$__unixEpochNanoFrom()-$__unixEpochNanoTo()", "1793606400000000000-1793607300000000000"),
        ("$__unixEpochGroup(ts, 1h)", "floor((ts)/3600)*3600"),
        ("$__unixEpochGroupAlias(ts, '10m')", 'floor((ts)/600)*600 AS "time"'),
        # $__interval and $__interval_ms are replaced first: 15 min over 1000 points → 1 s
        ("$__timeGroup(time, $__interval) x", "time_bucket('1.000s',time) x"),
        ("$__interval_ms ms", "1000 ms"),
    ],
)
def test_macros_expand_as_grafana_does(sql: str, expected: str) -> None:
    assert macros.interpolate(sql, RANGE) == expected


def test_interval_follows_range_panel_minimum_and_grafanas_rounding() -> None:
    assert macros.interval_ms(RANGE) == 1000
    assert macros.interval_ms(RANGE, min_interval="1m") == 60_000
    day = TimeRange(T0, T0 + dt.timedelta(days=1))
    assert macros.interval_ms(day) == 60_000  # 86.4 s per point rounds to 1 m
    assert macros.format_interval(90_000) == "1m" and macros.format_interval(500) == "500ms"
    sql = macros.interpolate("$__timeGroup(t, $__interval)", day, interval=300_000)
    assert sql == "time_bucket('300.000s',t)"


def test_macros_without_timescaledb_and_with_fractional_times() -> None:
    r = TimeRange(T0 + dt.timedelta(microseconds=250_000), T0 + dt.timedelta(minutes=1))
    assert macros.interpolate("$__timeFrom()", r) == "'2026-11-02T08:00:00.25Z'"
    assert (
        macros.interpolate("$__timeGroup(t, '5m')", r, timescaledb=False)
        == "floor(extract(epoch from t)/300)*300"
    )


def test_bad_macros_are_refused_with_grafanas_messages() -> None:
    with pytest.raises(macros.MacroError, match='unknown macro "__timeFIlter"'):
        macros.interpolate("$__timeFIlter(t)", RANGE)
    with pytest.raises(macros.MacroError, match="needs time column and interval"):
        macros.interpolate("$__timeGroup(t)", RANGE)
    with pytest.raises(macros.MacroError, match="error parsing interval 5 minutes"):
        macros.interpolate("$__timeGroup(t, '5 minutes')", RANGE)


def test_variables_are_filled_as_grafanas_sql_data_sources_fill_them() -> None:
    one = {"d": Variable("d", ("O'Brien",))}
    many = {"d": Variable("d", ("Haizhou", "Ganyu"), multi=True, include_all=True)}
    assert macros.interpolate_variables("= '$d'", one) == "= 'O''Brien'"
    assert macros.interpolate_variables("IN ($d)", many) == "IN ('Haizhou','Ganyu')"
    assert macros.interpolate_variables("${d:csv} [[d]]", many) == "Haizhou,Ganyu 'Haizhou','Ganyu'"
    assert macros.interpolate_variables("${d:sqlstring}", one) == "'O''Brien'"
    assert macros.interpolate_variables("${d}x $other", one) == "O''Brienx $other"
    assert macros.interpolate_variables("$__from-$__to", {}, RANGE) == "1793606400000-1793607300000"
    with pytest.raises(macros.MacroError, match="unknown variable format 'nope'"):
        macros.interpolate_variables("${d:nope}", one)


# -- check against the city run ---------------------------------------------------------------


def _city_range(city_run: CityRun) -> TimeRange:
    return TimeRange(city_run.start, city_run.end)


def test_every_panel_passes_check_on_the_city_run(city_run: CityRun) -> None:
    results = check(all_boards(), city_run.admin_url, _city_range(city_run))
    failures = [r.describe() for r in results if not r.ok]
    assert failures == []
    rows = {(r.board, r.panel): r.rows for r in results}
    assert len({b for b, _ in rows}) == 8
    # panels over data the run produced did return rows
    assert rows[("Operation monitoring", "Districts")] == len(
        {e.district for e in city_run.elevators}
    )
    assert rows[("Emergency rescue", "Trapping alerts from the detectors")] > 0
    assert rows[("Comprehensive supervision", "Elevators by risk grade")] > 0
    assert rows[("Trip", "Speed and acceleration")] > 0
    assert rows[("Maintenance online monitoring", "Periods out of normal service")] > 0
    assert rows[("Elevator lookup", "Risk grade")] == 1
    with psycopg.connect(city_run.analyst_url) as conn:
        incidents = conn.execute(
            "SELECT count(*) FROM incident WHERE opened_at BETWEEN %s AND %s",
            (city_run.start, city_run.end),
        ).fetchone()
    assert incidents is not None
    assert rows[("Emergency rescue", "Incidents in range")] == incidents[0]


def _board(
    title: str, panels: list[tuple[Any, str, str, str | None]], source: Any = ANALYST
) -> Board:
    b = BoardBuilder("tianyan-test", title, source, "a board made by a test")
    for panel, panel_title, sql, shows in panels:
        fmt = "time_series" if panel == "series" else "table"
        b.panel(
            timeseries() if panel == "series" else table(),
            panel_title,
            sql,
            format=fmt,
            shows=shows,
        )
    return b.build()


def _check(board: Board, city_run: CityRun) -> list[Any]:
    return check([board], city_run.admin_url, _city_range(city_run))


def test_check_names_the_board_the_panel_and_the_sql_error(city_run: CityRun) -> None:
    board = _board(
        "Broken board",
        [
            (None, "Good panel", "SELECT count(*) FROM alert WHERE $__timeFilter(raised_at)", None),
            (
                None,
                "Broken panel",
                "SELECT speed_kmh FROM trip WHERE $__timeFilter(start_time)",
                None,
            ),
            (None, "Bad macro", "SELECT 1 FROM trip WHERE $__timeFIlter(start_time)", None),
        ],
    )
    results = _check(board, city_run)
    assert [r.ok for r in results] == [True, False, False]
    text = results[1].describe()
    assert "Broken board / Broken panel" in text
    assert 'column "speed_kmh" does not exist' in text
    assert "SELECT speed_kmh FROM trip WHERE start_time BETWEEN '2026-11-02T08:00:00Z'" in text
    assert 'unknown macro "__timeFIlter"' in results[2].describe()


def test_check_flags_an_empty_result_only_where_the_data_exist(city_run: CityRun) -> None:
    in_range = "SELECT 1 FROM alert WHERE $__timeFilter(raised_at)"
    board = _board(
        "Empty panels",
        [
            (None, "Wrong filter", in_range + " AND severity = 'catastrophic'", in_range),
            (
                None,
                "Nothing to show",
                in_range + " AND alert_type = 'none'",
                in_range + " AND alert_type = 'none'",
            ),
            (None, "Empty aggregate", "SELECT 1 WHERE false", None),
            ("series", "No time column", "SELECT raised_at AS t, 1 AS n FROM alert", None),
        ],
    )
    results = {r.panel: r for r in _check(board, city_run)}
    assert results["Wrong filter"].error is not None
    assert "returned no rows, though the data it shows exist" in results["Wrong filter"].error
    assert results["Nothing to show"].ok
    assert (
        results["Empty aggregate"].error
        == "returned no rows (it is an aggregate and always should)"
    )
    assert "time column is missing" in (results["No time column"].error or "")


def test_the_public_board_reads_as_tianyan_public_and_nothing_but_public_elevator(
    city_run: CityRun,
) -> None:
    sql = "SELECT registration_code, user_unit FROM elevator LIMIT 1"
    public = _board("Sneaky lookup", [(None, "Registry", sql, None)], source=PUBLIC)
    analyst = _board("Analyst lookup", [(None, "Registry", sql, None)], source=ANALYST)
    [refused] = _check(public, city_run)
    [allowed] = _check(analyst, city_run)
    assert refused.error == "42501 permission denied for table elevator"
    assert allowed.ok and allowed.rows == 1
    # and the real public board passes as that role
    lookup = next(b for b in all_boards() if b.uid == "tianyan-public-lookup")
    results = check_board(
        lookup.to_json(),
        city_run.public_url,
        _city_range(city_run),
        shows=lookup.shows,
        typed=lookup.typed,
    )
    assert all(r.ok for r in results) and len(results) == 4


def test_check_command_exits_non_zero_on_a_failure_and_names_it(city_run: CityRun) -> None:
    args = [
        "--database-url",
        city_run.admin_url,
        "--from",
        "2026-11-02T08:00:00",
        "--to",
        "2026-11-02T08:15:00",
    ]
    ok = CliRunner().invoke(main, ["dashboards", "check", *args, "--board", "tianyan-supervision"])
    assert ok.exit_code == 0, ok.output
    assert "0 failed" in ok.output
    empty = CliRunner().invoke(
        main,
        [
            "dashboards",
            "check",
            *args[:2],
            "--from",
            "2020-01-01",
            "--to",
            "2020-01-02",
            "--board",
            "tianyan-use-safety",
        ],
    )
    assert empty.exit_code == 0, empty.output  # nothing in that range: empty panels are fine
    unknown = CliRunner().invoke(main, ["dashboards", "check", *args, "--board", "tianyan-nope"])
    assert unknown.exit_code == 2 and "no board tianyan-nope" in unknown.output


def test_preview_draws_every_board_from_the_city_run(city_run: CityRun, tmp_path: Path) -> None:
    import matplotlib.image

    from dashboards.preview import BOARD_WIDTH_PX
    from dashboards.report import cjk_font

    args = ["--database-url", city_run.admin_url, "--out", str(tmp_path / "boards")]
    args += [
        "--from",
        f"{city_run.start:%Y-%m-%dT%H:%M:%S}",
        "--to",
        f"{city_run.end:%Y-%m-%dT%H:%M:%S}",
    ]
    result = CliRunner().invoke(main, ["dashboards", "preview", *args])
    assert result.exit_code == 0, result.output
    boards = all_boards()
    index = (tmp_path / "boards" / "index.html").read_text()
    for board in boards:
        png = tmp_path / "boards" / f"{board.uid}.png"
        assert f"{png}: {board.title}" in result.output
        assert board.title in index and f'src="{board.uid}.png"' in index
        image = matplotlib.image.imread(png)
        assert image.shape[1] == BOARD_WIDTH_PX
        inked = (image[:, :, :3].mean(axis=2) < 0.9).mean()
        assert inked > 0.01, f"{board.uid}: almost blank ({inked:.3%} of pixels drawn)"
    # the set-up installs a font that draws the districts' and companies' Chinese names
    assert cjk_font() is not None


def test_preview_names_failed_queries_and_exits_non_zero(scratch_db: str, tmp_path: Path) -> None:
    """A database without the schema: every panel fails, is drawn with its error, and listed."""
    out = tmp_path / "boards"
    args = ["dashboards", "preview", "--database-url", scratch_db, "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--board", "tianyan-supervision"])
    assert result.exit_code == 1, result.output
    assert "queries failed" in result.output
    assert "does not exist" in (out / "index.html").read_text()
    assert (out / "tianyan-supervision.png").stat().st_size > 10_000
    unknown = CliRunner().invoke(main, [*args, "--board", "tianyan-nope"])
    assert unknown.exit_code == 2 and "no board tianyan-nope" in unknown.output


def test_role_url_swaps_the_user_and_drops_the_password() -> None:
    assert (
        role_url("postgresql://tianyan:secret@127.0.0.1:55432/tianyan", "tianyan_public")
        == "postgresql://tianyan_public@127.0.0.1:55432/tianyan"
    )
    with pytest.raises(ValueError, match="expected postgresql://"):
        role_url("mysql://x@h/db", "tianyan_public")


# -- publish ------------------------------------------------------------------------------


class _Grafana(BaseHTTPRequestHandler):
    """Answers as Grafana's HTTP API does; records every request (method, path)."""

    requests: list[tuple[str, str]]
    token_ok: bool
    existing: set[str]

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((self.command, self.path, body))  # type: ignore[arg-type]
        if self.path == "/api/health":
            return self._answer(200, {"commit": "x", "database": "ok", "version": "11.3.0"})
        if not self.token_ok or self.headers.get("Authorization") != "Bearer good-token":
            # what Grafana answers to an unknown service-account token
            return self._answer(
                401, {"message": "Invalid API key", "messageId": "auth.unauthorized"}
            )
        if self.command == "GET" and self.path == "/api/org":
            return self._answer(200, {"id": 1, "name": "Main Org."})
        if self.command == "GET" and self.path == "/api/access-control/user/permissions":
            return self._answer(
                200,
                {
                    a: []
                    for a in (
                        "datasources:create",
                        "datasources:write",
                        "folders:create",
                        "dashboards:create",
                        "dashboards:write",
                    )
                },
            )
        if self.command == "GET":
            uid = self.path.rsplit("/", 1)[1]
            if uid in self.existing:
                return self._answer(200, {"uid": uid, "id": 7})
            return self._answer(404, {"message": "not found"})
        if self.path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            return self._answer(200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x"})
        return self._answer(200, {"message": "ok"})

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def grafana(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    """A stand-in for Grafana's HTTP API on the first free port of 16191-16199 (several test
    sessions may run at once); params: token_ok, existing data source uids."""
    token_ok, existing = request.param
    requests: list[tuple[str, str, Any]] = []
    attrs = {"requests": requests, "token_ok": token_ok, "existing": existing}
    handler = type("Handler", (_Grafana,), attrs)
    for port in range(16191, 16200):
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), handler)
            break
        except OSError:
            continue
    else:
        pytest.fail("ports 16191-16199 are all taken")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", requests
    server.shutdown()
    server.server_close()


DB = "postgresql://tianyan@127.0.0.1:55432/tianyan"


def test_publish_to_an_unreachable_url_names_it() -> None:
    url = "http://127.0.0.1:16190"  # nothing listens there
    with pytest.raises(
        PublishError, match=f"could not reach Grafana at {url}.*nothing was changed"
    ):
        publish(url, "any-token", all_boards(), DB, timeout_s=2)


@pytest.mark.parametrize("grafana", [(False, set())], indirect=True)
def test_publish_with_a_refused_token_says_so_and_writes_nothing(grafana: Any) -> None:
    url, requests = grafana
    with pytest.raises(PublishError) as e:
        publish(url, "wrong-token", all_boards(), DB)
    assert f"Grafana at {url} refused the token (401 Invalid API key)" in str(e.value)
    assert "nothing was changed" in str(e.value)
    assert {m for m, _, _ in requests} == {"GET"}


@pytest.mark.parametrize("grafana", [(True, {"tianyan-timescaledb-analyst"})], indirect=True)
def test_publish_reads_everything_before_it_writes(grafana: Any) -> None:
    url, requests = grafana
    done = publish(url, "good-token", all_boards(), DB)
    assert done.datasources_created == [
        "tianyan-timescaledb-regulator",
        "tianyan-timescaledb-public",
        "tianyan-timescaledb-unit",
        "tianyan-timescaledb-maintenance",
    ]
    assert done.datasources_updated == ["tianyan-timescaledb-analyst"]
    assert done.folder_created and len(done.boards) == 8
    methods = [m for m, _, _ in requests]
    first_write = (
        methods.index("POST")
        if "PUT" not in methods
        else min(methods.index("POST"), methods.index("PUT"))
    )
    assert set(methods[:first_write]) == {"GET"} and "GET" not in methods[first_write:]
    saved = [body for m, path, body in requests if path == "/api/dashboards/db"]
    assert all(b["overwrite"] and b["folderUid"] == "tianyan" for b in saved)
    created = [body for m, path, body in requests if m == "POST" and path == "/api/datasources"]
    # the unit source, published without --unit-role, is the analysts' view of every unit
    assert [b["user"] for b in created] == [
        "tianyan_regulator",
        "tianyan_public",
        "tianyan_analyst",
        "tianyan_analyst",
    ]
    assert all(b["jsonData"]["timescaledb"] is True for b in created)


def test_the_use_safety_board_is_checked_as_one_units_role_and_sees_only_that_unit(
    city_run: CityRun,
) -> None:
    from dashboards.check import scoped_login_role

    from .city_run import CITY_UNIT_ROLE

    assert scoped_login_role(city_run.admin_url, "user_unit") == CITY_UNIT_ROLE
    board = next(b for b in all_boards() if b.uid == "tianyan-use-safety")
    query = next(v for v in board.to_json()["templating"]["list"] if v["name"] == "user_unit")
    with psycopg.connect(role_url(city_run.admin_url, CITY_UNIT_ROLE)) as conn:
        units = conn.execute(query["query"]).fetchall()
        elevators = conn.execute("SELECT count(*) FROM tianyan.elevator").fetchone()
    with psycopg.connect(city_run.analyst_url) as conn:
        all_units = conn.execute(query["query"]).fetchall()
    assert len(units) == 1 and len(all_units) > 1
    assert elevators is not None and 0 < elevators[0] < len(city_run.elevators)


def test_the_maintenance_board_is_checked_as_one_companys_role_and_sees_only_it(
    city_run: CityRun,
) -> None:
    from dashboards.check import scoped_login_role

    from .city_run import CITY_COMPANY_ROLE

    assert scoped_login_role(city_run.admin_url, "maintenance_company") == CITY_COMPANY_ROLE
    sql = "SELECT count(DISTINCT elevator_id) FROM tianyan.service_mode_sample"
    with psycopg.connect(role_url(city_run.admin_url, CITY_COMPANY_ROLE)) as conn:
        ours = conn.execute(sql).fetchone()
        companies = conn.execute(
            "SELECT count(DISTINCT maintenance_company) FROM tianyan.elevator"
        ).fetchone()
    with psycopg.connect(city_run.analyst_url) as conn:
        everyone = conn.execute(sql).fetchone()
    assert companies == (1,)
    assert ours is not None and everyone is not None and 0 < ours[0] < everyone[0]
