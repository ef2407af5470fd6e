"""Routing, escalation to each response level's endpoint, reopening, the car's place in the
webhook, measured arrival and the reconciliation reads (issue 16, parts 1-3).

One dispatcher on the real Kafka and TimescaleDB serves the module, with real HTTP receivers
for the rescue platform, the maintenance company, a street endpoint, Haizhou's own district
endpoint and the district endpoint for every other district — each with its own secret.
Its timers never escalate: the tests call the store's escalation with an explicit time, and
the dispatcher delivers what that queued.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from detectors.alerts import Alert, make_alert
from detectors.diagnosis import DIAGNOSIS
from detectors.rules import RuleState, observe
from detectors.testing import car, message
from detectors.thresholds import ElevatorLimits, Thresholds
from foundation.settings import Settings, SettingsError
from registry.store import upsert
from rescue import store
from rescue.delivery import new_secret, signed_content
from rescue.routing import Routing, RoutingError, parse_endpoint_entry
from tianyan.harness import Run, pipeline
from tianyan.processes import free_port

from .rescue_support import FLEET, T0_MS, RecordingReceiver, Rescue, cleared, http, wait_for

#: Haizhou has its own district endpoint; every other district shares one.
HAIZHOU = "Haizhou"
HAIZHOU_CAR, OTHER_CAR = 7, 0
assert FLEET[HAIZHOU_CAR].district == HAIZHOU and FLEET[OTHER_CAR].district != HAIZHOU
ESCALATION = (300, 900, 1800)


def trapped_at(car_index: int, since_s: float, floor: int = 7) -> Alert:
    return make_alert(
        FLEET[car_index].registration_code,
        "trapped_between_levels",
        T0_MS + int(since_s * 1000),
        T0_MS + int((since_s + 30) * 1000),
        {"speed_mps": 0.0, "door_zone": False, "floor": floor, "passengers": True},
        estimated_trapped=2,
    )


def offline(car_index: int) -> Alert:
    return make_alert(
        FLEET[car_index].registration_code, "device_offline", T0_MS, T0_MS + 120_000, {}
    )


@dataclass
class Routed:
    run: Run
    rescue: Rescue
    receivers: dict[str, RecordingReceiver]
    token: str
    action_secret: str
    config: store.DispatchConfig  # the dispatcher's, for the store calls the tests make

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.run.settings.rescue_api_port}"

    def incident(self, car_index: int, fault: str = "trapped_between_levels") -> str:
        return str(
            self.run.scalar(
                "SELECT incident_id FROM incident WHERE elevator_id = %s AND fault_type = %s"
                " ORDER BY opened_at DESC LIMIT 1",
                FLEET[car_index].registration_code,
                fault,
            )
        )

    def wait_incident(self, car_index: int, fault: str = "trapped_between_levels") -> str:
        e = FLEET[car_index].registration_code
        wait_for(
            lambda: self.run.scalar(
                "SELECT count(*) FROM incident WHERE elevator_id = %s AND fault_type = %s",
                e,
                fault,
            ),
            60,
            f"the {fault} incident of car {car_index}",
        )
        return self.incident(car_index, fault)

    def bearer(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        answer = http(
            method,
            self.api + path,
            headers={"authorization": f"Bearer {self.token}"},
            json_body=body,
        )
        return answer.status_code, answer.json()

    def signed_get(self, path: str, secret: str | None = None, sign_path: str | None = None):
        webhook_id, now = f"req_{uuid.uuid4().hex}", dt.datetime.now(dt.UTC)
        content = signed_content("GET", sign_path or path, b"").decode()
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret or self.action_secret).sign(
                webhook_id, now, content
            ),
        }
        return headers, http("GET", self.api + path, headers=headers)

    def received(self, name: str, incident_id: str) -> list[dict[str, Any]]:
        return [
            r["payload"]
            for r in list(self.receivers[name].requests)
            if r["payload"]["data"]["incident_id"] == incident_id
        ]


@pytest.fixture(scope="module")
def routed(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    work = tmp_path_factory.mktemp("rescue-routing")
    secrets = {name: new_secret() for name in ("rescue", "maint", "street", "haizhou", "any")}
    receivers = {name: RecordingReceiver(secret, free_port()) for name, secret in secrets.items()}
    urls = (
        receivers["rescue"].url,
        "maintenance=" + receivers["maint"].url,
        "street=" + receivers["street"].url,
        f"district@{HAIZHOU}=" + receivers["haizhou"].url,
        "district=" + receivers["any"].url,
    )
    token, action_secret = uuid.uuid4().hex, new_secret()
    config = store.DispatchConfig(
        (receivers["rescue"].name,),
        ESCALATION,
        1800,
        maintenance_endpoints=(receivers["maint"].name,),
        level_endpoints=(
            ("street", None, receivers["street"].name),
            ("district", HAIZHOU, receivers["haizhou"].name),
            ("district", None, receivers["any"].name),
        ),
    )
    try:
        with pipeline(
            settings,
            f"tianyan_test_routing_{uuid.uuid4().hex[:8]}",
            work,
            partitions=1,
            rescue_webhook_urls=urls,
            rescue_webhook_secret=" ".join(secrets.values()),
            rescue_action_secret=action_secret,
            rescue_api_token=token,
            webhook_retry_base_s=0.2,
            webhook_retry_cap_s=1.0,
            webhook_timeout_s=2.0,
            escalation_after_s=(10**8, 2 * 10**8, 3 * 10**8),  # the tests escalate
        ) as run:
            upsert(run.admin_url, FLEET)
            run.start_dispatcher(log=work / "dispatcher.log")
            yield Routed(
                run, Rescue(run, run.env(), token), receivers, token, action_secret, config
            )
    finally:
        for r in receivers.values():
            r.close()


# -- the policy, pure ------------------------------------------------------------------------
def test_default_policy_sends_trappings_and_critical_faults_to_the_rescue_platform() -> None:
    policy = Routing()
    rescue = {t for t, d in DIAGNOSIS.items() if policy.route(t, d.severity) == "rescue"}
    assert {"trapped_between_levels", "trapped_at_level", "overspeed"} <= rescue
    assert all(DIAGNOSIS[t].severity == "critical" for t in rescue)
    for kind in ("device_offline", "trip_anomaly", "repeated_door_reopening", "overload"):
        assert policy.route(kind, DIAGNOSIS[kind].severity) == "maintenance"
    assert Routing(rescue_min_severity="info").route("trip_anomaly", "info") == "rescue"
    with pytest.raises(RoutingError, match="unknown endpoint kind 'county'"):
        parse_endpoint_entry("county=https://x.example/h")
    with pytest.raises(RoutingError, match="only a response level"):
        parse_endpoint_entry("maintenance@Haizhou=https://x.example/h")


def test_bad_routing_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIANYAN_RESCUE_MIN_SEVERITY", "urgent")
    with pytest.raises(SettingsError, match="TIANYAN_RESCUE_MIN_SEVERITY='urgent'"):
        Settings.from_env()


def test_detectors_put_the_car_s_floor_and_door_zone_in_the_evidence() -> None:
    lim = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000, floors=10)
    st, alerts = RuleState.new("32070620200000000001"), []
    for sec in range(35):
        rows = [
            car(
                t_ms=1_700_000_000_000 + sec * 1000 + k * 100,
                position_m=4.5,
                floor=2,
                door_zone=False,
                passengers=True,
                load_kg=150.0,
            )
            for k in range(10)
        ]
        st, out = observe(st, message(rows, seq=sec), lim, Thresholds())
        alerts += out
    trapping = next(a for a in alerts if a.alert_type == "trapped_between_levels")
    assert trapping.evidence["floor"] == 2 and trapping.evidence["door_zone"] is False


# -- routing on the real stack ---------------------------------------------------------------
def test_device_offline_is_recorded_and_goes_only_to_the_maintenance_endpoint(
    routed: Routed,
) -> None:
    routed.rescue.publish([offline(3), trapped_at(HAIZHOU_CAR, 0)])
    down = routed.wait_incident(3, "device_offline")
    trapping = routed.wait_incident(HAIZHOU_CAR)
    wait_for(lambda: routed.received("maint", down), 60, "device_offline at the maintenance")
    wait_for(lambda: routed.received("rescue", trapping), 60, "the trapping at the rescue")
    endpoints = {
        incident: {
            r[0]
            for r in routed.rescue.query(
                "SELECT endpoint FROM webhook_delivery WHERE incident_id = %s", incident
            )
        }
        for incident in (down, trapping)
    }
    assert endpoints[down] == {routed.receivers["maint"].name}
    # a trapping goes to the rescue platform and the enterprise level (none set here)
    assert endpoints[trapping] == {routed.receivers["rescue"].name}
    assert routed.received("maint", trapping) == []
    assert (
        routed.run.scalar("SELECT details->>'route' FROM incident WHERE incident_id = %s", down)
        == "maintenance"
    )
    assert all(r["verified"] for h in routed.receivers.values() for r in h.requests)


def test_without_a_maintenance_endpoint_device_offline_is_recorded_and_sent_nowhere(
    routed: Routed,
) -> None:
    rescue_only = store.DispatchConfig(routed.config.endpoints, ESCALATION, 1800)
    with psycopg.connect(routed.run.writer_url) as conn:
        changes = store.apply_alert(
            conn, offline(5), rescue_only, received_at=dt.datetime.now(dt.UTC)
        )
    assert [c.event_type for c in changes] == ["incident.opened"]
    assert (
        routed.run.scalar(
            "SELECT count(*) FROM webhook_delivery WHERE incident_id = %s", changes[0].incident_id
        )
        == 0
    )
    assert (
        routed.run.scalar(
            "SELECT state FROM incident WHERE incident_id = %s", changes[0].incident_id
        )
        == "open"
    )


def test_the_webhook_carries_the_stopped_car_s_floor_and_door_zone(routed: Routed) -> None:
    trapping = routed.wait_incident(HAIZHOU_CAR)
    wait_for(lambda: routed.received("rescue", trapping), 60, "the trapping's webhook")
    opened = routed.received("rescue", trapping)[0]
    assert opened["type"] == "incident.opened"
    assert opened["data"]["car"]["floor"] == 7 and opened["data"]["car"]["door_zone"] is False
    assert opened["data"]["route"] == "rescue"


# -- escalation ------------------------------------------------------------------------------
def test_an_escalation_notifies_the_new_level_s_own_endpoint(routed: Routed) -> None:
    routed.rescue.publish([trapped_at(OTHER_CAR, 0)])
    haizhou, other = routed.wait_incident(HAIZHOU_CAR), routed.wait_incident(OTHER_CAR)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ESCALATION[1] + 1)  # → district
    with psycopg.connect(routed.run.writer_url) as conn:
        changes = store.escalate_due(conn, routed.config, later)
    steps = [(str(c.incident_id), c.event_type) for c in changes]
    assert steps.count((haizhou, "incident.escalated")) == 2  # street, then district

    def levels(name: str, incident: str) -> list[str]:
        return [
            p["data"]["escalation_level"]
            for p in routed.received(name, incident)
            if p["type"] == "incident.escalated"
        ]

    wait_for(lambda: levels("haizhou", haizhou) and levels("any", other), 60, "districts told")
    wait_for(lambda: len(levels("street", haizhou)) == 2, 60, "the street told of both steps")
    # Haizhou's own endpoint, not the shared one; the street learnt first, and follows
    assert levels("haizhou", haizhou) == ["district"] and levels("any", haizhou) == []
    assert levels("haizhou", other) == [] and levels("any", other) == ["district"]
    assert levels("street", haizhou) == ["street", "district"]
    assert routed.received("haizhou", haizhou)[0]["data"]["car"]["floor"] == 7


def test_acknowledged_trapping_without_arrival_escalates_by_the_arrival_rule(
    routed: Routed,
) -> None:
    routed.rescue.publish([trapped_at(6, 0)])
    incident = routed.wait_incident(6)
    status, body = routed.bearer("POST", f"/incidents/{incident}/acknowledge", {})
    assert status == 200, body
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(routed.run.writer_url) as conn:
        before = store.escalate_due(conn, routed.config, now + dt.timedelta(seconds=1700))
        overdue = store.escalate_due(conn, routed.config, now + dt.timedelta(seconds=1801))
        again = store.escalate_due(conn, routed.config, now + dt.timedelta(seconds=3700))
    mine = [c for c in before + overdue + again if str(c.incident_id) == incident]
    assert [c.event_type for c in mine] == ["incident.escalated"]
    assert mine[0] in overdue
    row = routed.run.row(
        "SELECT state, escalation_level, details->>'arrival_overdue_at' FROM incident"
        " WHERE incident_id = %s",
        incident,
    )
    assert row[0] == "acknowledged" and row[1] == "street" and row[2]
    wait_for(lambda: routed.received("street", incident), 60, "the street endpoint told")
    note = routed.received("street", incident)[0]["data"]["note"]
    assert "nobody arrived within 1800 s" in note


# -- reopening -------------------------------------------------------------------------------
def test_resolved_while_the_condition_holds_is_reopened_on_the_next_alert(
    routed: Routed,
) -> None:
    first = trapped_at(2, 0)
    routed.rescue.publish([first])
    incident = routed.wait_incident(2)
    status, body = routed.bearer("POST", f"/incidents/{incident}/resolve", {})
    assert status == 200 and body["state"] == "resolved"
    routed.rescue.publish([trapped_at(2, 300)])  # still trapped: alerted again
    wait_for(
        lambda: (
            routed.run.scalar("SELECT state FROM incident WHERE incident_id = %s", incident)
            == "open"
        ),
        60,
        "the incident reopened",
    )
    e = FLEET[2].registration_code
    assert routed.run.scalar("SELECT count(*) FROM incident WHERE elevator_id = %s", e) == 1
    wait_for(
        lambda: any(p["type"] == "incident.reopened" for p in routed.received("rescue", incident)),
        60,
        "the reopening delivered",
    )
    # once the condition cleared, the next alert is a new incident
    status, _ = routed.bearer("POST", f"/incidents/{incident}/resolve", {})
    assert status == 200
    routed.rescue.publish([cleared(trapped_at(2, 300)), trapped_at(2, 900)])
    wait_for(
        lambda: routed.run.scalar("SELECT count(*) FROM incident WHERE elevator_id = %s", e) == 2,
        60,
        "a new incident after the clearing",
    )


# -- measured arrival ------------------------------------------------------------------------
def test_arrive_takes_the_time_measured_on_site_and_checks_it(routed: Routed) -> None:
    alert = trapped_at(8, 0)
    routed.rescue.publish([alert])
    incident = routed.wait_incident(8)
    path = f"/incidents/{incident}/arrive"
    opened = dt.datetime.fromtimestamp(alert.raised_at_ms / 1000, dt.UTC)  # when it opened
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    status, body = routed.bearer("POST", path, {"arrived_at": future.isoformat()})
    assert status == 422 and "in the future" in body["error"]
    early = (opened - dt.timedelta(minutes=1)).isoformat()
    status, body = routed.bearer("POST", path, {"arrived_at": early})
    assert status == 422 and "before the incident opened" in body["error"]
    status, body = routed.bearer("POST", path, {"arrived_at": "2026-11-19T10:00:00"})
    assert status == 400 and "arrived_at" in body["error"]
    status, body = routed.bearer(
        "POST", f"/incidents/{incident}/acknowledge", {"arrived_at": opened.isoformat()}
    )
    assert status == 400 and "arrived_at is for arrive" in body["error"]
    assert routed.run.scalar("SELECT state FROM incident WHERE incident_id = %s", incident) == (
        "open"
    )
    on_site = opened + dt.timedelta(minutes=12)
    status, body = routed.bearer("POST", path, {"arrived_at": on_site.isoformat()})
    assert status == 200, body
    assert body["arrival_s"] == 720 and body["arrival_on_time"] is True
    times = routed.run.row(
        "SELECT arrived_at, acknowledged_at FROM incident WHERE incident_id = %s", incident
    )
    assert times == (on_site, on_site)  # arrived straight from open: acknowledged then too


# -- reconciliation --------------------------------------------------------------------------
def test_get_incident_and_list_are_authenticated_as_the_actions_are(routed: Routed) -> None:
    incident = routed.wait_incident(HAIZHOU_CAR)
    path = f"/incidents/{incident}"
    assert http("GET", routed.api + path).status_code == 401
    _, bad = routed.signed_get(path, secret=new_secret())
    assert bad.status_code == 401 and "signature" in bad.json()["error"]
    _, elsewhere = routed.signed_get(path, sign_path=f"/incidents/{uuid.uuid4()}")
    assert elsewhere.status_code == 401
    headers, good = routed.signed_get(path)
    assert good.status_code == 200, good.text
    view = good.json()
    assert view["incident_id"] == incident and view["state"] == "open"
    assert view["car"] == {**view["car"], "floor": 7, "door_zone": False}
    assert view["events"][0]["event_type"] == "incident.opened"
    replay = http("GET", routed.api + path, headers=headers)
    assert replay.status_code == 409 and "replayed" in replay.json()["error"]
    status, body = routed.bearer("GET", f"/incidents/{uuid.uuid4()}")
    assert status == 404
    for query, what in (
        ("state=bogus", "state='bogus'"),
        ("since=2026-12-01T00:00:00", "UTC offset"),
        ("limit=0", "limit=0"),
        ("after=xyz", "cursor"),
        ("colour=red", "unknown parameter"),
    ):
        status, body = routed.bearer("GET", f"/incidents?{query}")
        assert status == 400 and what in body["error"], (query, body)


def test_list_pages_through_what_changed_since(routed: Routed) -> None:
    routed.wait_incident(HAIZHOU_CAR)
    since = dt.datetime.fromtimestamp(T0_MS / 1000 - 3600, dt.UTC).isoformat()
    query = urllib.parse.urlencode({"state": "open,acknowledged", "since": since, "limit": 1})
    seen: list[str] = []
    path: str | None = f"/incidents?{query}"
    while path is not None:
        _, page = routed.signed_get(path)  # the next page's path is signed as sent
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["count"] == len(body["incidents"]) <= 1
        seen += [i["incident_id"] for i in body["incidents"]]
        path = body["next"]
    expected = routed.rescue.query(
        "SELECT incident_id::text FROM incident WHERE state IN ('open', 'acknowledged')"
        " AND coalesce(details->>'route', 'rescue') = 'rescue' ORDER BY updated_at, incident_id"
    )
    assert seen == [r[0] for r in expected] and len(seen) >= 2
    status, body = routed.bearer("GET", "/incidents?route=maintenance&state=open")
    assert status == 200
    assert {i["fault"]["type"] for i in body["incidents"]} == {"device_offline"}
    assert json.dumps(body, ensure_ascii=False)  # plain JSON throughout
