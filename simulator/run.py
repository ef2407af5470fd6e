"""``simulate``: run a scenario over a fleet into an output, paced and with progress."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from registry.model import Elevator

from .fleet import FleetEngine
from .mqtt_output import MqttOutput
from .output import FileOutput, KafkaOutput
from .scenario import Scenario


@dataclass(frozen=True)
class SimulationSummary:
    """What a run produced.

    Attributes
    ----------
    messages
        Messages handed to the output (duplicates count twice, malformed ones once).
    samples
        Samples in well-formed messages.
    faults
        Fault labels written.
    malformed
        Deliberately malformed messages (Parquet leaves them out).
    elevators
        Cars simulated.
    simulated_s, wall_s
        Simulated and elapsed wall-clock seconds.
    samples_per_s, messages_per_s
        Throughput over wall-clock time.
    run_id
        Identifies the run's labels in ``tianyan.fault_label``.
    labels_path
        The labels JSONL file, if one was written.
    """

    messages: int
    samples: int
    faults: int
    malformed: int
    elevators: int
    simulated_s: float
    wall_s: float
    samples_per_s: float
    messages_per_s: float
    run_id: str
    labels_path: str | None

    def as_json(self) -> str:
        """One line of JSON."""
        return json.dumps(asdict(self), ensure_ascii=False)


def default_run_id(
    scenario: Scenario, elevators: Sequence[Elevator], start: dt.datetime, duration_s: float
) -> str:
    """A deterministic id: scenario name, seed, start, and a hash of everything else."""
    h = hashlib.sha256()
    h.update(scenario.fingerprint().encode())
    h.update(str(duration_s).encode())
    for e in elevators:
        h.update(e.registration_code.encode())
    return f"{scenario.name}-{scenario.seed}-{start.strftime('%Y%m%dT%H%M%SZ')}-{h.hexdigest()[:8]}"


def simulate(
    scenario: Scenario,
    elevators: Sequence[Elevator],
    *,
    start: dt.datetime,
    duration_s: float,
    output: FileOutput | KafkaOutput | MqttOutput,
    speed: float | None = None,
    progress: bool = True,
    run_id: str | None = None,
) -> SimulationSummary:
    """Simulate ``elevators`` under ``scenario`` and write messages and labels to ``output``.

    Parameters
    ----------
    scenario
        From :func:`~simulator.scenario.load_scenario`.
    elevators
        Registry records; each becomes one terminal.
    start
        Simulated time of the first sample; must be timezone-aware.
    duration_s
        Simulated seconds.
    output
        :class:`FileOutput`, :class:`KafkaOutput` or :class:`~simulator.mqtt_output.MqttOutput`.
    speed
        ``None`` runs as fast as possible; ``1.0`` real time; ``10.0`` ten times real time.
    progress
        Show a tqdm bar on stderr (simulated seconds, rate, ETA).
    run_id
        Defaults to :func:`default_run_id`.

    Returns
    -------
    SimulationSummary
        Counts and throughput; the same inputs give the same counts and the same bytes.
    """
    if start.tzinfo is None:
        raise ValueError("start: a timezone-aware datetime is required (e.g. tzinfo=UTC)")
    if not duration_s > 0:
        raise ValueError(f"duration_s: {duration_s!r} is not a positive number of seconds")
    if speed is not None and not speed > 0:
        raise ValueError(f"speed: {speed!r} is not a positive multiple of real time")
    start = start.astimezone(dt.UTC)
    run_id = run_id or default_run_id(scenario, elevators, start, duration_s)
    engine = FleetEngine(scenario, elevators, round(start.timestamp() * 1000), duration_s)
    keys = [e.registration_code.encode() for e in elevators]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=math.ceil(engine.duration_s),
            unit="sim-s",
            file=sys.stderr,
            desc=f"simulating {len(elevators)} elevators",
            dynamic_ncols=True,
        )
    wall0 = time.perf_counter()
    done = [0]

    def on_second(sec: int) -> None:
        if bar is not None:
            bar.update(sec - done[0])
            if sec % 60 == 0:
                bar.set_postfix(samples=engine.samples, refresh=False)
        done[0] = sec
        if speed is not None:
            ahead_s = sec / speed - (time.perf_counter() - wall0)
            if ahead_s > 0:
                time.sleep(ahead_s)

    write = output.write
    output.open()
    try:
        engine.run(lambda i, payload, msg: write(keys[i], payload, msg), on_second)
    finally:
        if bar is not None:
            bar.close()
    output.close(run_id, engine.labels)
    wall_s = time.perf_counter() - wall0
    labels_path = output.labels_path
    return SimulationSummary(
        messages=engine.messages,
        samples=engine.samples,
        faults=len(engine.labels),
        malformed=engine.malformed,
        elevators=len(elevators),
        simulated_s=engine.duration_s,
        wall_s=round(wall_s, 3),
        samples_per_s=round(engine.samples / max(wall_s, 1e-9), 1),
        messages_per_s=round(engine.messages / max(wall_s, 1e-9), 1),
        run_id=run_id,
        labels_path=None if labels_path is None else str(Path(labels_path)),
    )
