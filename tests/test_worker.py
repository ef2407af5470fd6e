"""The Faust worker on the real Kafka and TimescaleDB: every sample stored exactly once,
a SIGKILL mid-stream changes nothing, bad and duplicated input handled, two workers share
the work."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from foundation import contract
from foundation.settings import Settings
from registry.generate import generate
from registry.store import upsert
from replay import JsonlContents, inspect_jsonl
from tianyan.harness import Run, pipeline
from tianyan.processes import Stalled

from .conftest import consume_all
from .simulator_support import DEVICE_FAULTS_FLEET, device_faults_stream

# Real worker processes on a simulated stream.
pytestmark = pytest.mark.slow

FLEET_SEED, FLEET_SIZE, FLEET_DATE = DEVICE_FAULTS_FLEET


@dataclass(frozen=True)
class Stream:
    """A simulated stream: its file, and what a correct pipeline must make of it."""

    path: Path
    expect: JsonlContents


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Stream:
    out = device_faults_stream(tmp_path_factory.mktemp("worker") / "run.jsonl")
    expect = inspect_jsonl(out)
    assert expect.malformed > 0 and expect.duplicates > 0, "the scenario should exercise bad input"
    return Stream(out, expect)


@contextmanager
def _pipeline(settings: Settings, work: Path) -> Iterator[Run]:
    """The harness's pipeline, with the fleet registered (the detectors' limits)."""
    name = f"tianyan_test_worker_{uuid.uuid4().hex[:8]}"
    with pipeline(settings, name, work, checkpoint_interval_s=0.5) as run:
        upsert(run.admin_url, generate(FLEET_SEED, FLEET_SIZE, FLEET_DATE))
        yield run


def _count(run: Run, table: str = "telemetry_sample") -> int:
    return int(run.scalar(f"SELECT count(*) FROM tianyan.{table}"))


def _wait_for_samples(run: Run, expected: int) -> int:
    """Wait while the count moves until ``expected`` samples are stored."""
    return int(run.wait(lambda: _count(run), lambda n: n >= expected, f"{expected} samples stored"))


def _wait_for_every_sample(run: Run, expect: JsonlContents, worker_ports: list[int]) -> int:
    """:func:`_wait_for_samples` for all of ``expect``; if the count stops short, the failure
    says which samples are missing, where they are in Kafka, what the group committed and
    what each worker counted: what a loss in a rebalance needs to be traced."""
    try:
        return _wait_for_samples(run, len(expect.samples))
    except Stalled as e:
        raise AssertionError(f"{e}\n{_explain_missing(run, expect, worker_ports)}") from e


def _explain_missing(run: Run, expect: JsonlContents, worker_ports: list[int]) -> str:
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    from foundation.kafka_security import confluent_config

    with psycopg.connect(run.admin_url) as conn:
        rows = conn.execute("SELECT elevator_id, time FROM tianyan.telemetry_sample").fetchall()
    missing = expect.samples - {(e, int(t.timestamp() * 1000)) for e, t in rows}
    settings = run.settings
    offsets: dict[int, list[int]] = {}
    for r in consume_all(settings.kafka_bootstrap, settings.raw_topic, expect.lines):
        try:
            m = contract.decode(r.value)
        except contract.InvalidMessage:
            continue
        if any((m.elevator_id, int(t)) in missing for t in m.samples.t_ms):
            offsets.setdefault(r.partition, []).append(r.offset)
    admin = AdminClient(
        {"bootstrap.servers": settings.kafka_bootstrap} | confluent_config(settings.kafka_security)
    )
    group = ConsumerGroupTopicPartitions(settings.worker_id)
    listed = admin.list_consumer_group_offsets([group])[settings.worker_id].result(timeout=10)
    committed = {
        tp.partition: tp.offset for tp in listed.topic_partitions if tp.topic == settings.raw_topic
    }
    counters = []
    for port in worker_ports:
        try:
            counters.append({k: v for k, v in _metrics(port).items() if k.endswith("_total")})
        except OSError as err:
            counters.append({"unreachable": str(err)})
    return (
        f"{len(missing)} samples missing, e.g. {sorted(missing)[:5]}; their messages by"
        f" partition: {dict(sorted(offsets.items()))};"
        f" committed: {dict(sorted(committed.items()))};"
        f" workers' counters: {counters}; logs: "
        + " | ".join(f"{p.name}: {p.read_text()[-1500:]}" for p in sorted(run.work.glob("*.log")))
    )


def _metrics(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("tianyan_") and " " in line and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _snapshot(url: str) -> dict[str, list[tuple]]:
    with psycopg.connect(url) as conn:
        return {
            "samples": conn.execute(
                "SELECT elevator_id, time, seq, speed_mps, load_kg, door "
                "FROM tianyan.telemetry_sample ORDER BY 1, 2"
            ).fetchall(),
            "windows": conn.execute(
                "SELECT * FROM tianyan.window_feature ORDER BY elevator_id, width_s, bucket_start"
            ).fetchall(),
            "trips": conn.execute(
                "SELECT * FROM tianyan.trip ORDER BY elevator_id, start_time"
            ).fetchall(),
            # Silence alerts too: stamped with the stream time they fell due, not with when
            # a tick looked, so they do not depend on the pace of the run.
            "alerts": conn.execute(
                "SELECT alert_key, state, raised_at, evidence FROM tianyan.alert ORDER BY 1, 2"
            ).fetchall(),
        }


def test_every_sample_once_and_bad_input_quarantined(
    settings: Settings, simulated: Stream, tmp_path: Path
) -> None:
    expect = simulated.expect
    with _pipeline(settings, tmp_path) as run:
        run.publish(simulated.path)
        port = run.start_worker()
        n = _wait_for_samples(run, len(expect.samples))
        time.sleep(2)  # anything beyond the expected rows would be a duplicate: let it land
        stats = _metrics(port)
        got = _snapshot(run.admin_url)
        windows, trips = _count(run, "window_feature"), _count(run, "trip")
        with psycopg.connect(run.admin_url) as conn:
            alerted = {
                r[0]
                for r in conn.execute(
                    "SELECT elevator_id FROM tianyan.alert WHERE alert_type = 'overload'"
                ).fetchall()
            }
        quarantined = consume_all(
            settings.kafka_bootstrap, run.settings.quarantine_topic, expect.malformed
        )
    assert n == len(expect.samples), (tmp_path / "worker.log").read_text()[-3000:]
    stored = {(e, int(t.timestamp() * 1000)) for e, t, *_ in got["samples"]}
    assert stored == expect.samples
    assert stats["tianyan_quarantined_total"] == expect.malformed
    assert stats["tianyan_duplicates_total"] == expect.duplicates
    assert stats["tianyan_messages_total"] == expect.messages
    assert windows > 0 and trips > 0
    # The detectors run in the worker: the injected overloads come out as alerts.
    labels = [
        json.loads(x) for x in simulated.path.with_suffix(".labels.jsonl").read_text().splitlines()
    ]
    overloaded = {x["elevator_id"] for x in labels if x["fault_type"] == "overload"}
    # (Detection quality is measured by `tianyan evaluate`; here: the wiring works.)
    assert overloaded & alerted
    assert stats["tianyan_alerts_total"] > 0
    assert len(quarantined) == expect.malformed
    for r in quarantined:
        # The original bytes, unchanged, with the validator's reason naming the field.
        with pytest.raises(contract.InvalidMessage) as refused:
            contract.decode(r.value)
        assert dict(r.headers)["reason"].decode() == refused.value.reason


def test_sigkill_mid_stream_changes_nothing(
    settings: Settings, simulated: Stream, tmp_path: Path
) -> None:
    expected_samples = len(simulated.expect.samples)
    # Reference: an uninterrupted run.
    with _pipeline(settings, tmp_path / "reference") as ref:
        ref.publish(simulated.path)
        ref.start_worker()
        assert _wait_for_samples(ref, expected_samples) == expected_samples
        time.sleep(2)
        expected = _snapshot(ref.admin_url)

    with _pipeline(settings, tmp_path / "killed") as run:
        run.start_worker()
        # The stream arrives while the worker runs (240 simulated seconds in 12 s).
        publisher = threading.Thread(
            target=run.publish, args=(simulated.path,), kwargs={"speed": 20.0}
        )
        time.sleep(10)
        publisher.start()
        # Kill it without warning once part of the stream is stored.
        part = _wait_for_samples(run, expected_samples // 3)
        assert part < expected_samples, "the worker finished before it could be killed"
        run.group.stop("worker", signal.SIGKILL)
        run.start_worker()
        publisher.join(60)
        n = _wait_for_samples(run, expected_samples)
        time.sleep(3)
        got = _snapshot(run.admin_url)
    assert n == expected_samples, (tmp_path / "killed" / "worker.log").read_text()[-3000:]
    assert got["samples"] == expected["samples"]
    assert got["windows"] == expected["windows"]
    assert got["trips"] == expected["trips"]
    # Every alert, those of silence (device offline, a car last seen trapped then silent)
    # included: the same whatever the pace, the kill and the restart.
    assert got["alerts"] == expected["alerts"]
    assert any(":device_offline:" in key for key, *_ in expected["alerts"])


def test_two_workers_split_the_partitions(
    settings: Settings, simulated: Stream, tmp_path: Path
) -> None:
    with _pipeline(settings, tmp_path) as run:
        ports = [run.start_worker("worker a"), run.start_worker("worker b")]
        time.sleep(15)  # both join the group before the data arrives
        run.publish(simulated.path)
        n = _wait_for_every_sample(run, simulated.expect, ports)
        time.sleep(2)
        shares = [_metrics(port)["tianyan_messages_total"] for port in ports]
    assert n == len(simulated.expect.samples)
    assert all(s > 0 for s in shares), f"one worker did nothing: {shares}"
    assert sum(shares) == simulated.expect.messages


def test_health_and_metrics_endpoints(settings: Settings, tmp_path: Path) -> None:
    with _pipeline(settings, tmp_path) as run:
        port = run.start_worker()  # waits until it listens
        health = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
        )
        names = set(_metrics(port))
    assert health["ok"] is True
    assert health["seconds_in_table_recovery"] < 300
    for metric in (
        "tianyan_recovery_rewinds_total",
        "tianyan_messages_total",
        "tianyan_samples_total",
        "tianyan_quarantined_total",
        "tianyan_late_samples_total",
        "tianyan_duplicates_total",
    ):
        assert metric in names


def test_a_worker_forgets_the_partitions_a_rebalance_takes_away(
    settings: Settings, simulated: Stream, tmp_path: Path
) -> None:
    """Left cached, a revoked partition's clock ran on with the wall clock and raised
    device_offline for every car the other worker now served."""
    expected = len(simulated.expect.samples)
    with _pipeline(settings, tmp_path) as run:
        first = run.start_worker("worker a")
        run.publish(simulated.path)
        _wait_for_samples(run, expected)
        held_alone = run.wait(
            lambda: _metrics(first).get("tianyan_elevator_states", 0),
            lambda n: n >= FLEET_SIZE,
            "worker a holding every elevator's state",
        )
        second = run.start_worker("worker b")
        # The rebalance takes partitions from a (Faust revokes them all, then assigns a its
        # share again); a forgets what it was holding at its next turn.
        run.wait(
            lambda: _metrics(first).get("tianyan_elevator_states", 0),
            lambda n: n < held_alone,
            "worker a forgetting the partitions it lost",
        )
        # The stream again: every message a repeat, each worker loading the states of its
        # own partitions' cars from the checkpoints, and nothing stored twice.
        run.publish(simulated.path)

        def held() -> tuple[float, float]:
            return tuple(_metrics(p).get("tianyan_elevator_states", 0) for p in (first, second))

        shares = run.wait(held, lambda h: sum(h) >= FLEET_SIZE, "both workers holding states")
        time.sleep(2)
        stored = _count(run)
    assert held_alone == FLEET_SIZE
    assert all(0 < n < FLEET_SIZE for n in shares) and sum(shares) == FLEET_SIZE, shares
    assert stored == expected


def test_a_rebalance_while_the_worker_is_blocked_loses_nothing(
    settings: Settings, simulated: Stream, tmp_path: Path
) -> None:
    """A worker whose writes wait (here on a lock; in production on the audit ledger's lock
    or a slow disk) fills its buffer, and its fetcher waits for room. A rebalance during that
    wait seeks every partition back to its committed offset; the fetcher, once it had room,
    recorded the message it had been holding as read, and Faust then skipped every message
    re-fetched before it: they were never stored, and nothing said so (the README's demo
    stalled at 798,757 of 817,524 samples)."""
    from confluent_kafka.admin import AdminClient

    from foundation.kafka_security import confluent_config

    expected = len(simulated.expect.samples)
    with _pipeline(settings, tmp_path) as run:
        # A small buffer, full at once: 10 batches of 50 messages.
        first = run.start_worker("worker a", TIANYAN_BATCH_MESSAGES="50")
        with psycopg.connect(run.admin_url) as blocker:
            blocker.execute("LOCK TABLE tianyan.telemetry_sample IN SHARE MODE")
            run.publish(simulated.path)
            run.wait(
                lambda: blocker.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"
                    " AND relation = 'tianyan.telemetry_sample'::regclass"
                ).fetchone(),
                lambda row: row[0] > 0,
                "worker a's write waiting on the lock",
            )
            second = run.start_worker("worker b", TIANYAN_BATCH_MESSAGES="50")
            admin = AdminClient(
                {"bootstrap.servers": settings.kafka_bootstrap}
                | confluent_config(settings.kafka_security)
            )

            def members() -> int:
                group = admin.describe_consumer_groups([run.settings.worker_id])
                return len(group[run.settings.worker_id].result(timeout=10).members)

            run.wait(members, lambda n: n == 2, "worker b joining the group")
            blocker.rollback()  # the lock goes; worker a's write and fetcher go on
        stored = _wait_for_every_sample(run, simulated.expect, [first, second])
        time.sleep(2)
        distinct = int(
            run.scalar("SELECT count(DISTINCT (elevator_id, time)) FROM tianyan.telemetry_sample")
        )
        stored = _count(run)
    assert stored == distinct == expected


def test_a_terminal_clock_an_hour_ahead_is_stored_at_its_corrected_times(
    settings: Settings, tmp_path: Path
) -> None:
    """The worker corrects a terminal's clock before its detectors see the samples; the
    samples must be stored at the corrected times too. COPY sent each message's bytes as
    received, so a terminal an hour ahead had its samples stored an hour ahead, where no
    board looks and no incident's evidence (±5 min of the alert) finds them."""
    import msgspec

    from detectors.testing import car, message
    from streams.producer import RawPublisher

    ids = [e.registration_code for e in generate(FLEET_SEED, FLEET_SIZE, FLEET_DATE)][:8]
    odd, hour_ms, rounds = ids[-1], 3_600_000, 12
    with _pipeline(settings, tmp_path) as run:
        run.start_worker()
        with RawPublisher(
            settings.kafka_bootstrap, run.settings.raw_topic, security=settings.kafka_security
        ) as terminals:
            for seq in range(rounds):  # a message a second from each, read in real time
                now_ms = round(time.time() * 1000)
                for eid in ids:  # one partition: the others' lags judge the odd one
                    stamp_ms = now_ms + (hour_ms if eid == odd else 0)
                    rows = [car(t_ms=stamp_ms - 900 + k * 100) for k in range(10)]
                    body = msgspec.json.encode(message(rows, elevator_id=eid, seq=seq))
                    terminals.publish(eid.encode(), body, partition=0)
                terminals.flush(30)
                time.sleep(max(0.0, now_ms / 1000 + 1 - time.time()))
        published_ms = round(time.time() * 1000)
        _wait_for_samples(run, rounds * len(ids) * 10)
        odd_newest = run.scalar(
            "SELECT max(time) FROM tianyan.telemetry_sample WHERE elevator_id = %s", odd
        )
        corrected = run.scalar(
            "SELECT count(*) FROM tianyan.alert"
            " WHERE elevator_id = %s AND alert_type = 'clock_fault' AND state = 'raised'",
            odd,
        )
    assert corrected == 1
    assert odd_newest.timestamp() * 1000 < published_ms + 60_000, odd_newest


def test_changelog_records_fetched_but_never_recovered_are_read_again() -> None:
    """A worker waited in its table recovery for ever, folding nothing (the demo, 3 runs of
    5 one day): the consumer had fetched the changelog records and they never
    reached recovery. Such a partition is read again; one still being read is left alone."""
    from faust.types import TP

    from streams.faust_batching import RECOVERY_STALLED_S, lost_changelog_reads

    done, fetching, lost, silent, quiet = (TP("elevator-state-changelog", p) for p in range(5))
    highwaters = {done: 9, fetching: 9, lost: 9, silent: 9, quiet: 9}
    offsets = {done: 9, fetching: 4, lost: 4, silent: -1, quiet: 4}
    # positions: the next offset the consumer fetches; past 9 means it has fetched all
    positions = {done: 10, fetching: 7, lost: 10, silent: 10, quiet: 10}
    now = 1_000.0
    last_event_at = {lost: now - RECOVERY_STALLED_S, quiet: now - 3.0}
    found = lost_changelog_reads(
        offsets, highwaters, positions, last_event_at, started_at=now - 60.0, now=now
    )
    # lost: its last record came 15 s ago; silent: none came since recovery began
    assert found == {lost: 4, silent: 0}
    # a recovery younger than the wait: nothing is read again yet
    assert (
        lost_changelog_reads(offsets, highwaters, positions, {}, started_at=now - 5.0, now=now)
        == {}
    )
