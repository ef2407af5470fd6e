"""One signed webhook attempt: the Standard Webhooks scheme via the ``standardwebhooks``
package, POSTed with aiohttp, classified by the lifecycle's rules."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from standardwebhooks.webhooks import Webhook

from . import metrics
from .lifecycle import Outcome, RetrySchedule, classify_status, parse_retry_after
from .routing import RESCUE_PLATFORM, EndpointRoute, parse_endpoint_entry
from .store import Attempt, Due

USER_AGENT: Final = "tianyan-dispatcher"
log = logging.getLogger("tianyan.dispatcher")

#: What to check when the receiver refuses us (401, 403) or the address (404, 410).
_AUTH_OR_ROUTE_HINT: Final = {
    401: "it does not accept our signature: check TIANYAN_RESCUE_WEBHOOK_SECRET with the"
    " rescue platform",
    403: "it does not accept our signature: check TIANYAN_RESCUE_WEBHOOK_SECRET with the"
    " rescue platform",
    404: "nothing is there: check TIANYAN_RESCUE_WEBHOOK_URL with the rescue platform",
    410: "the address is gone: check TIANYAN_RESCUE_WEBHOOK_URL with the rescue platform",
}
#: A redirect is never followed (a 301/302 would turn the POST into a GET whose 2xx is no
#: delivery; a 307/308 would re-post the signed, personal payload wherever it points).
_REDIRECT_HINT: Final = (
    "redirects are not followed: put the address it points to in TIANYAN_RESCUE_WEBHOOK_URL"
    " if the rescue platform confirms it"
)


class SecretError(ValueError):
    """The webhook secret is not a usable ``whsec_…`` secret."""


class EndpointError(ValueError):
    """The webhook endpoints and their secrets do not fit together, or an address is not
    one webhooks may be sent to."""


def signer(secret: str, setting: str = "TIANYAN_RESCUE_WEBHOOK_SECRET") -> Webhook:
    """A Standard Webhooks signer for ``secret`` (``whsec_`` + base64); errors name
    ``setting``."""
    if not secret.startswith("whsec_"):
        raise SecretError(f"{setting} must hold whsec_… secrets (whsec_ + base64)")
    try:
        return Webhook(secret)
    except Exception as e:  # the package raises binascii errors for bad base64
        raise SecretError(
            f"{setting} holds a secret that is not valid base64 after whsec_: {e}"
        ) from e


def signing_key_id(secret: str) -> str:
    """A public name for ``secret`` (the whole TIANYAN_RESCUE_WEBHOOK_SECRET): the first 16
    hex digits of its SHA-256. Outbox rows carry it so that only a dispatcher holding the
    same secrets claims them."""
    return "key_" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def redact_url(url: str) -> str:
    """``url`` as it may be shown or stored: ``scheme://host[:port]/…``, without user info,
    path or query (where tokens live)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(an unreadable URL)"
    if not parts.scheme or not host:
        return "(an unreadable URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/…"


def endpoint_name(url: str) -> str:
    """The name under which an endpoint is stored and shown (outbox rows, ledger entries,
    metrics labels, boards, logs): its redacted URL and a short fingerprint of the whole
    URL, so that two endpoints on one host stay apart."""
    return f"{redact_url(url)} ({hashlib.sha256(url.encode()).hexdigest()[:8]})"


@dataclass(frozen=True)
class Endpoint:
    """A webhook endpoint: its URL (secret: it may hold a token), its signing secrets, and
    whom it stands for (the rescue platform, the maintenance company, a response level)."""

    url: str
    secrets: tuple[str, ...]
    route: EndpointRoute = RESCUE_PLATFORM

    @property
    def name(self) -> str:
        return endpoint_name(self.url)

    @cached_property
    def signers(self) -> tuple[Webhook, ...]:
        return tuple(signer(s) for s in self.secrets)


def webhook_endpoints(
    urls: Sequence[str], secrets: str | None, *, allow_http: bool = False
) -> tuple[Endpoint, ...]:
    """The endpoints of ``TIANYAN_RESCUE_WEBHOOK_URL`` with their secrets from
    ``TIANYAN_RESCUE_WEBHOOK_SECRET``: one entry per URL, in order, separated by spaces; an
    entry holds one secret, or several joined by commas during a rotation. A URL entry may
    name the endpoint's kind (``maintenance=https://…``, ``district@朝阳区=https://…``:
    :func:`rescue.routing.parse_endpoint_entry`); without one it is the rescue platform's.

    Raises
    ------
    EndpointError
        When the counts differ, or a URL is not ``https://`` (``http://`` only with
        ``allow_http``, TIANYAN_RESCUE_ALLOW_HTTP).
    SecretError
        When a secret is not a ``whsec_…`` secret.
    """
    entries = (secrets or "").split()
    if len(entries) != len(urls):
        raise EndpointError(
            f"TIANYAN_RESCUE_WEBHOOK_URL names {len(urls)} endpoint(s) but"
            f" TIANYAN_RESCUE_WEBHOOK_SECRET holds {len(entries)} entries: give one entry per"
            " endpoint, in the same order (secrets of one endpoint joined by commas)"
        )
    endpoints = []
    for url_entry, entry in zip(urls, entries, strict=True):
        url, route = parse_endpoint_entry(url_entry)
        scheme = urlsplit(url).scheme.lower()
        if scheme != "https" and not (allow_http and scheme == "http"):
            raise EndpointError(
                f"webhook endpoint {redact_url(url)}: only https:// addresses are accepted"
                + (
                    " (http:// only with TIANYAN_RESCUE_ALLOW_HTTP=on, in development)"
                    if scheme == "http"
                    else ""
                )
            )
        endpoint = Endpoint(url, tuple(s for s in entry.split(",") if s), route)
        if not endpoint.secrets:
            raise EndpointError(f"webhook endpoint {redact_url(url)} has no secret")
        endpoint.signers  # noqa: B018 -- validates every secret now, at start
        endpoints.append(endpoint)
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise EndpointError("TIANYAN_RESCUE_WEBHOOK_URL names an endpoint twice")
    return tuple(endpoints)


def new_secret() -> str:
    """A fresh ``whsec_…`` secret (24 random bytes), as an operator would generate one."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def body_bytes(payload: dict) -> bytes:
    """The exact bytes sent (and signed) for a payload: the same on every attempt."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def signed_content(method: str, path: str, body: bytes) -> bytes:
    """What a signed action request signs as its Standard Webhooks payload: the method, the
    path (with any query) as sent, a newline, then the body — so that a signature made for
    one incident or action verifies for no other."""
    return f"{method.upper()} {path}\n".encode() + body


class Sender:
    """Sends claimed deliveries; at most ``concurrency`` requests at once."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        timeout_s: float,
        concurrency: int,
        schedule: RetrySchedule,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoints = {e.name: e for e in endpoints}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.concurrency = concurrency
        self.schedule = schedule
        self.rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                headers={"user-agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def headers(
        self, endpoint: Endpoint, webhook_id: str, at: dt.datetime, body: bytes
    ) -> dict[str, str]:
        """Standard Webhooks headers; signed with each of the endpoint's secrets
        (``v1,sig1 v1,sig2``), so a receiver holding either verifies during a rotation."""
        text = body.decode()
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": " ".join(w.sign(webhook_id, at, text) for w in endpoint.signers),
        }

    async def attempt(self, due: Due) -> Attempt:
        body = body_bytes(due.payload)
        sent_at = dt.datetime.now(dt.UTC)
        if due.attempts == 1 and due.source_time is not None:
            metrics.CHANGE_TO_SEND_SECONDS.observe((sent_at - due.source_time).total_seconds())
        metrics.ATTEMPTS.labels(due.endpoint).inc()
        started = time.perf_counter()
        status: int | None = None
        retry_after: str | None = None
        redirected = False
        endpoint = self.endpoints[due.endpoint]
        try:
            async with self.session.post(
                endpoint.url,
                data=body,
                headers=self.headers(endpoint, due.webhook_id, sent_at, body),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                answer = (await resp.text(errors="replace"))[:200]
                redirected = 300 <= status < 400
                if redirected:
                    answer = (
                        f"redirect to {redact_url(resp.headers.get('Location', ''))}"
                        f" not followed ({_REDIRECT_HINT})"
                    )
            error = None if 200 <= status < 300 else f"HTTP {status}: {answer}".strip()
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            # aiohttp's messages may quote the URL: name the endpoint instead.
            message = str(e).replace(endpoint.url, due.endpoint)
            error = f"{type(e).__name__}: {message}" if message else type(e).__name__
        seconds = time.perf_counter() - started
        metrics.REQUEST_SECONDS.observe(seconds)
        kind: Outcome = (
            "auth_or_route"  # an operator has to put the address right: retried, alerted
            if redirected
            else classify_status(status)
            if status is not None
            else "retry"
        )
        outcome: str = kind  # as recorded: delivered | retry | dead
        next_at: dt.datetime | None = None
        if kind != "delivered":
            metrics.FAILURES.labels(str(status) if status is not None else "error").inc()
        if kind == "refused":
            outcome, error = "dead", f"refused by the receiver, not retried: {error}"
        elif kind in ("retry", "auth_or_route"):
            if kind == "auth_or_route":
                assert status is not None
                self._alert_auth_or_route(due, status)
            now = dt.datetime.now(dt.UTC)
            delay = self.schedule.delay_s(
                due.attempts, parse_retry_after(retry_after, now), self.rng
            )
            next_at = now + dt.timedelta(seconds=delay)
            give_up_s = self.schedule.give_up_age_s(kind)
            outcome = "retry"
            if (next_at - due.created_at).total_seconds() > give_up_s:
                limit = (
                    "refused for authentication or route, retried for"
                    f" TIANYAN_WEBHOOK_AUTH_RETRY_S = {give_up_s:.0f} s"
                    if kind == "auth_or_route"
                    else f"max age {give_up_s:.0f} s"
                )
                outcome = "dead"
                error = (
                    f"gave up after {due.attempts} attempts over "
                    f"{(now - due.created_at).total_seconds():.0f} s ({limit}); last: {error}"
                )
                next_at = None
        metrics.OUTCOMES.labels(outcome).inc()
        return Attempt(due, outcome, status, error, next_at, sent_at, seconds)

    def _alert_auth_or_route(self, due: Due, status: int) -> None:
        """Count and log a refusal an operator has to put right (the delivery is retried
        meanwhile, for ``TIANYAN_WEBHOOK_AUTH_RETRY_S``)."""
        metrics.AUTH_OR_ROUTE_REFUSALS.labels(due.endpoint, str(status)).inc()
        give_up_at = due.created_at + dt.timedelta(
            seconds=self.schedule.give_up_age_s("auth_or_route")
        )
        log.error(
            f"the rescue endpoint {due.endpoint} refused {due.event_type} {due.webhook_id}"
            f" with HTTP {status}: {_AUTH_OR_ROUTE_HINT.get(status, _REDIRECT_HINT)}."
            " Retrying until"
            f" {give_up_at:%Y-%m-%d %H:%M:%S} UTC, then dead-lettered",
            extra={
                "endpoint": due.endpoint,
                "status": status,
                "webhook_id": due.webhook_id,
                "incident_id": str(due.incident_id),
                "attempt": due.attempts,
            },
        )
