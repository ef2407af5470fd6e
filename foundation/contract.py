"""The telemetry contract: the one definition of what an elevator terminal sends.

A message is one elevator's batch of samples over about one second (or a heartbeat while
the car is idle), JSON encoded, column-oriented so that ten samples cost one object, not ten.
Every other module imports these shapes; none redefines them.

Field meanings follow the real-time status items of GB/T 24476-2017 as provincial
data-sharing schemas use them (car status, direction, door zone, floor, door status,
passenger presence, service mode) and its fault/event code table.

Version history
---------------
1  first version: columnar samples, fault/event codes per message.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from enum import IntEnum
from typing import Annotated, Any, Final

import msgspec

SCHEMA_VERSION: Final = 1
SCHEMA_NAME: Final = f"tianyan.telemetry/{SCHEMA_VERSION}"

#: A registration code (注册代码) is 20 digits (TSG 08 special-equipment registration).
#: Python's ``$`` also matches before a trailing newline, so every pattern here is paired
#: with an exact length (see :data:`RegistrationCode`); ``\Z`` would do in Python but not in
#: the ECMA-262 regexes of the JSON Schema that terminal vendors validate with.
REGISTRATION_CODE_PATTERN: Final = r"^[0-9]{20}$"

#: Largest accepted message. A 10 Hz second is ~1.5 KiB; 64 KiB leaves room for a 100 Hz
#: terminal and refuses garbage before it is parsed.
MAX_MESSAGE_BYTES: Final = 64 * 1024
#: Most samples in one message (100 Hz over 2 s).
MAX_SAMPLES_PER_MESSAGE: Final = 200
#: Longest span of sample times within one message.
MAX_MESSAGE_SPAN_MS: Final = 5_000
#: Earliest plausible sample time (2000-01-01T00:00:00Z); anything before is a clock fault.
MIN_SAMPLE_TIME_MS: Final = 946_684_800_000
#: Kafka header every replayed record carries: the replay run's id (``tianyan replay``). A
#: live worker refuses such a record to the quarantine; only a replay worker
#: (``tianyan worker --replay-run``) detects on it, into its run's own table.
REPLAY_RUN_HEADER: Final = "tianyan-replay-run"


class Direction(IntEnum):
    """Running direction (GB/T 24476 real-time status)."""

    NONE = 0
    UP = 1
    DOWN = 2


class DoorState(IntEnum):
    """Car door state."""

    CLOSED = 0
    OPENING = 1
    OPEN = 2
    CLOSING = 3


class ServiceMode(IntEnum):
    """Service mode as terminals report it."""

    STOPPED = 0
    NORMAL = 1
    INSPECTION = 2
    FIRE_RECALL = 3
    FIREFIGHTER = 4
    EMERGENCY_POWER = 5
    EARTHQUAKE = 6
    UNKNOWN = 7


#: GB/T 24476 fault codes for lifts (01-08) and the provincial extensions (09-11).
FAULT_CODES: Final[dict[str, str]] = {
    "01": "safety circuit open while running",
    "02": "door-close fault",
    "03": "door-open fault",
    "04": "car stopped outside the unlocking zone",
    "05": "unintended car movement",
    "06": "motor run-time limiter tripped",
    "07": "floor position lost",
    "08": "other fault preventing re-run",
    "09": "overtravel top",
    "10": "overtravel bottom",
    "11": "trapped passengers",
}

#: GB/T 24476 event codes.
EVENT_CODES: Final[dict[str, str]] = {
    "40": "back to normal",
    "41": "main power off",
    "42": "out of service",
    "43": "inspection mode",
    "44": "fire recall",
    "45": "firefighter operation",
    "46": "emergency power",
    "47": "earthquake",
    "90": "alarm button pressed",
}

# Physical plausibility bounds. They reject sensor garbage, not unsafe operation: an
# overspeed of 130% must reach the detectors, so the speed bound is far above any lift.
SpeedMps = Annotated[float, msgspec.Meta(ge=0.0, le=20.0)]
AccelMps2 = Annotated[float, msgspec.Meta(ge=-20.0, le=20.0)]
PositionM = Annotated[float, msgspec.Meta(ge=-100.0, le=1000.0)]
Floor = Annotated[int, msgspec.Meta(ge=-10, le=250)]
LoadKg = Annotated[float, msgspec.Meta(ge=0.0, le=10_000.0)]
LevelingOffsetMm = Annotated[float, msgspec.Meta(ge=-5_000.0, le=5_000.0)]
TimeMs = Annotated[int, msgspec.Meta(ge=MIN_SAMPLE_TIME_MS, le=32_503_680_000_000)]
# Exact lengths as well as patterns: "01\n" and "<20 digits>\n" match the patterns alone.
Code = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{2}$", min_length=2, max_length=2)]
RegistrationCode = Annotated[
    str, msgspec.Meta(pattern=REGISTRATION_CODE_PATTERN, min_length=20, max_length=20)
]


class Samples(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Column-oriented samples: column ``i`` of every list is sample ``i``.

    Attributes
    ----------
    t_ms
        Sample times, Unix epoch milliseconds, strictly increasing.
    speed_mps
        Car speed magnitude, m/s.
    accel_mps2
        Car acceleration along the direction of travel, m/s².
    position_m
        Car position above the lowest landing, m.
    floor
        Floor the terminal reports (nearest landing).
    direction
        :class:`Direction` values.
    load_kg
        Car load, kg.
    door
        :class:`DoorState` values.
    door_zone
        True while the car is inside a landing's unlocking (door) zone.
    leveling_offset_mm
        Car sill minus landing sill, mm (positive above); meaningful in the door zone.
    passengers
        Passenger presence (infrared / load based).
    alarm
        Alarm button pressed.
    service_mode
        :class:`ServiceMode` values.
    """

    t_ms: list[TimeMs]
    speed_mps: list[SpeedMps]
    accel_mps2: list[AccelMps2]
    position_m: list[PositionM]
    floor: list[Floor]
    direction: list[Annotated[int, msgspec.Meta(ge=0, le=2)]]
    load_kg: list[LoadKg]
    door: list[Annotated[int, msgspec.Meta(ge=0, le=3)]]
    door_zone: list[bool]
    leveling_offset_mm: list[LevelingOffsetMm]
    passengers: list[bool]
    alarm: list[bool]
    service_mode: list[Annotated[int, msgspec.Meta(ge=0, le=7)]]

    def __post_init__(self) -> None:
        n = len(self.t_ms)
        if n == 0:
            raise ValueError("samples.t_ms: a message needs at least one sample")
        if n > MAX_SAMPLES_PER_MESSAGE:
            raise ValueError(
                f"samples.t_ms: {n} samples, more than the {MAX_SAMPLES_PER_MESSAGE} allowed"
            )
        # Every check below is one expression for the common case, valid input (this runs
        # for every message); the loops that name the offending field and index run only
        # when one fails.
        if not (
            n
            == len(self.speed_mps)
            == len(self.accel_mps2)
            == len(self.position_m)
            == len(self.floor)
            == len(self.direction)
            == len(self.load_kg)
            == len(self.door)
            == len(self.door_zone)
            == len(self.leveling_offset_mm)
            == len(self.passengers)
            == len(self.alarm)
            == len(self.service_mode)
        ):
            name = next(c for c in COLUMNS[1:] if len(getattr(self, c)) != n)
            raise ValueError(
                f"samples.{name}: {len(getattr(self, name))} values but samples.t_ms has {n}"
            )
        t = self.t_ms
        if not all(map(operator.lt, t, t[1:])):
            i = next(i for i in range(1, n) if t[i] <= t[i - 1])
            raise ValueError(
                f"samples.t_ms[{i}]: {t[i]} is not after samples.t_ms[{i - 1}] = {t[i - 1]}"
            )
        if t[-1] - t[0] > MAX_MESSAGE_SPAN_MS:
            raise ValueError(
                f"samples.t_ms: the samples span {t[-1] - t[0]} ms, "
                f"more than the {MAX_MESSAGE_SPAN_MS} ms one message may cover"
            )
        # Decoded JSON is always finite (the bounds refuse 1e999); this guards messages built
        # in code. The values are bounded, so the sum is finite exactly when each one is.
        if not math.isfinite(
            sum(self.speed_mps)
            + sum(self.accel_mps2)
            + sum(self.position_m)
            + sum(self.load_kg)
            + sum(self.leveling_offset_mm)
        ):
            for name in _FLOAT_COLUMNS:
                values = getattr(self, name)
                for i, v in enumerate(values):
                    if not math.isfinite(v):
                        raise ValueError(f"samples.{name}[{i}]: {v} is not a finite number")


#: The sample columns, in wire and table order.
COLUMNS: Final = tuple(Samples.__struct_fields__)
_FLOAT_COLUMNS: Final = ("speed_mps", "accel_mps2", "position_m", "load_kg", "leveling_offset_mm")


class CodeEvent(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A GB/T 24476 fault or event code the terminal raised at ``t_ms``."""

    t_ms: TimeMs
    code: Code


class TelemetryMessage(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One elevator's batch of samples (``kind="batch"``) or an idle heartbeat.

    Attributes
    ----------
    schema
        Always :data:`SCHEMA_NAME`; a consumer refuses versions it does not know.
    elevator_id
        The elevator's 20-digit registration code.
    seq
        Per-terminal message sequence number, increasing by one per message and never
        reused (a terminal keeps it across restarts); a repeated ``(elevator_id, seq)`` is a
        duplicate.
    kind
        ``"batch"`` while the car moves or its state changes, ``"heartbeat"`` every 30 s
        while idle (a single sample of the current state).
    samples
        The samples, see :class:`Samples`.
    faults, events
        Fault codes (01–11) and event codes (40–47, 90) raised during the batch.
    """

    schema: str
    elevator_id: RegistrationCode
    seq: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    kind: str
    samples: Samples
    faults: list[CodeEvent] = []
    events: list[CodeEvent] = []

    def __post_init__(self) -> None:
        if self.schema != SCHEMA_NAME:
            raise ValueError(
                f"schema: {self.schema!r} is not a version this consumer reads "
                f"(expected {SCHEMA_NAME!r})"
            )
        if self.kind not in ("batch", "heartbeat"):
            raise ValueError(f"kind: {self.kind!r} is neither 'batch' nor 'heartbeat'")
        for i, f in enumerate(self.faults):
            if f.code not in FAULT_CODES:
                raise ValueError(f"faults[{i}].code: {f.code!r} is not a GB/T 24476 fault code")
        for i, e in enumerate(self.events):
            if e.code not in EVENT_CODES:
                raise ValueError(f"events[{i}].code: {e.code!r} is not a GB/T 24476 event code")


class InvalidMessage(ValueError):
    """A raw message that breaks the contract; ``reason`` names the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_decoder = msgspec.json.Decoder(TelemetryMessage)
_encoder = msgspec.json.Encoder()


def decode(raw: bytes) -> TelemetryMessage:
    """Parse and validate one raw message.

    Raises
    ------
    InvalidMessage
        With a reason naming the offending field, for oversized, malformed or
        schema-violating input.

    Examples
    --------
    >>> decode(b'{"schema": "tianyan.telemetry/1"}')
    Traceback (most recent call last):
    ...
    foundation.contract.InvalidMessage: Object missing required field `elevator_id`
    """
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            f"message: {len(raw)} bytes, larger than the {MAX_MESSAGE_BYTES} bytes allowed"
        )
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise InvalidMessage(str(e)) from e
    except msgspec.DecodeError as e:
        raise InvalidMessage(f"message: not valid JSON ({e})") from e
    except UnicodeDecodeError as e:
        # msgspec checks UTF-8 only where it builds a str, and raises Python's own error;
        # its position is within that string, so the byte is named instead.
        bad = e.object[e.start : e.start + 1].hex()
        raise InvalidMessage(
            f"message: a string is not valid UTF-8 ({e.reason}: byte 0x{bad})"
        ) from e


def encode(message: TelemetryMessage) -> bytes:
    """Encode a message as its JSON wire form."""
    return _encoder.encode(message)


def json_schema() -> dict[str, object]:
    """The contract as a JSON Schema document, for terminal vendors."""
    return msgspec.json.schema(TelemetryMessage)


def replay_run_of(headers: Any) -> str | None:
    """The replay run a Kafka record's headers name (:data:`REPLAY_RUN_HEADER`), or None for
    live data. Headers as the clients give them: a list of (name, value) pairs, or a
    mapping (Faust), or None."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name == REPLAY_RUN_HEADER:
            if isinstance(value, bytes):
                return value.decode("utf-8", "replace")
            return str(value or "")
    return None
