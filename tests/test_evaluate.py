"""Detection-quality evaluation: the arithmetic on hand-made alerts and labels, then short
real runs of the worker's detectors over simulated fleets."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import simulator
from detectors.alerts import Alert, make_alert
from evaluation.runs import DEFAULT_START, EvaluationReport, evaluate, fleet, send_times
from evaluation.scoring import (
    SAFETY_LABELS,
    censor_reason,
    safety_fault_ms,
    score,
)
from tianyan.commands_eval import evaluate_command

HERE = Path(__file__).parent
FAULTS_TOML = HERE / "scenarios" / "detector_faults.toml"
NO_FAULTS_TOML = HERE.parent / "simulator" / "scenarios" / "no_faults.toml"
DAY_MS = 86_400_000
T0 = 1_700_000_000_000


def label(car: str, kind: str, onset_s: float, ended_s: float | None, **params: Any) -> dict:
    return {
        "elevator_id": car,
        "fault_type": kind,
        "gb_code": None,
        "onset_ms": T0 + round(onset_s * 1000),
        "ended_ms": None if ended_s is None else T0 + round(ended_s * 1000),
        "params": params,
    }


def alert(car: str, kind: str, raised_s: float, since_s: float | None = None) -> Alert:
    since = raised_s if since_s is None else since_s
    return make_alert(car, kind, T0 + round(since * 1000), T0 + round(raised_s * 1000), {})


def everywhere(*cars: str, until_s: float = 2 * 86_400) -> dict[str, list[int]]:
    """Sample times every second for each car: every label observable."""
    times = list(range(T0, T0 + round(until_s * 1000) + 1, 1000))
    return {c: times for c in cars}


def test_precision_recall_f1_and_delay_arithmetic() -> None:
    labels = [label("E1", "overspeed", 10, 12), label("E2", "overspeed", 20, 21)]
    alerts = [
        alert("E1", "overspeed", 10.5),  # detects the first label after 0.5 s
        alert("E1", "overspeed", 400),  # nothing explains it: a false alarm
    ]
    ev = score(
        labels,
        alerts,
        end_ms=T0 + 86_400_000,
        sample_times=everywhere("E1", "E2"),
        elevators=2,
        duration_s=86_400,
    )
    s = ev.faults["overspeed"]
    assert (s.labels, s.detected, s.alerts, s.explained) == (2, 1, 2, 1)
    assert s.recall == 0.5 and s.precision == 0.5 and s.f1 == pytest.approx(0.5)
    assert s.delay_median_s == 0.5 and s.missed == [labels[1]]
    assert ev.false_alarms == 1 and ev.elevator_days == 2.0
    assert ev.false_alarms_per_1000_elevator_days == pytest.approx(500.0)
    assert sum(ev.false_alarms_by_severity().values()) == 1
    json.dumps(ev.to_dict(), allow_nan=False)  # NaN becomes null: strict JSON


def test_delay_median_and_p95_are_from_onset_to_raised() -> None:
    labels = [label(f"E{i}", "overload", 100, 200) for i in range(5)]
    alerts = [alert(f"E{i}", "overload", 100 + i) for i in range(5)]
    alerts.append(alert("E4", "overload", 150))  # a later alert does not change the delay
    ev = score(
        labels,
        alerts,
        end_ms=T0 + 1_000_000,
        sample_times=everywhere(*(f"E{i}" for i in range(5))),
        elevators=5,
        duration_s=1000,
    )
    s = ev.faults["overload"]
    assert s.delays_ms == [0, 1000, 2000, 3000, 4000]
    assert s.delay_median_s == 2.0 and s.delay_p95_s == pytest.approx(3.8)
    assert s.recall == 1.0 and s.precision == 1.0


def test_an_alert_outside_the_window_plus_slack_does_not_detect() -> None:
    labels = [label("E1", "overspeed", 10, 12)]
    ev = score(
        labels,
        [alert("E1", "overspeed", 12 + 5.001)],
        end_ms=T0 + 100_000,
        sample_times=everywhere("E1"),
        elevators=1,
        duration_s=100,
    )
    assert ev.faults["overspeed"].detected == 0 and ev.false_alarms == 1


def test_on_a_skewed_clock_an_alert_within_the_tolerance_before_the_onset_is_the_fault() -> None:
    """The detectors see a skewed terminal's times corrected by its measured offset, right
    to within ``clock_offset_tolerance_s`` (5 s); the labels are in true time."""
    faults = [label(car, "runtime_limiter", 100, 130, limiter_s=45) for car in ("E1", "E2")]
    skew = label("E1", "clock_skew", 50, 500, skew_ms=70_000_000, duration_s=450)

    def run(labels: list[dict], alerts: list[Alert]) -> Any:
        return score(
            labels,
            alerts,
            end_ms=T0 + 1_000_000,
            sample_times=everywhere("E1", "E2"),
            elevators=2,
            duration_s=1000,
        )

    # 1.8 s before the onset on both cars
    ev = run([*faults, skew], [alert(c, "run_time_limiter", 98.2) for c in ("E1", "E2")])
    s = ev.faults["runtime_limiter"]
    assert (s.labels, s.detected, s.delays_ms) == (2, 1, [0])
    assert s.missed == [faults[1]]  # E2's clock was right: 1.8 s early is not its fault
    # 5.5 s before, beyond the tolerance
    ev = run([*faults, skew], [alert("E1", "run_time_limiter", 94.5)])
    assert ev.faults["runtime_limiter"].detected == 0
    # a frozen reading found a second before its label's onset, under a skew (seed 261)
    stuck = label("E1", "stuck_sensor", 200, 900, column="speed_mps")
    assert run([stuck, skew], [alert("E1", "sensor_stuck", 199.0)]).false_alarms == 0
    assert run([stuck], [alert("E1", "sensor_stuck", 199.0)]).false_alarms == 1


@pytest.mark.parametrize(
    ("kind", "before_end_s", "judged"),
    [
        ("stopped_outside_door_zone", 30, False),  # a limiter fault labelled when it trips
        ("stopped_outside_door_zone", 60, True),
        ("overtravel_bottom", 1, False),  # labelled as the car stops beyond the landing
        ("overtravel_bottom", 10, True),
        ("repeated_door_reopening", 30, False),
        ("overspeed", 1, True),
    ],
)
def test_alerts_whose_label_may_come_after_the_run_are_not_judged(
    kind: str, before_end_s: float, judged: bool
) -> None:
    ev = score(
        [],
        [alert("E1", kind, 1000 - before_end_s)],
        end_ms=T0 + 1_000_000,
        sample_times=everywhere("E1"),
        elevators=1,
        duration_s=1000,
    )
    assert (ev.false_alarms, ev.excluded_alerts) == ((1, 0) if judged else (0, 1))


def test_one_situation_seen_by_several_rules_is_explained() -> None:
    # A trapping between landings is also a car stopped outside the door zone.
    labels = [label("E1", "trapped_between_levels", 0, 60)]
    alerts = [
        alert("E1", "stopped_outside_door_zone", 1),
        alert("E1", "trapped_between_levels", 30),
    ]
    ev = score(
        labels,
        alerts,
        end_ms=T0 + 600_000,
        sample_times=everywhere("E1"),
        elevators=1,
        duration_s=600,
    )
    assert ev.false_alarms == 0
    assert ev.faults["trapped_between_levels"].delay_median_s == 30.0
    # The run-time limiter explains the stall before it trips, limiter_s earlier.
    labels = [label("E1", "runtime_limiter", 100, 130, limiter_s=40.0)]
    ev = score(
        labels,
        [alert("E1", "stopped_outside_door_zone", 62)],
        end_ms=T0 + 600_000,
        sample_times=everywhere("E1"),
        elevators=1,
        duration_s=600,
    )
    assert ev.false_alarms == 0


def test_unobservable_and_too_late_labels_are_censored_with_their_reason() -> None:
    end_ms = T0 + 1_000_000
    times = {"E1": [T0, T0 + 1000, T0 + 900_000]}  # silent from 1 s to 900 s
    dropped = label("E1", "overspeed", 100, 110)
    late = label("E1", "trapped_at_level", 990, None)
    assert "unobservable" in (censor_reason(dropped, end_ms, times) or "")
    times["E1"].append(T0 + 995_000)
    assert "too late" in (censor_reason(late, end_ms, times) or "")
    ev = score([dropped, late], [], end_ms=end_ms, sample_times=times, elevators=1, duration_s=1000)
    assert ev.faults["overspeed"].labels == 0 and sum(ev.faults["overspeed"].censored.values()) == 1
    assert math.isnan(ev.faults["overspeed"].recall)


def test_degradations_flagged_before_they_become_safety_faults() -> None:
    # 10 mm/day: the drift reaches ±20 mm two days after onset.
    early = label("E1", "leveling_drift", 0, None, mm_per_day=10.0)
    assert safety_fault_ms(early) == T0 + 2 * DAY_MS
    unflagged = label("E2", "leveling_drift", 0, None, mm_per_day=-40.0)  # due after 12 h
    pending = label("E3", "leveling_drift", 0, None, mm_per_day=2.0)  # due after 10 days
    slow_doors = label("E4", "door_degradation", 0, None, slowdown_per_day=0.25)  # due 2 days
    alerts = [
        alert("E1", "leveling_drift", 86_400),  # a day before
        alert("E2", "leveling_accuracy", 50_000),  # the ±20 mm fault itself: no warning
        alert("E4", "door_operator_wear", 1.5 * 86_400),
    ]
    end_ms = T0 + 3 * DAY_MS
    ev = score(
        [early, unflagged, pending, slow_doors],
        alerts,
        end_ms=end_ms,
        sample_times=everywhere("E1", "E2", "E3", "E4", until_s=3 * 86_400),
        elevators=4,
        duration_s=3 * 86_400,
    )
    drift = ev.degradations["leveling_drift"]
    assert (drift.labels, drift.flagged_before, drift.reached_unflagged, drift.pending) == (
        3,
        1,
        1,
        1,
    )
    assert drift.lead_median_h == 24.0 and drift.progress == [0.5]
    assert drift.early_rate == 0.5
    doors = ev.degradations["door_degradation"]
    assert doors.flagged_before == 1 and doors.lead_median_h == 12.0
    # Recall: leveling_accuracy still detects the drift (late); E3's 6 mm is detectable.
    assert ev.faults["leveling_drift"].detected == 2 and ev.faults["leveling_drift"].labels == 3


def test_a_degradation_too_small_by_the_end_of_the_run_is_censored() -> None:
    tiny = label("E1", "leveling_drift", 0, None, mm_per_day=2.0)  # 0.08 mm after an hour
    reason = censor_reason(tiny, T0 + 3_600_000, everywhere("E1", until_s=3600))
    assert reason is not None and reason.startswith("too small")


@pytest.fixture(scope="module")
def faults_report() -> EvaluationReport:
    return evaluate(FAULTS_TOML, seed=21, elevators=12, duration_s=1800)


@pytest.mark.parametrize("label_type", SAFETY_LABELS)
def test_every_safety_fault_is_detected(faults_report: EvaluationReport, label_type: str) -> None:
    s = faults_report.evaluation.faults.get(label_type)
    assert s is not None and s.labels > 0, f"no {label_type} label in the run"
    assert s.recall >= 0.9, s.missed[:3]


def test_the_report_renders_as_a_table_and_one_json_object(
    faults_report: EvaluationReport,
) -> None:
    table = faults_report.table()
    assert "fault type" in table and "trapped_between_levels" in table
    data = json.loads(faults_report.as_json())
    assert data["elevators"] == 12 and data["duration_s"] == 1800.0
    assert data["faults"]["overspeed"]["recall"] >= 0.9
    assert data["trips"] > 0 and data["messages"] > 0


def test_the_fault_free_fleet_raises_no_actionable_false_alarm() -> None:
    report = evaluate(NO_FAULTS_TOML, seed=5, elevators=40, duration_s=1800)
    ev = report.evaluation
    assert ev.faults == {}
    by_severity = ev.false_alarms_by_severity()
    actionable = ev.false_alarms - by_severity.get("info", 0) - _normal_reopenings(ev)
    assert actionable == 0, {k: s.unexplained[:3] for k, s in ev.alerts.items()}


def _normal_reopenings(ev: Any) -> int:
    """A door that reopens three times by ordinary obstruction is a true detection that no
    label names (the fault-free scenario keeps normal reopening on)."""
    s = ev.alerts.get("repeated_door_reopening")
    return len(s.unexplained) if s else 0


def test_evaluate_command_prints_the_table_then_json_and_reads_a_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        evaluate_command,
        ["--scenario", str(FAULTS_TOML), "--seed", "22", "--elevators", "4", "--duration", "300"],
    )
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    assert last["seed"] == 22 and last["elevators"] == 4
    # The same run from disk, as `tianyan simulate --registry-seed 3 --elevators 4` writes it.
    path = tmp_path / "run.jsonl"
    simulator.simulate(
        simulator.load_scenario(FAULTS_TOML, seed=22),
        fleet(4, DEFAULT_START.date()),
        start=DEFAULT_START,
        duration_s=300,
        output=simulator.FileOutput(path),
        progress=False,
    )
    result = CliRunner().invoke(evaluate_command, ["--from", str(path), "--elevators", "4"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.output.strip().splitlines()[-1])
    assert again["faults"] == last["faults"] and again["default_limits"] == 0


def test_evaluate_command_errors_are_clear(tmp_path: Path) -> None:
    result = CliRunner().invoke(evaluate_command, ["--seed", "1"])
    assert result.exit_code == 1 and "--scenario" in result.output
    lonely = tmp_path / "lonely.jsonl"
    lonely.write_text("{}\n")
    result = CliRunner().invoke(evaluate_command, ["--from", str(lonely)])
    assert result.exit_code == 1 and "cannot read the fault labels" in result.output
    lonely.with_name("lonely.labels.jsonl").write_text("")
    result = CliRunner().invoke(evaluate_command, ["--from", str(lonely)])
    assert result.exit_code == 1 and "no valid telemetry message" in result.output
    result = CliRunner().invoke(
        evaluate_command, ["--from", str(lonely), "--scenario", str(FAULTS_TOML)]
    )
    assert result.exit_code == 1 and "drop --scenario" in result.output


def test_send_times_are_one_vote_per_terminal() -> None:
    """Twenty terminals with right clocks send a record a second; three busy ones 600 s
    ahead send two records for each of theirs. Voting per record, the busy ones set the
    send times ten minutes ahead; one vote per terminal, the right clocks do."""
    import msgspec

    from detectors.testing import car, message

    t0 = 1_740_963_600_000
    records: list[tuple[bytes | None, bytes]] = []
    truth: list[int] = []
    seqs: dict[str, int] = {}
    for sec in range(30):
        sent = t0 + sec * 1000
        senders = []
        for i in range(20):  # each right record between two of the busy ones'
            senders.append((f"3207062020000000{i:04d}", 0))
            senders += [(f"3207062020000001{(i + k) % 3:04d}", 600_000) for k in range(2)]
        for eid, skew in senders:
            seq = seqs[eid] = seqs.get(eid, -1) + 1
            m = message([car(t_ms=sent + skew)], elevator_id=eid, seq=seq)
            records.append((None, msgspec.json.encode(m)))
            truth.append(sent)
    got = [arrival for _, _, arrival in send_times(records)]
    assert all(a is not None and abs(a - t) <= 1_000 for a, t in zip(got, truth, strict=True))


def test_send_times_follow_the_clocks_that_agree_when_most_are_wrong() -> None:
    """Thirty terminals send a record a second; eighteen of their clocks are ahead, each by
    its own minutes to a day, the rest right. The median of the votes is a wrong clock's,
    and (send times never going back) every later record's send time with it; the right
    clocks agree with one another, the wrong ones do not."""
    import random

    import msgspec

    from detectors.testing import car, message

    rng = random.Random(7)
    t0 = 1_740_963_600_000
    skews = [0] * 12 + [rng.randint(60_000, 86_400_000) for _ in range(18)]
    records: list[tuple[bytes | None, bytes]] = []
    truth: list[int] = []
    for sec in range(20):
        sent = t0 + sec * 1000
        for i, skew in enumerate(skews):
            m = message([car(t_ms=sent + skew)], elevator_id=f"32070620200000{i:06d}", seq=sec)
            records.append((None, msgspec.json.encode(m)))
            truth.append(sent)
    got = [arrival for _, _, arrival in send_times(records)]
    wrong = [(a, t) for a, t in zip(got, truth, strict=True) if a is None or abs(a - t) > 1_000]
    assert not wrong, f"{len(wrong)} of {len(got)} send times off, first {wrong[:3]}"


def test_device_faults_explain_what_they_cause_through_the_alerts_evidence() -> None:
    """A silence a held-back or garbled message made, or a dropout that began a moment
    before its last message's estimated arrival; a clock fault measured on a message
    stamped under a skew that ended before it arrived; a leveling error as a car creeps
    off level before it leaves the door zone; an overload the frozen load cell hid."""
    labels = [
        label("E1", "out_of_order", 100, 100.9, seq=7, emitted_after_seq=10),
        # began 0.7 s before the last message's estimated arrival, ended 5.001 s before the alert
        label("E1", "dropout", 2094.2, 2154.9, duration_s=60.7),
        label("E2", "clock_skew", 0, 200, skew_ms=3_600_000),
        label("E3", "unintended_movement", 300, 330, creep_started_ms=T0 + 296_000),
        label("E4", "stuck_sensor", 0, 1_000, column="load_kg"),
        label("E4", "overload", 400, 420),
        label("E5", "overload", 400, 420),
    ]
    offline = make_alert("E1", "device_offline", T0 + 70_000, T0 + 135_000, {})
    stale_offline = make_alert("E1", "device_offline", T0 + 500_000, T0 + 565_000, {})
    after_dropout = make_alert("E1", "device_offline", T0 + 2_094_900, T0 + 2_159_901, {})
    clock = make_alert(
        "E2", "clock_fault", T0 + 230_000, T0 + 230_000, {"sample_ms": T0 + 195_000 + 3_600_000}
    )
    leveling = alert("E3", "leveling_accuracy", 298)
    ev = score(
        labels,
        [offline, stale_offline, after_dropout, clock, leveling],
        end_ms=T0 + 3_000_000,
        sample_times=everywhere("E1", "E2", "E3", "E4", "E5"),
        elevators=5,
        duration_s=1_000,
    )
    assert [a.alert_key for a in ev.alerts["device_offline"].unexplained] == [
        stale_offline.alert_key
    ]
    assert ev.alerts["clock_fault"].explained == 1
    assert ev.alerts["leveling_accuracy"].explained == 1
    overload = ev.faults["overload"]
    assert overload.labels == 1 and list(overload.censored) == [
        "unobservable: load_kg frozen all through it (stuck_sensor)"
    ]
