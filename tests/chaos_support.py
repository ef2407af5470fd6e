"""A small whole pipeline for fault injection: simulated telemetry with trappings → a real
stream worker → the real dispatcher → a recording receiver, with a metrics scrape every
second throughout. A test publishes half the stream, injects its fault, publishes the rest,
recovers, and checks that nothing was lost and nothing duplicated.

Durations are short by default, so the test command can run them; ``make chaos`` sets
``TIANYAN_CHAOS_FULL=1`` for the issue's own (a 6-minute broker outage, a receiver failing
for 11 minutes).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from foundation.settings import Settings
from registry.generate import generate
from registry.store import upsert
from rescue.delivery import new_secret
from streams.producer import RawPublisher
from tianyan.harness import Run, pipeline
from tianyan.processes import free_port

from .rescue_support import RecordingReceiver, http

FULL = os.environ.get("TIANYAN_CHAOS_FULL") == "1"
SCENARIO = Path(__file__).resolve().parent / "scenarios" / "chaos.toml"
ELEVATORS, MINUTES = 30, 4
TRAPPED = ("trapped_between_levels", "trapped_at_level")

#: The events of incidents routed to the rescue platform: each has its delivery (the default
#: routing sends the rest to a maintenance endpoint, which these runs have not).
RESCUE_EVENTS = (
    "SELECT count(*) FROM incident_event e JOIN incident i USING (incident_id)"
    " WHERE coalesce(i.details->>'route', 'rescue') = 'rescue'"
)


@dataclass
class Chaos:
    """One pipeline under test, on the harness's :class:`~tianyan.harness.Run`; see the
    module docstring."""

    run: Run
    receiver: RecordingReceiver
    halves: tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]
    expected_samples: int
    scrapes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def dispatcher_port(self) -> int:
        return self.run.settings.dispatcher_web_port

    def scrape_forever(self) -> None:
        """GET the dispatcher's /metrics every second (issue 11: a scrape must not hold
        transactions open); counted by outcome."""

        def loop() -> None:
            while not self._stop.wait(1.0):
                try:
                    status = http("GET", f"http://127.0.0.1:{self.dispatcher_port}/metrics")
                    self.scrapes[str(status.status_code)] += 1
                except OSError:
                    self.scrapes["down"] += 1

        threading.Thread(target=loop, daemon=True).start()

    def publish(self, half: int) -> RawPublisher:
        """Queue one half of the stream (flushed by the caller: Kafka may be away)."""
        pub = RawPublisher(self.run.settings.kafka_bootstrap, self.run.settings.raw_topic)
        for key, value in self.halves[half]:
            pub.publish(key, value)
        return pub

    # -- waiting and checking --------------------------------------------------------------
    def scalar(self, sql: str, *params: Any) -> int:
        return int(self.run.scalar(sql, *params) or 0)

    def progress(self) -> tuple[int, ...]:
        with psycopg.connect(self.run.admin_url) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM telemetry_sample), (SELECT count(*) FROM alert),"
                " (SELECT count(*) FROM incident_alert), (SELECT count(*) FROM webhook_delivery"
                " WHERE status = 'delivered'), (SELECT count(*) FROM webhook_delivery)"
            ).fetchone()
        assert row is not None
        return (*(int(v) for v in row), len(self.receiver.requests))

    def settle(self) -> None:
        """Wait while anything moves until every sample is stored, every alert applied and
        every incident change delivered."""

        def done(progress: tuple[int, ...]) -> bool:
            samples, alerts, applied, delivered, deliveries, _ = progress
            return (
                samples >= self.expected_samples
                and applied >= alerts > 0
                and delivered == deliveries
                and self.scalar(RESCUE_EVENTS) == deliveries
            )

        self.run.wait(self.progress, done, "the pipeline to store, apply and deliver everything")

    def check_nothing_lost_or_duplicated(self) -> dict[str, int]:
        """The issue's invariants; returns the counts they were checked on."""
        with psycopg.connect(self.run.admin_url) as conn:
            unapplied = conn.execute(
                "SELECT a.alert_key, a.state FROM alert a WHERE NOT EXISTS (SELECT 1 FROM"
                " incident_alert i WHERE i.alert_id = a.alert_id)"
            ).fetchall()
            assert unapplied == [], f"alerts never applied: {unapplied[:5]}"
            trappings = conn.execute(
                "SELECT a.alert_key, count(DISTINCT i.incident_id) FROM alert a"
                " LEFT JOIN incident_alert i ON i.alert_id = a.alert_id"
                " WHERE a.state = 'raised' AND a.alert_type = ANY(%s) GROUP BY a.alert_key",
                (list(TRAPPED),),
            ).fetchall()
            assert trappings, "the stream should hold trappings"
            assert all(n == 1 for _, n in trappings), trappings
            opened = conn.execute(
                "SELECT count(*) FROM incident WHERE fault_type = ANY(%s)", (list(TRAPPED),)
            ).fetchone()
            events = conn.execute(
                "SELECT d.webhook_id, e.incident_id, e.event_id FROM incident_event e"
                " JOIN webhook_delivery d ON d.incident_id = e.incident_id"
                " AND d.payload->'data'->>'event_id' = e.event_id::text ORDER BY e.event_id"
            ).fetchall()
            n_events = conn.execute(RESCUE_EVENTS).fetchone()
        assert opened is not None and n_events is not None
        # every trapping alert that opened an incident opened exactly one
        assert opened[0] <= len(trappings)
        assert len(events) == n_events[0], "every rescue incident's event has its delivery"
        first_arrival: dict[str, int] = {}
        for i, req in enumerate(self.receiver.requests):
            assert req["verified"], f"an unverified request reached the receiver: {req['id']}"
            first_arrival.setdefault(req["id"], i)
        missing = [w for w, _, _ in events if w not in first_arrival]
        assert missing == [], f"{len(missing)} incident events never reached the receiver"
        by_incident: dict[Any, list[tuple[int, int]]] = defaultdict(list)
        for webhook_id, incident_id, event_id in events:
            by_incident[incident_id].append((event_id, first_arrival[webhook_id]))
        for incident_id, seq in by_incident.items():
            arrivals = [a for _, a in sorted(seq)]
            assert arrivals == sorted(arrivals), f"incident {incident_id}: events out of order"
        return {
            "trapping_alerts": len(trappings),
            "trapping_incidents": opened[0],
            "incident_events": n_events[0],
            "requests": len(self.receiver.requests),
        }

    def close(self) -> None:
        self._stop.set()
        self.receiver.close()


@contextmanager
def chaos_pipeline(settings: Settings, work: Path, **changes: Any) -> Iterator[Chaos]:
    """The pipeline on the harness (schema, registry, topics, the simulated stream), its
    services not started yet; ``changes`` are settings for the run."""
    import simulator
    from replay import from_jsonl, inspect_jsonl

    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=MINUTES + 2)
    fleet = generate(11, ELEVATORS, start.date())
    stream = work / "city.jsonl"
    simulator.simulate(
        simulator.load_scenario(SCENARIO),
        fleet,
        start=start,
        duration_s=MINUTES * 60,
        output=simulator.FileOutput(stream),
        progress=False,
    )
    samples = inspect_jsonl(stream).samples
    # Bad lines included: the pipeline must meet them too (keyless ones on no key).
    messages = [(item.key or b"", item.value) for item in from_jsonl(stream)]
    secret = new_secret()
    receiver = RecordingReceiver(secret, free_port())
    half = len(messages) // 2
    with pipeline(
        settings,
        f"tianyan_test_chaos_{uuid.uuid4().hex[:8]}",
        work,
        rescue_webhook_urls=(receiver.url,),
        rescue_webhook_secret=secret,
        checkpoint_interval_s=1.0,
        grading_interval_s=0,
        webhook_retry_base_s=0.5,
        webhook_retry_cap_s=5.0,
        webhook_timeout_s=3.0,
        escalation_after_s=(10**8, 2 * 10**8, 3 * 10**8),  # never, unless told
        **({} if FULL else {"kafka_delivery_timeout_ms": 5000}),
        **changes,
    ) as run:
        run.stall_s = 300 if FULL else 120
        upsert(run.admin_url, fleet)
        c = Chaos(run, receiver, (messages[:half], messages[half:]), len(samples))
        try:
            yield c
        finally:
            c.close()


def flush_until_done(pub: RawPublisher, within_s: float) -> None:
    """Flush, retrying while Kafka is coming back (failed records are sent again)."""
    from streams.producer import PublishError

    deadline = time.monotonic() + within_s
    while True:
        try:
            pub.flush(10.0)
            return
        except PublishError:
            if time.monotonic() > deadline:
                raise
