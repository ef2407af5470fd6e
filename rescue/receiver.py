"""The reference receiver (``tianyan rescue-receiver``): what an integrator's endpoint does.

- verifies each request's Standard Webhooks signature with the ``standardwebhooks``
  package (401 and nothing recorded when it does not verify, or is older than five minutes);
- drops duplicates by ``webhook-id`` — the dispatcher sends the same id on every attempt —
  answering 200 so the sender stops;
- logs each incident change, one line per event, and appends it to a JSON Lines journal
  from which the set of seen ids is restored on start (dedup survives a restart);
- optionally acknowledges each new incident through the dispatcher's acknowledgement API,
  signing its request — method, path and body — with the platform's action secret (never
  the webhook secret, which only proves what the dispatcher sent); each attempt is signed
  under a new webhook-id (the API refuses a replayed one) and carries one Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import WebhookVerificationError

from .delivery import body_bytes, signed_content, signer

log = logging.getLogger("tianyan.rescue_receiver")


class Receiver:
    def __init__(
        self,
        secret: str,
        journal: Path | None = None,
        acknowledge_url: str | None = None,
        actor: str = "reference-receiver",
        action_secret: str | None = None,
    ) -> None:
        self.webhook = signer(secret)
        if acknowledge_url and not action_secret:
            raise ValueError(
                "acknowledging needs the platform's action secret (TIANYAN_RESCUE_ACTION_SECRET)"
            )
        self.action_signer = (
            signer(action_secret, "TIANYAN_RESCUE_ACTION_SECRET") if action_secret else None
        )
        self.journal = journal
        self.acknowledge_url = acknowledge_url.rstrip("/") if acknowledge_url else None
        self.actor = actor
        self.seen: set[str] = set()
        self.received = self.duplicates = self.rejected = self.acknowledged = 0
        self._tasks: set[asyncio.Task[None]] = set()
        if journal is not None and journal.exists():
            for line in journal.read_text().splitlines():
                if line.strip():
                    self.seen.add(json.loads(line)["webhook_id"])

    def line(self, payload: dict[str, Any]) -> str:
        d = payload.get("data", {})
        e, f, c = d.get("elevator", {}), d.get("fault", {}), d.get("car") or {}
        trapped = f" {f.get('estimated_trapped')} trapped" if f.get("trapped") else ""
        door_zone = c.get("door_zone")
        zone = "" if door_zone is None else "in" if door_zone else "outside"
        where = (
            f" floor {c.get('floor')}{f', {zone} the door zone' if zone else ''}"
            if c.get("floor") is not None
            else ""
        )
        return (
            f"{payload.get('type')} {d.get('incident_id')} {e.get('registration_code')}"
            f" {f.get('type')} ({f.get('severity')}){trapped} state={d.get('state')}"
            f" level={d.get('escalation_level')} — {e.get('district')} {e.get('address')}{where}"
        )

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            payload = self.webhook.verify(body, headers)
        except WebhookVerificationError as e:
            self.rejected += 1
            log.warning("rejected: %s", e)
            return web.json_response({"error": f"signature: {e}"}, status=401)
        webhook_id = headers["webhook-id"]
        if webhook_id in self.seen:
            self.duplicates += 1
            return web.json_response({"duplicate": True})
        self.seen.add(webhook_id)
        self.received += 1
        if self.journal is not None:
            record = {
                "webhook_id": webhook_id,
                "received_at": dt.datetime.now(dt.UTC).isoformat(),
                "received_unix_s": time.time(),
                "payload": payload,
            }
            with self.journal.open("a") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        log.info(self.line(payload))
        if self.acknowledge_url and payload.get("type") == "incident.opened":
            task = asyncio.ensure_future(self.acknowledge(payload["data"]["incident_id"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response({"received": webhook_id})

    def action_headers(self, path: str, body: bytes) -> dict[str, str]:
        """Standard Webhooks headers for one signed action request to ``path``."""
        assert self.action_signer is not None
        request_id = f"req_{uuid.uuid4().hex}"
        now = dt.datetime.now(dt.UTC)
        content = signed_content("POST", path, body).decode()
        return {
            "content-type": "application/json",
            "webhook-id": request_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.action_signer.sign(request_id, now, content),
        }

    async def acknowledge(self, incident_id: str) -> None:
        body = body_bytes({"actor": self.actor, "note": "acknowledged by the reference receiver"})
        path = f"/incidents/{incident_id}/acknowledge"
        idempotency_key = f"ack_{uuid.uuid4().hex}"
        for _ in range(5):
            headers = {**self.action_headers(path, body), "idempotency-key": idempotency_key}
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(
                        f"{self.acknowledge_url}{path}", data=body, headers=headers
                    ) as resp,
                ):
                    answer = await resp.text()
                    if resp.status < 500 and resp.status != 429:
                        if resp.status == 200:
                            self.acknowledged += 1
                        log.info("acknowledge %s: %s %s", incident_id, resp.status, answer)
                        return
            except aiohttp.ClientError as e:
                log.warning("acknowledge %s failed: %s", incident_id, e)
            await asyncio.sleep(1.0)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "received": self.received,
                "duplicates": self.duplicates,
                "rejected": self.rejected,
                "acknowledged": self.acknowledged,
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        app.router.add_get("/stats", self.stats)
        return app
