"""The telemetry contract: good messages pass unchanged; each kind of bad one is refused
with a reason naming the field, and refusing it loses none of the good ones."""

from __future__ import annotations

import json

import pytest

from foundation import contract
from foundation.contract import InvalidMessage, TelemetryMessage, decode, encode
from tianyan.demo import trip_messages

ELEVATOR = "32070000000000000001"
T0 = 1_795_000_000_000


def good() -> dict:
    """A valid message as a JSON-ready dict, for tests to break one field at a time."""
    return json.loads(encode(trip_messages(ELEVATOR, T0)[1]))


def raw(d: dict) -> bytes:
    return json.dumps(d).encode()


def test_good_messages_round_trip() -> None:
    for m in trip_messages(ELEVATOR, T0):
        assert decode(encode(m)) == m


def test_heartbeat_with_codes_is_valid() -> None:
    d = good()
    d["kind"] = "heartbeat"
    for col in d["samples"]:
        d["samples"][col] = d["samples"][col][:1]
    d["faults"] = [{"t_ms": d["samples"]["t_ms"][0], "code": "11"}]
    d["events"] = [{"t_ms": d["samples"]["t_ms"][0], "code": "90"}]
    m = decode(raw(d))
    assert m.kind == "heartbeat"
    assert [f.code for f in m.faults] == ["11"]
    assert [e.code for e in m.events] == ["90"]


def _break(path: str, value: object) -> bytes:
    d = good()
    *parents, last = path.split(".")
    target = d
    for p in parents:
        target = target[p]
    if isinstance(target.get(last), list) and not isinstance(value, list):
        target[last][0] = value
    else:
        target[last] = value
    return raw(d)


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        (_break("samples.speed_mps", -1.0), "$.samples.speed_mps[0]"),
        (_break("samples.speed_mps", "fast"), "$.samples.speed_mps[0]"),
        (_break("samples.speed_mps", 7.5).replace(b"7.5", b"1e999"), "$.samples.speed_mps[0]"),
        (_break("samples.load_kg", 20_000.0), "$.samples.load_kg[0]"),
        (_break("samples.direction", 3), "$.samples.direction[0]"),
        (_break("samples.door", 9), "$.samples.door[0]"),
        (_break("samples.service_mode", 8), "$.samples.service_mode[0]"),
        (_break("samples.floor", 1.5), "$.samples.floor[0]"),
        (_break("samples.t_ms", 5), "$.samples.t_ms[0]"),
        (_break("elevator_id", "12345"), "$.elevator_id"),
        (_break("elevator_id", "3207000000000000000X"), "$.elevator_id"),
        # Python's `$` matches before a final newline: the lengths refuse it.
        (_break("elevator_id", ELEVATOR + "\n"), "$.elevator_id"),
        (_break("faults", [{"t_ms": T0, "code": "01\n"}]), "$.faults[0].code"),
        (_break("events", [{"t_ms": T0, "code": "90\n"}]), "$.events[0].code"),
        (_break("seq", -1), "$.seq"),
        (_break("schema", "tianyan.telemetry/9"), "schema:"),
        (_break("kind", "burst"), "kind:"),
        (_break("faults", [{"t_ms": T0, "code": "77"}]), "faults[0].code"),
        (_break("events", [{"t_ms": T0, "code": "01"}]), "events[0].code"),
        (_break("faults", [{"t_ms": T0, "code": "1"}]), "$.faults[0].code"),
        (_break("samples.load_kg", [1.0, 2.0]), "samples.load_kg"),
        (
            _break("samples.t_ms", [T0 + 100 * i for i in (0, 2, 1, 3, 4, 5, 6, 7, 8, 9)]),
            "samples.t_ms[2]",
        ),
        (_break("samples.t_ms", [T0 + 1000 * i for i in range(10)]), "samples.t_ms"),
    ],
)
def test_bad_field_is_named(payload: bytes, names: str) -> None:
    with pytest.raises(InvalidMessage) as e:
        decode(payload)
    assert names in e.value.reason


def test_missing_and_unknown_fields_are_named() -> None:
    d = good()
    del d["samples"]["leveling_offset_mm"]
    with pytest.raises(InvalidMessage, match="leveling_offset_mm"):
        decode(raw(d))
    d = good()
    d["samples"]["temperature_c"] = [20.0] * 10
    with pytest.raises(InvalidMessage, match="temperature_c"):
        decode(raw(d))


def test_empty_and_too_many_samples() -> None:
    d = good()
    for col in d["samples"]:
        d["samples"][col] = []
    with pytest.raises(InvalidMessage, match="at least one sample"):
        decode(raw(d))
    d = good()
    n = contract.MAX_SAMPLES_PER_MESSAGE + 1
    for col, values in d["samples"].items():
        d["samples"][col] = [values[0]] * n
    d["samples"]["t_ms"] = [T0 + i for i in range(n)]
    with pytest.raises(InvalidMessage, match=f"{n} samples"):
        decode(raw(d))


def test_a_short_column_and_a_non_finite_value_are_named() -> None:
    for col in contract.COLUMNS[1:]:
        d = good()
        d["samples"][col] = d["samples"][col][:-1]
        with pytest.raises(
            InvalidMessage, match=rf"samples\.{col}: 9 values but samples\.t_ms has 10"
        ):
            decode(raw(d))
    # Decoded JSON cannot hold one (the bounds refuse 1e999); a message built in code can.
    samples = trip_messages(ELEVATOR, T0)[1].samples
    for col in ("speed_mps", "load_kg", "leveling_offset_mm"):
        values = list(getattr(samples, col))
        values[3] = float("nan")
        with pytest.raises(ValueError, match=rf"samples\.{col}\[3\]: nan is not a finite number"):
            contract.Samples(**{c: getattr(samples, c) for c in contract.COLUMNS} | {col: values})


def test_malformed_and_oversized() -> None:
    with pytest.raises(InvalidMessage, match="not valid JSON"):
        decode(b'{"schema": "tianyan.telemetry/1", "elevator_id": ')
    with pytest.raises(InvalidMessage, match="not valid JSON"):
        decode(b"\xff\xfe garbage")
    with pytest.raises(InvalidMessage, match="not valid JSON"):
        decode(_break("samples.speed_mps", 7.5).replace(b"7.5", b"NaN"))
    # Invalid UTF-8 inside a string: msgspec raises UnicodeDecodeError, not DecodeError.
    with pytest.raises(InvalidMessage, match=r"not valid UTF-8.*0xff"):
        decode(b'{"schema":"\xff"}')
    with pytest.raises(InvalidMessage, match="not valid UTF-8"):
        decode(raw(good()).replace(ELEVATOR.encode(), b"\xed\xa0\x80" + ELEVATOR[3:].encode()))
    with pytest.raises(InvalidMessage, match="larger than"):
        decode(b" " * (contract.MAX_MESSAGE_BYTES + 1))
    with pytest.raises(InvalidMessage, match="Expected `object`"):
        decode(b"[1, 2, 3]")


def test_bad_messages_lose_nothing_valid() -> None:
    """A stream interleaving good and bad messages: every good one comes through intact."""
    goods = trip_messages(ELEVATOR, T0)
    stream: list[bytes] = []
    for m in goods:
        stream.append(encode(m))
        stream.append(encode(m).replace(b'"kind":"batch"', b'"kind":7'))
    accepted: list[TelemetryMessage] = []
    reasons: list[str] = []
    for payload in stream:
        try:
            accepted.append(decode(payload))
        except InvalidMessage as e:
            reasons.append(e.reason)
    assert accepted == goods
    assert len(reasons) == len(goods)
    assert all("$.kind" in r for r in reasons)


def test_json_schema_describes_every_column() -> None:
    schema = contract.json_schema()
    samples = schema["$defs"]["Samples"]["properties"]  # type: ignore[index]
    assert set(samples) == set(contract.COLUMNS)
    assert samples["speed_mps"]["items"]["minimum"] == 0.0
