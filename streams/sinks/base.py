"""What every TimescaleDB sink shares: its connection, its errors, one transaction per batch.

A sink stores one record type, in the manner of quix-streams' batching sinks: its
constructor checks its arguments, :meth:`Sink.setup` connects (and creates the sink's
staging table), and :meth:`Sink.write` stores a batch in one transaction, re-raising the
driver's errors as :class:`SinkError` (retry the batch) or :class:`Refused` (the rows
themselves are wrong: the same rows fail again). Every insert ignores rows already stored
(``ON CONFLICT DO NOTHING`` on the table's natural key), so a retried or replayed batch
writes nothing twice.

Sinks may share one :class:`Connection`: a write inside a transaction already open on it
(``TimescaleSink`` writes a worker's whole batch in one) becomes a savepoint of that
transaction.
"""

from __future__ import annotations

import abc
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import ClassVar, Generic, Self, TypeVar

import msgspec
import psycopg

log = logging.getLogger("tianyan.sink")

T = TypeVar("T")

#: Rows new in a write, by table.
Rows = Counter[str]

#: A sample time in Unix ms as a timestamptz, in SQL.
EPOCH_MS = "timestamptz 'epoch' + {} * interval '1 millisecond'"


class SinkError(RuntimeError):
    """Writing to TimescaleDB failed; the batch was rolled back and may be retried."""


class Refused(Exception):
    """The database refused these rows for what they contain: the same rows fail again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Errors that say the rows themselves are wrong: SQLSTATE class 22 (data exception: a value
#: out of range, invalid input syntax, a malformed COPY line) and 23 (integrity constraint
#: violation). Everything else — connection lost, disk full, privileges, serialization
#: failures — is the database's state, and the batch is retried as a whole.
_DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


class Connection:
    """One libpq connection, opened on first use, shared by the sinks that write through it.

    Every opening runs each sink's staging DDL: temporary tables last only as long as the
    session, so a reconnection creates them again.

    Parameters
    ----------
    url
        libpq connection string of a role allowed to insert (``tianyan_writer``).
    """

    def __init__(self, url: str) -> None:
        if not url:
            raise ValueError("url: a database URL is required")
        self.url = url
        self._staging: list[str] = []
        self._conn: psycopg.Connection | None = None

    def add_staging(self, ddl: str) -> None:
        """Run ``ddl`` (``CREATE TEMP TABLE IF NOT EXISTS …``) on every opening."""
        if ddl and ddl not in self._staging:
            self._staging.append(ddl)
            if self._conn is not None and not self._conn.closed:
                self._conn.execute(ddl)

    def get(self) -> psycopg.Connection:
        """The open connection (autocommit: every write is an explicit transaction block)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                conn = psycopg.connect(self.url, autocommit=True)
                for ddl in self._staging:
                    conn.execute(ddl)
            except psycopg.Error as e:
                raise SinkError(f"cannot connect to TimescaleDB: {e}") from e
            self._conn = conn
        return self._conn

    def failed(self, e: psycopg.Error, what: str) -> Exception:
        """The error to raise for ``e``: :class:`Refused` for the data, else :class:`SinkError`."""
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken):
            self._conn = None
        elif isinstance(e, _DATA_ERRORS):
            return Refused(str(e).strip())
        return SinkError(f"{what} failed: {e}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Connected:
    """What writes through a :class:`Connection`: connect up front, close, use as a
    context manager."""

    connection: Connection

    def setup(self) -> None:
        """Connect (and create the staging tables); the first write does it otherwise.

        Raises
        ------
        SinkError
            The database cannot be reached.
        """
        self.connection.get()

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Sink(Connected, abc.ABC, Generic[T]):
    """Stores batches of one record type in TimescaleDB.

    Parameters
    ----------
    url
        libpq connection string of a role allowed to insert (``tianyan_writer``); or
    connection
        a :class:`Connection` shared with other sinks.
    """

    #: The table it stores (for logs and counts).
    table: ClassVar[str]
    #: Its staging table, created on every connection; empty if it needs none.
    staging_ddl: ClassVar[str] = ""

    def __init__(self, url: str = "", *, connection: Connection | None = None) -> None:
        if connection is None:
            connection = Connection(url)
        elif url:
            raise ValueError("url: give a URL or a shared connection, not both")
        self.connection = connection
        connection.add_staging(self.staging_ddl)

    def write(self, batch: Sequence[T]) -> Rows:
        """Store ``batch`` in one transaction (a savepoint inside one already open); returns
        the rows new in each table, the rest being stored already.

        Raises
        ------
        Refused
            The database refused the rows for their data (nothing of the batch is stored).
        SinkError
            Any other failure: the batch may be retried.
        """
        if not batch:
            return Rows()
        conn = self.connection.get()
        try:
            with conn.transaction(), conn.cursor() as cur:
                return self.insert(cur, batch)
        except psycopg.Error as e:
            raise self.connection.failed(e, f"writing {len(batch)} {self.table} rows") from e

    @abc.abstractmethod
    def insert(self, cur: psycopg.Cursor, batch: Sequence[T]) -> Rows:
        """Insert ``batch`` with ``cur``, inside the transaction :meth:`write` opened."""


S = TypeVar("S", bound=msgspec.Struct)


class StructSink(Sink[S]):
    """A sink of one msgspec record type, declared by its table and time columns: the
    records are COPYed into a staging table shaped like the table (plus their Unix-ms
    fields), then inserted with those fields as ``timestamptz``, ignoring rows already
    stored.

    Subclasses set :attr:`record`, :attr:`table` and :attr:`times` (pairs of a table column
    and the record's Unix-ms field holding it); the rest of the record's fields are the
    table's own columns.
    """

    record: ClassVar[type[msgspec.Struct]]
    #: (table column, the record's field holding it in Unix ms) pairs.
    times: ClassVar[tuple[tuple[str, str], ...]]
    #: What a row already stored makes of the insert: nothing, unless a sink says otherwise.
    on_conflict: ClassVar[str] = "ON CONFLICT DO NOTHING"
    _copy: ClassVar[str]
    _insert: ClassVar[str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        fields = cls.record.__struct_fields__
        times = dict(cls.times)
        same = [f for f in fields if f not in times.values()]
        staging = f"{cls.table}_staging"
        ms = ", ".join(f"0::bigint AS {f}" for f in times.values())
        cls.staging_ddl = (
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS"
            f" SELECT *, {ms} FROM tianyan.{cls.table} WITH NO DATA"
        )
        cls._copy = f"COPY {staging} ({', '.join(fields)}) FROM STDIN"
        cls._insert = (
            f"INSERT INTO tianyan.{cls.table} ({', '.join([*times, *same])}) SELECT "
            + ", ".join([*(EPOCH_MS.format(f) for f in times.values()), *same])
            + f" FROM {staging} {cls.on_conflict}"
        )

    def insert(self, cur: psycopg.Cursor, batch: Sequence[S]) -> Rows:
        with cur.copy(self._copy) as copy:
            for record in batch:
                copy.write_row(msgspec.structs.astuple(record))
        cur.execute(self._insert)
        return Rows({self.table: cur.rowcount})


def bisect(
    items: Sequence[T], write: Callable[[Sequence[T]], Rows]
) -> tuple[Rows, list[tuple[int, str]]]:
    """Write ``items`` in parts: a part refused for its data is halved, and halved again,
    until a refused item stands alone; it is left out, with the reason.

    Returns the rows written and the refused items as (index in ``items``, reason).
    ``k`` bad items among ``n`` cost about ``2 k log2(n)`` transactions.
    """
    total = Rows()
    refused: list[tuple[int, str]] = []
    parts = [(0, len(items))] if items else []
    while parts:
        lo, hi = parts.pop()
        try:
            total += write(items[lo:hi])
        except Refused as e:
            if hi - lo == 1:
                refused.append((lo, e.reason))
            else:
                mid = (lo + hi) // 2
                parts += [(mid, hi), (lo, mid)]  # the first half next: batch order kept
    return total, refused
