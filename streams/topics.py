"""The Kafka topics tianyan reads and writes, and their creation."""

from __future__ import annotations

from dataclasses import dataclass, field

from foundation.settings import Settings

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline needs.

    The raw topic is keyed by elevator id, so one elevator's messages stay in order on one
    partition and workers share the partitions.
    """
    return [
        TopicSpec(settings.raw_topic, settings.raw_partitions, {"retention.ms": str(7 * _DAY_MS)}),
        # Quarantined messages are kept long enough for a terminal vendor to be told.
        TopicSpec(settings.quarantine_topic, 1, {"retention.ms": str(30 * _DAY_MS)}),
        # Alerts keyed by elevator, like the raw topic: incidents consume them in order.
        TopicSpec(
            settings.alerts_topic, settings.raw_partitions, {"retention.ms": str(30 * _DAY_MS)}
        ),
        # Alerts the dispatcher cannot read, with the reason in a header: kept, never dropped.
        TopicSpec(settings.alerts_dead_letter_topic, 1, {"retention.ms": "-1"}),
        # Commands to terminals (the reassurance message on a trapping), keyed by elevator;
        # a terminal reads its own. Short-lived: a command an hour old is moot.
        TopicSpec(
            settings.device_commands_topic,
            settings.raw_partitions,
            {"retention.ms": str(_DAY_MS)},
        ),
        # The ledger's head, published as it grows: a copy outside the database, kept for
        # ever, against which `tianyan audit verify` detects a truncated or rewritten tail.
        TopicSpec(settings.audit_anchors_topic, 1, {"retention.ms": "-1"}),
    ]


def ensure_topics(bootstrap: str, specs: list[TopicSpec], replication_factor: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tianyan-topics")
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(s.name, s.partitions, replication_factor, topic_configs=s.config)
            for s in specs
            if s.name not in existing
        ]
        if new:
            admin.create_topics(new)
        return [t.name for t in new]
    finally:
        admin.close()
