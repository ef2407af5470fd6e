"""Detection quality end to end: simulate a fleet with labelled faults, run the worker's
detectors over it exactly as the worker does, and score the alerts against the labels.

The detectors run through :class:`streams.ingest.Ingest`, the worker's own detection loop —
validation, de-duplication, trip segmentation and every detector of
:mod:`detectors.catalog` — with each elevator's registry limits, one record at a time in
file order (one partition), :meth:`~streams.ingest.Ingest.tick` after each as the worker
ticks after each batch, and once more at the end of the stream; on stream time alone (no
wall clock is injected). Each record's arrival time, which the worker reads from Kafka, is
here its send time as the file's order shows it (:func:`send_times`). Scoring is
:func:`evaluation.scoring.score`.

>>> report = evaluate("tests/scenarios/detector_faults.toml", seed=1, elevators=4,
...                   duration_s=300)  # doctest: +SKIP
>>> print(report.table())  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import simulator
from detectors.alerts import Alert
from detectors.thresholds import ElevatorLimits, Thresholds
from evaluation.scoring import Evaluation, score
from registry.generate import generate
from registry.model import Elevator
from streams.ingest import Ingest, RawRecord

#: 01:00 UTC is 09:00 in Lianyungang: a run that starts at the morning peak meets traffic.
DEFAULT_START = dt.datetime(2025, 3, 3, 1, 0, tzinfo=dt.UTC)
#: The synthetic registry the fleet is drawn from (``tianyan simulate --registry-seed``).
REGISTRY_SEED = 3
#: Records on each side of a record whose newest sample times give its send time
#: (:func:`send_times`): 31 records, many of them from terminals whose clock is right, even
#: with clock faults at 20 per elevator-day.
SEND_TIME_RECORDS = 15
#: Votes for a send time this close agree (:func:`send_times`): right clocks stamp their
#: newest samples within a second or two of sending; wrong ones are off by minutes to days.
CLOCKS_AGREE_MS = 10_000


class EvaluationError(ValueError):
    """The run cannot be evaluated (no labels beside the file, no messages…); says why."""


@dataclass
class EvaluationReport:
    """One evaluated run: where it came from, what the pipeline saw, and the scores.

    Attributes
    ----------
    source
        The scenario file simulated, or the JSON Lines file read.
    seed
        The scenario seed (None for a file).
    elevators
        Elevators in the run (for a file: distinct elevators that sent a valid message).
    duration_s
        Send time (:func:`send_times`) from the first to the last valid message, s: not
        sample time, which a terminal's wrong clock can stretch.
    messages, quarantined, duplicates, trips
        What :class:`~streams.ingest.Ingest` accepted, rejected, dropped and segmented.
    alerts_raised
        Alerts raised (clearings not counted).
    default_limits
        Elevators not in the registry, judged with the conservative default limits.
    evaluation
        The scores (:class:`evaluation.scoring.Evaluation`).
    wall_s
        Elapsed wall-clock seconds (simulation included).
    """

    source: str
    seed: int | None
    elevators: int
    duration_s: float
    messages: int
    quarantined: int
    duplicates: int
    trips: int
    alerts_raised: int
    default_limits: int
    evaluation: Evaluation
    wall_s: float = 0.0

    def table(self) -> str:
        """The header line, then :meth:`evaluation.scoring.Evaluation.table`."""
        seed = "" if self.seed is None else f" seed {self.seed}"
        head = (
            f"{self.source}{seed}: {self.elevators} elevators × {self.duration_s:.0f} s; "
            f"{self.messages} messages ({self.quarantined} quarantined, {self.duplicates} "
            f"duplicates), {self.trips} trips, {self.alerts_raised} alerts"
        )
        if self.default_limits:
            head += f"; {self.default_limits} elevators not in the registry (default limits)"
        return head + "\n\n" + self.evaluation.table()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "source": self.source,
            "seed": self.seed,
            "elevators": self.elevators,
            "duration_s": self.duration_s,
            "messages": self.messages,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "trips": self.trips,
            "alerts_raised": self.alerts_raised,
            "default_limits": self.default_limits,
            **self.evaluation.to_dict(),
            "wall_s": round(self.wall_s, 2),
        }

    def as_json(self) -> str:
        """One line of JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


def fleet(elevators: int, as_of: dt.date, registry_seed: int = REGISTRY_SEED) -> list[Elevator]:
    """The first ``elevators`` of the synthetic registry (every one simulated, with or
    without a terminal in the registry, so the fleet has exactly that size)."""
    return generate(registry_seed, elevators, as_of)


def evaluate(
    scenario_path: str | Path,
    seed: int | None,
    elevators: int = 60,
    duration_s: float = 3600.0,
    start: dt.datetime = DEFAULT_START,
    *,
    registry_seed: int = REGISTRY_SEED,
    thresholds: Thresholds | None = None,
) -> EvaluationReport:
    """Simulate ``elevators`` cars under a scenario for ``duration_s`` and score the
    detectors on it.

    Parameters
    ----------
    scenario_path
        A scenario TOML (``simulator/SCENARIOS.md``).
    seed
        Overrides the scenario's seed; None keeps it.
    elevators
        Fleet size, drawn from the synthetic registry (``registry_seed``).
    duration_s
        Simulated seconds.
    start
        Simulated clock start, timezone-aware (naive is taken as UTC).
    thresholds
        The detectors' thresholds; the defaults if None.

    Raises
    ------
    simulator.ScenarioError
        The scenario file is invalid (the message names the key).
    """
    wall0 = time.perf_counter()
    scenario = simulator.load_scenario(scenario_path, seed=seed)
    start = start if start.tzinfo is not None else start.replace(tzinfo=dt.UTC)
    cars = fleet(elevators, start.astimezone(dt.UTC).date(), registry_seed)
    with tempfile.TemporaryDirectory(prefix="tianyan-evaluate-") as tmp:
        path = Path(tmp) / "run.jsonl"
        simulator.simulate(
            scenario,
            cars,
            start=start,
            duration_s=duration_s,
            output=simulator.FileOutput(path),
            progress=False,
        )
        report = _evaluate_run(path, read_labels(path), cars, thresholds)
    report.source = str(scenario_path)
    report.seed = scenario.seed
    # Rates are per simulated elevator-day: every car simulated, the whole duration (the
    # stream's own span ends at the last sample, a tick short of it).
    report.elevators = report.evaluation.elevators = len(cars)
    report.duration_s = report.evaluation.duration_s = float(duration_s)
    report.wall_s = time.perf_counter() - wall0
    return report


def evaluate_file(
    path: str | Path,
    *,
    registry_elevators: int,
    registry_seed: int = REGISTRY_SEED,
    thresholds: Thresholds | None = None,
) -> EvaluationReport:
    """Score the detectors on a simulated run already on disk (labels beside it).

    The file carries no ratings, so the registry is regenerated as ``tianyan simulate
    --registry-seed S --elevators N`` drew it: ``registry_seed`` and ``registry_elevators``
    (N), as of the date of the first sample. Elevators not found are judged with
    :meth:`~detectors.thresholds.ElevatorLimits.unknown` and counted in the report.

    Raises
    ------
    EvaluationError
        No labels file beside ``path``, or no valid message in it.
    """
    wall0 = time.perf_counter()
    path = Path(path)
    labels = read_labels(path)
    first_ms = _first_sample_ms(path)
    as_of = dt.datetime.fromtimestamp(first_ms / 1000, dt.UTC).date()
    cars = fleet(registry_elevators, as_of, registry_seed)
    report = _evaluate_run(path, labels, cars, thresholds)
    report.wall_s = time.perf_counter() - wall0
    return report


def read_labels(path: Path) -> list[dict[str, Any]]:
    """The labels the simulator wrote beside ``path`` (``<stem>.labels.jsonl``)."""
    labels_path = path.with_name(f"{path.stem}.labels.jsonl")
    try:
        text = labels_path.read_text(encoding="utf-8")
    except OSError as e:
        raise EvaluationError(f"{labels_path}: cannot read the fault labels ({e})") from e
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise EvaluationError(f"{labels_path}: line {e.lineno}: not JSON ({e.msg})") from e


def _first_sample_ms(path: Path) -> int:
    from foundation.contract import InvalidMessage, decode

    try:
        with path.open("rb") as f:
            for line in f:
                try:
                    return decode(line.rstrip(b"\r\n")).samples.t_ms[0]
                except InvalidMessage:
                    continue
    except OSError as e:
        raise EvaluationError(f"{path}: cannot read ({e})") from e
    raise EvaluationError(f"{path}: no valid telemetry message")


def _evaluate_run(
    path: Path,
    labels: list[dict[str, Any]],
    cars: Sequence[Elevator],
    thresholds: Thresholds | None,
) -> EvaluationReport:
    th = thresholds or Thresholds()
    known = {e.registration_code: ElevatorLimits.of(e) for e in cars}
    unknown_limits = ElevatorLimits.unknown(th)
    not_in_registry: set[str] = set()

    def limits_for(elevator_id: str) -> ElevatorLimits:
        lim = known.get(elevator_id)
        if lim is None:
            not_in_registry.add(elevator_id)
            return unknown_limits
        return lim

    run = _run_pipeline(path, limits_for, th)
    if not run.times:
        raise EvaluationError(f"{path}: no valid telemetry message")
    end_ms = max(int(t[-1]) for t in run.times.values())
    # From send times, not sample times: a terminal's clock hours ahead, stored so until it
    # was judged, made a no-fault hour of 200 elevators 218 elevator-days, and its false
    # alarms 26 times fewer per 1,000.
    assert run.first_sent_ms is not None and run.last_sent_ms is not None
    duration_s = (run.last_sent_ms - run.first_sent_ms) / 1000
    evaluation = score(
        labels,
        run.alerts,
        end_ms=end_ms,
        sample_times=run.times,
        elevators=len(run.times),
        duration_s=duration_s,
        thresholds=th,
    )
    return EvaluationReport(
        source=str(path),
        seed=None,
        elevators=len(run.times),
        duration_s=duration_s,
        messages=run.messages,
        quarantined=run.quarantined,
        duplicates=run.duplicates,
        trips=run.trips,
        alerts_raised=sum(1 for a in run.alerts if a.state == "raised"),
        default_limits=len(not_in_registry),
        evaluation=evaluation,
    )


@dataclass
class DetectorRun:
    """What :func:`run_detectors` saw and raised."""

    alerts: list[Alert]
    times: dict[str, np.ndarray]
    messages: int
    quarantined: int
    duplicates: int
    trips: int
    #: Trips and one-minute windows given an online-learning score.
    scored: int = 0
    #: The first and last valid message's send time (:func:`send_times`), Unix ms.
    first_sent_ms: int | None = None
    last_sent_ms: int | None = None


def _run_pipeline(
    path: Path, limits_for: Callable[[str], ElevatorLimits], thresholds: Thresholds
) -> DetectorRun:
    """:func:`run_detectors` over the file's lines."""
    with path.open("rb") as f:
        return run_detectors(((None, line.rstrip(b"\r\n")) for line in f), limits_for, thresholds)


def run_detectors(
    records: Iterable[tuple[bytes | None, bytes]],
    limits_for: Callable[[str], ElevatorLimits],
    thresholds: Thresholds,
    without: Iterable[str] = (),
) -> DetectorRun:
    """Feed raw (key, value) messages to the worker's :class:`Ingest` one at a time, as one
    partition would deliver them (arriving at their :func:`send_times`), each followed by a
    tick as the worker ticks after each batch; the stream's end is one more turn with
    nothing new. ``without`` names detectors not to run."""
    # grace_ms only decides which late samples are re-windowed; windows are not scored.
    ingest = Ingest(0, limits_for=limits_for, thresholds=thresholds, without=without)
    alerts: list[Alert] = []
    # elevator id → its sample times, compact (a fleet-hour is millions of samples)
    times: dict[str, array[int]] = {}
    messages = quarantined = duplicates = trips = scored = 0
    first_sent_ms = last_sent_ms = None
    for offset, (key, value, arrival_ms) in enumerate(send_times(records)):
        batch = ingest.process([RawRecord(key, value, 0, offset, arrival_ms)])
        if batch.messages and arrival_ms is not None:
            first_sent_ms = arrival_ms if first_sent_ms is None else first_sent_ms
            last_sent_ms = arrival_ms
        # batch: the message (or its quarantine / duplicate count), trips, alerts
        alerts += batch.alerts
        messages += len(batch.messages)
        quarantined += len(batch.quarantined)
        duplicates += batch.duplicates
        trips += len(batch.trips)
        scored += sum(1 for t in batch.trips if t.online_score is not None)
        scored += sum(1 for w in batch.windows if w.online_score is not None)
        for m in batch.messages:
            times.setdefault(m.elevator_id, array("q")).extend(m.samples.t_ms)
        alerts += ingest.tick().alerts
    alerts += ingest.tick().alerts  # the end of the stream: every silence judged
    return DetectorRun(
        alerts=alerts,
        times={k: np.sort(np.frombuffer(v, dtype=np.int64)) for k, v in times.items()},
        messages=messages,
        quarantined=quarantined,
        duplicates=duplicates,
        trips=trips,
        scored=scored,
        first_sent_ms=first_sent_ms,
        last_sent_ms=last_sent_ms,
    )


def send_times(
    records: Iterable[tuple[bytes | None, bytes]],
) -> Iterator[tuple[bytes | None, bytes, int | None]]:
    """Each (key, value) with its send time, Unix ms: what Kafka's record timestamp is to the
    worker, for a file written in send order (the simulator's, a recording's).

    A record's send time is read from the newest sample times of the
    :data:`SEND_TIME_RECORDS` records on each side of it (terminals whose clock is right
    stamp their newest sample at about the time they send it), one vote per terminal (its
    latest record there: a busy car whose clock is off sends a record a second, and a few
    such would outvote the idle cars around them): the median of the largest group of votes
    within :data:`CLOCKS_AGREE_MS` of one another, the right clocks agreeing while wrong ones
    scatter (so even when most of the window's clocks are wrong; a plain median then jumped
    hours ahead), the group nearest the last send time on a tie, the last send time when no
    two agree; never earlier than the record before's; None until a valid message is seen.
    """
    from foundation.contract import InvalidMessage, decode

    def newest_ms(value: bytes) -> tuple[str, int] | None:
        try:
            message = decode(value)
        except InvalidMessage:
            return None
        return message.elevator_id, message.samples.t_ms[-1]

    ahead: deque[tuple[bytes | None, bytes, tuple[str, int] | None]] = deque()
    window: deque[tuple[str, int] | None] = deque(maxlen=2 * SEND_TIME_RECORDS + 1)
    sent_ms: int | None = None

    def release() -> tuple[bytes | None, bytes, int | None]:
        nonlocal sent_ms
        key, value, _ = ahead.popleft()
        times = list(dict(v for v in window if v is not None).values())
        if times:
            agreed_ms = _agreed_time_ms(times, sent_ms)
            sent_ms = agreed_ms if sent_ms is None else max(sent_ms, agreed_ms)
        return key, value, sent_ms

    for key, value in records:
        t = newest_ms(value)
        ahead.append((key, value, t))
        window.append(t)
        if len(ahead) > SEND_TIME_RECORDS:
            yield release()
    while ahead:
        window.append(None)
        yield release()


def _agreed_time_ms(times_ms: list[int], last_ms: int | None) -> int:
    """The (upper) median of the largest group of ``times_ms`` within :data:`CLOCKS_AGREE_MS`
    of one another (upper: a second late rather than early, as a network delays and never
    hastens a message); among groups as large, the one whose median is nearest ``last_ms`` (or, when
    there is none yet, the median of all); ``last_ms`` itself when no two agree."""
    ordered = sorted(times_ms)
    near_ms = statistics.median_low(ordered) if last_ms is None else last_ms
    best: tuple[int, int] | None = None  # (size, median)
    start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] > CLOCKS_AGREE_MS:
            start += 1
        size = end - start + 1
        median_ms = ordered[(start + end + 1) // 2]
        if (
            best is None
            or size > best[0]
            or (size == best[0] and abs(median_ms - near_ms) < abs(best[1] - near_ms))
        ):
            best = (size, median_ms)
    assert best is not None
    if best[0] == 1 and last_ms is not None:
        return last_ms  # no two clocks agree: none is trusted over the last send time
    return best[1]
