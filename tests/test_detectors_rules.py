"""Safety rules on hand-built message sequences (explicit timestamps) and on simulator output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors import ElevatorLimits, RuleState, SafetyRules, ThresholdError, Thresholds
from detectors.alerts import Alert
from detectors.testing import car, message

from . import detectors_support as support

T0 = 1_700_000_000_000
LIM = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000.0, floors=10)
TH = Thresholds()
RULES = SafetyRules(TH)


def _second_of_travel(t0_ms: int) -> list[dict[str, Any]]:
    """A second of travel at 1 m/s outside the door zone from 1.0 m, the encoder moving
    with the speed reading (else the reading is frozen) and the leveling reading live."""
    return [
        car(
            t_ms=t0_ms + k * 100,
            speed_mps=1.0,
            door_zone=False,
            position_m=1.0 + k * 0.1,
            leveling_offset_mm=100.0 * k,
        )
        for k in range(10)
    ]


def feed(seconds: list[list[dict[str, Any]]], **kw: Any) -> tuple[RuleState, list[Alert]]:
    """Messages (one per list of rows) through the rules; every alert in order."""
    st = RULES.new(support_id())
    out: list[Alert] = []
    for seq, rows in enumerate(seconds):
        out += RULES.observe(st, message(rows, seq=seq, **kw), LIM)
    return st, out


def support_id() -> str:
    return "32070620200000000001"


def second(sec: int, **values: Any) -> list[dict[str, Any]]:
    """Ten samples at 10 Hz of second ``sec`` with the same values."""
    return [car(t_ms=T0 + sec * 1000 + k * 100, **values) for k in range(10)]


def travel(sec: int, **values: Any) -> list[dict[str, Any]]:
    """Second ``sec`` of travel at ``speed_mps``, arriving at ``position_m`` (default 0) at
    its end: the encoder agreeing with the speed reading (a reading that disagrees with it
    is judged frozen within ``speed_check_s``). Down to the lowest landing, else up."""
    v, p = values["speed_mps"], values.get("position_m", 0.0)
    behind = 1.0 if p <= 0 else -1.0  # where it comes from: above the lowest landing
    return [
        car(
            t_ms=T0 + sec * 1000 + k * 100,
            **{**values, "position_m": p + behind * v * (9 - k) / 10},
        )
        for k in range(10)
    ]


def kinds(alerts: list[Alert], state: str = "raised") -> list[str]:
    return [a.alert_type for a in alerts if a.state == state]


def test_trapped_between_levels_after_30_s_then_cleared_when_doors_open() -> None:
    stuck = {"position_m": 4.5, "door_zone": False, "passengers": True, "load_kg": 160.0}
    seconds = [travel(0, speed_mps=1.0, position_m=4.0, door_zone=False, passengers=True)]
    seconds += [second(s, **stuck) for s in range(1, 40)]
    seconds += [second(40, position_m=6.0, door=1, passengers=True)]
    _, alerts = feed(seconds)
    trapped = [a for a in alerts if a.alert_type == "trapped_between_levels"]
    assert [a.state for a in trapped] == ["raised", "cleared"]
    raised = trapped[0]
    assert raised.condition_since_ms == T0 + 1000
    assert raised.condition_since_ms + 30_000 <= raised.raised_at_ms <= T0 + 32_000
    assert raised.estimated_trapped == 2 and raised.gb_code == "11"
    assert raised.severity == "critical" and "rescue" in raised.suggested_handling.lower()
    assert trapped[1].alert_key == raised.alert_key
    assert "stopped_outside_door_zone" in kinds(alerts)


def test_trapped_at_level_when_doors_do_not_open_after_arrival() -> None:
    seconds = [travel(0, speed_mps=0.8, door_zone=True, passengers=True, load_kg=80.0)]
    seconds += [second(s, passengers=True, load_kg=80.0) for s in range(1, 33)]
    _, alerts = feed(seconds)
    assert kinds(alerts) == ["trapped_at_level"]
    assert alerts[0].estimated_trapped == 1


def test_no_trapping_when_the_doors_opened_at_the_stop() -> None:
    seconds = [travel(0, speed_mps=0.8, passengers=True), second(1, door=2, passengers=True)]
    seconds += [second(s, passengers=True) for s in range(2, 40)]
    _, alerts = feed(seconds)
    assert kinds(alerts) == []


def test_alarm_in_a_standing_closed_car_with_passengers_is_a_trapping_at_once() -> None:
    seconds = [travel(0, speed_mps=0.8, passengers=True)]
    seconds += [second(s, passengers=True, door_zone=False, position_m=1.5) for s in (1, 2)]
    seconds += [
        second(s, passengers=True, door_zone=False, position_m=1.5, alarm=True) for s in (3, 4)
    ]
    _, alerts = feed(seconds)
    assert "alarm_button" in kinds(alerts)
    trapped = [a for a in alerts if a.alert_type == "trapped_between_levels"]
    assert trapped and trapped[0].raised_at_ms <= T0 + 5000
    assert trapped[0].evidence["how"] == "alarm button pressed in a standing car"


def test_the_rule_constants_are_thresholds_an_override_reaches() -> None:
    """``alarm_trapped_after_s`` and ``door_reopenings_alert`` (once constants of rules.py)
    are read from the thresholds each rule is given."""

    def run(th: Thresholds, seconds: list[list[dict[str, Any]]]) -> list[Alert]:
        rules, out = SafetyRules(th), []
        st = rules.new(support_id())
        for seq, rows in enumerate(seconds):
            out += rules.observe(st, message(rows, seq=seq), LIM)
        return out

    standing = {"passengers": True, "door_zone": False, "position_m": 1.5}
    alarm = [travel(0, speed_mps=0.8, passengers=True), second(1, **standing)]
    alarm += [second(s, **standing, alarm=True) for s in range(2, 8)]
    raised_ms = []
    for after_s in (1.0, 4.0):
        raised_ms += [
            a.raised_at_ms
            for a in run(Thresholds(alarm_trapped_after_s=after_s), alarm)
            if a.alert_type == "trapped_between_levels" and a.state == "raised"
        ]
    assert len(raised_ms) == 2 and raised_ms[1] - raised_ms[0] == 3000

    # One stop at a landing whose closing doors reopen twice.
    cycle = [2, 3, 1, 2, 3, 1, 2, 3, 0, 0]
    doors = [car(t_ms=T0 + 1000 + k * 100, door=d) for k, d in enumerate(cycle)]
    stop = [travel(0, speed_mps=0.8), doors, second(2)]
    for alert_at, expected in ((3, []), (2, ["repeated_door_reopening"])):
        alerts = run(Thresholds(door_reopenings_alert=alert_at), stop)
        assert kinds(alerts) == expected
    # The car stays at the landing: its doors close, then open again for a call there and
    # reopen once more. Reopenings are counted per door cycle (they were counted per stop,
    # and three across two cycles 142 s apart raised the alert on no-fault traffic).
    again = [car(t_ms=T0 + 3000 + k * 100, door=d) for k, d in enumerate([1, 2, 3, 1, 2, 3, 0])]
    alerts = run(Thresholds(door_reopenings_alert=3), [*stop, again, second(4)])
    assert kinds(alerts) == []


def test_overspeed_needs_two_samples() -> None:
    one = [car(t_ms=T0 + k * 100, speed_mps=1.2 if k == 5 else 1.0) for k in range(10)]
    _, alerts = feed([one])
    assert kinds(alerts) == []
    two = [car(t_ms=T0 + k * 100, speed_mps=1.2 if k in (5, 6) else 1.0) for k in range(10)]
    _, alerts = feed([two])
    assert kinds(alerts) == ["overspeed"]
    assert kinds(alerts, "cleared") == ["overspeed"]
    assert alerts[0].condition_since_ms == T0 + 500 and alerts[0].raised_at_ms == T0 + 600


def test_overload_overtravel_and_door_open_while_running() -> None:
    _, alerts = feed([second(0, load_kg=1150.0, door=2)])
    assert kinds(alerts) == ["overload"]
    # (a speed reading with no position change is a frozen sensor, and says so)
    _, alerts = feed([second(0, speed_mps=0.3, position_m=27.4, door_zone=False, floor=10)])
    assert kinds(alerts) == ["overtravel_top", "sensor_stuck"]
    _, alerts = feed([second(0, speed_mps=0.3, position_m=-0.3, door_zone=False)])
    assert kinds(alerts) == ["overtravel_bottom", "sensor_stuck"]
    closing = [car(t_ms=T0 + k * 100, door=3) for k in range(10)]
    # A live speed reading (it changes, sample to sample) over a still encoder: moving.
    live = [
        car(t_ms=T0 + 1000 + k * 100, speed_mps=_live_speed(k), door=2, direction=1)
        for k in range(10)
    ]
    _, alerts = feed([closing, live])
    assert kinds(alerts)[0] == "door_open_while_running"
    # The same reading bit for bit, sample after sample, over a still encoder: a frozen
    # sensor (said so), and nothing live says the car moves: no door alarm.
    _, alerts = feed([closing, second(1, speed_mps=1.0, door=2, direction=1)])
    assert kinds(alerts) == ["sensor_stuck"]


def test_unintended_movement_from_an_open_landing() -> None:
    opening = [car(t_ms=T0 + k * 100, door=1) for k in range(10)]
    creep = [
        car(
            t_ms=T0 + 1000 + k * 100,
            door=2,
            speed_mps=0.2,
            position_m=0.02 * k,
            door_zone=0.02 * k <= 0.2,
        )
        for k in range(20)
    ]
    _, alerts = feed([opening, creep[:10], creep[10:]])
    assert kinds(alerts) == ["unintended_movement"]
    assert alerts[0].gb_code == "05"


def _stalled_run(held_s: int) -> list[list[dict[str, Any]]]:
    """A run from second 0 that stalls outside the door zone at once, its command held
    ``held_s`` seconds, then dropped (the limiter cutting it: service mode 0)."""
    moving = {"speed_mps": 1.0, "direction": 1, "door_zone": False, "position_m": 4.0}
    stalled = {"direction": 1, "door_zone": False, "position_m": 4.5}
    cut = {"door_zone": False, "position_m": 4.5, "service_mode": 0}
    seconds = [second(0, **moving)] + [second(s, **stalled) for s in range(1, held_s)]
    return seconds + [second(s, **cut) for s in range(held_s, held_s + 5)]


def test_a_limiter_tripping_just_past_our_estimate_is_raised_when_it_trips() -> None:
    """The car's limiter trips a second or two after our estimate of its limit (its acceleration
    is not the nominal one): one ``run_time_limiter``, raised when the command drops, not
    a moment before the limiter acted (it used to be, as "held beyond the limit")."""
    limit_s = LIM.run_time_limit_s(TH)
    trip_s = int(limit_s) + 2
    _, alerts = feed(_stalled_run(trip_s))
    (limiter,) = [a for a in alerts if a.alert_type == "run_time_limiter" and a.state == "raised"]
    assert limiter.raised_at_ms == T0 + trip_s * 1000
    assert limiter.evidence["how"] == "run command dropped while stalled outside the door zone"


def test_a_limiter_that_does_not_trip_is_raised_past_the_limit_and_tolerance() -> None:
    limit_s = LIM.run_time_limit_s(TH)
    _, alerts = feed(_stalled_run(int(limit_s) + 10))
    (limiter,) = [a for a in alerts if a.alert_type == "run_time_limiter" and a.state == "raised"]
    # the run is seen from its first message (second 0 or 1); the timer runs per message
    assert T0 + limit_s * 1000 - 1 <= limiter.condition_since_ms <= T0 + (limit_s + 1) * 1000
    due_ms = limiter.condition_since_ms + TH.run_time_tolerance_s * 1000
    assert due_ms <= limiter.raised_at_ms <= due_ms + 1000
    assert limiter.evidence["how"] == "run command held beyond the limit with the car stalled"


def test_power_loss_from_event_41_and_its_return_40() -> None:
    seconds = [second(0), second(1, service_mode=0), second(2)]
    st = RULES.new(support_id())
    out: list[Alert] = []
    for seq, rows in enumerate(seconds):
        ev = (
            [(rows[0]["t_ms"], "41")] if seq == 1 else [(rows[0]["t_ms"], "40")] if seq == 2 else []
        )
        out += RULES.observe(st, message(rows, seq=seq, events=ev), LIM)
    assert kinds(out) == ["power_loss"] and kinds(out, "cleared") == ["power_loss"]


@pytest.mark.parametrize(
    ("restored", "expected"), [(False, "run_time_limiter"), (True, "power_loss")]
)
def test_a_car_found_out_of_service_between_levels_after_a_silence_waits_for_its_cause(
    restored: bool, expected: str
) -> None:
    """An empty car standing between levels; its terminal silent for three minutes; found
    there out of service (mode 0), no code: a run-time limiter's 06 or a power loss's 41
    may have been lost in the silence. Back in service with the power restored (event
    40): a power loss; without it: the limiter, reset. Either way one alert, not the other
    (raised at once as a power loss, such cars were a miss and a false alarm each)."""
    here = {"door_zone": False, "position_m": 10.5}
    seconds = [second(0, **here), second(1, **here)]
    seconds += [second(s, **here, service_mode=0) for s in range(180, 200)]
    seconds += [second(200, **here)]
    st = RULES.new(support_id())
    out: list[Alert] = []
    for seq, rows in enumerate(seconds):
        ev = [(rows[0]["t_ms"], "40")] if restored and seq == len(seconds) - 1 else []
        out += RULES.observe(st, message(rows, seq=seq, events=ev), LIM)
    raised = set(kinds(out)) & {"power_loss", "run_time_limiter"}
    assert raised == {expected}
    (alert,) = [a for a in out if a.alert_type == expected and a.state == "raised"]
    assert alert.condition_since_ms == T0 + 180_000 and alert.raised_at_ms == T0 + 200_000


def test_a_long_run_that_overshoots_the_bottom_landing_is_an_overtravel_alone() -> None:
    """A car running down the whole shaft at 1 m/s overshoots the bottom landing by 0.5 m
    and stands there, its run command held, until past the run-time limit (45 s at most).
    The final limit switch stopped it: an overtravel, not a run-time limiter (both were
    raised on seeds 1401 and 1411)."""
    rows = [car(t_ms=T0 + k * 100, position_m=27.0) for k in range(20)]  # at the top
    rows += [
        car(t_ms=T0 + 2000 + k * 100, speed_mps=1.0, position_m=round(27.0 - k * 0.1, 3),
            door_zone=k < 2, direction=2)
        for k in range(276)
    ]  # fmt: skip
    rows += [
        car(t_ms=T0 + 29_600 + k * 100, speed_mps=0.0, position_m=-0.5, door_zone=False,
            direction=2)
        for k in range(250)
    ]  # fmt: skip
    _, alerts = feed([rows[i : i + 10] for i in range(0, len(rows), 10)])
    assert "overtravel_bottom" in kinds(alerts)
    assert "run_time_limiter" not in kinds(alerts)


def test_terminal_code_is_sufficient_evidence() -> None:
    rows = second(0, passengers=True, door_zone=False, position_m=4.5)
    alerts = RULES.observe(RULES.new(support_id()), message(rows, faults=[(T0 + 500, "11")]), LIM)
    assert "trapped_between_levels" in kinds(alerts)


def test_device_offline_from_tick_and_cleared_by_the_next_message() -> None:
    st, _ = feed([travel(0, speed_mps=1.0)])
    assert RULES.tick(st, T0 + 5_000, LIM) == []
    alerts = RULES.tick(st, T0 + 12_000, LIM)
    assert kinds(alerts) == ["device_offline"]
    assert alerts[0].evidence["car_was_in_use"] is True
    # Stamped when the silence became an outage (10 s after the last sample), not when the
    # tick happened to look.
    assert alerts[0].raised_at_ms == T0 + 900 + 10_001
    alerts = RULES.observe(st, message(second(20), seq=5), LIM)
    assert kinds(alerts, "cleared") == ["device_offline"]


def _trapped_then_silent() -> list[list[dict[str, Any]]]:
    """A car standing between floors with people inside for 25 s; its terminal then goes
    silent for 60 s, and comes back with the doors open (the people let out)."""
    stuck = {"position_m": 4.5, "door_zone": False, "passengers": True, "load_kg": 160.0}
    seconds = [travel(0, speed_mps=1.0, position_m=4.0, door_zone=False, passengers=True)]
    seconds += [second(s, **stuck) for s in range(1, 25)]
    return [*seconds, second(85, **{**stuck, "door": 2})]


@pytest.mark.parametrize("tick_every_s", [None, 1, 5, 7, 60])
def test_a_silence_raises_the_same_alerts_however_often_it_is_ticked(
    tick_every_s: int | None,
) -> None:
    """Whether ticks find a silence while it lasts (every 1, 5, 7 or 60 s of stream time) or
    only the message that ends it does (None): the same alerts, field for field. And the
    car last seen trapped is escalated, trapped since it stood, stamped when it fell due
    (the timer's 30 s, but not before 10 s of silence make the last state an assumption)."""
    st = RULES.new(support_id())
    alerts: list[Alert] = []
    for seq, rows in enumerate(_trapped_then_silent()):
        if tick_every_s is not None and seq == 25:  # the silence: 24.9 s → 85 s
            for t_ms in range(T0 + 25_000, T0 + 85_000, tick_every_s * 1000):
                alerts += RULES.tick(st, t_ms, LIM)
        alerts += RULES.observe(st, message(rows, seq=seq), LIM)
    reference = [a.to_dict() for a in _alerts_without_ticks()]
    assert sorted(map(repr, (a.to_dict() for a in alerts))) == sorted(map(repr, reference))
    raised = {a.alert_type: a for a in alerts if a.state == "raised"}
    assert {"device_offline", "trapped_between_levels"} <= set(raised)
    trapped = raised["trapped_between_levels"]
    assert trapped.condition_since_ms == T0 + 1000
    # Due 30 s after it stood (T0 + 31 s), extrapolated once silent for 10 s (T0 + 34.9 s).
    assert trapped.raised_at_ms == T0 + 24_900 + 10_000
    assert trapped.evidence["extrapolated_from_ms"] == T0 + 24_900


def test_stopping_accuracy_is_the_median_of_the_stop_not_one_noisy_reading() -> None:
    """A car stopped 9 mm low (within the ±10 mm) read -10.1 mm in the one sample at which
    its stop was judged (the leveling sensor's noise): a false alarm on no-fault traffic.
    The stop is judged by the median of its readings over the second half of the 0.5 s
    that confirm it; a car really 12 mm low still is."""

    def stop(readings: list[float]) -> list[list[dict[str, Any]]]:
        ride = _second_of_travel(T0)
        standing = [
            car(t_ms=T0 + 1000 + k * 100, leveling_offset_mm=readings[k % len(readings)])
            for k in range(10)
        ]
        return [ride, standing]

    # judged at the sixth standing sample (0.5 s into the stop), on the fourth to sixth
    _, noisy = feed(stop([-9.0, -8.8, -9.2, -9.1, -8.9, -10.1]))
    assert kinds(noisy) == []
    _, low = feed(stop([-12.0, -11.8, -12.2, -12.1, -11.9, -12.0]))
    assert kinds(low) == ["stopping_accuracy"]
    assert low[0].evidence["stop_offset_mm"] == -12.0


def _alerts_without_ticks() -> list[Alert]:
    st = RULES.new(support_id())
    out: list[Alert] = []
    for seq, rows in enumerate(_trapped_then_silent()):
        out += RULES.observe(st, message(rows, seq=seq), LIM)
    return out


def test_stopping_accuracy_raised_once_and_cleared_after_good_stops() -> None:
    seconds: list[list[dict[str, Any]]] = []
    for stop, off in enumerate([14.0, 15.0, 2.0, 1.0, 0.0]):
        # a ride whose encoder moves with the speed reading (else the reading is frozen)
        t0 = T0 + 2 * stop * 1000
        ride = _second_of_travel(t0)
        seconds.append(ride)
        seconds.append(second(2 * stop + 1, leveling_offset_mm=off))
    _, alerts = feed(seconds)
    assert kinds(alerts) == ["stopping_accuracy"]
    assert kinds(alerts, "cleared") == ["stopping_accuracy"]


def test_replay_gives_the_same_alert_keys() -> None:
    stuck = {"position_m": 4.5, "door_zone": False, "passengers": True}
    seconds = [second(s, **stuck) for s in range(35)]
    _, first = feed(seconds)
    _, again = feed(seconds)
    assert [a.alert_key for a in first] == [a.alert_key for a in again]
    assert len({a.alert_key for a in first if a.state == "raised"}) == len(kinds(first))


def test_unknown_elevator_uses_defaults_and_says_so() -> None:
    lim = ElevatorLimits.unknown()
    alerts = RULES.observe(RULES.new(support_id()), message(second(0, speed_mps=1.3)), lim)
    assert kinds(alerts) == ["overspeed", "sensor_stuck"]  # (no position change: frozen)
    assert alerts[0].evidence["limits"]["source"] == "defaults (not in registry)"


def test_thresholds_refuse_unknown_names() -> None:
    with pytest.raises(ThresholdError, match="trapped_s: unknown threshold"):
        Thresholds.from_mapping({"trapped_s": 10})
    assert Thresholds.from_mapping({"trapped_after_s": 20.0}).trapped_after_s == 20.0
    with pytest.raises(ThresholdError):
        Thresholds(overspeed_ratio=float("nan"))


def test_fast_path_equals_per_sample_path(tmp_path: Path) -> None:
    """The common-case shortcut must not change a single alert."""
    import detectors.rules as rules

    cars = support.elevators(6)
    path = tmp_path / "run.jsonl"
    support.run_simulation(path, support.FAULTS_TOML, cars, 600.0, 11)
    fast = support.detect(path, cars)
    original = rules._uniform
    rules._uniform = lambda *a: False  # type: ignore[assignment]
    try:
        slow = support.detect(path, cars)
    finally:
        rules._uniform = original
    assert [a.to_dict() for a in fast] == [a.to_dict() for a in slow]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cars = support.elevators(12)
    path = tmp_path_factory.mktemp("detectors") / "faults.jsonl"
    support.run_simulation(path, support.FAULTS_TOML, cars, 1800.0, None)
    messages = support.read_messages(path)
    alerts = support.detect(path, cars)
    end_ms = max(m.samples.t_ms[-1] for m in messages)
    recall, precision = support.evaluate(
        support.read_labels(path), alerts, end_ms, support.sample_times(messages)
    )
    print(support.report(recall, precision))
    return {"recall": recall, "precision": precision}


#: Measured on this scenario (see the report); the runtime limiter misses episodes whose
#: stall the signals show only in part (a dropout over its start).
MIN_RECALL = {"runtime_limiter": 0.9}


@pytest.mark.parametrize("label_type", support.SAFETY_LABELS)
def test_simulated_safety_faults_are_detected(simulated: dict[str, Any], label_type: str) -> None:
    score = simulated["recall"].get(label_type)
    assert score is not None and score.labels > 0, f"no {label_type} label to check"
    assert score.recall >= MIN_RECALL.get(label_type, 0.99), score.missed


def test_simulated_alerts_are_explained_by_labels(simulated: dict[str, Any]) -> None:
    for kind, score in simulated["precision"].items():
        assert score.precision >= 0.9, (kind, score.unexplained[:3])


# ---------------------------------------------------------------- frozen sensors (issue 14)
def _ride(speed_reading: float | None, leveling_mm: float | None = None) -> list[list[Any]]:
    """A car standing 2 s at the ground landing, riding up one floor (3 m) at 1 m/s, then
    standing at the first floor with its doors opening after 1 s and open for 3 s; the
    speed and leveling readings frozen at ``speed_reading`` / ``leveling_mm`` throughout
    (None: healthy, following the car)."""
    rows: list[dict[str, Any]] = []
    for k in range(90):  # 9 s at 10 Hz
        t_s = k / 10
        p = min(max(t_s - 2.0, 0.0), 3.0)
        moving = 2.0 < t_s <= 5.0
        off_m = p - round(p / 3.0) * 3.0
        door = 0 if t_s < 6.0 else (1 if t_s < 7.0 else 2)
        rows.append(
            car(
                t_ms=T0 + k * 100,
                speed_mps=(1.0 if moving else 0.0) if speed_reading is None else speed_reading,
                position_m=round(p, 3),
                floor=round(p / 3.0) + 1,
                direction=1 if moving else 0,
                door=door,
                door_zone=abs(off_m) <= 0.2,
                leveling_offset_mm=(
                    round(off_m * 1000 + k * 0.01, 2) if leveling_mm is None else leveling_mm
                ),
            )
        )
    return [rows[i : i + 10] for i in range(0, 90, 10)]


def test_a_speed_reading_frozen_at_0_gives_way_to_the_position() -> None:
    """The speed sensor stuck at 0 while the car rides a floor: without the position the
    rules saw a car standing outside the door zone (``stopped_outside_door_zone``)."""
    _, healthy = feed(_ride(None))
    assert kinds(healthy) == []
    st, frozen = feed(_ride(0.0))
    assert kinds(frozen) == ["sensor_stuck"]
    assert st.speed_frozen and frozen[0].evidence["sensors"] == ["speed_mps"]


def test_a_speed_reading_frozen_while_moving_raises_no_door_alarm() -> None:
    """Stuck at 1 m/s, the car stops and opens its doors: without the position the rules
    saw doors open in a moving car (``door_open_while_running``, critical)."""
    st, alerts = feed(_ride(1.0))
    assert kinds(alerts) == ["sensor_stuck"]
    assert st.speed_frozen


def test_the_position_still_shows_an_overspeed_behind_a_frozen_speed_reading() -> None:
    rows = [
        car(
            t_ms=T0 + k * 100,
            speed_mps=0.0,
            position_m=round(k * 0.13, 3),
            direction=1,
            door_zone=False,
        )
        for k in range(30)
    ]
    _, alerts = feed([rows[i : i + 10] for i in range(0, 30, 10)])
    assert "overspeed" in kinds(alerts)


def _live_speed(k: int) -> float:
    """A healthy speed sensor at 1 m/s: its reading moves with its own noise."""
    return (0.99, 1.0, 1.01)[k % 3]


def _running(sec: int, position_m: list[float] | float, **values: Any) -> list[dict[str, Any]]:
    """Second ``sec`` of a car running between levels at a live 1 m/s reading; the
    position per sample, or one position throughout."""
    at = position_m if isinstance(position_m, list) else [position_m] * 10
    return [
        car(
            t_ms=T0 + sec * 1000 + k * 100,
            speed_mps=_live_speed(k),
            position_m=at[k],
            door_zone=False,
            **values,
        )
        for k in range(10)
    ]


def test_an_encoder_frozen_beyond_the_top_hides_no_later_overtravel() -> None:
    """The car overtravels at the top (27 m + 0.2 m margin) and its encoder freezes there.
    The car runs on (a live speed reading): the frozen position is reported and no longer
    holds the overtravel open, so the next one, seen only by its code 09, is raised again.
    Before, the frozen position kept the first alert open for the rest of the run and the
    second overtravel raised nothing (seed 1401 of detector_faults_device_faults.toml)."""
    st = RULES.new(support_id())
    out: list[Alert] = []

    def send(sec: int, rows: list[dict[str, Any]], **kw: Any) -> None:
        out.extend(RULES.observe(st, message(rows, seq=sec, **kw), LIM))

    up = [26.5 + 0.1 * k for k in range(10)]  # to 27.4 m, past the top landing's margin
    send(0, _running(0, up, direction=1))
    assert kinds(out) == ["overtravel_top"]
    for sec in range(1, 5):  # the encoder stuck at 27.4 m while the car runs down
        send(sec, _running(sec, up[-1], direction=2))
    assert "overtravel_top" in kinds(out, "cleared")
    stuck = [a for a in out if a.alert_type == "sensor_stuck"]
    assert [a.state for a in stuck] == ["raised"]
    assert stuck[0].evidence["sensors"] == ["position_m"] and st.position_frozen
    # back at the top, the car overtravels again: the encoder shows nothing, code 09 does
    stopped = second(5, position_m=up[-1], door_zone=False, service_mode=0)
    send(5, stopped, faults=[(T0 + 5_300, "09")])
    assert kinds(out).count("overtravel_top") == 2


def test_a_position_held_between_encoder_updates_is_not_a_frozen_encoder() -> None:
    """Some terminals hold the position between encoder readings up to a second apart: the
    car travels at 1 m/s with its position stepping once a second. Nothing is frozen."""
    st, alerts = feed([_running(sec, 3.0 + sec, direction=1) for sec in range(8)])
    assert "sensor_stuck" not in kinds(alerts) and not st.position_frozen


def test_a_speed_reading_stuck_at_travel_speed_through_a_stop_opens_no_door_alarm() -> None:
    """The speed reading sticks at 1.0 m/s while the car travels; it slows to a stop at a
    landing within one message (in the door zone, entered the second before; the reading
    still 1.0), then opens
    its doors. The encoder showed the stop: no door-open-while-running (critical), and the
    frozen reading is reported. The stopping message used to look uniform and skip the
    encoder's check, and the doors opening were judged on the frozen reading."""
    seconds = [travel(s, speed_mps=1.0, position_m=3.0 + s, door_zone=s == 2) for s in range(3)]
    slowing = [5.0 + 1.0 * k / 10 - 0.045 * k * k / 10 for k in range(10)]  # 0.9 → 0.1 m/s
    seconds += [
        [car(t_ms=T0 + 3000 + k * 100, speed_mps=1.0, position_m=x) for k, x in enumerate(slowing)]
    ]
    seconds += [second(4, speed_mps=1.0, position_m=slowing[-1], door=1)]
    _, alerts = feed(seconds)
    assert "door_open_while_running" not in kinds(alerts)
    assert "sensor_stuck" in kinds(alerts)


def test_a_frozen_leveling_reading_judges_no_stop() -> None:
    """The leveling reading stuck at 150 mm from before the ride: the stop is not judged.
    A reading that follows the car, at the same bad value, is."""
    _, frozen = feed(_ride(None, leveling_mm=150.0))
    # (the car found standing is judged on its first reading: nothing says it is frozen)
    assert [a for a in frozen if a.raised_at_ms > T0 + 5_000] == []
    bad = _ride(None)
    for sec in bad:
        for row in sec:
            row["leveling_offset_mm"] += 150.0
    _, healthy = feed(bad)
    assert {"stopping_accuracy", "leveling_accuracy"} <= set(kinds(healthy))


def test_doors_closing_on_an_empty_car_end_its_use() -> None:
    """The last batch before the terminal falls back to heartbeats may be held back (an
    out-of-order message): doors closing on nobody are not a car in use, whose 10-s
    silence would be an outage."""
    st, _ = feed([second(0, door=2), second(1, door=3)])
    assert RULES.tick(st, T0 + 25_000, LIM) == []
    assert kinds(RULES.tick(st, T0 + 70_000, LIM)) == ["device_offline"]
    st, _ = feed([second(0, door=2), second(1, door=3, passengers=True)])
    assert kinds(RULES.tick(st, T0 + 15_000, LIM)) == ["device_offline"]


def test_an_overtravel_seen_only_by_its_code_clears_when_the_car_is_back() -> None:
    """A frozen position encoder shows no overtravel; code 10 raises it, and the car back at
    a landing in service clears it, so that the next overtravel is raised again."""
    out = {"door_zone": False, "service_mode": 0}
    seconds = [second(0), second(1, **out), second(2, **out), second(3), second(4, **out)]
    st = RULES.new(support_id())
    alerts: list[Alert] = []
    for seq, rows in enumerate(seconds):
        codes = [(T0 + seq * 1000 + 100, "10")] if seq in (1, 4) else []
        alerts += RULES.observe(st, message(rows, seq=seq, faults=codes), LIM)
    bottom = [a.state for a in alerts if a.alert_type == "overtravel_bottom"]
    assert bottom == ["raised", "cleared", "raised"]


def test_a_stop_is_judged_at_rest_not_as_the_car_leaves() -> None:
    """15 mm off level: a stop at rest is beyond ±10 mm; the same reading while the car
    already accelerates away below the standstill speed (a re-leveling run starting) is no
    stop to judge."""
    at_rest = [second(s, leveling_offset_mm=15.0, accel_mps2=0.01) for s in range(3)]
    _, alerts = feed([second(0, speed_mps=1.0, door_zone=False), *at_rest[1:]])
    assert "stopping_accuracy" in kinds(alerts)
    leaving = [second(s, leveling_offset_mm=15.0, accel_mps2=0.4) for s in range(1, 3)]
    _, alerts = feed([second(0, speed_mps=1.0, door_zone=False), *leaving])
    assert "stopping_accuracy" not in kinds(alerts)


def test_a_car_found_elsewhere_after_a_silence_is_judged_on_what_is_seen() -> None:
    """Standing level, then 20 s unheard, then found 150 mm higher at 0 m/s for one sample
    as it moves off: the stop began unseen, so its accuracy is not judged on that sample."""
    rows = [car(t_ms=T0 + 21_000, position_m=3.15, leveling_offset_mm=150.0, speed_mps=0.0)]
    rows += [
        car(t_ms=T0 + 21_000 + k * 100, position_m=3.15 + k * 0.05, speed_mps=0.5)
        for k in range(1, 10)
    ]
    _, alerts = feed([second(0, position_m=3.0), rows])
    assert "stopping_accuracy" not in kinds(alerts)


@pytest.mark.parametrize(("readings_mm", "judged"), [([266.5], False), ([266.4, 266.6], True)])
def test_a_leveling_reading_first_seen_after_a_silence_is_judged_once_it_moves(
    readings_mm: list[float], judged: bool
) -> None:
    """A car arriving at a landing; its terminal silent for ten minutes; the car found
    standing there, doors opening, its leveling sensor reading 266.5 mm. Unchanged since,
    it may have frozen unseen in the silence (a dropout hid the freeze, and both accuracy
    alarms were raised on no-fault traffic): nothing is judged on it. A reading that moves
    with the sensor's noise is live: the stop is judged."""

    def found(sec: int, door: int) -> list[dict[str, Any]]:
        return [
            car(t_ms=T0 + sec * 1000 + k * 100, door=door, position_m=0.0,
                leveling_offset_mm=readings_mm[k % len(readings_mm)])
            for k in range(10)
        ]  # fmt: skip

    seconds = [travel(0, speed_mps=0.5, position_m=0.0)]
    seconds += [found(600, 0), found(601, 1), *(found(s, 2) for s in range(602, 606))]
    _, alerts = feed(seconds)
    accuracy = {"stopping_accuracy", "leveling_accuracy"} & set(kinds(alerts))
    assert accuracy == ({"stopping_accuracy", "leveling_accuracy"} if judged else set())


def test_a_car_found_between_levels_with_people_after_a_silence_is_a_trapping_at_once() -> None:
    """An empty car at a landing; the terminal silent for a minute; the car found standing
    between levels, in another place, doors shut, people inside, and let out 8 s later. It
    may have stood there all through the silence: a trapping at once (it used to wait 30 s
    from when it was found, and a trapping that began unseen went unreported)."""
    ride = second(0, position_m=3.0)
    found = {"passengers": True, "door_zone": False, "position_m": 10.5}
    seconds = [ride] + [second(s, **found) for s in range(60, 68)]
    seconds += [second(68, **{**found, "door": 2})]
    _, alerts = feed(seconds)
    (trapped,) = [
        a for a in alerts if a.alert_type == "trapped_between_levels" and a.state == "raised"
    ]
    assert T0 + 60_000 <= trapped.raised_at_ms <= T0 + 61_000
    assert trapped.condition_since_ms < T0 + 60_000


@pytest.mark.parametrize(("zone", "raised_at_s"), [(False, 300), (True, None)])
def test_people_first_seen_after_a_silence_in_a_car_standing_where_it_stood(
    zone: bool, raised_at_s: int | None
) -> None:
    """An empty car standing (between levels, or at a level), doors shut; the terminal
    silent for five minutes; found where it stood (its encoder frozen there), doors shut,
    people inside, let out 20 s later. Nobody boards between landings: they were inside, at
    worst, all through the silence, a trapping at once. At a level they may have just got
    in: the timer runs from when they were seen (nothing within the 20 s)."""
    here = {"door_zone": zone, "position_m": 10.5 if not zone else 9.0}
    seconds = [second(s, **here) for s in range(0, 3)]
    seconds += [second(s, **here, passengers=True) for s in range(300, 320)]
    seconds += [second(320, **here, passengers=True, door=2)]
    _, alerts = feed(seconds)
    trapped = [a for a in alerts if a.alert_type.startswith("trapped_") and a.state == "raised"]
    if raised_at_s is None:
        assert trapped == []
    else:
        (alert,) = trapped
        assert alert.alert_type == "trapped_between_levels"
        assert T0 + raised_at_s * 1000 <= alert.raised_at_ms <= T0 + (raised_at_s + 1) * 1000
        assert alert.condition_since_ms < T0 + 300_000


def test_doors_opening_under_a_speed_reading_frozen_at_travel_speed_raise_nothing() -> None:
    """A speed sensor frozen at 1.0 m/s while the car cruised (the encoder agreed); the
    message in which the car slowed and stopped is held back, so the freeze check starts
    again; the car stands at the landing (the encoder still) and its doors open under the
    same 1.0 reading. Nothing live says it moves: no door open while running (a critical
    false alarm on no-fault seeds 228, 243 and 250)."""
    cruise = [
        car(t_ms=T0 + k * 100, speed_mps=1.0, position_m=20.0 + k * 0.1, door_zone=False,
            direction=1)
        for k in range(10)
    ]  # fmt: skip
    at_landing = [
        car(t_ms=T0 + 2000 + k * 100, speed_mps=1.0, position_m=21.0 + (k % 2) * 0.001,
            door=0 if k == 0 else 1)
        for k in range(10)
    ]  # fmt: skip
    _, alerts = feed([cruise, at_landing])
    assert "door_open_while_running" not in kinds(alerts)


@pytest.mark.parametrize(("lost", "raised"), [(False, False), (True, True)])
def test_one_sample_over_the_speed_limit_then_samples_lost_is_an_overspeed(
    lost: bool, raised: bool
) -> None:
    """A car speeding up through the limit (1.15 m/s): one sample over it ends a message.
    Followed by the next one, back under, it is one sample of noise; followed by a message
    lost (garbled) and then one back under, nothing seen refutes it: an overspeed (one
    whose 1.275-m/s peak was in a garbled message went unreported)."""

    def run(sec: int, speeds: list[float]) -> list[dict[str, Any]]:
        return [
            car(t_ms=T0 + sec * 1000 + k * 100, speed_mps=v, position_m=20.0 + sec + k * 0.1,
                door_zone=False, direction=1)
            for k, v in enumerate(speeds)
        ]  # fmt: skip

    rising = [1.0 + k * 0.01 for k in range(9)] + [1.19]
    seconds = [run(0, [0.99, 1.0, 1.01] * 3 + [1.0]), run(1, rising)]
    seconds += [run(3 if lost else 2, [1.1 - k * 0.01 for k in range(10)])]
    _, alerts = feed(seconds)
    assert ("overspeed" in kinds(alerts)) is raised


@pytest.mark.parametrize(("surge_mps", "raised"), [(None, False), (1.22, True)])
def test_an_overspeed_under_a_frozen_speed_reading_is_read_off_the_encoder(
    surge_mps: float | None, raised: bool
) -> None:
    """The speed reading frozen at 0 while the encoder shows the car cruising at rated
    speed (1.0 m/s); for 1 s the encoder runs faster, to 1.22 m/s at its peak, over the
    limit (1.15). A 0.5-s span of the cautious estimate holds 1.13 m/s at most; the
    encoder's net speed over 0.3 s reaches 1.19 m/s: an overspeed (one to 1.31 × rated
    went unreported, seed 1412). Cruising alone, with the encoder's noise, raises nothing."""
    rng = np.random.default_rng(7)
    rows, p = [], 10.0
    for k in range(60):  # 6 s; the surge from 2.9 s to 3.9 s, its peak at 3.4 s
        v = 1.0 + max(0.0, 1.0 - abs(k - 34) / 5) * ((surge_mps or 1.0) - 1.0)
        p += v * 0.1
        rows.append(
            car(t_ms=T0 + k * 100, speed_mps=0.0, position_m=round(p + rng.normal(0, 0.004), 3),
                door_zone=False, direction=1)
        )  # fmt: skip
    _, alerts = feed([rows[i : i + 10] for i in range(0, 60, 10)])
    assert "sensor_stuck" in kinds(alerts)
    assert ("overspeed" in kinds(alerts)) is raised


@pytest.mark.parametrize(("shut_s", "trapped"), [(2, False), (6, True)])
def test_a_car_found_at_a_level_with_people_after_a_silence(shut_s: int, trapped: bool) -> None:
    """An empty car at a landing; the terminal silent for five minutes; the car found at
    another landing, doors shut, people inside. Doors that open 2 s later are a car that
    just arrived; shut for 6 s (``trapped_silent_at_level_seen_s``, 5) they did not open:
    it may have stood so all through the silence, a trapping (two that began in a 14-min
    dropout were seen for 16 s and 23 s and went unreported, waiting 30 s from when they
    were found)."""
    found = {"passengers": True, "position_m": 9.0}
    seconds = [second(0, position_m=3.0)]
    seconds += [second(s, **found) for s in range(300, 300 + shut_s)]
    seconds += [second(300 + shut_s, **{**found, "door": 1})]
    _, alerts = feed(seconds)
    raised = [a for a in alerts if a.alert_type == "trapped_at_level" and a.state == "raised"]
    assert bool(raised) is trapped
    if trapped:
        assert T0 + 305_000 <= raised[0].raised_at_ms <= T0 + 306_000
        assert raised[0].condition_since_ms < T0 + 300_000


@pytest.mark.parametrize(
    ("seen_s", "zone", "expected"),
    [
        (1, True, []),
        (6, True, ["trapped_at_level"]),
        (1, False, ["trapped_between_levels"]),
    ],
)
def test_a_silent_car_is_taken_as_trapped_only_on_what_was_seen(
    seen_s: int, zone: bool, expected: list[str]
) -> None:
    """Through a silence the trapping timer runs on the car's last state. At a level only
    if the doors were seen shut for a while (a car silent the moment it arrived says nothing
    of its doors); between levels at once. The silence itself is reported either way."""
    ride = travel(0, speed_mps=1.0, door_zone=False, passengers=True, position_m=2.5)
    stand = {"passengers": True, "door_zone": zone, "position_m": 3.0 if zone else 4.5}
    st, alerts = feed([ride, *[second(s, **stand) for s in range(1, 1 + seen_s)]])
    alerts += RULES.tick(st, T0 + 120_000, LIM)
    trapped = [k for k in kinds(alerts) if k.startswith("trapped")]
    assert trapped == expected
    assert "device_offline" in kinds(alerts)


def test_an_encoder_catching_up_is_no_ride() -> None:
    """A position encoder frozen at 4.5 m under a car standing between levels jumps to the
    car's true place (a healthy speed reading stays 0): the stop goes on, and so does the
    trapping timer (it used to restart, and a 43-s trapping went unreported)."""
    stuck = {"door_zone": False, "passengers": True, "load_kg": 80.0}
    seconds = [travel(0, speed_mps=1.0, position_m=4.0, door_zone=False, passengers=True)]
    seconds += [second(s, position_m=4.5, **stuck) for s in range(1, 20)]
    seconds += [second(s, position_m=7.6, **stuck) for s in range(20, 36)]
    _, alerts = feed(seconds)
    (trapped,) = [a for a in alerts if a.alert_type == "trapped_between_levels"]
    assert trapped.condition_since_ms == T0 + 1000


def test_a_frozen_load_cell_is_reported_and_a_live_one_is_not() -> None:
    """People get in, out, in: a load reading the same each time is a frozen load cell
    (``sensor_stuck``, the overload it hides), cleared when the reading lives again."""

    def stop(sec: int, people: bool, load_kg: float) -> list[dict[str, Any]]:
        return second(sec, door=2, passengers=people, load_kg=load_kg)

    frozen = [stop(s, s % 2 == 1, 412.5) for s in range(5)] + [stop(5, False, 3.0)]
    _, alerts = feed(frozen)
    stuck = [a for a in alerts if a.alert_type == "sensor_stuck"]
    assert [a.state for a in stuck] == ["raised", "cleared"]
    assert stuck[0].evidence["sensors"] == ["load_kg"] and stuck[0].severity == "minor"
    live = [stop(s, s % 2 == 1, 80.0 * (s % 2) + 0.1 * s) for s in range(6)]
    _, alerts = feed(live)
    assert "sensor_stuck" not in kinds(alerts)
    # An empty car's live cell reads exactly 0 kg whenever its passengers leave, and the
    # flag changes as it fills (0 kg the moment before the weight lands): the same at each
    # change, yet live between them (it raised a false sensor_stuck on no-fault traffic).
    empty = []
    for s in range(6):
        rows = stop(s, s % 2 == 1, 0.0)
        if s % 2:
            rows = rows[:2] + [{**r, "load_kg": 75.0} for r in rows[2:]]
        empty.append(rows)
    _, alerts = feed(empty)
    assert "sensor_stuck" not in kinds(alerts)


def test_a_speed_reading_met_again_after_unseen_samples_is_no_freeze() -> None:
    """A ride: 0.9 m/s at the end of one message, 1.14 m/s through two the fast path folds
    without looking at each sample, 0.9 m/s again at the start of the next. The same
    reading at both ends of samples the freeze check never saw is no frozen sensor (it
    raised ``sensor_stuck`` on healthy cars on no-fault traffic)."""

    def rows(sec: int, speeds: list[float], p0: float) -> tuple[list[dict[str, Any]], float]:
        out = []
        for k, v in enumerate(speeds):
            p0 = round(p0 + v * 0.1, 4)
            out.append(
                car(
                    t_ms=T0 + sec * 1000 + k * 100,
                    speed_mps=v,
                    position_m=p0,
                    door_zone=False,
                    direction=1,
                )
            )
        return out, p0

    first, p = rows(0, [0.0, 0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.9], 3.0)
    cruise1, p = rows(1, [1.14] * 10, p)
    cruise2, p = rows(2, [1.14] * 10, p)
    last, _ = rows(3, [0.9, 0.8, 0.6, 0.4, 0.2, 0.1, 0.04, 0.0, 0.0, 0.0], p)
    st, alerts = feed([first, cruise1, cruise2, last])
    assert "sensor_stuck" not in kinds(alerts) and not st.speed_frozen


def _doors_open_arriving(arrival: list[dict[str, Any]]) -> list[str]:
    """A car closes its doors, travels a floor up (3 m), then ``arrival``: the alerts."""
    closing = [car(t_ms=T0 + k * 100, door=3) for k in range(10)]
    _, alerts = feed([closing, travel(1, speed_mps=1.0, position_m=2.8, door_zone=False), arrival])
    return kinds(alerts)


def test_doors_opening_while_a_car_levels_in_the_door_zone_raise_no_door_alarm() -> None:
    """In the door zone a car may level and re-level with its doors opening, at up to
    0.3 m/s (GB/T 7588.1-2020 5.12.1.4). A speed reading frozen at 0.06 m/s as the car
    stopped, its doors opening 0.3 s later (before any check can see a freeze), raised a
    false critical ``door_open_while_running`` (6 of 120 no-fault seeds). Faster than that
    in the zone, at any speed outside it, or leaving a landing (no levelling there), the
    alarm stands."""
    frozen = [
        car(t_ms=T0 + 2000 + k * 100, speed_mps=0.06, position_m=3.0, door=1 if k >= 3 else 0)
        for k in range(10)
    ]
    assert "door_open_while_running" not in _doors_open_arriving(frozen)
    fast_in_zone = travel(2, speed_mps=0.5, position_m=3.3, door=1)
    assert "door_open_while_running" in _doors_open_arriving(fast_in_zone)
    slow_outside = travel(2, speed_mps=0.1, position_m=3.5, door_zone=False, door=1)
    assert "door_open_while_running" in _doors_open_arriving(slow_outside)
    closing = [car(t_ms=T0 + k * 100, door=3) for k in range(10)]
    leaving = travel(1, speed_mps=0.1, position_m=0.1, door=1)  # in the zone, doors opening
    _, alerts = feed([closing, leaving])
    assert "door_open_while_running" in kinds(alerts)


def test_a_car_found_levelling_at_another_landing_after_a_silence_raises_no_door_alarm() -> None:
    """The terminal fell silent for 16 min with its car standing at 24 m; its first message
    after shows the car at the bottom landing, in the door zone, its speed reading frozen
    at 0.116 m/s, doors opening 0.5 s in. It entered that zone unseen, so it was not taken
    as arriving: a false critical `door_open_while_running` (no-fault seed 128). A car that
    moved unseen into a door zone entered it; one found at the landing it stood at, moving
    with its doors opening, is leaving it, and the alarm stands."""
    standing = second(0, position_m=24.0)
    settling_m = [0.012, 0.004, -0.002, -0.004, -0.005, -0.003, -0.005, -0.004, -0.005, -0.005]
    found = [
        car(t_ms=T0 + 60_000 + k * 100, speed_mps=0.116, position_m=p, door=1 if k >= 5 else 0)
        for k, p in enumerate(settling_m)
    ]
    _, alerts = feed([standing, found])
    assert "door_open_while_running" not in kinds(alerts)
    leaving = [{**row, "position_m": 24.0 + 0.0116 * k} for k, row in enumerate(found)]
    _, alerts = feed([standing, leaving])
    assert "door_open_while_running" in kinds(alerts)


def test_encoder_noise_of_a_car_standing_with_a_frozen_speed_sensor_is_no_departure() -> None:
    """The speed sensor frozen at 0 m/s, the car's speed is its encoder's. A message is lost
    as the car arrives (the span starts again); the car stands, and as its doors open the
    span just ended holds the last 26 mm of the approach (0.052 m/s) while each sample step
    holds 5–6 mm of encoder noise (0.05–0.06 m/s): a departure with the doors opening, a
    false critical `door_open_while_running` (no-fault seed 151, its positions). The net
    move over the last few samples, lower than one noisy step, bounds the speed too."""
    seconds = []
    for sec in range(4):  # up at 1 m/s, outside the door zone, the reading frozen at 0
        seconds.append(
            [
                car(
                    t_ms=T0 + sec * 1000 + k * 100, position_m=13.0 + sec + 0.1 * k, door_zone=False
                )
                for k in range(10)
            ]
        )
    arrival = [17.827, 17.87, 17.909, 17.94, 17.961, 17.978, 17.989, 17.995, 17.999, 17.998]
    standing = [18.004, 17.999, 18.002, 18.0, 18.001, 18.002, 18.002, 17.999, 18.002, 18.0]
    seconds.append([car(t_ms=T0 + 5000 + k * 100, position_m=p) for k, p in enumerate(arrival)])
    seconds.append(
        [car(t_ms=T0 + 6000 + k * 100, position_m=p, door=1) for k, p in enumerate(standing)]
    )
    for rows in seconds:
        for row in rows:
            row.update(speed_mps=0.0, passengers=True, load_kg=150.0)
    st, alerts = feed(seconds)
    assert st.speed_frozen
    assert "door_open_while_running" not in kinds(alerts)


def test_a_speed_reading_frozen_just_above_standstill_is_a_frozen_sensor() -> None:
    """The reading freezes at 0.07 m/s as the car stops at a landing: within 0.1 m/s of the
    encoder's 0, it kept the car moving for good (and the terminal's first pause a
    `device_offline` for a car in use). The encoder shows the car standing: frozen."""
    arrival = travel(0, speed_mps=1.0, position_m=3.0, door_zone=False)
    stopped = [second(s, speed_mps=0.07, position_m=3.0) for s in range(1, 4)]
    st, alerts = feed([arrival, *stopped])
    assert st.speed_frozen and not st.moving
    assert kinds(alerts) == ["sensor_stuck"]


def test_a_leveling_reading_frozen_mid_message_judges_no_stop() -> None:
    """The leveling reading freezes at the second sample of a message the fast path folds
    (the car running on at 1 m/s), and the car stops at a landing reading its frozen
    −852.7 mm. The fast path took the reading as changed at the message's end, as the car
    last moved, so it was live: `stopping_accuracy` and `leveling_accuracy` on no-fault
    traffic (seed 81). It froze before the car last moved: it judges no stop."""
    first = travel(0, speed_mps=1.0, position_m=1.0, door_zone=False)
    for k, row in enumerate(first):
        row["leveling_offset_mm"] = -1000.0 + 100.0 * k
    frozen = travel(1, speed_mps=1.0, position_m=2.0, door_zone=False)
    for k, row in enumerate(frozen):
        row["leveling_offset_mm"] = -953.9 if k == 0 else -852.7
    stop = [
        car(t_ms=T0 + 2000 + k * 100, position_m=2.0, leveling_offset_mm=-852.7, door=1)
        for k in range(10)
    ]
    _, alerts = feed([first, frozen, stop, second(3, position_m=2.0, leveling_offset_mm=-852.7)])
    assert not {"stopping_accuracy", "leveling_accuracy"} & set(kinds(alerts))


def test_readings_alike_across_a_jump_in_time_are_no_frozen_sensor() -> None:
    """A car at 1 m/s: the last reading of one message and the first two of the next are
    0.999 by chance, and the next message's times are 1 s later than its samples follow
    on (its terminal's clock correction moved by a second; or a message lost between). The
    span looked 1.2 s long with the car 0.2 m further: frozen, a false `sensor_stuck`
    (no-fault seed 100). A step over twice the one before starts the span again."""

    def ride(sec: int, start_m: float, readings: list[float], shift_ms: int = 0) -> list:
        return [
            car(
                t_ms=T0 + sec * 1000 + k * 100 + shift_ms,
                speed_mps=v,
                position_m=round(start_m + 0.1 * k, 3),
                door_zone=k == 5,  # passing a landing: each sample judged, no fast path
            )
            for k, v in enumerate(readings)
        ]

    noisy = [1.001, 0.996, 1.004, 0.997, 1.002, 0.998, 1.005, 0.994, 1.003]
    before = ride(0, 10.0, [*noisy, 0.999])
    after = ride(1, 11.0, [0.999, 0.999, *noisy[:8]], shift_ms=1000)
    st, alerts = feed([before, after])
    assert not st.speed_frozen and kinds(alerts) == []


@pytest.mark.parametrize(("settled_mm", "raised"), [(2.0, False), (30.0, True)])
def test_leveling_accuracy_is_judged_on_a_car_at_rest(settled_mm: float, raised: bool) -> None:
    """Doors open the moment the car reads standing, 30 mm off for 0.3 s while it settles:
    no ``leveling_accuracy`` unless it is still off once it has stood ``stop_confirm_s``,
    as the stopping accuracy waits."""
    seconds = [travel(0, speed_mps=1.0, position_m=3.0)]
    seconds += [
        [
            car(
                t_ms=T0 + 1000 + k * 100,
                position_m=3.0,
                door=2,
                leveling_offset_mm=30.0 if k < 3 else settled_mm,
            )
            for k in range(10)
        ]
    ]
    seconds += [second(2, position_m=3.0, door=2, leveling_offset_mm=settled_mm)]
    _, alerts = feed(seconds)
    assert ("leveling_accuracy" in kinds(alerts)) is raised


def test_a_leveling_reading_that_runs_off_is_a_car_moving_not_a_level() -> None:
    """Seed 1410: a car leaves a landing with its doors open, its speed reading frozen at
    0 and the encoder's estimate a moment behind; its leveling reading runs off −7, −15,
    −27, −46 mm in 100-ms steps. That is the car moving (``door_open_while_running``), not
    a ``leveling_accuracy`` fault. The same readings, steady, are one."""
    seconds = [travel(0, speed_mps=1.0, position_m=3.0)]
    seconds += [second(s, position_m=3.0, door=2, leveling_offset_mm=-1.0) for s in (1, 2)]
    leaving = [-1.0, -1.1, -2.8, -7.0, -14.6, -26.6, -45.9, -72.8, -106.7, -150.0]
    seconds += [
        [
            car(t_ms=T0 + 3000 + k * 100, position_m=3.0, door=2, leveling_offset_mm=x)
            for k, x in enumerate(leaving)
        ]
    ]
    _, alerts = feed(seconds)
    assert "leveling_accuracy" not in kinds(alerts)
    seconds[-1] = second(3, position_m=3.0, door=2, leveling_offset_mm=-45.9)
    _, alerts = feed(seconds)
    assert "leveling_accuracy" in kinds(alerts)


def test_a_leveling_reading_that_unfreezes_as_the_car_stops_judges_the_stop_on_live_ones() -> None:
    """Seed 237 (no faults but the device's): the leveling sensor stuck at −403 mm through
    the ride came back 0.1 s before the stop was judged. Its frozen readings were in the
    stop's median, and a car level at its landing raised ``stopping_accuracy``."""
    seconds = _ride(None)
    for sec in seconds:
        for row in sec:
            if T0 + 2_000 <= row["t_ms"] < T0 + 5_600:  # stuck as the car set off
                row["leveling_offset_mm"] = -403.0
    _, alerts = feed(seconds)
    assert "stopping_accuracy" not in kinds(alerts)
