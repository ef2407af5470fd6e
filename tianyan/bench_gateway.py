"""``tianyan bench gateway``: messages/s through broker → gateway → Kafka, on the real stack.

2,000 terminals (by default) connect to the local Mosquitto, each with its own credential,
and publish QoS 1 telemetry of the contract's size. Gateways (``tianyan gateway``
processes) bridge them into a raw topic of the bench's own, created with
``message.timestamp.type=LogAppendTime`` so each record's timestamp is when Kafka stored
it. Two phases:

(a) latency     terminals publish at a set rate; publish → Kafka store, p50 and p99 (the
                payload carries its publish time; same machine, same clock)
(b) throughput  terminals publish as fast as the broker acknowledges them (a window of
                unacknowledged messages per terminal); messages/s = records stored in Kafka
                over the span of their Kafka timestamps

Also the gateways' peak resident memory, and how many gateways a city of 40,000 terminals
needs at its peak (≈ 10,000 moving elevators at one message a second, 30,000 idle ones at
a heartbeat every 30 s).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import selectors
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from foundation.kafka_security import confluent_config
from foundation.settings import Settings
from streams.mqtt import TELEMETRY, new_client, terminal_topic
from tianyan.stack import LocalMosquitto

#: A city of 40,000 elevators at its peak: ≈ 10,000 moving (one message per second each)
#: and ≈ 30,000 idle (a heartbeat every 30 s), messages/s.
CITY_TERMINALS = 40_000
CITY_PEAK_MSGS_PER_S = 10_000 + 30_000 / 30
#: Unacknowledged QoS 1 messages per terminal in the throughput phase.
WINDOW_PER_TERMINAL = 8


@dataclass
class GatewayBenchConfig:
    terminals: int = 2_000
    gateways: int = 1
    loaders: int = 2
    throughput_s: float = 20.0
    latency_s: float = 15.0
    latency_rate_msgs_per_s: float = 1_000.0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _payload(code: str, seq: int, phase: int) -> bytes:
    """A message of about the contract's usual size (≈ 900 bytes)."""
    now_ms = time.time() * 1000
    samples = [
        {"t": int(now_ms) - 1000 + 100 * i, "pos_mm": 12_000 + i, "v_mm_s": 1500, "a_mm_s2": 12}
        for i in range(10)
    ]
    return json.dumps(
        {
            "elevator_id": code,
            "seq": seq,
            "bench_phase": phase,
            "sent_ms": now_ms,
            "samples": samples,
        }
    ).encode()


def _loader(
    settings: Settings,
    creds: list[tuple[str, str]],
    phases: list[tuple[float, float | None]],
    ready: Any,
    start: Any,
    results: Any,
) -> None:
    """One process: its share of the terminals, driven by one selector loop."""
    import paho.mqtt.client as mqtt

    sel = selectors.DefaultSelector()
    clients: list[mqtt.Client] = []
    outstanding: dict[int, int] = {}
    for code, password in creds:
        c, props = new_client(f"bench-{code}", code, password)
        c.max_inflight_messages_set(WINDOW_PER_TERMINAL)
        idx = len(clients)
        outstanding[idx] = 0

        def on_publish(_c: Any, _u: Any, _mid: int, _r: Any, _p: Any, idx: int = idx) -> None:
            outstanding[idx] -= 1

        c.on_publish = on_publish
        c.connect(settings.mqtt_host, settings.mqtt_port, keepalive=120, properties=props)
        sock = c.socket()
        assert sock is not None
        sel.register(sock, selectors.EVENT_READ, c)
        clients.append(c)

    def pump(timeout: float) -> None:
        for key, _ in sel.select(timeout):
            key.data.loop_read(100)
        for c in clients:
            if c.want_write():
                c.loop_write()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(c.is_connected() for c in clients):
        pump(0.05)
    ready.put(sum(c.is_connected() for c in clients))
    start.wait()
    sent = [0] * len(phases)
    seq = [0] * len(clients)
    for phase, (duration_s, rate) in enumerate(phases):
        began = time.monotonic()
        end = began + duration_s
        per_loader_rate = rate
        while (now := time.monotonic()) < end:
            if per_loader_rate is None:
                for i, c in enumerate(clients):
                    if outstanding[i] < WINDOW_PER_TERMINAL:
                        outstanding[i] += 1
                        seq[i] += 1
                        c.publish(
                            terminal_topic(creds[i][0], TELEMETRY),
                            _payload(creds[i][0], seq[i], phase),
                            qos=1,
                        )
                        sent[phase] += 1
            else:
                due = int((now - began) * per_loader_rate) - sent[phase]
                for _ in range(max(0, due)):
                    i = sent[phase] % len(clients)
                    outstanding[i] += 1
                    seq[i] += 1
                    clients[i].publish(
                        terminal_topic(creds[i][0], TELEMETRY),
                        _payload(creds[i][0], seq[i], phase),
                        qos=1,
                    )
                    sent[phase] += 1
            pump(0 if per_loader_rate is None else 0.002)
            if int(now) != int(time.monotonic()):
                for c in clients:
                    c.loop_misc()
        # Let the phase's messages drain before the next one.
        drain = time.monotonic() + 30
        while time.monotonic() < drain and any(v > 0 for v in outstanding.values()):
            pump(0.05)
    results.put(sent)
    for c in clients:
        c.disconnect()


def _consume(
    settings: Settings, topic: str, expected: int, timeout_s: float
) -> list[tuple[int, int, float]]:
    """(phase, Kafka timestamp ms, publish time ms) of every record."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-gateway-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **confluent_config(settings.kafka_security),
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[int, int, float]] = []
    deadline = time.monotonic() + timeout_s
    idle_since = time.monotonic()
    try:
        while len(out) < expected and time.monotonic() < deadline:
            batch = consumer.consume(10_000, 0.5)
            if not batch:
                if time.monotonic() - idle_since > 15:
                    break
                continue
            idle_since = time.monotonic()
            for m in batch:
                if m.error():
                    continue
                value = json.loads(m.value())
                out.append((value["bench_phase"], m.timestamp()[1], value["sent_ms"]))
    finally:
        consumer.close()
    return out


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run(settings: Settings, config: GatewayBenchConfig) -> dict[str, Any]:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    tag = uuid.uuid4().hex[:8]
    raw, quarantine = f"bench.gateway.raw.{tag}", f"bench.gateway.quarantine.{tag}"
    # Topics of its own for commands and answers too: the bench's gateways must never send
    # the real device-commands topic's commands.
    commands, events = f"bench.gateway.commands.{tag}", f"bench.gateway.events.{tag}"
    topics = [raw, quarantine, commands, events]
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics(
        [
            NewTopic(raw, 8, 1, topic_configs={"message.timestamp.type": "LogAppendTime"}),
            *(NewTopic(t, 1, 1) for t in topics[1:]),
        ]
    )
    broker = LocalMosquitto(settings)
    codes = [f"9{tag[:6]}{i:013d}"[:20] for i in range(config.terminals)]
    _say(f"issuing {config.terminals} terminal credentials")
    creds = list(broker.issue_many(codes).items())
    broker.reload()
    time.sleep(1)
    gateways: list[subprocess.Popen[bytes]] = []
    procs: list[mp.Process] = []
    try:
        for g in range(config.gateways):
            port = _free_port()
            s = replace(
                settings,
                raw_topic=raw,
                quarantine_topic=quarantine,
                device_commands_topic=commands,
                device_events_topic=events,
                gateway_id=f"bench-gateway-{tag}-{g}",
                mqtt_share_group=f"bench-{tag}",
                gateway_web_port=port,
            )
            env = {**os.environ, **s.to_env()}
            exe = os.path.join(os.path.dirname(sys.executable), "tianyan")
            gateways.append(
                subprocess.Popen(
                    [exe, "gateway", "--loglevel", "warn"], env=env, stdin=subprocess.DEVNULL
                )
            )
            _wait_subscribed(port)
        # Latency first, on an idle pipeline; then throughput.
        phases: list[tuple[float, float | None]] = [
            (config.latency_s, config.latency_rate_msgs_per_s / config.loaders),
            (config.throughput_s, None),
        ]
        ctx = mp.get_context("fork")
        ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
        for n in range(config.loaders):
            share = creds[n :: config.loaders]
            p = ctx.Process(target=_loader, args=(settings, share, phases, ready, start, results))
            p.start()
            procs.append(p)
        connected = sum(ready.get(timeout=120) for _ in procs)
        _say(
            f"{connected} terminals connected; (a) latency {config.latency_s:.0f} s, "
            f"(b) throughput {config.throughput_s:.0f} s"
        )
        start.set()
        sent = [results.get(timeout=config.throughput_s + config.latency_s + 120) for _ in procs]
        sent_by_phase = [sum(s[i] for s in sent) for i in range(len(phases))]
        _say(f"published {sent_by_phase}; reading the topic back")
        records = _consume(settings, raw, sum(sent_by_phase), timeout_s=180)
        peak_rss_kb = max(_peak_rss_kb(gw.pid) for gw in gateways)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for gw in gateways:
            gw.terminate()
            gw.wait(30)
        broker.revoke_many(codes)
        broker.reload()
        admin.delete_topics(topics)
        admin.close()
    paced = [r for r in records if r[0] == 0]
    through = [r for r in records if r[0] == 1]
    span_s = (max(r[1] for r in through) - min(r[1] for r in through)) / 1000 if through else 0
    rate = len(through) / span_s if span_s else 0.0
    lat = [r[1] - r[2] for r in paced]
    return {
        "terminals_connected": connected,
        "gateways": config.gateways,
        "published_throughput_phase": sent_by_phase[1],
        "stored_throughput_phase": len(through),
        "msgs_per_s": round(rate),
        "latency_rate_msgs_per_s": config.latency_rate_msgs_per_s,
        "stored_latency_phase": len(paced),
        "publish_to_kafka_p50_ms": round(_percentile(lat, 0.50), 1),
        "publish_to_kafka_p99_ms": round(_percentile(lat, 0.99), 1),
        "gateway_peak_rss_mb": round(peak_rss_kb / 1024, 1),
        "city_peak_msgs_per_s": CITY_PEAK_MSGS_PER_S,
        "gateways_for_40000_terminals": math.ceil(CITY_PEAK_MSGS_PER_S / (rate / config.gateways))
        if rate
        else None,
        "cpu_cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _peak_rss_kb(pid: int) -> int:
    """A running process's peak resident memory (``VmHWM``), kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _wait_subscribed(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if json.loads(r.read())["subscribed"]:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError("a bench gateway did not subscribe within 30 s")
