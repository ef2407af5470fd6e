"""``tianyan bench gateway``: messages/s through broker → gateway → Kafka, on the real stack.

2,000 terminals (by default) connect to the local Mosquitto, each with its own credential,
and publish QoS 1 telemetry of the contract's size. Gateways (``tianyan gateway``
processes) bridge them into a raw topic of the bench's own, created with
``message.timestamp.type=LogAppendTime`` so each record's timestamp is when Kafka stored
it. Two phases:

(a) latency     terminals publish at a set rate; publish → Kafka store, p50 and p99 (the
                payload carries its publish time; same machine, same clock)
(b) throughput  terminals publish as fast as the broker acknowledges them (a window of
                unacknowledged messages per terminal), or at a set rate (``--rate``, e.g.
                the city's peak); messages/s = records stored in Kafka over the span of
                their Kafka timestamps, and how long the gateways took after the last
                publish to forward what the broker held for them

The terminals are simulated by processes speaking MQTT from pre-built packets, so that they
take as little of the shared cores as they can (real terminals bring their own CPUs). The
CPU each part spent per message of phase (b) is printed: the gateways, the broker, Kafka
and the simulated terminals.

Also the gateways' peak resident memory, and how many gateways a city of 40,000 terminals
needs at its peak (≈ 10,000 moving elevators at one message a second, 30,000 idle ones at
a heartbeat every 30 s).
"""

from __future__ import annotations

import contextlib
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
from typing import Any

from foundation.kafka_security import confluent_config
from foundation.settings import Settings
from streams.mqtt import TELEMETRY, terminal_topic
from tianyan.procstat import cpu_s, peak_rss_kb
from tianyan.stack import LocalKafka, LocalMosquitto

#: A city of 40,000 elevators at its peak: ≈ 10,000 moving (one message per second each)
#: and ≈ 30,000 idle (a heartbeat every 30 s), messages/s.
CITY_TERMINALS = 40_000
CITY_PEAK_MSGS_PER_S = 10_000 + 30_000 / 30
#: A simulated terminal's keep-alive, s. (Mosquitto 2.0.11 answered a v5 CONNECT with
#: keep-alive 0 only after 3 to 7 s here.)
KEEPALIVE_S = 120
#: Unacknowledged QoS 1 messages per terminal in the throughput phase.
WINDOW_PER_TERMINAL = 8


@dataclass
class GatewayBenchConfig:
    terminals: int = 2_000
    gateways: int = 1
    loaders: int = 2
    throughput_s: float = 20.0
    #: Messages/s offered in phase (b); None: as fast as the broker acknowledges them.
    throughput_rate_msgs_per_s: float | None = None
    latency_s: float = 15.0
    latency_rate_msgs_per_s: float = 1_000.0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _payload_template(code: str) -> bytes:
    """A message of about the contract's usual size (≈ 900 bytes), ``%`` slots for its
    seq, bench phase and publish time (ms)."""
    now_ms = int(time.time() * 1000)
    samples = [
        {"t": now_ms - 1000 + 100 * i, "pos_mm": 12_000 + i, "v_mm_s": 1500, "a_mm_s2": 12}
        for i in range(10)
    ]
    body = json.dumps(
        {"elevator_id": code, "seq": -1, "bench_phase": -2, "sent_ms": -3, "samples": samples}
    ).encode()
    return (
        body.replace(b'"seq": -1', b'"seq": %d')
        .replace(b'"bench_phase": -2', b'"bench_phase": %d')
        .replace(b'"sent_ms": -3', b'"sent_ms": %.3f')
    )


def _varint(n: int) -> bytes:
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def _connect_packet(client_id: str, username: str, password: str) -> bytes:
    """An MQTT v5 CONNECT: clean start, username and password, keep-alive 120 s."""
    body = (
        _utf8("MQTT") + bytes([5, 0xC2]) + KEEPALIVE_S.to_bytes(2, "big") + b"\x00"
        + _utf8(client_id) + _utf8(username) + _utf8(password)
    )  # fmt: skip
    return b"\x10" + _varint(len(body)) + body


def _publish_packet(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """An MQTT v5 PUBLISH at QoS 1, no properties."""
    body = topic + packet_id.to_bytes(2, "big") + b"\x00" + payload
    return b"\x32" + _varint(len(body)) + body


class _Terminal:
    """One simulated terminal's connection: bytes out, packets in."""

    __slots__ = (
        "code",
        "connected",
        "inbuf",
        "out",
        "outstanding",
        "seq",
        "sock",
        "template",
        "topic",
    )  # fmt: skip

    def __init__(self, code: str, sock: socket.socket) -> None:
        self.code = code
        self.topic = _utf8(terminal_topic(code, TELEMETRY))
        self.template = _payload_template(code)
        self.sock = sock
        self.out = bytearray()
        self.inbuf = bytearray()
        self.seq = 0
        self.outstanding = 0
        self.connected = False

    def queue(self, phase: int) -> None:
        self.seq += 1
        self.outstanding += 1
        payload = self.template % (self.seq, phase, time.time() * 1000)
        self.out += _publish_packet(self.topic, self.seq % 65535 + 1, payload)

    def flush(self) -> None:
        if self.out:
            sent = self.sock.send(self.out)
            del self.out[:sent]

    def read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"the broker closed terminal {self.code}'s connection")
        buf = self.inbuf
        buf += data
        pos = 0
        while len(buf) - pos >= 2:
            kind = buf[pos] >> 4
            length, shift, i = 0, 0, pos + 1
            while i < len(buf):
                length |= (buf[i] & 0x7F) << shift
                shift += 7
                i += 1
                if not buf[i - 1] & 0x80:
                    break
            else:
                break
            if i + length > len(buf):
                break
            if kind == 4:  # PUBACK: reason code 0 when left out
                if length >= 3 and buf[i + 2] >= 0x80:
                    raise ConnectionError(
                        f"the broker refused a message of {self.code}: {buf[i + 2]}"
                    )
                self.outstanding -= 1
            elif kind == 2:  # CONNACK: ack flags, reason code
                if buf[i + 1] != 0:
                    raise ConnectionError(f"the broker refused terminal {self.code}: {buf[i + 1]}")
                self.connected = True
            elif kind == 14:  # DISCONNECT
                raise ConnectionError(f"the broker disconnected terminal {self.code}")
            pos = i + length
        del buf[:pos]


def _loader(
    settings: Settings,
    creds: list[tuple[str, str]],
    phases: list[tuple[float, float | None]],
    ready: Any,
    start: Any,
    marks: Any,
    results: Any,
) -> None:
    """One process: its share of the terminals, driven by one selector loop.

    MQTT is spoken here from pre-built packets, several per write, so that the load costs
    the shared cores as little as it can: real terminals bring their own CPUs.
    """
    sel = selectors.DefaultSelector()
    terminals: list[_Terminal] = []
    for code, password in creds:
        sock = socket.create_connection((settings.mqtt_host, settings.mqtt_port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(_connect_packet(f"bench-{code}", code, password))
        sock.setblocking(False)
        terminal = _Terminal(code, sock)
        sel.register(sock, selectors.EVENT_READ, terminal)
        terminals.append(terminal)

    writing: set[_Terminal] = set()

    def pump(timeout: float) -> None:
        """Read the broker's answers (waiting up to ``timeout``), write what is queued."""
        for key, _ in sel.select(timeout):
            key.data.read()
        for t in writing:
            t.flush()
        writing.difference_update([t for t in writing if not t.out])

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(t.connected for t in terminals):
        pump(0.05)
    ready.put(sum(t.connected for t in terminals))
    start.wait()
    sent = [0] * len(phases)
    cpu_s = [0.0] * len(phases)
    for phase, (duration_s, rate) in enumerate(phases):
        marks.put(phase)
        cpu_before = sum(os.times()[:2])
        began = time.monotonic()
        end = began + duration_s
        while (now := time.monotonic()) < end:
            if rate is None:
                for t in terminals:
                    while t.outstanding < WINDOW_PER_TERMINAL:
                        t.queue(phase)
                        writing.add(t)
                        sent[phase] += 1
            else:
                for _ in range(int((now - began) * rate) - sent[phase]):
                    t = terminals[sent[phase] % len(terminals)]
                    t.queue(phase)
                    writing.add(t)
                    sent[phase] += 1
            # Messages go out in the millisecond they are due, a few per write.
            pump(0.001)
        # Let the phase's messages drain before the next one.
        drain = time.monotonic() + 30
        while time.monotonic() < drain and any(t.outstanding > 0 for t in terminals):
            pump(0.05)
        cpu_s[phase] = sum(os.times()[:2]) - cpu_before
    results.put((sent, cpu_s))
    for t in terminals:
        with contextlib.suppress(OSError):
            t.sock.setblocking(True)
            t.sock.sendall(b"\xe0\x00")  # DISCONNECT, normal
            t.sock.close()


def _consume(
    settings: Settings, topic: str, codes: list[str], expected: int, timeout_s: float
) -> list[tuple[int, int, float]]:
    """(phase, Kafka timestamp ms, publish time ms) of every record of the bench's own
    terminals (``codes``): its gateways share the broker's whole telemetry, so whatever
    other terminals publish meanwhile (a test beside it, a demo) reaches its topic too."""
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
    ours = {code.encode() for code in codes}
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
                if m.error() or m.key() not in ours:
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
    ports: list[int] = []
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
            _wait_subscribed(port, gateways[-1])
            ports.append(port)
        # Latency first, on an idle pipeline; then throughput.
        phases: list[tuple[float, float | None]] = [
            (config.latency_s, config.latency_rate_msgs_per_s / config.loaders),
            (
                config.throughput_s,
                config.throughput_rate_msgs_per_s / config.loaders
                if config.throughput_rate_msgs_per_s
                else None,
            ),
        ]
        ctx = mp.get_context("fork")
        ready, start, marks, results = ctx.Queue(), ctx.Event(), ctx.Queue(), ctx.Queue()
        for n in range(config.loaders):
            share = creds[n :: config.loaders]
            p = ctx.Process(
                target=_loader, args=(settings, share, phases, ready, start, marks, results)
            )
            p.start()
            procs.append(p)
        connected = sum(ready.get(timeout=120) for _ in procs)
        _say(
            f"{connected} terminals connected; (a) latency {config.latency_s:.0f} s, "
            f"(b) throughput {config.throughput_s:.0f} s"
        )
        # CPU of the parts that carry the messages, over phase (b): from the first loader's
        # start of it to the last loader's end (its messages all acknowledged by then).
        parts = {
            "gateway": [gw.pid for gw in gateways],
            "mqtt_broker": [pid for pid in [broker.pid()] if pid],
            "kafka": [pid for pid in [LocalKafka(settings).pid()] if pid],
        }
        start.set()
        budget_s = config.throughput_s + config.latency_s + 120
        while marks.get(timeout=budget_s) != len(phases) - 1:
            pass
        cpu_before = {part: cpu_s(pids) for part, pids in parts.items()}
        outcomes = [results.get(timeout=budget_s) for _ in procs]
        sent_by_phase = [sum(s[i] for s, _ in outcomes) for i in range(len(phases))]
        # The terminals are done when the broker has acknowledged them; the gateways when
        # Kafka has every message (or they stop making progress).
        published_at = time.monotonic()
        _wait_forwarded(ports, sum(sent_by_phase))
        backlog_s = time.monotonic() - published_at
        cpu_used = {part: cpu_s(pids) - cpu_before[part] for part, pids in parts.items()}
        cpu_used["load_generator"] = sum(cpu[-1] for _, cpu in outcomes)
        _say(f"published {sent_by_phase}; reading the topic back")
        records = _consume(settings, raw, codes, sum(sent_by_phase), timeout_s=180)
        gateway_peak_kb = max(peak_rss_kb(gw.pid) for gw in gateways)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for gw in gateways:
            gw.terminate()
            gw.wait(30)
        # A bench gateway's session left behind would take a copy of every later message.
        for g in range(len(gateways)):
            broker.retire_gateway(f"bench-gateway-{tag}-{g}")
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
        "throughput_rate_offered_msgs_per_s": config.throughput_rate_msgs_per_s,
        "msgs_per_s": round(rate),
        # From the terminals' last acknowledged message to Kafka holding it (a backlog in the
        # broker when the gateways fall behind what is offered).
        "gateway_backlog_after_publishing_s": round(backlog_s, 1),
        "latency_rate_msgs_per_s": config.latency_rate_msgs_per_s,
        "stored_latency_phase": len(paced),
        "publish_to_kafka_p50_ms": round(_percentile(lat, 0.50), 1),
        "publish_to_kafka_p99_ms": round(_percentile(lat, 0.99), 1),
        "gateway_peak_rss_mb": round(gateway_peak_kb / 1024, 1),
        # CPU each part spent per message of phase (b), µs (of one core).
        "cpu_us_per_msg": {
            part: round(1e6 * used_s / max(1, sent_by_phase[1]), 1)
            for part, used_s in cpu_used.items()
        },
        "city_peak_msgs_per_s": CITY_PEAK_MSGS_PER_S,
        "gateways_for_40000_terminals": math.ceil(CITY_PEAK_MSGS_PER_S / (rate / config.gateways))
        if rate
        else None,
        "cpu_cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _forwarded(port: int) -> float:
    """A gateway's ``tianyan_gateway_forwarded_total``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("tianyan_gateway_forwarded_total "):
                return float(line.split()[1])
    return 0.0


def _wait_forwarded(ports: list[int], expected: int) -> None:
    """Until the gateways have forwarded ``expected`` messages, or made no progress in 15 s."""
    last, progress_at = -1.0, time.monotonic()
    while (done := sum(_forwarded(p) for p in ports)) < expected:
        if done > last:
            last, progress_at = done, time.monotonic()
        elif time.monotonic() - progress_at > 15:
            return
        time.sleep(0.1)


def _wait_subscribed(port: int, gateway: subprocess.Popen[bytes]) -> None:
    """Until the gateway's /health says it is subscribed; an error when it exits first."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (code := gateway.poll()) is not None:
            raise RuntimeError(f"a bench gateway exited with {code} before subscribing")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if json.loads(r.read())["subscribed"]:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError("a bench gateway did not subscribe within 30 s")
