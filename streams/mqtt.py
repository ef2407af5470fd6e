"""The MQTT side of the terminals' contract: topic layout and connecting a client.

A terminal publishes to ``tianyan/v1/{registration_code}/telemetry`` (the telemetry
contract's JSON) and ``…/events`` (answers to commands), and subscribes to ``…/commands``.
Its username is its registration code; the broker's ACL enforces the layout.
"""

from __future__ import annotations

import threading
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from foundation.settings import Settings

TOPIC_PREFIX: Final = "tianyan/v1"
TELEMETRY: Final = "telemetry"
EVENTS: Final = "events"
COMMANDS: Final = "commands"


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
) -> tuple[mqtt.Client, Properties]:
    """An MQTT v5 client and its CONNECT properties (not connected yet)."""
    client = mqtt.Client(
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
    client: mqtt.Client,
    props: Properties,
    settings: Settings,
    *,
    timeout_s: float = 10.0,
    tls: bool | None = None,
) -> None:
    """Connect ``client`` to the broker the settings name and start its network thread;
    returns once the broker accepted it. Raises ConnectionError when it refused it."""
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
    client.connect(
        settings.mqtt_host,
        port,
        keepalive=30,
        clean_start=getattr(client, "_tianyan_clean_start", True),
        properties=props,
    )
    client.loop_start()
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise ConnectionError(f"no CONNACK from {settings.mqtt_host}:{port} in {timeout_s} s")
    client.on_connect = previous
    reason = result["reason"]
    if reason.is_failure:
        client.loop_stop()
        client.disconnect()
        raise ConnectionError(f"the broker refused {client._client_id!r}: {reason}")


def connect_gateway_client(
    settings: Settings, password: str, client_id: str, *, timeout_s: float = 10.0
) -> mqtt.Client:
    """A connected client with the gateway's credential (health checks, tests)."""
    client, props = new_client(client_id, settings.mqtt_gateway_username, password)
    connect(client, props, settings, timeout_s=timeout_s)
    return client
