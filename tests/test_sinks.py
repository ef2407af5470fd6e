"""The sinks, one per record type, on the real TimescaleDB: samples go to COPY as the bytes
each message arrived as, and what is stored from them is what was validated."""

from __future__ import annotations

import datetime as dt
import re

import msgspec
import psycopg
import pytest

from detectors.alerts import make_alert
from foundation import contract
from foundation.contract import TelemetryMessage
from foundation.records import WindowFeature
from sql.migrate import migrate
from streams.sinks import (
    AlertSink,
    RawMessage,
    Refused,
    SampleSink,
    TimescaleSink,
    TripSink,
    WindowSink,
)
from streams.sinks.samples import copy_text
from tianyan.demo import trip_messages

T0 = int(dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC).timestamp() * 1000)
_SAMPLE_COLUMNS = (
    "seq, speed_mps, accel_mps2, position_m, floor, direction, load_kg, door, door_zone,"
    " leveling_offset_mm, passengers, alarm, service_mode"
)


def _writer(url: str) -> str:
    return url.replace("postgresql://tianyan@", "postgresql://tianyan_writer@")


def _as_a_terminal_might_send_it(m: TelemetryMessage, elevator_id: str) -> bytes:
    """Valid JSON of ``m`` for another elevator, as no encoder of ours would write it: keys in
    another order, tabs, line ends and spaces between tokens, escaped characters in its
    strings (a backslash is COPY's escape character), exponents in its numbers."""
    fields = msgspec.to_builtins(m)
    samples = fields["samples"]
    columns = ",\r\n\t".join(
        f'"{name}" :\t{msgspec.json.encode(values).decode()}'
        for name, values in reversed(list(samples.items()))
    )
    load = ", ".join(_with_an_exponent(v) for v in samples["load_kg"])
    columns = columns.replace(
        f'"load_kg" :\t{msgspec.json.encode(samples["load_kg"]).decode()}',
        f'"load_kg" :\t[ {load} ]',
    )
    escaped_id = "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(elevator_id))
    text = (
        f'{{\n\t"samples": {{ {columns} }},\n  "kind" : "{m.kind}",'
        f' "seq": {m.seq}, "elevator_id": "{escaped_id}",\r\n'
        f' "schema": "tianyan.telemetry\\/1", "faults": [], "events": [ ]\n}}\n'
    )
    return text.encode()


def _with_an_exponent(value: float) -> str:
    """A non-negative number's exact decimal, written with an exponent: 75.25 → 7525e-2."""
    whole, fraction = repr(value).split(".")
    return f"{int(whole + fraction)}e-{len(fraction)}"


def _copy_unescaped(field: bytes) -> bytes:
    """A field of COPY's text format read back as PostgreSQL reads it."""
    out, i = bytearray(), 0
    escapes = {ord("\\"): b"\\", ord("t"): b"\t", ord("n"): b"\n", ord("r"): b"\r"}
    while i < len(field):
        if field[i] == ord("\\"):
            out += escapes[field[i + 1]]
            i += 2
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def test_copy_carries_each_message_s_own_bytes() -> None:
    original = trip_messages("32070000000000007001", T0)[3]
    raw = _as_a_terminal_might_send_it(original, "32070000000000007002")
    message = contract.decode(raw)  # valid, though written nothing like our encoder
    assert message.elevator_id == "32070000000000007002"
    assert message.samples == original.samples
    lines = copy_text([RawMessage(message, raw)]).split(b"\n")
    assert lines[1:] == [b""], "one line per message: its line ends are escaped"
    elevator_id, seq, body = lines[0].split(b"\t")
    assert (elevator_id, seq) == (b"32070000000000007002", str(message.seq).encode())
    assert _copy_unescaped(body) == raw  # byte for byte: nothing decoded and encoded again
    # A message built in code has no bytes of its own: it is encoded.
    built = copy_text([RawMessage(original)]).rstrip(b"\n").split(b"\t")[2]
    assert _copy_unescaped(built) == contract.encode(original)


def test_samples_from_the_original_bytes_are_the_validated_values(scratch_db: str) -> None:
    migrate(scratch_db)
    messages = trip_messages("32070000000000007011", T0)
    raws = [_as_a_terminal_might_send_it(m, "32070000000000007012") for m in messages]
    decoded = [contract.decode(r) for r in raws]
    with TimescaleSink(_writer(scratch_db)) as sink:
        ours = sink.write_batch(messages)  # built in code, encoded
        theirs = sink.write_batch(decoded, originals=raws)
        again = sink.write_batch(decoded, originals=raws)
    assert ours.samples == theirs.samples == sum(len(m.samples.t_ms) for m in messages) > 0
    assert again.samples == 0 and theirs.refused == ()
    with psycopg.connect(scratch_db) as conn:

        def stored(elevator_id: str) -> list[tuple[object, ...]]:
            return conn.execute(
                f"SELECT time, {_SAMPLE_COLUMNS} FROM tianyan.telemetry_sample"
                " WHERE elevator_id = %s ORDER BY time",
                [elevator_id],
            ).fetchall()

        assert stored("32070000000000007012") == stored("32070000000000007011")


def test_a_number_postgresql_reads_otherwise_is_stored_as_validated(scratch_db: str) -> None:
    """msgspec reads 1e-400 as 0 (below float64's range); PostgreSQL finds it out of range
    for ``real``. The message is valid: it is stored, with the value that was validated."""
    migrate(scratch_db)
    m = trip_messages("32070000000000007021", T0)[0]
    raw = re.sub(rb'("leveling_offset_mm":\[)[^,\]]+', rb"\g<1>1e-400", contract.encode(m), count=1)
    decoded = contract.decode(raw)
    assert decoded.samples.leveling_offset_mm[0] == 0.0
    with SampleSink(_writer(scratch_db)) as alone, pytest.raises(Refused, match="out of range"):
        alone.write([RawMessage(decoded, raw)])
    with TimescaleSink(_writer(scratch_db)) as sink:
        result = sink.write_batch([decoded], originals=[raw])
    assert result.refused == () and result.samples == len(m.samples.t_ms)


def test_fault_and_event_codes_are_stored_once_each_from_the_bytes_received(
    scratch_db: str,
) -> None:
    """Codes go to ``telemetry_code`` from the message's own bytes (faults, events, and a
    message with neither among them), once each however often the message comes."""
    migrate(scratch_db)
    first, second, *_ = trip_messages("32070000000000007031", T0)
    t = second.samples.t_ms
    coded = msgspec.structs.replace(
        second,
        faults=[contract.CodeEvent(t[2], "03")],
        events=[contract.CodeEvent(t[2], "90"), contract.CodeEvent(t[5], "43")],
    )
    batch = [RawMessage(m, contract.encode(m)) for m in (first, coded)]
    with SampleSink(_writer(scratch_db)) as sink:
        sink.write(batch)
        sink.write(batch)  # again, as after a restart
    with psycopg.connect(scratch_db) as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM time) * 1000)::bigint, code, kind, seq"
            " FROM tianyan.telemetry_code ORDER BY time, code"
        ).fetchall()
    assert rows == [
        (t[2], "03", "fault", coded.seq),
        (t[2], "90", "event", coded.seq),
        (t[5], "43", "event", coded.seq),
    ]


def test_each_record_type_has_its_own_sink(scratch_db: str) -> None:
    migrate(scratch_db)
    url = _writer(scratch_db)
    window = WindowFeature(
        T0,
        "32070000000000007031",
        1,
        10,
        1.0,
        0.5,
        0.5,
        1.0,
        700.0,
        1.0,
        1.0,
        0,
        0,
        None,
        None,
        0.0,
        None,
    )
    alert = make_alert("32070000000000007031", "overload", T0, T0 + 1000, {"load_kg": 1200})
    with SampleSink(url) as samples, WindowSink(url) as windows, AlertSink(url) as alerts:
        for sink in (samples, windows, alerts):
            sink.setup()
        messages = trip_messages("32070000000000007031", T0)
        assert samples.write([RawMessage(m) for m in messages])["telemetry_sample"] > 0
        assert windows.write([window]) == {"window_feature": 1}
        assert windows.write([window]) == {"window_feature": 0}  # stored already
        assert alerts.write([alert, alert]) == {"alert": 1}
        assert alerts.write([]) == {}
    with TripSink(url) as trips:
        assert trips.write([]) == {}
    with psycopg.connect(scratch_db) as conn:
        row = conn.execute("SELECT alert_id FROM tianyan.alert").fetchone()
    assert row == (alert.alert_id,)


def test_an_alert_s_one_id_is_its_key_and_state() -> None:
    import doctest

    import detectors.alerts

    assert doctest.testmod(detectors.alerts).attempted >= 2
    assert doctest.testmod(detectors.alerts).failed == 0
