"""The Faust worker on the real Kafka and TimescaleDB: every sample stored exactly once,
a SIGKILL mid-stream changes nothing, bad and duplicated input handled, two workers share
the work."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
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
from registry.store import upsert
from sql.migrate import migrate
from streams.producer import RawPublisher
from tianyan.processes import stop_process

from .conftest import TIANYAN, consume_all

# Real worker processes on a simulated stream.
pytestmark = pytest.mark.slow

PARTITIONS = 4
FLEET_SEED, FLEET_SIZE, FLEET_DATE = 99, 60, dt.date(2026, 11, 1)


@dataclass(frozen=True)
class Run:
    """A simulated stream: its file, and what a correct pipeline must store from it."""

    path: Path
    lines: int
    samples: set[tuple[str, int]]  # (elevator, t_ms) of every valid message
    malformed: int
    duplicates: int


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Run:
    import simulator

    out = tmp_path_factory.mktemp("worker") / "run.jsonl"
    scenario = simulator.load_scenario(Path(__file__).parent / "scenarios" / "device_faults.toml")
    elevators = generate(FLEET_SEED, FLEET_SIZE, FLEET_DATE)
    simulator.simulate(
        scenario,
        elevators,
        start=dt.datetime(2026, 11, 2, 0, 30, tzinfo=dt.UTC),
        duration_s=240.0,
        output=simulator.FileOutput(out),
        progress=False,
    )
    samples: set[tuple[str, int]] = set()
    seen: set[tuple[str, int]] = set()
    malformed = duplicates = lines = 0
    for line in out.read_bytes().splitlines():
        lines += 1
        try:
            m = contract.decode(line)
        except contract.InvalidMessage:
            malformed += 1
            continue
        if (m.elevator_id, m.seq) in seen:
            duplicates += 1
        seen.add((m.elevator_id, m.seq))
        samples.update((m.elevator_id, t) for t in m.samples.t_ms)
    assert malformed > 0 and duplicates > 0, "the scenario should exercise bad input"
    return Run(out, lines, samples, malformed, duplicates)


@dataclass
class Pipeline:
    """One isolated pipeline: its own topics, consumer group, database and ports."""

    settings: Settings
    env: dict[str, str]
    db_url: str
    raw_topic: str
    quarantine_topic: str


def _pipeline(settings: Settings, scratch_db: str, web_port: int) -> Pipeline:
    tag = uuid.uuid4().hex[:8]
    raw, quarantine = f"test.raw.{tag}", f"test.quarantine.{tag}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(raw, PARTITIONS, 1), NewTopic(quarantine, 1, 1)])
    admin.close()
    migrate(scratch_db)
    upsert(scratch_db, generate(FLEET_SEED, FLEET_SIZE, FLEET_DATE))  # the detectors' limits
    writer = scratch_db.replace("postgresql://tianyan@", "postgresql://tianyan_writer@")
    env = {
        **os.environ,
        "TIANYAN_RAW_TOPIC": raw,
        "TIANYAN_QUARANTINE_TOPIC": quarantine,
        "TIANYAN_RAW_PARTITIONS": str(PARTITIONS),
        "TIANYAN_WORKER_ID": f"test-worker-{tag}",
        "TIANYAN_DATABASE_URL": writer,
        "TIANYAN_WORKER_WEB_PORT": str(web_port),
        "TIANYAN_CHECKPOINT_INTERVAL_MS": "500",
    }
    return Pipeline(settings, env, writer, raw, quarantine)


def _publish(p: Pipeline, run: Run, speed: float | None = None) -> None:
    from replay import from_jsonl, replay

    with RawPublisher(p.settings.kafka_bootstrap, p.raw_topic) as pub:
        replay(from_jsonl(run.path), pub, speed=speed, progress=False)


def _start(p: Pipeline, web_port: int | None = None, log: Path | None = None) -> subprocess.Popen:
    env = dict(p.env)
    if web_port is not None:
        env["TIANYAN_WORKER_WEB_PORT"] = str(web_port)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [TIANYAN, "worker", "--loglevel", os.environ.get("TEST_WORKER_LOGLEVEL", "warn")],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _count(url: str, table: str = "telemetry_sample") -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM tianyan.{table}").fetchone()
    return int(row[0]) if row else 0


def _wait_for(url: str, expected: int, timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    n = _count(url)
    while n < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        n = _count(url)
    return n


def _metrics(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("tianyan_") and " " in line and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _snapshot(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        return {
            "samples": conn.execute(
                "SELECT elevator_id, time, seq, speed_mps, load_kg, door "
                "FROM tianyan.telemetry_sample ORDER BY 1, 2"
            ).fetchall(),
            "windows": conn.execute(
                "SELECT * FROM tianyan.window_feature ORDER BY elevator_id, width_s, bucket_start"
            ).fetchall(),
            "trips": conn.execute(
                "SELECT * FROM tianyan.trip ORDER BY elevator_id, start_time"
            ).fetchall(),
            # Silence alerts too: stamped with the stream time they fell due, not with when
            # a tick looked, so they do not depend on the pace of the run.
            "alerts": conn.execute(
                "SELECT alert_key, state, raised_at, evidence FROM tianyan.alert ORDER BY 1, 2"
            ).fetchall(),
        }


@pytest.fixture
def scratch_db_2(settings: Settings, superuser_url: str) -> Iterator[str]:
    name = f"tianyan_test_second_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER tianyan')
    with psycopg.connect(superuser_url.rsplit("/", 1)[0] + f"/{name}", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
    yield f"postgresql://tianyan@127.0.0.1:{settings.pg_port}/{name}"
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_every_sample_once_and_bad_input_quarantined(
    settings: Settings, scratch_db: str, simulated: Run, tmp_path: Path
) -> None:
    p = _pipeline(settings, scratch_db, 16166)
    _publish(p, simulated)
    worker = _start(p, log=tmp_path / "worker.log")
    try:
        n = _wait_for(p.db_url, len(simulated.samples))
        time.sleep(2)  # anything beyond the expected rows would be a duplicate: let it land
        stats = _metrics(16166)
    finally:
        stop_process(worker)
    assert n == len(simulated.samples), (tmp_path / "worker.log").read_text()[-3000:]
    stored = {(e, int(t.timestamp() * 1000)) for e, t, *_ in _snapshot(p.db_url)["samples"]}
    assert stored == simulated.samples
    assert stats["tianyan_quarantined_total"] == simulated.malformed
    assert stats["tianyan_duplicates_total"] == simulated.duplicates
    assert (
        stats["tianyan_messages_total"]
        == simulated.lines - simulated.malformed - simulated.duplicates
    )
    assert _count(p.db_url, "window_feature") > 0 and _count(p.db_url, "trip") > 0
    # The detectors run in the worker: the injected overloads come out as alerts.
    labels = [
        json.loads(x) for x in simulated.path.with_suffix(".labels.jsonl").read_text().splitlines()
    ]
    overloaded = {x["elevator_id"] for x in labels if x["fault_type"] == "overload"}
    with psycopg.connect(p.db_url) as conn:
        alerted = {
            r[0]
            for r in conn.execute(
                "SELECT elevator_id FROM tianyan.alert WHERE alert_type = 'overload'"
            ).fetchall()
        }
    # (Detection quality is measured by `tianyan evaluate`; here: the wiring works.)
    assert overloaded & alerted
    assert stats["tianyan_alerts_total"] > 0
    quarantined = consume_all(settings.kafka_bootstrap, p.quarantine_topic, simulated.malformed)
    assert len(quarantined) == simulated.malformed
    for r in quarantined:
        # The original bytes, unchanged, with the validator's reason naming the field.
        with pytest.raises(contract.InvalidMessage) as refused:
            contract.decode(r.value)
        assert dict(r.headers)["reason"].decode() == refused.value.reason


def test_sigkill_mid_stream_changes_nothing(
    settings: Settings, scratch_db: str, scratch_db_2: str, simulated: Run, tmp_path: Path
) -> None:
    # Reference: an uninterrupted run.
    ref = _pipeline(settings, scratch_db_2, 16167)
    _publish(ref, simulated)
    worker = _start(ref)
    try:
        assert _wait_for(ref.db_url, len(simulated.samples)) == len(simulated.samples)
        time.sleep(2)
    finally:
        stop_process(worker)
    expected = _snapshot(ref.db_url)

    p = _pipeline(settings, scratch_db, 16168)
    log = tmp_path / "worker.log"
    worker = _start(p, log=log)
    # The stream arrives while the worker runs (240 simulated seconds in 12 s).
    publisher = threading.Thread(target=_publish, args=(p, simulated, 20.0))
    try:
        time.sleep(10)
        publisher.start()
        # Kill it without warning once part of the stream is stored.
        part = _wait_for(p.db_url, len(simulated.samples) // 3)
        assert part < len(simulated.samples), "the worker finished before it could be killed"
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        worker = _start(p, log=log)
        publisher.join(60)
        n = _wait_for(p.db_url, len(simulated.samples), timeout_s=180)
        time.sleep(3)
    finally:
        stop_process(worker)
    assert n == len(simulated.samples), log.read_text()[-3000:]
    got = _snapshot(p.db_url)
    assert got["samples"] == expected["samples"]
    assert got["windows"] == expected["windows"]
    assert got["trips"] == expected["trips"]
    # Every alert, those of silence (device offline, a car last seen trapped then silent)
    # included: the same whatever the pace, the kill and the restart.
    assert got["alerts"] == expected["alerts"]
    assert any(":device_offline:" in key for key, *_ in expected["alerts"])


def test_two_workers_split_the_partitions(
    settings: Settings, scratch_db: str, simulated: Run, tmp_path: Path
) -> None:
    p = _pipeline(settings, scratch_db, 16169)
    a = _start(p, web_port=16169, log=tmp_path / "a.log")
    b = _start(p, web_port=16170, log=tmp_path / "b.log")
    try:
        time.sleep(15)  # both join the group before the data arrives
        _publish(p, simulated)
        n = _wait_for(p.db_url, len(simulated.samples), timeout_s=180)
        time.sleep(2)
        shares = [_metrics(port)["tianyan_messages_total"] for port in (16169, 16170)]
    finally:
        stop_process(a)
        stop_process(b)
    assert n == len(simulated.samples)
    assert all(s > 0 for s in shares), f"one worker did nothing: {shares}"
    assert sum(shares) == simulated.lines - simulated.malformed - simulated.duplicates


def test_health_and_metrics_endpoints(settings: Settings, scratch_db: str) -> None:
    p = _pipeline(settings, scratch_db, 16171)
    worker = _start(p)
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline:
            try:
                health = json.loads(
                    urllib.request.urlopen("http://127.0.0.1:16171/health", timeout=2).read()
                )
                break
            except OSError:
                time.sleep(0.5)
        assert health is not None and health["ok"] is True
        names = set(_metrics(16171))
        for metric in (
            "tianyan_messages_total",
            "tianyan_samples_total",
            "tianyan_quarantined_total",
            "tianyan_late_samples_total",
            "tianyan_duplicates_total",
        ):
            assert metric in names
    finally:
        stop_process(worker)
