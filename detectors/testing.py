"""Builders for hand-made telemetry, public so that detectors are tested (and their
docstring examples run) in-process with explicit timestamps.

>>> m = message([car(t_ms=1_700_000_000_000, speed_mps=1.2),
...              car(t_ms=1_700_000_000_100, speed_mps=1.3)])
>>> m.samples.speed_mps
[1.2, 1.3]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from foundation.contract import COLUMNS, SCHEMA_NAME, CodeEvent, Samples, TelemetryMessage

ELEVATOR_ID: Final = "32070620200000000001"
#: A standing car at the lowest landing, doors closed, empty, in normal service.
DEFAULTS: Final[Mapping[str, Any]] = {
    "speed_mps": 0.0,
    "accel_mps2": 0.0,
    "position_m": 0.0,
    "floor": 1,
    "direction": 0,
    "load_kg": 0.0,
    "door": 0,
    "door_zone": True,
    "leveling_offset_mm": 0.0,
    "passengers": False,
    "alarm": False,
    "service_mode": 1,
}


def car(*, t_ms: int, **values: Any) -> dict[str, Any]:
    """One sample row: :data:`DEFAULTS` with ``values`` applied."""
    unknown = set(values) - set(DEFAULTS)
    if unknown:
        raise KeyError(f"{sorted(unknown)}: not sample columns (known: {', '.join(DEFAULTS)})")
    return {"t_ms": t_ms, **DEFAULTS, **values}


def message(
    rows: Sequence[Mapping[str, Any]],
    *,
    elevator_id: str = ELEVATOR_ID,
    seq: int = 0,
    kind: str = "batch",
    faults: Iterable[tuple[int, str]] = (),
    events: Iterable[tuple[int, str]] = (),
) -> TelemetryMessage:
    """A validated message from per-sample rows (``faults``/``events`` as (t_ms, code))."""
    samples = Samples(**{c: [row[c] for row in rows] for c in COLUMNS})
    return TelemetryMessage(
        schema=SCHEMA_NAME,
        elevator_id=elevator_id,
        seq=seq,
        kind=kind,
        samples=samples,
        faults=[CodeEvent(t_ms=t, code=c) for t, c in faults],
        events=[CodeEvent(t_ms=t, code=c) for t, c in events],
    )


class UncheckedSamples:
    """Columns as given, not validated: for feeding detectors NaN, inf and other garbage
    that the contract would have refused."""

    def __init__(self, columns: Mapping[str, list[Any]]) -> None:
        for name in COLUMNS:
            setattr(self, name, list(columns[name]))


class UncheckedMessage:
    """A message-shaped object that skips the contract's checks (see :class:`UncheckedSamples`)."""

    def __init__(
        self, rows: Sequence[Mapping[str, Any]], *, elevator_id: str = ELEVATOR_ID, seq: int = 0
    ) -> None:
        self.schema = SCHEMA_NAME
        self.elevator_id = elevator_id
        self.seq = seq
        self.kind = "batch"
        self.samples = UncheckedSamples({c: [row[c] for row in rows] for c in COLUMNS})
        self.faults: list[CodeEvent] = []
        self.events: list[CodeEvent] = []
