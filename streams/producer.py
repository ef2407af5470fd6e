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

import time
from dataclasses import dataclass
from types import TracebackType

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from foundation.kafka_security import KafkaSecurity, confluent_config

#: How long a topic missing from the broker's metadata is asked for again before it is
#: refused: one created a moment ago (by `tianyan topics ensure`, a test) may not be there
#: yet. (A test's topic, created just before, was refused once in a new clone.)
TOPIC_APPEARS_S = 5.0


class PublishError(RuntimeError):
    """Kafka did not accept some messages; the count and first reason say which."""


Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None


@dataclass(frozen=True)
class _Unacknowledged:
    """A record Kafka reported failed, kept to be sent again."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers


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
    delivery_timeout_ms
        How long the client retries a record before reporting it failed (librdkafka's
        ``message.timeout.ms``). A failed record is not forgotten: :meth:`flush` sends it
        again, and raises until every record is acknowledged.
    security
        TLS and SASL (``settings.kafka_security``); None: plaintext.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: int = 20,
        delivery_timeout_ms: int = 300_000,
        security: KafkaSecurity | None = None,
    ) -> None:
        if not topic:
            raise ValueError("topic: a topic name is required")
        self.topic = topic
        self.sent = 0
        self.first_error: str | None = None
        # Failed records, in the order they failed: kept until Kafka acknowledges them.
        self._unacknowledged: list[_Unacknowledged] = []
        # A fatal error of the idempotent producer (an out-of-order sequence after records
        # timed out in an outage, say): the client must be replaced before it can send again.
        self._fatal: KafkaError | None = None
        self._config = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "message.max.bytes": 1_048_576,
            "message.timeout.ms": delivery_timeout_ms,
            "client.id": "tianyan-publisher",
            # The Java client's (and kafka-python's) partitioner: an elevator's messages
            # land on the same partition whichever client a terminal or tool uses.
            "partitioner": "murmur2_random",
            "error_cb": self._on_error,
            **confluent_config(security or KafkaSecurity()),
        }
        self._producer = Producer(self._config)
        # A topic created a moment ago may not be in the broker's metadata yet (no leader
        # yet, or not known at all): asked again for a few seconds before it is refused.
        deadline = time.monotonic() + TOPIC_APPEARS_S
        while True:
            try:
                metadata = self._producer.list_topics(topic, timeout=10)
            except KafkaException as e:
                raise PublishError(f"Kafka does not answer at {bootstrap}: {e}") from e
            topic_md = metadata.topics.get(topic)
            settling = topic_md is None or (
                topic_md.error is not None
                and topic_md.error.code()
                in (KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART)
            )
            if not settling or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if (
            topic_md is not None
            and topic_md.error is not None
            and topic_md.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        ):
            raise PublishError(
                f"not allowed to publish to {topic!r} on {bootstrap}: the Kafka user "
                f"{(security or KafkaSecurity()).sasl_username or '(none)'} has no ACL for it"
            )
        if topic_md is None or topic_md.error is not None:
            raise PublishError(
                f"topic {topic!r} does not exist on {bootstrap} "
                "(create the pipeline's topics with `tianyan topics ensure`)"
            )

    @property
    def failed(self) -> int:
        """Records Kafka reported failed and not yet acknowledged on a later send."""
        return len(self._unacknowledged)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            if err.fatal():
                self._fatal = err
            if self.first_error is None:
                self.first_error = str(err)
            self._unacknowledged.append(
                _Unacknowledged(
                    msg.topic() or self.topic,
                    msg.partition(),
                    msg.key(),
                    msg.value(),
                    msg.headers(),
                )
            )

    def publish(
        self,
        key: bytes,
        value: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        headers: Headers = None,
    ) -> None:
        """Queue one message; blocks only while the client's queue is full.

        ``topic`` defaults to the publisher's topic, ``partition`` to the one the key
        hashes to.
        """
        self._produce(topic or self.topic, key, value, partition, headers)
        self.sent += 1
        if self.sent % 10_000 == 0:
            self._producer.poll(0)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Headers,
    ) -> None:
        while True:
            try:
                if partition is None:
                    self._producer.produce(
                        topic, key=key, value=value, headers=headers, on_delivery=self._on_delivery
                    )
                else:
                    self._producer.produce(
                        topic,
                        key=key,
                        value=value,
                        partition=partition,
                        headers=headers,
                        on_delivery=self._on_delivery,
                    )
                return
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as e:
                raise PublishError(f"cannot publish to {topic}: {e}") from e

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every record published so far is acknowledged by Kafka.

        Records Kafka reported failed (a broker unreachable past the delivery timeout) are
        sent again first, to the partition they were meant for, so a caller that retries
        ``flush`` after :class:`PublishError` acknowledges its inputs only once every record
        made from them is in Kafka. Call :meth:`discard_failed` to give them up instead.

        Raises
        ------
        PublishError
            when records are still unacknowledged after ``timeout_s`` or were refused; they
            stay queued for the next ``flush``.
        """
        if self._fatal is not None:
            # Everything the old client still held is failed back to us by its purge; a new
            # client (a new producer id, sequences from zero) sends it all again.
            old, self._fatal = self._producer, None
            old.purge(in_queue=True, in_flight=True)
            old.poll(0)
            old.flush(0)
            self._producer = Producer(self._config)
        retry, self._unacknowledged = self._unacknowledged, []
        for r in retry:
            self._produce(r.topic, r.key, r.value, r.partition, r.headers)
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise PublishError(
                f"{remaining} message(s) to {self.topic} still unacknowledged "
                f"after {timeout_s:.0f} s"
            )
        if self._unacknowledged:
            first_error, self.first_error = self.first_error, None
            raise PublishError(
                f"{self.failed} of {self.sent} message(s) to {self.topic} were not accepted"
                f" (kept, sent again on the next flush): {first_error}"
            )
        self.first_error = None

    def discard_failed(self) -> int:
        """Forget the failed records (their sender will publish them anew); how many."""
        n, self._unacknowledged = len(self._unacknowledged), []
        self.first_error = None
        return n

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
