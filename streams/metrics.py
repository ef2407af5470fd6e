"""The worker's Prometheus metrics (served at ``/metrics`` by the Faust web server)."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry()

MESSAGES = Counter("tianyan_messages_total", "Valid, new raw messages processed", registry=REGISTRY)
SAMPLES = Counter("tianyan_samples_total", "Samples in those messages", registry=REGISTRY)
ALERTS = Counter(
    "tianyan_alerts_total", "Alerts raised or cleared by the detectors", registry=REGISTRY
)
QUARANTINED = Counter(
    "tianyan_quarantined_total",
    "Messages refused by the contract or the database and sent to the quarantine topic",
    registry=REGISTRY,
)
DUPLICATES = Counter(
    "tianyan_duplicates_total",
    "Messages dropped as exact duplicates (same elevator and seq)",
    registry=REGISTRY,
)
SEQ_RESTARTS = Counter(
    "tianyan_seq_restarts_total",
    "Messages whose seq went back while their terminal's own time moved on (a terminal that "
    "restarted its count); its de-duplication starts afresh",
    registry=REGISTRY,
)
CLOCK_CORRECTED = Counter(
    "tianyan_clock_corrected_total",
    "Messages whose sample times were corrected for their terminal's clock offset",
    registry=REGISTRY,
)
CLOCK_REBASED = Counter(
    "tianyan_clock_rebased_total",
    "Elevators whose rule state started again because their terminal's times were corrected "
    "back by more than clock_rebase_s (a clock trusted ahead before it could be judged)",
    registry=REGISTRY,
)
CLOCK_FAULTS = Counter(
    "tianyan_clock_faults_total",
    "clock_fault episodes raised (a terminal clock off by more than clock_offset_tolerance_s)",
    registry=REGISTRY,
)
LATE_SAMPLES = Counter(
    "tianyan_late_samples_total",
    "Samples later than the grace period: stored raw, not re-windowed",
    registry=REGISTRY,
)
ROWS_WRITTEN = Counter(
    "tianyan_rows_written_total", "New rows written to TimescaleDB", ["table"], registry=REGISTRY
)
SINK_ERRORS = Counter(
    "tianyan_sink_errors_total", "Failed batch writes (retried)", registry=REGISTRY
)
BATCH_WRITE_SECONDS = Histogram(
    "tianyan_batch_write_seconds",
    "Time to write one batch to TimescaleDB",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
SAMPLE_TO_DURABLE_SECONDS = Histogram(
    "tianyan_sample_to_durable_seconds",
    "From a message's last sample time (terminal clock) to its rows being committed",
    buckets=(
        0.1,
        0.2,
        0.3,
        0.4,
        0.5,
        0.6,
        0.8,
        1.0,
        1.25,
        1.5,
        2.0,
        2.5,
        3.0,
        4.0,
        5.0,
        7.5,
        10.0,
        20.0,
        60.0,
    ),
    registry=REGISTRY,
)
CHECKPOINTS = Counter(
    "tianyan_checkpoints_total",
    "State checkpoints (changelog flushed, offsets acknowledged)",
    registry=REGISTRY,
)
RECOVERY_REWINDS = Counter(
    "tianyan_recovery_rewinds_total",
    "Changelog partitions read again because their fetched records never reached the table"
    " recovery after a rebalance (streams.faust_batching.rewind_lost_changelog_reads)",
    registry=REGISTRY,
)
STATES_RESTORED = Counter(
    "tianyan_states_restored_total",
    "Elevator states loaded from the table (recovered from the changelog)",
    registry=REGISTRY,
)
UNREGISTERED = Counter(
    "tianyan_unregistered_messages_total",
    "Messages quarantined because their elevator is not in the registry"
    " (TIANYAN_REGISTERED_ONLY); no state is made for them",
    registry=REGISTRY,
)
STATES_EVICTED = Counter(
    "tianyan_states_evicted_total",
    "Elevator states dropped from memory: cars silent beyond state_eviction_after_s and"
    " reported offline (their last checkpoint stays in the table)",
    registry=REGISTRY,
)
ELEVATOR_STATES = Gauge(
    "tianyan_elevator_states",
    "Elevator states held in memory (those of the partitions this worker reads)",
    registry=REGISTRY,
)
UNREADABLE_STATES = Gauge(
    "tianyan_unreadable_states",
    "Saved elevator states this version could not read (started afresh)",
    registry=REGISTRY,
)
CHUNKS_DROPPED = Counter(
    "tianyan_raw_chunks_dropped_total", "Raw-sample chunks dropped by retention", registry=REGISTRY
)
CHUNKS_PACKED = Counter(
    "tianyan_raw_chunks_packed_total",
    "Raw-sample chunks packed into elevator-minute rows",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "tianyan_consumer_lag_messages",
    "Messages between the committed offset and the end of each partition",
    ["topic", "partition"],
    registry=REGISTRY,
)


READ_LAG = Gauge(
    "tianyan_consumer_read_lag_messages",
    "Messages between the last one the worker read and the end of each partition (what it "
    "has yet to see; the committed lag adds what it saw but has not checkpointed)",
    ["topic", "partition"],
    registry=REGISTRY,
)


def update_lag(app: Any) -> None:
    """Refresh the lag gauges from the Faust consumer's view of its assignment."""
    consumer = app.consumer
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        committed = consumer._committed_offset.get(tp)
        read = consumer._read_offset.get(tp)
        lag = highwater - (committed + 1 if committed is not None else 0)
        CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(lag, 0))
        read_lag = highwater - (read + 1 if read is not None else 0)
        READ_LAG.labels(tp.topic, str(tp.partition)).set(max(read_lag, 0))


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The body and content type of ``/metrics`` for ``registry``."""
    # aiohttp takes the charset separately: drop it from Prometheus' content type.
    return generate_latest(registry), CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"


BACKGROUND_ERRORS = Counter(
    "tianyan_background_errors_total",
    "Failures of a background task (timer), logged and survived; by task",
    ["task"],
    registry=REGISTRY,
)
