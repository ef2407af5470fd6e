"""Kafka security (issue 15): every client through SASL_SSL on the secure local broker
(``tianyan stack up --secure``: SCRAM-SHA-512 users, a local CA, ACLs); strangers refused;
each component confined to its ACLs.

The secure broker runs beside the plaintext one, on ``TIANYAN_KAFKA_SECURE_PORT``; this
module starts it (if it is not running) and stops it afterwards (if it started it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import msgspec
import pytest
from kafka import KafkaAdminClient
from kafka.errors import TopicAuthorizationFailedError

from foundation.kafka_security import KafkaSecurity, kafka_python_config
from foundation.settings import Settings, kafka_security_env
from registry.generate import generate
from registry.store import upsert
from rescue.ledger import read_anchors
from streams.producer import PublishError, RawPublisher
from tianyan import stack
from tianyan.harness import TIANYAN, Run, pipeline
from tianyan.stack import StackError
from tianyan.stack.kafka import LocalKafka, check_kafka
from tianyan.stack.kafka_secure import ADMIN, SecureKafkaFiles, acl_plan, grant, secure_settings

from .conftest import consume_all
from .rescue_support import FLEET, cleared, trapped

#: The simulated fleet, and the one simulated to a file and replayed (other elevators: a
#: terminal's sequence numbers start again in each simulation, and a replayed number the
#: worker has stored would be a duplicate).
REGISTRY_SEED, REPLAY_REGISTRY_SEED = 1515, 1516
#: Simulated minutes just past: a terminal's clock far from its arrival would be quarantined.
START = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=4)


@pytest.fixture(scope="module")
def secure_kafka(settings: Settings) -> Iterator[LocalKafka]:
    """The secure broker (``tianyan stack up --secure``), running for this module."""
    broker = LocalKafka(settings, secure=True)
    was_running = broker.pid() is not None
    statuses = stack.up(settings, secure=True)
    assert all(st.ok for st in statuses), statuses
    yield broker
    if not was_running:
        broker.stop()


@pytest.fixture(scope="module")
def secure_run(
    settings: Settings, secure_kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """A pipeline run on the secure broker: its topics made as the admin, each component
    granted its ACLs on them (and nothing else)."""
    admin = secure_settings(settings, secure_kafka.files, ADMIN)
    work = tmp_path_factory.mktemp("kafka-sec")
    with pipeline(
        admin,
        f"tianyan_test_kafka_sec_{uuid.uuid4().hex[:8]}",
        work,
        partitions=2,
        checkpoint_interval_s=0.5,
        audit_anchor_interval_s=1,
        escalation_after_s=(10**8, 2 * 10**8, 3 * 10**8),
    ) as run:
        grant(admin.kafka_bootstrap, admin.kafka_security, acl_plan(run.settings))
        upsert(run.admin_url, FLEET)
        for seed in (REGISTRY_SEED, REPLAY_REGISTRY_SEED):
            upsert(run.admin_url, generate(seed, 5, START.date()))
        yield run


def _as(run: Run, files: SecureKafkaFiles, user: str) -> dict[str, str]:
    """The environment of a service of ``run`` connecting as the Kafka ``user``."""
    return kafka_security_env(files.security(user))


def _tianyan(run: Run, env: dict[str, str], *args: str) -> str:
    res = subprocess.run(
        [TIANYAN, *args], env=run.env(**env), capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_strangers_are_refused(settings: Settings, secure_kafka: LocalKafka) -> None:
    bootstrap = secure_kafka.bootstrap
    # the admin, configured as `stack up --secure` wrote its settings, is let in
    lines = (secure_kafka.files.clients / "admin.env").read_text().splitlines()
    with mock.patch.dict(os.environ, dict(line.split("=", 1) for line in lines)):
        admin = Settings.from_env()
    assert admin.kafka_bootstrap == bootstrap
    assert "1 broker(s)" in check_kafka(bootstrap, security=admin.kafka_security)
    # plaintext on the SASL_SSL listener
    with pytest.raises(StackError):
        check_kafka(bootstrap, timeout_s=3)
    # the right user with a wrong password
    wrong = dataclasses.replace(secure_kafka.admin_security, sasl_password="guessed")
    with pytest.raises(StackError):
        check_kafka(bootstrap, timeout_s=3, security=wrong)
    # a user the broker does not know, through the publisher (confluent-kafka)
    nobody = dataclasses.replace(wrong, sasl_username="nobody")
    with pytest.raises(PublishError):
        RawPublisher(bootstrap, settings.raw_topic, security=nobody)
    # TLS without trusting the local CA: the broker's certificate is refused
    untrusted = dataclasses.replace(secure_kafka.admin_security, ssl_cafile=None)
    with pytest.raises(StackError):
        check_kafka(bootstrap, timeout_s=3, security=untrusted)


def test_each_component_is_confined_to_its_acls(secure_kafka: LocalKafka, secure_run: Run) -> None:
    s, files = secure_run.settings, secure_kafka.files
    bootstrap = s.kafka_bootstrap
    # the simulator's and replay's user cannot forge a `cleared` alert …
    alert = cleared(trapped(1, 0))
    with pytest.raises(PublishError, match="not allowed to publish"):
        RawPublisher(bootstrap, s.alerts_topic, security=files.security("publisher"))
    # … nor a device command, nor an anchor
    for topic in (s.device_commands_topic, s.audit_anchors_topic):
        with pytest.raises(PublishError, match="not allowed"):
            RawPublisher(bootstrap, topic, security=files.security("publisher"))
    # the worker cannot write the audit anchors, nor read them
    with pytest.raises(PublishError, match="not allowed"):
        RawPublisher(bootstrap, s.audit_anchors_topic, security=files.security("worker"))
    with pytest.raises(LookupError):
        read_anchors(bootstrap, s.audit_anchors_topic, security=files.security("worker"))
    # no component can delete the anchors topic
    for user in ("worker", "dispatcher", "publisher", "auditor"):
        client = KafkaAdminClient(
            bootstrap_servers=bootstrap, **kafka_python_config(files.security(user))
        )
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                client.delete_topics([s.audit_anchors_topic])
        finally:
            client.close()
    # the publisher may write raw telemetry, which is all it needs
    with RawPublisher(bootstrap, s.raw_topic, security=files.security("publisher")) as pub:
        pub.publish(alert.elevator_id.encode(), b"{}")
    assert pub.sent == 1


@pytest.mark.slow  # the whole pipeline
def test_pipeline_through_sasl_ssl(
    secure_kafka: LocalKafka, secure_run: Run, tmp_path: Path
) -> None:
    """Simulator, replay, worker, dispatcher and the anchors' reader, each as its own user."""
    run, files = secure_run, secure_kafka.files
    s = run.settings
    run.start_worker(**_as(run, files, "worker"))
    run.start_dispatcher(**_as(run, files, "dispatcher"))
    when = ["--start", START.strftime("%Y-%m-%dT%H:%M:%S"), "--duration", "120", "--quiet"]
    # the simulator into Kafka, as the publisher
    fleet = ["--registry-seed", str(REGISTRY_SEED), "--elevators", "5"]
    simulated = json.loads(
        _tianyan(run, _as(run, files, "publisher"), "simulate", *fleet, *when).splitlines()[-1]
    )
    # and replay: another fleet simulated to a file, replayed as the publisher into a run
    # topic of its own (which the publisher may create), and detected on by a replay worker
    stream = tmp_path / "replayed.jsonl"
    other = ["--registry-seed", str(REPLAY_REGISTRY_SEED), "--elevators", "5"]
    _tianyan(run, {}, "simulate", *other, *when, "--out", str(stream))
    replayed = json.loads(
        _tianyan(
            run, _as(run, files, "publisher"), "replay", "--from", str(stream), "--quiet"
        ).splitlines()[-1]
    )
    assert simulated["messages"] > 0 and replayed["messages"] > 0
    detected = json.loads(
        _tianyan(
            run, _as(run, files, "worker"), "worker", "--replay-run", replayed["run_id"]
        ).splitlines()[-1]
    )
    assert detected["records"] == replayed["messages"]
    assert detected["not_of_this_run"] == 0
    replayed_ids = sorted({json.loads(line)["elevator_id"] for line in stream.open()})
    simulated_rows = run.wait(
        lambda: run.scalar(
            "SELECT count(*) FROM tianyan.telemetry_sample WHERE NOT elevator_id = ANY(%s)",
            replayed_ids,
        ),
        lambda n: n > 0,
        "the worker to store the simulated telemetry",
    )
    assert simulated_rows > 0
    # a replay never reaches the live worker
    assert (
        run.scalar(
            "SELECT count(*) FROM tianyan.telemetry_sample WHERE elevator_id = ANY(%s)",
            replayed_ids,
        )
        == 0
    )
    # an alert (written as the worker, which may) reaches the dispatcher as an incident
    alert = trapped(2, 0)
    with RawPublisher(s.kafka_bootstrap, s.alerts_topic, security=files.security("worker")) as pub:
        pub.publish(alert.elevator_id.encode(), msgspec.json.encode(alert))
    run.wait(
        lambda: run.scalar("SELECT count(*) FROM incident"),
        lambda n: n >= 1,
        "the dispatcher to open the incident",
    )
    # its reassurance command went out on the dispatcher's topic
    commands = consume_all(
        s.kafka_bootstrap, s.device_commands_topic, 1, security=files.security(ADMIN)
    )
    assert [json.loads(c.value)["command"] for c in commands] == ["play_reassurance"]
    # and the ledger's anchors are readable by the auditor
    anchors = run.wait(
        lambda: len(
            read_anchors(
                s.kafka_bootstrap, s.audit_anchors_topic, security=files.security("auditor")
            )
        ),
        lambda n: n >= 1,
        "an audit anchor published by the dispatcher",
    )
    assert anchors >= 1


def test_security_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="TIANYAN_KAFKA_SASL_USERNAME"):
        KafkaSecurity(protocol="SASL_SSL")
    with pytest.raises(ValueError, match="TIANYAN_KAFKA_SECURITY_PROTOCOL"):
        KafkaSecurity(protocol="TLS")
    with pytest.raises(ValueError, match="PLAIN sends the password in clear"):
        KafkaSecurity(
            protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"
        )
