"""Fault injection on the real stack (issue 11): for each fault, every trapping in the input
becomes exactly one incident, and every incident event reaches the receiver at least once,
in order, with a verified signature — with a metrics scrape every second throughout.

Short by default (the test command runs them); ``make chaos`` runs the issue's durations.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from foundation.settings import Settings
from tianyan.stack.kafka import LocalKafka
from tianyan.stack.postgres import LocalPostgres

from .chaos_support import FULL, chaos_pipeline, flush_until_done

pytestmark = pytest.mark.slow


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
