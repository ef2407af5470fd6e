"""TimescaleDB sink: one transaction per batch, COPY in, insert what is new.

Raw samples travel as one staging row per message, its JSON as jsonb (PostgreSQL unnests
the sample columns), so Python does one line of COPY text per message, not ten rows. Every insert is
``ON CONFLICT DO NOTHING`` on the table's natural key — (elevator, sample time) for samples,
(elevator, width, bucket start) for windows, (elevator, start time) for trips — so a replay,
a redelivery after a crash or a duplicated message never writes a row twice. When
:meth:`TimescaleSink.write_batch` returns, the batch is durable.

A batch the database refuses for its data (SQLSTATE class 22 or 23: a value out of range, a
malformed COPY line, a violated constraint) is split until each refused message stands
alone: that message is returned as refused, with the database's error, and the rest is
stored. Retrying such a batch would fail for ever; any other failure (the database down,
restarting, out of space) is raised as :class:`SinkError` and the whole batch is retried.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from detectors.alerts import Alert
from foundation import contract
from foundation.contract import COLUMNS, TelemetryMessage
from foundation.records import Trip, WindowFeature

log = logging.getLogger("tianyan.sink")


class SinkError(RuntimeError):
    """Writing to TimescaleDB failed; the batch was rolled back and may be retried."""


class _Refused(Exception):
    """The database refused these rows for what they contain: the same rows fail again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Errors that say the rows themselves are wrong: SQLSTATE class 22 (data exception: a value
#: out of range, invalid input syntax, a malformed COPY line) and 23 (integrity constraint
#: violation). Everything else — connection lost, disk full, privileges, serialization
#: failures — is the database's state, and the batch is retried as a whole.
_DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


_VALUES = COLUMNS[1:]  # every sample column but t_ms
_WINDOW_COLUMNS = tuple(WindowFeature.__struct_fields__)
_TRIP_COLUMNS = tuple(Trip.__struct_fields__)

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS message_staging (
    elevator_id text, seq bigint, body jsonb
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS window_staging ON COMMIT DELETE ROWS AS
    SELECT *, 0::bigint AS bucket_start_ms FROM tianyan.window_feature WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS alert_staging ON COMMIT DELETE ROWS AS
    SELECT * FROM tianyan.alert WITH NO DATA;
CREATE TEMP TABLE IF NOT EXISTS trip_staging ON COMMIT DELETE ROWS AS
    SELECT *, 0::bigint AS start_ms, 0::bigint AS end_ms FROM tianyan.trip WITH NO DATA;
"""
_EPOCH = "timestamptz 'epoch' + {} * interval '1 millisecond'"


# The message's JSON goes to PostgreSQL as it is (COPY of one jsonb per message) and is
# unnested there, through the composite type tianyan.sample_columns: Python's cost per
# message is one line of COPY text, not ten rows.
_INSERT_SAMPLES = (
    f"INSERT INTO tianyan.telemetry_sample (time, elevator_id, seq, {', '.join(_VALUES)}) "
    f"SELECT {_EPOCH.format('u.t_ms')}, m.elevator_id, m.seq, "
    + ", ".join(f"u.{c}" for c in _VALUES)
    + " FROM message_staging m,"
    " LATERAL jsonb_populate_record(NULL::tianyan.sample_columns, m.body->'samples') s,"
    " unnest("
    + ", ".join(f"s.{c}" for c in COLUMNS)
    + f") AS u(t_ms, {', '.join(_VALUES)}) ON CONFLICT DO NOTHING"
)
_INSERT_CODES = (
    "INSERT INTO tianyan.telemetry_code (time, elevator_id, code, kind, seq) "
    f"SELECT {_EPOCH.format('c.t_ms')}, m.elevator_id, c.code, k.kind, m.seq "
    "FROM message_staging m, (VALUES ('fault'), ('event')) AS k(kind), "
    "jsonb_to_recordset(m.body->(k.kind || 's')) AS c(t_ms bigint, code text) "
    "WHERE m.body->'faults' <> '[]' OR m.body->'events' <> '[]' "
    "ON CONFLICT DO NOTHING"
)
_WINDOW_TARGET = [c for c in _WINDOW_COLUMNS if c != "bucket_start_ms"]
_INSERT_WINDOWS = (
    f"INSERT INTO tianyan.window_feature (bucket_start, {', '.join(_WINDOW_TARGET)}) "
    f"SELECT {_EPOCH.format('bucket_start_ms')}, {', '.join(_WINDOW_TARGET)} "
    "FROM window_staging ON CONFLICT DO NOTHING"
)
_TRIP_TARGET = [c for c in _TRIP_COLUMNS if c not in ("start_ms", "end_ms")]
_INSERT_TRIPS = (
    f"INSERT INTO tianyan.trip (start_time, end_time, {', '.join(_TRIP_TARGET)}) "
    f"SELECT {_EPOCH.format('start_ms')}, {_EPOCH.format('end_ms')}, {', '.join(_TRIP_TARGET)} "
    "FROM trip_staging ON CONFLICT DO NOTHING"
)


def _copy_text(messages: Sequence[TelemetryMessage]) -> bytes:
    """One line of COPY text per message: elevator id, seq, the message's JSON.

    Raises
    ------
    _Refused
        If a message cannot be encoded (only a message built in code can fail here).
    """
    encode = contract.encode
    try:
        # COPY's text format reads backslashes as escapes: double them (JSON may contain
        # some; msgspec escapes every control character, so the JSON has no tab or newline).
        # A decoded id is 20 ASCII digits; one built in code is escaped like any field.
        return b"".join(
            b"%s\t%d\t%s\n"
            % (
                _copy_field(m.elevator_id.encode()),
                m.seq,
                encode(m).replace(b"\\", b"\\\\"),
            )
            for m in messages
        )
    except (msgspec.EncodeError, UnicodeEncodeError) as e:
        raise _Refused(f"the message cannot be encoded for COPY: {e}") from e


def _copy_field(value: bytes) -> bytes:
    if value.isdigit():
        return value
    return (
        value.replace(b"\\", b"\\\\")
        .replace(b"\t", b"\\t")
        .replace(b"\n", b"\\n")
        .replace(b"\r", b"\\r")
    )


_ALERT_COLUMNS = (
    "alert_id",
    "alert_key",
    "state",
    "raised_at",
    "condition_since",
    "elevator_id",
    "alert_type",
    "gb_code",
    "severity",
    "detector",
    "estimated_trapped",
    "evidence",
    "probable_cause",
    "suggested_handling",
)
_INSERT_ALERTS = (
    f"INSERT INTO tianyan.alert ({', '.join(_ALERT_COLUMNS)}) "
    f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alert_staging ON CONFLICT DO NOTHING"
)
#: alert_id is derived from the natural key, so a replayed alert gets the same id.
_ALERT_NAMESPACE = uuid.UUID("5d1c8f7e-8a8e-4c55-9a49-7d3f3e0c2a11")


def _alert_row(a: Alert) -> tuple[object, ...]:
    def ts(ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)

    return (
        uuid.uuid5(_ALERT_NAMESPACE, f"{a.alert_key}|{a.state}"),
        a.alert_key,
        a.state,
        ts(a.raised_at_ms),
        ts(a.condition_since_ms),
        a.elevator_id,
        a.alert_type,
        a.gb_code,
        a.severity,
        str(a.evidence.get("detector", "rules")),
        a.estimated_trapped,
        Jsonb(a.evidence),
        a.probable_cause,
        a.suggested_handling,
    )


@dataclass(frozen=True)
class WriteResult:
    """Rows new in this batch (the rest were already stored)."""

    samples: int
    codes: int
    windows: int
    trips: int
    alerts: int = 0
    #: Messages the database refused for their data: (index in the batch's ``messages``,
    #: the database's error). Everything else in the batch is stored.
    refused: tuple[tuple[int, str], ...] = ()
    #: Window, trip and alert rows the database refused for their data (left out, logged).
    dropped_rows: int = 0

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(
            self.samples + other.samples,
            self.codes + other.codes,
            self.windows + other.windows,
            self.trips + other.trips,
            self.alerts + other.alerts,
            self.refused + other.refused,
            self.dropped_rows + other.dropped_rows,
        )


_NOTHING = WriteResult(0, 0, 0, 0)
_T = TypeVar("_T")


def _bisect(
    items: Sequence[_T], write: Callable[[Sequence[_T]], WriteResult]
) -> tuple[WriteResult, list[tuple[int, str]]]:
    """Write ``items`` in parts: a part refused for its data is halved, and halved again,
    until a refused item stands alone; it is left out, with the reason.

    ``k`` bad items among ``n`` cost about ``2 k log2(n)`` transactions.
    """
    total = _NOTHING
    refused: list[tuple[int, str]] = []
    parts = [(0, len(items))] if items else []
    while parts:
        lo, hi = parts.pop()
        try:
            total += write(items[lo:hi])
        except _Refused as e:
            if hi - lo == 1:
                refused.append((lo, e.reason))
            else:
                mid = (lo + hi) // 2
                parts += [(mid, hi), (lo, mid)]  # the first half next: batch order kept
    return total, refused


class TimescaleSink:
    """Writes raw samples, codes, window features and trips to TimescaleDB.

    Parameters
    ----------
    url
        libpq connection string of a role allowed to insert (``tianyan_writer``).

    The connection opens on first use and is reused; every write is one transaction.
    """

    def __init__(self, url: str) -> None:
        if not url:
            raise ValueError("url: a database URL is required")
        self.url = url
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.url)
                self._conn.execute(_STAGING_DDL)
                self._conn.commit()
            except psycopg.Error as e:
                self._conn = None
                raise SinkError(f"cannot connect to TimescaleDB: {e}") from e
        return self._conn

    def write_batch(
        self,
        messages: Sequence[TelemetryMessage],
        windows: Sequence[WindowFeature] = (),
        trips: Sequence[Trip] = (),
        alerts: Sequence[Alert] = (),
    ) -> WriteResult:
        """Store a batch; durable when this returns.

        The batch is one transaction. If the database refuses it for its data, the messages
        are written in halves, and halves of halves, each its own transaction, until every
        refused message stands alone: it is left out and listed in
        :attr:`WriteResult.refused` with the database's error; then the windows, trips and
        alerts are written, any row of them the database refuses left out and logged. Every
        insert ignores rows already stored, so a crash between the parts loses nothing on
        retry and duplicates nothing.

        Raises
        ------
        SinkError
            The database cannot be reached or failed for a reason other than the data: the
            whole batch should be retried (some of its parts may already be stored).
        """
        try:
            return self._write(messages, windows, trips, alerts)
        except _Refused as e:
            log.warning(
                "batch refused for its data; splitting it",
                extra={"messages": len(messages), "error": e.reason},
            )
        stored, refused = _bisect(messages, self._write)
        try:
            derived = self._write((), windows, trips, alerts)
        except _Refused:
            derived = _NOTHING
            for table, rows, write in (
                ("window_feature", windows, lambda part: self._write((), part)),
                ("trip", trips, lambda part: self._write((), (), part)),
                ("alert", alerts, lambda part: self._write((), (), (), part)),
            ):
                written, dropped = _bisect(rows, write)
                derived += written
                for i, reason in dropped:
                    log.error(
                        "row refused by the database; left out",
                        extra={"table": table, "row": repr(rows[i])[:1000], "error": reason},
                    )
                derived += WriteResult(0, 0, 0, 0, dropped_rows=len(dropped))
        return dataclasses.replace(stored + derived, refused=tuple(refused))

    def _write(
        self,
        messages: Sequence[TelemetryMessage],
        windows: Sequence[WindowFeature] = (),
        trips: Sequence[Trip] = (),
        alerts: Sequence[Alert] = (),
    ) -> WriteResult:
        """One transaction; :class:`_Refused` if the database refuses the data."""
        text = _copy_text(messages) if messages else b""
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                samples = codes = n_windows = n_trips = 0
                if messages:
                    with cur.copy("COPY message_staging FROM STDIN") as copy:
                        copy.write(text)
                    cur.execute(_INSERT_SAMPLES)
                    samples = cur.rowcount
                    if any(m.faults or m.events for m in messages):
                        cur.execute(_INSERT_CODES)
                        codes = cur.rowcount
                if windows:
                    with cur.copy(
                        f"COPY window_staging ({', '.join(_WINDOW_COLUMNS)}) FROM STDIN"
                    ) as copy:
                        for w in windows:
                            copy.write_row(msgspec.structs.astuple(w))
                    cur.execute(_INSERT_WINDOWS)
                    n_windows = cur.rowcount
                if trips:
                    with cur.copy(
                        f"COPY trip_staging ({', '.join(_TRIP_COLUMNS)}) FROM STDIN"
                    ) as copy:
                        for t in trips:
                            copy.write_row(msgspec.structs.astuple(t))
                    cur.execute(_INSERT_TRIPS)
                    n_trips = cur.rowcount
                n_alerts = 0
                if alerts:
                    with cur.copy(
                        f"COPY alert_staging ({', '.join(_ALERT_COLUMNS)}) FROM STDIN"
                    ) as copy:
                        for a in alerts:
                            copy.write_row(_alert_row(a))
                    cur.execute(_INSERT_ALERTS)
                    n_alerts = cur.rowcount
            return WriteResult(samples, codes, n_windows, n_trips, n_alerts)
        except psycopg.Error as e:
            if conn.closed or conn.broken:
                self._conn = None
            elif isinstance(e, _DATA_ERRORS):
                raise _Refused(str(e).strip()) from e
            raise SinkError(f"writing a batch of {len(messages)} messages failed: {e}") from e

    def write_samples(self, messages: Sequence[TelemetryMessage]) -> int:
        """Store the messages' samples (and codes); returns how many sample rows were new."""
        return self.write_batch(messages).samples

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> TimescaleSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
