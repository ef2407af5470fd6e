"""The Kafka topics tianyan reads and writes, and their creation."""

from __future__ import annotations

from dataclasses import dataclass, field

from foundation.kafka_security import KafkaSecurity, kafka_python_config
from foundation.settings import Settings

_DAY_MS = 24 * 3600 * 1000


class TopicError(RuntimeError):
    """The pipeline's topics cannot be made as configured."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    replication_factor: int = 1


def min_insync_replicas(replication_factor: int) -> int:
    """Copies that must have a write before it is acknowledged (``acks=all``): all but one,
    so one broker may be lost without losing or refusing an acknowledged write."""
    return max(1, replication_factor - 1)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline needs.

    The raw topic is keyed by elevator id, so one elevator's messages stay in order on one
    partition and workers share the partitions. Every topic has
    ``TIANYAN_KAFKA_REPLICATION_FACTOR`` copies.
    """
    replication = settings.kafka_replication_factor
    specs = [
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
        # Terminals' answers to commands (played, failed), keyed by elevator, from the
        # gateway.
        TopicSpec(
            settings.device_events_topic,
            settings.raw_partitions,
            {"retention.ms": str(7 * _DAY_MS)},
        ),
        # The ledger's head, published as it grows: a copy outside the database, kept for
        # ever, against which `tianyan audit verify` detects a truncated or rewritten tail.
        TopicSpec(settings.audit_anchors_topic, 1, {"retention.ms": "-1"}),
    ]
    return [
        TopicSpec(
            spec.name,
            spec.partitions,
            {**spec.config, "min.insync.replicas": str(min_insync_replicas(replication))},
            replication,
        )
        for spec in specs
    ]


def replay_topic_spec(settings: Settings, name: str) -> TopicSpec:
    """A replay run's own topic: partitioned as the raw topic (per-elevator order), kept
    7 days like it; never read by the live worker."""
    replication = settings.kafka_replication_factor
    return TopicSpec(
        name,
        settings.raw_partitions,
        {
            "retention.ms": str(7 * _DAY_MS),
            "min.insync.replicas": str(min_insync_replicas(replication)),
        },
        replication,
    )


def ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    *,
    stall_s: float = 60.0,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create the topics that do not exist yet and wait until every partition of every
    topic has a leader (a producer started at once would otherwise meet partitions its
    metadata does not know yet); returns the names created. The wait fails only when no
    further partition became ready for ``stall_s``.

    Raises
    ------
    TopicError
        A topic asks for more copies than the cluster has brokers.
    """
    import time

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="tianyan-topics",
        **kafka_python_config(security or KafkaSecurity()),
    )
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.config)
            for s in specs
            if s.name not in existing
        ]
        brokers = len(admin.describe_cluster()["brokers"])
        for spec in new:
            if spec.replication_factor > brokers:
                raise TopicError(
                    f"{spec.name}: TIANYAN_KAFKA_REPLICATION_FACTOR={spec.replication_factor}"
                    f" but the cluster at {bootstrap} has {brokers} broker(s)"
                )
        if new:
            admin.create_topics(new)
        wanted = sum(s.partitions for s in specs)
        ready, moved_at = -1, time.monotonic()
        while True:
            now_ready = sum(
                1
                for topic in admin.describe_topics([s.name for s in specs])
                if topic["error_code"] == 0
                for p in topic["partitions"]
                if p["leader_id"] >= 0
            )
            if now_ready >= wanted:
                return [t.name for t in new]
            if now_ready > ready:
                ready, moved_at = now_ready, time.monotonic()
            elif time.monotonic() - moved_at > stall_s:
                raise TimeoutError(
                    f"{ready} of {wanted} partitions of {', '.join(s.name for s in specs)}"
                    f" have a leader; none more for {stall_s:.0f} s"
                )
            time.sleep(0.1)
    finally:
        admin.close()
