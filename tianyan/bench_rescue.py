"""``tianyan bench rescue``: how fast an alert becomes a signed webhook, and how many
deliveries a dispatcher sends per second — measured on the real stack with the reference
receiver, in a database and topics of the run's own (dropped afterwards).

(a) latency: alerts published to Kafka at a nominal rate; for each, from the alert record's
    Kafka timestamp (the worker's publish) to the webhook request sent (the attempt's start,
    stored as ``delivered_at`` for a first-attempt delivery) and to the receiver's arrival.
(b) throughput: N incidents recorded with the dispatcher stopped, so N deliveries wait in
    the outbox; the dispatcher is started and the deliveries per second counted from its
    first attempt to its last delivery.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import numpy as np
import psycopg

from tianyan.processes import listening, wait_until
from tianyan.settings import PROJECT_ROOT, Settings

TIANYAN = str(Path(sys.executable).with_name("tianyan"))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(settings: Settings, *, rate_per_s: float, duration_s: float, burst: int) -> dict:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from detectors.alerts import make_alert
    from registry.generate import generate
    from registry.store import upsert
    from sql.migrate import migrate
    from streams.producer import RawPublisher
    from streams.rescue import store
    from streams.rescue.delivery import new_secret

    tag = uuid.uuid4().hex[:8]
    dbname = f"tianyan_bench_rescue_{tag}"
    superuser = f"postgresql://postgres@127.0.0.1:{settings.pg_port}"
    admin_url = f"postgresql://tianyan@127.0.0.1:{settings.pg_port}/{dbname}"
    writer_url = f"postgresql://tianyan_writer@127.0.0.1:{settings.pg_port}/{dbname}"
    alerts_topic, commands_topic = f"bench.alerts.{tag}", f"bench.commands.{tag}"
    work = PROJECT_ROOT / "var" / "bench" / f"rescue-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    journal = work / "received.jsonl"
    receiver_port, web_port = 16251, 16252
    secret = new_secret()
    kafka = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    kafka.create_topics([NewTopic(alerts_topic, 8, 1), NewTopic(commands_topic, 1, 1)])
    with psycopg.connect(superuser + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}" OWNER tianyan')
    with psycopg.connect(f"{superuser}/{dbname}", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "TIANYAN_DATABASE_URL": writer_url,
        "TIANYAN_ALERTS_TOPIC": alerts_topic,
        "TIANYAN_DEVICE_COMMANDS_TOPIC": commands_topic,
        "TIANYAN_DISPATCHER_ID": f"bench-dispatcher-{tag}",
        "TIANYAN_DISPATCHER_WEB_PORT": str(web_port),
        "TIANYAN_RESCUE_WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/96333",
        "TIANYAN_RESCUE_WEBHOOK_SECRET": secret,
    }

    def start(args: list[str], log: str, port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [TIANYAN, *args],
            env={**env, "TIANYAN_RECEIVER_LOGLEVEL": "WARNING"},
            stdout=(work / log).open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        wait_until(lambda: listening(port), 60, f"{args[0]} to listen on {port}")
        return proc

    def count(sql: str) -> int:
        with psycopg.connect(admin_url) as conn:
            row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    try:
        migrate(admin_url)
        fleet = generate(1, 2000, dt.date.today())
        upsert(admin_url, fleet)
        start(
            ["rescue-receiver", "--port", str(receiver_port), "--journal", str(journal)],
            "receiver.log",
            receiver_port,
        )
        dispatcher = start(["dispatcher", "--loglevel", "warn"], "dispatcher.log", web_port)
        time.sleep(3.0)  # the consumer group settles

        # (a) latency at a nominal rate
        n = int(rate_per_s * duration_s)
        _say(f"(a) {n} alerts at {rate_per_s:g}/s to the dispatcher …")
        interval = 1.0 / rate_per_s
        with RawPublisher(settings.kafka_bootstrap, alerts_topic, linger_ms=0) as pub:
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
        wait_until(
            lambda: count("SELECT count(*) FROM webhook_delivery WHERE status = 'delivered'") >= n,
            120,
            "every latency-run delivery",
        )
        with psycopg.connect(admin_url) as conn:
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
        dispatcher.terminate()
        dispatcher.wait(30)
        procs.remove(dispatcher)
        config = store.DispatchConfig(
            (env["TIANYAN_RESCUE_WEBHOOK_URL"],), settings.escalation_after_s, 1800
        )
        base_ms = int(time.time() * 1000)
        with psycopg.connect(writer_url) as conn:
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
        start(["dispatcher", "--loglevel", "warn"], "dispatcher2.log", web_port)
        wait_until(
            lambda: (
                count("SELECT count(*) FROM webhook_delivery WHERE status <> 'pending'")
                >= n + burst
            ),
            300,
            "every queued delivery",
        )
        wall_s = time.monotonic() - started
        with psycopg.connect(admin_url) as conn:
            first, last, delivered, dead = conn.execute(
                "SELECT min(first_attempt_at), max(delivered_at),"
                " count(*) FILTER (WHERE status = 'delivered'),"
                " count(*) FILTER (WHERE status = 'dead')"
                " FROM webhook_delivery WHERE created_at >= (SELECT min(created_at) FROM"
                " webhook_delivery WHERE event_type = 'incident.opened'"
                " AND payload->'data'->'fault'->>'type' = 'terminal_fault')"
            ).fetchone()
        seconds = (last - first).total_seconds()
        journal_ids = [json.loads(x)["webhook_id"] for x in journal.read_text().splitlines()]
        verified = subprocess.run(
            [TIANYAN, "audit", "verify"], env=env, capture_output=True, text=True, check=False
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
        return summary
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        with psycopg.connect(superuser + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        kafka.delete_topics([alerts_topic, commands_topic])
        kafka.close()
