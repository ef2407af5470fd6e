"""One simulated slice of the city, run once per test session through the real pipeline:
simulator → Kafka → `tianyan worker` → TimescaleDB. The dashboard, report and notebook
tests read what it stored, as the roles their users have.

Use the ``city_run`` fixture (registered in conftest.py).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from foundation import contract
from foundation.settings import Settings
from registry.generate import generate
from registry.model import Elevator
from registry.store import upsert
from rescue.delivery import new_secret
from sql.migrate import migrate
from streams.producer import RawPublisher
from tianyan.processes import free_port, stop_process

CITY_SEED, CITY_SIZE = 7, 80
CITY_START = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
# The registry as of the run's own day, as `tianyan evaluate` regenerates it from a stream.
CITY_DATE = CITY_START.date()
CITY_DURATION_S = 900.0
CITY_DB = f"tianyan_test_city_run_{os.getpid()}"  # one per test session
SCENARIO = Path(__file__).parent / "scenarios" / "city_run.toml"


@dataclass(frozen=True)
class CityRun:
    """Where the run's data is and what went into it."""

    admin_url: str  # the owner (tianyan)
    writer_url: str
    analyst_url: str
    regulator_url: str
    public_url: str
    start: dt.datetime
    end: dt.datetime
    elevators: list[Elevator]
    stream: Path  # the simulated messages, JSON Lines
    labels: Path  # the injected faults, JSON Lines
    samples: int  # distinct valid samples the stream carried
    env: dict[str, str]  # the TIANYAN_* environment the pipeline ran with
    rescue_journal: Path  # what the reference receiver received (JSON Lines)

    def url(self, role: str) -> str:
        return self.admin_url.replace("postgresql://tianyan@", f"postgresql://{role}@")


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM tianyan.{table}").fetchone()
    return int(row[0]) if row else 0


def _scalar(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture(scope="session")
def city_run(
    settings: Settings, superuser_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CityRun]:
    import simulator
    from replay import from_jsonl, replay

    from .conftest import TIANYAN

    with psycopg.connect(superuser_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{CITY_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{CITY_DB}" OWNER tianyan')
    with psycopg.connect(superuser_url.rsplit("/", 1)[0] + f"/{CITY_DB}", autocommit=True) as c:
        c.execute("CREATE EXTENSION timescaledb")
    admin = f"postgresql://tianyan@127.0.0.1:{settings.pg_port}/{CITY_DB}"
    migrate(admin)
    elevators = generate(CITY_SEED, CITY_SIZE, CITY_DATE)
    upsert(admin, elevators)

    work = tmp_path_factory.mktemp("city_run")
    stream = work / "city.jsonl"
    simulator.simulate(
        simulator.load_scenario(SCENARIO),
        elevators,
        start=CITY_START,
        duration_s=CITY_DURATION_S,
        output=simulator.FileOutput(stream),
        progress=False,
    )
    samples: set[tuple[str, int]] = set()
    for line in stream.read_bytes().splitlines():
        try:
            m = contract.decode(line)
        except contract.InvalidMessage:
            continue
        samples.update((m.elevator_id, t) for t in m.samples.t_ms)

    tag = uuid.uuid4().hex[:8]
    raw, quarantine, alerts = f"city.raw.{tag}", f"city.quarantine.{tag}", f"city.alerts.{tag}"
    kafka = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    commands = f"city.commands.{tag}"
    kafka.create_topics(
        [
            NewTopic(raw, 4, 1),
            NewTopic(quarantine, 1, 1),
            NewTopic(alerts, 4, 1),
            NewTopic(commands, 1, 1),
        ]
    )
    kafka.close()
    writer = admin.replace("postgresql://tianyan@", "postgresql://tianyan_writer@")
    receiver_port = free_port()
    env = {
        **os.environ,
        "TIANYAN_RAW_TOPIC": raw,
        "TIANYAN_QUARANTINE_TOPIC": quarantine,
        "TIANYAN_ALERTS_TOPIC": alerts,
        "TIANYAN_RAW_PARTITIONS": "4",
        "TIANYAN_WORKER_ID": f"city-worker-{tag}",
        "TIANYAN_DATABASE_URL": writer,
        "TIANYAN_ADMIN_DATABASE_URL": admin,
        "TIANYAN_WORKER_WEB_PORT": str(free_port()),
        "TIANYAN_CHECKPOINT_INTERVAL_MS": "500",
        # the incident dispatcher, delivering to the reference receiver
        "TIANYAN_DEVICE_COMMANDS_TOPIC": commands,
        "TIANYAN_DISPATCHER_ID": f"city-dispatcher-{tag}",
        "TIANYAN_DISPATCHER_WEB_PORT": str(free_port()),
        "TIANYAN_RESCUE_WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/96333",
        "TIANYAN_RESCUE_WEBHOOK_SECRET": new_secret(),
    }
    journal = work / "rescue-received.jsonl"
    log = (work / "worker.log").open("ab")
    services = [
        subprocess.Popen(
            [TIANYAN, *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for args in (
            ["rescue-receiver", "--port", str(receiver_port), "--journal", str(journal)],
            ["dispatcher", "--loglevel", "warn"],
        )
    ]
    worker = subprocess.Popen(
        [TIANYAN, "worker", "--loglevel", "warn"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with RawPublisher(settings.kafka_bootstrap, raw) as pub:
            replay(from_jsonl(stream), pub, progress=False)
        deadline = time.monotonic() + 240
        while _count(writer, "telemetry_sample") < len(samples):
            if worker.poll() is not None:
                pytest.fail(f"the city-run worker exited; see {work / 'worker.log'}")
            if time.monotonic() > deadline:
                pytest.fail("the city-run worker did not store every sample in 240 s")
            time.sleep(1.0)
        time.sleep(3.0)  # the last alerts and checkpoints
        stop_process(worker)
        # every alert applied by the dispatcher, every change delivered
        deadline = time.monotonic() + 120
        while (
            _count(admin, "incident_alert") < _count(admin, "alert")
            or _scalar(admin, "SELECT count(*) FROM webhook_delivery WHERE status <> 'delivered'")
            or not _count(admin, "webhook_delivery")
        ):
            if time.monotonic() > deadline:
                pytest.fail(f"the city-run dispatcher did not deliver everything; see {work}")
            time.sleep(0.5)
    finally:
        for proc in [worker, *services]:
            stop_process(proc)
        log.close()

    # risk grades: the run graded as of its end, as the worker's timer would
    from streams.grading import grade_fleet

    grade_fleet(writer, CITY_START + dt.timedelta(seconds=CITY_DURATION_S))

    yield CityRun(
        admin_url=admin,
        writer_url=writer,
        analyst_url=admin.replace("postgresql://tianyan@", "postgresql://tianyan_analyst@"),
        regulator_url=admin.replace("postgresql://tianyan@", "postgresql://tianyan_regulator@"),
        public_url=admin.replace("postgresql://tianyan@", "postgresql://tianyan_public@"),
        start=CITY_START,
        end=CITY_START + dt.timedelta(seconds=CITY_DURATION_S),
        elevators=elevators,
        stream=stream,
        labels=stream.with_name("city.labels.jsonl"),
        samples=len(samples),
        env=env,
        rescue_journal=journal,
    )
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{CITY_DB}" WITH (FORCE)')
