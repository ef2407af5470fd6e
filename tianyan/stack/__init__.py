"""The local stack: Apache Kafka and PostgreSQL with TimescaleDB, installed and run by tianyan.

``up`` installs what is missing (once), starts both services and waits until they answer;
``down`` stops them and keeps their data under ``var/``; ``status`` asks whatever the
settings point at, local or not.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from foundation.settings import Settings

from .errors import StackError
from .kafka import LocalKafka, check_kafka
from .postgres import LocalPostgres, check_database

__all__ = ["ServiceStatus", "StackError", "down", "status", "up"]

#: Installs a CJK font from Debian for the report and the board previews.
FONTS_SCRIPT = Path(__file__).with_name("install-fonts.sh")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    ok: bool
    detail: str


def up(settings: Settings) -> list[ServiceStatus]:
    """Install (once) and start both services; idempotent."""
    pg = LocalPostgres(settings)
    kafka = LocalKafka(settings)
    pg.install()
    kafka.install()
    if subprocess.run(["bash", str(FONTS_SCRIPT)]).returncode != 0:
        raise StackError("installing a CJK font failed (see the lines above)")
    pg.init()
    pg.start()
    pg.bootstrap()
    kafka.start()
    return status(settings)


def down(settings: Settings) -> None:
    """Stop both local services; their data stay under ``var/``."""
    LocalKafka(settings).stop()
    LocalPostgres(settings).stop()


def status(settings: Settings) -> list[ServiceStatus]:
    """Ask Kafka and TimescaleDB whether they answer."""
    result = []
    for name, probe, target in (
        ("kafka", check_kafka, settings.kafka_bootstrap),
        ("timescaledb", check_database, settings.admin_database_url),
    ):
        try:
            result.append(ServiceStatus(name, True, probe(target)))
        except StackError as e:
            result.append(ServiceStatus(name, False, str(e)))
    return result
