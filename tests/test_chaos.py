"""Fault injection on the real stack (issue 11): for each fault, every trapping in the input
becomes exactly one incident, and every incident event reaches the receiver at least once,
in order, with a verified signature — with a metrics scrape every second throughout.

Short by default (the test command runs them); ``make chaos`` runs the issue's durations.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from foundation.settings import Settings
from tianyan.processes import listening
from tianyan.stack.kafka import NODE_PORT_STEP, KafkaCluster, LocalKafka
from tianyan.stack.postgres import LocalPostgres

from .chaos_support import FULL, chaos_pipeline, flush_until_done

pytestmark = pytest.mark.slow


@pytest.mark.exclusive
def test_kafka_broker_stopped_mid_stream(settings: Settings, tmp_path: Path) -> None:
    outage_s = 360 if FULL else 25  # longer than the services' delivery timeout either way
    with chaos_pipeline(settings, tmp_path) as c:
        c.run.start_dispatcher()
        c.run.start_worker()
        c.scrape_forever()
        flush_until_done(c.publish(0), 60)
        time.sleep(2.0)  # the worker is folding the first half when the broker goes
        broker = LocalKafka(settings)
        second = c.publish(1)  # queued in the client while the broker is away
        broker.stop()
        try:
            time.sleep(outage_s)
        finally:
            broker.start()
        flush_until_done(second, 300)
        c.settle()
        counts = c.check_nothing_lost_or_duplicated()
        assert counts["trapping_incidents"] >= 1
        assert c.scrapes["200"] > 0


@pytest.mark.exclusive
def test_postgresql_restarted_mid_stream(settings: Settings, tmp_path: Path) -> None:
    with chaos_pipeline(settings, tmp_path) as c:
        c.run.start_dispatcher()
        c.run.start_worker()
        c.scrape_forever()
        flush_until_done(c.publish(0), 60)
        time.sleep(2.0)
        postgres = LocalPostgres(settings)
        postgres.stop()
        try:
            flush_until_done(c.publish(1), 60)
            time.sleep(5.0)
        finally:
            postgres.start()
        c.settle()
        c.check_nothing_lost_or_duplicated()
        assert c.run.group.exited() is None, "the services survive a database restart"


def test_receiver_503_then_401_then_200(settings: Settings, tmp_path: Path) -> None:
    unavailable_s, unauthorised_s = (600, 60) if FULL else (20, 6)
    # The 401s are retried for a time counted from when a delivery was queued: longer than
    # the whole failure here.
    auth_retry_s = 2 * (unavailable_s + unauthorised_s)
    with chaos_pipeline(settings, tmp_path, webhook_auth_retry_s=auth_retry_s) as c:
        began = time.monotonic()

        def answer(_n: int) -> tuple[int, dict[str, str]]:
            elapsed = time.monotonic() - began
            if elapsed < unavailable_s:
                return 503, {}
            if elapsed < unavailable_s + unauthorised_s:
                return 401, {}
            return 200, {}

        c.receiver.answer = answer
        c.run.start_dispatcher()
        c.run.start_worker()
        c.scrape_forever()
        flush_until_done(c.publish(0), 60)
        flush_until_done(c.publish(1), 60)
        c.settle()
        c.check_nothing_lost_or_duplicated()
        assert time.monotonic() - began > unavailable_s + unauthorised_s


def test_dispatcher_sigkilled_in_a_delivery_burst(settings: Settings, tmp_path: Path) -> None:
    with chaos_pipeline(settings, tmp_path) as c:
        c.receiver.delay_s = 0.5  # slow enough that the kill lands mid-burst
        c.run.start_dispatcher()
        c.run.start_worker()
        c.scrape_forever()
        flush_until_done(c.publish(0), 60)
        flush_until_done(c.publish(1), 60)
        c.run.wait(lambda: len(c.receiver.requests), lambda n: n >= 3, "a delivery burst under way")
        c.run.group.stop("dispatcher", signal.SIGKILL)
        c.run.start_dispatcher()
        c.settle()
        c.check_nothing_lost_or_duplicated()


def _free_cluster_ports(first: int, nodes: int) -> int:
    """A base port from which every node's broker and controller ports are free."""
    for base in range(first, 32_000, 100):
        ports = [base + NODE_PORT_STEP * n + k for n in range(nodes) for k in (0, 1)]
        if not any(listening(p) for p in ports):
            return base
    raise RuntimeError(f"no free ports for {nodes} brokers from {first}")


def test_one_of_three_brokers_killed_mid_stream(settings: Settings, tmp_path: Path) -> None:
    """Issue 13 part 5: on a 3-broker cluster (topics with 3 copies, min.insync.replicas 2,
    acks=all), a broker SIGKILLed mid-stream and restarted loses nothing: every sample is
    stored once and every trapping becomes one incident."""
    base = _free_cluster_ports(27_400, 3)
    cluster_settings = dataclasses.replace(
        settings,
        kafka_port=base,
        kafka_controller_port=base + 1,
        kafka_bootstrap=f"127.0.0.1:{base}",
        kafka_brokers=3,
        kafka_replication_factor=3,
        kafka_heap_mb=384,
    )
    root = settings.var_dir / "test-cluster" / f"pid-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    cluster = KafkaCluster(cluster_settings, root=root)
    cluster.start()
    victim = cluster.nodes[1]  # not the bootstrap node: the clients keep their way in
    try:
        with chaos_pipeline(cluster_settings, tmp_path) as c:
            c.run.start_dispatcher()
            c.run.start_worker()
            flush_until_done(c.publish(0), 120)
            time.sleep(2.0)  # the worker is folding the first half when the broker dies
            pid = victim.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            flush_until_done(c.publish(1), 120)  # two copies of three: writes go on
            time.sleep(5.0)
            cluster.start()  # the killed node again; it catches up from the others
            c.settle()
            counts = c.check_nothing_lost_or_duplicated()
            stored, distinct = (
                c.scalar("SELECT count(*) FROM telemetry_sample"),
                c.scalar("SELECT count(DISTINCT (elevator_id, time)) FROM telemetry_sample"),
            )
        assert stored == distinct == c.expected_samples
        assert counts["trapping_incidents"] >= 1
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
