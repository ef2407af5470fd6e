"""The incident dispatcher: a Faust app that turns alerts into incidents and delivers them.

- An agent consumes the alerts topic (keyed by elevator, so one elevator's alerts arrive in
  order) and applies each alert in one transaction: incident, event, outbox rows, ledger
  entries (rescue/store.py). A repeat of an applied alert changes nothing, so
  Kafka's at-least-once delivery is enough. On a new trapping incident the reassurance
  command goes to the device-commands topic before that transaction commits.
- A delivery loop claims due outbox rows and POSTs them, signed, up to
  ``TIANYAN_WEBHOOK_CONCURRENCY`` at a time; outcomes are recorded (and ledgered) in
  batches. It wakes on PostgreSQL NOTIFY from any process and polls once a second; a dead
  receiver only ever delays its own deliveries: detection never waits on it.
- A timer escalates unacknowledged trapping incidents; another publishes the ledger's head
  to the anchors topic as the ledger grows.
- The acknowledgement API, ``POST /incidents/{id}/{action}``, on its own address
  (``TIANYAN_RESCUE_API_BIND``/``_PORT``, behind a TLS reverse proxy); ``/metrics`` and
  ``/health`` on the dispatcher's web address (``TIANYAN_DISPATCHER_WEB_BIND``/``_PORT``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, TypeVar

import faust
import msgspec
import psycopg
from aiohttp import web
from faust.web import Request, Response, View
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from standardwebhooks.webhooks import WebhookVerificationError

from detectors.alerts import Alert
from foundation.contract import REPLAY_RUN_HEADER, replay_run_of
from foundation.kafka_security import faust_credentials
from foundation.settings import Settings
from streams.background import keep_serving
from streams.metrics import exposition
from streams.producer import PublishError, RawPublisher

from . import metrics, store
from .delivery import Sender, signed_content, signer, signing_key_id, webhook_endpoints
from .ledger import ANCHOR_KEY, anchor_value, ledger_head
from .lifecycle import ACTIONS, ESCALATION_LEVELS, RetrySchedule, is_trapping

log = logging.getLogger("tianyan.dispatcher")
T = TypeVar("T")

CLAIM_BATCH = 200
POLL_S = 1.0
DB_RETRY_S = 2.0
#: Alerts applied in one transaction at most, and how long a batch waits to fill: one commit
#: for many alerts is what holds a district's burst (a power cut: thousands in seconds).
ALERT_BATCH = 200
ALERT_BATCH_WITHIN_S = 0.02
#: Evidence copies made per transaction.
EVIDENCE_BATCH = 50
#: An alert that could not be applied (database or Kafka away) is tried again after this
#: pause, for as long as it takes: it is never acknowledged unapplied.
APPLY_RETRY_S = 2.0
#: How long a terminal's answer naming an incident not found is tried again, s: a command
#: goes out before its incident's transaction commits, and over MQTT the terminal's answer
#: can come back first. Then it is counted (``tianyan_dispatcher_answers_unmatched_total``).
ANSWER_RETRY_S = 60.0
REASSURANCE = (
    "您好，电梯暂时停止运行，救援人员已在赶来途中。请保持冷静，不要强行扒门，"
    "可通过对讲与值班人员通话。 Help is on the way; please stay calm and do not force the doors."
)


#: Bounds of the acknowledgement API: what a request may carry at most.
ACTION_BODY_MAX_BYTES: Final = 16 * 1024
ACTOR_MAX_CHARS: Final = 200
NOTE_MAX_CHARS: Final = 2000
#: webhook-id and Idempotency-Key: printable ASCII, this long at most.
REQUEST_ID_MAX_CHARS: Final = 200
#: Any one header's value (a signature header holds one ``v1,…`` per active secret).
HEADER_MAX_CHARS: Final = 2000
_REQUEST_ID = re.compile(rf"[!-~]{{1,{REQUEST_ID_MAX_CHARS}}}")
_SIGNATURE = re.compile(r"[A-Za-z0-9]+,[A-Za-z0-9+/=]+( [A-Za-z0-9]+,[A-Za-z0-9+/=]+)*")


#: ``GET /incidents``: incidents a page holds by default, and at most.
PAGE_DEFAULT: Final = 100
PAGE_MAX: Final = 500
INCIDENT_STATES: Final = ("open", "acknowledged", "arrived", "resolved", "false_alarm")
ROUTES: Final = ("rescue", "maintenance", "all")


@dataclass(frozen=True)
class PageQuery:
    """The query of ``GET /incidents``, checked."""

    states: tuple[str, ...]
    since: dt.datetime | None
    after: tuple[dt.datetime, uuid.UUID] | None
    limit: int
    route: str | None


def encode_cursor(cursor: tuple[dt.datetime, uuid.UUID]) -> str:
    """The ``after`` parameter of the next page: opaque to the client."""
    text = f"{cursor[0].astimezone(dt.UTC).isoformat()}|{cursor[1]}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def parse_page_query(query: list[tuple[str, str]]) -> PageQuery:
    """``state`` (comma-separated states), ``since`` (RFC 3339 with its offset), ``route``
    (``rescue``, the default; ``maintenance``; ``all``), ``limit`` (1 to :data:`PAGE_MAX`)
    and ``after`` (the cursor a previous page gave).

    Raises
    ------
    Refused
        400 naming the parameter and what it should hold.
    """
    known = ("state", "since", "route", "limit", "after")
    names = [k for k, _ in query]
    for name in names:
        if name not in known:
            raise Refused(400, f"unknown parameter {name!r}; expected {', '.join(known)}")
        if names.count(name) > 1:
            raise Refused(400, f"the parameter {name!r} is given twice")
    q = dict(query)
    states = tuple(s for s in q.get("state", "").split(",") if s)
    for state in states:
        if state not in INCIDENT_STATES:
            raise Refused(
                400, f"state={state!r}: expected states among {', '.join(INCIDENT_STATES)}"
            )
    since = None
    if "since" in q:
        try:
            since = dt.datetime.fromisoformat(q["since"])
        except ValueError:
            raise Refused(400, f"since={q['since']!r} is not an RFC 3339 time") from None
        if since.tzinfo is None:
            raise Refused(400, f"since={q['since']!r} needs its UTC offset (…Z or …+08:00)")
    route = q.get("route", "rescue")
    if route not in ROUTES:
        raise Refused(400, f"route={route!r}: expected one of {', '.join(ROUTES)}")
    try:
        limit = int(q.get("limit", PAGE_DEFAULT))
    except ValueError:
        raise Refused(400, f"limit={q['limit']!r} is not an integer") from None
    if not 1 <= limit <= PAGE_MAX:
        raise Refused(400, f"limit={limit}: give 1 to {PAGE_MAX}")
    after = None
    if "after" in q:
        try:
            raw = q["after"] + "=" * (-len(q["after"]) % 4)
            when, _, key = base64.urlsafe_b64decode(raw).decode().partition("|")
            after = (dt.datetime.fromisoformat(when), uuid.UUID(key))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise Refused(400, "after: not a cursor this API gave (copy the page's next)") from None
    return PageQuery(states, since, after, limit, None if route == "all" else route)


class ActionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of an acknowledgement API request."""

    actor: Annotated[str, msgspec.Meta(min_length=1, max_length=ACTOR_MAX_CHARS)] = (
        "rescue-platform"
    )
    note: Annotated[str, msgspec.Meta(max_length=NOTE_MAX_CHARS)] | None = None
    #: ``arrive`` only: the arrival time measured on site (RFC 3339 with its UTC offset).
    arrived_at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None


@dataclass
class Answer:
    """An answer of the acknowledgement API: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Refused(Exception):
    """A request refused before it reached the store: the status and the reason."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.answer = Answer(status, {"error": reason}, headers or {})


class DatabaseReplaced(RuntimeError):
    """The database at the configured URL is not the one this dispatcher started on (it was
    dropped and created again): its outbox and incidents belong to another run."""


class Database:
    """One connection used from one task at a time, in a thread; reconnects when broken.

    The connection is in autocommit mode: every transaction is an explicit
    ``conn.transaction()`` block of the store, so none is ever left open between calls (a
    read such as a metrics scrape would otherwise open one that later calls run inside).
    Each reconnection checks that the database is still the one first connected to.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = asyncio.Lock()
        self._identity: int | None = None

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = psycopg.connect(self.url, autocommit=True)
            row = conn.execute(
                "SELECT oid::bigint FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            identity = int(row[0]) if row else None
            if self._identity is not None and identity != self._identity:
                conn.close()
                raise DatabaseReplaced(
                    f"the database at {self.url} was dropped and created again since this"
                    " dispatcher started; it belongs to another run, so this dispatcher"
                    " stops rather than deliver its rows"
                )
            self._identity, self._conn = identity, conn
        return fn(self._conn, *args, **kwargs)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` in a thread. When the database turns out to have
        been replaced, the whole dispatcher stops (SIGTERM to itself) and this raises."""
        async with self._lock:
            try:
                return await asyncio.to_thread(self._call, fn, *args, **kwargs)
            except DatabaseReplaced as e:
                log.critical(str(e))
                os.kill(os.getpid(), signal.SIGTERM)
                raise

    async def run_until_done(self, what: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``run``, retried while the database is unreachable (nothing is skipped)."""
        while True:
            try:
                return await self.run(fn, *args, **kw)
            except psycopg.OperationalError as e:
                log.error(f"{what}: database unavailable; retrying", extra={"error": str(e)})
                await asyncio.sleep(DB_RETRY_S)


class Dispatcher:
    """The dispatcher's state and loops (the Faust app in :func:`create_app` drives them)."""

    def __init__(self, settings: Settings) -> None:
        if settings.rescue_webhook_urls and not settings.rescue_webhook_secret:
            raise ValueError(
                "TIANYAN_RESCUE_WEBHOOK_URL is set but TIANYAN_RESCUE_WEBHOOK_SECRET is not:"
                " webhooks are always signed"
            )
        self.settings = settings
        secret = settings.rescue_webhook_secret
        endpoints = (
            webhook_endpoints(
                settings.rescue_webhook_urls, secret, allow_http=settings.rescue_allow_http
            )
            if settings.rescue_webhook_urls
            else ()
        )
        action_secret = settings.rescue_action_secret
        if action_secret and any(action_secret in e.secrets for e in endpoints):
            raise ValueError(
                "TIANYAN_RESCUE_ACTION_SECRET is also a webhook-signing secret: every webhook"
                " receiver holding it could act on incidents; give the platform its own"
            )
        self.config = store.DispatchConfig(
            endpoints=tuple(e.name for e in endpoints if e.route.kind == "rescue"),
            maintenance_endpoints=tuple(e.name for e in endpoints if e.route.kind == "maintenance"),
            level_endpoints=tuple(
                (e.route.kind, e.route.district, e.name)
                for e in endpoints
                if e.route.kind in ESCALATION_LEVELS
            ),
            rescue_types=frozenset(settings.rescue_route_types),
            rescue_min_severity=settings.rescue_min_severity,
            escalation_after_s=settings.escalation_after_s,
            arrival_target_s=settings.arrival_target_s,
            evidence_window_s=settings.evidence_window_s,
            reassurance_answer_s=settings.reassurance_answer_s,
            signing_key_id=signing_key_id(secret) if secret else None,
        )
        self.verifier = (
            signer(action_secret, "TIANYAN_RESCUE_ACTION_SECRET") if action_secret else None
        )
        self.rate_limit = RateLimitItemPerMinute(max(1, settings.rescue_api_rate_per_minute))
        self.rate_limiter = MovingWindowRateLimiter(MemoryStorage())
        self.sender = (
            Sender(
                endpoints,
                timeout_s=settings.webhook_timeout_s,
                concurrency=settings.webhook_concurrency,
                schedule=RetrySchedule(
                    settings.webhook_retry_base_s,
                    settings.webhook_retry_cap_s,
                    settings.webhook_max_age_s,
                    settings.webhook_auth_retry_s,
                ),
            )
            if secret
            else None
        )
        # Longer than any attempt: a lease that ran out means the dispatcher died mid-delivery.
        self.lease_s = 2 * settings.webhook_timeout_s + 5
        self.alerts_db = Database(settings.database_url)
        self.claim_db = Database(settings.database_url)
        self.record_db = Database(settings.database_url)
        self.action_db = Database(settings.database_url)
        self.timer_db = Database(settings.database_url)
        self.evidence_db = Database(settings.database_url)
        # No linger: a trapping's transaction waits for its command to be acknowledged.
        self.publisher = RawPublisher(
            settings.kafka_bootstrap,
            settings.device_commands_topic,
            linger_ms=0,
            delivery_timeout_ms=settings.kafka_delivery_timeout_ms,
            security=settings.kafka_security,
        )
        self.wake = asyncio.Event()
        self.results: asyncio.Queue[store.Attempt] = asyncio.Queue()
        self.in_flight = 0
        self.anchored_seq = 0
        self._tasks: set[asyncio.Future[None]] = set()
        self.last_turn = self.last_tick = time.monotonic()
        #: Terminals' answers whose incident was not found yet, with when first seen.
        self.unmatched_answers: dict[tuple[str, str, str, dt.datetime], float] = {}

    # -- alerts → incidents ----------------------------------------------------------------
    def _publish_commands(self, changes: list[store.Change]) -> None:
        """Ask the terminal of each newly trapped car to play its reassurance message."""
        sent = 0
        for c in changes:
            if c.event_type == "incident.opened" and is_trapping(c.fault_type):
                command = {
                    "command": "play_reassurance",
                    "command_id": f"{c.incident_id}:play_reassurance",
                    "elevator_id": c.elevator_id,
                    "incident_id": str(c.incident_id),
                    "issued_at": store.jsonable(dt.datetime.now(dt.UTC)),
                    "message": REASSURANCE,
                }
                self.publisher.publish(c.elevator_id.encode(), json.dumps(command).encode())
                sent += 1
        if sent:
            self.publisher.flush(10.0)  # raises: the transaction rolls back, alert re-applied
            metrics.DEVICE_COMMANDS.labels("play_reassurance").inc(sent)

    async def on_alerts(
        self, records: list[tuple[bytes | None, bytes, float | None, str | None]]
    ) -> None:
        """Apply a batch of ``(key, value, Kafka timestamp, replay run)`` alert records in one
        transaction; return only once all are applied (an unreadable one dead-lettered), so
        that the offsets Faust then acknowledges never skip an alert. An alert carrying a
        replay run's header (:data:`foundation.contract.REPLAY_RUN_HEADER`) is
        dead-lettered, never applied: a replay never reaches the rescue platform."""
        batch: list[tuple[Alert, dt.datetime]] = []
        for key, value, kafka_timestamp_s, replay_run in records:
            if replay_run is not None:
                await self._dead_letter(
                    key,
                    value,
                    f"{REPLAY_RUN_HEADER}: {replay_run!r}: a replayed alert never opens an"
                    " incident, a webhook or a device command",
                )
                continue
            try:
                alert = msgspec.json.decode(value, type=Alert)
            except (msgspec.DecodeError, UnicodeDecodeError) as e:
                await self._dead_letter(key, value, f"the alert does not decode: {e}")
                continue
            received = (
                dt.datetime.fromtimestamp(kafka_timestamp_s, dt.UTC)
                if kafka_timestamp_s
                else dt.datetime.now(dt.UTC)
            )
            batch.append((alert, received))
        if not batch:
            return
        while True:
            try:
                changes = await self.alerts_db.run(
                    store.apply_alerts, batch, self.config, before_commit=self._publish_commands
                )
                break
            except Exception as e:
                # Database or Kafka away, a deadlock, anything: the transaction rolled back,
                # so the batch is applied again from the start (commands already sent are
                # de-duplicated by the terminal through their command_id).
                self.publisher.discard_failed()
                metrics.ALERTS_APPLIED.labels("retried").inc(len(batch))
                log.error(
                    "alerts not applied; retrying",
                    extra={
                        "alerts": len(batch),
                        "first_alert_key": batch[0][0].alert_key,
                        "error": f"{type(e).__name__}: {e}",
                    },
                )
                await asyncio.sleep(APPLY_RETRY_S)
        metrics.ALERTS_APPLIED.labels("applied").inc(len(batch))
        self._changed(changes)

    async def _dead_letter(self, key: bytes | None, value: bytes, reason: str) -> None:
        """Keep an alert that cannot be read on the dead-letter topic, with the reason."""
        log.error("unreadable alert dead-lettered", extra={"error": reason, "value": value[:200]})
        while True:
            try:
                self.publisher.publish(
                    key or b"",
                    value,
                    topic=self.settings.alerts_dead_letter_topic,
                    headers={"reason": reason.encode()[:1000]},
                )
                await asyncio.to_thread(self.publisher.flush, 10.0)
                break
            except PublishError as e:
                log.error("dead letter not published; retrying", extra={"error": str(e)})
                await asyncio.sleep(APPLY_RETRY_S)
        metrics.ALERTS_APPLIED.labels("dead_lettered").inc()

    def _changed(self, changes: list[store.Change]) -> None:
        for c in changes:
            metrics.INCIDENT_CHANGES.labels(c.event_type).inc()
        if changes:
            self.wake.set()

    async def escalate(self) -> None:
        self.last_tick = time.monotonic()
        changes = await self.timer_db.run_until_done(
            "escalating", store.escalate_due, self.config, dt.datetime.now(dt.UTC)
        )
        self._changed(changes)
        await self.report_unanswered()
        await self.retry_unmatched_answers()

    async def report_unanswered(self) -> None:
        changes = await self.timer_db.run_until_done(
            "reporting unanswered reassurance",
            store.report_unanswered_reassurance,
            self.config,
            dt.datetime.now(dt.UTC),
        )
        self._changed(changes)

    async def on_device_events(self, records: list[tuple[bytes | None, bytes]]) -> None:
        """Terminals' answers (from the gateway): a reassurance played or failed."""
        answers = []
        for key, value in records:
            try:
                event = json.loads(value)
                answers.append(
                    (
                        str(event["elevator_id"]),
                        str(event["command_id"]),
                        str(event["status"]),
                        dt.datetime.fromtimestamp(int(event["at_ms"]) / 1000, dt.UTC)
                        if "at_ms" in event
                        else dt.datetime.now(dt.UTC),
                    )
                )
            except (ValueError, KeyError, TypeError) as e:
                log.error(
                    "a device event that does not read; skipped",
                    extra={"error": str(e), "value": value[:200], "key": key},
                )
        if answers:
            await self._record_answers(self.action_db, answers)

    async def _record_answers(
        self, db: Database, answers: list[tuple[str, str, str, dt.datetime]]
    ) -> list[tuple[str, str, str, dt.datetime]]:
        """Record ``answers``; those whose incident was not found are kept to try again
        (:meth:`retry_unmatched_answers`) and returned."""
        changes, unmatched = await db.run_until_done(
            "recording terminal answers", store.record_reassurance_answers, self.config, answers
        )
        self._changed(changes)
        now = time.monotonic()
        for answer in unmatched:
            self.unmatched_answers.setdefault(answer, now)
        return unmatched

    async def retry_unmatched_answers(self) -> None:
        """Try the answers whose incident was not found again; after :data:`ANSWER_RETRY_S`
        count and log them."""
        if not self.unmatched_answers:
            return
        now = time.monotonic()
        expired = [a for a, seen in self.unmatched_answers.items() if now - seen >= ANSWER_RETRY_S]
        for answer in expired:
            del self.unmatched_answers[answer]
            metrics.ANSWERS_UNMATCHED.inc()
            log.warning(
                "a terminal's answer names no incident of its elevator; dropped",
                extra={"elevator_id": answer[0], "command_id": answer[1], "status": answer[2]},
            )
        due = list(self.unmatched_answers)
        if due:
            still = set(await self._record_answers(self.timer_db, due))
            for answer in due:
                if answer not in still:
                    self.unmatched_answers.pop(answer, None)

    async def copy_evidence(self) -> None:
        """Make the evidence copies incident changes requested, a batch at a time."""
        while True:
            done, copied = await self.evidence_db.run_until_done(
                "copying evidence", store.copy_requested_evidence, EVIDENCE_BATCH
            )
            metrics.EVIDENCE_SAMPLES.inc(copied)
            if done < EVIDENCE_BATCH:
                return

    # -- the outbox → HTTP -----------------------------------------------------------------
    async def deliver_forever(self, should_stop: Callable[[], bool]) -> None:
        if self.sender is None:
            log.warning("no TIANYAN_RESCUE_WEBHOOK_URL: incidents are recorded, not delivered")
            return
        sender = self.sender
        while not should_stop():
            self.last_turn = time.monotonic()
            self.wake.clear()
            free = sender.concurrency - self.in_flight
            claimed: list[store.Due] = []
            if free > 0:
                claimed = await self.claim_db.run_until_done(
                    "claiming deliveries",
                    store.claim_due,
                    min(free, CLAIM_BATCH),
                    self.lease_s,
                    endpoints=self.config.routing.all_endpoints,
                    signing_key_id=self.config.signing_key_id,
                )
            for due in claimed:
                self.in_flight += 1
                task = asyncio.ensure_future(self._attempt(due))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if claimed and len(claimed) == min(free, CLAIM_BATCH):
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), POLL_S)

    async def _attempt(self, due: store.Due) -> None:
        assert self.sender is not None
        try:
            self.results.put_nowait(await self.sender.attempt(due))
        finally:
            self.in_flight -= 1
            self.wake.set()

    async def record_forever(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            batch = [await self.results.get()]
            while not self.results.empty() and len(batch) < 1000:
                batch.append(self.results.get_nowait())
            await self.record_db.run_until_done("recording attempts", store.record_attempts, batch)

    async def listen_forever(self, should_stop: Callable[[], bool]) -> None:
        """Wake the delivery loop on NOTIFY from any process (an action, a redelivery)."""
        while not should_stop():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.settings.database_url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {store.NOTIFY_CHANNEL}")
                    async for _ in conn.notifies():
                        self.wake.set()
            except psycopg.OperationalError as e:
                log.error("outbox notifications lost; reconnecting", extra={"error": str(e)})
                await asyncio.sleep(DB_RETRY_S)

    async def publish_anchor(self) -> None:
        """Publish the ledger's head when it has grown: the copy ``audit verify`` checks."""
        head = await self.timer_db.run_until_done("reading the ledger head", ledger_head)
        if head is None or head.seq == self.anchored_seq:
            return
        self.publisher.publish(
            ANCHOR_KEY, anchor_value(head), topic=self.settings.audit_anchors_topic
        )
        try:
            await asyncio.to_thread(self.publisher.flush, 10.0)
        except PublishError as e:
            log.error("ledger anchor not published; next turn", extra={"error": str(e)})
            return
        self.anchored_seq = head.seq
        metrics.ANCHORS.inc()

    async def update_gauges(self) -> None:
        backlog = await self.timer_db.run(store.outbox_backlog)
        metrics.BACKLOG.labels("pending").set(backlog["pending"])
        metrics.BACKLOG.labels("retrying").set(backlog["retrying"])
        metrics.DEAD_LETTERS.set(backlog["dead"])

    # -- the acknowledgement API -----------------------------------------------------------
    def _throttle(self, credential: str, peer: str) -> None:
        """Count the request against its credential and peer; refuse (429) past the rate."""
        key = (credential, peer)
        if not self.rate_limiter.hit(self.rate_limit, *key):
            reset_at = self.rate_limiter.get_window_stats(self.rate_limit, *key).reset_time
            wait_s = max(1, int(reset_at - time.time()) + 1)
            raise Refused(
                429,
                f"rate limit: at most {self.rate_limit.amount} requests a minute per credential"
                f" and address; retry in {wait_s} s",
                {"Retry-After": str(wait_s)},
            )

    def authenticate(self, method: str, path: str, headers: dict[str, str], body: bytes) -> str:
        """The credential a request carries, checked: ``"bearer"`` or ``"signed"``.

        Accepted: ``Authorization: Bearer <TIANYAN_RESCUE_API_TOKEN>``, or a Standard Webhooks
        signature made with ``TIANYAN_RESCUE_ACTION_SECRET`` over :func:`signed_content`.

        Raises
        ------
        Refused
            401 naming what is wrong (a malformed header is refused the same way).
        """
        auth = headers.get("authorization")
        if auth is not None:
            token = self.settings.rescue_api_token
            if token is None:
                raise Refused(401, "bearer tokens are not accepted: none is configured")
            scheme, _, given = auth.partition(" ")
            # Bytes: a header may hold any character (hmac refuses non-ASCII str).
            if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode("utf-8", "surrogateescape"), token.encode()
            ):
                return "bearer"
            raise Refused(401, "the bearer token was refused")
        if "webhook-signature" in headers:
            if self.verifier is None:
                raise Refused(
                    401, "signed requests are not accepted: no TIANYAN_RESCUE_ACTION_SECRET"
                )
            for name in ("webhook-id", "webhook-timestamp"):
                if name not in headers:
                    raise Refused(401, f"a signed request needs the {name} header")
            if not _REQUEST_ID.fullmatch(headers["webhook-id"]):
                raise Refused(
                    401,
                    f"webhook-id must be 1 to {REQUEST_ID_MAX_CHARS} printable ASCII characters",
                )
            if not _SIGNATURE.fullmatch(headers["webhook-signature"]):
                raise Refused(
                    401, "webhook-signature is malformed: expected 'v1,<base64>' (space-separated)"
                )
            try:
                content = signed_content(method, path, body).decode()
            except UnicodeDecodeError:
                raise Refused(400, "the body is not UTF-8") from None
            try:
                self.verifier.verify(content, headers, json_parse=False)
            except WebhookVerificationError as e:
                raise Refused(401, f"the signature does not verify: {e}") from None
            except (ValueError, binascii.Error) as e:
                raise Refused(401, f"webhook-signature is malformed: {e}") from None
            return "signed"
        raise Refused(
            401,
            "authenticate with a bearer token or a Standard Webhooks signature"
            " (webhook-id, webhook-timestamp, webhook-signature)",
        )

    def _admit(self, headers: dict[str, str], peer: str) -> None:
        """The rate limit and header bounds every API request passes first.

        Counted per credential presented (each bearer token apart, so a flood of wrong ones
        holds back only itself) and peer address.
        """
        auth = headers.get("authorization")
        presented = (
            "bearer " + hashlib.sha256(auth.encode("utf-8", "surrogateescape")).hexdigest()[:16]
            if auth is not None
            else "signed"
            if "webhook-signature" in headers
            else "none"
        )
        self._throttle(presented, peer)
        for name, value in headers.items():
            if len(value) > HEADER_MAX_CHARS:
                raise Refused(431, f"the {name} header is longer than {HEADER_MAX_CHARS} chars")

    async def _authenticate_once(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        """:meth:`authenticate`, and a signed request refused (409) when seen before."""
        credential = self.authenticate(method, path, headers, body)
        if credential == "signed":
            # Stored on first sight, whatever the answer: a signed request is good once.
            fresh = await self.action_db.run(store.first_sight, headers["webhook-id"])
            if not fresh:
                raise Refused(
                    409,
                    f"replayed: webhook-id {headers['webhook-id']!r} was already received;"
                    " sign each request with a new webhook-id",
                )

    async def act(
        self,
        method: str,
        path: str,
        incident_id: str,
        action: str,
        headers: dict[str, str],
        body: bytes,
        peer: str = "unknown",
    ) -> Answer:
        """Answer one acknowledgement API request; never raises for what a client sent."""
        try:
            return await self._act(method, path, incident_id, action, headers, body, peer)
        except Refused as e:
            return e.answer

    async def _act(
        self,
        method: str,
        path: str,
        incident_id: str,
        action: str,
        headers: dict[str, str],
        body: bytes,
        peer: str,
    ) -> Answer:
        self._admit(headers, peer)
        if len(body) > ACTION_BODY_MAX_BYTES:
            raise Refused(413, f"the body is larger than {ACTION_BODY_MAX_BYTES} bytes")
        if action not in ACTIONS:
            raise Refused(404, f"unknown action {action!r}; one of {sorted(ACTIONS)}")
        await self._authenticate_once(method, path, headers, body)
        request_id = headers.get("idempotency-key")
        if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
            raise Refused(
                400,
                f"Idempotency-Key must be 1 to {REQUEST_ID_MAX_CHARS} printable ASCII characters",
            )
        try:
            req = msgspec.json.decode(body or b"{}", type=ActionRequest)
        except msgspec.DecodeError as e:  # ValidationError too: bounds, unknown fields
            raise Refused(400, f"the body is not a valid action request: {e}") from None
        result = await self.action_db.run(
            store.apply_action,
            incident_id,
            action,
            self.config,
            actor=req.actor,
            note=req.note,
            request_id=request_id,
            now=dt.datetime.now(dt.UTC),
            request_sha256=hashlib.sha256(msgspec.json.encode(req)).hexdigest(),
            arrived_at=req.arrived_at,
        )
        if result.status == 200 and not result.body.get("duplicate"):
            metrics.INCIDENT_CHANGES.labels(f"incident.{action}").inc()
            self.wake.set()
        return Answer(result.status, result.body)

    async def read(
        self,
        method: str,
        path: str,
        incident_id: str | None,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
        peer: str = "unknown",
    ) -> Answer:
        """Answer one reconciliation request (``GET /incidents/{id}``, ``GET /incidents``),
        authenticated as the actions are (a signature covers ``GET``, the path with its
        query, and the empty body); never raises for what a client sent."""
        try:
            self._admit(headers, peer)
            if body:
                raise Refused(400, "a GET request carries no body")
            await self._authenticate_once(method, path, headers, body)
            if incident_id is not None:
                if query:
                    raise Refused(400, "GET /incidents/{id} takes no query parameters")
                view = await self.action_db.run(store.incident_view, incident_id)
                if view is None:
                    raise Refused(404, f"no incident {incident_id!r}")
                return Answer(200, view)
            page = parse_page_query(query)
            views, cursor = await self.action_db.run(
                store.list_incidents,
                states=page.states,
                since=page.since,
                after=page.after,
                limit=page.limit,
                route=page.route,
            )
            next_path = None
            if cursor is not None:
                params = [(k, v) for k, v in query if k != "after"]
                next_path = "/incidents?" + urllib.parse.urlencode(
                    [*params, ("after", encode_cursor(cursor))]
                )
            return Answer(200, {"incidents": views, "count": len(views), "next": next_path})
        except Refused as e:
            return e.answer

    def api(self) -> web.Application:
        """The acknowledgement API as an aiohttp application: every answer JSON, every
        refusal with its reason, none 5xx but 503 while the database is away."""

        @web.middleware
        async def json_errors(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            try:
                response = await handler(request)
            except web.HTTPException as e:
                response = web.json_response({"error": e.reason}, status=e.status)
            except psycopg.OperationalError as e:
                log.error("acknowledgement API: database unavailable", extra={"error": str(e)})
                response = web.json_response(
                    {"error": "the database is unavailable; retry shortly"},
                    status=503,
                    headers={"Retry-After": "5"},
                )
            metrics.ACTION_REQUESTS.labels(str(response.status)).inc()
            return response

        async def post(request: web.Request) -> web.Response:
            body = await request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            answer = await self.act(
                request.method,
                request.raw_path,
                request.match_info["incident_id"],
                request.match_info["action"],
                headers,
                body,
                request.remote or "unknown",
            )
            return web.json_response(answer.body, status=answer.status, headers=answer.headers)

        async def get(request: web.Request) -> web.Response:
            answer = await self.read(
                request.method,
                request.raw_path,
                request.match_info.get("incident_id"),
                list(request.query.items()),
                {k.lower(): v for k, v in request.headers.items()},
                await request.read(),
                request.remote or "unknown",
            )
            return web.json_response(answer.body, status=answer.status, headers=answer.headers)

        async def elsewhere(request: web.Request) -> web.Response:
            if re.fullmatch(r"/incidents/[^/]+/[^/]+", request.path):
                return web.json_response(
                    {"error": f"{request.method} is not allowed here: POST an action"},
                    status=405,
                    headers={"Allow": "POST"},
                )
            return web.json_response(
                {
                    "error": "nothing here: POST /incidents/{incident_id}/{action},"
                    " GET /incidents/{incident_id} or GET /incidents?state=…&since=…"
                },
                status=404,
            )

        app = web.Application(client_max_size=ACTION_BODY_MAX_BYTES, middlewares=[json_errors])
        app.router.add_post("/incidents/{incident_id}/{action}", post)
        app.router.add_get("/incidents/{incident_id}", get, allow_head=False)
        app.router.add_get("/incidents", get, allow_head=False)
        app.router.add_route("*", "/{tail:.*}", elsewhere)
        return app

    async def serve_api(self, should_stop: Callable[[], bool]) -> None:
        """Serve :meth:`api` on TIANYAN_RESCUE_API_BIND:TIANYAN_RESCUE_API_PORT until stopped."""
        runner = web.AppRunner(self.api(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.rescue_api_bind, self.settings.rescue_api_port)
            await site.start()
            while not should_stop():
                await asyncio.sleep(POLL_S)
        finally:
            await runner.cleanup()


def create_app(settings: Settings) -> tuple[faust.App, Dispatcher]:
    """The Faust app and its dispatcher, configured from ``settings``."""
    app = faust.App(
        settings.dispatcher_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings.kafka_security),
        store="memory://",
        datadir=settings.faust_datadir(settings.dispatcher_id),
        topic_replication_factor=settings.kafka_replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_bind=settings.dispatcher_web_bind,
        web_port=settings.dispatcher_web_port,
        web_in_thread=False,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        broker_commit_interval=1.0,
    )
    dispatcher = Dispatcher(settings)
    alerts = app.topic(
        settings.alerts_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    device_events = app.topic(
        settings.device_events_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    def stopping() -> bool:
        return bool(app.should_stop)

    @app.agent(device_events)
    async def terminal_answers(stream: faust.StreamT) -> None:
        batches = stream.take_events(ALERT_BATCH, within=ALERT_BATCH_WITHIN_S)  # type: ignore[attr-defined]
        async for events in batches:
            applying = asyncio.ensure_future(
                dispatcher.on_device_events([(e.key, e.value) for e in events])
            )
            try:
                await asyncio.shield(applying)
            except asyncio.CancelledError:
                await applying
                raise

    @app.agent(alerts)
    async def incidents(stream: faust.StreamT) -> None:
        batches = stream.take_events(ALERT_BATCH, within=ALERT_BATCH_WITHIN_S)  # type: ignore[attr-defined]
        async for events in batches:
            records = [
                (e.key, e.value, e.message.timestamp, replay_run_of(e.message.headers))
                for e in events
            ]
            # Faust acknowledges the batch when this body ends, even by cancellation (a
            # stop): finish applying it first, so no alert is acknowledged unapplied.
            applying = asyncio.ensure_future(dispatcher.on_alerts(records))
            try:
                await asyncio.shield(applying)
            except asyncio.CancelledError:
                await applying
                raise

    @app.task
    async def deliver() -> None:
        try:
            await dispatcher.deliver_forever(stopping)
        finally:
            if dispatcher.sender is not None:
                await dispatcher.sender.close()

    @app.task
    async def record() -> None:
        await dispatcher.record_forever(stopping)

    @app.task
    async def listen() -> None:
        await dispatcher.listen_forever(stopping)

    def survive(task: str) -> Any:
        return keep_serving(task, metrics.BACKGROUND_ERRORS, log)

    @app.timer(interval=1.0)
    @survive("escalation")
    async def escalate() -> None:
        await dispatcher.escalate()

    @app.timer(interval=1.0)
    @survive("evidence")
    async def evidence() -> None:
        await dispatcher.copy_evidence()

    @app.timer(interval=float(max(1, settings.audit_anchor_interval_s)))
    @survive("ledger_anchor")
    async def anchor() -> None:
        await dispatcher.publish_anchor()

    @app.task
    async def api() -> None:
        await dispatcher.serve_api(stopping)

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            await dispatcher.update_gauges()
            body, content_type = exposition(metrics.REGISTRY)
            return self.bytes(body, content_type=content_type)

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            # The escalation timer ticks every second; the delivery loop at least as often.
            last = min(dispatcher.last_tick, dispatcher.last_turn)
            if dispatcher.sender is None:
                last = dispatcher.last_tick
            stalled = time.monotonic() - last > 30
            return self.json(
                {"status": "stalled" if stalled else "ok", "in_flight": dispatcher.in_flight},
                status=503 if stalled else 200,
            )

    return app, dispatcher
