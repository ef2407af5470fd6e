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
  under a new webhook-id (the API refuses a replayed one) and carries one Idempotency-Key;
- optionally plays the rescuers (:class:`RescuerTravel`): for each incident routed to the
  rescue platform, after acknowledging it, reports the arrival measured on site — the
  opening time plus a travel time drawn per incident (log-normal, seeded by the incident
  id), never later than now — so that arrival times and on-time shares have data in a demo.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import WebhookVerificationError

from .delivery import body_bytes, signed_content, signer

log = logging.getLogger("tianyan.rescue_receiver")


@dataclass(frozen=True)
class RescuerTravel:
    """Rescuers' travel times, opened → arrived on site: log-normal with this median and
    90th percentile, in minutes."""

    median_min: float
    p90_min: float

    def __post_init__(self) -> None:
        if not 0 < self.median_min <= self.p90_min:
            raise ValueError(
                f"rescuer travel: median {self.median_min} min and p90 {self.p90_min} min"
                " must be positive, the median not above the p90"
            )

    def minutes(self, incident_id: str) -> float:
        """The travel time to one incident, the same on every call (seeded by its id)."""
        sigma = math.log(self.p90_min / self.median_min) / 1.2815515655446004  # z of 0.9
        return random.Random(incident_id).lognormvariate(math.log(self.median_min), sigma)

    def arrived_at(self, incident_id: str, opened_at: dt.datetime) -> dt.datetime:
        """When the rescuers reached the car: opened plus the travel, at the latest now."""
        arrival = opened_at + dt.timedelta(minutes=self.minutes(incident_id))
        return min(arrival, dt.datetime.now(dt.UTC))


class Receiver:
    def __init__(
        self,
        secret: str,
        journal: Path | None = None,
        acknowledge_url: str | None = None,
        actor: str = "reference-receiver",
        action_secret: str | None = None,
        travel: RescuerTravel | None = None,
    ) -> None:
        self.webhook = signer(secret)
        if travel is not None and not acknowledge_url:
            raise ValueError("reporting arrivals needs the dispatcher's URL (--acknowledge)")
        self.travel = travel
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
        self.received = self.duplicates = self.rejected = self.acknowledged = self.arrived = 0
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
            task = asyncio.ensure_future(self.respond(payload["data"]))
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

    async def respond(self, incident: dict[str, Any]) -> None:
        """Acknowledge a new incident; as the rescuers, report arriving at one routed to
        the rescue platform."""
        incident_id = incident["incident_id"]
        note = "acknowledged by the reference receiver"
        if not await self.act(incident_id, "acknowledge", {"actor": self.actor, "note": note}):
            return
        self.acknowledged += 1
        if self.travel is None or incident.get("route") != "rescue":
            return
        opened_at = dt.datetime.fromisoformat(incident["times"]["opened_at"])
        arrived_at = self.travel.arrived_at(incident_id, opened_at)
        body = {
            "actor": self.actor,
            "note": "rescuers on site (reference receiver)",
            "arrived_at": arrived_at.isoformat(),
        }
        if await self.act(incident_id, "arrive", body):
            self.arrived += 1

    async def act(self, incident_id: str, action: str, fields: dict[str, Any]) -> bool:
        """POST one signed action; True when the dispatcher took it (200)."""
        body = body_bytes(fields)
        path = f"/incidents/{incident_id}/{action}"
        idempotency_key = f"{action}_{uuid.uuid4().hex}"
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
                        log.info("%s %s: %s %s", action, incident_id, resp.status, answer)
                        return resp.status == 200
            except aiohttp.ClientError as e:
                log.warning("%s %s failed: %s", action, incident_id, e)
            await asyncio.sleep(1.0)
        return False

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "received": self.received,
                "duplicates": self.duplicates,
                "rejected": self.rejected,
                "acknowledged": self.acknowledged,
                "arrived": self.arrived,
                "in_flight": len(self._tasks),
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        app.router.add_get("/stats", self.stats)
        return app
