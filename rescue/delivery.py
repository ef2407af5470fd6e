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
from typing import Final

import aiohttp
from standardwebhooks.webhooks import Webhook

from . import metrics
from .lifecycle import Outcome, RetrySchedule, classify_status, parse_retry_after
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


class SecretError(ValueError):
    """The webhook secret is not a usable ``whsec_…`` secret."""


def signer(secret: str) -> Webhook:
    """A Standard Webhooks signer for ``secret`` (``whsec_`` + base64)."""
    if not secret.startswith("whsec_"):
        raise SecretError(
            "TIANYAN_RESCUE_WEBHOOK_SECRET must be a whsec_… secret (whsec_ + base64)"
        )
    try:
        return Webhook(secret)
    except Exception as e:  # the package raises binascii errors for bad base64
        raise SecretError(
            f"TIANYAN_RESCUE_WEBHOOK_SECRET is not valid base64 after whsec_: {e}"
        ) from e


def signing_key_id(secret: str) -> str:
    """A public name for ``secret``: the first 16 hex digits of its SHA-256. Outbox rows
    carry it so that only a dispatcher holding that secret claims them."""
    return "key_" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def new_secret() -> str:
    """A fresh ``whsec_…`` secret (24 random bytes), as an operator would generate one."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def body_bytes(payload: dict) -> bytes:
    """The exact bytes sent (and signed) for a payload: the same on every attempt."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class Sender:
    """Sends claimed deliveries; at most ``concurrency`` requests at once."""

    def __init__(
        self,
        secret: str,
        *,
        timeout_s: float,
        concurrency: int,
        schedule: RetrySchedule,
        rng: random.Random | None = None,
    ) -> None:
        self.webhook = signer(secret)
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

    def headers(self, webhook_id: str, at: dt.datetime, body: bytes) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self.webhook.sign(webhook_id, at, body.decode()),
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
        try:
            async with self.session.post(
                due.endpoint, data=body, headers=self.headers(due.webhook_id, sent_at, body)
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                answer = (await resp.text(errors="replace"))[:200]
            error = None if 200 <= status < 300 else f"HTTP {status}: {answer}".strip()
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        seconds = time.perf_counter() - started
        metrics.REQUEST_SECONDS.observe(seconds)
        kind: Outcome = classify_status(status) if status is not None else "retry"
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
            f" with HTTP {status}: {_AUTH_OR_ROUTE_HINT[status]}. Retrying until"
            f" {give_up_at:%Y-%m-%d %H:%M:%S} UTC, then dead-lettered",
            extra={
                "endpoint": due.endpoint,
                "status": status,
                "webhook_id": due.webhook_id,
                "incident_id": str(due.incident_id),
                "attempt": due.attempts,
            },
        )
