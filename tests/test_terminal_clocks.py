"""Each terminal on its own clock (:mod:`detectors.clock` in :class:`streams.ingest.Ingest`):
a terminal whose clock is off is corrected or quarantined against its messages' arrival,
raises ``clock_fault`` once, and moves nobody else's time. In-process, explicit times."""

from __future__ import annotations

import datetime as dt
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from detectors.alerts import Alert
from detectors.clock import ClockState, judge_clock
from detectors.testing import car, message
from detectors.thresholds import ElevatorLimits, Thresholds
from streams.ingest import ElevatorState, Ingest, RawRecord

from .simulator_support import device_faults_stream

T0_MS = 1_740_963_600_000  # 2025-03-03T01:00:00Z
LIMITS = ElevatorLimits(rated_speed_mps=1.0, rated_load_kg=1000.0, floors=10)
FLEET = [f"320706202000000000{i:02d}" for i in range(1, 7)]
ODD_ONE = FLEET[-1]
TRAPPED: dict[str, Any] = {"position_m": 4.5, "door_zone": False, "passengers": True}


class Fleet:
    """A partition of terminals sending one message a second, each stamped with its own
    clock, and arriving at the true time."""

    def __init__(self, ids: list[str] = FLEET) -> None:
        self.ingest = Ingest(0, limits_for=lambda _: LIMITS, thresholds=Thresholds())
        self.seq = dict.fromkeys(ids, 0)
        self.offset = 0
        self.alerts: list[Alert] = []
        self.quarantined: list[str] = []

    def send(self, eid: str, true_ms: int, stamp_ms: int, **values: Any) -> None:
        rows = [car(t_ms=stamp_ms + k * 100, **values) for k in range(10)]
        value = msgspec.json.encode(message(rows, elevator_id=eid, seq=self.seq[eid]))
        self.seq[eid] += 1
        record = RawRecord(eid.encode(), value, 0, self.offset, true_ms + 1000)
        self.offset += 1
        batch = self.ingest.process([record])
        self.alerts += batch.alerts + self.ingest.tick().alerts
        self.quarantined += [reason for _, reason in batch.quarantined]

    def raised(self, alert_type: str) -> list[Alert]:
        return [a for a in self.alerts if a.alert_type == alert_type and a.state == "raised"]


def test_one_message_from_the_year_2999_moves_nobody_s_time() -> None:
    """The issue's hostile heartbeat: quarantined with its reason, ``clock_fault`` raised and
    cleared; no ``device_offline`` for the others, and its own car is not blinded."""
    fleet = Fleet()
    y2999_ms = round(dt.datetime(2999, 6, 1, tzinfo=dt.UTC).timestamp() * 1000)
    for sec in range(120):
        true_ms = T0_MS + sec * 1000
        for eid in FLEET:
            if eid == ODD_ONE and sec == 20:
                fleet.send(eid, true_ms, y2999_ms)
            elif eid == ODD_ONE and sec >= 40:
                fleet.send(eid, true_ms, true_ms, **TRAPPED)
            else:
                fleet.send(eid, true_ms, true_ms)
    assert fleet.raised("device_offline") == []
    assert len(fleet.quarantined) == 1 and "clock fault" in fleet.quarantined[0]
    (fault,) = fleet.raised("clock_fault")
    assert fault.elevator_id == ODD_ONE
    assert fault.evidence["offset_ms"] == y2999_ms - (T0_MS + 20_000)
    assert [a.state for a in fleet.alerts if a.alert_type == "clock_fault"] == [
        "raised",
        "cleared",
    ]
    (trapped,) = fleet.raised("trapped_between_levels")
    assert trapped.elevator_id == ODD_ONE
    assert trapped.condition_since_ms <= T0_MS + 41_000
    assert fleet.ingest.stream_time_ms < T0_MS + 121_000


@pytest.mark.parametrize("skew_s", [-600, -90, 90, 600])
def test_a_steady_skew_is_corrected_and_its_trapping_still_detected(skew_s: int) -> None:
    """One terminal runs ``skew_s`` off from its 90th second on (once the partition is
    known to be read in real time) and is trapped from the 120th: one ``clock_fault`` with
    the offset, the trapping raised at the true time (its samples corrected), and no one
    else offline."""
    fleet = Fleet()
    skew_ms = skew_s * 1000
    for sec in range(210):
        true_ms = T0_MS + sec * 1000
        for eid in FLEET:
            if eid != ODD_ONE or sec < 90:
                fleet.send(eid, true_ms, true_ms)
            else:
                fleet.send(eid, true_ms, true_ms + skew_ms, **(TRAPPED if sec >= 120 else {}))
    (fault,) = fleet.raised("clock_fault")
    assert fault.elevator_id == ODD_ONE
    assert fault.evidence["offset_ms"] == skew_ms
    assert not [a for a in fleet.alerts if a.alert_type == "clock_fault" and a.state == "cleared"]
    (trapped,) = fleet.raised("trapped_between_levels")
    assert T0_MS + 120_000 <= trapped.condition_since_ms <= T0_MS + 121_000
    assert trapped.raised_at_ms <= T0_MS + 121_000 + 35_000
    assert fleet.raised("device_offline") == []
    assert fleet.quarantined == []


def test_a_clock_that_comes_back_clears_the_fault() -> None:
    th = Thresholds()
    st = ClockState()
    eid = FLEET[0]
    # within the tolerance: nothing to correct, nothing raised
    assert judge_clock(st, eid, T0_MS, T0_MS + 900, T0_MS + 3_000, True, th) == (0, None, [], False)
    ahead = judge_clock(st, eid, T0_MS + 61_000, T0_MS + 61_900, T0_MS + 2_000, True, th)
    assert ahead.correction_ms == 59_900 and ahead.alerts[0].state == "raised"
    assert ahead.alerts[0].severity != "critical"
    # a resend (not in sequence order) is corrected but measures nothing
    late = judge_clock(st, eid, T0_MS + 1_000, T0_MS + 1_900, T0_MS + 30_000, False, th)
    assert late == (59_900, None, [], False)
    back = judge_clock(st, eid, T0_MS + 4_000, T0_MS + 4_900, T0_MS + 5_000, True, th)
    assert back.correction_ms == 0
    assert [(a.state, a.alert_key) for a in back.alerts] == [("cleared", ahead.alerts[0].alert_key)]


def test_the_clock_is_checkpointed_with_the_elevator() -> None:
    fleet = Fleet()
    for sec in range(100):
        for eid in FLEET:
            stamp = T0_MS + sec * 1000 + (300_000 if eid == ODD_ONE and sec >= 70 else 0)
            fleet.send(eid, T0_MS + sec * 1000, stamp)
    saved = fleet.ingest.states[ODD_ONE]
    restored = ElevatorState.decode(saved.encode(), fleet.ingest.detectors)
    assert restored.clock == saved.clock
    assert restored.clock.offset_ms == 300_000 and restored.clock.since_ms is not None


def test_a_replay_faster_than_real_time_leaves_clocks_alone() -> None:
    """Records published at 10× real time, a minute of them to one Kafka timestamp:
    arrival times do not resolve send times, so no clock is judged (except beyond
    ``clock_offset_max_s``)."""
    fleet = Fleet()
    for sec in range(1200):
        true_ms = T0_MS + sec * 1000
        for i, eid in enumerate(FLEET):
            if (sec + i * 5) % 30 == 0:  # heartbeats only: a quiet, sparse partition
                value = msgspec.json.encode(
                    message([car(t_ms=true_ms)], elevator_id=eid, seq=fleet.seq[eid])
                )
                fleet.seq[eid] += 1
                arrival_ms = T0_MS + (sec // 60) * 6000
                batch = fleet.ingest.process([RawRecord(eid.encode(), value, 0, sec, arrival_ms)])
                fleet.alerts += batch.alerts + fleet.ingest.tick().alerts
    assert fleet.raised("clock_fault") == []
    assert fleet.raised("device_offline") == []


def _replayed(lines: list[bytes], speed: float | None) -> tuple[set[tuple[str, int]], list[Alert]]:
    """The windows and clock faults of a fresh worker reading ``lines`` as a replay publishes
    them: paced by their first sample times at ``speed``, or all at once (None), on four
    partitions."""
    ingest = Ingest(0, limits_for=lambda _: LIMITS, thresholds=Thresholds())
    windows: set[tuple[str, int]] = set()
    faults: list[Alert] = []
    first_ms: int | None = None
    arrival_ms = T0_MS
    for offset, line in enumerate(lines):
        try:
            msg = msgspec.json.decode(line)
            eid, event_ms = msg["elevator_id"], msg["samples"]["t_ms"][0]
        except (msgspec.DecodeError, KeyError, IndexError, TypeError):
            eid, event_ms = "", None
        if event_ms is not None:
            first_ms = event_ms if first_ms is None else first_ms
            if speed is not None:
                arrival_ms = max(arrival_ms, T0_MS + round((event_ms - first_ms) / speed))
        record = RawRecord(eid.encode(), line, zlib.crc32(eid.encode()) % 4, offset, arrival_ms)
        batch = ingest.process([record])
        windows |= {(w.elevator_id, w.bucket_start_ms) for w in batch.windows}
        faults += [a for a in batch.alerts if a.alert_type == "clock_fault"]
    return windows, faults


def test_a_replay_judges_no_clock_whatever_its_pace(tmp_path: Path) -> None:
    """A fleet with every device fault (clock skew of seconds included) replayed to a fresh
    worker at 20x real time, and all at once: no clock is judged, and both store the same
    windows. In the first minute a 20x replay's latest lags agree, yet one published a
    second before the others lags 19 s more: judged as real time, a skewed clock was
    "corrected" in one run and not the other, and a SIGKILLed worker stored windows a second
    off from an uninterrupted run's."""
    out = device_faults_stream(tmp_path / "run.jsonl")
    lines = out.read_bytes().splitlines()
    at_once, at_once_faults = _replayed(lines, None)
    paced, paced_faults = _replayed(lines, 20.0)
    assert at_once_faults == [] and paced_faults == []
    assert len(at_once) > 1000
    assert paced == at_once


def test_the_module_examples_hold() -> None:
    import doctest

    import detectors.clock

    assert doctest.testmod(detectors.clock).failed == 0


@pytest.mark.parametrize("sent_before", [30, 500])
def test_a_terminal_that_restarts_its_count_loses_nothing(sent_before: int) -> None:
    """A terminal that restarts and counts ``seq`` from 0 again (the contract asks it not
    to): an idle car's 30 heartbeats, a busy car's 500 messages, then the same numbers again
    with newer times. Every new message is taken, none as a repeat of the old ones; an exact
    resend after the restart is still a duplicate, and the restart is counted."""
    ingest = Ingest(0, limits_for=lambda _: LIMITS, thresholds=Thresholds())
    eid = FLEET[0]
    offset = 0

    def send(seq: int, stamp_ms: int) -> tuple[int, int, int]:
        nonlocal offset
        value = msgspec.json.encode(message([car(t_ms=stamp_ms)], elevator_id=eid, seq=seq))
        batch = ingest.process([RawRecord(eid.encode(), value, 0, offset, stamp_ms + 200)])
        offset += 1
        return len(batch.messages), batch.duplicates, batch.seq_restarts

    for seq in range(sent_before):
        assert send(seq, T0_MS + seq * 1000) == (1, 0, 0)
    restart_ms = T0_MS + sent_before * 1000 + 20_000
    after = [send(seq, restart_ms + seq * 1000) for seq in range(sent_before)]
    assert sum(n for n, _, _ in after) == sent_before, "a restarted count's messages were lost"
    assert sum(d for _, d, _ in after) == 0
    assert sum(r for _, _, r in after) == 1
    # a resend of a message sent after the restart is a repeat, as before
    assert send(sent_before - 1, restart_ms + (sent_before - 1) * 1000) == (0, 1, 0)
    # an old message sent again late (older times) does not restart the count (whether it
    # is taken or dropped, it was stored the first time)
    assert send(3, T0_MS + 3000)[2] == 0
    assert ingest.states[eid].last_seq == sent_before - 1
    saved = ingest.states[eid]
    restored = ElevatorState.decode(saved.encode(), ingest.detectors)
    assert restored.newest_stamp_ms == saved.newest_stamp_ms > restart_ms


def test_a_message_held_back_across_a_clock_step_back_is_late_not_a_restart() -> None:
    """A terminal's message is held back (its car standing with people inside, doors open);
    meanwhile its clock steps back an hour, and its next messages carry the earlier times.
    The held-back message arrives last: its seq behind the newest, its times past every
    other it sent. That was taken for a terminal that had restarted its count, so for the
    newest message, corrected to arrive now: the car seemed in use, and the next
    heartbeat's pause a `device_offline` (no-fault seed 129). A seq behind the newest that
    was never seen is a gap the late message fills, not a count started again."""
    ingest = Ingest(0, limits_for=lambda _: LIMITS, thresholds=Thresholds())
    eid = FLEET[0]

    def send(seq: int, stamp_ms: int, arrival_ms: int, **values: Any) -> tuple[int, int, int]:
        value = msgspec.json.encode(
            message([car(t_ms=stamp_ms, **values)], elevator_id=eid, seq=seq)
        )
        batch = ingest.process([RawRecord(eid.encode(), value, 0, seq, arrival_ms)])
        return len(batch.messages), batch.duplicates, batch.seq_restarts

    for seq in range(9):
        assert send(seq, T0_MS + seq * 1000, T0_MS + seq * 1000 + 200) == (1, 0, 0)
    for seq in range(10, 13):  # the clock an hour behind from here
        stamp_ms = T0_MS + seq * 1000 - 3_600_000
        assert send(seq, stamp_ms, T0_MS + seq * 1000 + 200) == (1, 0, 0)
    held = send(9, T0_MS + 9000, T0_MS + 13_200, door=2, passengers=True, load_kg=150.0)
    assert held == (1, 0, 0)
    assert ingest.states[eid].last_seq == 12
    assert send(10, T0_MS + 10_000 - 3_600_000, T0_MS + 13_300) == (0, 1, 0)  # still a repeat


def _partition(n: int) -> tuple[Ingest, list[str], list[Alert], dict[str, int]]:
    ids = [f"3207062020000000{i:04d}" for i in range(n)]
    ingest = Ingest(0, limits_for=lambda _: LIMITS, thresholds=Thresholds())
    return ingest, ids, [], dict.fromkeys(ids, 0)


def _send(
    ingest: Ingest, alerts: list[Alert], seqs: dict[str, int], eid: str, true_ms: int, skew_ms: int
) -> None:
    rows = [car(t_ms=true_ms + skew_ms - 900 + k * 100) for k in range(10)]
    value = msgspec.json.encode(message(rows, elevator_id=eid, seq=seqs[eid]))
    seqs[eid] += 1
    batch = ingest.process([RawRecord(eid.encode(), value, 0, 0, true_ms)])
    alerts += batch.alerts + ingest.tick().alerts


def test_busy_terminals_with_wrong_clocks_do_not_outvote_idle_right_ones() -> None:
    """Nine idle terminals with right clocks (a heartbeat every 30 s) and three busy ones
    (a message a second) 600 s ahead from the 90th second: only the three are off. Judged
    against the partition's recent messages, the busy three set the usual lag and every
    right clock was reported off."""
    ingest, ids, alerts, seqs = _partition(12)
    busy = set(ids[:3])
    for sec in range(300):
        true_ms = T0_MS + sec * 1000
        for i, eid in enumerate(ids):
            if eid in busy:
                _send(ingest, alerts, seqs, eid, true_ms, 600_000 if sec >= 90 else 0)
            elif (sec + i * 3) % 30 == 0:
                _send(ingest, alerts, seqs, eid, true_ms, 0)
    faulty = {
        a.elevator_id for a in alerts if a.alert_type == "clock_fault" and a.state == "raised"
    }
    assert faulty == busy


def test_a_clock_off_from_the_first_message_is_corrected_in_the_first_minute() -> None:
    """One terminal of ten is an hour ahead from its first message: the others agree, so it
    is judged at once (it used to be taken as it was, and then held to its own time)."""
    ingest, ids, alerts, seqs = _partition(10)
    odd = ids[-1]
    for sec in range(40):
        for eid in ids:
            _send(ingest, alerts, seqs, eid, T0_MS + sec * 1000, 3_600_000 if eid == odd else 0)
    raised = [a for a in alerts if a.alert_type == "clock_fault" and a.state == "raised"]
    assert [a.elevator_id for a in raised] == [odd]
    assert abs(raised[0].evidence["offset_ms"] - 3_600_000) <= 1_000
    assert ingest.states[odd].clock.offset_ms == 3_600_000
    assert ingest.stream_time_ms < T0_MS + 41_000


def test_a_clock_trusted_ahead_from_the_first_message_and_set_right_blinds_no_car() -> None:
    """A terminal an hour ahead is heard first, before any other terminal's lag can judge
    it: it is taken as on time, and its car's state runs an hour ahead. Judged later, the
    hour was held (a newly adopted offset never moved samples back); when the terminal's
    clock was set right, its samples were an hour behind the car's state, "old", and its
    rules saw nothing: a trapping went unseen (no-fault seed 18, for the 930 s left of the
    run, and would have for 11 h). A correction that moves the samples back beyond the
    tolerance rebases the car: its state starts again at the corrected time."""
    ingest, ids, alerts, seqs = _partition(10)
    odd = ids[0]  # heard first
    for sec in range(120):
        for eid in ids:
            _send(ingest, alerts, seqs, eid, T0_MS + sec * 1000, 3_600_000 if eid == odd else 0)
    trapped = {"position_m": 4.5, "door_zone": False, "passengers": True, "load_kg": 150.0}
    for sec in range(120, 180):  # its clock right again; its car stuck between floors
        true_ms = T0_MS + sec * 1000
        for eid in ids:
            if eid != odd:
                _send(ingest, alerts, seqs, eid, true_ms, 0)
                continue
            rows = [car(t_ms=true_ms - 900 + k * 100, **trapped) for k in range(10)]
            value = msgspec.json.encode(message(rows, elevator_id=eid, seq=seqs[eid]))
            seqs[eid] += 1
            batch = ingest.process([RawRecord(eid.encode(), value, 0, 0, true_ms)])
            alerts += batch.alerts + ingest.tick().alerts
    raised = {(a.elevator_id, a.alert_type) for a in alerts if a.state == "raised"}
    assert (odd, "trapped_between_levels") in raised
    assert (odd, "clock_fault") in raised


def test_a_clock_trusted_behind_from_the_first_message_is_no_silence() -> None:
    """An idle terminal 5.9 h behind (a heartbeat every 30 s) is heard first of its
    partition: taken as on time, its car's state runs 5.9 h in the past. The partition's
    next tick, at the others' time, found the car silent 5.9 h, and the heartbeat that set
    its clock right ended a 5.9-h silence: a false ``device_offline`` (no-fault seed 96).
    Its terminal was heard all along; another's real two-minute dropout is still raised."""
    ingest, ids, alerts, seqs = _partition(10)
    odd, dropped = ids[0], ids[1]  # odd heard first
    behind_ms = -round(5.9 * 3_600_000)
    for sec in range(300):
        true_ms = T0_MS + sec * 1000
        for eid in ids:
            if eid == odd and sec % 30 == 0:
                _send(ingest, alerts, seqs, eid, true_ms, behind_ms)
            elif eid != odd and (eid != dropped or not 60 <= sec < 180):
                _send(ingest, alerts, seqs, eid, true_ms, 0)
    offline = [a for a in alerts if a.alert_type == "device_offline" and a.state == "raised"]
    assert [a.elevator_id for a in offline] == [dropped]
    assert T0_MS + 60_000 <= offline[0].raised_at_ms <= T0_MS + 130_000
    faults = [a for a in alerts if a.alert_type == "clock_fault" and a.state == "raised"]
    assert [a.elevator_id for a in faults] == [odd]
    assert abs(faults[0].evidence["offset_ms"] - behind_ms) <= 2_000


def test_an_offset_is_the_median_of_its_episode_not_its_first_message() -> None:
    """Arrival jitter of a second on the first measurement: the offset in force settles on
    the true one (a whole episode's alerts used to be a second early or late)."""
    th = Thresholds()
    st = ClockState()
    jitter_ms = [1000, 0, 0, -1000, 0, 0, 1000, 0, 0]
    for k, j in enumerate(jitter_ms):
        sent = T0_MS + k * 1000
        judge_clock(st, FLEET[0], sent + 600_000 - 900, sent + 600_000, sent - j, True, th)
    assert st.offset_ms == 600_000


def test_a_message_held_back_across_a_clock_change_keeps_the_clock_it_was_stamped_by() -> None:
    """Stamped just before the terminal's clock fell a day behind and delivered just after
    (reordered): corrected by the new offset it would sit a day ahead, and every later sample
    of the car would be older than it — its rules blind for a day. It is corrected by the
    offset it was stamped under; one that fits neither offset is quarantined."""
    th, st, eid, day = Thresholds(), ClockState(), FLEET[0], 86_400_000
    assert judge_clock(st, eid, T0_MS, T0_MS + 900, T0_MS + 1_000, True, th) == (0, None, [], False)
    behind = judge_clock(st, eid, T0_MS + 2_000 - day, T0_MS + 2_900 - day, T0_MS + 3_000, True, th)
    assert behind.correction_ms == -day - 100
    held = judge_clock(st, eid, T0_MS + 1_000, T0_MS + 1_900, T0_MS + 3_100, False, th)
    assert held == (0, None, [], False)
    ahead = judge_clock(st, eid, T0_MS + 2 * day, T0_MS + 2 * day + 900, T0_MS + 4_000, False, th)
    assert ahead.refused is not None and "out of sequence order" in ahead.refused
    # and back: a message stamped under the day-behind clock, delivered once it is right
    back = judge_clock(st, eid, T0_MS + 5_000, T0_MS + 5_900, T0_MS + 6_000, True, th)
    assert back.correction_ms == 0 and back.alerts[0].state == "cleared"
    late = judge_clock(st, eid, T0_MS + 4_000 - day, T0_MS + 4_900 - day, T0_MS + 6_100, False, th)
    assert late == (0, None, [], False)  # behind its arrival by a day: a late message, as it is


def test_a_reordered_message_at_a_clock_change_blinds_no_car() -> None:
    """The fleet's terminals on time; one's clock falls a day behind at 122 s, and a message
    it stamped before that arrives after two stamped by the new clock. Its trapping from
    130 s is still detected, and no silence is reported for it."""
    fleet, day = Fleet(), 86_400_000
    for sec in range(121):
        for eid in FLEET:
            fleet.send(eid, T0_MS + sec * 1000, T0_MS + sec * 1000)
    held_seq = fleet.seq[ODD_ONE]
    fleet.seq[ODD_ONE] = held_seq + 1
    for sec in range(122, 180):
        for eid in FLEET:
            values = TRAPPED if eid == ODD_ONE and sec >= 130 else {}
            stamp = T0_MS + sec * 1000 - (day if eid == ODD_ONE else 0)
            fleet.send(eid, T0_MS + sec * 1000, stamp, **values)
        if sec == 123:
            after = fleet.seq[ODD_ONE]
            fleet.seq[ODD_ONE] = held_seq
            fleet.send(ODD_ONE, T0_MS + 123_500, T0_MS + 119_500)
            fleet.seq[ODD_ONE] = after
    (trapped,) = fleet.raised("trapped_between_levels")
    assert trapped.elevator_id == ODD_ONE
    assert T0_MS + 130_000 <= trapped.condition_since_ms <= T0_MS + 131_000
    assert fleet.raised("device_offline") == []


def test_a_late_message_or_a_backlog_is_not_a_clock_behind() -> None:
    """One terminal's message arrives 30 s late, its successors lost; later the terminal is
    cut off for a minute and sends what it buffered in one burst. Behind their arrival, yet
    following its earlier samples: late delivery, not a clock behind. No ``clock_fault``
    (these were the no-fault fleet's only false alarms), nothing quarantined, nobody offline.
    Eight terminals: the burst is judged against the seven others' lags, one vote each."""
    ids = [*FLEET, *(f"320706202000000001{i:02d}" for i in range(2))]
    fleet = Fleet(ids)
    for sec in range(300):
        true_ms = T0_MS + sec * 1000
        for eid in ids:
            if eid != ODD_ONE or sec < 120 or 180 < sec < 200 or sec >= 260:
                fleet.send(eid, true_ms, true_ms)
        if sec == 150:
            fleet.send(ODD_ONE, true_ms, T0_MS + 120_000)
        if sec == 259:
            for stamped in range(200, 259):
                fleet.send(ODD_ONE, true_ms, T0_MS + stamped * 1000)
    assert fleet.raised("clock_fault") == []
    assert fleet.quarantined == []
    assert fleet.raised("device_offline") == []


def test_a_clock_behind_by_less_than_a_silence_is_confirmed_and_its_trapping_timed() -> None:
    """One terminal is silent for 50 s and comes back 40 s behind (its samples still after
    its earlier ones, as a late message's would be), trapped from 180 s. It keeps pace with
    arrival time, so ``clock_fault`` is raised once ``clock_behind_confirm_s`` has passed;
    its samples were corrected from the first message, so the trapping has its true time."""
    fleet, th = Fleet(), Thresholds()
    for sec in range(260):
        true_ms = T0_MS + sec * 1000
        for eid in FLEET:
            if eid != ODD_ONE or sec <= 120:
                fleet.send(eid, true_ms, true_ms)
            elif sec > 170:
                fleet.send(eid, true_ms, true_ms - 40_000, **(TRAPPED if sec >= 180 else {}))
    (fault,) = fleet.raised("clock_fault")
    assert fault.elevator_id == ODD_ONE
    assert T0_MS + 171_000 <= fault.condition_since_ms <= T0_MS + 172_000
    confirmed_ms = T0_MS + 171_000 + th.clock_behind_confirm_s * 1000
    assert confirmed_ms <= fault.raised_at_ms <= confirmed_ms + 2_000
    assert -41_000 <= fault.evidence["offset_ms"] <= -39_000
    (trapped,) = fleet.raised("trapped_between_levels")
    assert T0_MS + 180_000 <= trapped.condition_since_ms <= T0_MS + 181_000
    assert fleet.quarantined == []


def test_arrival_times_that_say_little_neither_end_nor_change_a_clock_episode() -> None:
    """A terminal a day ahead, judged so while its partition was read in real time; then
    messages whose arrival times say little (a replay's, a partition's first minute). They
    used to be taken for a right clock: the episode cleared, the samples stored a day ahead
    and the car blinded. Now each is corrected by the offset in force, or by none if its
    measurement is nearer that, and only a message read in real time ends the episode."""
    th, st, eid, day = Thresholds(), ClockState(), FLEET[0], 86_400_000
    unsure = round(th.clock_offset_max_s * 1000)
    ahead = judge_clock(st, eid, T0_MS + day, T0_MS + day + 900, T0_MS + 1_000, True, th)
    assert ahead.correction_ms == day - 100 and ahead.alerts[0].state == "raised"
    still = judge_clock(
        st, eid, T0_MS + day + 1_000, T0_MS + day + 1_900, T0_MS + 2_000, True, th, unsure
    )
    assert still == (day - 100, None, [], False)
    right = judge_clock(st, eid, T0_MS + 3_000, T0_MS + 3_900, T0_MS + 4_000, True, th, unsure)
    assert (
        right == (0, None, [], False) and st.since_ms is not None
    )  # corrected by none, still open
    ended = judge_clock(st, eid, T0_MS + 5_000, T0_MS + 5_900, T0_MS + 6_000, True, th)
    assert ended.correction_ms == 0 and [a.state for a in ended.alerts] == ["cleared"]


def test_a_first_message_hours_ahead_leaves_the_partition_s_pace_to_the_others() -> None:
    """The partition's very first message comes from a terminal 11 h ahead. Its pace used
    to be anchored on that message, so for two minutes it looked replayed and no clock was
    judged: another terminal jumping 6 h ahead at 70 s had its samples stored 6 h ahead
    and was reported offline. The pace is anchored once enough lags are known."""
    fleet, hours = Fleet(), 3_600_000
    for sec in range(0, 240, 2):
        true_ms = T0_MS + sec * 1000
        for eid in (ODD_ONE, *FLEET[:-1]):
            skew_ms = 11 * hours if eid == ODD_ONE else 0
            if eid == FLEET[0] and sec >= 70:
                skew_ms = 6 * hours
            fleet.send(eid, true_ms, true_ms + skew_ms)
    jumped = [a for a in fleet.raised("clock_fault") if a.elevator_id == FLEET[0]]
    assert [round(a.evidence["offset_ms"] / hours) for a in jumped] == [6]
    assert jumped[0].raised_at_ms <= T0_MS + 75_000
    assert [a.elevator_id for a in fleet.raised("device_offline")] == []


def test_a_partition_taken_over_on_a_backlog_judges_no_clock_by_first_messages() -> None:
    """A worker that takes a partition over mid-stream hears each terminal's first message
    at once, and in a backlog published faster than real time their newest samples spread
    over seconds. The middle third of the lags agreed within the tolerance, so a heartbeat
    12 s ahead of the others' was taken for a clock 12 s ahead: ``clock_fault`` raised and
    its samples stored 12 s off. Until consecutive messages show the pace, every lag must
    agree."""
    ingest, ids, alerts, _ = _partition(8)
    read_at_ms = T0_MS + 3_600_000  # the backlog, an hour old, read at once
    corrected = 0
    for offset, (eid, newest_ms) in enumerate(
        zip(ids, (-8000, -3000, -2000, -1000, 0, 1000, 3000, 12_000), strict=True)
    ):
        rows = [car(t_ms=T0_MS + newest_ms - 900 + k * 100) for k in range(10)]
        value = msgspec.json.encode(message(rows, elevator_id=eid, seq=40))
        batch = ingest.process([RawRecord(eid.encode(), value, 0, offset, read_at_ms)])
        alerts += batch.alerts
        corrected += batch.clock_corrected
    assert corrected == 0
    assert [a for a in alerts if a.alert_type == "clock_fault"] == []


def test_a_rebalance_on_a_fast_backlog_stores_every_sample_at_its_own_time(
    tmp_path: Path,
) -> None:
    """``test_worker``'s stream (device faults: repeats, reordering, garbling, dropouts),
    published at once and folded as two workers do across a rebalance: worker a folds a
    part and checkpoints its states, folds on without checkpointing, and forgets every
    partition (Faust revokes them all); a takes half back and b the other half, each
    reading from the offsets a committed, b restoring a's checkpoints. Every sample comes
    out once at its own time. Cut at these points, a's heartbeats at the head of b's
    re-read were taken for clocks up to 25 s ahead: 1,298 and 933 samples shifted, some
    onto the times of the same car's other samples."""
    from replay import from_jsonl, inspect_jsonl

    path = device_faults_stream(tmp_path / "run.jsonl")
    expected = inspect_jsonl(path).samples
    read_at_ms = T0_MS + 400 * 86_400_000  # published at once, long after
    partitions: dict[int, list[RawRecord]] = {p: [] for p in range(4)}
    published: list[RawRecord] = []
    for item in from_jsonl(path):
        partition = zlib.crc32(item.key or b"") % 4
        log = partitions[partition]
        log.append(
            RawRecord(item.key, item.value, partition, len(log), read_at_ms + len(published))
        )
        published.append(log[-1])

    def fold(ingest: Ingest, records: list[RawRecord], out: set[tuple[str, int]]) -> int:
        corrected = 0
        for i in range(0, len(records), 50):  # the worker's batches
            batch = ingest.process(records[i : i + 50])
            ingest.tick()
            corrected += batch.clock_corrected
            out.update((m.elevator_id, int(t)) for m in batch.messages for t in m.samples.t_ms)
        return corrected

    def from_offsets(offsets: dict[int, int]) -> list[RawRecord]:
        records = [r for p, o in offsets.items() for r in partitions[p][o:]]
        return sorted(records, key=lambda r: r.arrival_ms)

    for checkpointed, folded in ((431, 574), (574, 1251)):
        stored: set[tuple[str, int]] = set()
        a = Ingest(0, load_state=(saved := {}).get)
        corrected = fold(a, published[:checkpointed], stored)
        saved.update((eid, st.encode()) for eid, st in a.states.items())
        committed = dict.fromkeys(partitions, 0)
        for r in published[:checkpointed]:
            committed[r.partition] = r.offset + 1
        corrected += fold(a, published[checkpointed:folded], stored)
        a.forget_partitions(partitions)
        b = Ingest(0, load_state=saved.get)
        corrected += fold(a, from_offsets({p: committed[p] for p in (0, 1)}), stored)
        corrected += fold(b, from_offsets({p: committed[p] for p in (2, 3)}), stored)
        assert corrected == 0
        assert stored == expected


def test_a_corrected_message_is_stored_as_corrected_not_as_received() -> None:
    """The sink sends a message's bytes as received unless the worker rewrote it: a
    message whose clock was corrected is encoded as it is now (sent as received, its
    samples were stored an hour ahead). The indices follow the messages the database
    refused."""
    ingest, ids, alerts, seqs = _partition(10)
    odd, hour_ms = ids[-1], 3_600_000
    for sec in range(5):
        for eid in ids:
            _send(ingest, alerts, seqs, eid, T0_MS + sec * 1000, hour_ms if eid == odd else 0)
    assert ingest.states[odd].clock.offset_ms == hour_ms
    records = []
    for eid in (ids[0], odd, ids[1]):
        skew_ms = hour_ms if eid == odd else 0
        rows = [car(t_ms=T0_MS + 4_100 + skew_ms + k * 100) for k in range(10)]
        body = msgspec.json.encode(message(rows, elevator_id=eid, seq=seqs[eid]))
        records.append(RawRecord(eid.encode(), body, 0, 100 + len(records), T0_MS + 5_000))
    batch = ingest.process(records)
    assert batch.originals() == [records[0].value, None, records[2].value]
    assert batch.messages[1].samples.t_ms[0] == T0_MS + 4_100
    batch.quarantine_refused([(0, "refused")])
    assert batch.originals() == [None, records[2].value]


def test_no_jerk_is_measured_across_a_change_of_clock_frame() -> None:
    """A standing heartbeat arrives 26 s late (held back by the terminal) and is taken for a
    clock behind: its samples are corrected up to its arrival. The next message, on time,
    has the car at full acceleration. The 100 ms between the two are in two clock frames,
    not measured: taken as measured they made a 6 m/s³ jerk and a false ``trip_anomaly``
    (no-fault seed 375). Within the message the jerk is measured as ever."""
    fleet = Fleet()
    for sec in range(120):  # the partition's pace is known: arrival times judge clocks
        true_ms = T0_MS + sec * 1000
        for eid in FLEET:
            if eid != ODD_ONE or sec < 30:  # the odd one stands, last heard at 29 s
                fleet.send(eid, true_ms, true_ms)
    late_true_ms = T0_MS + 120_000
    fleet.send(ODD_ONE, late_true_ms, T0_MS + 94_000)  # standing, stamped 26 s before
    accelerating = {"speed_mps": 0.5, "accel_mps2": 0.64, "direction": 1}
    fleet.send(ODD_ONE, late_true_ms + 1000, late_true_ms + 1000, **accelerating)
    trip = fleet.ingest.states[ODD_ONE].trip
    assert trip.start_ms == late_true_ms + 1000  # 100 ms after the late one's corrected last
    assert trip.peak_jerk_mps3 == 0.0  # within the message: Δa = 0; none across the frames
    second = fleet.ingest.states[ODD_ONE].windows.open_1s[late_true_ms + 1000]
    assert second.jerk_peak_mps3 == 0.0  # the one-second window's, likewise
    fleet.send(ODD_ONE, late_true_ms + 2000, late_true_ms + 2000, speed_mps=0.9, accel_mps2=0.5)
    assert trip.peak_jerk_mps3 == pytest.approx(1.4)  # (0.64 − 0.5) / 0.1 s, measured
