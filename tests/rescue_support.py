"""Running the incident dispatcher and receivers for the tests: real processes, real HTTP,
real Kafka and TimescaleDB."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from detectors.alerts import Alert, clear_alert, make_alert
from foundation.settings import Settings
from registry.generate import generate
from registry.store import upsert
from rescue import store
from rescue.delivery import Endpoint, Sender, endpoint_name, new_secret
from streams.producer import RawPublisher
from tianyan.harness import Run, pipeline
from tianyan.processes import Stalled, WaitTimeout, wait_until

FLEET = generate(5, 12, dt.date(2026, 11, 1))
T0_MS = 1_795_000_000_000  # 2026-11-19


def trapped(car: int, since_s: float, people: int = 2) -> Alert:
    e = FLEET[car].registration_code
    return make_alert(
        e,
        "trapped_between_levels",
        T0_MS + int(since_s * 1000),
        T0_MS + int((since_s + 30) * 1000),
        {"speed_mps": 0.0, "door_zone": False, "passengers": True},
        estimated_trapped=people,
    )


def overload(car: int, since_s: float) -> Alert:
    e = FLEET[car].registration_code
    return make_alert(
        e, "overload", T0_MS + int(since_s * 1000), T0_MS + int(since_s * 1000), {"load_kg": 1200}
    )


def cleared(alert: Alert, after_s: float = 60) -> Alert:
    return clear_alert(alert, alert.raised_at_ms + int(after_s * 1000), {"door": "open"})


@dataclass
class Rescue:
    """One isolated dispatcher set-up on the harness: database, topics, secret, ports."""

    run: Run
    env: dict[str, str]  # the dispatcher's environment; a test may change it before a start
    token: str

    @property
    def settings(self) -> Settings:
        return self.run.settings

    @property
    def admin_url(self) -> str:
        return self.run.admin_url

    @property
    def writer_url(self) -> str:
        return self.run.writer_url

    @property
    def alerts_topic(self) -> str:
        return self.settings.alerts_topic

    @property
    def commands_topic(self) -> str:
        return self.settings.device_commands_topic

    @property
    def secret(self) -> str:
        assert self.settings.rescue_webhook_secret is not None
        return self.settings.rescue_webhook_secret

    @property
    def web_port(self) -> int:
        return self.settings.dispatcher_web_port

    @property
    def api(self) -> str:
        """The acknowledgement API."""
        return f"http://127.0.0.1:{self.settings.rescue_api_port}"

    @property
    def web(self) -> str:
        """The dispatcher's /metrics and /health."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def action_secret(self) -> str:
        assert self.settings.rescue_action_secret is not None
        return self.settings.rescue_action_secret

    def send_to(self, *receivers: RecordingReceiver) -> None:
        """Webhooks to these receivers (each endpoint signed with the run's secret)."""
        self.env["TIANYAN_RESCUE_WEBHOOK_URL"] = " ".join(h.url for h in receivers)
        self.env["TIANYAN_RESCUE_WEBHOOK_SECRET"] = " ".join(self.secret for _ in receivers)

    def publish(self, alerts: list[Alert]) -> None:
        with RawPublisher(
            self.settings.kafka_bootstrap, self.alerts_topic, security=self.settings.kafka_security
        ) as pub:
            for a in alerts:
                pub.publish(a.elevator_id.encode(), msgspec.json.encode(a))

    def until(self, check: Callable[[], Any], what: str) -> Any:
        """``check()``'s first truthy value, waiting while the pipeline moves: a service's
        log, or the ledger, which records every incident event and delivery attempt.
        Fails naming ``what`` only when nothing moved for the harness's stall time, never
        after a fixed time while retries and deliveries go on."""
        seen: list[Any] = [None]

        def progress() -> tuple[bool, Any]:
            seen[0] = check()
            return bool(seen[0]), self.scalar("SELECT max(seq) FROM audit_ledger")

        try:
            self.run.wait(progress, lambda p: p[0], what)
        except Stalled as e:
            raise AssertionError(str(e)) from None
        return seen[0]

    def start_dispatcher(self, log: Path, **env: str) -> subprocess.Popen[bytes]:
        """A dispatcher named for its log file (``<stem>``), on ``env``'s port or the run's."""
        return self.run.start_dispatcher(log.stem, log=log, **{**self.env, **env})

    def start_receiver(self, port: int, journal: Path, *args: str) -> subprocess.Popen[bytes]:
        return self.run.start(
            f"receiver {port}",
            ["rescue-receiver", "--port", str(port), "--journal", str(journal), *args],
            port=port,
            log=journal.with_suffix(".log"),
            **{**self.env, "TIANYAN_RECEIVER_LOGLEVEL": "WARNING"},
        )

    def query(self, sql: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.admin_url) as conn:
            return conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, *params: Any) -> Any:
        return self.run.scalar(sql, *params)

    def stop_all(self) -> None:
        self.run.group.stop_all()


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    try:
        return wait_until(check, timeout_s, what)
    except WaitTimeout as e:
        raise AssertionError(str(e)) from None


@pytest.fixture
def rescue(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Rescue]]:
    """``rescue(endpoints, **env)``: a dispatcher set-up on the harness (the fleet
    registered, webhooks to ``endpoints``, fast retries, no escalation unless told), taken
    down with the test."""
    with ExitStack() as stack:

        def setup(endpoints: list[str], **env: str) -> Rescue:
            token = uuid.uuid4().hex
            run = stack.enter_context(
                pipeline(
                    settings,
                    f"tianyan_test_rescue_{uuid.uuid4().hex[:8]}",
                    tmp_path,
                    partitions=2,
                    rescue_webhook_urls=tuple(endpoints),
                    rescue_webhook_secret=new_secret(),
                    rescue_action_secret=new_secret(),
                    rescue_api_token=token,
                    webhook_retry_base_s=0.2,
                    webhook_retry_cap_s=1.0,
                    webhook_timeout_s=2.0,
                    escalation_after_s=(10**8, 2 * 10**8, 3 * 10**8),  # never, unless told
                    # every incident to the rescue endpoints, overloads too: these tests are
                    # of the delivery (tests/test_rescue_routing.py tests the routing)
                    rescue_min_severity="info",
                )
            )
            upsert(run.admin_url, FLEET)
            return Rescue(run, run.env(**env), token)

        yield setup


class RecordingReceiver:
    """A plain HTTP endpoint for the tests: verifies with standardwebhooks, records every
    request (duplicates included), and answers as told (status, Retry-After, delay)."""

    def __init__(self, secret: str, port: int) -> None:
        self.webhook = Webhook(secret)
        self.secret = secret
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.answer: Callable[[int], tuple[int, dict[str, str]]] = lambda n: (200, {})
        self.delay_s = 0.0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = outer.webhook.verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    payload, verified = json.loads(body), False
                with outer.lock:
                    n = sum(1 for r in outer.requests if r["id"] == headers.get("webhook-id"))
                    outer.requests.append(
                        {
                            "id": headers.get("webhook-id"),
                            "verified": verified,
                            "payload": payload,
                            "at": time.time(),
                            "path": self.path,
                            "headers": headers,
                            "body": body,
                        }
                    )
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                status, extra = outer.answer(n)
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def name(self) -> str:
        """The endpoint's name as stored and shown (its URL redacted)."""
        return endpoint_name(self.url)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.url, (self.secret,))

    def ids(self) -> list[str]:
        with self.lock:
            return [r["id"] for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def journal_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["webhook_id"] for line in path.read_text().splitlines() if line]


@dataclass
class Answer:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def http(
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: dict | None = None,
    json_body: Any = None,
) -> Answer:
    """One HTTP request with the standard library; 4xx/5xx answers are returned, not raised."""
    import urllib.error
    import urllib.request

    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers = {**(headers or {}), "content-type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Answer(resp.status, resp.read().decode())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.read().decode())


async def deliver_once(
    conn: psycopg.Connection[Any], sender: Sender, lease_s: float = 30.0
) -> list[store.Attempt]:
    """One turn of the dispatcher's delivery loop, run by the test: claim what is due,
    attempt each over real HTTP, record the outcomes in the real database."""
    claimed = store.claim_due(
        conn, 100, lease_s, endpoints=list(sender.endpoints), signing_key_id=None
    )
    attempts = list(await asyncio.gather(*(sender.attempt(d) for d in claimed)))
    store.record_attempts(conn, attempts)
    return attempts
