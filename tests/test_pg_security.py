"""PostgreSQL security (issue 15, part 2) on the real TimescaleDB: row-level security per user
unit and maintenance company, the read roles' limits, SCRAM passwords, SECURITY DEFINER
search paths."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from dashboards import build, macros
from dashboards.boards import all_boards
from dashboards.check import panels_of, unquoted_variable_uses
from dashboards.datasources import ANALYST, DATASOURCES
from dashboards.macros import TimeRange, Variable, unquoted_variables
from foundation.settings import Settings, SettingsError, role_url
from sql.migrate import migrate
from sql.roles import (
    READ_ROLES,
    ReadLimits,
    apply_read_limits,
    apply_role_settings,
    create_scoped_role,
    set_password,
)
from tianyan.harness import create_database, drop_database
from tianyan.stack.postgres import SCRAM_CHECK_DATABASE

DATABASE = "tianyan_test_pg_security"
#: (registration code, user unit, maintenance company)
ELEVATORS = [
    ("32070000000000000001", "Unit A", "Company X"),
    ("32070000000000000002", "Unit A", "Company Y"),
    ("32070000000000000003", "Unit B", "Company X"),
    ("32070000000000000004", "Unit B", "Company Y"),
]
ROLES = {
    "tianyan_test_unit_a": {"user_unit": "Unit A"},
    "tianyan_test_unit_b": {"user_unit": "Unit B"},
    "tianyan_test_company_x": {"maintenance_company": "Company X"},
}
LIMITS = ReadLimits(statement_timeout_ms=12_345, connection_limit=7, temp_file_limit_mb=321)


@pytest.fixture(scope="module")
def db(settings: Settings) -> Iterator[str]:
    url = create_database(settings, DATABASE)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for code, unit, company in ELEVATORS:
            conn.execute(
                "INSERT INTO tianyan.elevator (registration_code, address, district, building_type,"
                " rated_speed_mps, rated_load_kg, floors, user_unit, maintenance_company)"
                " VALUES (%s, 'x', 'Haizhou', 'residential', 1.0, 800, 6, %s, %s)",
                [code, unit, company],
            )
            conn.execute(
                "INSERT INTO tianyan.telemetry_sample VALUES (now(), %s, 1, 0, 0, 0, 1, 0,"
                " 0, 0, true, 0, true, false, 1)",
                [code],
            )
            conn.execute(
                "INSERT INTO tianyan.alert (alert_id, alert_key, raised_at, condition_since,"
                " elevator_id, alert_type, severity, detector, evidence) VALUES"
                " (gen_random_uuid(), %s, now(), now(), %s, 'trapped', 'critical', 't', '{}')",
                [f"{code}:trapped:1", code],
            )
            incident = conn.execute(
                "INSERT INTO tianyan.incident (incident_id, elevator_id, fault_type, severity,"
                " state, opened_at, updated_at) VALUES (gen_random_uuid(), %s, 'trapped',"
                " 'critical', 'open', now(), now()) RETURNING incident_id",
                [code],
            ).fetchone()
            assert incident is not None
            conn.execute(
                "INSERT INTO tianyan.incident_event (incident_id, time, event_type, to_state,"
                " actor) VALUES (%s, now(), 'opened', 'open', 'test')",
                [incident[0]],
            )
        conn.execute(
            "INSERT INTO tianyan.risk_grade SELECT registration_code, now(), 10, 'blue', '{}'"
            " FROM tianyan.elevator"
        )
    for role, scope in ROLES.items():
        create_scoped_role(url, role, limits=LIMITS, **scope)
    yield url
    drop_database(settings, DATABASE)
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        for role in ROLES:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _codes(url: str, role: str, query: str) -> set[str]:
    with psycopg.connect(role_url(url, role)) as conn:
        return {str(r[0]) for r in conn.execute(query).fetchall()}


PER_ELEVATOR = [
    "SELECT registration_code FROM tianyan.elevator",
    "SELECT elevator_id FROM tianyan.alert",
    "SELECT elevator_id FROM tianyan.incident",
    "SELECT i.elevator_id FROM tianyan.incident_event e JOIN tianyan.incident i USING"
    " (incident_id)",
    "SELECT elevator_id FROM tianyan.current_risk_grade",
    "SELECT elevator_id FROM tianyan.service_mode_sample",
]


@pytest.mark.parametrize("query", PER_ELEVATOR)
def test_each_unit_and_company_role_sees_only_its_own_elevators(db: str, query: str) -> None:
    assert _codes(db, "tianyan_test_unit_a", query) == {ELEVATORS[0][0], ELEVATORS[1][0]}
    assert _codes(db, "tianyan_test_unit_b", query) == {ELEVATORS[2][0], ELEVATORS[3][0]}
    assert _codes(db, "tianyan_test_company_x", query) == {ELEVATORS[0][0], ELEVATORS[2][0]}
    assert _codes(db, "tianyan_analyst", query) == {e[0] for e in ELEVATORS}


def test_incident_events_and_contacts_of_other_units_are_hidden(db: str) -> None:
    with psycopg.connect(role_url(db, "tianyan_test_unit_a")) as conn:
        assert conn.execute("SELECT count(*) FROM tianyan.incident_event").fetchone() == (2,)
        contacts = conn.execute(
            "SELECT DISTINCT user_unit FROM tianyan.elevator WHERE user_unit = 'Unit B'"
        ).fetchall()
        assert contacts == []
        assert conn.execute("SELECT role_name FROM tianyan.data_scope").fetchall() == [
            ("tianyan_test_unit_a",)
        ]


def test_a_scoped_role_cannot_read_around_the_policies(db: str) -> None:
    # not through a hypertable or its chunks (chunks copy grants, not policies)
    with psycopg.connect(db) as conn:
        chunks = [
            r[0]
            for r in conn.execute(
                "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information"
                ".chunks WHERE hypertable_name = 'telemetry_sample'"
            ).fetchall()
        ]
    assert chunks
    for relation in ("tianyan.telemetry_sample", "tianyan.trip", *chunks):
        with (
            psycopg.connect(role_url(db, "tianyan_test_unit_a")) as conn,
            pytest.raises(errors.InsufficientPrivilege),
        ):
            conn.execute(f"SELECT elevator_id FROM {relation}")
    # nor by writing, nor through the tables outside its grant
    for sql in (
        "UPDATE tianyan.elevator SET floors = 7",
        "SELECT * FROM tianyan.webhook_delivery",
        "SELECT * FROM tianyan.audit_ledger",
        "SET ROLE tianyan_analyst",
    ):
        with (
            psycopg.connect(role_url(db, "tianyan_test_unit_a")) as conn,
            pytest.raises(errors.InsufficientPrivilege),
        ):
            conn.execute(sql)


def test_the_pipeline_still_writes_everything_under_row_level_security(db: str) -> None:
    with psycopg.connect(role_url(db, "tianyan_writer")) as conn:
        conn.execute(
            "INSERT INTO tianyan.telemetry_sample VALUES (now() + interval '1 s', %s, 2, 0, 0,"
            " 0, 1, 0, 0, 0, true, 0, true, false, 1)",
            [ELEVATORS[3][0]],
        )
        conn.execute("UPDATE tianyan.incident SET updated_at = now()")
        assert conn.execute("SELECT count(*) FROM tianyan.incident").fetchone() == (4,)


@pytest.mark.exclusive  # the limits of the cluster's read roles, which other tests log in as
def test_read_roles_carry_statement_timeout_temp_file_and_connection_limits(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        apply_read_limits(conn, LIMITS)
    try:
        for role in (*READ_ROLES, "tianyan_test_unit_a", "tianyan_test_company_x"):
            with psycopg.connect(role_url(db, role)) as conn:
                assert conn.execute("SHOW statement_timeout").fetchone() == ("12345ms",), role
                assert conn.execute("SHOW temp_file_limit").fetchone() == ("321MB",), role
                assert conn.execute(
                    "SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user"
                ).fetchone() == (7,)
                # a read role cannot lift the temporary-disk limit for itself
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute("SET temp_file_limit = -1")
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            apply_read_limits(conn, ReadLimits())


@pytest.mark.exclusive  # the cluster's roles' passwords and limits
def test_roles_log_in_with_scram_passwords_set_from_the_settings(
    db: str, superuser_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [SCRAM_CHECK_DATABASE]
        ).fetchone():
            conn.execute(f"CREATE DATABASE {SCRAM_CHECK_DATABASE}")
    monkeypatch.setenv("TIANYAN_PG_PUBLIC_PASSWORD", "public lookup secret")
    apply_role_settings(db, Settings.from_env())
    with psycopg.connect(db, autocommit=True) as conn:
        set_password(conn, "tianyan_test_unit_b", "correct horse battery staple")
    with psycopg.connect(superuser_url) as conn:
        stored = conn.execute(
            "SELECT rolname, rolpassword FROM pg_authid"
            " WHERE rolname IN ('tianyan_test_unit_b', 'tianyan_public')"
        ).fetchall()
    assert len(stored) == 2
    for _, verifier in stored:
        assert verifier.startswith("SCRAM-SHA-256$4096:") and "secret" not in verifier
    # the cluster's scram-only database asks for the password, as production's pg_hba will
    scram = f"host=127.0.0.1 port={settings.pg_port} dbname={SCRAM_CHECK_DATABASE}"
    for user, password in (
        ("tianyan_test_unit_b", "correct horse battery staple"),
        ("tianyan_public", "public lookup secret"),
    ):
        with psycopg.connect(f"{scram} user={user} password='{password}'") as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)
    for refused in (
        "user=tianyan_test_unit_b password=wrong",
        "user=tianyan_test_unit_a password=anything",  # a role without a password
    ):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"{scram} {refused}")


def test_every_security_definer_function_pins_search_path_with_pg_temp_last(db: str) -> None:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            """SELECT p.oid::regprocedure::text, p.proconfig
                 FROM pg_proc p
                WHERE p.prosecdef
                  AND p.pronamespace NOT IN ('pg_catalog'::regnamespace,
                                             'information_schema'::regnamespace)
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                   WHERE d.classid = 'pg_proc'::regclass
                                     AND d.objid = p.oid AND d.deptype = 'e')"""
        ).fetchall()
    assert any(name.startswith("drop_old_raw_chunks") for name, _ in rows)
    for name, config in rows:
        paths = [c.removeprefix("search_path=") for c in config or [] if c.startswith("search_")]
        assert paths, f"{name} is SECURITY DEFINER without SET search_path"
        schemas = [s.strip().strip('"') for s in paths[0].split(",")]
        assert schemas[0] == "pg_catalog" and schemas[-1] == "pg_temp", (name, schemas)
        assert "$user" not in schemas, name


# -- dashboard variables -------------------------------------------------------------------


def test_no_committed_board_pastes_a_variable_into_its_sql_unquoted() -> None:
    problems = []
    for path in sorted((build.HERE / "json").glob("*.json")):
        problems += unquoted_variable_uses(json.loads(path.read_text()))
    assert problems == []


def test_the_unquoted_variable_check_tells_safe_from_unsafe() -> None:
    declared = {
        "one": {"type": "query"},
        "many": {"type": "query", "multi": True, "includeAll": True},
        "custom_all": {"type": "query", "includeAll": True, "allValue": ".*"},
    }
    safe = "WHERE a = '$one' AND b IN ($many) AND c = ${one:sqlstring}::bigint AND $__timeFilter(t)"
    assert unquoted_variables(safe, declared) == []
    unsafe = "WHERE a = $one AND b = ${one:raw} AND c IN ($custom_all)"
    assert unquoted_variables(unsafe, declared) == ["$one", "${one:raw}", "$custom_all"]


def test_a_trip_value_from_the_url_is_a_bad_number_not_sql(db: str) -> None:
    board = next(b for b in all_boards() if b.uid == "tianyan-trip").to_json()
    summary = next(p for p in panels_of(board) if p["title"] == "Trip summary")
    variables = {
        "elevator": Variable("elevator", (ELEVATORS[0][0],)),
        "trip": Variable("trip", ("0 OR true",)),
    }
    now = dt.datetime.now(dt.UTC)
    sql = macros.interpolate(
        summary["targets"][0]["rawSql"],
        TimeRange(now - dt.timedelta(hours=1), now),
        variables,
        interval=1000,
    )
    assert "'0 OR true'::bigint" in sql
    with (
        psycopg.connect(role_url(db, "tianyan_analyst")) as conn,
        pytest.raises(errors.InvalidTextRepresentation),
    ):
        conn.execute(sql.encode())


def test_sslmode_is_configurable_in_every_grafana_data_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = build.rendered(all_boards())["provisioning/datasources/tianyan.yaml"]
    assert 'sslmode: "disable"' not in text
    assert text.count('sslmode: "${TIANYAN_GRAFANA_DB_SSLMODE}"') == len(DATASOURCES)
    assert text.count('sslRootCertFile: "${TIANYAN_GRAFANA_DB_SSL_ROOT_CERT}"') == len(DATASOURCES)
    url = "postgresql://tianyan@db.example:5432/tianyan"
    assert ANALYST.api_payload(url, "require")["jsonData"]["sslmode"] == "require"  # type: ignore[index]
    payload = ANALYST.api_payload(url + "?sslmode=verify-full", "disable")
    assert payload["jsonData"]["sslmode"] == "verify-full"  # type: ignore[index]
    monkeypatch.setenv("TIANYAN_PG_SSLMODE", "verify-full")
    assert Settings.from_env().pg_sslmode == "verify-full"
    assert Settings.from_env().to_env()["TIANYAN_PG_SSLMODE"] == "verify-full"
    monkeypatch.setenv("TIANYAN_PG_SSLMODE", "verify_full")
    with pytest.raises(SettingsError, match="TIANYAN_PG_SSLMODE='verify_full'"):
        Settings.from_env()
