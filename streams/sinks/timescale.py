"""The worker's batch to TimescaleDB: the four sinks of its record types in one transaction.

A worker's batch holds messages (their samples and codes), closed windows, finished trips
and alerts, each stored by its own sink (``samples``, ``windows``, ``trips``, ``alerts``).
:class:`TimescaleSink` writes them through one connection in one transaction, each sink's
write a savepoint of it; when :meth:`TimescaleSink.write_batch` returns, the batch is
durable.

A batch the database refuses for its data (SQLSTATE class 22 or 23: a value out of range, a
malformed COPY line, a violated constraint) is written again part by part: the messages in
halves, and halves of halves, each its own transaction, until each refused message stands
alone; that message is returned as refused, with the database's error (unless, encoded
from its validated fields, it is stored after all: PostgreSQL and msgspec may read a number
of its original bytes differently), and the rest is stored; then the windows, trips and
alerts, a row of them the database refuses left out and logged. Retrying such a batch would
fail for ever; any other failure (the database down, restarting, out of space) is raised as
:class:`SinkError` and the whole batch is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from detectors.alerts import Alert
from foundation.contract import TelemetryMessage
from foundation.records import MaintenanceSession, Trip, WindowFeature

from .alerts import AlertSink
from .base import Connected, Connection, Refused, Rows, Sink, bisect
from .maintenance import MaintenanceSessionSink
from .samples import RawMessage, SampleSink
from .trips import TripSink
from .windows import WindowSink

log = logging.getLogger("tianyan.sink")


@dataclass(frozen=True)
class WriteResult:
    """Rows new in this batch (the rest were already stored)."""

    samples: int
    codes: int
    windows: int
    trips: int
    alerts: int = 0
    #: Maintenance sessions stored or completed.
    maintenance_sessions: int = 0
    #: Messages the database refused for their data: (index in the batch's ``messages``,
    #: the database's error). Everything else in the batch is stored.
    refused: tuple[tuple[int, str], ...] = ()
    #: Window, trip and alert rows the database refused for their data (left out, logged).
    dropped_rows: int = 0


class TimescaleSink(Connected):
    """Writes a worker's batch — samples, codes, windows, trips, alerts — to TimescaleDB.

    Parameters
    ----------
    url
        libpq connection string of a role allowed to insert (``tianyan_writer``).

    The connection opens on first use and is reused; every batch is one transaction.
    """

    def __init__(self, url: str) -> None:
        self.connection = Connection(url)
        self.samples = SampleSink(connection=self.connection)
        self.windows = WindowSink(connection=self.connection)
        self.trips = TripSink(connection=self.connection)
        self.maintenance = MaintenanceSessionSink(connection=self.connection)
        self.alerts = AlertSink(connection=self.connection)

    def write_batch(
        self,
        messages: Sequence[TelemetryMessage],
        windows: Sequence[WindowFeature] = (),
        trips: Sequence[Trip] = (),
        alerts: Sequence[Alert] = (),
        *,
        originals: Sequence[bytes | None] | None = None,
        maintenance_sessions: Sequence[MaintenanceSession] = (),
    ) -> WriteResult:
        """Store a batch; durable when this returns.

        ``originals`` are the bytes each of ``messages`` was decoded from (same index): they
        are what COPY sends. Without them (messages built in code), and where one is None (a
        message rewritten since: its clock corrected), the message is encoded.

        The batch is one transaction. If the database refuses it for its data, it is written
        again part by part (see the module docstring): refused messages are left out and
        listed in :attr:`WriteResult.refused` with the database's error; refused window,
        trip and alert rows are left out and logged. Every insert ignores rows already
        stored, so a crash between the parts loses nothing on retry and duplicates nothing.

        Raises
        ------
        SinkError
            The database cannot be reached or failed for a reason other than the data: the
            whole batch should be retried (some of its parts may already be stored).
        """
        if originals is not None and len(originals) != len(messages):
            raise ValueError(
                f"originals: {len(originals)} for {len(messages)} messages; one for each"
            )
        received = [
            RawMessage(m, None if originals is None else originals[i])
            for i, m in enumerate(messages)
        ]
        parts: list[tuple[Sink[Any], Sequence[Any]]] = [
            (self.windows, windows),
            (self.trips, trips),
            (self.maintenance, maintenance_sessions),
            (self.alerts, alerts),
        ]
        try:
            rows = self._in_one_transaction([(self.samples, received), *parts])
            return _result(rows)
        except Refused as e:
            log.warning(
                "batch refused for its data; splitting it",
                extra={"messages": len(messages), "error": e.reason},
            )
        rows, refused = bisect(received, self.samples.write)
        rows += self._encoded_again(received, refused)
        dropped = 0
        for sink, batch in parts:
            written, left_out = bisect(batch, sink.write)
            rows += written
            dropped += len(left_out)
            for i, reason in left_out:
                log.error(
                    "row refused by the database; left out",
                    extra={"table": sink.table, "row": repr(batch[i])[:1000], "error": reason},
                )
        return _result(rows, tuple(refused), dropped)

    def _encoded_again(self, received: list[RawMessage], refused: list[tuple[int, str]]) -> Rows:
        """Store the refused messages that were sent as their original bytes once more, as the
        message was validated (encoded by msgspec); those stored are taken off ``refused``.

        PostgreSQL may read a number differently from msgspec: a decimal below float64's
        range, which msgspec reads as 0, is out of range for PostgreSQL. Such a message is
        valid, and its validated values are what is stored.
        """
        rows = Rows()
        for i, reason in list(refused):
            message, raw = received[i]
            if raw is None:
                continue
            try:
                rows += self.samples.write([RawMessage(message)])
            except Refused:
                continue
            refused.remove((i, reason))
        return rows

    def _in_one_transaction(self, parts: Sequence[tuple[Sink[Any], Sequence[Any]]]) -> Rows:
        conn = self.connection.get()
        rows = Rows()
        try:
            with conn.transaction():
                for sink, batch in parts:
                    rows += sink.write(batch)
        except psycopg.Error as e:  # the commit itself failed
            raise self.connection.failed(e, "committing a batch") from e
        return rows

    def write_samples(self, messages: Sequence[TelemetryMessage]) -> int:
        """Store the messages' samples (and codes); returns how many sample rows were new."""
        return self.write_batch(messages).samples


def _result(rows: Rows, refused: tuple[tuple[int, str], ...] = (), dropped: int = 0) -> WriteResult:
    return WriteResult(
        samples=rows["telemetry_sample"],
        codes=rows["telemetry_code"],
        windows=rows["window_feature"],
        trips=rows["trip"],
        alerts=rows["alert"],
        maintenance_sessions=rows["maintenance_session"],
        refused=refused,
        dropped_rows=dropped,
    )
