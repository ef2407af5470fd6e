"""The simulated fleet as real devices: each terminal an MQTT client with its own credential.

Each terminal publishes its messages QoS 1 to ``tianyan/v1/{code}/telemetry``. While the
broker is unreachable it keeps them (the client's queue) and reconnects with a growing
delay; on reconnection it sends them again in their order, with their original ``seq``.
It subscribes to its ``…/commands`` and answers each command on ``…/events`` with the
command's id: ``played`` (or, for a terminal told to fail, ``failed``; a mute one answers
nothing).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt

from foundation.settings import Settings
from streams.mqtt import COMMANDS, EVENTS, TELEMETRY, new_client, terminal_topic
from streams.producer import Headers

from .fleet import FaultLabel
from .output import write_labels_db, write_labels_file

log = logging.getLogger(__name__)

#: Reconnection delay of a terminal that lost the broker: from 1 s, doubling, at most 30 s.
RECONNECT_MIN_S: Final = 1
RECONNECT_MAX_S: Final = 30


class MqttTerminal:
    """One simulated terminal: a paho client with its network thread."""

    def __init__(
        self,
        settings: Settings,
        code: str,
        password: str,
        *,
        tls: bool = False,
        command_answer: str | None = "played",
        fresh_session: bool = False,
    ) -> None:
        self.code = code
        self.command_answer = command_answer
        self.commands: list[dict[str, Any]] = []
        self.published = 0
        self.acknowledged = 0
        self.client, props = new_client(
            f"terminal-{code}", code, password, clean_start=False, session_expiry_s=3600
        )
        self.client.max_queued_messages_set(0)  # keep everything while offline
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        if tls:
            self.client.tls_set(ca_certs=str(settings.mqtt_ca_file))
        port = settings.mqtt_tls_port if tls else settings.mqtt_port
        # Asynchronous: a broker down at start is retried like one lost later. A fresh
        # session drops what an earlier run of the same terminal left queued at the broker
        # on its first connection only: a reconnection still resumes this run's session.
        self.client.connect_async(
            settings.mqtt_host,
            port,
            keepalive=30,
            clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY if fresh_session else False,
            properties=props,
        )
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("terminal %s refused by the broker: %s", self.code, reason)
            return
        client.subscribe(terminal_topic(self.code, COMMANDS), qos=1)

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, _r: Any, _p: Any) -> None:
        self.acknowledged += 1

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            # An empty retained message clears the retained command (the gateway does so
            # once the command is answered): nothing to do.
            return
        try:
            command = json.loads(msg.payload)
        except ValueError:
            log.warning("terminal %s: a command that is not JSON: %r", self.code, msg.payload)
            return
        if not isinstance(command, dict) or "command_id" not in command:
            return
        if any(c.get("command_id") == command["command_id"] for c in self.commands):
            return  # a repeat (the retained copy, or a re-delivery): already answered
        self.commands.append(command)
        if self.command_answer is None:
            return
        answer = {
            "command_id": command["command_id"],
            "elevator_id": self.code,
            "status": self.command_answer,
            "at_ms": int(time.time() * 1000),
        }
        self.published += 1
        client.publish(terminal_topic(self.code, EVENTS), json.dumps(answer), qos=1)

    def publish(self, payload: bytes) -> None:
        self.published += 1
        self.client.publish(terminal_topic(self.code, TELEMETRY), payload, qos=1)

    def flush(self, timeout_s: float) -> bool:
        """Wait until the broker acknowledged every message (telemetry and answers);
        False if not within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.acknowledged < self.published:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MqttOutput:
    """Publish each elevator's messages from its own terminal, through the broker.

    Parameters
    ----------
    settings
        Where the broker is.
    credentials
        Each terminal's password, by registration code (``tianyan terminals issue``).
    flush_timeout_s
        How long :meth:`close` (and :meth:`flush`) waits for the broker to acknowledge
        everything.
    fresh_sessions
        Each terminal starts a new session at the broker (:class:`MqttTerminal`).

    It is also a publisher for :func:`replay.replay` (:meth:`publish`, :meth:`flush`): a
    recorded stream sent through the terminals, each record from its elevator's own.
    """

    def __init__(
        self,
        settings: Settings,
        credentials: Mapping[str, str],
        *,
        labels_db_url: str | None = None,
        labels_path: Path | str | None = None,
        tls: bool = False,
        flush_timeout_s: float = 300.0,
        fresh_sessions: bool = False,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.labels_db_url = labels_db_url
        self.labels_path = None if labels_path is None else Path(labels_path)
        self.tls = tls
        self.flush_timeout_s = flush_timeout_s
        self.fresh_sessions = fresh_sessions
        self.terminals: dict[str, MqttTerminal] = {}
        #: Records :meth:`publish` could not send: no terminal of theirs (no elevator id).
        self.skipped = 0

    def open(self, connect_timeout_s: float = 60.0) -> None:
        """Connect every terminal; returns once all are connected (messages published while
        a client is still connecting can overtake those queued before)."""
        for code, password in self.credentials.items():
            self.terminals[code] = MqttTerminal(
                self.settings, code, password, tls=self.tls, fresh_session=self.fresh_sessions
            )
        deadline = time.monotonic() + connect_timeout_s
        while not all(t.client.is_connected() for t in self.terminals.values()):
            if time.monotonic() > deadline:
                down = [t.code for t in self.terminals.values() if not t.client.is_connected()]
                raise TimeoutError(f"{len(down)} terminal(s) not connected (first: {down[0]})")
            time.sleep(0.05)

    def write(self, key: bytes, payload: bytes, message: dict[str, Any] | None) -> None:
        terminal = self.terminals.get(key.decode())
        if terminal is None:
            raise KeyError(f"no MQTT credential for terminal {key.decode()!r}")
        terminal.publish(payload)

    def publish(self, key: bytes, value: bytes, *, headers: Headers = None) -> None:
        """:func:`replay.replay`'s publisher: ``value`` from ``key``'s terminal. A record
        of no elevator (a malformed one whose id cannot be read) has no terminal to send it:
        counted in :attr:`skipped`."""
        if headers:
            raise ValueError("a replay run's header cannot travel over MQTT: replay to Kafka")
        terminal = self.terminals.get(key.decode(errors="replace"))
        if terminal is None:
            self.skipped += 1
            return
        terminal.publish(value)

    def flush(self) -> None:
        """Wait until the broker acknowledged every terminal's messages; TimeoutError after
        ``flush_timeout_s``."""
        deadline = time.monotonic() + self.flush_timeout_s
        late = [
            t.code
            for t in self.terminals.values()
            if not t.flush(max(0.0, deadline - time.monotonic()))
        ]
        if late:
            raise TimeoutError(
                f"{len(late)} terminal(s) still had unacknowledged messages after "
                f"{self.flush_timeout_s:.0f} s (first: {late[0]})"
            )

    def disconnect(self) -> None:
        for t in self.terminals.values():
            t.close()

    def close(self, run_id: str, labels: Sequence[FaultLabel]) -> None:
        try:
            self.flush()
        finally:
            self.disconnect()
        if self.labels_path is not None:
            write_labels_file(self.labels_path, run_id, labels)
        if self.labels_db_url is not None:
            write_labels_db(self.labels_db_url, run_id, labels)
