"""The acknowledgement API and the webhook sender under attack (issue 15, parts 3, 4, 6):
credentials kept apart, signatures over method, path and body, replays, idempotency keys,
bounds, rate limit, bind addresses; no redirect followed, https required, URLs redacted.

One dispatcher on the real Kafka and TimescaleDB serves the whole module, with real HTTP
receivers; hypothesis throws random requests at its API and no answer may be a 5xx.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from foundation.settings import Settings
from registry.store import upsert
from rescue.delivery import EndpointError, endpoint_name, new_secret, redact_url, signed_content
from rescue.dispatcher import ACTION_BODY_MAX_BYTES, ACTOR_MAX_CHARS, Dispatcher
from sql.migrate import migrate
from tianyan.harness import Run, pipeline
from tianyan.processes import free_port

from .conftest import TIANYAN
from .rescue_support import FLEET, RecordingReceiver, Rescue, overload, trapped, wait_for

#: What a URL may hide, and must never be shown or stored.
TOKEN = "tok3nINpath"
QUERY_TOKEN = "tok3nINquery"
PASSWORD = "pa55word"
#: The rate limit the module's dispatcher runs with (requests a minute per credential).
RATE = 200
#: The address the API is bound to (any 127/8 address is the loopback on Linux).
API_HOST = "127.0.0.2"
STATE_OF = "SELECT state FROM incident WHERE incident_id = %s"
LEDGERED = "SELECT count(*) FROM audit_ledger WHERE entry_type = 'webhook_delivery'"


@dataclass
class Api:
    run: Run
    token: str
    action_secret: str
    webhook_secrets: dict[str, str]
    receivers: dict[str, RecordingReceiver]
    log: Path

    @property
    def port(self) -> int:
        return self.run.settings.rescue_api_port

    def incident(self, car: int) -> str:
        e = FLEET[car].registration_code
        return str(self.run.scalar("SELECT incident_id FROM incident WHERE elevator_id = %s", e))

    def state(self, incident_id: str) -> str:
        return str(self.run.scalar(STATE_OF, incident_id))

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str | bytes] | None = None,
        host: str = API_HOST,
        port: int | None = None,
    ) -> tuple[int, str, dict[str, str]]:
        """One raw request (any header bytes, any path): status, body text, headers."""
        conn = http.client.HTTPConnection(host, port or self.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            conn.putheader("content-length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace"), dict(resp.getheaders())
        finally:
            conn.close()

    def bearer(self, path: str, body: bytes = b"", **headers: str) -> tuple[int, dict[str, Any]]:
        status, text, _ = self.request(
            "POST", path, body, {"authorization": f"Bearer {self.token}", **headers}
        )
        return status, json.loads(text)

    def signed_headers(
        self, path: str, body: bytes, secret: str | None = None, method: str = "POST"
    ) -> dict[str, str | bytes]:
        webhook_id = f"req_{uuid.uuid4().hex}"
        now = dt.datetime.now(dt.UTC)
        # a body that is not UTF-8 cannot be signed with the library: the API says so (400)
        content = signed_content(method, path, body).decode(errors="replace")
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret or self.action_secret).sign(
                webhook_id, now, content
            ),
        }


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    work = tmp_path_factory.mktemp("rescue-api")
    rotating_old, rotating_new, own = new_secret(), new_secret(), new_secret()
    receivers = {
        "rotating": RecordingReceiver(rotating_old, free_port()),  # its URL carries tokens
        "own": RecordingReceiver(own, free_port()),
        "target": RecordingReceiver(own, free_port()),  # where the redirects point
        "found": RecordingReceiver(own, free_port()),  # answers 302
        "temporary": RecordingReceiver(own, free_port()),  # answers 307
    }
    target = receivers["target"].url + f"?token={QUERY_TOKEN}"
    receivers["found"].answer = lambda n: (302, {"Location": target})
    receivers["temporary"].answer = lambda n: (307, {"Location": target})
    rotating_url = (
        f"http://platform:{PASSWORD}@127.0.0.1:{receivers['rotating'].port}"
        f"/hook/{TOKEN}?key={QUERY_TOKEN}"
    )
    urls = (
        rotating_url,
        receivers["own"].url,
        receivers["found"].url,
        receivers["temporary"].url,
    )
    secrets = f"{rotating_old},{rotating_new} {own} {own} {own}"
    token, action_secret = uuid.uuid4().hex, new_secret()
    try:
        with pipeline(
            settings,
            f"tianyan_test_api_{uuid.uuid4().hex[:8]}",
            work,
            partitions=1,
            rescue_webhook_urls=urls,
            rescue_webhook_secret=secrets,
            rescue_action_secret=action_secret,
            rescue_api_token=token,
            rescue_api_bind=API_HOST,
            rescue_api_rate_per_minute=RATE,
            webhook_retry_base_s=0.2,
            webhook_retry_cap_s=1.0,
            webhook_timeout_s=2.0,
            escalation_after_s=(10**8, 2 * 10**8, 3 * 10**8),
            rescue_min_severity="info",  # the overloads to the rescue endpoints too
        ) as run:
            upsert(run.admin_url, FLEET)
            log = work / "dispatcher.log"
            run.start_dispatcher(log=log)
            a = Api(
                run,
                token,
                action_secret,
                {"old": rotating_old, "new": rotating_new, "own": own},
                receivers,
                log,
            )
            Rescue(run, run.env(), token).publish(
                [trapped(0, 0)] + [overload(car, 0) for car in range(1, 12)]
            )
            wait_for(lambda: run.scalar("SELECT count(*) FROM incident") == 12, 60, "incidents")
            wait_for(lambda: listening_at(API_HOST, a.port), 30, "the API")
            yield a
    finally:
        for r in receivers.values():
            r.close()


def listening_at(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# -- credentials kept apart ------------------------------------------------------------------
def test_a_webhook_secret_authorises_no_action(api: Api) -> None:
    """Finding: one whsec_ secret signed every webhook and authorised actions, so any
    receiver could resolve any incident."""
    incident = api.incident(1)
    path = f"/incidents/{incident}/false-alarm"
    body = b'{"actor": "a webhook receiver"}'
    for secret in api.webhook_secrets.values():
        # signed as the API wants it, and as the old API took it (the body alone)
        status, text, _ = api.request("POST", path, body, api.signed_headers(path, body, secret))
        assert status == 401 and "signature" in json.loads(text)["error"]
        headers = api.signed_headers(path, body, secret)
        webhook_id, at = str(headers["webhook-id"]), dt.datetime.now(dt.UTC)
        headers["webhook-signature"] = Webhook(secret).sign(webhook_id, at, body.decode())
        status, text, _ = api.request("POST", path, body, headers)
        assert status == 401, text
    assert api.state(incident) == "open"
    # the platform's own secret acts
    status, text, _ = api.request("POST", path, body, api.signed_headers(path, body))
    assert status == 200 and json.loads(text)["state"] == "false_alarm"


def test_each_endpoint_signed_with_its_own_secrets_all_during_a_rotation(api: Api) -> None:
    rotating, own = api.receivers["rotating"], api.receivers["own"]
    wait_for(lambda: len(rotating.requests) >= 12 and len(own.requests) >= 12, 60, "webhooks")
    old, new = Webhook(api.webhook_secrets["old"]), Webhook(api.webhook_secrets["new"])
    own_hook = Webhook(api.webhook_secrets["own"])
    for r in rotating.requests:
        signatures = r["headers"]["webhook-signature"].split(" ")
        assert len(signatures) == 2  # v1,<old> v1,<new>
        for hook in (old, new):  # a receiver holding either secret verifies it
            hook.verify(r["body"], r["headers"])
        with pytest.raises(Exception, match="No matching signature"):
            own_hook.verify(r["body"], r["headers"])
    for r in own.requests:
        own_hook.verify(r["body"], r["headers"])
        with pytest.raises(Exception, match="No matching signature"):
            old.verify(r["body"], r["headers"])


# -- signatures over method, path and body; replays ------------------------------------------
def test_a_signed_request_is_good_once_and_for_its_own_path_only(api: Api) -> None:
    """Finding: a signed request that got a 404 or 409 could be replayed within 5 minutes
    to another incident or action."""
    victim = api.incident(2)
    body = b'{"actor": "unit 9"}'
    unknown = f"/incidents/{uuid.uuid4()}/resolve"
    headers = api.signed_headers(unknown, body)
    status, text, _ = api.request("POST", unknown, body, headers)
    assert status == 404 and "no incident" in json.loads(text)["error"]
    # the same signed request sent to a real incident: its signature covers the path
    status, text, _ = api.request("POST", f"/incidents/{victim}/acknowledge", body, headers)
    assert status == 401 and "signature" in json.loads(text)["error"]
    # the same path again: a replay, refused though the first answer was a 404
    status, text, _ = api.request("POST", unknown, body, headers)
    assert status == 409 and "replayed" in json.loads(text)["error"]
    # a request refused for its state (409) cannot be replayed either
    done = f"/incidents/{victim}/arrive"
    signed = api.signed_headers(done, body)
    status, text, _ = api.request("POST", done, body, signed)
    assert status == 200, text
    status, text, _ = api.request("POST", done, body, signed)
    assert status == 409 and "replayed" in json.loads(text)["error"]
    # another method or body under the same signature does not verify
    fresh = api.signed_headers(f"/incidents/{victim}/resolve", body)
    status, _, _ = api.request("POST", f"/incidents/{victim}/resolve", b'{"actor": "x"}', fresh)
    assert status == 401
    assert api.state(victim) == "arrived"


# -- idempotency keys ------------------------------------------------------------------------
def test_an_idempotency_key_is_scoped_to_its_incident_and_action(api: Api) -> None:
    """Finding: keys were global; reusing one for another incident answered the first
    incident's 200 and never acknowledged the second."""
    first, second = api.incident(3), api.incident(4)
    key = f"ack-{uuid.uuid4().hex}"
    body = b'{"actor": "unit 3"}'
    status, answer = api.bearer(f"/incidents/{first}/acknowledge", body, **{"idempotency-key": key})
    assert status == 200 and answer["incident_id"] == first
    status, answer = api.bearer(
        f"/incidents/{second}/acknowledge", body, **{"idempotency-key": key}
    )
    assert status == 200 and answer["incident_id"] == second and "duplicate" not in answer
    assert api.state(second) == "acknowledged"
    status, answer = api.bearer(f"/incidents/{first}/acknowledge", body, **{"idempotency-key": key})
    assert status == 200 and answer["duplicate"] is True and answer["incident_id"] == first
    status, answer = api.bearer(
        f"/incidents/{first}/acknowledge", b'{"actor": "unit 4"}', **{"idempotency-key": key}
    )
    assert status == 422 and "another request" in answer["error"]


# -- malformed credentials and headers, bounds -----------------------------------------------
def test_malformed_credentials_and_headers_get_a_4xx_with_the_reason(api: Api) -> None:
    """Finding: a non-ASCII bearer token, or a malformed signature header, gave a 500."""
    path = f"/incidents/{api.incident(5)}/acknowledge"
    body = b"{}"
    for value in ("Bearer caf\u00e9".encode(), "Bearer \u4e2d\u6587".encode(), b"Bearer \xff\xfe"):
        status, text, _ = api.request("POST", path, body, {"authorization": value})
        assert status == 401 and "token" in json.loads(text)["error"], text
    good = api.signed_headers(path, body)
    for signature in ("v1", "v1,not base64!", "garbage", "v1,QUJD v1", "v1,\u00e9".encode()):
        status, text, _ = api.request("POST", path, body, {**good, "webhook-signature": signature})
        assert 400 <= status < 500 and json.loads(text)["error"], (signature, text)
    for timestamp in ("soon", "1e400", "-1"):
        status, text, _ = api.request("POST", path, body, {**good, "webhook-timestamp": timestamp})
        assert status == 401 and json.loads(text)["error"], text
    status, text, _ = api.request("POST", path, body, {**good, "webhook-id": "caf\u00e9".encode()})
    assert status == 401 and "webhook-id" in json.loads(text)["error"]
    assert api.state(api.incident(5)) == "open"


def test_fields_and_bodies_are_bounded(api: Api) -> None:
    """Finding: actor and note were unbounded."""
    path = f"/incidents/{api.incident(6)}/acknowledge"
    long_actor = json.dumps({"actor": "x" * (ACTOR_MAX_CHARS + 1)}).encode()
    status, answer = api.bearer(path, long_actor)
    assert status == 400 and "actor" in answer["error"]
    status, answer = api.bearer(path, json.dumps({"actor": "u", "note": "n" * 5000}).encode())
    assert status == 400 and "note" in answer["error"]
    status, text, _ = api.request(
        "POST",
        path,
        b"{" + b" " * ACTION_BODY_MAX_BYTES + b"}",
        {"authorization": f"Bearer {api.token}"},
    )
    assert status == 413 and json.loads(text)["error"]
    assert api.state(api.incident(6)) == "open"


def test_a_flood_from_one_credential_is_limited(api: Api) -> None:
    """Finding: no rate limit."""
    path = f"/incidents/{api.incident(7)}/acknowledge"
    flood = {"authorization": f"Bearer flood-{uuid.uuid4().hex}"}
    statuses = [api.request("POST", path, b"{}", flood)[0] for _ in range(RATE)]
    assert set(statuses) == {401}
    status, text, headers = api.request("POST", path, b"{}", flood)
    assert status == 429 and "rate limit" in json.loads(text)["error"]
    assert int(headers["Retry-After"]) >= 1
    # another credential is not held back by it
    status, answer = api.bearer(path, b"{}")
    assert status == 200 and answer["state"] == "acknowledged"


# -- addresses -------------------------------------------------------------------------------
def test_the_api_listens_where_configured_and_metrics_elsewhere(api: Api) -> None:
    """Finding: the API was bound to 127.0.0.1, fixed in the code."""
    assert listening_at(API_HOST, api.port)
    assert not listening_at("127.0.0.1", api.port)
    status, text, _ = api.request("GET", "/metrics")
    assert status == 404 and "POST /incidents" in json.loads(text)["error"]
    web_port = api.run.settings.dispatcher_web_port
    status, text, _ = api.request("GET", "/metrics", host="127.0.0.1", port=web_port)
    assert status == 200 and "tianyan_incident_action_requests_total" in text


# -- the sender ------------------------------------------------------------------------------
def test_redirects_are_failed_attempts_never_followed(api: Api) -> None:
    """Finding: 301/302 became a GET whose 2xx counted as delivered; 307/308 re-posted the
    signed payload wherever the Location pointed."""
    found, temporary = api.receivers["found"], api.receivers["temporary"]
    wait_for(lambda: len(found.requests) >= 2 and len(temporary.requests) >= 2, 60, "retries")
    assert api.receivers["target"].requests == []  # never reached through a redirect
    rows = api.run.row(
        "SELECT count(*) FILTER (WHERE status = 'delivered'), max(last_error)"
        " FROM webhook_delivery WHERE endpoint = %s",
        found.name,
    )
    assert rows is not None and rows[0] == 0
    assert "HTTP 302" in rows[1] and "not followed" in rows[1]
    assert redact_url(api.receivers["target"].url) in rows[1] and QUERY_TOKEN not in rows[1]
    codes = api.run.scalar(
        "SELECT array_agg(DISTINCT last_status_code) FROM webhook_delivery"
        " WHERE endpoint = %s AND last_status_code IS NOT NULL",
        temporary.name,
    )
    assert codes == [307]


def test_plain_http_endpoints_need_the_development_flag(settings: Settings) -> None:
    """Finding: http:// endpoints were accepted silently."""
    plain = replace(
        settings,
        rescue_webhook_urls=("http://96333.example/hook",),
        rescue_webhook_secret=new_secret(),
        rescue_allow_http=False,
    )
    with pytest.raises(EndpointError, match=r"only https://.*TIANYAN_RESCUE_ALLOW_HTTP"):
        Dispatcher(plain)
    with pytest.raises(EndpointError, match="one entry per endpoint"):
        Dispatcher(replace(plain, rescue_webhook_urls=("https://a.example/", "https://b.example/")))
    assert Dispatcher(replace(plain, rescue_allow_http=True)).sender is not None


def test_endpoint_urls_are_redacted_wherever_shown_or_stored(api: Api) -> None:
    """Finding: endpoint URLs, with any token in them, appeared in metrics labels, ledger
    entries and the rescue board."""
    rotating = api.receivers["rotating"]
    wait_for(
        lambda: api.run.scalar(LEDGERED),
        60,
        "delivery outcomes in the ledger",
    )
    # the receiver did get the whole URL (the token is what it checks)
    assert rotating.requests and rotating.requests[0]["path"] == f"/hook/{TOKEN}?key={QUERY_TOKEN}"
    stored = api.run.scalar(
        "SELECT string_agg(row_to_json(d)::text, ' ') FROM webhook_delivery d"
    ) + api.run.scalar("SELECT string_agg(row_to_json(l)::text, ' ') FROM audit_ledger l")
    metrics = api.request(
        "GET", "/metrics", host="127.0.0.1", port=api.run.settings.dispatcher_web_port
    )[1]
    listing = subprocess.run(
        [TIANYAN, "incidents", "--stuck-after", "0"],
        env=api.run.env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    time.sleep(0.5)  # the log is written by another process
    shown = {"database": stored, "metrics": metrics, "listing": listing, "log": api.log.read_text()}
    for where, text in shown.items():
        for secret in (TOKEN, QUERY_TOKEN, PASSWORD):
            assert secret not in text, f"{secret} appears in the {where}"
    assert f"127.0.0.1:{rotating.port}/…" in stored and "127.0.0.1" in metrics
    assert "/…" in listing


# -- hypothesis: random requests, never a 5xx ------------------------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
_header_names = st.sampled_from(
    [
        "authorization",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "idempotency-key",
        "content-type",
        "x-anything",
    ]
)
_header_values = st.one_of(
    _text.map(str.encode),
    st.binary(max_size=60).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F)),
    st.sampled_from(["Bearer ", "v1,", "v1,AAAA", "1e400", "v2,x v1,y", "Basic x"]),
    # a scheme or version the API knows, then anything
    st.builds(lambda p, t: (p + t).encode(), st.sampled_from(["Bearer ", "v1,", "v1,x "]), _text),
)
_paths = st.one_of(
    st.builds(
        lambda i, a: f"/incidents/{i}/{a}",
        st.one_of(st.uuids().map(str), _text),
        st.one_of(st.sampled_from(["acknowledge", "arrive", "resolve", "false-alarm"]), _text),
    ),
    _text.map(lambda t: "/" + t),
).map(lambda p: urllib.parse.quote(p, safe="/?=&%"))
_bodies = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(_text, st.one_of(_text, st.integers(), st.none()), max_size=4).map(
        lambda d: json.dumps(d).encode()
    ),
)


def _reasoned(status: int, text: str) -> None:
    """No 5xx; a refusal names its reason: ``{"error": …}`` from the API, or the text of
    aiohttp's HTTP parser for a request it cannot read (a control character in a header)."""
    assert status < 500, (status, text)
    if status >= 400:
        if text.startswith("{"):
            assert json.loads(text)["error"], text
        else:
            assert status == 400 and "Invalid" in text, text


@hsettings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]),
    path=_paths,
    headers=st.dictionaries(_header_names, _header_values, max_size=5),
    body=_bodies,
)
def test_random_requests_get_no_5xx_and_every_refusal_a_reason(
    api: Api, method: str, path: str, headers: dict[str, bytes], body: bytes
) -> None:
    status, text, _ = api.request(method, path, body, dict(headers))
    _reasoned(status, text)


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    car=st.integers(8, 11),
    action=st.sampled_from(["acknowledge", "arrive", "resolve", "false-alarm", "reopen"]),
    body=_bodies,
    key=st.one_of(st.none(), _text),
    signed=st.booleans(),
)
def test_random_authentic_requests_get_no_5xx_and_every_refusal_a_reason(
    api: Api, car: int, action: str, body: bytes, key: str | None, signed: bool
) -> None:
    path = f"/incidents/{api.incident(car)}/{action}"
    headers: dict[str, str | bytes] = (
        api.signed_headers(path, body) if signed else {"authorization": f"Bearer {api.token}"}
    )
    if key is not None:
        headers["idempotency-key"] = key.encode()
    status, text, _ = api.request("POST", path, body, headers)
    _reasoned(status, text)


_any_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"))


@hsettings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    credential=st.one_of(
        st.builds(lambda t: {"authorization": ("Bearer " + t).encode()}, _any_text),
        st.builds(
            lambda i, t, sig: {
                "webhook-id": i.encode(),
                "webhook-timestamp": t.encode(),
                "webhook-signature": sig.encode(),
            },
            st.one_of(_any_text, st.just("req_1")),
            st.one_of(_any_text, st.integers().map(str), st.just(str(int(time.time())))),
            st.one_of(_any_text, st.builds(lambda t: "v1," + t, _any_text)),
        ),
    ),
)
def test_random_credentials_get_a_4xx_with_the_reason(
    api: Api, credential: dict[str, bytes]
) -> None:
    status, text, _ = api.request(
        "POST", f"/incidents/{api.incident(11)}/acknowledge", b"{}", dict(credential)
    )
    assert 400 <= status < 500, (status, text)
    _reasoned(status, text)


def test_0009_renames_queued_deliveries_by_their_endpoint_s_name(
    scratch_db: str, migrations_copy: Path
) -> None:
    """Rows queued before 0009 carried the URL itself; after it, the name the dispatcher
    claims them by (the URL redacted), so they are still sent and no longer show a token."""
    mig_dir, idem_dir = migrations_copy / "migrations", migrations_copy / "idempotent"
    later = [p for p in mig_dir.glob("*.sql") if p.name >= "0009"]
    held = {p: p.read_text() for p in later}
    for p in later:
        p.unlink()
    migrate(scratch_db, mig_dir, idem_dir)
    url = f"https://platform:{PASSWORD}@96333.Example.org:8443/hook/{TOKEN}?k={QUERY_TOKEN}"
    incident, t0 = uuid.uuid4(), dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC)
    with psycopg.connect(scratch_db) as conn:
        conn.execute("SET search_path = tianyan")
        conn.execute(
            "INSERT INTO incident (incident_id, elevator_id, fault_type, gb_code, severity,"
            " state, opened_at, updated_at) VALUES (%s, '32070000000000000001', 'overload',"
            " '21', 'warning', 'open', %s, %s)",
            (incident, t0, t0),
        )
        conn.execute(
            "INSERT INTO webhook_delivery (webhook_id, endpoint, incident_id, event_type,"
            " payload, created_at, next_attempt_at) VALUES ('msg_1', %s, %s,"
            " 'incident.opened', '{}', %s, %s)",
            (url, incident, t0, t0),
        )
    for p, text in held.items():
        p.write_text(text)
    assert "0009_action_api.sql" in migrate(scratch_db, mig_dir, idem_dir).applied
    with psycopg.connect(scratch_db) as conn:
        stored = conn.execute("SELECT endpoint FROM tianyan.webhook_delivery").fetchall()
    assert stored == [(endpoint_name(url),)]
    assert stored[0][0].startswith("https://96333.example.org:8443/… (")
