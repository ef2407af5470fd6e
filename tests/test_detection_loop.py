"""The one detection loop (:class:`streams.ingest.Ingest`) and its clock, in-process with
explicit timestamps: what it raises does not depend on the pace or the batching of the
stream, and a silent partition still escalates a car last seen trapped."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import msgspec

from detectors.alerts import Alert
from detectors.testing import car, message
from detectors.thresholds import ElevatorLimits, Thresholds
from streams.ingest import Ingest, RawRecord

from . import detectors_support as support

PARTITIONS = 3


def _records(path: Path) -> list[RawRecord]:
    out = []
    for offset, line in enumerate(path.read_bytes().splitlines()):
        key = msgspec.json.decode(line).get("elevator_id", "") if line.startswith(b"{") else ""
        partition = zlib.crc32(str(key).encode()) % PARTITIONS
        out.append(RawRecord(str(key).encode(), line, partition, offset))
    return out


def _run(batches: list[list[RawRecord]], limits: dict[str, ElevatorLimits]) -> list[str]:
    ingest = Ingest(0, limits_for=limits.__getitem__, thresholds=Thresholds())
    alerts: list[Alert] = []
    for batch in [*batches, []]:  # the end of the stream: a turn with nothing new
        alerts += ingest.process(batch).alerts
        alerts += ingest.tick().alerts
    return sorted(repr(a.to_dict()) for a in alerts)


def test_the_same_stream_raises_the_same_alerts_at_any_pace(tmp_path: Path) -> None:
    """One record per turn, large batches, and one partition read long before the others
    (a worker catching up a backlog): field for field the same alerts, silence ones too."""
    cars = support.elevators(6)
    path = tmp_path / "run.jsonl"
    support.run_simulation(path, support.FAULTS_TOML, cars, 900.0, 5)
    limits = {e.registration_code: ElevatorLimits.of(e) for e in cars}
    records = _records(path)
    one_by_one = _run([[r] for r in records], limits)
    big = _run([records[i : i + 700] for i in range(0, len(records), 700)], limits)
    by_partition = [r for p in range(PARTITIONS) for r in records if r.partition == p]
    skewed = _run([by_partition[i : i + 50] for i in range(0, len(by_partition), 50)], limits)
    assert one_by_one == big == skewed
    assert sum("'device_offline'" in a for a in one_by_one) > 0  # the scenario's dropouts


class _WallClock:
    """A wall clock the test sets (an injected clock, as the worker injects time.time)."""

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms


def test_a_silent_partition_still_escalates_a_car_last_seen_trapped() -> None:
    """Every terminal on the partition goes silent (the car's included): after a heartbeat
    timeout of wall time the partition's clock runs on with the wall clock, and the car last
    seen standing between floors with people inside is escalated."""
    t0 = 1_700_000_000_000
    eid = "32070620200000000001"
    lim = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000.0, floors=10)
    wall = _WallClock(t0)
    ingest = Ingest(0, limits_for=lambda _: lim, wall_clock_ms=wall)
    stuck: dict[str, Any] = {"position_m": 4.5, "door_zone": False, "passengers": True}
    alerts: list[Alert] = []
    for sec in range(5):
        rows = [car(t_ms=t0 + sec * 1000 + k * 100, **stuck) for k in range(10)]
        value = msgspec.json.encode(message(rows, elevator_id=eid, seq=sec))
        alerts += ingest.process([RawRecord(eid.encode(), value, 0, sec)]).alerts
        alerts += ingest.tick().alerts
        wall.ms += 1000
    raised = lambda: {a.alert_type for a in alerts if a.state == "raised"}  # noqa: E731
    assert "trapped_between_levels" not in raised()
    wall.ms += 60_000  # a minute of silence: within a heartbeat timeout, stream time waits
    alerts += ingest.tick().alerts
    assert "device_offline" not in raised()
    wall.ms += 40_000  # 65 s of grace, then 35 s on the wall clock
    alerts += ingest.tick().alerts
    assert {"device_offline", "trapped_between_levels"} <= raised()


def test_online_scores_resume_from_a_checkpoint_with_their_cohort_models(tmp_path: Path) -> None:
    """A worker restarted mid-stream from its last checkpoint (elevator states and each
    partition's cohort models, as the worker saves them) scores every later trip and minute
    exactly as a run that never stopped."""
    cars = support.elevators(12)
    path = tmp_path / "run.jsonl"
    support.run_simulation(path, support.FAULTS_TOML, cars, 1200.0, 5)
    # A short warm-up, so the cohort models score within a 20-minute stream.
    th = Thresholds(online_cohort_warmup=10, online_warmup_trips=15, online_warmup_windows=8)
    limits = {e.registration_code: ElevatorLimits.of(e) for e in cars}
    records = _records(path)
    half = len(records) // 2

    def scores(ingest: Ingest, records: list[RawRecord]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for r in records:
            batch = ingest.process([r])
            out += [(t.elevator_id, t.start_ms, t.online_score) for t in batch.trips]
            out += [(w.elevator_id, w.bucket_start_ms, w.online_score) for w in batch.windows]
        return out

    whole = scores(Ingest(0, limits_for=limits.__getitem__, thresholds=th), records)
    first = Ingest(0, limits_for=limits.__getitem__, thresholds=th)
    head = scores(first, records[:half])
    saved = {e: st.encode() for e, st in first.states.items()}
    cohorts = {p: first.cohort_checkpoint(p) for p in range(PARTITIONS)}
    assert any(cohorts.values())
    second = Ingest(
        0,
        limits_for=limits.__getitem__,
        thresholds=th,
        load_state=saved.get,
        load_cohorts=cohorts.get,
    )
    assert head + scores(second, records[half:]) == whole
    scored = [s for *_, s in whole if s is not None]
    assert len(scored) > 50 and all(0.0 <= s <= 1.0 for s in scored)
    # Without the cohort models the restarted run scores differently: the check has teeth.
    amnesiac = Ingest(0, limits_for=limits.__getitem__, thresholds=th, load_state=saved.get)
    assert head + scores(amnesiac, records[half:]) != whole
