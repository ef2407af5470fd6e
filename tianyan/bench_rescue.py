"""``tianyan bench rescue``: how fast an alert becomes a signed webhook, and how many
deliveries a dispatcher sends per second — measured on the real stack with the reference
receiver, in a database and topics of the run's own (dropped afterwards).

(a) latency: alerts published to Kafka at a nominal rate; for each, from the alert record's
    Kafka timestamp (the worker's publish) to the webhook request sent (the attempt's start,
    stored as ``delivered_at`` for a first-attempt delivery) and to the receiver's arrival.
(b) throughput: N incidents recorded with the dispatcher stopped, so N deliveries wait in
    the outbox; the dispatcher is started and the deliveries per second counted from its
    first attempt to its last delivery.
(c) a district power cut: ``--cut-elevators`` elevators (2,000) raise power loss and
    ``--cut-trapped`` of them (300) trappings, all within ``--cut-seconds`` (10 s), while
    two stream workers fold a simulated minute of the same fleet's telemetry. For each alert,
    from its Kafka timestamp to its incident opened (``incident_alert.applied_at``) and to
    the first request of its webhook (``first_attempt_at``); and the alerts applied per
    second over the burst (first alert published → last alert applied). Goals: p99 ≤ 10 s,
    ≥ 200 alerts/s.
(d) the dispatcher's capacity: as many alerts queued on Kafka while it is stopped, then
    drained: alerts applied per second from the first applied to the last.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import time
import uuid
from typing import Any

import msgspec
import numpy as np
import psycopg

from foundation.settings import PROJECT_ROOT, Settings
from tianyan.harness import TIANYAN, Run, pipeline
from tianyan.processes import free_port


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(
    settings: Settings,
    *,
    rate_per_s: float,
    duration_s: float,
    burst: int,
    cut_elevators: int = 2000,
    cut_trapped: int = 300,
    cut_seconds: float = 10.0,
) -> dict:
    from detectors.alerts import make_alert
    from registry.generate import generate
    from registry.store import upsert
    from rescue import store
    from rescue.delivery import endpoint_name, new_secret
    from streams.producer import RawPublisher

    tag = uuid.uuid4().hex[:8]
    work = PROJECT_ROOT / "var" / "bench" / f"rescue-{tag}"
    journal = work / "received.jsonl"
    receiver_port = free_port()
    with pipeline(
        settings,
        f"tianyan_bench_rescue_{tag}",
        work,
        partitions=8,
        rescue_webhook_urls=(f"http://127.0.0.1:{receiver_port}/96333",),
        rescue_webhook_secret=new_secret(),
        # every incident to the endpoint (overloads too): the bench measures delivery
        rescue_min_severity="info",
        grading_interval_s=0,
    ) as run:
        alerts_topic = run.settings.alerts_topic

        def count(sql: str) -> int:
            return int(run.scalar(sql) or 0)

        def wait_count(sql: str, target: int, what: str) -> None:
            run.wait(lambda: count(sql), lambda n: n >= target, what)

        fleet = generate(1, max(2000, cut_elevators), dt.date.today())
        upsert(run.admin_url, fleet)
        run.start_receiver(receiver_port, journal)
        run.start_dispatcher()
        time.sleep(3.0)  # the consumer group settles

        # (a) latency at a nominal rate
        n = int(rate_per_s * duration_s)
        _say(f"(a) {n} alerts at {rate_per_s:g}/s to the dispatcher …")
        interval = 1.0 / rate_per_s
        with RawPublisher(
            settings.kafka_bootstrap, alerts_topic, linger_ms=0, security=settings.kafka_security
        ) as pub:
            next_at = time.monotonic()
            for i in range(n):
                car = fleet[i % len(fleet)]
                now_ms = int(time.time() * 1000)
                kind = "trapped_between_levels" if i % 10 == 0 else "overload"
                alert = make_alert(
                    car.registration_code,
                    kind,
                    now_ms - i,
                    now_ms,
                    {"i": i},
                    estimated_trapped=1 if kind.startswith("trapped") else None,
                )
                pub.publish(car.registration_code.encode(), msgspec.json.encode(alert))
                pub.flush(5.0)
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        wait_count(
            "SELECT count(*) FROM webhook_delivery WHERE status = 'delivered'",
            n,
            "every latency-run delivery",
        )
        with psycopg.connect(run.admin_url) as conn:
            rows = conn.execute(
                "SELECT webhook_id, extract(epoch FROM source_time)::float8,"
                " extract(epoch FROM delivered_at - source_time)::float8"
                " FROM webhook_delivery WHERE attempts = 1 AND status = 'delivered'"
            ).fetchall()
        source = {w: s for w, s, _ in rows}
        to_sent_ms = np.array([d for _, _, d in rows]) * 1000
        received = [json.loads(line) for line in journal.read_text().splitlines()]
        to_received_ms = np.array(
            [
                (r["received_unix_s"] - source[r["webhook_id"]]) * 1000
                for r in received
                if r["webhook_id"] in source
            ]
        )

        # (b) throughput from a full outbox
        _say(f"(b) {burst} deliveries queued with the dispatcher stopped …")
        run.group.stop("dispatcher")
        config = store.DispatchConfig(  # endpoints by name, as the dispatcher queues them
            tuple(endpoint_name(u) for u in run.settings.rescue_webhook_urls),
            settings.escalation_after_s,
            1800,
            rescue_min_severity="info",
        )
        base_ms = int(time.time() * 1000)
        with psycopg.connect(run.writer_url) as conn:
            for i in range(burst):
                car = fleet[i % len(fleet)]
                alert = make_alert(
                    car.registration_code,
                    "terminal_fault",
                    base_ms + i,
                    base_ms + i,
                    {"i": i},
                    gb_code="99",
                )
                store.apply_alert(conn, alert, config, received_at=dt.datetime.now(dt.UTC))
        pending = count("SELECT count(*) FROM webhook_delivery WHERE status = 'pending'")
        started = time.monotonic()
        run.start_dispatcher()
        wait_count(
            "SELECT count(*) FROM webhook_delivery WHERE status <> 'pending'",
            n + burst,
            "every queued delivery",
        )
        wall_s = time.monotonic() - started
        with psycopg.connect(run.admin_url) as conn:
            first, last, delivered, dead = conn.execute(
                "SELECT min(first_attempt_at), max(delivered_at),"
                " count(*) FILTER (WHERE status = 'delivered'),"
                " count(*) FILTER (WHERE status = 'dead')"
                " FROM webhook_delivery WHERE created_at >= (SELECT min(created_at) FROM"
                " webhook_delivery WHERE event_type = 'incident.opened'"
                " AND payload->'data'->'fault'->>'type' = 'terminal_fault')"
            ).fetchone()
        seconds = (last - first).total_seconds()
        # (c) a district power cut, while two workers fold the fleet's telemetry
        cut = _power_cut(
            run,
            wait_count,
            fleet=fleet[:cut_elevators],
            trapped=cut_trapped,
            seconds=cut_seconds,
        )
        # (d) the dispatcher's capacity: the same number of alerts queued while it is
        # stopped, then drained
        drain = _drain(run, wait_count, fleet[:cut_elevators], n=cut_elevators + cut_trapped)
        journal_ids = [json.loads(x)["webhook_id"] for x in journal.read_text().splitlines()]
        verified = subprocess.run(
            [TIANYAN, "audit", "verify"],
            env=run.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        summary = {
            "latency_alerts": n,
            "latency_rate_per_s": rate_per_s,
            "alert_to_sent_ms_p50": round(float(np.percentile(to_sent_ms, 50)), 1),
            "alert_to_sent_ms_p99": round(float(np.percentile(to_sent_ms, 99)), 1),
            "alert_to_sent_ms_max": round(float(to_sent_ms.max()), 1),
            "alert_to_received_ms_p50": round(float(np.percentile(to_received_ms, 50)), 1),
            "alert_to_received_ms_p99": round(float(np.percentile(to_received_ms, 99)), 1),
            "burst_queued": pending,
            "burst_delivered": delivered,
            "burst_dead": dead,
            "burst_seconds": round(seconds, 2),
            "deliveries_per_s": round(delivered / seconds, 1) if seconds > 0 else None,
            "burst_wall_seconds_incl_start": round(wall_s, 1),
            **cut,
            **drain,
            "receiver_events_unique": len(set(journal_ids)),
            "receiver_events": len(journal_ids),
            "ledger_verified": verified.returncode == 0,
        }
        _say(
            f"(a) alert → webhook sent: p50 {summary['alert_to_sent_ms_p50']} ms,"
            f" p99 {summary['alert_to_sent_ms_p99']} ms (received: p99"
            f" {summary['alert_to_received_ms_p99']} ms)"
        )
        _say(f"(b) {delivered} deliveries in {seconds:.2f} s = {summary['deliveries_per_s']}/s")
        _say(
            f"(c) power cut, {cut['cut_alerts']} alerts in {cut_seconds:g} s: alert → incident"
            f" p99 {cut['cut_alert_to_incident_s_p99']} s, alert → first webhook p99"
            f" {cut['cut_alert_to_first_webhook_s_p99']} s;"
            f" {cut['cut_alerts_applied_per_s']} alerts applied/s"
        )
        return summary


def _power_cut(
    run: Run, wait_count: Any, *, fleet: list[Any], trapped: int, seconds: float
) -> dict[str, Any]:
    """Stage (c): the burst, with two workers busy; its figures."""
    import simulator
    from detectors.alerts import make_alert
    from replay import from_jsonl, replay
    from streams.producer import RawPublisher

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stream = run.work / "fleet.jsonl"
    scenario = PROJECT_ROOT / "simulator" / "scenarios" / "demo.toml"
    simulator.simulate(
        simulator.load_scenario(scenario),
        fleet,
        start=now - dt.timedelta(minutes=2),
        duration_s=60,
        output=simulator.FileOutput(stream),
        progress=False,
    )
    for i in range(2):
        run.start_worker(f"worker {i + 1}")
    bootstrap = run.settings.kafka_bootstrap
    security = run.settings.kafka_security
    with RawPublisher(bootstrap, run.settings.raw_topic, security=security) as pub:
        telemetry = replay(from_jsonl(stream), pub, progress=False).messages
    _say(f"(c) {telemetry} telemetry messages for the workers; the power cut begins …")
    rng = random.Random(96333)
    trapped_ids = {e.registration_code for e in rng.sample(fleet, trapped)}
    kinds = [("power_loss", e.registration_code) for e in fleet] + [
        (rng.choice(("trapped_between_levels", "trapped_at_level")), e) for e in trapped_ids
    ]
    rng.shuffle(kinds)
    before = int(
        run.scalar("SELECT count(*) FROM incident_alert")  # the earlier stages' alerts
    )
    interval = seconds / len(kinds)
    keys: list[str] = []
    t0 = time.monotonic()
    with RawPublisher(bootstrap, run.settings.alerts_topic, linger_ms=5, security=security) as pub:
        for i, (kind, elevator_id) in enumerate(kinds):
            now_ms = int(time.time() * 1000)
            alert = make_alert(
                elevator_id,
                kind,
                now_ms - 1000,
                now_ms,
                {"power": "lost", "district": "power cut"},
                estimated_trapped=2 if kind.startswith("trapped") else None,
            )
            keys.append(alert.alert_key)
            pub.publish(elevator_id.encode(), msgspec.json.encode(alert))
            pub._producer.poll(0)
            time.sleep(max(0.0, t0 + (i + 1) * interval - time.monotonic()))
    published_s = time.monotonic() - t0
    wait_count("SELECT count(*) FROM incident_alert", before + len(kinds), "every power-cut alert")
    wait_count(
        "SELECT count(*) FROM webhook_delivery WHERE first_attempt_at IS NOT NULL",
        run.scalar("SELECT count(*) FROM webhook_delivery"),
        "the first attempt of every power-cut webhook",
    )
    # Per alert: applied (opening its incident, or updating one already open) and the first
    # request of the webhook that change queued.
    with psycopg.connect(run.admin_url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM a.applied_at - d.source_time)::float8,"
            " extract(epoch FROM d.first_attempt_at - d.source_time)::float8,"
            " extract(epoch FROM d.source_time)::float8, extract(epoch FROM a.applied_at)::float8"
            " FROM incident_alert a JOIN alert r ON r.alert_id = a.alert_id"
            " JOIN webhook_delivery d ON d.payload->'data'->'fault'->>'alert_key' = r.alert_key"
            " AND d.event_type IN ('incident.opened', 'incident.updated')"
            " WHERE r.state = 'raised' AND r.alert_key = ANY(%s)",
            (keys,),
        ).fetchall()
        opened = conn.execute(
            "SELECT count(*) FROM incident WHERE alert_key = ANY(%s)", (keys,)
        ).fetchone()
    to_open = np.array([r[0] for r in rows])
    to_sent = np.array([r[1] for r in rows])
    first_alert_s = min(r[2] for r in rows)
    applied = sorted(r[3] for r in rows)
    # The rate while there was work: from the first alert applied to the last.
    span_s = applied[-1] - applied[0]
    return {
        "cut_alerts": len(kinds),
        "cut_alerts_measured": len(rows),
        "cut_incidents_opened": opened[0] if opened else 0,
        "cut_publish_seconds": round(published_s, 2),
        "cut_telemetry_messages": telemetry,
        "cut_alert_to_incident_s_p50": round(float(np.percentile(to_open, 50)), 3),
        "cut_alert_to_incident_s_p99": round(float(np.percentile(to_open, 99)), 3),
        "cut_alert_to_first_webhook_s_p50": round(float(np.percentile(to_sent, 50)), 3),
        "cut_alert_to_first_webhook_s_p99": round(float(np.percentile(to_sent, 99)), 3),
        "cut_alert_to_first_webhook_s_max": round(float(to_sent.max()), 3),
        "cut_alerts_applied_per_s": round(len(rows) / span_s, 1),
        "cut_last_applied_after_first_alert_s": round(applied[-1] - first_alert_s, 2),
    }


def _drain(run: Run, wait_count: Any, fleet: list[Any], *, n: int) -> dict[str, Any]:
    """Stage (d): ``n`` alerts queued on Kafka with the dispatcher stopped, then drained;
    alerts applied per second from the first applied to the last."""
    from detectors.alerts import make_alert
    from streams.producer import RawPublisher

    run.group.stop("dispatcher")
    base_ms = int(time.time() * 1000)
    ids = []
    with RawPublisher(
        run.settings.kafka_bootstrap,
        run.settings.alerts_topic,
        security=run.settings.kafka_security,
    ) as pub:
        for i in range(n):
            car = fleet[i % len(fleet)].registration_code
            alert = make_alert(car, "terminal_fault", base_ms + i, base_ms + i, {"i": i})
            ids.append(alert.alert_id)
            pub.publish(car.encode(), msgspec.json.encode(alert))
    _say(f"(d) {n} alerts queued; the dispatcher drains them …")
    before = run.scalar("SELECT count(*) FROM incident_alert")
    run.start_dispatcher()
    wait_count("SELECT count(*) FROM incident_alert", before + n, "draining the queued alerts")
    with psycopg.connect(run.admin_url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM max(applied_at) - min(applied_at))::float8, count(*)"
            " FROM incident_alert WHERE alert_id = ANY(%s)",
            (ids,),
        ).fetchone()
    assert row is not None
    span_s, applied = row
    rate = round(applied / span_s, 1) if span_s else None
    _say(f"(d) {applied} queued alerts drained at {rate}/s")
    return {"drain_alerts": applied, "drain_seconds": round(span_s, 2), "drain_alerts_per_s": rate}
