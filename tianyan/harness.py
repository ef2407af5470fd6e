"""One pipeline harness: tianyan's services on the local stack, in a database and topics of
the run's own — for the demo, the benches and the tests.

A :func:`pipeline` owns everything a run needs and gives it all back afterwards:

- a database (created with TimescaleDB and migrated; dropped afterwards unless kept) and
  its URLs as the owner and as the pipeline's writer role;
- the pipeline's topics, named for the run (deleted afterwards);
- the run's :class:`~foundation.settings.Settings`, derived from the caller's, and the
  environment the services get from them (:meth:`Settings.to_env`);
- the services, started in one :class:`~tianyan.processes.ServiceGroup` (stopped together,
  whichever way the run ends), the MQTT gateway among them with an id and shared
  subscription of the run's own;
- waits that follow progress and fail only when nothing has moved, naming what was awaited.

>>> with pipeline(settings, "tianyan_demo", Path("var/demo")) as run:  # doctest: +SKIP
...     run.start_dispatcher()
...     run.start_worker("worker 1")
...     run.wait(lambda: run.scalar("SELECT count(*) FROM incident"), lambda n: n >= 1,
...              "the first incident")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from foundation.kafka_security import kafka_python_config
from foundation.settings import Settings, role_url
from tianyan.processes import ServiceGroup, free_port, listening, services, wait_for_progress

if TYPE_CHECKING:
    from replay import ReplaySummary
    from simulator.mqtt_output import MqttOutput

TIANYAN = str(Path(sys.executable).with_name("tianyan"))
log = logging.getLogger("tianyan.harness")
#: A wait fails when nothing it watches (nor any service's log) has moved for this long.
STALL_S = 120.0


class LogLines:
    """The kinds of line the services of a run have written to their logs (``*.log`` in its
    directory), a line's kind being its text with every number blanked.

    A new kind of line is progress; a line repeating an earlier one with other numbers is
    not: a worker stuck in its table recovery logs the same two warnings every 5 s, and
    counted as progress they kept a wait from failing for as long as the run lasted.
    """

    _NUMBERS = re.compile(rb"\d+")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._read: dict[Path, int] = {}
        self._kinds: set[bytes] = set()

    def kinds(self) -> int:
        """How many kinds of line the logs hold so far (complete lines only)."""
        for path in sorted(self.directory.glob("*.log")):
            start = self._read.get(path, 0)
            with path.open("rb") as f:
                f.seek(start)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self._read[path] = start + end
            self._kinds.update(self._NUMBERS.sub(b"#", line) for line in chunk[:end].splitlines())
        return len(self._kinds)


@dataclass
class Run:
    """A running pipeline; see the module docstring."""

    settings: Settings
    admin_url: str
    group: ServiceGroup
    work: Path
    stall_s: float = STALL_S
    gateway_started: bool = False
    _log_lines: LogLines = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self._log_lines = LogLines(self.work)

    @property
    def writer_url(self) -> str:
        return self.settings.database_url

    def url(self, role: str) -> str:
        """The run's database as ``role`` (tianyan_writer, tianyan_analyst, …)."""
        return role_url(self.admin_url, role)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a service of this run (``extra`` on top)."""
        return {**os.environ, **self.settings.to_env(), **extra}

    # -- services ---------------------------------------------------------------------------
    def start(
        self,
        name: str,
        args: list[str],
        *,
        port: int | None = None,
        log: Path | None = None,
        **env: str,
    ) -> subprocess.Popen[bytes]:
        """Start ``tianyan <args>`` as the service ``name``, logging to ``log`` (by default
        ``<work>/<name>.log``); with ``port``, wait until it listens there."""
        log = log or self.work / f"{name.replace(' ', '-')}.log"
        proc = self.group.start(name, [TIANYAN, *args], env=self.env(**env), log=log, cwd=self.work)
        if port is not None:
            self.wait(lambda: listening(port), bool, f"{name} to listen on {port} (log {log})")
        return proc

    def start_worker(self, name: str = "worker", **env: str) -> int:
        """A stream worker; returns its web port."""
        port = free_port()
        self.start(
            name,
            ["worker", "--loglevel", "warn"],
            port=port,
            TIANYAN_WORKER_WEB_PORT=str(port),
            **env,
        )
        return port

    def start_dispatcher(
        self, name: str = "dispatcher", *, log: Path | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        """The incident dispatcher, on the run's dispatcher port (or ``env``'s); a second
        dispatcher given its own web port gets an acknowledgement API port of its own too."""
        port = int(env.get("TIANYAN_DISPATCHER_WEB_PORT", self.settings.dispatcher_web_port))
        api_port = int(env.get("TIANYAN_RESCUE_API_PORT", self.settings.rescue_api_port))
        if port != self.settings.dispatcher_web_port and api_port == self.settings.rescue_api_port:
            env["TIANYAN_RESCUE_API_PORT"] = str(free_port())
        return self.start(name, ["dispatcher", "--loglevel", "warn"], port=port, log=log, **env)

    def start_receiver(self, port: int, journal: Path, *args: str) -> None:
        """The reference rescue receiver on ``port``, journaling what it receives."""
        self.start(
            "receiver",
            ["rescue-receiver", "--port", str(port), "--journal", str(journal), *args],
            port=port,
            TIANYAN_RECEIVER_LOGLEVEL="WARNING",
        )

    def start_gateway(self, name: str = "gateway") -> int:
        """The run's MQTT gateway (the broker's terminals → the run's raw topic, the run's
        commands → the terminals); returns its web port once it has subscribed."""
        port = self.settings.gateway_web_port
        self.gateway_started = True
        self.start(name, ["gateway", "--loglevel", "warn"])
        self.wait(
            lambda: _gateway_subscribed(port),
            bool,
            f"{name} to subscribe to the terminals (its /health on {port})",
        )
        return port

    def connect_terminals(self, codes: list[str]) -> MqttOutput:
        """Every terminal of ``codes`` connected to the broker with a credential issued now,
        each in a fresh session; the caller disconnects them (:meth:`MqttOutput.disconnect`).
        They answer the commands they receive."""
        from simulator.mqtt_output import MqttOutput
        from tianyan.stack import LocalMosquitto

        broker = LocalMosquitto(self.settings)
        credentials = broker.issue_many(codes)
        broker.reload()
        terminals = MqttOutput(self.settings, credentials, fresh_sessions=True)
        terminals.open()
        return terminals

    def publish(
        self,
        stream: Path,
        *,
        speed: float | None = None,
        terminals: MqttOutput | None = None,
    ) -> ReplaySummary:
        """Publish a JSON Lines stream to the run's raw topic as it was recorded (``speed``
        × real time, or as fast as possible), every record acknowledged: straight to Kafka,
        or with ``terminals``, each record from its elevator's terminal through the broker
        (and the gateway)."""
        from replay import from_jsonl, replay
        from streams.producer import RawPublisher

        if terminals is not None:
            return replay(from_jsonl(stream), terminals, speed=speed, progress=False)
        with RawPublisher(
            self.settings.kafka_bootstrap,
            self.settings.raw_topic,
            security=self.settings.kafka_security,
        ) as pub:
            return replay(from_jsonl(stream), pub, speed=speed, progress=False)

    # -- waiting and reading ----------------------------------------------------------------
    def wait(self, progress: Callable[[], Hashable], done: Callable[[Any], bool], what: str) -> Any:
        """Wait while ``progress()`` (or a new kind of line in a service's log) moves until
        ``done(progress())``; :class:`~tianyan.processes.Stalled` naming ``what`` when nothing
        moved for :attr:`stall_s` or a service exited."""
        reached = wait_for_progress(
            lambda: (progress(), self._log_lines.kinds()),
            lambda p: done(p[0]),  # type: ignore[index]
            stall_s=self.stall_s,
            what=what,
            alive=self.group.exited,
        )
        return reached[0]  # type: ignore[index]

    def row(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        """The first row (None for no row), as the owner."""
        with psycopg.connect(self.admin_url) as conn:
            return conn.execute(sql, params).fetchone()

    def scalar(self, sql: str, *params: Any) -> Any:
        """The first column of the first row (None for no row), as the owner."""
        row = self.row(sql, *params)
        return row[0] if row else None


def _gateway_subscribed(port: int) -> bool:
    """Whether the gateway on ``port`` says (its /health) it has subscribed."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return bool(json.loads(r.read()).get("subscribed"))
    except (OSError, ValueError):
        return False


def create_database(settings: Settings, database: str) -> str:
    """A new, empty ``database`` (dropped first if it exists) owned by the ``tianyan`` role,
    with TimescaleDB; returns its URL as the owner. Not migrated."""
    superuser = f"postgresql://postgres@127.0.0.1:{settings.pg_port}"
    with psycopg.connect(superuser + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}" OWNER tianyan')
    with psycopg.connect(f"{superuser}/{database}", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
    return f"postgresql://tianyan@127.0.0.1:{settings.pg_port}/{database}"


def drop_database(settings: Settings, database: str) -> None:
    """Drop ``database`` if it exists, whoever is connected to it."""
    superuser = f"postgresql://postgres@127.0.0.1:{settings.pg_port}/postgres"
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@contextmanager
def pipeline(
    settings: Settings,
    database: str,
    work: Path,
    *,
    partitions: int = 4,
    keep_database: bool = False,
    **changes: Any,
) -> Iterator[Run]:
    """A run of the pipeline in ``database`` (dropped first if it exists) and topics of its
    own; ``changes`` are :class:`Settings` fields to set for the run. Everything is stopped,
    and the topics deleted (the database too, unless ``keep_database``), on the way out."""
    from sql.migrate import migrate
    from streams.topics import ensure_topics, topic_specs

    work.mkdir(parents=True, exist_ok=True)
    admin_url = create_database(settings, database)
    tag = uuid.uuid4().hex[:8]
    run_settings = dataclasses.replace(
        settings,
        database_url=role_url(admin_url, "tianyan_writer"),
        admin_database_url=admin_url,
        raw_topic=f"{database}.raw.{tag}",
        quarantine_topic=f"{database}.quarantine.{tag}",
        alerts_topic=f"{database}.alerts.{tag}",
        alerts_dead_letter_topic=f"{database}.alerts-dead.{tag}",
        device_commands_topic=f"{database}.commands.{tag}",
        device_events_topic=f"{database}.device-events.{tag}",
        audit_anchors_topic=f"{database}.anchors.{tag}",
        raw_partitions=partitions,
        worker_id=f"{database}-worker-{tag}",
        gateway_id=f"{database}-gateway-{tag}",
        mqtt_share_group=f"{database}-{tag}",
        gateway_web_port=free_port(),
        dispatcher_id=f"{database}-dispatcher-{tag}",
        dispatcher_web_port=free_port(),
        rescue_api_port=free_port(),
        # A harness run's receivers are local and speak plain http: allowed here, explicitly
        # (TIANYAN_RESCUE_ALLOW_HTTP; off by default, where every endpoint must be https).
        rescue_allow_http=True,
        **changes,
    )
    specs = topic_specs(run_settings)
    run: Run | None = None
    try:
        migrate(admin_url)
        ensure_topics(settings.kafka_bootstrap, specs, security=settings.kafka_security)
        with services() as group:
            run = Run(run_settings, admin_url, group, work)
            yield run
    finally:
        if run is not None and run.gateway_started:
            _retire_gateway(run_settings)
        apps = (run_settings.worker_id, run_settings.dispatcher_id)
        _clean_up(
            settings,
            [s.name for s in specs],
            apps,
            None if keep_database else database,
            raw_topic=run_settings.raw_topic,
        )
        for app_id in apps:
            shutil.rmtree(settings.faust_datadir(app_id), ignore_errors=True)


def _retire_gateway(settings: Settings) -> None:
    """End the run's gateway session at the broker (it would take a copy of every later
    message for a day); logged, never raised over the run's own outcome."""
    from tianyan.stack import LocalMosquitto, StackError

    try:
        LocalMosquitto(settings).retire_gateway()
    except (ConnectionError, OSError, StackError) as e:
        log.warning("the run's gateway session was not ended: %s", e)


def _clean_up(
    settings: Settings,
    topics: list[str],
    apps: tuple[str, ...],
    database: str | None,
    *,
    raw_topic: str,
) -> None:
    """Delete the run's topics, its replay runs' and its Faust apps' own (changelogs, with a
    client of its own: Kafka may have restarted since the run began) and drop its database.
    A failure here is logged, never raised over the run's own outcome."""
    from kafka import KafkaAdminClient

    try:
        kafka = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap,
            **kafka_python_config(settings.kafka_security),
        )
        try:
            made = {
                t
                for t in kafka.list_topics()
                if t in topics
                or t.startswith(tuple(f"{a}-" for a in apps))
                # replay runs' own topics (replay.runs.run_topic)
                or t.startswith(f"{raw_topic}.replay.")
            }
            if made:
                kafka.delete_topics(sorted(made))
        finally:
            kafka.close()
    except Exception as e:
        log.warning("the run's topics were not deleted: %s", e)
    if database is not None:
        try:
            drop_database(settings, database)
        except psycopg.Error as e:
            log.warning("the run's database %s was not dropped: %s", database, e)
