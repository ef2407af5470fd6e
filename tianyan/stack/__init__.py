"""The local stack: Apache Kafka, PostgreSQL with TimescaleDB and the Mosquitto MQTT broker,
installed and run by tianyan.

``up`` installs what is missing (once), starts the services and waits until they answer;
``down`` stops them and keeps their data under ``var/``; ``status`` asks whatever the
settings point at, local or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from foundation.settings import Settings

from .errors import StackError
from .kafka import LocalKafka, check_kafka
from .mosquitto import LocalMosquitto, check_mqtt
from .postgres import LocalPostgres, check_database

__all__ = ["LocalMosquitto", "ServiceStatus", "StackError", "down", "status", "up"]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    ok: bool
    detail: str


def up(settings: Settings) -> list[ServiceStatus]:
    """Install (once) and start the services; idempotent. The MQTT broker is started only
    when ``TIANYAN_MQTT_LOCAL`` is on (off: tianyan uses an existing broker)."""
    pg = LocalPostgres(settings)
    kafka = LocalKafka(settings)
    pg.install()
    kafka.install()
    pg.init()
    pg.start()
    pg.bootstrap()
    kafka.start()
    if settings.mqtt_local:
        broker = LocalMosquitto(settings)
        broker.install()
        broker.start()
    return status(settings)


def down(settings: Settings) -> None:
    """Stop the local services; their data stay under ``var/``."""
    LocalMosquitto(settings).stop()
    LocalKafka(settings).stop()
    LocalPostgres(settings).stop()


def status(settings: Settings) -> list[ServiceStatus]:
    """Ask Kafka, TimescaleDB and the MQTT broker whether they answer."""
    result = []
    for name, probe, target in (
        ("kafka", check_kafka, settings.kafka_bootstrap),
        ("timescaledb", check_database, settings.admin_database_url),
    ):
        try:
            result.append(ServiceStatus(name, True, probe(target)))
        except StackError as e:
            result.append(ServiceStatus(name, False, str(e)))
    try:
        result.append(ServiceStatus("mqtt", True, check_mqtt(settings)))
    except StackError as e:
        result.append(ServiceStatus("mqtt", False, str(e)))
    return result
