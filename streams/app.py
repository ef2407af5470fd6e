"""The Faust worker: raw telemetry in, samples, windows and trips durable in TimescaleDB.

Shape of the data at each step::

    raw topic (key elevator id, value contract JSON)          # BatchTopic, batches of Message
      → Ingest.process                                       # IngestBatch: valid messages,
                                                             #   quarantined, windows, trips
      → TimescaleSink.write_batch (in a thread)              # rows durable; samples COPYed
                                                             #   from the original bytes
      → quarantine topic (reason + original bytes)           # refused messages
      → state checkpoint (Faust table changelog)             # per-elevator state
      → ack → Faust commits those offsets

Offsets are committed only for messages whose rows are in TimescaleDB and whose elevator
state is in the changelog, so a worker killed at any point and restarted loses nothing;
what it reprocesses is dropped as duplicate (per-elevator sequence numbers restored from
the changelog) or ignored by the sinks' natural keys, so it duplicates nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from faust.types import Message
from faust.web import Request, Response, View

from detectors.thresholds import ElevatorLimits, load_thresholds
from foundation.contract import replay_run_of
from foundation.kafka_security import faust_credentials
from foundation.settings import Settings

from . import metrics
from .background import keep_serving
from .faust_batching import (
    BatchingApp,
    BatchTopic,
    rewind_lost_changelog_reads,
    seconds_in_recovery,
)
from .grading import GradingError, grade_fleet
from .ingest import Ingest, IngestBatch, RawRecord
from .producer import PublishError, RawPublisher
from .quarantine import quarantine_record
from .sinks import SinkError, TimescaleSink

log = logging.getLogger("tianyan.worker")

#: A sink failure is retried after this pause (TimescaleDB restarting, a network blip);
#: nothing is acknowledged meanwhile, so nothing is lost.
SINK_RETRY_S = 2.0
#: The health endpoint reports unhealthy when no batch loop turn finished for this long,
STALL_S = 30.0
#: or when the table recovery after a rebalance has lasted this long (restoring 12,000
#: elevators' states from their changelog takes seconds; a recovery waiting for records
#: it will never get is first read again, at 15 s: faust_batching.RECOVERY_STALLED_S).
RECOVERY_STALL_S = 300.0


def cohorts_key(partition: int) -> bytes:
    """The state table's key of a partition's cohort models (elevator states are keyed by
    the 20-digit id, so the two never meet); written to that partition of the changelog."""
    return f"cohorts/{partition}".encode()


class RegistryLimits:
    """Each elevator's ratings from the registry, cached; refreshed when the registry changes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._limits: dict[str, ElevatorLimits] = {}
        self._version: tuple[object, ...] | None = None
        self._unknown = ElevatorLimits.unknown()
        self.refresh()

    def refresh(self) -> None:
        import psycopg

        from registry.store import load

        try:
            with psycopg.connect(self.url) as conn:
                version = conn.execute(
                    "SELECT count(*), max(updated_at) FROM tianyan.elevator"
                ).fetchone()
            if version == self._version:
                return
            self._limits = {e.registration_code: ElevatorLimits.of(e) for e in load(self.url)}
            self._version = version
            log.info("registry loaded", extra={"elevators": len(self._limits)})
        except psycopg.Error as e:
            # Keep the limits we have; unknown elevators get the conservative defaults.
            log.error("registry refresh failed", extra={"error": str(e)})

    def get(self, elevator_id: str) -> ElevatorLimits:
        return self._limits.get(elevator_id, self._unknown)

    def known(self, elevator_id: str) -> bool:
        """Whether the elevator is in the registry (as of the last refresh)."""
        return elevator_id in self._limits


class Worker:
    """The ingest loop and its state, bound to one Faust app."""

    def __init__(self, app: BatchingApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.raw = BatchTopic(
            app,
            topics=[settings.raw_topic],
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.raw_partitions,
            batch_size=settings.batch_messages,
            # A batch being folded, one filling, one spare: with ten, a backlog's read-ahead
            # was most of the worker's memory (bench stream, 4,000 elevators: peak RSS 650 ->
            # 417 MB, throughput unchanged).
            buffer_maxsize=settings.batch_messages * 3,
        )
        # Keys and values are bytes as written (elevator id; the state's MessagePack):
        # bytes types make Faust's changelog serializers "raw", so recovery returns them
        # unchanged.
        self.state_table = app.Table(
            "elevator-state", partitions=settings.raw_partitions, key_type=bytes, value_type=bytes
        )
        self.limits = RegistryLimits(settings.database_url)
        self.ingest = Ingest(
            settings.grace_ms,
            load_state=self._load_state,
            limits_for=self.limits.get if settings.detectors_enabled else None,
            thresholds=load_thresholds(settings.thresholds_file),
            # Injected for silence alone: a partition none of whose terminals has sent
            # anything for a heartbeat timeout of wall time (see streams.ingest.Ingest).
            wall_clock_ms=lambda: time.time() * 1000.0,
            # With TIANYAN_REGISTERED_ONLY, an id not in the registry makes no state.
            is_registered=self.limits.known if settings.registered_only else None,
            # Cars silent long after their device_offline: state dropped, checkpoint kept.
            evict_silent=True,
            # Each partition's cohort models, checkpointed with its elevators' states.
            load_cohorts=self._load_cohorts,
        )
        self.sink = TimescaleSink(settings.database_url)
        # Quarantine and state changelog, flushed together at each checkpoint.
        self.producer = RawPublisher(
            settings.kafka_bootstrap,
            settings.quarantine_topic,
            linger_ms=5,
            delivery_timeout_ms=settings.kafka_delivery_timeout_ms,
            security=settings.kafka_security,
        )
        self.last_turn = time.monotonic()
        self._dirty: dict[str, int] = {}
        #: Partitions whose cohort models changed since the last checkpoint.
        self._dirty_cohorts: set[int] = set()
        #: States evicted from memory (silent cars reported offline): elevator id →
        #: (partition, final checkpoint), sent to the changelog at the next checkpoint.
        self._evicted: dict[str, tuple[int, bytes]] = {}
        self._held: list[Message] = []
        self._checkpoint_due = 0.0
        #: Raw-topic partitions a rebalance took away, forgotten at the loop's next turn.
        self._revoked: set[int] = set()

    # -- state ----------------------------------------------------------------------------------
    def _load_state(self, elevator_id: str) -> bytes | None:
        raw: bytes | None = self.state_table.data.get(elevator_id.encode())
        if raw is not None:
            metrics.STATES_RESTORED.inc()
        return raw

    def _load_cohorts(self, partition: int) -> bytes | None:
        raw: bytes | None = self.state_table.data.get(cohorts_key(partition))
        return raw

    async def checkpoint(self) -> None:
        """Write changed elevator states to the changelog, then acknowledge what they cover.

        The changelog is written with the same producer as the quarantine and the alerts, and
        all are flushed (every record acknowledged by Kafka) before any offset is
        acknowledged. A record Kafka reported failed stays with the producer and is sent
        again by the next flush: the offsets wait until it is in Kafka.
        Faust recovers the table from this changelog as from any other; its own buffered
        ``send_soon`` cannot be awaited to durability, so it is not used here.
        """
        table = self.state_table
        changelog = table.changelog_topic.get_topic_name()
        for elevator_id, (partition, value) in self._evicted.items():
            self.producer.publish(elevator_id.encode(), value, topic=changelog, partition=partition)
        self._evicted.clear()
        for elevator_id, partition in self._dirty.items():
            state = self.ingest.states.get(elevator_id)
            if state is None:  # its partition went to another worker since
                continue
            key = elevator_id.encode()
            value = state.encode()
            table.data[key] = value
            self.producer.publish(key, value, topic=changelog, partition=partition)
        self._dirty.clear()
        for partition in self._dirty_cohorts:
            models = self.ingest.cohort_checkpoint(partition)
            if models is None:  # its partition went to another worker since
                continue
            key = cohorts_key(partition)
            table.data[key] = models
            self.producer.publish(key, models, topic=changelog, partition=partition)
        self._dirty_cohorts.clear()
        while True:
            try:
                await asyncio.to_thread(self.producer.flush, 30.0)
                break
            except PublishError as e:
                # Not acknowledged: nothing is committed. Kafka back: try again.
                log.error("checkpoint not durable; retrying", extra={"error": str(e)})
                await asyncio.sleep(SINK_RETRY_S)
        consumer = self.app.consumer
        for message in self._held:
            message.ack(consumer)
        metrics.CHECKPOINTS.inc()
        self._held = []
        self._checkpoint_due = time.monotonic() + self.settings.checkpoint_interval_s

    def partitions_revoked(self, partitions: Iterable[int]) -> None:
        """A rebalance took these raw-topic partitions away (Faust's signal, on the event
        loop): their states and clocks are forgotten at the loop's next turn, never while a
        fold runs. Left cached, a revoked partition's clock ran on with the wall clock and
        raised ``device_offline`` for every car now served by another worker."""
        self._revoked.update(partitions)

    def _forget_revoked(self) -> None:
        revoked, self._revoked = self._revoked, set()
        # Their unsaved changes (silence judged since the last checkpoint) are the new
        # owner's to make again: it judges the same silences at the same stream times.
        self._dirty = {e: p for e, p in self._dirty.items() if p not in revoked}
        self._dirty_cohorts -= revoked
        self._evicted = {e: v for e, v in self._evicted.items() if v[0] not in revoked}
        self.ingest.forget_partitions(revoked)
        metrics.ELEVATOR_STATES.set(len(self.ingest.states))

    def _process(self, records: list[RawRecord]) -> IngestBatch:
        batch = self.ingest.process(records)
        # Silence (a terminal offline) needs no message: judged after every batch, at each
        # partition's stream time, on the same path as evaluation (Ingest.tick).
        ticked = self.ingest.tick()
        batch.alerts.extend(ticked.alerts)
        for elevator_id, partition in ticked.touched.items():
            batch.touched.setdefault(elevator_id, partition)
        # An evicted car's final state goes to the table at once (a message from it in the
        # next batch restores it from there) and to the changelog at the next checkpoint.
        for elevator_id, (partition, value) in ticked.evicted.items():
            self.state_table.data[elevator_id.encode()] = value
            self._evicted[elevator_id] = (partition, value)
        if ticked.evicted:
            metrics.STATES_EVICTED.inc(len(ticked.evicted))
            metrics.ELEVATOR_STATES.set(len(self.ingest.states))
        return batch

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        linger_s = self.settings.batch_linger_ms / 1000
        pending_write: asyncio.Task[tuple[IngestBatch, list[Message]]] | None = None
        while not self.app.should_stop:
            batch = await self.raw.take(linger_s)
            self.last_turn = time.monotonic()
            generation = self.app.consumer_generation_id
            # Messages fetched before a rebalance belong to the previous assignment.
            batch = [m for m in batch if m.generation_id == generation]
            consumer = self.app.consumer
            for m in batch:
                consumer.track_message(m)
            # The record timestamp (the producer's send time, or the broker's append time)
            # is when the message arrived: each terminal's clock is judged against it.
            records = [
                RawRecord(
                    m.key,
                    m.value or b"",
                    m.partition,
                    m.offset,
                    round(m.timestamp * 1000),
                    replay_run_of(m.headers),
                )
                for m in batch
            ]
            if self._revoked:
                if pending_write is not None:  # its states are marked dirty first
                    await self._finish(await pending_write)
                    pending_write = None
                self._forget_revoked()
            # Folding runs in a thread so the event loop keeps taking deliveries from Kafka
            # meanwhile; nothing else touches the ingest state (silence is checked here too).
            processed = await asyncio.to_thread(self._process, records)
            # One write in flight: PostgreSQL inserts batch N while Python folds N + 1.
            if pending_write is not None:
                await self._finish(await pending_write)
                pending_write = None
            if processed.messages or processed.alerts or batch:
                pending_write = asyncio.ensure_future(self._write(processed, batch))
            # In a rebalance Faust waits for every tracked message to be acknowledged
            # before it commits and hands partitions over: checkpoint at once then.
            if self._held and (time.monotonic() >= self._checkpoint_due or self.app.rebalancing):
                if pending_write is not None:
                    await self._finish(await pending_write)
                    pending_write = None
                await self.checkpoint()

    async def _write(
        self, batch: IngestBatch, messages: list[Message]
    ) -> tuple[IngestBatch, list[Message]]:
        while True:
            started = time.perf_counter()
            try:
                result = await asyncio.to_thread(
                    self.sink.write_batch,
                    batch.messages,
                    batch.windows,
                    batch.trips,
                    batch.alerts,
                    originals=batch.originals(),
                    maintenance_sessions=batch.maintenance_sessions,
                )
            except SinkError as e:
                metrics.SINK_ERRORS.inc()
                log.error("sink write failed; retrying", extra={"error": str(e)})
                if self.app.should_stop:
                    # Shutting down: leave the batch unacknowledged; it is re-read on start.
                    raise asyncio.CancelledError() from e
                await asyncio.sleep(SINK_RETRY_S)
                continue
            metrics.BATCH_WRITE_SECONDS.observe(time.perf_counter() - started)
            # Messages the database refused for their data: to the quarantine, not retried.
            batch.quarantine_refused(result.refused)
            durable_ms = time.time() * 1000
            observe = metrics.SAMPLE_TO_DURABLE_SECONDS.observe
            for m in batch.messages:
                observe((durable_ms - m.samples.t_ms[-1]) / 1000)
            metrics.ROWS_WRITTEN.labels("samples").inc(result.samples)
            metrics.ROWS_WRITTEN.labels("windows").inc(result.windows)
            metrics.ROWS_WRITTEN.labels("trips").inc(result.trips)
            metrics.ROWS_WRITTEN.labels("maintenance_sessions").inc(result.maintenance_sessions)
            return batch, messages

    async def _finish(self, done: tuple[IngestBatch, list[Message]]) -> None:
        batch, messages = done
        for record, reason in batch.quarantined:
            key, value, headers = quarantine_record(record, reason)
            self.producer.publish(key, value, headers=headers)
        for alert in batch.alerts:
            self.producer.publish(
                alert.elevator_id.encode(),
                msgspec.json.encode(alert),
                topic=self.settings.alerts_topic,
            )
        metrics.ALERTS.inc(len(batch.alerts))
        for elevator_id, partition in batch.touched.items():
            self._dirty[elevator_id] = partition
        self._dirty_cohorts |= batch.cohorts_touched
        self._held.extend(messages)
        metrics.MESSAGES.inc(len(batch.messages))
        metrics.ELEVATOR_STATES.set(len(self.ingest.states))
        metrics.SAMPLES.inc(batch.samples)
        metrics.QUARANTINED.inc(len(batch.quarantined))
        metrics.UNREGISTERED.inc(batch.unregistered)
        metrics.DUPLICATES.inc(batch.duplicates)
        metrics.SEQ_RESTARTS.inc(batch.seq_restarts)
        metrics.LATE_SAMPLES.inc(batch.late_samples)
        metrics.CLOCK_CORRECTED.inc(batch.clock_corrected)
        metrics.CLOCK_REBASED.inc(batch.clock_rebased)
        metrics.CLOCK_FAULTS.inc(
            sum(1 for a in batch.alerts if a.alert_type == "clock_fault" and a.state == "raised")
        )
        if batch.quarantined:
            log.warning(
                "quarantined messages",
                extra={"count": len(batch.quarantined), "first_reason": batch.quarantined[0][1]},
            )


#: The worker's garbage-collector thresholds. A batch allocates tens of thousands of
#: short-lived objects (decoded messages, rows); with CPython's default (700, 10, 10) a young
#: collection ran every 700 allocations and every 100th an old one over every elevator's
#: state. Few, larger young collections cost far less; the reference cycles a worker makes
#: are few, and memory is measured by `tianyan bench stream`.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Before a worker's loop: what was loaded so far (modules, the registry, thresholds)
    moves out of the collector's sight for good, and :data:`GC_THRESHOLDS` applies."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(settings: Settings) -> tuple[BatchingApp, Worker]:
    """The Faust app and its worker loop, configured from ``settings``."""
    app = BatchingApp(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings.kafka_security),
        store="memory://",
        datadir=settings.faust_datadir(settings.worker_id),
        topic_partitions=settings.raw_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_bind="127.0.0.1",
        web_port=settings.worker_web_port,
        web_in_thread=False,
        broker_max_poll_records=settings.batch_messages,
        broker_commit_every=None,
        broker_commit_interval=1.0,
        # A worker killed without leaving the group holds its partitions until its session
        # times out: keep that short so a restarted or surviving worker takes over soon.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        table_cleanup_interval=3600.0,
    )
    worker = Worker(app, settings)
    # Registered before the app starts, so the first subscription includes it.
    app.topics.add(worker.raw)

    @app.task
    async def ingest() -> None:
        await worker.run()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        (revoked,) = args  # a set of TP: (topic, partition)
        worker.partitions_revoked(tp.partition for tp in revoked if tp.topic == settings.raw_topic)

    def survive(task: str) -> Any:
        return keep_serving(task, metrics.BACKGROUND_ERRORS, log)

    @app.timer(interval=5.0)
    @survive("recovery_watch")
    async def recovery_watch() -> None:
        # Changelog records fetched but never applied leave the table recovery, and every
        # partition of this worker, waiting for ever: read them again.
        lost = await rewind_lost_changelog_reads(app)
        metrics.RECOVERY_REWINDS.inc(len(lost))

    @app.timer(interval=60.0)
    @survive("registry_refresh")
    async def registry_refresh() -> None:
        await asyncio.to_thread(worker.limits.refresh)

    @app.timer(interval=3600.0)
    @survive("retention")
    async def retention() -> None:
        dropped = await asyncio.to_thread(_drop_old_raw_chunks, settings)
        metrics.CHUNKS_DROPPED.inc(dropped)
        packed = await asyncio.to_thread(_pack_raw_chunks, settings)
        metrics.CHUNKS_PACKED.inc(packed)

    if settings.grading_interval_s > 0:

        @app.timer(interval=float(settings.grading_interval_s))
        @survive("risk_grading")
        async def risk_grading() -> None:
            # With several workers only the one that takes the grading lock grades.
            now = dt.datetime.now(dt.UTC)
            th = worker.ingest.thresholds
            try:
                summary = await asyncio.to_thread(
                    grade_fleet, settings.database_url, now, th, skip_if_busy=True
                )
            except GradingError as e:
                log.error("risk grading failed", extra={"error": str(e)})
                return
            if not summary.skipped:
                log.info("risk graded", extra=summary.to_dict())

    @app.page("/metrics")
    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            metrics.update_lag(app)
            metrics.UNREADABLE_STATES.set(worker.ingest.unreadable_states)
            body, content_type = metrics.exposition()
            return self.bytes(body, content_type=content_type)

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            now = time.monotonic()
            # A worker whose table recovery lasts folds nothing for the partitions it holds.
            recovering_s = seconds_in_recovery(app)
            stalled = now - worker.last_turn > STALL_S or recovering_s > RECOVERY_STALL_S
            return self.json(
                {
                    "ok": not stalled,
                    "seconds_since_last_batch": round(now - worker.last_turn, 1),
                    "seconds_in_table_recovery": round(recovering_s, 1),
                },
                status=503 if stalled else 200,
            )

    return app, worker


def _pack_raw_chunks(settings: Settings) -> int:
    """Pack raw-sample chunks older than ``raw_pack_after_minutes`` into elevator-minute
    rows (migration 0012); returns the chunks packed."""
    import psycopg

    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT tianyan.pack_raw_chunks(%s)", [settings.raw_pack_after_minutes]
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _drop_old_raw_chunks(settings: Settings) -> int:
    import psycopg

    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT tianyan.drop_old_raw_chunks(%s)", [settings.raw_retention_days]
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
