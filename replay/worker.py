"""The replay worker: the one detection loop (:class:`streams.ingest.Ingest`) over one replay
run's topic, its alerts into ``replay_alert`` under the run id.

Shape of the data::

    run topic (key elevator id, value contract JSON, header tianyan-replay-run = RUN)
      → Ingest.process, Ingest.tick              # the live worker's validation, folds,
                                                 #   detectors; thresholds of this process
      → replay_alert (run id, alert)             # never `alert`, never the alerts topic

Nothing else is written: the samples, windows and trips replayed are already stored (a
replay re-reads them), and no alert of a run reaches the dispatcher, so no incident,
webhook or device command comes of it. The worker reads the run from its first offset under
a consumer group of its own and finishes once the run is published (``replay_run``) and
read to its end. Its detector state is not checkpointed: killed, it is started again and
reads the run from the beginning; the run's alerts are keyed by their ids, so nothing is
stored twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from detectors.alerts import Alert
from detectors.thresholds import Thresholds
from foundation.contract import replay_run_of
from foundation.kafka_security import confluent_config
from foundation.settings import Settings
from streams.app import RegistryLimits
from streams.ingest import Ingest, RawRecord
from streams.sinks.alerts import ALERT_COLUMNS, alert_row

from .runs import is_published, load_run, record_detection, thresholds_json

log = logging.getLogger("tianyan.replay.worker")

_INSERT = (
    f"INSERT INTO tianyan.replay_alert (run_id, {', '.join(ALERT_COLUMNS)})"
    f" VALUES (%s, {', '.join(['%s'] * len(ALERT_COLUMNS))}) ON CONFLICT DO NOTHING"
)


class ReplayWorkerError(RuntimeError):
    """The replay worker cannot read its run; the message says what is wrong."""


@dataclass(frozen=True)
class ReplayDetection:
    """What a replay worker did with its run (printed as its last line, JSON)."""

    run_id: str
    topic: str
    consumer_group: str
    records: int
    messages: int
    duplicates: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    #: Records on the run's topic without the run's header (published there by hand):
    #: not the run's, not detected on, counted here.
    not_of_this_run: int
    alerts_raised: int
    alerts_cleared: int
    alerts_stored: int
    wall_s: float
    records_per_s: float

    def as_json(self) -> str:
        return json.dumps(asdict(self))


def consumer_group(settings: Settings, run_id: str) -> str:
    """The replay worker's own consumer group: never the live worker's."""
    return f"{settings.worker_id}.replay.{run_id}"


def detect_run(
    settings: Settings,
    run_id: str,
    thresholds: Thresholds,
    *,
    thresholds_file: Path | None = None,
    batch_messages: int = 2_000,
    unpublished_wait_s: float = 600.0,
) -> ReplayDetection:
    """Run the detectors over the run's topic with ``thresholds``; store its alerts.

    Returns once the run is published and read to its end.

    Raises
    ------
    ReplayWorkerError
        The run's topic is missing, Kafka reports an error, or nothing came for
        ``unpublished_wait_s`` while the run was still not published (its replay died).
    replay.runs.ReplayRunError
        The run is unknown.
    """
    url = settings.database_url
    run = load_run(url, run_id)
    group = consumer_group(settings, run_id)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **confluent_config(settings.kafka_security),
        }
    )
    started = time.perf_counter()
    try:
        # Started before its `tianyan replay` made the run's topic: wait for it a while.
        waited_since = time.monotonic()
        while (partitions := _partitions(consumer, run.topic)) is None:
            if is_published(url, run_id) or time.monotonic() - waited_since > unpublished_wait_s:
                raise ReplayWorkerError(
                    f"the run's topic {run.topic} does not exist (was the run published to"
                    " another --topic? a replay worker reads only its run's own topic)"
                )
            time.sleep(1.0)
        consumer.assign([TopicPartition(run.topic, p, OFFSET_BEGINNING) for p in partitions])
        limits = RegistryLimits(url)
        ingest = Ingest(
            settings.grace_ms,
            limits_for=limits.get if settings.detectors_enabled else None,
            thresholds=thresholds,
            # History: judged at its own sample times only. The wall clock would move a
            # partition's time on between records published faster or slower than real time
            # (spurious device_offline), and arrival times say nothing of a stored sample's
            # clock (the live worker judged and corrected it before storing it).
            wall_clock_ms=None,
            is_registered=limits.known if settings.registered_only else None,
        )
        seen: set[str] = set()
        counts: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        idle_since = time.monotonic()
        with psycopg.connect(url) as conn:
            while True:
                polled = consumer.consume(num_messages=batch_messages, timeout=1.0)
                records = []
                for m in polled:
                    if m.error() is not None:
                        raise ReplayWorkerError(f"{run.topic}: {m.error()}")
                    counts["records"] += 1
                    if replay_run_of(m.headers()) != run_id:
                        counts["not_of_this_run"] += 1
                        continue
                    records.append(
                        RawRecord(m.key(), m.value() or b"", m.partition(), m.offset() or 0)
                    )
                if records:
                    batch = ingest.process(records)
                    batch.alerts.extend(ingest.tick().alerts)
                    counts["messages"] += len(batch.messages)
                    seen.update(batch.touched)
                    counts["duplicates"] += batch.duplicates
                    counts["quarantined"] += len(batch.quarantined)
                    reasons.update(reason[:120] for _, reason in batch.quarantined)
                    _store(conn, run_id, batch.alerts, counts)
                if polled:
                    idle_since = time.monotonic()
                    continue
                # Published first, then caught up: the watermarks read after the run is
                # published are its last.
                if is_published(url, run_id):
                    if _caught_up(consumer, run.topic, partitions):
                        break
                elif time.monotonic() - idle_since > unpublished_wait_s:
                    raise ReplayWorkerError(
                        f"replay run {run_id!r}: nothing came for {unpublished_wait_s:.0f} s and"
                        " the run is still not published (did its `tianyan replay` stop?)"
                    )
            # The stream has ended: every partition judged at its last time.
            _store(conn, run_id, ingest.tick().alerts, counts)
        if partitions:
            consumer.commit(asynchronous=False)
    except KafkaException as e:
        raise ReplayWorkerError(f"{run.topic}: {e}") from e
    finally:
        consumer.close()
    record_detection(
        url,
        run_id,
        thresholds_json(thresholds),
        str(thresholds_file) if thresholds_file else None,
        seen,
    )
    wall = time.perf_counter() - started
    return ReplayDetection(
        run_id,
        run.topic,
        group,
        counts["records"],
        counts["messages"],
        counts["duplicates"],
        counts["quarantined"],
        dict(reasons),
        counts["not_of_this_run"],
        counts["raised"],
        counts["cleared"],
        counts["stored"],
        round(wall, 3),
        round(counts["records"] / wall if wall else 0.0, 1),
    )


def _store(
    conn: psycopg.Connection, run_id: str, alerts: Sequence[Alert], counts: Counter[str]
) -> None:
    if not alerts:
        return
    for a in alerts:
        counts[a.state] += 1
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_INSERT, [(run_id, *alert_row(a)) for a in alerts])
        counts["stored"] += max(cur.rowcount, 0)


def _partitions(consumer: Consumer, topic: str) -> list[int] | None:
    """The topic's partitions; None while it does not exist."""
    metadata = consumer.list_topics(topic, timeout=30)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        return None
    return sorted(found.partitions)


def _caught_up(consumer: Consumer, topic: str, partitions: list[int]) -> bool:
    positions = consumer.position([TopicPartition(topic, p) for p in partitions])
    for tp in positions:
        low, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        at = tp.offset if tp.offset >= 0 else low
        if at < high:
            return False
    return True
