"""Nothing is lost when a part fails (issue 11): the producer across a broker outage, the
dispatcher when Kafka refuses a command, an unreadable alert, a metrics scrape, a failing
timer, a stale dispatcher of another run, a recreated database, and the demo's services on
SIGTERM — each on the real Kafka and TimescaleDB, with real processes."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg
import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from foundation.settings import Settings
from sql.migrate import migrate
from streams.producer import PublishError, RawPublisher
from tianyan.harness import create_database
from tianyan.processes import free_port, listening
from tianyan.stack.kafka import LocalKafka

from .conftest import TIANYAN, consume_all
from .rescue_support import (
    FLEET,
    RecordingReceiver,
    Rescue,
    http,
    overload,
    trapped,
    wait_for,
)

# Real dispatcher processes, a broker stopped, a demo run.
pytestmark = pytest.mark.slow


def _kafka_ready(settings: Settings) -> None:
    """Wait until the broker answers and serves the given topic's partitions again."""
    from tianyan.stack.errors import StackError
    from tianyan.stack.kafka import check_kafka

    def up() -> bool:
        try:
            check_kafka(settings.kafka_bootstrap, timeout_s=3)
            return True
        except StackError:
            return False

    wait_for(up, 120, "the broker to answer again")


@pytest.mark.slow
@pytest.mark.exclusive
def test_records_kafka_failed_are_sent_again_not_forgotten(settings: Settings) -> None:
    """flush() used to reset its failure count before raising, so a second flush 'succeeded'
    and the worker acknowledged offsets for records Kafka never took."""
    topic = f"test.outage.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 4, 1)])
    admin.close()
    broker = LocalKafka(settings)
    pub = RawPublisher(settings.kafka_bootstrap, topic, delivery_timeout_ms=3000)
    try:
        broker.stop()
        for i in range(50):
            pub.publish(f"e{i % 7}".encode(), f"record {i}".encode())
        with pytest.raises(PublishError, match="were not accepted"):
            pub.flush(15.0)
        assert pub.failed == 50
    finally:
        broker.start()
    _kafka_ready(settings)
    deadline = time.monotonic() + 90
    while True:  # the client reconnects; every failed record goes again
        try:
            pub.flush(10.0)
            break
        except PublishError:
            if time.monotonic() > deadline:
                raise
    records = consume_all(settings.kafka_bootstrap, topic, 50)
    assert sorted(r.value for r in records) == sorted(f"record {i}".encode() for i in range(50))
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.delete_topics([topic])
    admin.close()


def test_reassurance_refused_by_kafka_is_retried_until_the_trapping_is_applied(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    """A failed reassurance publish raised PublishError out of the agent: the alert was
    acknowledged unapplied, and the trapping never became an incident."""
    r = rescue([], TIANYAN_KAFKA_DELIVERY_TIMEOUT_MS="2000")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        admin.delete_topics([r.commands_topic])  # Kafka now refuses the command
        wait_for(lambda: r.commands_topic not in admin.list_topics(), 30, "the commands topic gone")
        r.publish([trapped(0, 0), overload(1, 0)])
        wait_for(
            lambda: (
                'tianyan_dispatcher_alerts_total{result="retried"}'
                in http("GET", f"{r.web}/metrics").text
            ),
            60,
            "the trapping to be retried while Kafka refuses its command",
        )
        assert (
            r.scalar(
                "SELECT count(*) FROM incident WHERE fault_type = %s", "trapped_between_levels"
            )
            == 0
        )
        admin.create_topics([NewTopic(r.commands_topic, 1, 1)])
        wait_for(
            lambda: r.scalar("SELECT count(*) FROM incident") == 2,
            90,
            "both alerts applied once Kafka takes the command",
        )
        commands = consume_all(settings.kafka_bootstrap, r.commands_topic, 1, timeout_s=30)
        assert [c.key for c in commands] == [FLEET[0].registration_code.encode()]
        assert r.scalar("SELECT count(*) FROM incident_alert") == 2
    finally:
        r.stop_all()
        admin.close()


def test_unreadable_alerts_go_to_the_dead_letter_topic_with_their_reason(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    r = rescue([])
    dead_topic = r.env["TIANYAN_ALERTS_DEAD_LETTER_TOPIC"]
    bad = [b'{"schema":"\xff"}', b"not json at all", b'{"alert_key": 7}']
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        with RawPublisher(settings.kafka_bootstrap, r.alerts_topic) as pub:
            for i, value in enumerate(bad):
                pub.publish(FLEET[i].registration_code.encode(), value)
        r.publish([trapped(3, 0)])
        wait_for(lambda: r.scalar("SELECT count(*) FROM incident") == 1, 60, "the valid alert")
        dead = consume_all(settings.kafka_bootstrap, dead_topic, 3, timeout_s=30)
        assert sorted(d.value for d in dead) == sorted(bad)
        for d in dead:
            reason = dict(d.headers)["reason"].decode()
            assert reason.startswith("the alert does not decode"), reason
        metrics = http("GET", f"{r.web}/metrics").text
        assert 'tianyan_dispatcher_alerts_total{result="dead_lettered"} 3.0' in metrics
    finally:
        r.stop_all()


def test_a_metrics_scrape_leaves_no_transaction_open(
    settings: Settings, rescue: Callable[..., Rescue], superuser_url: str, tmp_path: Path
) -> None:
    """/metrics ran its query on the timer's connection and left it in a transaction, in
    which escalations then ran as savepoints (holding locks, rolled back later)."""
    r = rescue([])
    db = r.admin_url.rsplit("/", 1)[1]
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        r.publish([trapped(0, 0)])
        wait_for(lambda: r.scalar("SELECT count(*) FROM incident") == 1, 60, "the incident")
        for _ in range(5):
            assert http("GET", f"{r.web}/metrics").status_code == 200
            time.sleep(0.3)
        time.sleep(1.5)  # the escalation timer has run on that connection since
        with psycopg.connect(superuser_url) as conn:  # sees every role's sessions' state
            states = conn.execute(
                "SELECT state FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                (db, "tianyan_writer"),
            ).fetchall()
        assert states, "the dispatcher's sessions should be visible"
        assert not [s for (s,) in states if s and s.startswith("idle in transaction")], states
    finally:
        r.stop_all()


def test_a_failing_timer_is_logged_and_counted_and_the_dispatcher_keeps_serving(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    r = rescue([])
    log = tmp_path / "dispatcher.log"
    try:
        dispatcher = r.start_dispatcher(log)
        with psycopg.connect(r.admin_url, autocommit=True) as conn:
            # The escalation pass now fails with an error that is not a lost connection.
            conn.execute("ALTER TABLE tianyan.incident_alert RENAME TO incident_alert_away")
            try:
                wait_for(
                    lambda: (
                        'tianyan_dispatcher_background_errors_total{task="escalation"}'
                        in http("GET", f"{r.web}/metrics").text
                    ),
                    30,
                    "the escalation failures to be counted",
                )
                time.sleep(2.0)
                assert dispatcher.poll() is None, log.read_text()[-2000:]
            finally:
                conn.execute("ALTER TABLE tianyan.incident_alert_away RENAME TO incident_alert")
        r.publish([trapped(0, 0)])
        wait_for(lambda: r.scalar("SELECT count(*) FROM incident") == 1, 60, "the incident")
        assert http("GET", f"{r.web}/health").status_code == 200
        assert "background task escalation failed" in log.read_text()
    finally:
        r.stop_all()


def test_a_stale_dispatcher_with_another_secret_claims_none_of_the_rows(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    """A dispatcher left from an earlier run signed new rows with its old secret; the
    receiver answered 401 and they were dead-lettered."""
    r = rescue([])
    hook = RecordingReceiver(r.secret, free_port())
    r.env["TIANYAN_RESCUE_WEBHOOK_URL"] = hook.url
    # The receiver refuses what it cannot verify, as a real one does.
    hook.answer = lambda n: (200, {}) if hook.requests[-1]["verified"] else (401, {})
    # The current dispatcher sends one at a time to a slow receiver, so the stale one has
    # every chance to claim.
    r.env["TIANYAN_WEBHOOK_CONCURRENCY"] = "1"
    hook.delay_s = 0.3
    stale_port = free_port()
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        # A stale one beside it, polling the same outbox for the same endpoint.
        stale_topic = r.alerts_topic + ".stale"
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        admin.create_topics([NewTopic(stale_topic, 1, 1)])
        admin.close()
        r.start_dispatcher(
            tmp_path / "stale.log",
            TIANYAN_RESCUE_WEBHOOK_SECRET="whsec_" + "c3RhbGUgc2VjcmV0IG9mIGFub3RoZXIgcnVu",
            TIANYAN_ALERTS_TOPIC=stale_topic,
            TIANYAN_DISPATCHER_ID=f"stale-{uuid.uuid4().hex[:6]}",
            TIANYAN_DISPATCHER_WEB_PORT=str(stale_port),
            TIANYAN_WEBHOOK_CONCURRENCY="64",
        )
        wait_for(lambda: listening(stale_port), 60, "the stale dispatcher")
        r.publish([overload(i, i) for i in range(12)])
        wait_for(
            lambda: (
                r.scalar("SELECT count(*) FROM webhook_delivery WHERE status <> 'pending'") == 12
            ),
            60,
            "every delivery",
        )
        assert r.scalar("SELECT count(*) FROM webhook_delivery WHERE status = 'dead'") == 0
        assert len(hook.requests) == 12
        assert all(req["verified"] for req in hook.requests)
    finally:
        r.stop_all()
        hook.close()


def test_a_dispatcher_stops_when_its_database_is_dropped_and_created_again(
    settings: Settings, rescue: Callable[..., Rescue], superuser_url: str, tmp_path: Path
) -> None:
    r = rescue([])
    name = r.admin_url.rsplit("/", 1)[1]
    log = tmp_path / "dispatcher.log"
    try:
        dispatcher = r.start_dispatcher(log)
        r.publish([trapped(0, 0)])  # it has worked in this database
        wait_for(lambda: r.scalar("SELECT count(*) FROM incident") == 1, 60, "the incident")
        migrate(create_database(settings, name))  # dropped first
        dispatcher.wait(60)
        assert "was dropped and created again" in log.read_text()
    finally:
        r.stop_all()


@pytest.mark.slow
def test_sigterm_to_the_demo_stops_every_service_it_started(
    settings: Settings, superuser_url: str, tmp_path: Path
) -> None:
    """SIGTERM left the demo's two workers, dispatcher and receiver running, reparented to
    init; the next demo's outbox was then claimed by them."""
    log = tmp_path / "demo.log"  # beside the demo's own folder, which it empties
    database = f"tianyan_demo_{uuid.uuid4().hex[:6]}"
    out = str(tmp_path / "demo")
    args = ["--elevators", "10", "--minutes", "3", "--out", out, "--database", database]
    with log.open("wb") as out:
        demo = subprocess.Popen([TIANYAN, "demo", *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "started:" in log.read_text(), 300, "the demo's services")
        services = psutil.Process(demo.pid).children(recursive=True)
        assert len(services) >= 4, [p.cmdline() for p in services]
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(60) != 0
        _, alive = psutil.wait_procs(services, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if demo.poll() is None:
            demo.kill()
        with psycopg.connect(superuser_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
