"""The demo: a round trip through the real stack, terminal → Kafka → validation → TimescaleDB.

Three elevators each send one trip's worth of 10 Hz batches, plus one malformed message
that the contract refuses with a reason. The messages are read back from Kafka, validated,
stored with the same sink the pipeline uses, and counted in TimescaleDB.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from foundation import contract
from foundation.contract import Samples, TelemetryMessage
from foundation.kafka_security import kafka_python_config
from foundation.settings import Settings
from streams.producer import RawPublisher
from streams.sinks import TimescaleSink
from streams.topics import ensure_topics, topic_specs

SAMPLE_HZ = 10
FLOOR_HEIGHT_M = 3.0
#: Lianyungang's administrative division code (320700) leads the demo registration codes.
DEMO_ELEVATORS = tuple(f"3207000000000000{n:04d}" for n in (1, 2, 3))


@dataclass(frozen=True)
class DemoResult:
    produced: int
    consumed: int
    rejected: list[str]
    samples_written: int
    rows_in_database: int
    seconds: float


def trip_messages(
    elevator_id: str,
    start_ms: int,
    accel_mps2: float = 0.8,
    cruise_mps: float = 1.6,
    cruise_s: float = 2.0,
) -> list[TelemetryMessage]:
    """One up trip (accelerate, cruise, brake) as one-second batches of 10 Hz samples."""
    ramp_s = cruise_mps / accel_mps2
    total_s = 2 * ramp_s + cruise_s
    n = int(total_s * SAMPLE_HZ) + 1
    ts, speeds, accels, positions = [], [], [], []
    pos = 0.0
    for i in range(n):
        t = i / SAMPLE_HZ
        if t < ramp_s:
            a, v = accel_mps2, accel_mps2 * t
        elif t < ramp_s + cruise_s:
            a, v = 0.0, cruise_mps
        else:
            a, v = -accel_mps2, max(0.0, cruise_mps - accel_mps2 * (t - ramp_s - cruise_s))
        if i:
            pos += v / SAMPLE_HZ
        ts.append(start_ms + i * 1000 // SAMPLE_HZ)
        speeds.append(round(v, 3))
        accels.append(a)
        positions.append(round(pos, 3))
    messages = []
    for seq, lo in enumerate(range(0, n, SAMPLE_HZ)):
        hi = min(lo + SAMPLE_HZ, n)
        k = hi - lo
        moving = [speeds[i] > 0 for i in range(lo, hi)]
        messages.append(
            TelemetryMessage(
                schema=contract.SCHEMA_NAME,
                elevator_id=elevator_id,
                seq=seq,
                kind="batch",
                samples=Samples(
                    t_ms=ts[lo:hi],
                    speed_mps=speeds[lo:hi],
                    accel_mps2=accels[lo:hi],
                    position_m=positions[lo:hi],
                    floor=[1 + round(p / FLOOR_HEIGHT_M) for p in positions[lo:hi]],
                    direction=[1 if mv else 0 for mv in moving],
                    load_kg=[150.0] * k,
                    door=[0] * k,
                    door_zone=[not mv for mv in moving],
                    leveling_offset_mm=[0.0] * k,
                    passengers=[True] * k,
                    alarm=[False] * k,
                    service_mode=[1] * k,
                ),
            )
        )
    return messages


def run(settings: Settings, say: Callable[[str], None] = print) -> DemoResult:
    from kafka import KafkaConsumer, TopicPartition

    started = time.monotonic()
    created = ensure_topics(
        settings.kafka_bootstrap, topic_specs(settings), security=settings.kafka_security
    )
    if created:
        say(f"created topics: {', '.join(created)}")
    now_ms = int(time.time() * 1000)
    messages = [m for i, e in enumerate(DEMO_ELEVATORS) for m in trip_messages(e, now_ms + i * 250)]
    payloads = [(m.elevator_id.encode(), contract.encode(m)) for m in messages]
    # A terminal with a broken firmware: speed as a string.
    bad = contract.encode(messages[0]).replace(b'"speed_mps":[', b'"speed_mps":["fast",', 1)
    payloads.append((DEMO_ELEVATORS[0].encode(), bad))

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        client_id="tianyan-demo",
        **kafka_python_config(settings.kafka_security),
    )
    parts = [
        TopicPartition(settings.raw_topic, p)
        for p in sorted(consumer.partitions_for_topic(settings.raw_topic) or ())
    ]
    consumer.assign(parts)
    # Read back from where the topic ended before this run's messages.
    for tp, offset in consumer.end_offsets(parts).items():
        consumer.seek(tp, offset)
    with RawPublisher(
        settings.kafka_bootstrap, settings.raw_topic, security=settings.kafka_security
    ) as publisher:
        for key, value in payloads:
            publisher.publish(key, value)
    say(
        f"produced {len(payloads)} messages to {settings.raw_topic} "
        f"({sum(len(m.samples.t_ms) for m in messages)} samples "
        f"from {len(DEMO_ELEVATORS)} elevators, "
        "1 malformed)"
    )

    valid: list[TelemetryMessage] = []
    rejected: list[str] = []
    consumed = 0
    ours = {key for key, _ in payloads}
    deadline = time.monotonic() + 30
    while consumed < len(payloads) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            for r in records:
                if r.key not in ours:
                    continue  # another producer's message on the shared topic
                consumed += 1
                try:
                    valid.append(contract.decode(r.value))
                except contract.InvalidMessage as e:
                    rejected.append(e.reason)
    consumer.close()
    say(f"consumed {consumed} messages: {len(valid)} valid, {len(rejected)} rejected")
    for reason in rejected:
        say(f"  rejected: {reason}")

    with TimescaleSink(settings.database_url) as sink:
        written = sink.write_samples(valid)
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM tianyan.telemetry_sample "
            "WHERE elevator_id = ANY(%s) AND time >= to_timestamp(%s / 1000.0)",
            [list(DEMO_ELEVATORS), now_ms],
        ).fetchone()
    in_db = int(row[0]) if row else 0
    say(
        f"wrote {written} samples to tianyan.telemetry_sample; "
        f"{in_db} rows from this run are queryable"
    )
    return DemoResult(len(payloads), consumed, rejected, written, in_db, time.monotonic() - started)
