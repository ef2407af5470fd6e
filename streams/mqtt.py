"""The MQTT side of the terminals' contract: topic layout and connecting a client.

A terminal publishes to ``tianyan/v1/{registration_code}/telemetry`` (the telemetry
contract's JSON) and ``…/events`` (answers to commands), and subscribes to ``…/commands``.
Its username is its registration code; the broker's ACL enforces the layout.
"""

from __future__ import annotations

import select
import threading
import time
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from foundation.settings import Settings

TOPIC_PREFIX: Final = "tianyan/v1"
#: Seconds of silence after which a client sends PINGREQ (the broker allows 1.5 times it).
KEEPALIVE_S: Final = 30
TELEMETRY: Final = "telemetry"
EVENTS: Final = "events"
COMMANDS: Final = "commands"
#: Bytes a client takes from its socket at a time.
READ_CHUNK_BYTES: Final = 65_536


class _Received(mqtt.MQTTMessage):
    """A QoS 1 message received without properties. paho's own message makes an
    ``MQTTMessageInfo`` (a Condition and an RLock) that only a message being sent uses: 16 %
    of a gateway's CPU. A received message's ``info`` is one shared, empty one."""

    info = mqtt.MQTTMessageInfo(0)

    def __init__(self, *, mid: int, topic: bytes, payload: bytes, dup: bool, retain: bool):
        self.timestamp = time.monotonic()
        self.state = mqtt.MessageState.MQTT_MS_INVALID
        self.mid = mid
        self._topic = topic
        self.payload = payload
        self.qos = 1
        self.dup = dup
        self.retain = retain
        self.properties = None


class BrokerRefusedError(ConnectionError):
    """The broker answered and refused the client (its credential, its client id): retrying
    the same connection cannot succeed."""


class BufferedClient(mqtt.Client):
    """paho's client, reading its socket up to :data:`READ_CHUNK_BYTES` at a time.

    paho 2.2 reads a packet's fixed header a byte per ``recv()`` and handles one packet per
    ``select()``: about four system calls per message, much of a gateway's time at its
    rate. This client takes what the socket holds at once and serves paho's reads from
    memory. :meth:`loop_read` goes on while any is left (paho's own thread never finds bytes
    waiting that no ``select()`` would announce); a caller that limits it asks
    :attr:`pending` before it waits. It overrides ``_sock_recv``, ``_sock_close`` and
    ``_handle_publish``, private to paho 2.2.0 (pinned in setup.cfg).
    """

    _read_buffer = b""
    _read_at = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_at >= len(self._read_buffer):
            # BlockingIOError when the socket is empty; b"" when the broker closed it.
            self._read_buffer, self._read_at = super()._sock_recv(READ_CHUNK_BYTES), 0
        start = self._read_at
        self._read_at = min(start + bufsize, len(self._read_buffer))
        return self._read_buffer[start : self._read_at]

    def _sock_close(self) -> None:
        self._read_buffer, self._read_at = b"", 0
        super()._sock_close()

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        """A QoS 1 PUBLISH without properties (every terminal's telemetry) handled without
        paho's ``Properties`` object, whose construction alone took 45 % of a gateway's CPU
        (py-spy, ``tianyan bench gateway``): a :class:`_Received`. Anything else is paho's
        own ``_handle_publish``."""
        packet, header = self._in_packet["packet"], self._in_packet["command"]
        topic_end = 2 + int.from_bytes(packet[:2], "big")
        props_at = topic_end + 2  # after the packet id
        if (
            (header & 0x06) != 0x02  # QoS 1
            or self._protocol != mqtt.MQTTv5
            or len(packet) <= props_at
            or packet[props_at] != 0  # a property length other than 0
            or topic_end == 2
        ):
            return super()._handle_publish()
        message = _Received(
            mid=int.from_bytes(packet[topic_end:props_at], "big"),
            topic=bytes(packet[2:topic_end]),
            payload=bytes(packet[props_at + 1 :]),
            dup=bool(header & 0x08),
            retain=bool(header & 0x01),
        )
        # paho's _handle_on_message would first match the topic against callbacks per
        # filter, which this client refuses (message_callback_add): 8 % of a gateway's CPU.
        if self.on_message is not None:
            with self._in_callback_mutex:
                self.on_message(self, self._userdata, message)
        return (
            mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            if self._manual_ack
            else self._send_puback(message.mid)
        )

    def message_callback_add(self, sub: str, callback: Any) -> None:
        raise NotImplementedError("a BufferedClient calls on_message for every message")

    def loop_read(self, max_packets: int = 0) -> mqtt.MQTTErrorCode:
        """Handle packets until none is left in memory, or ``max_packets`` (0: no limit)."""
        rc = super().loop_read()
        handled = 1
        while (
            rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            and self.pending
            and (not max_packets or handled < max_packets)
        ):
            rc = super().loop_read()
            handled += 1
        return rc

    @property
    def pending(self) -> bool:
        """Whether bytes read from the socket wait in memory (no ``select()`` will say so)."""
        return self._read_at < len(self._read_buffer)


def terminal_topic(registration_code: str, kind: str) -> str:
    """``tianyan/v1/{registration_code}/{kind}``; kind is telemetry, events or commands."""
    return f"{TOPIC_PREFIX}/{registration_code}/{kind}"


def parse_topic(topic: str) -> tuple[str, str] | None:
    """``(registration_code, kind)`` of a terminal topic, or None if it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != TOPIC_PREFIX or not parts[2]:
        return None
    return parts[2], parts[3]


def new_client(
    client_id: str,
    username: str,
    password: str,
    *,
    manual_ack: bool = False,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    receive_maximum: int | None = None,
) -> tuple[BufferedClient, Properties]:
    """An MQTT v5 client and its CONNECT properties (not connected yet)."""
    client = BufferedClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    client.username_pw_set(username, password)
    props = Properties(PacketTypes.CONNECT)
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    client._tianyan_clean_start = clean_start  # type: ignore[attr-defined]
    return client, props


def connect(
    client: BufferedClient,
    props: Properties,
    settings: Settings,
    *,
    timeout_s: float = 10.0,
    tls: bool | None = None,
    network_thread: bool = True,
) -> None:
    """Connect ``client`` to the broker the settings name; returns once the broker accepted
    it. Raises :class:`BrokerRefusedError` when it refused it, ConnectionError (OSError)
    when it did not answer or could not be reached.

    With ``network_thread`` paho's own thread serves the connection from then on; without,
    the caller drives it (``loop_read``, ``loop_write``, ``loop_misc``), as the gateway does.
    """
    use_tls = settings.mqtt_tls if tls is None else tls
    if use_tls:
        client.tls_set(ca_certs=str(settings.mqtt_ca_file))
    port = settings.mqtt_tls_port if use_tls else settings.mqtt_port
    connected = threading.Event()
    result: dict[str, Any] = {}
    previous: Any = client.on_connect

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, p: Any) -> None:
        result["reason"] = reason
        connected.set()
        if previous is not None:
            previous(c, userdata, flags, reason, p)

    client.on_connect = on_connect
    try:
        client.connect(
            settings.mqtt_host,
            port,
            keepalive=KEEPALIVE_S,
            clean_start=getattr(client, "_tianyan_clean_start", True),
            properties=props,
        )
        if network_thread:
            client.loop_start()
            connected.wait(timeout_s)
        else:
            deadline = time.monotonic() + timeout_s
            while not connected.is_set() and time.monotonic() < deadline:
                serve_once(client, 0.05)
    finally:
        client.on_connect = previous
    if not connected.is_set():
        if network_thread:
            client.loop_stop()
        raise ConnectionError(f"no CONNACK from {settings.mqtt_host}:{port} in {timeout_s} s")
    reason = result["reason"]
    if reason.is_failure:
        if network_thread:
            client.loop_stop()
        client.disconnect()
        raise BrokerRefusedError(f"the broker refused {client._client_id!r}: {reason}")


def serve_once(client: BufferedClient, timeout_s: float, max_packets: int = 0) -> bool:
    """One turn of a client driven without paho's thread: handle what the broker sent
    (waiting up to ``timeout_s`` for it; at most ``max_packets``, 0: no limit), write what
    is queued, keep the connection alive. False when the client has no connection."""
    sock = client.socket()
    if sock is None:
        return False
    writing = [sock] if client.want_write() else []
    pending = client.pending
    readable, _, _ = select.select([sock], writing, [], 0 if pending else timeout_s)
    ok = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    if (readable or pending) and client.loop_read(max_packets) != ok:
        return False
    if client.want_write() and client.loop_write() != ok:
        return False
    return client.loop_misc() == ok


def connect_gateway_client(
    settings: Settings, password: str, client_id: str, *, timeout_s: float = 10.0
) -> mqtt.Client:
    """A connected client with the gateway's credential (health checks, tests)."""
    client, props = new_client(client_id, settings.mqtt_gateway_username, password)
    connect(client, props, settings, timeout_s=timeout_s)
    return client
