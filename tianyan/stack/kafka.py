"""The local Apache Kafka broker: official jars from Maven Central, KRaft combined mode."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from foundation.kafka_security import KafkaSecurity, kafka_python_config
from foundation.settings import Settings
from streams.topics import min_insync_replicas

from .errors import StackError
from .kafka_secure import ADMIN, SecureKafkaFiles

HERE = Path(__file__).parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.yaml"


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StackError(
            f"the Kafka broker needs {tool}, which is not installed: "
            f"install it (apt-get install {package}) and run again"
        )
    return path


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid()``, never one starting with "-": the storage tool's
    argument parser would take it for an option (about 1 fresh stack in 64 failed so).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """The broker under ``var/kafka``: jars, data, configuration and pid file.

    ``secure``: the broker under ``var/kafka-secure`` instead, with a SASL_SSL listener on
    ``settings.kafka_secure_port`` and ACLs (see :mod:`.kafka_secure`); it shares the jars.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        secure: bool = False,
        node: int = 1,
        cluster: KafkaCluster | None = None,
    ) -> None:
        self.settings = settings
        self.secure = secure
        self.node = node
        self.cluster = cluster
        if cluster is not None:
            self.root = cluster.root / f"node-{node}"
            self.log = settings.var_dir / "log" / f"{cluster.root.name}-node-{node}.log"
        else:
            self.root = settings.var_dir / ("kafka-secure" if secure else "kafka")
            self.log = settings.var_dir / "log" / ("kafka-secure.log" if secure else "kafka.log")
        self.files = SecureKafkaFiles(self.root)
        self.jars = settings.var_dir / "kafka" / "jars"
        self.data = self.root / "data"
        self.config = self.root / "server.properties"
        self.pid_file = self.root / "kafka.pid"
        # Node n of a cluster listens 10 ports above node n - 1 (node 1 on the usual ports).
        self.port = settings.kafka_port + NODE_PORT_STEP * (node - 1)
        self.controller_port = settings.kafka_controller_port + NODE_PORT_STEP * (node - 1)

    @property
    def bootstrap(self) -> str:
        if self.secure:
            return f"127.0.0.1:{self.settings.kafka_secure_port}"
        if self.cluster is not None:
            return f"127.0.0.1:{self.port}"
        return self.settings.kafka_bootstrap

    @property
    def admin_security(self) -> KafkaSecurity:
        """How the stack itself (status, topics, ACLs) connects to this broker."""
        if self.secure:
            return self.files.security(ADMIN)
        return self.settings.kafka_security

    # -- jars ---------------------------------------------------------------------------------
    def install(self) -> None:
        """Resolve the broker's jars with Maven once; later calls find the stamp and return."""
        _require("java", "openjdk-17-jre-headless")
        stamp = self.jars / ".pom-sha256"
        want = hashlib.sha256(POM.read_bytes()).hexdigest()
        if stamp.exists() and stamp.read_text() == want:
            return
        mvn = _require("mvn", "maven")
        if self.jars.exists():
            shutil.rmtree(self.jars)
        res = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.jars}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise StackError(
                f"Maven could not resolve the Kafka jars:\n{res.stdout[-2000:]}{res.stderr[-2000:]}"
            )
        stamp.write_text(want)

    # -- configuration and storage ---------------------------------------------------------
    def _write_config(self) -> None:
        s = self.settings
        if self.secure:
            self.files.make_tls()
            controller_port = s.kafka_secure_controller_port
            listeners = self.files.server_properties(s)
        else:
            controller_port = self.controller_port
            listeners = (
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}\n"
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}\n"
                "controller.listener.names=CONTROLLER\n"
                "inter.broker.listener.name=PLAINTEXT\n"
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n"
            )
        if self.cluster is not None:
            # Every node a controller too: a quorum of all, any one of them may be lost.
            quorum = "controller.quorum.voters=" + ",".join(
                f"{n.node}@127.0.0.1:{n.controller_port}" for n in self.cluster.nodes
            )
        else:
            quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}"
        # The internal topics' copies; the pipeline's own are TIANYAN_KAFKA_REPLICATION_FACTOR.
        copies = min(3, len(self.cluster.nodes)) if self.cluster is not None else 1
        insync = min_insync_replicas(copies)
        self.config.touch(mode=0o600)
        self.config.write_text(
            "# Written by `tianyan stack up`; edits are overwritten.\n"
            "process.roles=broker,controller\n"
            f"node.id={self.node}\n"
            f"{quorum}\n"
            f"{listeners}"
            f"log.dirs={self.data}\n"
            f"num.partitions={s.raw_partitions}\n"
            f"default.replication.factor={copies}\n"
            f"min.insync.replicas={insync}\n"
            f"offsets.topic.replication.factor={copies}\n"
            f"transaction.state.log.replication.factor={copies}\n"
            f"transaction.state.log.min.isr={insync}\n"
            f"share.coordinator.state.topic.replication.factor={copies}\n"
            f"share.coordinator.state.topic.min.isr={insync}\n"
            "group.initial.rebalance.delay.ms=0\n"
            "auto.create.topics.enable=false\n"
            "log.retention.hours=168\n"
            "message.max.bytes=1048588\n"
        )

    def _format(self) -> None:
        if (self.data / "meta.properties").exists():
            return
        self.data.mkdir(parents=True, exist_ok=True)
        cluster_id = new_cluster_id() if self.cluster is None else self.cluster.cluster_id()
        res = subprocess.run(
            [
                "java",
                "-cp",
                f"{self.jars}/*",
                f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                "kafka.tools.StorageTool",
                "format",
                # a cluster's voters are in its configuration
                *(["--standalone"] if self.cluster is None else []),
                "--cluster-id",
                cluster_id,
                "--config",
                str(self.config),
                *(self.files.scram_arguments() if self.secure else []),
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise StackError(f"formatting Kafka storage failed: {res.stdout}{res.stderr}")

    # -- lifecycle ----------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            # A broker this process started and that died is a zombie until reaped, and a
            # zombie answers the signal 0 below.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid

    def prepare(self) -> None:
        """Its folders, configuration and formatted storage (once)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format()

    def start(self, timeout_s: float = 90.0) -> None:
        if self.pid() is not None:
            return
        self.prepare()
        deadline = time.monotonic() + timeout_s
        while True:
            log_start = self.log.stat().st_size if self.log.exists() else 0
            proc = self._spawn()
            self.pid_file.write_text(str(proc.pid))
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    check_kafka(self.bootstrap, timeout_s=3, security=self.admin_security)
                    return
                except StackError:
                    time.sleep(0.5)
            else:
                raise StackError(
                    f"the Kafka broker did not answer within {timeout_s:.0f} s; see {self.log}"
                )
            with self.log.open("rb") as f:
                f.seek(log_start)
                output = f.read().decode(errors="replace")
            # A port of the local range may be held a minute by a client connection's
            # TIME_WAIT (another program's ephemeral port): wait for it rather than fail.
            if "Address already in use" in output and time.monotonic() + 5 < deadline:
                time.sleep(5)
                continue
            tail = "\n".join(output.splitlines()[-10:])
            raise StackError(f"the Kafka broker exited with {proc.returncode}:\n{tail}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        heap = f"{self.settings.kafka_heap_mb}m"
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [
                    "java",
                    f"-Xmx{heap}",
                    "-Xms256m",
                    "-XX:+UseG1GC",
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp",
                    f"{self.jars}/*",
                    "kafka.Kafka",
                    str(self.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float) -> None:
        """Wait while it runs until it answers; fails when it exited or never answered."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
                raise StackError(f"Kafka node {self.node} exited:\n{tail}")
            try:
                check_kafka(self.bootstrap, timeout_s=3, security=self.admin_security)
                return
            except StackError:
                time.sleep(0.5)
        raise StackError(
            f"Kafka node {self.node} did not answer within {timeout_s:.0f} s; see {self.log}"
        )

    @classmethod
    def stop_pid_file(cls, pid_file: Path, timeout_s: float = 60.0) -> None:
        """Stop the broker whose pid ``pid_file`` holds (SIGTERM, then SIGKILL)."""
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pid_file.unlink(missing_ok=True)
            return
        _terminate(pid, timeout_s)
        pid_file.unlink(missing_ok=True)

    def stop(self, timeout_s: float = 60.0) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        _terminate(pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)


def _terminate(pid: int, timeout_s: float) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            # Reap it when this process started it (a test's fixture): a zombie would
            # still answer the signal 0 below.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


#: Ports between one node of a local cluster and the next.
NODE_PORT_STEP = 10


class KafkaCluster:
    """``TIANYAN_KAFKA_BROKERS`` (> 1) brokers on this machine, under
    ``var/kafka/cluster-<n>`` (or ``root``): each a KRaft broker and controller, node 1 on
    ``TIANYAN_KAFKA_PORT``, node n ``10 × (n − 1)`` ports above. Internal topics have
    ``min(3, n)`` copies; the pipeline's topics ``TIANYAN_KAFKA_REPLICATION_FACTOR``."""

    def __init__(self, settings: Settings, *, root: Path | None = None) -> None:
        if settings.kafka_brokers < 2:
            raise StackError(f"TIANYAN_KAFKA_BROKERS={settings.kafka_brokers}: a cluster is 2+")
        self.settings = settings
        self.root = root or settings.var_dir / "kafka" / f"cluster-{settings.kafka_brokers}"
        self.nodes = [
            LocalKafka(settings, node=n, cluster=self) for n in range(1, settings.kafka_brokers + 1)
        ]

    def cluster_id(self) -> str:
        """The id every node is formatted with: made once, kept beside the nodes."""
        path = self.root / "cluster.id"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    def start(self, timeout_s: float = 120.0) -> None:
        """Start every node not running, then wait until each answers (a node cannot
        answer before a quorum of controllers is up, so all are started first)."""
        for node in self.nodes:
            node.prepare()
        for node in self.nodes:
            if node.pid() is None:
                node.pid_file.write_text(str(node._spawn().pid))
        for node in self.nodes:
            node.wait_ready(timeout_s)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def stop_every_cluster(settings: Settings) -> None:
    """Stop the nodes of any local cluster found under ``var/kafka`` (``stack down``)."""
    for pid_file in sorted((settings.var_dir / "kafka").glob("cluster-*/node-*/kafka.pid")):
        LocalKafka.stop_pid_file(pid_file)


def check_kafka(
    bootstrap: str, timeout_s: float = 5.0, *, security: KafkaSecurity | None = None
) -> str:
    """Ask the cluster for its metadata; raises :class:`StackError` if it does not answer."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
            client_id="tianyan-status",
            **kafka_python_config(security or KafkaSecurity()),
        )
    except (KafkaError, OSError, ValueError) as e:
        raise StackError(f"Kafka does not answer at {bootstrap}: {e}") from e
    try:
        cluster = admin.describe_cluster()
    except (KafkaError, OSError) as e:
        raise StackError(f"Kafka does not answer at {bootstrap}: {e}") from e
    finally:
        admin.close()
    brokers = cluster.get("brokers", [])
    return f"cluster {cluster.get('cluster_id')}, {len(brokers)} broker(s)"
