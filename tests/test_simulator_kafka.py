"""The simulator publishing to the real Kafka, with labels in tianyan.fault_label."""

from __future__ import annotations

import uuid
from collections import defaultdict

import psycopg
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from foundation.contract import InvalidMessage, decode
from foundation.settings import Settings
from simulator import KafkaOutput, simulate
from streams.producer import RawPublisher

from .simulator_support import START, fleet, scenario


def test_kafka_output_keeps_per_elevator_order_and_writes_labels(settings: Settings) -> None:
    topic = f"tianyan.test.simulator.{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    try:
        sc = scenario(
            "kafka",
            seed=21,
            traffic={"intensity": 3.0},
            faults={
                "power_loss": {"rate_per_day": 800, "duration_min_s": 10, "duration_max_s": 30},
                "overload": {"probability": 0.2},
                "malformed": {"probability": 0.01},
            },
        )
        run_id = f"test-{uuid.uuid4().hex}"
        publisher = RawPublisher(settings.kafka_bootstrap, topic)
        summary = simulate(
            sc,
            fleet(5),
            start=START,
            duration_s=300.0,
            output=KafkaOutput(publisher, labels_db_url=settings.database_url),
            progress=False,
            run_id=run_id,
        )
        assert summary.faults > 0 and summary.malformed > 0

        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=5000,
        )
        records = []
        while len(records) < summary.messages:
            batch = list(consumer)
            if not batch:
                break
            records += batch
        consumer.close()
        assert len(records) == summary.messages
        seqs: dict[bytes, list[int]] = defaultdict(list)
        rejected = 0
        for r in records:
            try:
                m = decode(r.value)
            except InvalidMessage:
                rejected += 1
                continue
            assert r.key == m.elevator_id.encode()
            seqs[r.key].append(m.seq)
        assert rejected == summary.malformed
        for key, s in seqs.items():
            # Malformed messages use up a seq number, so gaps are allowed; order is not.
            assert s == sorted(s) and len(set(s)) == len(s), key

        with psycopg.connect(settings.database_url) as conn:
            rows = conn.execute(
                "SELECT fault_type, gb_code, onset, ended, params FROM tianyan.fault_label "
                "WHERE run_id = %s ORDER BY label_id",
                [run_id],
            ).fetchall()
        assert len(rows) == summary.faults
        assert {r[0] for r in rows} >= {"power_loss", "overload", "malformed"}
        assert all(r[1] == "41" for r in rows if r[0] == "power_loss")
        assert all(r[3] is None or r[3] >= r[2] for r in rows)
    finally:
        admin.delete_topics([topic])
        admin.close()
