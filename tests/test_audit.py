"""The tamper-evident record (issue 15, part 5), on the real TimescaleDB and Kafka: only
``ledger_append`` writes the ledger; ``audit verify`` names every table tampered with and
how — each table edited, deleted from, inserted into, reordered, truncated, and the ledger
rewritten from the start — and reports nothing false while a dispatcher runs.

One populated database is shared by the tamper cases: each tampers inside a transaction,
verifies in that same transaction (``verify_snapshot``), and rolls back.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaProducer

from foundation.settings import Settings
from registry.model import ELEVATOR_COLUMNS
from registry.store import upsert
from rescue import store
from rescue.ledger import (
    ANCHOR_KEY,
    Anchor,
    anchor_value,
    ledger_head,
    read_anchors,
    verify,
    verify_snapshot,
)
from streams.sinks import TimescaleSink
from tianyan.harness import pipeline
from tianyan.processes import free_port

from .rescue_support import (
    FLEET,
    T0_MS,
    RecordingReceiver,
    Rescue,
    cleared,
    overload,
    trapped,
    wait_for,
)

TIANYAN = str(Path(".venv/bin/tianyan").resolve())
ENDPOINT = "http://a.invalid/hook"
APP_ROLES = ("tianyan_writer", "tianyan_analyst", "tianyan_regulator", "tianyan_public")


@dataclass
class Populated:
    """A database with every kind of fact recorded, and its published anchors."""

    admin_url: str
    writer_url: str
    superuser_url: str
    env: dict[str, str]
    anchors: list[Anchor]


def _samples(conn: psycopg.Connection, elevator_id: str, around_ms: int) -> None:
    """Raw samples of one elevator around a moment (the evidence copies them)."""
    conn.execute(
        "INSERT INTO telemetry_sample SELECT to_timestamp((%s + i * 100) / 1000.0), %s, i,"
        " 0.5 + i / 1000.0, 0, i / 10.0, 1, 0, 300, 0, true, 0, true, false, 0"
        " FROM generate_series(-600, 600) i",
        (around_ms, elevator_id),
    )


def _publish_anchor(settings: Settings, url: str, topic: str) -> None:
    with psycopg.connect(url) as conn:
        head = ledger_head(conn)
    assert head is not None
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        producer.send(topic, key=ANCHOR_KEY, value=anchor_value(head)).get(timeout=10)
    finally:
        producer.close()


@pytest.fixture(scope="module")
def populated(
    settings: Settings, superuser_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Populated]:
    config = store.DispatchConfig(
        (ENDPOINT,), (10**8, 2 * 10**8, 3 * 10**8), 1800, rescue_min_severity="info"
    )
    now = dt.datetime.now(dt.UTC)
    with pipeline(
        settings, f"tianyan_test_audit_{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("audit")
    ) as run:
        upsert(run.admin_url, FLEET)
        with psycopg.connect(run.admin_url) as conn:
            for car in range(4):
                _samples(conn, FLEET[car].registration_code, T0_MS + car * 1000)
        writer = run.settings.database_url
        with psycopg.connect(writer) as conn:
            alerts = [trapped(0, 0), trapped(1, 1), overload(2, 2), overload(3, 3)]
            for a in alerts:
                store.apply_alert(conn, a, config, received_at=now)
            store.apply_alert(conn, cleared(alerts[2]), config, received_at=now)
            for car, request in ((0, "req-ack-0"), (1, "req-ack-1")):
                incident_id = str(uuid.uuid5(store.NAMESPACE, alerts[car].alert_key))
                result = store.apply_action(
                    conn,
                    incident_id,
                    "acknowledge",
                    config,
                    actor="rescue-96333",
                    note=None,
                    request_id=request,
                    now=now,
                )
                assert result.status == 200, result.body
            assert store.copy_requested_evidence(conn)[1] > 0
            # deliveries: one delivered, one retrying, one dead letter
            due = store.claim_due(
                conn, 3, 30.0, endpoints=[ENDPOINT], signing_key_id=config.signing_key_id
            )
            assert len(due) == 3
            sent = dt.datetime.now(dt.UTC)
            outcomes = [("delivered", 200, None), ("retry", 503, "busy"), ("dead", 410, "gone")]
            store.record_attempts(
                conn,
                [
                    store.Attempt(d, o, code, err, sent + dt.timedelta(seconds=60), sent, 0.01)
                    for d, (o, code, err) in zip(due, outcomes, strict=True)
                ],
            )
        _publish_anchor(settings, run.admin_url, run.settings.audit_anchors_topic)
        # the worker stores an alert the dispatcher has not applied (yet)
        with TimescaleSink(writer) as sink:
            sink.write_batch([], alerts=[overload(5, 50)])
        _publish_anchor(settings, run.admin_url, run.settings.audit_anchors_topic)
        anchors = read_anchors(settings.kafka_bootstrap, run.settings.audit_anchors_topic)
        assert len(anchors) == 2
        db = run.admin_url.rsplit("/", 1)[1]
        yield Populated(
            run.admin_url, writer, superuser_url.rsplit("/", 1)[0] + f"/{db}", run.env(), anchors
        )


# -- the tampering ----------------------------------------------------------------------------

#: (table, its key column) of every table the ledger vouches for.
KEYS = {
    "elevator": "registration_code",
    "alert": "alert_id",
    "incident": "incident_id",
    "incident_alert": "alert_id",
    "incident_action": "request_id",
    "webhook_delivery": "delivery_id",
    "evidence_sample": "incident_id",
    "incident_event": "event_id",
}

#: One edit per table: a column a supervised party would want to change.
EDIT = {
    "elevator": "UPDATE elevator SET last_maintenance_on = current_date"
    " WHERE registration_code = (SELECT min(registration_code) FROM elevator)",
    "alert": "UPDATE alert SET probable_cause = 'passenger misuse'"
    " WHERE alert_id = (SELECT min(alert_id::text)::uuid FROM alert)",
    "incident": 'UPDATE incident SET details = details || \'{"probable_cause": "none"}\''
    " WHERE incident_id = (SELECT min(incident_id::text)::uuid FROM incident)",
    "incident_alert": "UPDATE incident_alert SET applied_at = applied_at - interval '10 min'"
    " WHERE alert_id = (SELECT min(alert_id::text)::uuid FROM incident_alert)",
    "incident_action": "UPDATE incident_action SET received_at = received_at - interval '20 min'"
    " WHERE request_id = 'req-ack-0'",
    "webhook_delivery": "UPDATE webhook_delivery"
    " SET payload = jsonb_set(payload, '{data,state}', '\"resolved\"')"
    " WHERE delivery_id = (SELECT min(delivery_id) FROM webhook_delivery)",
    "evidence_sample": "UPDATE evidence_sample SET speed_mps = 0"
    " WHERE (incident_id, time) = (SELECT incident_id, max(time) FROM evidence_sample"
    " GROUP BY incident_id ORDER BY incident_id LIMIT 1)",
    "incident_event": "UPDATE incident_event SET actor = 'someone'"
    " WHERE event_id = (SELECT min(event_id) FROM incident_event)",
}

#: One deletion per table (foreign keys are off while tampering).
DELETE = {
    "elevator": "DELETE FROM elevator"
    " WHERE registration_code = (SELECT max(registration_code) FROM elevator)",
    "alert": "DELETE FROM alert WHERE alert_id = (SELECT min(alert_id::text)::uuid FROM alert)",
    "incident": "DELETE FROM incident"
    " WHERE incident_id = (SELECT min(incident_id::text)::uuid FROM incident)",
    "incident_alert": "DELETE FROM incident_alert"
    " WHERE alert_id = (SELECT min(alert_id::text)::uuid FROM incident_alert)",
    "incident_action": "DELETE FROM incident_action WHERE request_id = 'req-ack-1'",
    # the dead letter, gone
    "webhook_delivery": "DELETE FROM webhook_delivery WHERE status = 'dead'",
    "evidence_sample": "DELETE FROM evidence_sample"
    " WHERE (incident_id, time) = (SELECT incident_id, min(time) FROM evidence_sample"
    " GROUP BY incident_id ORDER BY incident_id LIMIT 1)",
    "incident_event": "DELETE FROM incident_event"
    " WHERE event_id = (SELECT max(event_id) FROM incident_event)",
}

#: The key (and unique columns) of a row inserted as a copy of an existing one.
_NEW = {
    "elevator": {"registration_code": "99999999999999999999"},
    "alert": {"alert_id": str(uuid.uuid4()), "alert_key": "forged:overload:1"},
    "incident": {"incident_id": str(uuid.uuid4()), "state": "false_alarm"},
    "incident_action": {"request_id": "req-forged"},
    "webhook_delivery": {"delivery_id": 999_999, "webhook_id": "msg_forged"},
    "evidence_sample": {"incident_id": str(uuid.uuid4())},
    "incident_event": {"event_id": 999_999},
}


def _insert(table: str) -> str:
    if table == "incident_alert":  # the alert the worker stored, now "applied"
        return (
            "INSERT INTO incident_alert SELECT alert_id, NULL, now() FROM alert"
            " WHERE alert_id NOT IN (SELECT alert_id FROM incident_alert)"
        )
    new = json.dumps(_NEW[table]).replace("'", "''")
    return (
        f"INSERT INTO {table} OVERRIDING SYSTEM VALUE"
        f" SELECT (jsonb_populate_record(NULL::{table}, to_jsonb(x) || '{new}'::jsonb)).*"
        f" FROM {table} x LIMIT 1"
    )


def _swap(table: str, column: str) -> str:
    """Two rows' ``column`` swapped: the same values, in another order."""
    keys = ["incident_id", "elevator_id", "time"] if table == "evidence_sample" else [KEYS[table]]
    listed = ", ".join(keys)
    return (
        f"WITH two AS (SELECT {listed}, {column} AS v, row_number() OVER (ORDER BY {listed})"
        f" AS n FROM {table} ORDER BY {listed} LIMIT 2)"
        f" UPDATE {table} t SET {column} = o.v FROM two s JOIN two o ON o.n = 3 - s.n"
        f" WHERE ({', '.join('t.' + k for k in keys)}) = ({', '.join('s.' + k for k in keys)})"
    )


REORDER = {
    "elevator": _swap("elevator", "address"),
    "alert": _swap("alert", "raised_at"),
    "incident": _swap("incident", "opened_at"),
    "incident_alert": _swap("incident_alert", "applied_at"),
    "incident_action": _swap("incident_action", "incident_id"),
    "webhook_delivery": _swap("webhook_delivery", "created_at"),
    "evidence_sample": _swap("evidence_sample", "position_m"),
    "incident_event": _swap("incident_event", "time"),
}


def _rewrite_ledger(except_facts_of: str | None = None) -> list[str]:
    """The whole ledger appended afresh (new times, so new hashes) — the facts of one
    table dropped and ledgered anew as they are now, so that the ledger agrees with it."""
    keep = "" if except_facts_of is None else f" WHERE entity_id NOT LIKE '{except_facts_of}/%'"
    rewrite = [
        f"CREATE TEMP TABLE old_ledger AS SELECT * FROM audit_ledger{keep}",
        "DELETE FROM audit_ledger",
        "SELECT count(ledger_append(entry_type, entity_id, payload))"
        " FROM (SELECT * FROM old_ledger ORDER BY seq) o",
    ]
    if except_facts_of is not None:
        rewrite.append(
            f"SELECT ledger_facts('{except_facts_of}',"
            f" ARRAY(SELECT fact_key FROM audit_fact_digests('{except_facts_of}')))"
        )
    return rewrite


LEDGER = {
    "edit": [
        "UPDATE audit_ledger SET payload = jsonb_set(payload, '{sha256}', '\"00\"')"
        " WHERE seq = (SELECT min(seq) FROM audit_ledger WHERE entry_type = 'fact')"
    ],
    "delete": ["DELETE FROM audit_ledger WHERE seq = 5"],
    "insert": [
        "INSERT INTO audit_ledger (seq, recorded_at, entry_type, entity_id, payload, prev_hash,"
        " entry_hash) SELECT max(seq) + 1, now(), 'fact', 'alert/x', '{}', '\\x00',"
        " '\\x01' FROM audit_ledger"
    ],
    "reorder": [
        "UPDATE audit_ledger SET seq = -3 WHERE seq = 3",
        "UPDATE audit_ledger SET seq = 3 WHERE seq = 4",
        "UPDATE audit_ledger SET seq = 4 WHERE seq = -3",
    ],
    "truncate": ["TRUNCATE audit_ledger"],
    "rewrite": _rewrite_ledger(),
    # the tail after the last anchor kept: shorter than the anchors say
    "shorten": ["DELETE FROM audit_ledger WHERE seq > 10"],
}
LEDGER_KIND = {
    "edit": "edited",
    "delete": "deleted",
    "insert": "inserted",
    "reorder": "reordered",
    "truncate": "emptied",
    "rewrite": "rewritten",
    "shorten": "truncated",
}

CASES: list[tuple[str, str, list[str], set[str]]] = []
for _table in KEYS:
    CASES += [
        (_table, "edit", [EDIT[_table]], {"edited"}),
        (_table, "delete", [DELETE[_table]], {"deleted"}),
        (_table, "insert", [_insert(_table)], {"inserted"}),
        (_table, "reorder", [REORDER[_table]], {"edited"}),
        (
            _table,
            "truncate",
            [f"TRUNCATE {_table} CASCADE"],
            {"deleted"} if _table == "incident_event" else {"truncated"},
        ),
    ]
    if _table != "incident_event":  # its entries are not facts: rewritten with the ledger
        CASES.append((_table, "rewrite", [EDIT[_table], *_rewrite_ledger(_table)], set()))
CASES += [("audit_ledger", k, sql, {LEDGER_KIND[k]}) for k, sql in LEDGER.items()]


def _tampered(populated: Populated, statements: list[str]) -> tuple[list[tuple[str, str]], str]:
    with psycopg.connect(populated.superuser_url) as conn:
        conn.execute("SET search_path = tianyan, public")
        conn.execute("SET session_replication_role = replica")  # no foreign-key checks
        for sql in statements:
            conn.execute(sql)
        conn.execute("SET session_replication_role = origin")
        report = verify_snapshot(conn, populated.anchors)
        conn.rollback()
    return report.tampered, "\n".join(report.problems)


def test_the_populated_database_verifies_clean(populated: Populated) -> None:
    report = verify(populated.admin_url, populated.anchors)
    assert report.ok, report.problems
    assert report.anchors == 2
    # every table vouched for has facts: registry, alerts (one from the worker), applied
    # alerts, incidents, actions, deliveries, evidence
    with psycopg.connect(populated.admin_url) as conn:
        tables = dict(
            conn.execute(
                "SELECT payload ->> 'table', count(DISTINCT entity_id) FROM audit_ledger"
                " WHERE entry_type = 'fact' GROUP BY 1"
            ).fetchall()
        )
    assert tables == {
        "elevator": len(FLEET),
        "alert": 6,
        "incident_alert": 5,
        "incident": 4,
        "incident_action": 2,
        "webhook_delivery": 7,
        "evidence_sample": 4,
    }
    assert report.facts == sum(tables.values())


@pytest.mark.parametrize(
    ("table", "how", "statements", "kinds"),
    CASES,
    ids=[f"{t}-{h}" for t, h, _, _ in CASES],
)
def test_audit_verify_names_the_table_and_the_kind_of_every_tampering(
    populated: Populated, table: str, how: str, statements: list[str], kinds: set[str]
) -> None:
    tampered, problems = _tampered(populated, statements)
    if how == "rewrite":  # the ledger agrees with the table: the anchors do not
        assert ("audit_ledger", "rewritten") in tampered, problems
    else:
        assert {k for t, k in tampered if t == table} & kinds, (tampered, problems)
        assert table in problems
    # and nothing stayed tampered
    assert verify(populated.admin_url, populated.anchors).ok


def test_audit_verify_command_names_them_and_exits_1(populated: Populated) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TIANYAN, "audit", "verify", "--database-url", populated.admin_url, *args],
            env=populated.env,
            capture_output=True,
            text=True,
            check=False,
        )

    clean = run()
    assert clean.returncode == 0, clean.stderr
    out = json.loads(clean.stdout.splitlines()[-1])
    assert out["ok"] and out["anchors_checked"] == 2 and out["facts_checked"] > len(FLEET)
    with psycopg.connect(populated.superuser_url) as conn:
        conn.execute("SET search_path = tianyan, public")
        conn.execute("CREATE TABLE dead_letters AS SELECT * FROM webhook_delivery")
        conn.execute("DELETE FROM webhook_delivery WHERE status = 'dead'")
        conn.execute("CREATE TABLE ledger_copy AS SELECT * FROM audit_ledger")
        conn.execute("TRUNCATE audit_ledger")
    try:
        emptied = run()
        no_anchors = run("--no-anchors")
    finally:
        with psycopg.connect(populated.superuser_url) as conn:
            conn.execute("SET search_path = tianyan, public")
            conn.execute("INSERT INTO audit_ledger OVERRIDING SYSTEM VALUE TABLE ledger_copy")
            conn.execute(
                "INSERT INTO webhook_delivery OVERRIDING SYSTEM VALUE SELECT * FROM dead_letters"
                " WHERE status = 'dead'"
            )
            conn.execute("DROP TABLE ledger_copy, dead_letters")
    assert emptied.returncode == 1
    assert "the ledger is empty, but 2 anchors were published" in emptied.stderr
    assert json.loads(emptied.stdout.splitlines()[-1])["tampered"] == [
        {"table": "audit_ledger", "kind": "emptied"}
    ]
    # without the anchors, an empty ledger vouches for nothing, and every fact is named
    assert no_anchors.returncode == 1
    assert "webhook_delivery: 6 rows not in the ledger" in no_anchors.stderr
    assert run().returncode == 0


@pytest.mark.parametrize("role", APP_ROLES)
def test_only_ledger_append_writes_the_ledger(populated: Populated, role: str) -> None:
    url = populated.admin_url.replace("//tianyan@", f"//{role}@")
    for sql in (
        "INSERT INTO audit_ledger (seq, entry_type, entity_id, payload, prev_hash, entry_hash)"
        " VALUES (10000, 'fact', 'x', '{}', '\\x00', '\\x00')",
        "UPDATE audit_ledger SET entity_id = 'x'",
        "DELETE FROM audit_ledger",
        "TRUNCATE audit_ledger",
    ):
        with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql)
    with psycopg.connect(populated.admin_url) as conn:
        config = conn.execute(
            "SELECT p.prosecdef, p.proconfig FROM pg_proc p JOIN pg_namespace n"
            " ON n.oid = p.pronamespace WHERE n.nspname = 'tianyan'"
            " AND p.proname = 'ledger_append'"
        ).fetchone()
    assert config == (True, ["search_path=pg_catalog, public, pg_temp"])


def test_the_writer_appends_through_ledger_append_only(populated: Populated) -> None:
    with psycopg.connect(populated.writer_url) as conn:
        seq = conn.execute("SELECT ledger_append('test', 'x', '{}')").fetchone()
        conn.rollback()  # leave the shared ledger as it was
    assert seq is not None and seq[0] > 1


# -- rows stored before the facts --------------------------------------------------------------


def test_rows_stored_before_migration_0008_are_ledgered_once_and_only_once(
    scratch_db: str, migrations_copy: Path
) -> None:
    from sql.migrate import migrate

    mig_dir, idem_dir = migrations_copy / "migrations", migrations_copy / "idempotent"
    facts_migration = next(mig_dir.glob("0008_*.sql"))
    held = facts_migration.read_text()
    facts_migration.unlink()
    migrate(scratch_db, mig_dir, idem_dir)
    alert = overload(0, 0)
    with psycopg.connect(scratch_db) as conn:  # written as the code before 0008 did
        conn.cursor().executemany(
            f"INSERT INTO elevator ({', '.join(ELEVATOR_COLUMNS)})"
            f" VALUES ({', '.join(['%s'] * len(ELEVATOR_COLUMNS))})",
            [astuple(e) for e in FLEET[:2]],
        )
        conn.execute(
            "INSERT INTO alert (alert_id, alert_key, state, raised_at, condition_since,"
            " elevator_id, alert_type, severity, detector, evidence)"
            " VALUES (%s, %s, 'raised', now(), now(), %s, 'overload', 'minor', 'rules', '{}')",
            (alert.alert_id, alert.alert_key, alert.elevator_id),
        )
    facts_migration.write_text(held)
    assert migrate(scratch_db, mig_dir, idem_dir).applied == [facts_migration.name]
    report = verify(scratch_db)
    assert report.ok and report.facts == 3, report.problems
    with psycopg.connect(scratch_db) as conn:
        conn.execute("UPDATE alert SET severity = 'info'")
    migrate(scratch_db, mig_dir, idem_dir)  # a later migrate blesses nothing
    assert verify(scratch_db).tampered == [("alert", "edited")]
    with (
        psycopg.connect(scratch_db.replace("//tianyan@", "//tianyan_writer@")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("INSERT INTO audit_fact_backfill VALUES (true)")


# -- no false report while a dispatcher runs --------------------------------------------------


@pytest.mark.slow
def test_no_false_report_while_the_dispatcher_dispatches(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    r = rescue([])
    hook = RecordingReceiver(r.secret, free_port())
    r.env.update(TIANYAN_RESCUE_WEBHOOK_URL=hook.url, TIANYAN_AUDIT_ANCHOR_INTERVAL_S="1")
    reports = []
    stop = threading.Event()

    def keep_publishing() -> None:
        for i in range(40):
            if stop.wait(0.1):
                return
            car = i % len(FLEET)
            a = trapped(car, 100 * i) if i % 3 else overload(car, 100 * i)
            r.publish([a, cleared(a)] if i % 2 else [a])

    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        publisher = threading.Thread(target=keep_publishing)
        publisher.start()
        try:
            while publisher.is_alive() or len(reports) < 10:
                anchors = read_anchors(settings.kafka_bootstrap, r.settings.audit_anchors_topic)
                reports.append(verify(r.admin_url, anchors))
        finally:
            stop.set()
            publisher.join()
        wait_for(
            lambda: r.scalar("SELECT count(*) FROM webhook_delivery WHERE status = 'pending'") == 0,
            30,
            "every delivery made",
        )
        anchors = read_anchors(settings.kafka_bootstrap, r.settings.audit_anchors_topic)
        reports.append(verify(r.admin_url, anchors))
    finally:
        r.stop_all()
        hook.close()
    false = [p for report in reports for p in report.problems]
    assert not false, false[:5]
    # the verifications saw the ledger grow, and the anchors with it
    assert len({report.head_seq for report in reports}) > 3
    assert reports[-1].anchors > 0 and len(hook.ids()) > 0
