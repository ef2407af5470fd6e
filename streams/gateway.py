"""The gateway: every terminal's MQTT telemetry bridged to the raw Kafka topic.

Gateways share one subscription (``$share/{group}/tianyan/v1/+/telemetry``), so several
split the load. Each message is checked: the registration code in its topic (the terminal's
authenticated identity, enforced by the broker's ACL) must equal the payload's
``elevator_id``; a mismatch goes to the quarantine topic with its reason. The message is
acknowledged to the broker (QoS 1, manual acknowledgement) only once Kafka has acknowledged
the record, so a gateway that dies loses nothing: the broker sends the unacknowledged
messages again when it reconnects under the same client id (a persistent session), and the
worker drops repeats by (elevator, seq). At most ``gateway_inflight_messages`` messages are
unacknowledged at once (MQTT v5 Receive Maximum): when Kafka is slow the broker holds the
rest.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import msgspec
import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, KafkaError, Message, Producer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from foundation.kafka_security import confluent_config
from foundation.settings import Settings

from .ingest import RawRecord
from .mqtt import (
    COMMANDS,
    EVENTS,
    TELEMETRY,
    TOPIC_PREFIX,
    BrokerRefusedError,
    connect,
    new_client,
    parse_topic,
    serve_once,
    terminal_topic,
)
from .quarantine import quarantine_record

log = logging.getLogger(__name__)

#: How long the broker keeps a stopped gateway's session (its unacknowledged messages and
#: those queued for it), seconds.
SESSION_EXPIRY_S: Final = 24 * 3600
#: The health endpoint reports unhealthy when the broker connection has been down this long.
UNHEALTHY_AFTER_S: Final = 30.0
#: Seconds between attempts to reach a lost broker: the first, and the longest.
RECONNECT_DELAY_S: Final = (1.0, 5.0)
#: Messages handled from the broker between two turns of Kafka's callbacks.
READ_BATCH_MESSAGES: Final = 500
#: Seconds between reads of the device-commands topic.
COMMANDS_EVERY_S: Final = 0.1

REGISTRY = CollectorRegistry()
FORWARDED = Counter(
    "tianyan_gateway_forwarded_total",
    "MQTT telemetry messages acknowledged by Kafka on the raw topic",
    registry=REGISTRY,
)
QUARANTINED = Counter(
    "tianyan_gateway_quarantined_total",
    "MQTT messages sent to the quarantine topic (topic and payload name different elevators)",
    registry=REGISTRY,
)
INFLIGHT = Gauge(
    "tianyan_gateway_inflight_messages",
    "Messages received from the broker and not yet acknowledged by Kafka",
    registry=REGISTRY,
)
CONNECTED = Gauge(
    "tianyan_gateway_broker_connected",
    "1 while connected and subscribed to the MQTT broker",
    registry=REGISTRY,
)
COMMANDS_SENT = Counter(
    "tianyan_gateway_commands_sent_total",
    "Commands from the device-commands topic published to terminals (retained, QoS 1)",
    registry=REGISTRY,
)
COMMANDS_EXPIRED = Counter(
    "tianyan_gateway_commands_expired_total",
    "Commands older than TIANYAN_COMMAND_EXPIRY_S when read: not sent",
    registry=REGISTRY,
)
COMMAND_ANSWERS = Counter(
    "tianyan_gateway_command_answers_total",
    "Terminals' answers to commands forwarded to the device-events topic",
    registry=REGISTRY,
)
KAFKA_ACK_SECONDS = Histogram(
    "tianyan_gateway_kafka_ack_seconds",
    "From a message's arrival at the gateway to Kafka's acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)


class _Identity(msgspec.Struct):
    """The one field the gateway reads; the others are skipped unparsed."""

    elevator_id: str | None = None


_ID_DECODER = msgspec.json.Decoder(_Identity)


def mismatch_reason(registration_code: str, payload: bytes) -> str | None:
    """Why a message published under ``registration_code`` must not be forwarded, or None.

    Only the identity is judged here; a payload that is not JSON or breaks the contract
    otherwise is forwarded and quarantined by the worker with the contract's reasons.

    Examples
    --------
    >>> mismatch_reason("A1", b'{"elevator_id": "B2"}')
    "elevator_id 'B2' differs from the topic's registration code 'A1'"
    >>> mismatch_reason("A1", b'{"elevator_id": "A1"}') is None
    True
    """
    try:
        elevator_id = _ID_DECODER.decode(payload).elevator_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if elevator_id is not None and elevator_id != registration_code:
        return (
            f"elevator_id {elevator_id!r} differs from the topic's "
            f"registration code {registration_code!r}"
        )
    return None


class Gateway:
    """One gateway process: an MQTT client in a shared subscription and a Kafka producer."""

    def __init__(self, settings: Settings, password: str, *, client_id: str | None = None) -> None:
        self.settings = settings
        self.client_id = client_id or settings.gateway_id
        self.stopping = threading.Event()
        self.disconnected_since: float | None = time.monotonic()
        self._inflight = 0
        self._reconnect_delay_s = RECONNECT_DELAY_S[0]
        #: Commands published to terminals and not yet acknowledged by the broker, with
        #: the Kafka record whose offset is stored once they are.
        self._commands_unacknowledged: list[tuple[mqtt.MQTTMessageInfo, Message]] = []
        self.producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "batch.size": 1_000_000,
                "message.timeout.ms": settings.kafka_delivery_timeout_ms,
                "client.id": self.client_id,
                # The partition an elevator's messages land on whichever client sent them.
                "partitioner": "murmur2_random",
                **confluent_config(settings.kafka_security),
            }
        )
        # Commands down: the gateways share one consumer group, so each is sent once.
        self.commands = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"{settings.mqtt_share_group}-commands",
                # Static membership: a gateway restarted under its id takes its partitions
                # back at once, instead of after the dead member's session times out.
                "group.instance.id": self.client_id,
                "session.timeout.ms": 10_000,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                # A new group reads what is there; commands past their expiry are skipped.
                "auto.offset.reset": "earliest",
                **confluent_config(settings.kafka_security),
            }
        )
        self.commands.subscribe([settings.device_commands_topic])
        #: The last command sent to each terminal, by registration code: its answer clears
        #: the retained copy.
        self.last_command: dict[str, str] = {}
        self.client, self._props = new_client(
            self.client_id,
            settings.mqtt_gateway_username,
            password,
            manual_ack=True,
            clean_start=False,
            session_expiry_s=SESSION_EXPIRY_S,
            receive_maximum=settings.gateway_inflight_messages,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    @property
    def subscription(self) -> str:
        return f"$share/{self.settings.mqtt_share_group}/{TOPIC_PREFIX}/+/{TELEMETRY}"

    @property
    def events_subscription(self) -> str:
        return f"$share/{self.settings.mqtt_share_group}/{TOPIC_PREFIX}/+/{EVENTS}"

    @property
    def subscriptions(self) -> list[str]:
        """Every filter the gateway subscribes to, QoS 1."""
        return [self.subscription, self.events_subscription]

    # -- MQTT callbacks (the client's network thread) ------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("the broker refused the gateway: %s", reason)
            return
        client.subscribe([(topic_filter, 1) for topic_filter in self.subscriptions])

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if any(c.is_failure for c in codes):
            log.error("the broker refused the subscription %s: %s", self.subscription, codes)
            return
        self.disconnected_since = None
        self._reconnect_delay_s = RECONNECT_DELAY_S[0]
        CONNECTED.set(1)
        log.info("gateway %s subscribed to %s", self.client_id, self.subscription)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        CONNECTED.set(0)
        if self.disconnected_since is None:
            self.disconnected_since = time.monotonic()
        if not self.stopping.is_set():
            log.warning("gateway %s lost the broker (%s); reconnecting", self.client_id, reason)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = parse_topic(msg.topic)
        if parsed is None or parsed[1] not in (TELEMETRY, EVENTS):
            client.ack(msg.mid, msg.qos)  # not ours: the subscriptions name only these
            return
        code = parsed[0]
        key = code.encode()
        if parsed[1] == EVENTS:
            self._on_event(client, msg, code)
            return
        payload = bytes(msg.payload)  # the same object when paho gave bytes
        reason = mismatch_reason(code, payload)
        received = time.monotonic()
        self._inflight += 1
        INFLIGHT.inc()

        def delivered(err: KafkaError | None, m: Message) -> None:
            if err is not None:
                # Kept, never dropped: sent again until Kafka takes it.
                log.warning("Kafka refused a record (%s); sending it again", err)
                self._produce(m.topic() or "", m.key(), m.value(), m.headers(), delivered)
                return
            KAFKA_ACK_SECONDS.observe(time.monotonic() - received)
            (QUARANTINED if reason else FORWARDED).inc()
            self._inflight -= 1
            INFLIGHT.dec()
            if msg.qos:
                client.ack(msg.mid, msg.qos)

        if reason is None:
            self._produce(self.settings.raw_topic, key, payload, None, delivered)
        else:
            q = quarantine_record(RawRecord(key, payload, -1, -1), f"gateway: {reason}")
            self._produce(self.settings.quarantine_topic, q.key, q.value, q.headers, delivered)

    def _on_event(self, client: mqtt.Client, msg: mqtt.MQTTMessage, code: str) -> None:
        """A terminal's answer to a command: to the device-events topic, keyed by elevator,
        with the elevator taken from the topic (the authenticated terminal), acknowledged
        after Kafka; an answer to the last command sent clears its retained copy."""
        try:
            answer = json.loads(msg.payload)
            if not isinstance(answer, dict):
                raise ValueError("not an object")
        except ValueError as e:
            reason = f"gateway: a command answer that is not a JSON object: {e}"
            q = quarantine_record(RawRecord(code.encode(), bytes(msg.payload), -1, -1), reason)
            self._produce(self.settings.quarantine_topic, q.key, q.value, q.headers,
                          self._acker(client, msg))  # fmt: skip
            return
        answer["elevator_id"] = code
        command_id = answer.get("command_id")
        if command_id is not None and self.last_command.get(code) == command_id:
            del self.last_command[code]
            client.publish(terminal_topic(code, COMMANDS), b"", qos=1, retain=True)
        COMMAND_ANSWERS.inc()
        self._produce(
            self.settings.device_events_topic,
            code.encode(),
            json.dumps(answer).encode(),
            None,
            self._acker(client, msg),
        )

    def _acker(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> Any:
        def delivered(err: KafkaError | None, m: Message) -> None:
            if err is not None:
                self._produce(m.topic() or "", m.key(), m.value(), m.headers(), delivered)
                return
            if msg.qos:
                client.ack(msg.mid, msg.qos)

        return delivered

    def _send_commands(self) -> None:
        """Commands from Kafka to each terminal's ``…/commands``: QoS 1, retained (a
        terminal offline now gets it when it connects), expiring after
        ``command_expiry_s``; the offset is stored once the broker has the command."""
        for m in self.commands.consume(100, 0):
            if m.error():
                continue
            key = (m.key() or b"").decode()
            try:
                command = json.loads(m.value() or b"")
                code = str(command.get("elevator_id") or key)
            except (ValueError, AttributeError):
                log.error("a device command that is not a JSON object; skipped: %r", m.value())
                self.commands.store_offsets(m)
                continue
            age_s = max(0.0, time.time() - m.timestamp()[1] / 1000)
            remaining_s = int(self.settings.command_expiry_s - age_s)
            if remaining_s <= 0:
                log.warning("command %s expired before it could be sent", command.get("command_id"))
                COMMANDS_EXPIRED.inc()
                self.commands.store_offsets(m)
                continue
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = remaining_s
            info = self.client.publish(
                terminal_topic(code, COMMANDS), m.value(), qos=1, retain=True, properties=props
            )
            if "command_id" in command:
                self.last_command[code] = command["command_id"]
            # Not connected now: the client keeps it and sends it on reconnection.
            self._commands_unacknowledged.append((info, m))
        # A command's offset is stored once the broker has it, in the order read.
        while self._commands_unacknowledged and _settled(self._commands_unacknowledged[0][0]):
            _, m = self._commands_unacknowledged.pop(0)
            self.commands.store_offsets(m)
            COMMANDS_SENT.inc()

    def _produce(self, topic: str, key: Any, value: Any, headers: Any, cb: Any) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers, on_delivery=cb)
                return
            except BufferError:
                # Kafka is slow: stop reading from the broker until it catches up, serving
                # its delivery reports meanwhile (a full queue empties only through them).
                self.producer.poll(0.01)

    # -- the process --------------------------------------------------------------------------
    def subscribed(self) -> bool:
        return self.disconnected_since is None

    def healthy(self) -> bool:
        since = self.disconnected_since
        return since is None or time.monotonic() - since < UNHEALTHY_AFTER_S

    def run(self, *, web_port: int | None = None) -> None:
        """Serve until :attr:`stopping` is set.

        One thread drives the broker connection and Kafka's delivery callbacks in turn, so
        a message's acknowledgement is written by the thread that read it, with no lock
        between them.
        """
        server = self._serve_web(web_port) if web_port else None
        try:
            connect(self.client, self._props, self.settings, network_thread=False)
        except BrokerRefusedError:
            if server is not None:
                server.shutdown()
            raise
        except OSError as e:
            # A broker not there yet (restarting, or started after the gateway) is reached
            # as a lost one is; /health says not subscribed until it is.
            log.warning("gateway %s cannot reach the broker: %s; retrying", self.client_id, e)
        commands_due = 0.0
        try:
            while not self.stopping.is_set():
                # Waiting on the broker only briefly while Kafka owes acknowledgements.
                wait_s = 0.005 if self._inflight else 0.05
                if not serve_once(self.client, wait_s, READ_BATCH_MESSAGES):
                    self._reconnect()
                self.producer.poll(0)
                if self.client.want_write():
                    serve_once(self.client, 0)
                if (now := time.monotonic()) >= commands_due:
                    self._send_commands()
                    commands_due = now + COMMANDS_EVERY_S
        finally:
            self.commands.close()
            # What Kafka has is acknowledged to the broker before leaving it.
            self.producer.flush(30)
            self.client.disconnect()
            serve_once(self.client, 0)
            if server is not None:
                server.shutdown()

    def _reconnect(self) -> None:
        """Reach a lost broker again, waiting longer after each failure (up to 5 s) while
        Kafka's callbacks are still served; on_connect subscribes again."""
        if self.client.socket() is not None:
            return
        deadline = time.monotonic() + self._reconnect_delay_s
        while (left := deadline - time.monotonic()) > 0 and not self.stopping.is_set():
            self.producer.poll(min(left, 0.1))
        self._reconnect_delay_s = min(2 * self._reconnect_delay_s, RECONNECT_DELAY_S[1])
        try:
            self.client.reconnect()
        except OSError as e:
            log.warning("gateway %s cannot reach the broker: %s", self.client_id, e)

    def _serve_web(self, port: int) -> ThreadingHTTPServer:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(REGISTRY), CONTENT_TYPE_LATEST, 200
                elif self.path == "/health":
                    ok = gateway.healthy()
                    body = json.dumps(
                        {
                            "ok": ok,
                            "subscribed": gateway.subscribed(),
                            "inflight_messages": gateway._inflight,
                        }
                    ).encode()
                    ctype, code = "application/json", 200 if ok else 503
                else:
                    body, ctype, code = b"not found: try /health or /metrics\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True, name="gateway-web").start()
        return server


def _settled(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether a command is the broker's now, or the client's to send when it reconnects
    (published while the broker was away: paho keeps it in the session)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError) as e:
        log.warning("command %s queued until the broker is back: %s", info.mid, e)
        return True


def retire(settings: Settings, password: str, client_id: str | None = None) -> None:
    """End a gateway's session at the broker (``client_id``, the settings' gateway id by
    default): its shared subscriptions go, and with them the messages queued for it and not
    yet forwarded. For a gateway taken out of service for good, and for the benches' and
    tests' gateways: a session left behind takes a copy of every later message for
    :data:`SESSION_EXPIRY_S`, which the broker keeps and saves."""
    client, props = new_client(
        client_id or settings.gateway_id, settings.mqtt_gateway_username, password
    )  # a clean start discards the old session; this one ends when it disconnects
    connect(client, props, settings, network_thread=False)
    client.disconnect()
    serve_once(client, 0)


__all__ = ["COMMANDS", "Gateway", "mismatch_reason", "retire"]
