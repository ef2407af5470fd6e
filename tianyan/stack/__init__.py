"""The local stack: Apache Kafka, PostgreSQL with TimescaleDB and the Mosquitto MQTT broker,
installed and run by tianyan.

``up`` installs what is missing (once), starts the services and waits until they answer;
``down`` stops them and keeps their data under ``var/``; ``status`` asks whatever the
settings point at, local or not.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from foundation.settings import Settings

from .errors import StackError
from .kafka import KafkaCluster, LocalKafka, check_kafka, stop_every_cluster
from .kafka_secure import ADMIN, acl_plan, grant, secure_settings
from .mosquitto import LocalMosquitto, check_mqtt
from .postgres import LocalPostgres, check_database

__all__ = ["LocalMosquitto", "ServiceStatus", "StackError", "down", "status", "up"]

#: Installs a CJK font from Debian for the report and the board previews.
FONTS_SCRIPT = Path(__file__).with_name("install-fonts.sh")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    ok: bool
    detail: str


def up(settings: Settings, *, secure: bool = False) -> list[ServiceStatus]:
    """Install (once) and start the services; idempotent.

    ``secure``: the broker under ``var/kafka-secure`` (SASL_SSL, SCRAM users, ACLs) instead of
    the plaintext one; the pipeline's topics are created on it and each component granted
    its ACLs on them (:func:`.kafka_secure.acl_plan`), and each user's ``TIANYAN_KAFKA_*``
    variables written to ``var/kafka-secure/clients/<user>.env``.

    ``TIANYAN_KAFKA_BROKERS`` above 1: a cluster of that many brokers on this machine
    (:class:`.kafka.KafkaCluster`) instead of the single one.

    The MQTT broker is started only when ``TIANYAN_MQTT_LOCAL`` is on (off: tianyan uses an
    existing broker).
    """
    if secure and settings.kafka_brokers > 1:
        raise StackError(
            f"TIANYAN_KAFKA_BROKERS={settings.kafka_brokers}: the secure broker is one broker;"
            " run --secure with one"
        )
    pg = LocalPostgres(settings)
    kafka = LocalKafka(settings, secure=secure)
    pg.install()
    kafka.install()
    if subprocess.run(["bash", str(FONTS_SCRIPT)]).returncode != 0:
        raise StackError("installing a CJK font failed (see the lines above)")
    pg.init()
    pg.start()
    pg.bootstrap()
    if settings.kafka_brokers > 1:
        LocalKafka(settings).stop()  # the single broker holds node 1's ports
        KafkaCluster(settings).start()
    else:
        stop_every_cluster(settings)
        kafka.start()
    if settings.mqtt_local:
        broker = LocalMosquitto(settings)
        broker.install()
        broker.start()
    if secure:
        from streams.topics import ensure_topics, topic_specs

        admin = secure_settings(settings, kafka.files, ADMIN)
        ensure_topics(admin.kafka_bootstrap, topic_specs(admin), security=admin.kafka_security)
        grant(admin.kafka_bootstrap, admin.kafka_security, acl_plan(admin))
        kafka.files.write_client_envs(settings)
        return status(admin)
    return status(settings)


def down(settings: Settings) -> None:
    """Stop the local services (every broker: plaintext, secure, a cluster's nodes); their
    data stay under ``var/``."""
    LocalKafka(settings, secure=True).stop()
    LocalMosquitto(settings).stop()
    stop_every_cluster(settings)
    LocalKafka(settings).stop()
    LocalPostgres(settings).stop()


def status(settings: Settings) -> list[ServiceStatus]:
    """Ask Kafka, TimescaleDB and the MQTT broker whether they answer."""
    result = []
    probes: tuple[tuple[str, Callable[[], str]], ...] = (
        ("kafka", lambda: check_kafka(settings.kafka_bootstrap, security=settings.kafka_security)),
        ("timescaledb", lambda: check_database(settings.admin_database_url)),
    )
    for name, probe in probes:
        try:
            result.append(ServiceStatus(name, True, probe()))
        except StackError as e:
            result.append(ServiceStatus(name, False, str(e)))
    try:
        result.append(ServiceStatus("mqtt", True, check_mqtt(settings)))
    except StackError as e:
        result.append(ServiceStatus("mqtt", False, str(e)))
    return result
