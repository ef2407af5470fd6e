"""One message cannot stop the city: whatever a terminal sends, the worker quarantines what it
cannot take, with the reason, and stores everything else.

The quarantine record is bounded whatever its input; the sink isolates the messages the
database refuses and retries only when the database itself fails; a property-based fuzz of
mutated valid messages runs decode → validate → fold → sink on the real TimescaleDB; and a
real worker on the real Kafka takes each of the poison messages that used to stop it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import re
import time
import urllib.error
import urllib.request
from array import array
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.thresholds import ElevatorLimits
from foundation import contract
from foundation.contract import CodeEvent, TelemetryMessage
from foundation.records import WindowFeature
from foundation.settings import Settings, role_url
from sql.migrate import migrate
from streams import quarantine
from streams.ingest import Ingest, RawRecord
from streams.producer import RawPublisher
from streams.sinks import SinkError, TimescaleSink
from tianyan.demo import trip_messages

from .conftest import consume_all
from .test_worker import _pipeline

T0 = int(dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC).timestamp() * 1000)
#: Producer and broker limit on one message (streams/producer.py, the stack's broker).
KAFKA_MAX_MESSAGE_BYTES = 1_048_576


def _writer(url: str) -> str:
    return role_url(url, "tianyan_writer")


def _stored(url: str, messages: list[TelemetryMessage]) -> set[tuple[str, int]]:
    """Which of the messages' (elevator, sample time) are in ``telemetry_sample``."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT elevator_id, (extract(epoch FROM time) * 1000)::bigint "
            "FROM tianyan.telemetry_sample WHERE elevator_id = ANY(%s)",
            [sorted({m.elevator_id for m in messages})],
        ).fetchall()
    return {(e, int(t)) for e, t in rows}


def _samples(messages: list[TelemetryMessage]) -> set[tuple[str, int]]:
    return {(m.elevator_id, t) for m in messages for t in m.samples.t_ms}


def _float32_cannot_hold(m: TelemetryMessage) -> bool:
    """True if a sample value is non-zero but 0.0 as a 32-bit float (the columns' ``real``)."""
    s = m.samples
    for values in (s.speed_mps, s.accel_mps2, s.position_m, s.load_kg, s.leveling_offset_mm):
        if array("f", values).count(0.0) != values.count(0.0):
            return True
    return False


# -- the quarantine record ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    key_bytes=st.integers(0, 3 * 1024),
    value_bytes=st.integers(0, 1_100_000),
    reason=st.text(max_size=3000),
)
def test_quarantine_record_always_fits(key_bytes: int, value_bytes: int, reason: str) -> None:
    key, value = b"k" * key_bytes, bytes(range(256)) * (value_bytes // 256 + 1)
    value = value[:value_bytes]
    r = quarantine.quarantine_record(RawRecord(key, value, 0, 0), reason)
    size = len(r.key) + len(r.value) + sum(len(k) + len(v or b"") for k, v in r.headers.items())
    assert size < KAFKA_MAX_MESSAGE_BYTES // 2 + 4096
    reason_header = r.headers["reason"]
    assert isinstance(reason_header, bytes)
    assert len(reason_header) <= quarantine.MAX_REASON_BYTES
    assert reason.encode("utf-8", "backslashreplace").startswith(reason_header)
    assert value.startswith(r.value) and key.startswith(r.key)
    if value_bytes > quarantine.MAX_VALUE_BYTES:
        assert len(r.value) == quarantine.MAX_VALUE_BYTES
        assert r.headers["original-length"] == str(value_bytes).encode()
        assert r.headers["sha256"] == hashlib.sha256(value).hexdigest().encode()
    else:
        assert r.value == value
        assert "original-length" not in r.headers and "sha256" not in r.headers
    assert ("original-key-length" in r.headers) == (key_bytes > quarantine.MAX_KEY_BYTES)


def test_quarantine_record_of_a_normal_refusal_is_the_message_and_its_reason() -> None:
    raw = b'{"schema":"\xff"}'
    reason = "message: a string is not valid UTF-8 (invalid start byte: byte 0xff)"
    r = quarantine.quarantine_record(RawRecord(b"32070000000000000001", raw, 1, 5), reason)
    assert r == (b"32070000000000000001", raw, {"reason": reason.encode()})
    # No key (a terminal that sends none): an empty one.
    assert quarantine.quarantine_record(RawRecord(None, raw, 0, 0), reason).key == b""


# -- the sink: data refused vs database down ----------------------------------------------------


def _with_value(m: TelemetryMessage, column: str, value: float) -> TelemetryMessage:
    """``m`` with its first ``column`` value replaced, decoded as the worker would."""
    d = json.loads(contract.encode(m))
    d["samples"][column][0] = value
    return contract.decode(json.dumps(d).encode())


def test_sink_stores_everything_but_the_message_the_database_refuses(scratch_db: str) -> None:
    migrate(scratch_db)
    good = trip_messages("32070000000000000011", T0) + trip_messages("32070000000000000012", T0)
    # Valid by the contract, refused by PostgreSQL: 1e-50 is 0 as a 32-bit `real`.
    tiny = _with_value(trip_messages("32070000000000000013", T0)[2], "speed_mps", 1e-50)
    # Built in code, where the contract's patterns do not apply: its id, escaped, is 21
    # characters, too long for char(20) (unescaped it broke the COPY line).
    newline = msgspec.structs.replace(
        trip_messages("32070000000000000014", T0)[0], elevator_id="32070000000000000014\n"
    )
    batch = [*good[:3], tiny, *good[3:9], newline, *good[9:]]
    with TimescaleSink(_writer(scratch_db)) as sink:
        result = sink.write_batch(batch)
    assert [i for i, _ in result.refused] == [3, 10]
    assert "out of range for type real" in result.refused[0][1]
    assert "too long for type character(20)" in result.refused[1][1]
    assert _stored(scratch_db, [*good, tiny, newline]) == _samples(good)
    assert result.samples == len(_samples(good))


def test_sink_leaves_out_a_derived_row_the_database_refuses(scratch_db: str) -> None:
    migrate(scratch_db)
    good = trip_messages("32070000000000000021", T0)
    window = WindowFeature(
        T0,
        "32070000000000000021",
        1,
        10,
        1.0,
        1e-50,
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
    ok = msgspec.structs.replace(window, bucket_start_ms=T0 + 1000, speed_mean_mps=0.5)
    with TimescaleSink(_writer(scratch_db)) as sink:
        result = sink.write_batch(good, windows=[window, ok])
    assert result.refused == () and result.dropped_rows == 1 and result.windows == 1
    assert _stored(scratch_db, good) == _samples(good)


def test_sink_retries_when_the_database_fails_not_the_data(scratch_db: str) -> None:
    """Nothing is refused, or lost, when the database is down or refuses the writer."""
    migrate(scratch_db)
    messages = trip_messages("32070000000000000031", T0)
    down = TimescaleSink("postgresql://tianyan_writer@127.0.0.1:1/nowhere")
    with pytest.raises(SinkError, match="cannot connect"):
        down.write_batch(messages)
    # Permission denied (SQLSTATE 42501) is the database's state, not the data's.
    with psycopg.connect(scratch_db, autocommit=True) as conn:
        conn.execute("REVOKE INSERT ON tianyan.telemetry_sample FROM tianyan_writer")
    with TimescaleSink(_writer(scratch_db)) as sink:
        with pytest.raises(SinkError, match="permission denied"):
            sink.write_batch(messages)
        with psycopg.connect(scratch_db, autocommit=True) as conn:
            conn.execute("GRANT INSERT ON tianyan.telemetry_sample TO tianyan_writer")
        result = sink.write_batch(messages)  # the retry, as the worker does it
    assert result.refused == ()
    assert _stored(scratch_db, messages) == _samples(messages)


# -- the fuzz: mutated valid messages through decode → validate → fold → sink -------------------

#: Replacements for one number of a valid message: too large, too small for a 32-bit float,
#: too small for a 64-bit one, not JSON, overflowing every integer type.
_NUMBERS = [
    b"1e999",
    b"-1e999",
    b"1e308",
    b"1e-50",
    b"-5e-324",
    b"1e-40",
    b"1.401298464324817e-45",
    b"NaN",
    b"Infinity",
    b"-0",
    b"99999999999999999999999999",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551616",
    b"0.000000000000000000000000000000000000000000000000000001",
    b"1e-400",  # 0 to msgspec, out of range to PostgreSQL, which reads the original bytes
]
#: Replacements for one string's contents (elevator id, schema, kind or a code): bad UTF-8
#: (a lone byte, a truncated sequence, an encoded surrogate, an overlong NUL), JSON escapes
#: of a surrogate and of NUL, newlines as an escape and as a raw byte, a raw tab and an
#: escaped backslash (COPY's separators and escape character).
_STRINGS = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xc0\x80",
    b"\\ud800",
    b"\\u0000",
    b"\\n",
    b"\n",
    b"\t",
    b"\\\\",
]
_NUMBER = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_STRING = re.compile(rb'"(?:elevator_id|schema|kind|code)":"([^"]*)"')


@st.composite
def _mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` with one hostile change."""
    kind = draw(
        st.sampled_from(
            ["flip", "truncate", "insert", "delete", "oversize", "number", "string", "append"]
        )
    )
    at = draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    if kind == "truncate":
        return raw[:at]
    if kind == "insert":
        return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if kind == "delete":
        return raw[:at] + raw[at + draw(st.integers(1, 16)) :]
    if kind == "oversize":
        pad = draw(st.sampled_from([contract.MAX_MESSAGE_BYTES, 1_048_400]))
        return raw + b" " * (pad - len(raw) + draw(st.integers(-2, 2)))
    if kind == "number":
        numbers = list(_NUMBER.finditer(raw))
        m = numbers[draw(st.integers(0, len(numbers) - 1))]
        return raw[: m.start()] + draw(st.sampled_from(_NUMBERS)) + raw[m.end() :]
    if kind == "string":
        strings = list(_STRING.finditer(raw))
        m = strings[draw(st.integers(0, len(strings) - 1))]
        new = draw(st.sampled_from(_STRINGS))
        where = draw(st.sampled_from(["end", "start", "replace"]))
        value = {"end": m[1] + new, "start": new + m[1], "replace": new}[where]
        return raw[: m.start(1)] + value + raw[m.end(1) :]
    # "append": a second message or stray bytes after a valid one.
    return raw + draw(st.sampled_from([b"\n", b"\n" + raw, b"}", b" ", b"\x00"]))


_FUZZ_ELEVATORS = itertools.count(1)


def _base_messages(elevator_number: int) -> list[bytes]:
    """A trip of a fresh elevator, its messages raising fault and event codes."""
    elevator = f"3207{elevator_number:016d}"
    messages = trip_messages(elevator, T0 + elevator_number * 60_000)
    out = []
    for i, m in enumerate(messages):
        t = m.samples.t_ms[0]
        if i % 2:
            m = msgspec.structs.replace(
                m, faults=[CodeEvent(t, "0" + str(i % 9 + 1))], events=[CodeEvent(t, "90")]
            )
        out.append(contract.encode(m))
    return out


@pytest.fixture
def fuzz_sink(scratch_db: str) -> Iterator[tuple[str, TimescaleSink]]:
    migrate(scratch_db)
    with TimescaleSink(_writer(scratch_db)) as sink:
        yield scratch_db, sink


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzz_no_message_escapes_and_every_valid_one_is_stored(
    fuzz_sink: tuple[str, TimescaleSink], data: st.DataObject
) -> None:
    url, sink = fuzz_sink
    base = _base_messages(next(_FUZZ_ELEVATORS))
    hostile = data.draw(st.lists(st.sampled_from(range(len(base))), min_size=1, max_size=4))
    raws = list(base)
    for i in hostile:
        raws.insert(i, data.draw(_mutation(base[i])))
    records = [RawRecord(b"k", r, 0, offset) for offset, r in enumerate(raws)]
    ingest = Ingest(5_000, limits_for=lambda _: ElevatorLimits.unknown())

    batch = ingest.process(records)  # nothing may escape, nor below
    admitted = list(batch.messages)
    result = sink.write_batch(
        batch.messages,
        batch.windows,
        batch.trips,
        batch.alerts,
        originals=[source.value for source in batch.sources],  # as the worker does
    )
    batch.quarantine_refused(result.refused)
    for record, reason in batch.quarantined:
        assert reason
        quarantine.quarantine_record(record, reason)

    # The oracle, computed apart: every message the contract accepts is admitted (but an
    # exact duplicate: same elevator and seq) ...
    accepted, invalid = [], 0
    for r in raws:
        try:
            accepted.append(contract.decode(r))
        except contract.InvalidMessage:
            invalid += 1
    assert {(m.elevator_id, m.seq) for m in accepted} == {(m.elevator_id, m.seq) for m in admitted}
    # ... and stored, but one holding a value a 32-bit column cannot (quarantined with the
    # database's reason); the quarantine holds exactly what was refused.
    unstorable = [i for i, m in enumerate(admitted) if _float32_cannot_hold(m)]
    assert [i for i, _ in result.refused] == unstorable
    stored = [m for i, m in enumerate(admitted) if i not in unstorable]
    assert _stored(url, stored) >= _samples(stored)
    assert len(batch.quarantined) == invalid + len(unstorable)


# -- the worker on the real Kafka: each poison message ------------------------------------------


def _health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


def _newline_id() -> bytes:
    m = trip_messages("32070000000000000099", T0)[0]
    # Valid but for the id's final newline, which the old pattern let through.
    return contract.encode(m).replace(b'"32070000000000000099"', b'"32070000000000000099\\n"')


def _padded(size: int) -> bytes:
    raw = contract.encode(trip_messages("32070000000000000098", T0)[0])
    return raw + b" " * (size - len(raw))


#: name → (raw value, what its reason names). The 1 MiB ones are as large as the producer
#: and the broker take with a 20-byte key: republished with a reason header, the first
#: exceeded the producer's limit (PublishError, the worker stopped on every restart), the
#: second the broker's (logged as quarantined, never stored on the topic).
POISON = {
    "invalid_utf8": (b'{"schema":"\xff"}', "not valid UTF-8"),
    "id_with_trailing_newline": (_newline_id(), "$.elevator_id"),
    "one_mebibyte": (_padded(1_048_480), "larger than the 65536 bytes allowed"),
    "just_under_the_broker_limit": (_padded(1_048_450), "larger than the 65536 bytes allowed"),
}


@pytest.mark.parametrize("poison", list(POISON))
@pytest.mark.slow
def test_worker_quarantines_a_poison_message_and_stores_the_rest(
    settings: Settings, tmp_path: Path, poison: str
) -> None:
    raw, names = POISON[poison]
    before = trip_messages("32070000000000000001", T0) + trip_messages("32070000000000000002", T0)
    after = trip_messages("32070000000000000003", T0)
    valid = before + after
    log = tmp_path / "worker.log"
    with _pipeline(settings, tmp_path) as run:
        port = run.start_worker()  # answering once it listens
        assert _health(port) == 200, log.read_text()[-3000:]
        with RawPublisher(settings.kafka_bootstrap, run.settings.raw_topic) as pub:
            for m in before:
                pub.publish(m.elevator_id.encode(), contract.encode(m))
            pub.publish(b"32070000000000000099", raw)
            for m in after:
                pub.publish(m.elevator_id.encode(), contract.encode(m))
        # Every valid sample stored, the health endpoint answering 200 all along.
        statuses = []

        def stored() -> int:
            statuses.append(_health(port))
            return len(_stored(run.admin_url, valid))

        run.wait(stored, lambda n: n >= len(_samples(valid)), "every valid sample stored")
        for _ in range(6):  # and still afterwards
            statuses.append(_health(port))
            time.sleep(0.5)
        alive = run.group.exited() is None
        got = _stored(run.admin_url, valid)
        quarantined = consume_all(
            settings.kafka_bootstrap, run.settings.quarantine_topic, 1, timeout_s=30
        )
    tail = log.read_text()[-3000:]
    assert alive, tail
    assert got == _samples(valid), tail
    assert set(statuses) == {200}, (statuses, tail)
    assert len(quarantined) == 1, tail
    record = quarantined[0]
    headers = {k: v.decode() for k, v in record.headers}
    assert names in headers["reason"]
    assert record.key == b"32070000000000000099"
    if len(raw) > quarantine.MAX_VALUE_BYTES:
        assert record.value == raw[: quarantine.MAX_VALUE_BYTES]
        assert headers["original-length"] == str(len(raw))
        assert headers["sha256"] == hashlib.sha256(raw).hexdigest()
    else:
        assert record.value == raw
