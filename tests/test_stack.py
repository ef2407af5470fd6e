"""The local stack's lifecycle, on a second stack of its own (own var dir and ports), so the
stack the other tests use stays up: up twice, status, down, up again with data kept."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from foundation.settings import PROJECT_ROOT
from tianyan.processes import listening

from .conftest import TIANYAN

# Starts and stops a second stack.
pytestmark = pytest.mark.slow

VAR = PROJECT_ROOT / "var" / "test-stack"


def _free_block(first: int, size: int) -> int:
    """The first port from ``first`` up, in steps of 10, with ``size`` free ports from it
    (below the ephemeral range), so a development stack on the usual ports is no obstacle."""
    for base in range(first, 32_000, 10):
        if not any(listening(port) for port in range(base, base + size)):
            return base
    raise RuntimeError(f"no {size} free ports from {first}")


KAFKA_PORT = _free_block(29_192, 4)  # the broker, its controller, the secure pair
PG_PORT = _free_block(25_442, 1)
#: PostgreSQL after the restart: the cluster takes the port as set at each start.
PG_PORT_MOVED = _free_block(PG_PORT + 10, 1)
MQTT_PORT = _free_block(29_883, 2)
PORTS = {
    "TIANYAN_KAFKA_PORT": str(KAFKA_PORT),
    "TIANYAN_PG_PORT": str(PG_PORT),
    "TIANYAN_MQTT_PORT": str(MQTT_PORT),
    "TIANYAN_MQTT_TLS_PORT": str(MQTT_PORT + 1),
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIANYAN_")}
    env.update({"TIANYAN_VAR_DIR": str(VAR), "TIANYAN_KAFKA_HEAP_MB": "384", **PORTS, **extra})
    return env


def tianyan(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIANYAN, *args], env=_env(**extra), capture_output=True, text=True, timeout=300
    )


def _jar_fingerprint() -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in (VAR / "kafka" / "jars").iterdir()}


@pytest.fixture(scope="module")
def second_stack(settings: object) -> Iterator[None]:
    # `settings` first: the main stack must be up, which also means the software is installed.
    tianyan("stack", "down")
    shutil.rmtree(VAR, ignore_errors=True)
    yield
    tianyan("stack", "down")
    shutil.rmtree(VAR, ignore_errors=True)


def test_lifecycle(second_stack: None) -> None:
    first = tianyan("stack", "up")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "kafka        up" in first.stdout and "timescaledb  up" in first.stdout
    assert str(KAFKA_PORT) in (VAR / "kafka" / "server.properties").read_text()
    assert "mqtt         up" in first.stdout
    assert f"listener {MQTT_PORT} 127.0.0.1" in (VAR / "mosquitto" / "mosquitto.conf").read_text()
    jars = _jar_fingerprint()
    assert any(name.startswith("kafka_2.13-4.") for name in jars)

    # Idempotent: a second `up` starts nothing new and fetches no jars again.
    pid = (VAR / "kafka" / "kafka.pid").read_text()
    again = tianyan("stack", "up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (VAR / "kafka" / "kafka.pid").read_text() == pid
    assert _jar_fingerprint() == jars

    status = tianyan("stack", "status")
    assert status.returncode == 0, status.stdout

    # Data written before `down` is there after the next `up`.
    url = f"postgresql://tianyan@127.0.0.1:{PG_PORT}/tianyan"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('before down')")

    down = tianyan("stack", "down")
    assert down.returncode == 0, down.stderr
    status = tianyan("stack", "status")
    assert status.returncode == 1
    assert "kafka        DOWN" in status.stdout and "timescaledb  DOWN" in status.stdout
    assert "mqtt         DOWN" in status.stdout

    # Up again, PostgreSQL on another port: the data is there, on the port set now.
    up = tianyan("stack", "up", TIANYAN_PG_PORT=str(PG_PORT_MOVED))
    assert up.returncode == 0, up.stdout + up.stderr
    moved = url.replace(f":{PG_PORT}/", f":{PG_PORT_MOVED}/")
    with psycopg.connect(moved) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("before down",)]
    assert _jar_fingerprint() == jars
    tianyan("stack", "down", TIANYAN_PG_PORT=str(PG_PORT_MOVED))


def test_status_names_the_service_that_does_not_answer(settings: object) -> None:
    # The main stack is up; point only Kafka somewhere nothing listens.
    res = subprocess.run(
        [TIANYAN, "stack", "status"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TIANYAN_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
    )
    assert res.returncode == 1
    lines = {line.split()[0]: line for line in res.stdout.splitlines()}
    assert " DOWN " in lines["kafka"] and "127.0.0.1:1" in lines["kafka"]
    assert " up " in lines["timescaledb"]


def test_missing_java_is_explained(tmp_path: Path) -> None:
    """Set-up without Java on PATH says what to install instead of failing obscurely."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "runuser", "id", "cut", "dpkg-query", "grep"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = _env(TIANYAN_VAR_DIR=str(tmp_path / "var"), PATH=str(bin_dir))
    res = subprocess.run(
        [TIANYAN, "stack", "up"], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode != 0
    assert "needs java" in res.stderr and "apt-get install openjdk-17-jre-headless" in res.stderr


def test_cluster_ids_are_never_taken_for_an_option() -> None:
    import base64

    from tianyan.stack.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]  # 1 in 64 random ids starts with "-"
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
