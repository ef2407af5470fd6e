"""One batch of raw Kafka records in, everything the sinks need out — pure, no I/O.

For each record: validate it against the contract (→ quarantine with its reason), drop exact
duplicates (same elevator and ``seq``), then fold the new message into its elevator's
windows and trip segmenter. The worker wraps this with Kafka, TimescaleDB and Faust tables;
the tests drive it directly.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from detectors.alerts import Alert
from detectors.catalog import detectors
from detectors.clock import ClockState, judge_clock
from detectors.online import CohortModels, OnlineDetector
from detectors.protocol import Detector
from detectors.rules import rebased
from detectors.state import decode_state, encode_state
from detectors.thresholds import ElevatorLimits, Thresholds
from foundation import contract
from foundation.contract import TelemetryMessage
from foundation.records import MaintenanceSession, Trip, WindowFeature

from .maintenance import MaintenanceState, initial_maintenance_state, segment_sessions
from .trips import TripState, initial_trip_state, segment_message
from .windows import WindowState, fold_message, initial_window_state

#: How many sequence numbers below the newest each elevator remembers for de-duplication.
#: A terminal resends within seconds; 64 messages is over a minute of driving.
DEDUP_WINDOW = 64
_DEDUP_MASK = (1 << DEDUP_WINDOW) - 1
#: How often each partition's elevators are ticked while its stream time advances, in
#: stream time, ms. What a tick raises does not depend on this (silence alerts are stamped
#: with the stream time they fell due); it only sets how soon an open silence is seen.
TICK_EVERY_MS = 5_000
#: How many recent in-order messages of a partition give its usual arrival lag (their
#: median newest-sample-minus-arrival time): enough that a minority of terminals with wrong
#: clocks cannot move it, few enough to follow a replay's pace.
ARRIVAL_LAG_MESSAGES = 31
#: How many terminals' latest arrival lags a partition keeps; with at least
#: :data:`ARRIVAL_SPREAD_MIN_MESSAGES` others heard from, a message is judged against the
#: other terminals' lags, one vote each, not against the recent messages: a busy car sends
#: a message a second and an idle one every 30 s, so a few busy cars whose clocks are off
#: would otherwise outvote a partition of right clocks (with clock faults at 20 per
#: elevator-day, about half the terminals are off at any moment).
ARRIVAL_LAG_TERMINALS = 31
#: Arrival time over which a partition's pace (its stream time's progress per arrival time)
#: is measured, ms: long enough that one batch's shared timestamp cannot look like real time.
PACE_SPAN_MS = 60_000
#: Paces within these bounds are real time (arrival jitter and a slow link's catching up).
REAL_TIME_PACE = (0.8, 1.25)
#: Before its pace is measured, a partition is known not to be read in real time when the
#: median pace of its terminals' consecutive messages (sample time moved per arrival time,
#: the last :data:`ARRIVAL_LAG_MESSAGES`, at least :data:`PACE_PROBE_PAIRS`) lies outside
#: these bounds: a replay at 20x moves a terminal's time 20 s per second of arrival, one
#: sharing a batch's timestamp infinitely far; wide, as one message's jitter is a second's.
PLAUSIBLE_REAL_TIME_PACE = (0.67, 1.5)
PACE_PROBE_PAIRS = 3
#: Before its pace is measured, a partition whose stream time ran this far ahead of its
#: arrival time (since its first record) is known not to be read in real time either: a
#: replay published at once moves its stream on with no arrival time passing, ms.
PACE_AHEAD_MAX_MS = 5_000
#: The middle third of a partition's recent arrival lags, times this factor, is how far past
#: their median a message may move the partition's time (with lags spread evenly, as in a
#: batch sharing one timestamp, the newest is 1.5 times that spread from the median).
ARRIVAL_SPREAD_FACTOR = 3.0
#: The detector whose state knows a car's last sample time and its open alerts.
_RULES = "safety_rules"
#: Fewer lags than this say nothing of their spread.
ARRIVAL_SPREAD_MIN_MESSAGES = 6


class RawRecord(NamedTuple):
    """A Kafka record as the worker received it.

    ``arrival_ms`` is when it arrived, Unix ms: the Kafka record timestamp (offline, the
    simulator's send time); None leaves the terminal's clock unjudged (its sample times
    are trusted as they are). ``replay_run`` is the record's
    :data:`foundation.contract.REPLAY_RUN_HEADER`, if it has one: history replayed, which
    the live worker refuses (see :class:`Ingest`).
    """

    key: bytes | None
    value: bytes
    partition: int
    offset: int
    arrival_ms: int | None = None
    replay_run: str | None = None


class ElevatorState(msgspec.Struct):
    """Everything the worker remembers about one elevator between messages, checkpointed
    as one MessagePack document (:func:`detectors.state.encode_state`).

    ``detectors`` holds each stream detector's state under its catalogue name
    (:mod:`detectors.catalog`). ``seen_mask`` bit ``i`` is set when ``last_seq - 1 - i``
    has been seen. ``clock`` is the terminal's clock as judged (:mod:`detectors.clock`).
    ``maintenance`` is its maintenance-session segmentation (:mod:`streams.maintenance`;
    None in a checkpoint written before it existed, and until the first message).
    """

    elevator_id: str
    windows: WindowState
    trip: TripState
    detectors: dict[str, Any]
    last_seq: int = -1
    seen_mask: int = 0
    clock: ClockState = msgspec.field(default_factory=ClockState)
    maintenance: MaintenanceState | None = None
    #: The newest sample time the terminal stamped (its own clock, before any correction):
    #: a ``seq`` that goes back while this moves on is a terminal that restarted its count.
    newest_stamp_ms: int = -1
    #: When the terminal's newest in-order message arrived (the Kafka record timestamp, or
    #: offline the send time), Unix ms; -1 before any. Silence is judged on it as well as
    #: on the car's sample times (:meth:`Ingest.tick`): a clock behind that was taken as it
    #: was leaves the car's samples behind, not its terminal silent.
    heard_ms: int = -1
    #: The newest in-order message was judged against exact arrival times (the partition
    #: read in real time, or its terminals' lags agreeing): its clock is known. False
    #: while arrival times could not judge it (a partition's first messages, a replay).
    clock_judged: bool = False

    @classmethod
    def new(cls, elevator_id: str, detectors: Iterable[Detector[Any]]) -> ElevatorState:
        return cls(
            elevator_id,
            initial_window_state(elevator_id),
            initial_trip_state(elevator_id),
            {d.name: d.new(elevator_id) for d in detectors},
        )

    def admit(self, seq: int) -> bool:
        """Record ``seq`` as seen; False if it was seen before (an exact duplicate)."""
        last = self.last_seq
        if seq > last:
            shift = seq - last
            if last < 0 or shift > DEDUP_WINDOW:
                self.seen_mask = 0 if last < 0 or shift > DEDUP_WINDOW + 1 else 1 << (shift - 1)
            else:
                self.seen_mask = ((self.seen_mask << shift) | (1 << (shift - 1))) & _DEDUP_MASK
            self.last_seq = seq
            return True
        if seq == last:
            return False
        behind = last - seq - 1
        if behind < DEDUP_WINDOW:
            bit = 1 << behind
            if self.seen_mask & bit:
                return False
            self.seen_mask |= bit
        # Older than the window: let it through; the sinks' natural keys drop a repeat.
        return True

    def is_gap(self, seq: int) -> bool:
        """Whether ``seq`` is behind the newest, within the window, and never seen: a
        message held back or reordered fills it (a terminal that restarted its count
        repeats numbers it sent)."""
        behind = self.last_seq - seq - 1
        return 0 <= behind < DEDUP_WINDOW and not self.seen_mask & (1 << behind)

    def encode(self) -> bytes:
        """The checkpoint (:func:`detectors.state.encode_state`)."""
        return encode_state(self)

    @classmethod
    def decode(cls, data: bytes, detectors: Iterable[Detector[Any]]) -> ElevatorState:
        """Restore :meth:`encode` output; a detector missing from it starts afresh.

        Raises
        ------
        msgspec.ValidationError, msgspec.DecodeError
            ``data`` is not a checkpoint this version can read.
        """
        saved = decode_state(data, _SavedElevatorState)
        dets = {d.name: d for d in detectors}
        return cls(
            saved.elevator_id,
            saved.windows,
            saved.trip,
            {
                name: decode_state(saved.detectors[name], d.state_type)
                if name in saved.detectors
                else d.new(saved.elevator_id)
                for name, d in dets.items()
            },
            saved.last_seq,
            saved.seen_mask,
            saved.clock,
            saved.maintenance,
            saved.newest_stamp_ms,
        )


class _SavedElevatorState(msgspec.Struct):
    """A checkpoint as read: detector states still encoded, decoded by type per detector."""

    elevator_id: str
    windows: WindowState
    trip: TripState
    detectors: dict[str, msgspec.Raw]
    last_seq: int = -1
    seen_mask: int = 0
    clock: ClockState = msgspec.field(default_factory=ClockState)
    maintenance: MaintenanceState | None = None
    newest_stamp_ms: int = -1


class PartitionCohorts(msgspec.Struct):
    """The cohort models of one partition (:class:`detectors.online.CohortModels`, per
    detector name), checkpointed with the partition's elevator states.

    Why per partition: a cohort (same rated speed, floors band, building type) spans
    elevators on every partition, but a partition is one ordered log read by one worker at
    a time. A model per partition has one writer, learns in the log's order (so a replay or
    a restart from the last checkpoint learns the same model), and goes to the changelog
    with the partition's elevator states at the same checkpoint, before its offsets are
    committed. A city-wide model would need every worker's trips merged in one order; with
    thousands of elevators per partition, each partition's cohort model sees enough trips.
    """

    detectors: dict[str, CohortModels] = {}


class _Partition:
    """One partition's clock and elevators. Its stream time is the newest sample time read
    from it: a partition is one ordered log, so an elevator that sent nothing while it moved
    on was silent. ``idle`` is true when no record came from it since the last tick.
    ``arrival_lags_ms`` holds its recent messages' newest sample time minus arrival time,
    ``terminal_lags_ms`` each recent terminal's latest (see :meth:`lags_for`)."""

    __slots__ = (
        "advanced_wall_ms",
        "arrival_lags_ms",
        "elevators",
        "heard_ms",
        "idle",
        "pace_ahead_ms",
        "pace_anchor",
        "pace_measured",
        "pace_pairs",
        "pace_real_time",
        "stream_time_ms",
        "terminal_arrivals_ms",
        "terminal_lags_ms",
        "ticked_ms",
    )

    def __init__(self) -> None:
        self.stream_time_ms = 0
        self.ticked_ms = 0
        self.advanced_wall_ms: float | None = None
        self.elevators: dict[str, None] = {}  # insertion order: deterministic ticks
        self.heard_ms = -1  # the latest arrival time of a record from it, Unix ms
        self.idle = True
        self.arrival_lags_ms: deque[int] = deque(maxlen=ARRIVAL_LAG_MESSAGES)
        self.terminal_lags_ms: dict[str, int] = {}  # the least recently heard first
        self.terminal_arrivals_ms: dict[str, int] = {}  # the arrival of each one's latest
        self.pace_pairs: deque[float] = deque(maxlen=ARRIVAL_LAG_MESSAGES)
        self.pace_ahead_ms = 0
        self.pace_anchor: tuple[int, int] | None = None
        self.pace_real_time = False
        self.pace_measured = False

    def lags_for(self, elevator_id: str) -> tuple[list[int], bool]:
        """The arrival lags a message of ``elevator_id`` is judged against, sorted: the
        other terminals' latest ones (:data:`ARRIVAL_LAG_TERMINALS`), or while too few
        others have been heard from, the partition's recent messages'; and whether they are
        the other terminals'. Sorted once, for the median and the tertiles (this runs for
        every message)."""
        votes = self.terminal_lags_ms
        others = sorted(votes.values())
        own = votes.get(elevator_id)
        if own is not None:
            del others[bisect.bisect_left(others, own)]
        if len(others) >= ARRIVAL_SPREAD_MIN_MESSAGES:
            return others, True
        return sorted(self.arrival_lags_ms), False

    def add_lag(self, elevator_id: str, lag_ms: int, arrival_ms: int) -> None:
        """Record an in-order message's arrival lag, and with the terminal's previous one,
        the pace its time moved at (until the partition's pace is measured)."""
        self.arrival_lags_ms.append(lag_ms)
        votes, arrivals = self.terminal_lags_ms, self.terminal_arrivals_ms
        previous = votes.pop(elevator_id, None)
        if previous is not None:
            waited_ms = arrival_ms - arrivals.pop(elevator_id)
            if not self.pace_measured:
                moved_ms = waited_ms + lag_ms - previous
                self.pace_pairs.append(moved_ms / waited_ms if waited_ms > 0 else math.inf)
        votes[elevator_id] = lag_ms
        arrivals[elevator_id] = arrival_ms
        if len(votes) > ARRIVAL_LAG_TERMINALS:
            oldest = next(iter(votes))
            del votes[oldest], arrivals[oldest]

    @property
    def pace_probed(self) -> bool:
        """Whether enough of the terminals' consecutive messages were heard to judge the
        pace by (:data:`PACE_PROBE_PAIRS`)."""
        return len(self.pace_pairs) >= PACE_PROBE_PAIRS

    @property
    def pace_implausible(self) -> bool:
        """Before the pace is measured: whether the terminals' consecutive messages already
        say the partition is not read in real time (:data:`PLAUSIBLE_REAL_TIME_PACE`)."""
        if self.pace_measured:
            return False
        if self.pace_ahead_ms > PACE_AHEAD_MAX_MS:
            return True
        if not self.pace_probed:
            return False
        pace = statistics.median(self.pace_pairs)
        return not PLAUSIBLE_REAL_TIME_PACE[0] <= pace <= PLAUSIBLE_REAL_TIME_PACE[1]

    def real_time(self, arrival_ms: int, reference_ms: int, settled_lag: bool) -> bool:
        """Whether the partition is read in real time: its stream time (``reference_ms``)
        moved on as fast as arrival time over the last :data:`PACE_SPAN_MS` or more. The
        first span starts once ``settled_lag`` (the reference is a median of enough lags: a
        first message from a terminal hours ahead, anchoring it, made the partition's first
        two minutes look replayed, and every clock in them unjudged)."""
        if self.pace_anchor is None:
            if not settled_lag:
                return self.pace_real_time
            self.pace_anchor = (arrival_ms, reference_ms)
        elif not self.pace_measured:
            ahead_ms = (reference_ms - self.pace_anchor[1]) - (arrival_ms - self.pace_anchor[0])
            self.pace_ahead_ms = max(self.pace_ahead_ms, ahead_ms)
        if arrival_ms - self.pace_anchor[0] >= PACE_SPAN_MS:
            pace = (reference_ms - self.pace_anchor[1]) / (arrival_ms - self.pace_anchor[0])
            self.pace_real_time = REAL_TIME_PACE[0] <= pace <= REAL_TIME_PACE[1]
            self.pace_measured = True
            self.pace_anchor = (arrival_ms, reference_ms)
        return self.pace_real_time

    def now_ms(self, wall_ms: float | None, silent_partition_ms: float) -> int:
        """Stream time; once nothing at all has come from the partition for
        ``silent_partition_ms`` of wall time, stream time runs on with the wall clock."""
        if wall_ms is None or self.advanced_wall_ms is None:
            return self.stream_time_ms
        idle_ms = wall_ms - self.advanced_wall_ms - silent_partition_ms
        return self.stream_time_ms + max(0, math.floor(idle_ms))


@dataclass
class IngestBatch:
    """What one batch produced, for the sinks, the quarantine and the metrics."""

    messages: list[TelemetryMessage] = field(default_factory=list)
    #: The record each of ``messages`` came from, same index: a message the database
    #: refuses is quarantined with its original bytes.
    sources: list[RawRecord] = field(default_factory=list)
    #: Indices in ``messages`` of those rewritten on the way (their times corrected for
    #: their terminal's clock): their bytes as received hold the terminal's own times.
    rewritten: set[int] = field(default_factory=set)
    #: Refused records and the reason, for the quarantine topic (``streams.quarantine``).
    quarantined: list[tuple[RawRecord, str]] = field(default_factory=list)
    windows: list[WindowFeature] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)
    #: Maintenance sessions opened or closed (``streams.maintenance``).
    maintenance_sessions: list[MaintenanceSession] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    duplicates: int = 0
    #: Messages whose ``seq`` went back while their terminal's time moved on (a restarted
    #: count): the elevator's de-duplication starts afresh from them.
    seq_restarts: int = 0
    #: Messages whose sample times were corrected for their terminal's clock offset.
    clock_corrected: int = 0
    #: Elevators whose rule state was rebased (:func:`detectors.rules.rebased`): their
    #: terminal's times were corrected back by more than ``clock_rebase_s``.
    clock_rebased: int = 0
    samples: int = 0
    late_samples: int = 0
    #: elevator id → the partition its messages came from, for state checkpoints.
    touched: dict[str, int] = field(default_factory=dict)
    #: Messages quarantined because their elevator is not in the registry.
    unregistered: int = 0
    #: Partitions whose cohort models changed (:class:`PartitionCohorts`), for checkpoints.
    cohorts_touched: set[int] = field(default_factory=set)
    #: States dropped from memory (a car silent beyond ``state_eviction_after_s`` and
    #: reported offline): elevator id → (partition, its final checkpoint), for the worker
    #: to save before it forgets them.
    evicted: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    def quarantine_refused(self, refused: Iterable[tuple[int, str]]) -> None:
        """Move the messages the database refused to ``quarantined``.

        ``refused`` holds (index in ``messages``, the database's error), as
        :attr:`streams.sinks.timescale.WriteResult.refused` reports them. The messages were
        validated and folded (their windows, trips and alerts stand); only their samples
        could not be stored.
        """
        errors = dict(refused)
        if not errors:
            return
        kept = [i for i in range(len(self.messages)) if i not in errors]
        for i, error in sorted(errors.items()):
            self.quarantined.append((self.sources[i], f"database refused the message: {error}"))
            self.samples -= len(self.messages[i].samples.t_ms)
        self.messages = [self.messages[i] for i in kept]
        self.sources = [self.sources[i] for i in kept]
        self.rewritten = {new for new, old in enumerate(kept) if old in self.rewritten}

    def originals(self) -> list[bytes | None]:
        """What the sink stores of each of ``messages``: the bytes it arrived as, or None
        where it was rewritten, to be encoded as it is now. (Sent as received, a terminal's
        samples corrected an hour back were stored an hour ahead, where no board looks and
        no incident's evidence finds them.)"""
        rewritten = self.rewritten
        return [None if i in rewritten else s.value for i, s in enumerate(self.sources)]


class Ingest:
    """Validate, de-duplicate and fold batches of raw records, and run every detector of
    :mod:`detectors.catalog` on them: the one detection loop, of the worker and of offline
    evaluation alike.

    The clock: each elevator's rules judge it at its own sample times; silence (a terminal
    that stopped sending) is judged by :meth:`tick` at its partition's stream time (see
    :class:`_Partition`), and only when a whole partition has been silent for a heartbeat
    timeout of wall time — every terminal on it, or the link, down — does the injected wall
    clock move that partition's time on, so that a car last seen with people trapped inside
    is escalated even then.

    A record carrying a replay run's header (:attr:`RawRecord.replay_run`) is quarantined
    with the reason, never folded: replayed history goes to a replay worker
    (:mod:`replay.worker`), which reads its run's own topic and strips the header first.

    Each terminal's own clock is judged against its messages' arrival
    (:attr:`RawRecord.arrival_ms`, less the partition's usual arrival lag) by
    :func:`detectors.clock.judge_clock`: a terminal whose clock is off has its sample times
    corrected by the measured offset, or beyond ``clock_offset_max_s`` its message
    quarantined, and ``clock_fault`` raised. So no terminal's clock moves its partition's
    time (and with it every other elevator's silence) past what arrival times allow.

    Parameters
    ----------
    grace_ms
        How long after a window's end its samples may still arrive (out of order) and be
        folded; later samples are counted late, stored raw, and not re-windowed.
    load_state
        Called with an elevator id the first time it is seen; returns its checkpoint
        (:meth:`ElevatorState.encode`, from the worker's Faust table) or None.
    limits_for
        The elevator's own ratings (from the registry) for the detectors; None turns
        the detectors off.
    thresholds
        The detectors' limits (``detectors.thresholds``).
    wall_clock_ms
        The wall clock, Unix ms (the worker's); None (offline evaluation, tests) runs on
        stream time alone.
    is_registered
        Whether an elevator id is in the registry; a message from one that is not is
        quarantined with the reason before any state is made for it (so random ids cannot
        grow the worker). None accepts every id (offline evaluation, tests).
    load_cohorts
        Called with a partition the first time it is seen; returns its cohort models'
        checkpoint (:meth:`cohort_checkpoint`) or None.
    without
        Names of catalogue detectors not to run (``tianyan bench online`` measures the cost
        of the online detectors so); the worker runs them all.
    evict_silent
        Drop from memory the state of a car silent beyond ``state_eviction_after_s`` once
        its ``device_offline`` was raised (the worker, whose ``load_state`` restores it from
        the checkpoint handed over in :attr:`IngestBatch.evicted`). Off for offline
        evaluation, which has no checkpoints to restore from.
    """

    def __init__(
        self,
        grace_ms: int,
        load_state: Callable[[str], bytes | None] = lambda _: None,
        limits_for: Callable[[str], ElevatorLimits] | None = None,
        thresholds: Thresholds | None = None,
        wall_clock_ms: Callable[[], float] | None = None,
        is_registered: Callable[[str], bool] | None = None,
        evict_silent: bool = False,
        load_cohorts: Callable[[int], bytes | None] = lambda _: None,
        without: Iterable[str] = (),
    ) -> None:
        if grace_ms < 0:
            raise ValueError(f"grace_ms: {grace_ms} is negative")
        self.grace_ms = grace_ms
        self._load_state = load_state
        self._limits_for = limits_for
        self.thresholds = thresholds or Thresholds()
        left_out = set(without)
        self.detectors = tuple(d for d in detectors(self.thresholds) if d.name not in left_out)
        self._message_detectors = [d for d in self.detectors if d.consumes == "message"]
        self._trip_detectors = [d for d in self.detectors if d.consumes == "trip"]
        self._window_detectors = [d for d in self.detectors if d.consumes == "window"]
        self._load_cohorts = load_cohorts
        self._cohorts: dict[int, PartitionCohorts] = {}
        self._wall_clock_ms = wall_clock_ms
        self._is_registered = is_registered
        self._evict_silent = evict_silent
        self._evict_after_ms = self.thresholds.state_eviction_after_s * 1000.0
        self._silent_partition_ms = self.thresholds.heartbeat_timeout_s * 1000.0
        self.states: dict[str, ElevatorState] = {}
        self._partitions: dict[int, _Partition] = {}
        self._partition_of: dict[str, int] = {}
        #: Saved states that could not be read and were started afresh.
        self.unreadable_states = 0

    @property
    def stream_time_ms(self) -> int:
        """The newest sample time read from any partition (0 before the first)."""
        return max((p.stream_time_ms for p in self._partitions.values()), default=0)

    def state(self, elevator_id: str) -> ElevatorState:
        st = self.states.get(elevator_id)
        if st is None:
            saved = self._load_state(elevator_id)
            st = None
            if saved:
                try:
                    st = ElevatorState.decode(saved, self.detectors)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    # A checkpoint this version cannot read (written by an older one):
                    # start the elevator afresh rather than stop the worker; counted.
                    self.unreadable_states += 1
            if st is None:
                st = ElevatorState.new(elevator_id, self.detectors)
            self.states[elevator_id] = st
        return st

    def forget(self, elevator_ids: Iterable[str]) -> None:
        """Drop cached states (their partitions moved to another worker)."""
        for e in elevator_ids:
            self.states.pop(e, None)
            p = self._partition_of.pop(e, None)
            if p is not None and p in self._partitions:
                self._partitions[p].elevators.pop(e, None)

    def cohorts(self, partition: int) -> PartitionCohorts:
        """The partition's cohort models, restored from its checkpoint when first needed."""
        c = self._cohorts.get(partition)
        if c is None:
            saved = self._load_cohorts(partition)
            if saved:
                try:
                    c = decode_state(saved, PartitionCohorts)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    self.unreadable_states += 1
            if c is None:
                c = PartitionCohorts()
            self._cohorts[partition] = c
        return c

    def cohort_checkpoint(self, partition: int) -> bytes | None:
        """The partition's cohort models as MessagePack (None if not held here)."""
        c = self._cohorts.get(partition)
        return None if c is None else encode_state(c)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop the states, clocks and cohort models of partitions assigned elsewhere."""
        for p in set(partitions):
            self._cohorts.pop(p, None)
            gone = self._partitions.pop(p, None)
            if gone is not None:
                self.forget(list(gone.elevators))

    def partition_of(self, elevator_id: str) -> int:
        """The partition the elevator's messages came from last (-1 if none)."""
        return self._partition_of.get(elevator_id, -1)

    def process(self, records: Iterable[RawRecord]) -> IngestBatch:
        out = IngestBatch()
        decode = contract.decode
        grace = self.grace_ms
        detect = self._limits_for is not None
        for record in records:
            if record.replay_run is not None:
                # History replayed into the live topic: folded here it would move live
                # states and clocks back in time and could call the rescue platform.
                out.quarantined.append((record, _replayed_reason(record.replay_run)))
                continue
            try:
                message = decode(record.value)
            except contract.InvalidMessage as e:
                out.quarantined.append((record, e.reason))
                continue
            eid = message.elevator_id
            if (
                self._is_registered is not None
                and eid not in self.states
                and not self._is_registered(eid)
            ):
                out.quarantined.append((record, f"$.elevator_id: {eid} is not in the registry"))
                out.unregistered += 1
                continue
            st = self.state(eid)
            stamps = message.samples.t_ms
            if (
                message.seq <= st.last_seq
                and not st.is_gap(message.seq)
                and len(stamps)
                and stamps[0] > st.newest_stamp_ms >= 0
            ):
                # Its count went back while its own time moved on past everything it sent: a
                # terminal that restarted and lost its seq (the contract asks it to keep it),
                # not a resend. Counting afresh keeps its new messages from being taken for
                # repeats of the old ones. A gap's seq is a late message's, even one past
                # everything sent after it by a clock that stepped back meanwhile.
                st.last_seq, st.seen_mask = -1, 0
                out.seq_restarts += 1
            in_order = message.seq > st.last_seq
            if not st.admit(message.seq):
                out.duplicates += 1
                continue
            if len(stamps):
                st.newest_stamp_ms = max(st.newest_stamp_ms, int(stamps[-1]))
            newest_ms = None  # how far this message may move its partition's time
            if record.arrival_ms is not None:
                correction_before_ms = st.clock.offset_ms
                judged = self._judge_clock(st, message, record, in_order, out)
                if judged is None:
                    continue
                if judged[0] is not message:
                    out.rewritten.add(len(out.messages))
                    correction_ms = stamps[0] - judged[0].samples.t_ms[0]
                else:
                    correction_ms = 0
                if in_order and correction_ms != correction_before_ms:
                    # Its samples are in another clock frame than the car's last ones (a
                    # clock corrected, a late message taken for one behind and the next on
                    # time): the gap between the two was not measured. Across it a standing
                    # heartbeat 100 ms before a car at full acceleration made a 6 m/s³ jerk
                    # and a false trip_anomaly (no-fault seed 375).
                    st.trip.continuous = st.windows.continuous = False
                message, newest_ms = judged
            out.messages.append(message)
            out.sources.append(record)
            out.samples += len(message.samples.t_ms)
            out.touched[eid] = record.partition
            st.windows, closed, stats = fold_message(st.windows, message, grace)
            out.late_samples += stats.samples_late
            st.trip, trips = segment_message(st.trip, message)
            sessions = st.maintenance or initial_maintenance_state(eid)
            st.maintenance, opened_or_closed = segment_sessions(sessions, message)
            out.maintenance_sessions.extend(opened_or_closed)
            if detect:
                # (elevator state, message, its closed trips and windows) → alerts, and the
                # trips and windows with their online-learning scores
                trips, closed = self._detect(st, message, trips, closed, record.partition, out)
            out.windows.extend(closed)
            out.trips.extend(trips)
            t_end = message.samples.t_ms[-1]
            self._advance(
                record.partition, eid, t_end if newest_ms is None else min(t_end, newest_ms)
            )
        return out

    def _judge_clock(
        self,
        st: ElevatorState,
        message: TelemetryMessage,
        record: RawRecord,
        in_order: bool,
        out: IngestBatch,
    ) -> tuple[TelemetryMessage, int] | None:
        """The message with its times corrected for its terminal's clock, and the newest
        time it may move its partition's clock to; None when it was quarantined (into
        ``out``). ``clock_fault`` alerts go to ``out`` too."""
        assert record.arrival_ms is not None
        p = self._partition(record.partition)
        p.heard_ms = max(p.heard_ms, record.arrival_ms)
        t = message.samples.t_ms
        lag_ms = t[-1] - record.arrival_ms
        lags, of_terminals = p.lags_for(message.elevator_id)
        # The partition's usual lag (a replay's, a slow link's) is no terminal's fault.
        usual_lag_ms = lags[(len(lags) - 1) // 2] if lags else lag_ms  # the low median
        reference_ms = record.arrival_ms + usual_lag_ms
        # Arrival times resolve send times only when the partition is read in real time; a
        # replay published faster stamps a whole batch with one time. Until its pace is
        # known to be real time, only a clock beyond any correction is acted on.
        real_time = p.real_time(
            record.arrival_ms, reference_ms, len(lags) >= ARRIVAL_SPREAD_MIN_MESSAGES
        )
        tolerance_ms = round(self.thresholds.clock_offset_tolerance_s * 1000)
        spread_ms: float | None = None
        if len(lags) >= ARRIVAL_SPREAD_MIN_MESSAGES:
            lower_ms, upper_ms = _tertiles(lags)
            spread_ms = upper_ms - lower_ms
        # In a partition's first minute its pace is not known yet; there the other
        # terminals' lags, one vote each, agreeing within the tolerance say the same (a fast
        # replay's batch spreads them), unless the terminals' consecutive messages already
        # moved at a pace real time cannot have (a replay at 20x, read in event order, gives
        # agreeing votes, and a heartbeat published a second before them lags 19 s more):
        # a terminal whose clock is off from the first message
        # is judged at once, not accepted as it is and then held to its own wrong time.
        # Before any terminal's consecutive messages were heard, every vote must agree, not
        # only the middle third: a worker that takes a partition over mid-stream (a
        # rebalance, a restart on a backlog) hears each terminal's first message at once,
        # and in a backlog published faster than real time the middle third of them agreed
        # while one terminal's heartbeat 12 s ahead of the others' was taken for a clock
        # 12 s ahead, and its samples stored 12 s off (over others of the same car's).
        settled = (
            not p.pace_measured
            and of_terminals
            and spread_ms is not None
            and spread_ms <= tolerance_ms
            and not p.pace_implausible
            and (p.pace_probed or lags[-1] - lags[0] <= tolerance_ms)
        )
        uncertainty_ms = (
            0 if real_time or settled else round(self.thresholds.clock_offset_max_s * 1000)
        )
        # Whatever the pace, no message moves the partition's time far past the others':
        # beyond the tolerance and the spread of the middle third of the recent arrival lags
        # (a fast replay's batch spreads them all; a few terminals with wrong clocks do not).
        newest_ms = reference_ms + tolerance_ms
        if spread_ms is not None:
            newest_ms += round(ARRIVAL_SPREAD_FACTOR * spread_ms)
        else:
            newest_ms += uncertainty_ms
        newest_before_ms = st.clock.last_corrected_ms
        verdict = judge_clock(
            st.clock,
            message.elevator_id,
            t[0],
            t[-1],
            reference_ms,
            in_order,
            self.thresholds,
            uncertainty_ms,
        )
        if in_order and verdict.refused is None:
            # The terminal's vote is its lag once its clock is corrected: terminals whose
            # clocks are off, the more so the more of them there are, must not move the
            # partition's usual lag (with 19 of the 31 last heard off, it moved 6.5 h and
            # a right clock was taken for one 6.5 h ahead).
            p.add_lag(message.elevator_id, lag_ms - verdict.correction_ms, record.arrival_ms)
        if self._limits_for is not None:
            out.alerts.extend(verdict.alerts)
        if verdict.refused is not None:
            out.quarantined.append((record, verdict.refused))
            return None
        if in_order and not verdict.rebased and uncertainty_ms == 0:
            first_ms = t[0] - verdict.correction_ms
            ahead = self._moved_ahead(st, newest_before_ms, first_ms, record.arrival_ms)
            verdict = verdict._replace(rebased=ahead)
        if in_order:
            st.heard_ms = max(st.heard_ms, record.arrival_ms)
            st.clock_judged = uncertainty_ms == 0
        if verdict.rebased and _RULES in st.detectors:
            st.detectors[_RULES] = rebased(st.detectors[_RULES])
            out.clock_rebased += 1
        if verdict.correction_ms == 0:
            return message, newest_ms
        out.clock_corrected += 1
        return _shifted(message, -verdict.correction_ms), newest_ms

    def _moved_ahead(
        self, st: ElevatorState, newest_ms: int, first_ms: int, arrival_ms: int
    ) -> bool:
        """Whether a message's corrected samples (from ``first_ms``) start more than
        ``clock_rebase_s`` further past the terminal's newest corrected one (``newest_ms``)
        than its arrival is past the last one's: the times before were in a frame behind
        (a clock behind, taken as it was before arrival times could judge it), and the
        gap is no silence (a terminal 5.9 h behind, heard first of its partition, made a
        5.9-h ``device_offline`` once set right). Asked only where arrival times resolve
        send times: in a replay published faster than real time, a real dropout's gap is
        far longer than the gap between its arrivals."""
        if newest_ms < 0 or st.heard_ms < 0:
            return False
        ahead_ms = (first_ms - newest_ms) - (arrival_ms - st.heard_ms)
        return ahead_ms > self.thresholds.clock_rebase_s * 1000

    def _partition(self, partition: int) -> _Partition:
        p = self._partitions.get(partition)
        if p is None:
            p = self._partitions[partition] = _Partition()
        return p

    def _detect(
        self,
        st: ElevatorState,
        message: TelemetryMessage,
        trips: list[Trip],
        windows: list[WindowFeature],
        partition: int,
        out: IngestBatch,
    ) -> tuple[list[Trip], list[WindowFeature]]:
        """Every detector in order on the message, the trips and the one-minute windows it
        closed; alerts go to ``out``. Returns the trips and windows, scored.

        Inspection runs (and the minutes of them) are a technician's, not the car's usual
        running: the trip-health charts and the online models neither learn from nor
        judge them.
        """
        assert self._limits_for is not None
        limits = self._limits_for(st.elevator_id)
        alerts = out.alerts
        for d in self._message_detectors:
            alerts += d.observe(st.detectors[d.name], message, limits)
        maintenance = st.maintenance
        scored_trips: list[Trip] = []
        for trip in trips:
            if maintenance is not None and maintenance.in_inspection(trip.start_ms):
                scored_trips.append(trip)
                continue
            score = self._run(self._trip_detectors, st, trip, limits, partition, out)
            scored_trips.append(
                trip if score is None else msgspec.structs.replace(trip, online_score=score)
            )
        scored_windows: list[WindowFeature] = []
        for w in windows:
            if w.width_s != 60 or (
                maintenance is not None and maintenance.in_inspection(w.bucket_start_ms)
            ):
                scored_windows.append(w)
                continue
            score = self._run(self._window_detectors, st, w, limits, partition, out)
            scored_windows.append(
                w if score is None else msgspec.structs.replace(w, online_score=score)
            )
        return scored_trips, scored_windows

    def _run(
        self,
        dets: list[Detector[Any]],
        st: ElevatorState,
        item: Trip | WindowFeature,
        limits: ElevatorLimits,
        partition: int,
        out: IngestBatch,
    ) -> float | None:
        """``item`` through ``dets`` (alerts to ``out``); the online-learning score."""
        score = None
        for d in dets:
            if isinstance(d, OnlineDetector):
                cohorts = self.cohorts(partition).detectors
                models = cohorts.get(d.name)
                if models is None:
                    models = cohorts[d.name] = d.new_cohorts()
                scored = d.observe_in_cohort(st.detectors[d.name], models, item, limits)
                out.alerts += scored.alerts
                out.cohorts_touched.add(partition)
                score = scored.score if score is None else score
            else:
                out.alerts += d.observe(st.detectors[d.name], item, limits)
        return score

    def _advance(self, partition: int, elevator_id: str, t_ms: int) -> None:
        p = self._partition(partition)
        old = self._partition_of.get(elevator_id)
        if old != partition:
            if old is not None and old in self._partitions:
                self._partitions[old].elevators.pop(elevator_id, None)
            self._partition_of[elevator_id] = partition
            p.elevators[elevator_id] = None
        p.idle = False
        if t_ms > p.stream_time_ms:
            p.stream_time_ms = t_ms
            if self._wall_clock_ms is not None:
                p.advanced_wall_ms = self._wall_clock_ms()

    def tick(self) -> IngestBatch:
        """Silence (device offline; the timers of a car last seen trapped), judged on each
        partition at its clock's time: on a partition no record came from since the last
        call, and on any whose time has moved :data:`TICK_EVERY_MS` since its last tick.

        The worker calls it after every batch, offline evaluation after every record and
        once more at the end: once a stream has ended, every partition has been judged at
        its last time, however the stream was cut into batches.
        """
        out = IngestBatch()
        if self._limits_for is None:
            return out
        wall = self._wall_clock_ms() if self._wall_clock_ms is not None else None
        for partition, p in self._partitions.items():
            now = p.now_ms(wall, self._silent_partition_ms)
            due = now - p.ticked_ms >= TICK_EVERY_MS or (p.idle and now > p.ticked_ms)
            p.idle = True
            if not due:
                continue
            p.ticked_ms = now
            # Arrival times say when a terminal was last heard only if the partition may be
            # read in real time (a replay published faster compresses them).
            heard_ms = p.heard_ms if wall is None else max(p.heard_ms, round(wall))
            if p.pace_implausible or (p.pace_measured and not p.pace_real_time):
                heard_ms = -1
            stale: list[str] = []
            for eid in p.elevators:
                st = self.states.get(eid)
                if st is None or (heard_ms >= 0 and self._heard_unjudged(st, heard_ms)):
                    continue
                limits = self._limits_for(eid)
                for d in self.detectors:
                    alerts = d.tick(st.detectors[d.name], now, limits)
                    if alerts:
                        out.alerts.extend(alerts)
                        out.touched[eid] = partition
                if self._evict_silent and eid not in out.touched and self._evictable(st, now):
                    stale.append(eid)
            for eid in stale:
                out.evicted[eid] = (partition, self.states[eid].encode())
            self.forget(stale)
        return out

    def _heard_unjudged(self, st: ElevatorState, heard_ms: int) -> bool:
        """Whether the car's terminal was heard within its silence timeout of the
        partition's latest arrival (``heard_ms``; the wall clock, in the worker) while its
        clock is not judged yet: its samples may be in a wrong frame, and a tick at the
        others' time would take a terminal that was heard for one long silent. One heard
        first of its partition is taken as it is, with no other arrival lag to judge it
        by; 5.9 h behind, the partition's next tick found its car silent 5.9 h (no-fault
        seed 96). Its next message, judged, sets its clock right."""
        if st.clock_judged or st.heard_ms < 0:
            return False
        rules = st.detectors.get(_RULES)
        in_use = rules is not None and rules.active_car
        th = self.thresholds
        timeout_s = th.active_silence_timeout_s if in_use else th.heartbeat_timeout_s
        return heard_ms - st.heard_ms <= timeout_s * 1000

    def _evictable(self, st: ElevatorState, now_ms: int) -> bool:
        """Silent beyond ``state_eviction_after_s`` and its ``device_offline`` raised at an
        earlier tick (so the checkpoint that evicts it keeps the alert open)."""
        rules = st.detectors.get(_RULES)
        if rules is None or "device_offline" not in rules.active:
            return False
        return bool(now_ms - rules.last_t_ms > self._evict_after_ms)


def _tertiles(ordered: list[int]) -> tuple[float, float]:
    """``statistics.quantiles(ordered, n=3)`` (its default, exclusive method) of values
    already sorted, at least two, without sorting them again: the same arithmetic, so the
    same floats.

    >>> import statistics
    >>> lags = [-900, -40, 0, 12, 250, 251, 3_600_000]
    >>> _tertiles(lags) == tuple(statistics.quantiles(lags, n=3))
    True
    """
    ld = len(ordered)
    m = ld + 1
    result = []
    for i in (1, 2):
        j = min(max(i * m // 3, 1), ld - 1)
        delta = i * m - j * 3
        result.append((ordered[j - 1] * (3 - delta) + ordered[j] * delta) / 3)
    return result[0], result[1]


def _replayed_reason(run_id: str) -> str:
    return (
        f"{contract.REPLAY_RUN_HEADER}: {run_id!r}: a replayed record never reaches the live"
        f" platform; detect on it with `tianyan worker --replay-run {run_id}`"
    )


def _shifted(message: TelemetryMessage, by_ms: int) -> TelemetryMessage:
    """``message`` with every sample and code time moved by ``by_ms``."""
    replace = msgspec.structs.replace
    return replace(
        message,
        samples=replace(message.samples, t_ms=[t + by_ms for t in message.samples.t_ms]),
        faults=[replace(c, t_ms=c.t_ms + by_ms) for c in message.faults],
        events=[replace(c, t_ms=c.t_ms + by_ms) for c in message.events],
    )
