"""Publishing raw telemetry to Kafka: the one producer the simulator, replay and demo share.

Messages are keyed by elevator id, so one elevator's messages land on one partition, and the
producer is idempotent, so retries neither reorder nor duplicate them: per-elevator order
is preserved.

The client is confluent-kafka (librdkafka), not the design card's kafka-python: publishing
the same 939-byte message to the local broker, kafka-python 3.0.12 reached ≈ 6,900
messages/s and confluent-kafka 2.16.1 ≈ 98,000 (replay must publish ≥ 50,000/s).
kafka-python remains for administration (topics, health checks).
"""

from __future__ import annotations

from types import TracebackType

from confluent_kafka import KafkaError, KafkaException, Message, Producer


class PublishError(RuntimeError):
    """Kafka did not accept some messages; the count and first reason say which."""


class RawPublisher:
    """Publishes ``(key, value)`` pairs to one topic, in order per key.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers.
    topic
        The topic to publish to (the raw telemetry topic).
    linger_ms
        How long the client waits to fill a batch; larger is faster and later.
    """

    def __init__(self, bootstrap: str, topic: str, *, linger_ms: int = 20) -> None:
        if not topic:
            raise ValueError("topic: a topic name is required")
        self.topic = topic
        self.sent = 0
        self.failed = 0
        self.first_error: str | None = None
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": linger_ms,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 500_000,
                "message.max.bytes": 1_048_576,
                "client.id": "tianyan-publisher",
                # The Java client's (and kafka-python's) partitioner: an elevator's messages
                # land on the same partition whichever client a terminal or tool uses.
                "partitioner": "murmur2_random",
            }
        )
        try:
            metadata = self._producer.list_topics(topic, timeout=10)
        except KafkaException as e:
            raise PublishError(f"Kafka does not answer at {bootstrap}: {e}") from e
        topic_md = metadata.topics.get(topic)
        if topic_md is None or topic_md.error is not None:
            raise PublishError(
                f"topic {topic!r} does not exist on {bootstrap} "
                "(create the pipeline's topics with `tianyan topics ensure`)"
            )

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = str(err)

    def publish(
        self,
        key: bytes,
        value: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        headers: dict[str, str | bytes | None] | None = None,
    ) -> None:
        """Queue one message; blocks only while the client's queue is full.

        ``topic`` defaults to the publisher's topic, ``partition`` to the one the key
        hashes to.
        """
        while True:
            try:
                if partition is None:
                    self._producer.produce(
                        topic or self.topic,
                        key=key,
                        value=value,
                        headers=headers,
                        on_delivery=self._on_delivery,
                    )
                else:
                    self._producer.produce(
                        topic or self.topic,
                        key=key,
                        value=value,
                        partition=partition,
                        headers=headers,
                        on_delivery=self._on_delivery,
                    )
                break
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as e:
                raise PublishError(f"cannot publish to {self.topic}: {e}") from e
        self.sent += 1
        if self.sent % 10_000 == 0:
            self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every queued message is acknowledged; raise if any was refused."""
        remaining = self._producer.flush(timeout_s)
        failed, self.failed = self.failed, 0
        first_error, self.first_error = self.first_error, None
        if remaining:
            raise PublishError(
                f"{remaining} message(s) to {self.topic} still unacknowledged "
                f"after {timeout_s:.0f} s"
            )
        if failed:
            raise PublishError(
                f"{failed} of {self.sent} message(s) to {self.topic} were refused: {first_error}"
            )

    def __enter__(self) -> RawPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
