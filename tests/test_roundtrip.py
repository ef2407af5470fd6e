"""The demo's round trip and the raw-sample sink, on the real Kafka and TimescaleDB."""

from __future__ import annotations

import json
import subprocess
import time

import psycopg
import pytest

from foundation.settings import Settings
from streams.sinks import TimescaleSink
from tianyan.demo import trip_messages

from .conftest import TIANYAN


def test_demo_round_trip(settings: Settings) -> None:
    res = subprocess.run(
        [TIANYAN, "demo", "round-trip"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["produced"] == summary["consumed"] == 22
    assert summary["rejected"] == 1
    assert summary["samples_written"] == summary["rows_in_database"] == 183
    assert any("rejected: " in line and "$.samples.speed_mps[0]" in line for line in lines)


def test_sink_is_idempotent_on_elevator_and_sample_time(settings: Settings) -> None:
    elevator = "32070000000000009001"
    start_ms = int(time.time() * 1000) - 3_600_000
    messages = trip_messages(elevator, start_ms)
    samples = sum(len(m.samples.t_ms) for m in messages)
    with TimescaleSink(settings.database_url) as sink:
        assert sink.write_samples(messages) == samples
        # A replay of the whole batch, and a batch repeating one message, add nothing.
        assert sink.write_samples(messages) == 0
        assert sink.write_samples([messages[0], messages[0]]) == 0
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT time, speed_mps, position_m FROM tianyan.telemetry_sample "
            "WHERE elevator_id = %s AND time >= to_timestamp(%s / 1000.0) ORDER BY time",
            [elevator, start_ms],
        ).fetchall()
    assert len(rows) == samples
    first = messages[0].samples
    assert int(rows[0][0].timestamp() * 1000) == first.t_ms[0]
    assert rows[10][2] == pytest.approx(messages[1].samples.position_m[0], abs=1e-4)
