"""One batch of raw Kafka records in, everything the sinks need out — pure, no I/O.

For each record: validate it against the contract (→ quarantine with its reason), drop exact
duplicates (same elevator and ``seq``), then fold the new message into its elevator's
windows and trip segmenter. The worker wraps this with Kafka, TimescaleDB and Faust tables;
the tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from detectors.alerts import Alert
from detectors.rules import RuleState, observe, tick
from detectors.stats import TripHealthState, observe_trip
from detectors.thresholds import ElevatorLimits, Thresholds
from foundation import contract
from foundation.contract import TelemetryMessage
from foundation.records import Trip, WindowFeature

from .trips import TripState, initial_trip_state, segment_message
from .windows import WindowState, fold_message, initial_window_state

#: How many sequence numbers below the newest each elevator remembers for de-duplication.
#: A terminal resends within seconds; 64 messages is over a minute of driving.
DEDUP_WINDOW = 64
_DEDUP_MASK = (1 << DEDUP_WINDOW) - 1


class RawRecord(NamedTuple):
    """A Kafka record as the worker received it."""

    key: bytes | None
    value: bytes
    partition: int
    offset: int


@dataclass
class ElevatorState:
    """Everything the worker remembers about one elevator between messages.

    ``seen_mask`` bit ``i`` is set when ``last_seq - 1 - i`` has been seen.
    """

    elevator_id: str
    windows: WindowState
    trip: TripState
    rules: RuleState
    health: TripHealthState
    last_seq: int = -1
    seen_mask: int = 0
    #: ``health.to_dict()`` as of the last trip: the degradation charts (hundreds of values)
    #: change only when a trip ends, so checkpoints reuse it instead of rebuilding it.
    _health_dict: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def new(cls, elevator_id: str) -> ElevatorState:
        return cls(
            elevator_id,
            initial_window_state(elevator_id),
            initial_trip_state(elevator_id),
            RuleState.new(elevator_id),
            TripHealthState.new(elevator_id),
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "elevator_id": self.elevator_id,
            "last_seq": self.last_seq,
            "seen_mask": self.seen_mask,
            "windows": self.windows.to_dict(),
            "trip": self.trip.to_dict(),
            "rules": self.rules.to_dict(),
            "health": self.health_dict(),
        }

    def health_dict(self) -> dict[str, Any]:
        if self._health_dict is None:
            self._health_dict = self.health.to_dict()
        return self._health_dict

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ElevatorState:
        return cls(
            elevator_id=data["elevator_id"],
            windows=WindowState.from_dict(data["windows"]),
            trip=TripState.from_dict(data["trip"]),
            rules=RuleState.from_dict(data["rules"]),
            health=TripHealthState.from_dict(data["health"]),
            last_seq=data["last_seq"],
            seen_mask=data["seen_mask"],
        )


@dataclass
class IngestBatch:
    """What one batch produced, for the sinks, the quarantine and the metrics."""

    messages: list[TelemetryMessage] = field(default_factory=list)
    #: The record each of ``messages`` came from, same index: a message the database
    #: refuses is quarantined with its original bytes.
    sources: list[RawRecord] = field(default_factory=list)
    #: Refused records and the reason, for the quarantine topic (``streams.quarantine``).
    quarantined: list[tuple[RawRecord, str]] = field(default_factory=list)
    windows: list[WindowFeature] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    duplicates: int = 0
    samples: int = 0
    late_samples: int = 0
    #: elevator id → the partition its messages came from, for state checkpoints.
    touched: dict[str, int] = field(default_factory=dict)

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


class Ingest:
    """Validate, de-duplicate and fold batches of raw records.

    Parameters
    ----------
    grace_ms
        How long after a window's end its samples may still arrive (out of order) and be
        folded; later samples are counted late, stored raw, and not re-windowed.
    load_state
        Called with an elevator id the first time it is seen; returns its saved state as
        a dict (from the worker's Faust table) or None for a new elevator.
    limits_for
        The elevator's own ratings (from the registry) for the safety rules; None turns
        the detectors off.
    thresholds
        The detectors' limits (``detectors.thresholds``).
    """

    def __init__(
        self,
        grace_ms: int,
        load_state: Callable[[str], dict[str, Any] | None] = lambda _: None,
        limits_for: Callable[[str], ElevatorLimits] | None = None,
        thresholds: Thresholds | None = None,
    ) -> None:
        if grace_ms < 0:
            raise ValueError(f"grace_ms: {grace_ms} is negative")
        self.grace_ms = grace_ms
        self._load_state = load_state
        self._limits_for = limits_for
        self.thresholds = thresholds or Thresholds()
        self.states: dict[str, ElevatorState] = {}
        #: The latest sample time seen: stream time, for conditions that need no message.
        self.stream_time_ms = 0
        #: Saved states that could not be read and were started afresh.
        self.unreadable_states = 0

    def state(self, elevator_id: str) -> ElevatorState:
        st = self.states.get(elevator_id)
        if st is None:
            saved = self._load_state(elevator_id)
            st = ElevatorState.new(elevator_id)
            if saved:
                try:
                    st = ElevatorState.from_dict(saved)
                except (KeyError, TypeError, ValueError):
                    # A checkpoint this version cannot read (written by an older one):
                    # start the elevator afresh rather than stop the worker; counted.
                    self.unreadable_states += 1
            self.states[elevator_id] = st
        return st

    def forget(self, elevator_ids: Iterable[str]) -> None:
        """Drop cached states (their partitions moved to another worker)."""
        for e in elevator_ids:
            self.states.pop(e, None)

    def process(self, records: Iterable[RawRecord]) -> IngestBatch:
        out = IngestBatch()
        decode = contract.decode
        grace = self.grace_ms
        for record in records:
            try:
                message = decode(record.value)
            except contract.InvalidMessage as e:
                out.quarantined.append((record, e.reason))
                continue
            st = self.state(message.elevator_id)
            if not st.admit(message.seq):
                out.duplicates += 1
                continue
            out.messages.append(message)
            out.sources.append(record)
            out.samples += len(message.samples.t_ms)
            out.touched[message.elevator_id] = record.partition
            st.windows, closed, stats = fold_message(st.windows, message, grace)
            out.windows.extend(closed)
            out.late_samples += stats.samples_late
            st.trip, trips = segment_message(st.trip, message)
            out.trips.extend(trips)
            if self._limits_for is not None:
                limits = self._limits_for(message.elevator_id)
                st.rules, alerts = observe(st.rules, message, limits, self.thresholds)
                out.alerts.extend(alerts)
                for trip in trips:
                    st.health, alerts = observe_trip(st.health, trip, limits)
                    st._health_dict = None
                    out.alerts.extend(alerts)
            last = message.samples.t_ms[-1]
            if last > self.stream_time_ms:
                self.stream_time_ms = last
        return out

    def tick(self) -> IngestBatch:
        """Conditions that arise from silence (device offline), at stream time."""
        out = IngestBatch()
        if self._limits_for is None or not self.stream_time_ms:
            return out
        now = self.stream_time_ms
        for elevator_id, st in self.states.items():
            st.rules, alerts = tick(st.rules, now, self._limits_for(elevator_id), self.thresholds)
            if alerts:
                out.alerts.extend(alerts)
                out.touched[elevator_id] = -1
        return out
