"""Shared fixtures. Tests talk to the real Kafka and TimescaleDB that `make test` starts;
if they do not answer, the tests fail (they are never skipped)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from foundation.kafka_security import KafkaSecurity, kafka_python_config
from foundation.settings import Settings
from tianyan import stack

TIANYAN = str(Path(sys.executable).with_name("tianyan"))


#: Modules that share something cluster-wide run in one xdist worker, one after the other
#: (``make test`` runs the tests in two workers): the simulated city run (session-scoped,
#: built once by the worker that runs them; it creates a login role of its own) and the
#: demos (which create the same sample login roles).
SHARED_GROUPS = {
    "test_city_run": "city_run",
    "test_dashboards": "city_run",
    "test_notebooks": "city_run",
    "test_risk": "city_run",
    "test_demo": "demo",
    "test_rescue_faults": "demo",
}


def xdist_unit(nodeid: str) -> str:
    """The xdist work unit of a test: its module, or the module's shared group."""
    module = nodeid.split("::", 1)[0]
    return SHARED_GROUPS.get(Path(module).stem, module)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist loadscope``, a module's tests go to one worker (its module-scoped
    fixtures, a secure broker or a gateway, set up once) and the modules of a shared group
    too. (xdist's own ``loadgroup`` no longer groups under pytest 9.2: it renames items'
    node ids, which pytest 9.2 no longer reads.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

    return ByModule(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every module using the city run is in its group: built twice, it would also create its
    login role twice at once."""
    stray = {
        i.path.stem
        for i in items
        if "city_run" in getattr(i, "fixturenames", ()) and xdist_unit(i.nodeid) != "city_run"
    }
    if stray:
        raise pytest.UsageError(f"add {sorted(stray)} to SHARED_GROUPS in tests/conftest.py")


@pytest.fixture(scope="session")
def settings() -> Settings:
    s = Settings.from_env()
    down = [f"{st.name}: {st.detail}" for st in stack.status(s) if not st.ok]
    if down:
        pytest.fail("the stack is not up (run `make setup`): " + "; ".join(down))
    return s


@pytest.fixture(scope="session")
def superuser_url(settings: Settings) -> str:
    """The local cluster's superuser, for creating scratch databases."""
    return f"postgresql://postgres@127.0.0.1:{settings.pg_port}/postgres"


@pytest.fixture
def scratch_db(settings: Settings, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty database owned by the tianyan role; its admin URL; dropped afterwards."""
    import uuid

    from tianyan.harness import create_database, drop_database

    # Unique across the xdist workers, whose tests may share a name.
    node = request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    name = f"tianyan_test_{node}_{uuid.uuid4().hex[:8]}"
    yield create_database(settings, name)
    drop_database(settings, name)


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    """A private copy of sql/ so a test may edit a migration."""
    from sql import migrate

    dst = tmp_path / "sql"
    shutil.copytree(migrate.HERE, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.fixture
def fresh_topic(settings: Settings, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new 4-partition topic on the real Kafka, deleted afterwards."""
    import uuid

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"test.{request.node.name[:40]}.{uuid.uuid4().hex[:8]}".replace("[", "_").replace(
        "]", ""
    )
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_python_config(settings.kafka_security)
    )
    admin.create_topics([NewTopic(name, 4, 1)])
    yield name
    admin.delete_topics([name])
    admin.close()


def consume_all(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 60.0,
    *,
    security: KafkaSecurity | None = None,
    done: Callable[[list], bool] | None = None,
) -> list:
    """Every record of ``topic`` (at least ``expected`` of them), per partition in offset order.

    Where records may repeat (a message re-sent after an outage), ``expected`` records can
    all be there before the last distinct one is: ``done`` then says when the records read
    so far are complete (``expected`` is not used)."""
    import time

    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **kafka_python_config(security or KafkaSecurity()),
    )
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        complete = done or (lambda got: len(got) >= expected)
        while not complete(records) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=50_000).values():
                records.extend(batch)
        # Anything beyond `expected` would be a duplicate: give it a moment to show up.
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    finally:
        consumer.close()
    return records


# Shared fixtures defined beside their support code: the simulated city run (dashboards,
# report and notebooks read it) and the rescue set-up.
from .city_run import city_run  # noqa: E402, F401
from .rescue_support import rescue  # noqa: E402, F401
