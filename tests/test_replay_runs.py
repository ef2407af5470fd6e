"""Replay runs on the real Kafka and TimescaleDB: a replayed trapping calls no one (no
incident, no webhook, no device command) while the same trapping live does; a replay
worker re-runs the detectors with other thresholds into the run's own table, and the
report lists what is new, gone and changed against the live alerts."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from detectors.alerts import TRAPPED_TYPES
from detectors.thresholds import ElevatorLimits
from foundation import contract
from foundation.settings import Settings
from registry.generate import generate
from registry.store import upsert
from replay import inspect_jsonl
from replay.report import AlertFact, compare
from rescue.delivery import new_secret
from streams.ingest import Ingest, RawRecord
from streams.producer import RawPublisher
from tianyan.demo import trip_messages
from tianyan.harness import TIANYAN, Run, pipeline
from tianyan.processes import free_port

from .conftest import consume_all
from .rescue_support import RecordingReceiver, Rescue, trapped, wait_for

FLEET_SEED, FLEET_SIZE, FLEET_DATE = 1605, 6, dt.date(2026, 11, 1)
START = dt.datetime(2026, 11, 3, 1, 0, tzinfo=dt.UTC)
DURATION_S = 240.0


# -- pure: the one detection loop and the comparison -------------------------------------------
def test_the_detection_loop_refuses_a_replayed_record_with_its_run() -> None:
    ingest = Ingest(1000, limits_for=lambda _: ElevatorLimits.unknown())
    value = contract.encode(next(iter(trip_messages("32070000000000000001", 1_795_000_000_000))))
    batch = ingest.process(
        [
            RawRecord(b"32070000000000000001", value, 0, 0, None, "run-7"),
            RawRecord(b"32070000000000000001", value, 0, 1, None),
        ]
    )
    assert [reason for _, reason in batch.quarantined] == [
        "tianyan-replay-run: 'run-7': a replayed record never reaches the live platform;"
        " detect on it with `tianyan worker --replay-run run-7`"
    ]
    assert len(batch.messages) == 1  # the live one, folded


def test_compare_pairs_by_elevator_type_and_nearest_onset() -> None:
    t = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    s = dt.timedelta(seconds=1)

    def fact(key: str, eid: str, kind: str, at: dt.datetime, sev: str = "critical") -> AlertFact:
        return AlertFact(key, eid, kind, at, at, sev, 2, {"load_kg": 150.0, "limit_s": 30.0})

    live = [
        fact("l1", "A", "trapped_at_level", t),
        fact("l2", "A", "trapped_at_level", t + 300 * s),  # gone: nothing near it
        fact("l3", "B", "overload", t, "major"),
        fact("l4", "C", "overload", t),
    ]
    run = [
        fact("r1", "A", "trapped_at_level", t + 20 * s),  # same condition, 20 s later
        fact("r3", "B", "overload", t + 5 * s, "minor"),  # changed severity
        fact("r4", "C", "overload", t + 70 * s),  # too far: new, and l4 gone
        fact("r5", "D", "overload", t),  # new
    ]
    changes = {
        (d.live.alert_key if d.live else None, d.run.alert_key if d.run else None): d.change
        for d in compare(live, run, 60).differences
    }
    assert changes == {
        ("l1", "r1"): "same",
        ("l2", None): "gone",
        ("l3", "r3"): "changed",
        ("l4", None): "gone",
        (None, "r4"): "new",
        (None, "r5"): "new",
    }
    with pytest.raises(ValueError, match="negative"):
        compare(live, run, -1)


@pytest.mark.slow
def test_the_dispatcher_dead_letters_an_alert_marked_as_replayed(
    settings: Settings, rescue: Callable[..., Rescue], tmp_path: Path
) -> None:
    """Nothing publishes a replayed alert today; should anything ever, the dispatcher keeps
    it on the dead-letter topic with its run named and opens nothing."""
    r = rescue([])
    receiver = RecordingReceiver(r.secret, free_port())
    r.send_to(receiver)
    dead_topic = r.env["TIANYAN_ALERTS_DEAD_LETTER_TOPIC"]
    replayed, live = trapped(0, 0), trapped(1, 0)
    try:
        r.start_dispatcher(tmp_path / "dispatcher.log")
        with RawPublisher(settings.kafka_bootstrap, r.alerts_topic) as pub:
            pub.publish(
                replayed.elevator_id.encode(),
                msgspec.json.encode(replayed),
                headers=[(contract.REPLAY_RUN_HEADER, b"run-9")],
            )
        r.publish([live])
        wait_for(lambda: len(receiver.requests) >= 1, 60, "the live trapping's webhook")
        dead = consume_all(settings.kafka_bootstrap, dead_topic, 1, timeout_s=30)
        assert [d.key for d in dead] == [replayed.elevator_id.encode()]
        assert dict(dead[0].headers)["reason"].startswith(b"tianyan-replay-run: 'run-9'")
        assert r.query("SELECT elevator_id FROM incident") == [(live.elevator_id,)]
        commands = consume_all(settings.kafka_bootstrap, r.commands_topic, 1, timeout_s=30)
        assert [c.key for c in commands] == [live.elevator_id.encode()]
        assert {
            q["payload"]["data"]["elevator"]["registration_code"] for q in receiver.requests
        } == {live.elevator_id}
    finally:
        r.stop_all()
        receiver.close()


# -- the real stack ------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_replayed_trapping_calls_no_one_and_a_rerun_reports_what_changed(
    settings: Settings, tmp_path: Path
) -> None:
    import simulator

    stream = tmp_path / "history.jsonl"
    fleet = generate(FLEET_SEED, FLEET_SIZE, FLEET_DATE)
    scenario = simulator.load_scenario(Path(__file__).parent / "scenarios" / "replay_trapping.toml")
    simulator.simulate(
        scenario,
        fleet,
        start=START,
        duration_s=DURATION_S,
        output=simulator.FileOutput(stream),
        progress=False,
    )
    expect = inspect_jsonl(stream)
    receiver = RecordingReceiver(new_secret(), free_port())
    try:
        with pipeline(
            settings,
            f"tianyan_test_replay_{uuid.uuid4().hex[:8]}",
            tmp_path / "run",
            partitions=2,
            checkpoint_interval_s=0.5,
            rescue_webhook_urls=(receiver.url,),
            rescue_webhook_secret=receiver.secret,
            rescue_action_secret=new_secret(),
        ) as run:
            upsert(run.admin_url, fleet)
            run.start_dispatcher()
            run.start_worker()
            _replays_call_no_one_and_live_does(run, stream, expect.lines, receiver)
            _rerun_reports_new_gone_and_changed(run, receiver)
    finally:
        receiver.close()


def _replays_call_no_one_and_live_does(
    run: Run, stream: Path, lines: int, receiver: RecordingReceiver
) -> None:
    s = run.settings
    # 1. The history replayed straight into the live raw topic: every record refused to the
    #    quarantine with its run; nothing folded, so no alert, incident, webhook or command.
    out = _tianyan(
        run, "replay", "--from", str(stream), "--run-id", "into-live", "--topic", s.raw_topic
    )
    assert json.loads(out.splitlines()[-1])["run_id"] == "into-live"
    quarantined = consume_all(s.kafka_bootstrap, s.quarantine_topic, lines, timeout_s=120)
    assert len(quarantined) == lines
    assert all(b"tianyan-replay-run: 'into-live'" in dict(r.headers)["reason"] for r in quarantined)
    # 2. The same history live: the trapping opens an incident, its webhook is delivered and
    #    the car is asked to reassure its passengers.
    run.publish(stream)
    trapped = run.wait(
        lambda: run.scalar(
            "SELECT count(*) FROM incident WHERE fault_type = ANY(%s)", list(TRAPPED_TYPES)
        ),
        lambda n: n >= 1,
        "a trapping incident from the live stream",
    )
    run.wait(
        lambda: len(receiver.requests),
        lambda n: any(_trapped(r) for r in receiver.requests),
        "the trapping's webhook",
    )
    commands = consume_all(s.kafka_bootstrap, s.device_commands_topic, trapped, timeout_s=60)
    assert len(commands) >= trapped
    # Nothing of the replay reached the tables of the live platform meanwhile.
    assert run.scalar("SELECT count(*) FROM replay_alert") == 0
    samples = len(inspect_jsonl(stream).samples)
    run.wait(
        lambda: run.scalar("SELECT count(*) FROM telemetry_sample"),
        lambda n: n >= samples,
        f"{samples} samples stored",
    )


def _rerun_reports_new_gone_and_changed(run: Run, receiver: RecordingReceiver) -> None:
    time.sleep(3.0)  # the live worker's last alerts and the dispatcher's last webhooks
    before = _platform(run, receiver)
    start = START.strftime("%Y-%m-%dT%H:%M:%S")
    end = (START + dt.timedelta(seconds=DURATION_S + 10)).strftime("%Y-%m-%dT%H:%M:%S")
    live_trappings = dict(
        _rows(
            run,
            "SELECT alert_key, coalesce(evidence->>'how', '') FROM alert"
            " WHERE state = 'raised' AND alert_type = ANY(%s)",
            list(TRAPPED_TYPES),
        )
    )
    assert live_trappings

    # The detectors re-run over the stored history with the same thresholds: the trappings
    # are found again, alike, and no sample is stored twice.
    stored = run.scalar("SELECT count(*) FROM telemetry_sample")
    # The replay worker may run while the replay still publishes (here at 50× real time):
    # it waits for the run's topic and reads until the run is published and read.
    replaying = subprocess.Popen(
        [TIANYAN, "replay", "--start", start, "--end", end, "--run-id", "same", "--speed", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=run.env(),
    )
    try:
        run.wait(
            lambda: run.scalar("SELECT count(*) FROM replay_run WHERE run_id = 'same'"),
            bool,
            "the run registered",
        )
        done = json.loads(_tianyan(run, "worker", "--replay-run", "same").splitlines()[-1])
        out, err = replaying.communicate(timeout=300)
    finally:
        replaying.kill()
    assert replaying.returncode == 0, err[-3000:]
    assert done["records"] == json.loads(out.splitlines()[-1])["messages"], (done, out)
    assert done["messages"] > 0 and done["alerts_stored"] > 0, done
    report = _report(run, "same")
    assert report["range_start"].startswith("2026-11-03T01:00:00")
    trapping_changes = {
        d["change"] for d in report["differences"] if d["alert_type"] in TRAPPED_TYPES
    }
    assert trapping_changes <= {"changed"}, report  # none gone, none new
    assert run.scalar("SELECT count(*) FROM telemetry_sample") == stored

    # Trappings confirmed only after 1000 s, overloads from 5 % of the rated load: the
    # trappings live raised on their timer are gone (or changed: raised later by the alarm
    # button), those raised by the alarm button stay; overloads are new.
    th = run.work / "thresholds.toml"
    th.write_text("trapped_after_s = 1000\noverload_ratio = 0.05\n")
    _tianyan(run, "replay", "--start", start, "--end", end, "--run-id", "strict", "--quiet")
    _tianyan(run, "worker", "--replay-run", "strict", TIANYAN_THRESHOLDS_FILE=str(th))
    report = _report(run, "strict")
    change_of = {d["live_alert_key"]: d["change"] for d in report["differences"]}
    by_timer = {key for key, how in live_trappings.items() if "alarm" not in how}
    assert by_timer, live_trappings
    assert {change_of.get(key) for key in by_timer} <= {"gone", "changed"}, report
    assert "gone" in {change_of.get(key) for key in by_timer}, report
    assert not any(
        d["change"] == "new" and d["alert_type"] in TRAPPED_TYPES for d in report["differences"]
    )
    assert any(
        d["change"] == "new" and d["alert_type"] == "overload" for d in report["differences"]
    ), report
    assert report["thresholds_changed"]["trapped_after_s"] == {"run": 1000, "default": 30.0}
    assert report["new"] + report["gone"] + report["changed"] == len(report["differences"])

    # Neither run opened an incident, sent a webhook or commanded a terminal.
    time.sleep(3.0)
    assert _platform(run, receiver) == before
    assert run.scalar("SELECT count(*) FROM replay_alert WHERE run_id = 'strict'") > 0
    # The report compares on the elevators the run carried: those that sent history.
    seen = run.scalar("SELECT elevators_seen FROM replay_run WHERE run_id = 'strict'")
    sent = {r[0] for r in _rows(run, "SELECT DISTINCT elevator_id FROM telemetry_sample")}
    assert set(seen) == sent
    # A run id is used once; an unknown run is named.
    again = _tianyan(run, "replay", "--start", start, "--end", end, "--run-id", "same", check=False)
    assert "run id 'same' was used already" in again
    unknown = _tianyan(run, "replay", "report", "nosuch", check=False)
    assert "replay run 'nosuch' is unknown" in unknown


def _platform(run: Run, receiver: RecordingReceiver) -> tuple[int, ...]:
    s = run.settings
    return (
        int(run.scalar("SELECT count(*) FROM alert")),
        int(run.scalar("SELECT count(*) FROM incident")),
        int(run.scalar("SELECT count(*) FROM webhook_delivery")),
        len(receiver.requests),
        len(consume_all(s.kafka_bootstrap, s.device_commands_topic, 0, timeout_s=2)),
        len(consume_all(s.kafka_bootstrap, s.alerts_topic, 0, timeout_s=2)),
    )


def _report(run: Run, run_id: str) -> dict:
    out = _tianyan(run, "replay", "report", run_id)
    assert "change" in out or "0 new, 0 gone, 0 changed" in out
    return json.loads(out.splitlines()[-1])


def _rows(run: Run, sql: str, *params: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(run.admin_url) as conn:
        return conn.execute(sql, params).fetchall()


def _tianyan(run: Run, *args: str, check: bool = True, **env: str) -> str:
    res = subprocess.run(
        [TIANYAN, *args], capture_output=True, text=True, timeout=300, env=run.env(**env)
    )
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout
    assert res.returncode != 0
    return res.stderr


def _trapped(request: dict) -> bool:
    return bool(request["payload"].get("data", {}).get("fault", {}).get("trapped"))
