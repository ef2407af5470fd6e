"""Incidents, the rescue webhook, acknowledgement and escalation, and the ledger — against
the real Kafka and TimescaleDB, with real HTTP receivers and real dispatcher processes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from foundation.settings import Settings
from rescue import store
from rescue.delivery import Sender
from rescue.lifecycle import (
    IllegalTransition,
    RetrySchedule,
    classify_status,
    due_escalation,
    next_state,
    parse_retry_after,
)
from rescue.receiver import RescuerTravel
from tianyan.processes import free_port, listening

from .conftest import TIANYAN, consume_all
from .rescue_support import (
    FLEET,
    RecordingReceiver,
    Rescue,
    cleared,
    deliver_once,
    http,
    journal_ids,
    overload,
    trapped,
)

# -- the pure rules --------------------------------------------------------------------------


def test_lifecycle_transitions_and_their_refusals() -> None:
    assert next_state("open", "acknowledge") == "acknowledged"
    assert next_state("open", "arrive") == "arrived"
    assert next_state("arrived", "resolve") == "resolved"
    assert next_state("acknowledged", "false-alarm") == "false_alarm"
    with pytest.raises(IllegalTransition, match="cannot resolve: the incident is already resolved"):
        next_state("resolved", "resolve")
    with pytest.raises(IllegalTransition, match="cannot acknowledge: the incident is arrived"):
        next_state("arrived", "acknowledge")
    with pytest.raises(IllegalTransition, match="unknown action"):
        next_state("open", "close")


def test_escalation_ladder_and_delivery_schedule() -> None:
    t0 = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    after = (300, 900, 1800)
    assert due_escalation("enterprise", t0, t0 + dt.timedelta(seconds=299), after) is None
    assert due_escalation("enterprise", t0, t0 + dt.timedelta(seconds=300), after) == "street"
    assert due_escalation("street", t0, t0 + dt.timedelta(seconds=2000), after) == "city"
    assert due_escalation("city", t0, t0 + dt.timedelta(days=1), after) is None
    statuses = (200, 204, 408, 429, 500, 503, 401, 403, 404, 410, 400, 413, 422)
    assert [classify_status(s) for s in statuses] == [
        "delivered",
        "delivered",
        "retry",
        "retry",
        "retry",
        "retry",
        "auth_or_route",
        "auth_or_route",
        "auth_or_route",
        "auth_or_route",
        "refused",
        "refused",
        "refused",
    ]
    assert parse_retry_after("7", t0) == 7.0
    assert parse_retry_after("Sun, 29 Nov 2026 00:00:30 GMT", t0) == 30.0
    assert parse_retry_after("soon", t0) is None
    assert parse_retry_after("²", t0) is None  # a digit to str.isdigit, not to float()
    schedule, rng = RetrySchedule(1.0, 60.0, 3600), random.Random(1)
    for attempt, ceiling in ((1, 1), (2, 2), (3, 4), (7, 60), (20, 60), (5000, 60)):
        d = schedule.delay_s(attempt, None, rng)
        assert ceiling / 2 <= d <= ceiling
    assert schedule.delay_s(1, 45.0, rng) == 45.0
    # a Retry-After is honoured up to the cap, however absurd
    assert schedule.delay_s(1, 10.0**30, rng) == 60.0
    assert schedule.delay_s(1, parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", t0), rng) == 60.0
    assert schedule.delay_s(1, float("inf"), rng) == 60.0


# -- incidents from alerts (the store, as the pipeline's role) --------------------------------


@pytest.mark.slow
def test_alerts_become_one_incident_per_elevator_and_fault_with_outbox_and_ledger(
    settings: Settings, rescue: Callable[..., Rescue]
) -> None:
    r = rescue(["http://a.invalid/hook", "http://b.invalid/hook"])
    config = store.DispatchConfig(
        ("http://a.invalid/hook", "http://b.invalid/hook"),
        (1, 2, 3),
        1800,
        rescue_min_severity="info",
    )
    first, repeat, other = trapped(0, 0, people=2), trapped(0, 200, people=4), overload(1, 10)
    commands: list[list[store.Change]] = []
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(r.writer_url) as conn:
        opened = store.apply_alert(
            conn, first, config, received_at=now, before_commit=commands.append
        )
        again = store.apply_alert(conn, first, config, received_at=now)
        updated = store.apply_alert(conn, repeat, config, received_at=now)
        store.apply_alert(conn, other, config, received_at=now)
        stale_clear = store.apply_alert(conn, cleared(first), config, received_at=now)
        resolved = store.apply_alert(conn, cleared(repeat), config, received_at=now)
    assert [c.event_type for c in opened] == ["incident.opened"]
    assert again == [] and stale_clear == []  # a repeat, and the clearing of a superseded alert
    assert [c.event_type for c in updated] == ["incident.updated"]
    assert [c.event_type for c in resolved] == ["incident.resolved"]
    assert len(commands) == 1 and commands[0][0].event_type == "incident.opened"
    rows = r.query(
        "SELECT fault_type, state, repeats, estimated_trapped, closed_by FROM incident"
        " ORDER BY fault_type"
    )
    assert rows == [
        ("overload", "open", 0, None, None),
        ("trapped_between_levels", "resolved", 1, 4, "detector"),
    ]
    events = r.query("SELECT event_type FROM incident_event ORDER BY event_id")
    assert [e[0] for e in events] == [
        "incident.opened",
        "incident.updated",
        "incident.opened",
        "incident.resolved",
    ]
    # every change once per endpoint, the same webhook-id to both; every change ledgered
    assert r.scalar("SELECT count(*) FROM webhook_delivery") == 8
    assert r.scalar("SELECT count(DISTINCT webhook_id) FROM webhook_delivery") == 4
    assert r.scalar("SELECT count(*) FROM audit_ledger WHERE entry_type = 'incident_event'") == 4
    payload = r.scalar(
        "SELECT payload FROM webhook_delivery WHERE event_type = 'incident.opened'"
        " AND payload->'data'->'fault'->>'type' = 'trapped_between_levels' LIMIT 1"
    )
    car = FLEET[0]
    data = payload["data"]
    assert payload["type"] == "incident.opened"
    assert data["elevator"]["registration_code"] == car.registration_code
    assert (
        data["elevator"]["address"] == car.address and data["elevator"]["district"] == car.district
    )
    assert data["elevator"]["maintenance_company"] == car.maintenance_company
    assert data["fault"]["gb_code"] == "11" and data["fault"]["severity"] == "critical"
    assert data["fault"]["estimated_trapped"] == 2 and data["fault"]["trapped"] is True
    assert data["fault"]["probable_cause"] and data["fault"]["suggested_handling"]
    assert "passengers=True" in data["fault"]["evidence_summary"]
    assert data["times"]["arrival_due_at"] and data["arrival"]["target_s"] == 1800


def test_an_answer_before_its_incident_is_returned_to_try_again(
    rescue: Callable[..., Rescue],
) -> None:
    """The reassurance command goes out before its incident's transaction commits; over
    MQTT the terminal's answer can come back first. Such an answer is not dropped: it is
    returned, and the dispatcher tries it again (``ANSWER_RETRY_S``) until the incident is
    there."""
    r = rescue(["http://a.invalid/hook"])
    config = store.DispatchConfig(
        ("http://a.invalid/hook",), (1, 2, 3), 1800, rescue_min_severity="info"
    )
    now = dt.datetime.now(dt.UTC)
    alert = trapped(0, 0)
    with psycopg.connect(r.writer_url) as conn:
        opened = store.apply_alerts(conn, [(alert, now)], config)
        incident_id = opened[0].incident_id
        command_id = f"{incident_id}:play_reassurance"
        early = (alert.elevator_id, f"{uuid.uuid4()}:play_reassurance", "played", now)
        other_car = (trapped(1, 0).elevator_id, command_id, "played", now)
        answer = (alert.elevator_id, command_id, "played", now)
        changes, unmatched = store.record_reassurance_answers(conn, config, [early, other_car])
        assert changes == [] and unmatched == [early, other_car]
        changes, unmatched = store.record_reassurance_answers(conn, config, [answer])
        assert [c.event_type for c in changes] == ["reassurance.played"] and unmatched == []
        # once recorded, a repeat changes nothing and is not tried again
        assert store.record_reassurance_answers(conn, config, [answer]) == ([], [])


def test_an_alert_is_stored_once_under_the_one_id_its_application_references(
    settings: Settings, rescue: Callable[..., Rescue]
) -> None:
    from detectors.alerts import Alert
    from rescue.ledger import verify
    from streams.sinks import TimescaleSink

    r = rescue(["http://a.invalid/hook"])
    config = store.DispatchConfig(
        ("http://a.invalid/hook",), (1, 2, 3), 1800, rescue_min_severity="info"
    )
    now = dt.datetime.now(dt.UTC)
    raised, unstored = trapped(0, 0), overload(1, 10)

    def from_kafka(a: Alert) -> Alert:
        return msgspec.json.decode(msgspec.json.encode(a), type=Alert)

    # The worker stores the trapping, then publishes it; the overload reaches the dispatcher
    # with no row (the worker crashed before writing it, or the topic was replayed).
    with TimescaleSink(r.writer_url) as sink:
        assert sink.write_batch([], alerts=[raised]).alerts == 1
    with psycopg.connect(r.writer_url) as conn:
        opened = store.apply_alerts(
            conn, [(from_kafka(raised), now), (from_kafka(unstored), now)], config
        )
        # Kafka redelivering, a replay of the topic, a repeat within one batch: nothing.
        again = store.apply_alerts(
            conn, [(from_kafka(a), now) for a in (unstored, raised, unstored)], config
        )
        resolved = store.apply_alert(conn, from_kafka(cleared(raised)), config, received_at=now)
    # The worker writing those alerts after the dispatcher stored them adds nothing.
    with TimescaleSink(r.writer_url) as sink:
        assert sink.write_batch([], alerts=[unstored, cleared(raised)]).alerts == 0
    assert [c.event_type for c in opened] == ["incident.opened", "incident.opened"]
    assert again == []
    assert [c.event_type for c in resolved] == ["incident.resolved"]
    links = r.query(
        "SELECT a.alert_id, a.alert_key, a.state, i.fault_type FROM alert a"
        " JOIN incident_alert l USING (alert_id) JOIN incident i USING (incident_id)"
        " ORDER BY a.raised_at"
    )
    assert links == [
        (unstored.alert_id, unstored.alert_key, "raised", "overload"),
        (raised.alert_id, raised.alert_key, "raised", "trapped_between_levels"),
        (cleared(raised).alert_id, raised.alert_key, "cleared", "trapped_between_levels"),
    ]
    assert r.scalar("SELECT count(*) FROM alert") == 3
    assert r.scalar("SELECT count(*) FROM incident_alert") == 3
    assert r.scalar("SELECT count(*) FROM incident_event") == 3
    # The row the dispatcher stored is the one the worker would have.
    row = r.query(
        "SELECT elevator_id, alert_type, gb_code, severity, detector, evidence, probable_cause,"
        " (extract(epoch FROM raised_at) * 1000)::bigint FROM alert WHERE alert_id = %s",
        unstored.alert_id,
    )
    assert row == [
        (
            unstored.elevator_id,
            "overload",
            unstored.gb_code,
            unstored.severity,
            "rules",
            unstored.evidence,
            unstored.probable_cause,
            unstored.raised_at_ms,
        )
    ]
    report = verify(r.admin_url)
    assert report.ok, report.problems
    assert r.scalar("SELECT count(*) FROM audit_ledger WHERE entry_type = 'incident_event'") == 3


@pytest.mark.slow
def test_the_pipeline_role_can_only_append_to_the_ledger(
    settings: Settings, rescue: Callable[..., Rescue]
) -> None:
    r = rescue([])
    with psycopg.connect(r.writer_url) as conn:
        conn.execute("SELECT ledger_append('test', 'x', '{}')")
        conn.commit()
        for sql in (
            "INSERT INTO audit_ledger (seq, entry_type, entity_id, payload, prev_hash,"
            " entry_hash) VALUES (10000, 'test', 'y', '{}', '\\x00', '\\x00')",
            "UPDATE audit_ledger SET entity_id = 'y'",
            "DELETE FROM audit_ledger",
            "TRUNCATE audit_ledger",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()
    assert r.scalar("SELECT entity_id FROM audit_ledger WHERE entry_type = 'test'") == "x"


def test_rescuer_travel_is_log_normal_seeded_per_incident_and_never_in_the_future() -> None:
    travel = RescuerTravel(12.0, 28.0)
    minutes = sorted(travel.minutes(f"incident-{i}") for i in range(4000))
    assert 11.0 < minutes[2000] < 13.0 and 26.0 < minutes[3600] < 30.0
    assert travel.minutes("incident-7") == travel.minutes("incident-7")
    now = dt.datetime.now(dt.UTC)
    assert travel.arrived_at("incident-7", now - dt.timedelta(days=1)) < now
    assert now <= travel.arrived_at("incident-7", now) <= dt.datetime.now(dt.UTC)
    for median, p90 in ((0.0, 5.0), (20.0, 10.0)):
        with pytest.raises(ValueError, match="median"):
            RescuerTravel(median, p90)


@pytest.mark.slow
def test_the_reference_receiver_reports_the_rescuers_arrival_measured_on_site(
    rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    port = free_port()
    journal = tmp_path / "received.jsonl"
    r = rescue([f"http://127.0.0.1:{port}/96333"])
    try:
        r.start_receiver(port, journal, "--acknowledge", r.api, "--arrive-minutes", "12", "28")
        r.start_dispatcher(tmp_path / "dispatcher.log")
        r.publish([trapped(2, 0)])
        incident_id, opened_at, arrived_at, arrival_s = r.until(
            lambda: r.run.row(
                "SELECT incident_id::text, opened_at, arrived_at, arrival_s FROM incident"
                " WHERE arrived_at IS NOT NULL"
            ),
            "the receiver's rescuers to arrive",
        )
        travel_s = RescuerTravel(12.0, 28.0).minutes(incident_id) * 60
        assert abs((arrived_at - opened_at).total_seconds() - travel_s) < 0.01
        assert arrival_s == pytest.approx(travel_s, abs=1)
        r.until(lambda: len(journal_ids(journal)) == 3, "opened, acknowledged, arrived")
        types = [json.loads(x)["payload"]["type"] for x in journal.read_text().splitlines()]
        assert types == ["incident.opened", "incident.acknowledged", "incident.arrived"]
    finally:
        r.stop_all()


# -- the dispatcher, end to end --------------------------------------------------------------


@pytest.mark.slow
def test_webhooks_signed_acknowledged_and_bad_requests_refused(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    port = free_port()
    journal = tmp_path / "received.jsonl"
    r = rescue([f"http://127.0.0.1:{port}/96333"])
    try:
        r.start_receiver(port, journal, "--acknowledge", r.api)
        r.start_dispatcher(tmp_path / "dispatcher.log")
        r.publish([trapped(2, 0), overload(3, 5)])
        # the receiver verified both, and acknowledged the trapping through the API
        r.until(
            lambda: r.scalar("SELECT count(*) FROM incident WHERE state = 'acknowledged'") == 2,
            "the reference receiver to acknowledge both incidents",
        )
        events = [json.loads(line) for line in journal.read_text().splitlines()]
        assert sum(e["payload"]["type"] == "incident.opened" for e in events) == 2
        # the reassurance command went to the trapped car's terminal
        commands = consume_all(settings.kafka_bootstrap, r.commands_topic, 1)
        assert [json.loads(c.value)["command"] for c in commands] == ["play_reassurance"]
        assert commands[0].key.decode() == FLEET[2].registration_code

        incident_id = str(
            r.scalar("SELECT incident_id FROM incident WHERE fault_type = 'overload'")
        )
        url = f"{r.api}/incidents/{incident_id}"
        bearer = {"Authorization": f"Bearer {r.token}"}
        before = r.query("SELECT * FROM incident ORDER BY incident_id")
        n_events = r.scalar("SELECT count(*) FROM incident_event")

        wrong = http("POST", f"{url}/arrive", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "token" in wrong.json()["error"]
        forged = Webhook(r.secret.replace(r.secret[8:12], "AAAA")).sign(
            "req_1", dt.datetime.now(dt.UTC), "{}"
        )
        bad_sig = http(
            "POST",
            f"{url}/arrive",
            data=b"{}",
            headers={
                "webhook-id": "req_1",
                "webhook-timestamp": str(int(dt.datetime.now(dt.UTC).timestamp())),
                "webhook-signature": forged,
            },
        )
        assert bad_sig.status_code == 401 and "signature" in bad_sig.json()["error"]
        unknown = http(
            "POST",
            f"{r.api}/incidents/00000000-0000-0000-0000-000000000000/acknowledge",
            headers=bearer,
        )
        assert unknown.status_code == 404 and "no incident" in unknown.json()["error"]
        bad_body = http("POST", f"{url}/arrive", data=b'{"actr": 1}', headers=bearer)
        assert bad_body.status_code == 400 and "actr" in bad_body.json()["error"]
        illegal = http("POST", f"{url}/acknowledge", headers=bearer)
        assert illegal.status_code == 409 and "already acknowledged" in illegal.json()["error"]
        assert r.query("SELECT * FROM incident ORDER BY incident_id") == before
        assert r.scalar("SELECT count(*) FROM incident_event") == n_events

        key = {**bearer, "Idempotency-Key": "arrive-1"}
        arrived = http("POST", f"{url}/arrive", json_body={"actor": "unit 7"}, headers=key)
        assert arrived.status_code == 200 and arrived.json()["state"] == "arrived"
        assert arrived.json()["arrival_on_time"] is False  # opened in 2026-11-19's stream time
        again = http("POST", f"{url}/arrive", json_body={"actor": "unit 7"}, headers=key)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        done = http("POST", f"{url}/resolve", headers=bearer)
        assert done.status_code == 200
        twice = http("POST", f"{url}/resolve", headers=bearer)
        assert twice.status_code == 409 and "already resolved" in twice.json()["error"]
        r.until(lambda: len(journal_ids(journal)) == 2 + 2 + 2, "every change delivered")
        types = [json.loads(x)["payload"]["type"] for x in journal.read_text().splitlines()]
        assert sorted(types) == sorted(
            ["incident.opened"] * 2
            + ["incident.acknowledged"] * 2
            + ["incident.arrived", "incident.resolved"]
        )
        metrics = http("GET", f"{r.web}/metrics").text
        assert 'tianyan_webhook_outcomes_total{outcome="delivered"} 6.0' in metrics
        assert 'tianyan_incident_action_requests_total{status="409"} 2.0' in metrics
    finally:
        r.stop_all()


@pytest.mark.slow
def test_receiver_down_then_back_every_event_arrives_once(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    port = free_port()
    journal = tmp_path / "received.jsonl"
    r = rescue([f"http://127.0.0.1:{port}/hook"])
    alerts = [trapped(i, 10 * i) for i in range(8)] + [overload(i, 5) for i in range(8, 12)]
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        r.publish(alerts + [cleared(a) for a in alerts[:8]])
        expected = 8 + 4 + 8  # opened ×12, resolved ×8
        r.until(
            lambda: (
                r.scalar(
                    "SELECT count(*) FROM webhook_delivery"
                    " WHERE attempts >= 2 AND event_type = 'incident.opened'"
                )
                == 12
            ),
            "every opening to fail at least twice while the receiver is down",
        )
        # an incident's later events wait behind its first: order per incident holds
        assert (
            r.scalar(
                "SELECT count(*) FROM webhook_delivery WHERE attempts = 0"
                " AND event_type = 'incident.resolved'"
            )
            == 8
        )
        r.start_receiver(port, journal)
        r.until(
            lambda: (
                r.scalar("SELECT count(*) FROM webhook_delivery WHERE status = 'delivered'")
                == expected
            ),
            "every delivery once the receiver is back",
        )
        ids = journal_ids(journal)
        assert len(ids) == len(set(ids)) == expected
        assert set(ids) == {x[0] for x in r.query("SELECT webhook_id FROM webhook_delivery")}
        failures = r.query(
            "SELECT DISTINCT last_error FROM webhook_delivery WHERE status = 'delivered'"
        )
        assert failures == [(None,)]
        # per incident, the resolution came after the opening
        order = r.query(
            "SELECT incident_id, array_agg(event_type ORDER BY delivered_at, delivery_id)"
            " FROM webhook_delivery GROUP BY incident_id"
        )
        for _, types in order:
            assert types[0] == "incident.opened"
        report = subprocess.run(
            [TIANYAN, "audit", "verify"], env=r.env, capture_output=True, text=True, check=False
        )
        assert report.returncode == 0, report.stderr
        assert "ledger verified" in report.stdout
    finally:
        r.stop_all()


@pytest.mark.slow
def test_dispatcher_killed_mid_delivery_loses_nothing(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    r = rescue([])
    slow = RecordingReceiver(r.secret, free_port())
    slow.delay_s = 1.5
    r.env["TIANYAN_RESCUE_WEBHOOK_URL"] = slow.url
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        r.publish([overload(i, i) for i in range(12)])
        r.until(lambda: len(slow.ids()) >= 6, "deliveries in flight")
        r.run.group.stop("dispatcher", signal.SIGKILL)
        in_flight = r.scalar("SELECT count(*) FROM webhook_delivery WHERE status = 'pending'")
        assert in_flight > 0, "the kill should have interrupted deliveries"
        slow.delay_s = 0.0
        r.start_dispatcher(tmp_path / "dispatcher2.log")
        r.until(
            lambda: (
                r.scalar("SELECT count(*) FROM webhook_delivery WHERE status = 'delivered'") == 12
            ),
            "every delivery after the restart",
        )
        ids = slow.ids()
        assert set(ids) == {x[0] for x in r.query("SELECT webhook_id FROM webhook_delivery")}
        assert len(ids) > len(set(ids)), "interrupted deliveries are re-sent with the same id"
        assert all(req["verified"] for req in slow.requests)
        assert r.scalar("SELECT count(*) FROM incident") == 12
    finally:
        r.stop_all()
        slow.close()


@pytest.mark.slow
def test_retry_after_refusal_dead_letter_and_redelivery(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    # a cap above the 2-s Retry-After, which is honoured up to the cap
    r = rescue(
        [],
        TIANYAN_WEBHOOK_MAX_AGE_S="4",
        TIANYAN_WEBHOOK_RETRY_CAP_MS="3000",
    )
    busy, refusing, gone = (RecordingReceiver(r.secret, free_port()) for _ in range(3))
    busy.answer = lambda n: (503, {"Retry-After": "2"}) if n == 0 else (200, {})
    refusing.answer = lambda n: (400, {})
    gone.close()  # nothing listens there
    r.send_to(busy, refusing, gone)
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        r.publish([overload(0, 0)])

        def outcome(url: str) -> tuple | None:
            rows = r.query(
                "SELECT status, attempts, last_error, delivered_at - first_attempt_at"
                " FROM webhook_delivery WHERE endpoint = %s AND status <> 'pending'",
                url,
            )
            return rows[0] if rows else None

        delivered = r.until(lambda: outcome(busy.name), "the 503 then 200 endpoint")
        assert delivered[0] == "delivered" and delivered[1] == 2
        assert delivered[3] >= dt.timedelta(seconds=2)  # Retry-After honoured
        dead = r.until(lambda: outcome(refusing.name), "the refusing endpoint")
        assert dead[0] == "dead" and dead[1] == 1 and "refused by the receiver" in dead[2]
        assert "HTTP 400" in dead[2]
        aged = r.until(lambda: outcome(gone.name), "the unreachable endpoint to age out")
        assert aged[0] == "dead" and aged[1] > 1 and "gave up after" in aged[2]
        listing = subprocess.run(
            [TIANYAN, "incidents"], env=r.env, capture_output=True, text=True, check=True
        ).stdout
        assert "1 active incidents" in listing and "2 dead" in listing and "HTTP 400" in listing
        refusing.answer = lambda n: (200, {})
        delivery_id = r.scalar(
            "SELECT delivery_id FROM webhook_delivery WHERE endpoint = %s", refusing.name
        )
        redo = subprocess.run(
            [TIANYAN, "incidents", "redeliver", str(delivery_id)],
            env=r.env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "1 deliveries queued again" in redo.stdout
        r.until(lambda: (outcome(refusing.name) or ("",))[0] == "delivered", "the redelivery")
        assert len(set(refusing.ids())) == 1 and len(refusing.ids()) == 2  # same webhook-id
    finally:
        r.stop_all()
        busy.close()
        refusing.close()


@pytest.mark.slow
def test_auth_and_route_refusals_are_retried_for_a_while_and_alerted(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    r = rescue([], TIANYAN_WEBHOOK_AUTH_RETRY_S="3")
    rotated, moved, unprocessable = (RecordingReceiver(r.secret, free_port()) for _ in range(3))
    rotated.answer = lambda n: (401, {}) if n < 2 else (200, {})  # a secret rotated, then fixed
    moved.answer = lambda n: (410, {})  # the route is gone and stays gone
    unprocessable.answer = lambda n: (422, {})  # the body itself is refused
    r.send_to(rotated, moved, unprocessable)
    log = tmp_path / "dispatcher.log"
    try:
        r.start_dispatcher(log)
        r.publish([trapped(0, 0)])

        def settled(url: str) -> tuple | None:
            rows = r.query(
                "SELECT status, attempts, last_status_code, last_error FROM webhook_delivery"
                " WHERE endpoint = %s AND status <> 'pending'",
                url,
            )
            return rows[0] if rows else None

        delivered = r.until(lambda: settled(rotated.name), "the 401, 401, 200 endpoint")
        assert delivered[:3] == ("delivered", 3, 200)
        dead = r.until(lambda: settled(unprocessable.name), "the 422 endpoint")
        assert dead[:3] == ("dead", 1, 422)
        assert "refused by the receiver" in dead[3] and "HTTP 422" in dead[3]
        gone = r.until(lambda: settled(moved.name), "the 410 endpoint to give up")
        assert gone[0] == "dead" and gone[1] > 1 and gone[2] == 410
        assert "HTTP 410" in gone[3] and "TIANYAN_WEBHOOK_AUTH_RETRY_S" in gone[3]
        metrics = http("GET", f"{r.web}/metrics").text
        name = "tianyan_webhook_auth_or_route_refusals_total"
        assert f'{name}{{endpoint="{rotated.name}",status="401"}} 2.0' in metrics
        assert f'{name}{{endpoint="{moved.name}",status="410"}} {gone[1]}.0' in metrics
        refusals = metrics.split(name, 1)[1].split("# HELP")[0]
        assert f'endpoint="{unprocessable.name}"' not in refusals
        logged = [
            json.loads(line[line.index('{"asctime"') :])
            for line in log.read_text().splitlines()
            if '{"asctime"' in line
        ]
        errors = [e for e in logged if e["levelname"] == "ERROR"]
        for url, status in ((rotated.name, "401"), (moved.name, "410")):
            assert any(url in e["message"] and f"HTTP {status}" in e["message"] for e in errors), (
                f"no ERROR log naming {url} and {status}"
            )
    finally:
        r.stop_all()
        for receiver in (rotated, moved, unprocessable):
            receiver.close()


@pytest.mark.slow
def test_an_absurd_retry_after_is_capped_and_does_not_wedge_the_delivery(
    settings: Settings, rescue: Callable[..., Rescue]
) -> None:
    r = rescue([])
    huge, far = RecordingReceiver(r.secret, free_port()), RecordingReceiver(r.secret, free_port())
    huge.answer = lambda n: (503, {"Retry-After": str(10**30)}) if n == 0 else (200, {})
    year_9999 = "Fri, 31 Dec 9999 23:59:59 GMT"
    far.answer = lambda n: (503, {"Retry-After": year_9999}) if n == 0 else (200, {})
    config = store.DispatchConfig(
        (huge.name, far.name), (10**8, 2 * 10**8, 3 * 10**8), 1800, rescue_min_severity="info"
    )
    cap_s = 1.0
    sender = Sender(
        [huge.endpoint, far.endpoint],
        timeout_s=2.0,
        concurrency=4,
        schedule=RetrySchedule(0.2, cap_s, 3600),
    )

    async def deliver() -> tuple[list[store.Attempt], list[store.Attempt]]:
        try:
            first = await deliver_once(conn, sender)
            await asyncio.sleep(cap_s + 0.2)
            return first, await deliver_once(conn, sender)
        finally:
            await sender.close()

    with psycopg.connect(r.writer_url) as conn:
        store.apply_alert(conn, overload(0, 0), config, received_at=dt.datetime.now(dt.UTC))
        try:
            first, second = asyncio.run(deliver())
        finally:
            huge.close()
            far.close()
    assert [a.outcome for a in first] == ["retry", "retry"]
    for a in first:
        assert a.next_attempt_at is not None
        assert (a.next_attempt_at - a.sent_at).total_seconds() <= cap_s + 0.5
    assert [(a.outcome, a.due.attempts) for a in second] == [("delivered", 2), ("delivered", 2)]
    assert r.query("SELECT DISTINCT status FROM webhook_delivery") == [("delivered",)]


@pytest.mark.slow
def test_a_late_result_of_an_earlier_attempt_does_not_overwrite_a_newer_one(
    settings: Settings, rescue: Callable[..., Rescue]
) -> None:
    r = rescue(["http://a.invalid/hook"])
    config = store.DispatchConfig(
        ("http://a.invalid/hook",), (1, 2, 3), 1800, rescue_min_severity="info"
    )
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(r.writer_url) as conn:
        store.apply_alert(conn, overload(0, 0), config, received_at=now)
        # attempt 1 hangs past its lease, so the row falls due and is claimed again
        [first] = store.claim_due(conn, 10, 0.0, endpoints=config.endpoints, signing_key_id=None)
        [second] = store.claim_due(conn, 10, 30.0, endpoints=config.endpoints, signing_key_id=None)
        assert (first.attempts, second.attempts) == (1, 2)
        sent = dt.datetime.now(dt.UTC)
        store.record_attempts(
            conn, [store.Attempt(second, "delivered", 200, None, None, sent, 0.1)]
        )
        late = store.Attempt(
            first, "retry", 503, "HTTP 503: busy", sent + dt.timedelta(seconds=5), sent, 9.0
        )
        store.record_attempts(conn, [late])
        # the late result arrives first: the newer one still wins
        store.apply_alert(conn, overload(1, 0), config, received_at=now)
        [third] = store.claim_due(conn, 10, 0.0, endpoints=config.endpoints, signing_key_id=None)
        [fourth] = store.claim_due(conn, 10, 30.0, endpoints=config.endpoints, signing_key_id=None)
        refused = store.Attempt(third, "dead", 400, "HTTP 400: no", None, sent, 9.0)
        store.record_attempts(conn, [refused])
        store.record_attempts(
            conn, [store.Attempt(fourth, "delivered", 200, None, None, sent, 0.1)]
        )
    rows = r.query(
        "SELECT status, attempts, last_status_code, last_error, dead_at FROM webhook_delivery"
        " ORDER BY delivery_id"
    )
    assert rows == [("delivered", 2, 200, None, None)] * 2
    ledgered = [
        (p["delivery_id"], p["attempt"], p["outcome"], p["stale"])
        for (p,) in r.query(
            "SELECT payload FROM audit_ledger WHERE entry_type = 'webhook_delivery' ORDER BY seq"
        )
    ]
    one, two = first.delivery_id, third.delivery_id
    assert ledgered == [
        (one, 2, "delivered", False),
        (one, 1, "retry", True),
        (two, 1, "dead", True),
        (two, 2, "delivered", False),
    ]
    report = subprocess.run(
        [TIANYAN, "audit", "verify", "--no-anchors", "--database-url", r.admin_url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert report.returncode == 0, report.stderr


@pytest.mark.slow
def test_an_incident_s_events_arrive_in_order_behind_a_retrying_or_dead_one(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    r = rescue([])
    flaky, strict = (
        RecordingReceiver(r.secret, free_port()),
        RecordingReceiver(r.secret, free_port()),
    )
    flaky.answer = lambda n: (503, {}) if n < 3 else (200, {})  # every event fails 3 times
    strict.answer = lambda n: (422, {})  # the first event of each incident is dead at once
    r.send_to(flaky, strict)
    first, again = trapped(0, 0), trapped(0, 200)
    other = overload(1, 5)
    alerts = [first, again, cleared(again), other, cleared(other)]

    def in_order(receiver: RecordingReceiver) -> dict[str, list[str]]:
        """Per incident, the event types in the order their requests arrived (collapsed)."""
        seen: dict[str, list[str]] = {}
        for q in receiver.requests:
            types = seen.setdefault(q["payload"]["data"]["incident_id"], [])
            if not types or types[-1] != q["payload"]["type"]:
                types.append(q["payload"]["type"])
        return seen

    expected = sorted(
        [
            ["incident.opened", "incident.updated", "incident.resolved"],
            ["incident.opened", "incident.resolved"],
        ]
    )
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        r.publish(alerts)
        # retries back off: wait while attempts go on, not for a fixed time
        r.run.wait(
            lambda: r.run.row(
                "SELECT count(*) FILTER (WHERE status = 'delivered'), coalesce(sum(attempts), 0)"
                " FROM webhook_delivery WHERE endpoint = %s",
                flaky.name,
            ),
            lambda p: p[0] == 5,
            "every event through the flaky endpoint",
        )
        # retried events: each incident's next event was not sent before the last one went
        assert sorted(in_order(flaky).values()) == expected
        assert len(flaky.ids()) == 4 * 5
        # dead first events: the later ones wait behind them, never sent
        assert sorted(set(strict.ids())) == sorted(
            x[0]
            for x in r.query(
                "SELECT webhook_id FROM webhook_delivery WHERE endpoint = %s"
                " AND event_type = 'incident.opened'",
                strict.name,
            )
        )
        assert r.query(
            "SELECT status, attempts, count(*) FROM webhook_delivery WHERE endpoint = %s"
            " GROUP BY 1, 2 ORDER BY 1",
            strict.name,
        ) == [("dead", 1, 2), ("pending", 0, 3)]
        strict.answer = lambda n: (200, {})
        subprocess.run([TIANYAN, "incidents", "redeliver", "--all-dead"], env=r.env, check=True)
        r.until(
            lambda: (
                r.scalar(
                    "SELECT count(*) FROM webhook_delivery"
                    " WHERE endpoint = %s AND status = 'delivered'",
                    strict.name,
                )
                == 5
            ),
            "the redelivered events and those behind them",
        )
        assert sorted(in_order(strict).values()) == expected
    finally:
        r.stop_all()
        flaky.close()
        strict.close()


@pytest.mark.slow
def test_unacknowledged_trapping_escalates_on_its_timer(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    r = rescue([])
    hook = RecordingReceiver(r.secret, free_port())
    r.env["TIANYAN_RESCUE_WEBHOOK_URL"] = hook.url
    # timers from opening: street after 2 s, district after 4 s, city after 6 s
    r.env["TIANYAN_ESCALATION_AFTER_S"] = "2,4,6"
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    waiting = trapped(0, 0)
    waiting = msgspec.structs.replace(waiting, raised_at_ms=now_ms)
    answered = trapped(1, 0)
    answered = msgspec.structs.replace(answered, raised_at_ms=now_ms)
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        r.publish([waiting, answered])
        r.until(lambda: r.scalar("SELECT count(*) FROM incident") == 2, "two incidents")
        acked = str(
            r.scalar(
                "SELECT incident_id FROM incident WHERE elevator_id = %s",
                FLEET[1].registration_code,
            )
        )
        ok = http(
            "POST",
            f"{r.api}/incidents/{acked}/acknowledge",
            headers={"Authorization": f"Bearer {r.token}"},
        )
        assert ok.status_code == 200
        r.until(
            lambda: r.scalar("SELECT count(*) FROM incident WHERE escalation_level = 'city'") == 1,
            "the unacknowledged trapping to reach the city level",
        )
        levels = r.query(
            "SELECT e.note FROM incident_event e JOIN incident i USING (incident_id)"
            " WHERE e.event_type = 'incident.escalated' ORDER BY e.event_id"
        )
        assert [n[0].rsplit(" ", 1)[-1] for n in levels] == ["street", "district", "city"]
        assert (
            r.scalar("SELECT escalation_level FROM incident WHERE incident_id = %s", acked)
            == "enterprise"
        )
        r.until(
            lambda: (
                sum(1 for q in hook.requests if q["payload"]["type"] == "incident.escalated") >= 3
            ),
            "the escalations as webhooks",
        )
    finally:
        r.stop_all()
        hook.close()


@pytest.mark.slow
def test_audit_verify_names_what_was_altered_or_deleted(
    settings: Settings, rescue: Callable[..., Rescue], superuser_url: str
) -> None:
    r = rescue(["http://a.invalid/hook"])
    config = store.DispatchConfig(
        ("http://a.invalid/hook",), (1, 2, 3), 1800, rescue_min_severity="info"
    )
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(r.writer_url) as conn:
        for i in range(4):
            a = trapped(i, i)
            store.apply_alert(conn, a, config, received_at=now)
            store.apply_alert(conn, cleared(a), config, received_at=now)
    db = r.admin_url.rsplit("/", 1)[1]
    su = superuser_url.rsplit("/", 1)[0] + f"/{db}"

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TIANYAN, "audit", "verify", "--database-url", r.admin_url],
            capture_output=True,
            text=True,
            check=False,
        )

    def tamper(sql: str) -> str:
        with psycopg.connect(su) as conn:
            conn.execute("SET search_path = tianyan")
            conn.execute("CREATE TABLE IF NOT EXISTS backup_ledger AS TABLE audit_ledger")
            conn.execute("CREATE TABLE IF NOT EXISTS backup_event AS TABLE incident_event")
            conn.execute(sql)
        out = verify()
        with psycopg.connect(su) as conn:  # put it back
            conn.execute("SET search_path = tianyan")
            conn.execute("DELETE FROM audit_ledger")
            conn.execute(
                "INSERT INTO audit_ledger OVERRIDING SYSTEM VALUE SELECT * FROM backup_ledger"
            )
            conn.execute("DELETE FROM incident_event")
            conn.execute(
                "INSERT INTO incident_event OVERRIDING SYSTEM VALUE SELECT * FROM backup_event"
            )
        assert out.returncode == 1, out.stdout
        return out.stderr

    clean = verify()
    # 8 incident events, and the facts (registry, alerts, incidents, deliveries …)
    assert clean.returncode == 0 and "ledger verified" in clean.stdout
    assert r.scalar("SELECT count(*) FROM audit_ledger WHERE entry_type = 'incident_event'") == 8
    seq = r.scalar("SELECT min(seq) FROM audit_ledger WHERE entry_type = 'incident_event'")
    assert f"seq {seq} (incident_event" in tamper(
        "UPDATE audit_ledger"
        " SET payload = jsonb_set(payload, '{incident,state}', '\"false_alarm\"')"
        f" WHERE seq = {seq}"
    ) and "was altered" in tamper(f"UPDATE audit_ledger SET entity_id = 'x' WHERE seq = {seq}")
    assert "seq 5 deleted from the ledger" in tamper("DELETE FROM audit_ledger WHERE seq = 5")
    assert "does not follow seq 1" in tamper(
        "UPDATE audit_ledger SET prev_hash = '\\x00' WHERE seq = 2"
    )
    event_id = r.scalar("SELECT min(event_id) FROM incident_event")
    altered = tamper(f"UPDATE incident_event SET actor = 'someone' WHERE event_id = {event_id}")
    assert f"incident_event {event_id} (ledger seq {seq}) was altered: actor" in altered
    deleted = tamper(f"DELETE FROM incident_event WHERE event_id = {event_id + 1}")
    assert f"incident_event {event_id + 1}" in deleted and "was deleted" in deleted
    assert verify().returncode == 0  # restored


@pytest.mark.slow
def test_published_anchors_reveal_a_truncated_ledger(
    settings: Settings, rescue: Callable[..., Rescue], superuser_url: str, tmp_path: Path
) -> None:

    from rescue.ledger import read_anchors

    r = rescue([])
    hook = RecordingReceiver(r.secret, free_port())
    anchors_topic = r.settings.audit_anchors_topic  # the harness made it
    r.env.update(TIANYAN_RESCUE_WEBHOOK_URL=hook.url, TIANYAN_AUDIT_ANCHOR_INTERVAL_S="1")
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        r.publish([overload(i, i) for i in range(3)])
        r.until(
            lambda: (
                r.scalar("SELECT count(*) FROM webhook_delivery WHERE status = 'delivered'") == 3
            ),
            "three deliveries",
        )
        head = r.scalar("SELECT max(seq) FROM audit_ledger")
        r.until(
            lambda: any(
                a.seq == head for a in read_anchors(settings.kafka_bootstrap, anchors_topic)
            ),
            "the ledger head to be anchored",
        )
    finally:
        r.stop_all()
        hook.close()

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TIANYAN, "audit", "verify", "--database-url", r.admin_url],
            env=r.env,
            capture_output=True,
            text=True,
            check=False,
        )

    clean = verify()
    assert clean.returncode == 0, clean.stderr
    assert "published anchors match it" in clean.stdout
    assert json.loads(clean.stdout.splitlines()[-1])["anchors_checked"] >= 1
    # the tail deleted: the chain that is left is intact, the anchor is not
    db = r.admin_url.rsplit("/", 1)[1]
    with psycopg.connect(superuser_url.rsplit("/", 1)[0] + f"/{db}") as conn:
        conn.execute(f"DELETE FROM tianyan.audit_ledger WHERE seq > {head - 2}")
    truncated = verify()
    assert truncated.returncode == 1
    assert f"the ledger ends at seq {head - 2}" in truncated.stderr
    assert f"seq {head - 1}–{head} deleted from the ledger" in truncated.stderr


@pytest.mark.slow
def test_two_dispatchers_share_the_work_and_send_each_change_once(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    r = rescue([])
    hook = RecordingReceiver(r.secret, free_port())
    r.env["TIANYAN_RESCUE_WEBHOOK_URL"] = hook.url
    alerts = [trapped(i, i) for i in range(6)] + [overload(i, i) for i in range(6, 12)]
    try:
        r.start_dispatcher(tmp_path / "first.log")
        second_port = free_port()
        r.start_dispatcher(tmp_path / "second.log", TIANYAN_DISPATCHER_WEB_PORT=str(second_port))
        r.until(lambda: listening(second_port), "the second dispatcher")
        time.sleep(3.0)  # the group rebalances over both
        r.publish(alerts + [cleared(a) for a in alerts])
        r.until(
            lambda: (
                r.scalar("SELECT count(*) FROM webhook_delivery WHERE status = 'delivered'") == 24
            ),
            "every change delivered",
        )
        time.sleep(1.0)  # anything sent twice would have arrived by now
        for port in (r.web_port, second_port):  # each applied alerts of its own partition
            metrics = http("GET", f"http://127.0.0.1:{port}/metrics").text
            assert 'tianyan_dispatcher_alerts_total{result="applied"}' in metrics
        ids = hook.ids()
        assert len(ids) == len(set(ids)) == 24
        assert r.scalar("SELECT count(*) FROM incident") == 12
        assert r.scalar("SELECT count(*) FROM incident WHERE state = 'resolved'") == 12
        report = subprocess.run(
            [TIANYAN, "audit", "verify", "--no-anchors", "--database-url", r.admin_url],
            capture_output=True,
            text=True,
            check=False,
        )
        assert report.returncode == 0, report.stderr
    finally:
        r.stop_all()
        hook.close()


def test_decide_alert_opens_updates_resolves_and_ignores() -> None:
    from rescue.lifecycle import decide_alert

    first = trapped(0, 0, people=2)
    assert decide_alert(None, first).action == "open"
    active = {
        "severity": "major",
        "estimated_trapped": 3,
        "state": "acknowledged",
        "details": {"last_alert_key": first.alert_key},
    }
    again = decide_alert(active, trapped(0, 40, people=1))
    assert (again.action, again.event_type) == ("update", "incident.updated")
    assert again.estimated_trapped == 3  # the people trapped only ever rise
    assert again.severity == "critical"  # so does severity
    assert decide_alert(active, cleared(first)).action == "resolve"
    stale = cleared(trapped(0, 99))  # a clear of another episode changes nothing
    assert decide_alert(active, stale).action == "ignore"
    assert decide_alert(None, cleared(first)).action == "ignore"
    import doctest

    import rescue.lifecycle

    assert doctest.testmod(rescue.lifecycle).failed == 0
