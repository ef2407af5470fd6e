"""The pipeline's topics: their copies (TIANYAN_KAFKA_REPLICATION_FACTOR) and what a cluster
too small for them is told, on the real broker."""

from __future__ import annotations

import dataclasses
import subprocess
import uuid

import pytest
from kafka import KafkaAdminClient

from foundation.kafka_security import kafka_python_config
from foundation.settings import Settings
from streams.topics import TopicError, ensure_topics, topic_specs

from .conftest import TIANYAN


def _named(settings: Settings, replication: int) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return dataclasses.replace(
        settings,
        kafka_replication_factor=replication,
        **{
            f.name: f"tianyan_test_topics.{f.name}.{tag}"
            for f in dataclasses.fields(settings)
            if f.name.endswith("_topic")
        },
    )


@pytest.mark.parametrize(("replication", "min_insync"), [(1, 1), (2, 1), (3, 2), (5, 4)])
def test_every_topic_has_the_copies_asked_and_tolerates_one_broker_lost(
    settings: Settings, replication: int, min_insync: int
) -> None:
    specs = topic_specs(dataclasses.replace(settings, kafka_replication_factor=replication))
    assert len(specs) >= 7
    for spec in specs:
        assert spec.replication_factor == replication
        assert spec.config["min.insync.replicas"] == str(min_insync)


def test_more_copies_than_brokers_is_refused_by_name_and_makes_nothing(
    settings: Settings,
) -> None:
    wanted = _named(settings, 2)  # the local stack has one broker
    with pytest.raises(TopicError, match=r"TIANYAN_KAFKA_REPLICATION_FACTOR=2 but .* 1 broker"):
        ensure_topics(wanted.kafka_bootstrap, topic_specs(wanted), security=wanted.kafka_security)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_python_config(settings.kafka_security)
    )
    try:
        assert not [t for t in admin.list_topics() if t.endswith(wanted.raw_topic[-8:])]
    finally:
        admin.close()

    env = {**wanted.to_env(), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [TIANYAN, "topics", "ensure"], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 1
    assert "TIANYAN_KAFKA_REPLICATION_FACTOR=2" in res.stderr and "Traceback" not in res.stderr


def test_topics_are_made_with_their_settings(settings: Settings) -> None:
    wanted = _named(settings, 1)
    specs = topic_specs(wanted)
    created = ensure_topics(wanted.kafka_bootstrap, specs, security=wanted.kafka_security)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_python_config(settings.kafka_security)
    )
    try:
        assert sorted(created) == sorted(s.name for s in specs)
        described = {t["name"]: t for t in admin.describe_topics(created)}
        for spec in specs:
            assert len(described[spec.name]["partitions"]) == spec.partitions
            assert all(len(p["replica_nodes"]) == 1 for p in described[spec.name]["partitions"])
    finally:
        admin.delete_topics(created)
        admin.close()
