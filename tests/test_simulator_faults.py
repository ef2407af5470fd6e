"""Injected faults: every one is labelled, and visible in the signals where the label says."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from foundation.contract import COLUMNS
from simulator import FileOutput, simulate

from .simulator_support import (
    DEVICE_FAULTS,
    PHYSICAL_FAULTS,
    START,
    fleet,
    read_labels,
    read_messages,
    run,
    scenario,
    signals,
    window,
)

OVERSPEED_RATIO, OVERLOAD_RATIO, ZONE_M, H_M = 1.15, 1.10, 0.2, 3.0


@pytest.fixture(scope="module")
def physical(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cars = fleet(8)
    path = tmp_path_factory.mktemp("faults") / "physical.jsonl"
    summary = run(
        scenario("physical", seed=7, faults=PHYSICAL_FAULTS, traffic={"intensity": 3.0}),
        cars,
        path,
        duration_s=1800.0,
    )
    messages, _, bad = read_messages(path)
    return {
        "summary": summary,
        "labels": read_labels(path),
        "sig": signals(messages),
        "bad": bad,
        "cars": {e.registration_code: e for e in cars},
    }


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("faults") / "device.jsonl"
    summary = run(
        scenario("device", seed=5, faults=DEVICE_FAULTS), fleet(6), path, duration_s=1800.0
    )
    messages, raw, bad = read_messages(path)
    return {
        "summary": summary,
        "labels": read_labels(path),
        "messages": messages,
        "raw": raw,
        "bad": bad,
        "path": path,
    }


def _labels(run: dict[str, Any], fault_type: str) -> list[dict[str, Any]]:
    found = [lb for lb in run["labels"] if lb["fault_type"] == fault_type]
    assert found, f"no {fault_type} label was injected"
    return found


def _in(run: dict[str, Any], label: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    s = run["sig"][label["elevator_id"]]
    w = window(s, label["onset_ms"], label["ended_ms"])
    assert w.any(), label
    assert s["t_ms"][w][0] == label["onset_ms"], "onset is a sample time"
    return s, w


def test_every_fault_type_is_labelled(physical: dict[str, Any], device: dict[str, Any]) -> None:
    seen = {lb["fault_type"] for lb in physical["labels"] + device["labels"]}
    assert set(PHYSICAL_FAULTS) | set(DEVICE_FAULTS) | {"alarm_true"} <= seen
    for lb in physical["labels"] + device["labels"]:
        assert lb["label_id"] >= 1 and len(lb["elevator_id"]) == 20
        assert lb["ended_ms"] is None or lb["ended_ms"] >= lb["onset_ms"]
    assert not physical["bad"]


def test_trapped_between_levels(physical: dict[str, Any]) -> None:
    for lb in _labels(physical, "trapped_between_levels"):
        s, w = _in(physical, lb)
        assert not s["door_zone"][w].any()
        assert (s["door"][w] == 0).all() and s["passengers"][w].all()
        assert (s["speed_mps"][w] == 0).all()
        assert lb["gb_code"] == "11"
        raised = {c for t, c in s["fault_codes"] if lb["onset_ms"] <= t <= (lb["ended_ms"] or t)}
        assert set(lb["params"]["codes"]) <= raised


def test_trapped_at_level(physical: dict[str, Any]) -> None:
    for lb in _labels(physical, "trapped_at_level"):
        s, w = _in(physical, lb)
        assert s["door_zone"][w].all() and (s["door"][w] == 0).all()
        assert s["passengers"][w].all() and (s["speed_mps"][w] == 0).all()
        assert "03" in lb["params"]["codes"]


def test_overspeed_and_overload(physical: dict[str, Any]) -> None:
    for lb in _labels(physical, "overspeed"):
        s, w = _in(physical, lb)
        rated = physical["cars"][lb["elevator_id"]].rated_speed_mps
        # True speed exceeds 115 % throughout; noise may dip the edge samples a little.
        assert (s["speed_mps"][w] > OVERSPEED_RATIO * rated - 0.03).all()
        assert s["speed_mps"][w].max() > OVERSPEED_RATIO * rated
    for lb in _labels(physical, "overload"):
        s, w = _in(physical, lb)
        rated = physical["cars"][lb["elevator_id"]].rated_load_kg
        assert (s["load_kg"][w] > OVERLOAD_RATIO * rated).all()
        assert (s["speed_mps"][w] == 0).all() and (s["door"][w] == 2).all()


def test_overtravel_and_stops_outside_the_door_zone(physical: dict[str, Any]) -> None:
    for kind, code in (("overtravel_top", "09"), ("overtravel_bottom", "10")):
        for lb in _labels(physical, kind):
            s, w = _in(physical, lb)
            top_m = (physical["cars"][lb["elevator_id"]].floors - 1) * H_M
            beyond = s["position_m"][w] - top_m if code == "09" else -s["position_m"][w]
            assert (beyond > ZONE_M - 0.01).all()
            assert any(c == code and lb["onset_ms"] <= t for t, c in s["fault_codes"])
    for lb in _labels(physical, "stop_outside_door_zone"):
        s, w = _in(physical, lb)
        assert not s["door_zone"][w].any() and (s["speed_mps"][w] == 0).all()
        assert not s["passengers"][w].any()
        assert any(c == "04" and lb["onset_ms"] <= t for t, c in s["fault_codes"])
    for lb in _labels(physical, "runtime_limiter"):
        s, w = _in(physical, lb)
        assert (lb["onset_ms"], "06") in s["fault_codes"]
        assert (s["speed_mps"][w] == 0).all() and (s["service_mode"][w] == 0).all()


def test_doors_open_while_moving(physical: dict[str, Any]) -> None:
    for lb in _labels(physical, "unintended_movement"):
        s, w = _in(physical, lb)
        assert not s["door_zone"][w].any() and (s["door"][w] == 2).all()
        assert (lb["onset_ms"], "05") in s["fault_codes"]
    for lb in _labels(physical, "door_open_while_running"):
        s, w = _in(physical, lb)
        # Speed noise may round the slowest first and last samples down to zero.
        assert (s["door"][w] == 2).all() and (s["speed_mps"][w][1:-1] > 0).all()


def test_power_loss_alarms_and_reopening(physical: dict[str, Any]) -> None:
    for lb in _labels(physical, "power_loss"):
        s, w = _in(physical, lb)
        assert (lb["onset_ms"], "41") in s["event_codes"]
        if lb["ended_ms"] is not None:
            assert (lb["ended_ms"] + 100, "40") in s["event_codes"]  # the tick after
        after_stop = w & (s["speed_mps"] == 0)
        assert (s["service_mode"][after_stop] == 0).all()
    for kind in ("alarm_nuisance", "alarm_true"):
        for lb in _labels(physical, kind):
            s, w = _in(physical, lb)
            assert s["alarm"][w].all() and (lb["onset_ms"], "90") in s["event_codes"]
    for lb in _labels(physical, "door_reopening"):
        s, w = _in(physical, lb)
        door = s["door"][w]
        reopens = int(((door[:-1] == 3) & (door[1:] == 1)).sum())
        assert reopens >= lb["params"]["reopenings"] >= 2


def test_degradation_over_days(physical: dict[str, Any]) -> None:
    checked = 0
    for lb in _labels(physical, "leveling_drift"):
        s, w = _in(physical, lb)
        at_level = w & (s["door"] == 2) & (s["speed_mps"] == 0)
        days = (s["t_ms"][at_level] - lb["onset_ms"]) / 86_400_000
        expected = abs(lb["params"]["mm_per_day"]) * days
        # The drift grows on top of the normal ±10 mm stopping accuracy.
        assert (np.abs(s["leveling_offset_mm"][at_level]) >= expected - 12).all()
        checked += int((expected > 20).sum())
    assert checked > 0, "some stops drifted beyond ±20 mm"
    for lb in _labels(physical, "door_degradation"):
        s, w = _in(physical, lb)
        door, t = s["door"], s["t_ms"]
        starts = np.flatnonzero((door[1:] == 1) & (door[:-1] == 0)) + 1
        for a in starts[w[starts]]:
            b = a + int(np.argmax(door[a:] != 1))
            if b == a or t[b] - t[a] != (b - a) * 100:
                continue
            days = (t[a] - lb["onset_ms"]) / 86_400_000
            expected_s = lb["params"]["opening_s"] * (1 + lb["params"]["slowdown_per_day"] * days)
            assert abs((b - a) / 10 - expected_s) <= 0.15


def test_outputs_decode_and_malformed_lines_do_not(device: dict[str, Any]) -> None:
    malformed = _labels(device, "malformed")
    assert len(device["bad"]) == len(malformed) == device["summary"].malformed
    assert device["summary"].messages == len(device["bad"]) + len(device["raw"])


def test_duplicates_and_out_of_order(device: dict[str, Any]) -> None:
    lines: dict[tuple[str, int], list[bytes]] = defaultdict(list)
    order: dict[tuple[str, int], int] = {}
    for pos, (m, raw) in enumerate(zip(device["messages"], device["raw"], strict=True)):
        lines[m.elevator_id, m.seq].append(raw)
        order.setdefault((m.elevator_id, m.seq), pos)
    for lb in _labels(device, "duplicate"):
        copies = lines[lb["elevator_id"], lb["params"]["seq"]]
        assert len(copies) == 2 and copies[0] == copies[1]
    assert sum(len(v) == 2 for v in lines.values()) == len(_labels(device, "duplicate"))
    late = 0
    for lb in _labels(device, "out_of_order"):
        eid, seq, after = lb["elevator_id"], lb["params"]["seq"], lb["params"]["emitted_after_seq"]
        if (eid, seq) in order and (eid, after) in order:
            assert order[eid, seq] > order[eid, after]
            late += 1
    assert late > 0


def test_dropout_stuck_sensor_and_clock_skew(device: dict[str, Any]) -> None:
    by_car: dict[str, list[Any]] = defaultdict(list)
    for m in device["messages"]:
        by_car[m.elevator_id].append(m)
    for lb in _labels(device, "dropout"):
        for m in by_car[lb["elevator_id"]]:
            assert not lb["onset_ms"] <= m.samples.t_ms[0] <= lb["ended_ms"]
    for lb in _labels(device, "stuck_sensor"):
        values = [
            v
            for m in by_car[lb["elevator_id"]]
            for t, v in zip(m.samples.t_ms, getattr(m.samples, lb["params"]["column"]), strict=True)
            if lb["onset_ms"] <= t <= lb["ended_ms"]
        ]
        assert len(set(values)) <= 1
    jumps = 0
    for lb in _labels(device, "clock_skew"):
        skew = lb["params"]["skew_ms"]  # at least 120 s in magnitude in this scenario
        starts = [m.samples.t_ms[0] for m in by_car[lb["elevator_id"]]]
        # Every message the terminal sent in the window carries the skewed time ...
        assert not [t for t in starts if lb["onset_ms"] <= t <= lb["ended_ms"]]
        # ... and there are such messages, shifted by exactly the skew.
        jumps += sum(lb["onset_ms"] <= t - skew <= lb["ended_ms"] for t in starts)
    assert jumps > 0


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    cars = fleet(4)
    faults = {**PHYSICAL_FAULTS, **DEVICE_FAULTS}
    paths = [tmp_path / f"{n}.jsonl" for n in ("a", "b", "c")]
    for path, seed in zip(paths, (1, 1, 2), strict=True):
        run(scenario("determinism", seed=seed, faults=faults), cars, path, duration_s=600.0)
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b and len(a) > 100_000
    assert (tmp_path / "a.labels.jsonl").read_bytes() == (tmp_path / "b.labels.jsonl").read_bytes()
    assert a != c


def test_parquet_has_one_row_per_sample(tmp_path: Path) -> None:
    sc = scenario(
        "parquet",
        seed=3,
        faults={"malformed": {"probability": 0.01}, "power_loss": {"rate_per_day": 500}},
    )
    cars = fleet(3)
    summary = simulate(
        sc,
        cars,
        start=START,
        duration_s=300.0,
        output=FileOutput(tmp_path / "out.parquet"),
        progress=False,
    )
    run(sc, cars, tmp_path / "out.jsonl", duration_s=300.0)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == summary.samples
    assert table.column_names == ["elevator_id", "seq", "kind", *COLUMNS, "faults", "events"]
    messages, _, bad = read_messages(tmp_path / "out.jsonl")
    assert len(bad) == summary.malformed > 0
    assert table.num_rows == sum(len(m.samples.t_ms) for m in messages)
    events = Counter(c for codes in table.column("events").to_pylist() for c in codes)
    assert events["41"] == sum(e.code == "41" for m in messages for e in m.events) > 0


def test_labels_file_has_iso_and_ms_times(device: dict[str, Any]) -> None:
    assert device["summary"].labels_path == str(device["path"].with_name("device.labels.jsonl"))
    for lb in device["labels"]:
        onset = dt.datetime.fromisoformat(lb["onset"])
        assert round(onset.timestamp() * 1000) == lb["onset_ms"]
        assert lb["run_id"] == device["summary"].run_id
    assert [lb["label_id"] for lb in device["labels"]] == list(range(1, len(device["labels"]) + 1))


def test_a_message_fault_is_labelled_in_true_time_under_a_clock_skew(
    device: dict[str, Any],
) -> None:
    """A duplicated or reordered message's label says when it was sent in true time, as
    every label does, not the skewed stamp it carries (scoring matches labels to alerts in
    true time)."""
    skews = _labels(device, "clock_skew")
    by_seq = {(m.elevator_id, m.seq): m for m in device["messages"]}
    under_skew = 0
    for lb in device["labels"]:
        key = (lb["elevator_id"], lb["params"].get("seq"))
        if lb["fault_type"] not in ("duplicate", "out_of_order") or key not in by_seq:
            continue
        shift = by_seq[key].samples.t_ms[0] - lb["onset_ms"]
        held = [
            s["params"]["skew_ms"]
            for s in skews
            if s["elevator_id"] == lb["elevator_id"]
            and s["onset_ms"] <= lb["onset_ms"]
            and (s["ended_ms"] is None or lb["onset_ms"] < s["ended_ms"])
        ]
        assert shift == (held[0] if held else 0), lb
        under_skew += bool(held)
    assert under_skew > 0


def test_a_stop_whose_doors_reopen_three_times_is_labelled_whatever_the_cause(
    tmp_path: Path,
) -> None:
    """No door fault injected, but doors that reverse often by chance (and on calls at the
    landing): every stop with three reversals is a ``door_reopening`` label, as the signals
    show it, so that the detector raising it is no false alarm."""
    path = tmp_path / "doors.jsonl"
    run(scenario("doors", seed=9, doors={"reopen_probability": 0.5}), fleet(4), path, 900.0)
    labels = [lb for lb in read_labels(path) if lb["fault_type"] == "door_reopening"]
    assert labels and all(lb["params"].get("by_chance") for lb in labels)
    sig = signals(read_messages(path)[0])
    labelled = 0
    for eid, s in sig.items():
        door = s["door"]
        reverse_ms = s["t_ms"][1:][(door[:-1] == 3) & (door[1:] == 1)]
        for lb in (lb for lb in labels if lb["elevator_id"] == eid):
            inside = (reverse_ms >= lb["onset_ms"]) & (reverse_ms <= lb["ended_ms"])
            assert int(inside.sum()) == lb["params"]["reopenings"] >= 3
            labelled += int(inside.sum())
    assert labelled > 0
