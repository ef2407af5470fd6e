"""Trips: finished trips in, ``ON CONFLICT DO NOTHING`` on (elevator, start time), so a trip
segmented again after a restart or a replay is skipped."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import psycopg

from foundation.records import Trip

from .base import EPOCH_MS, Rows, Sink

_TRIP_COLUMNS = tuple(Trip.__struct_fields__)
_TRIP_TARGET = [c for c in _TRIP_COLUMNS if c not in ("start_ms", "end_ms")]
_INSERT_TRIPS = (
    f"INSERT INTO tianyan.trip (start_time, end_time, {', '.join(_TRIP_TARGET)}) "
    f"SELECT {EPOCH_MS.format('start_ms')}, {EPOCH_MS.format('end_ms')}, "
    f"{', '.join(_TRIP_TARGET)} FROM trip_staging ON CONFLICT DO NOTHING"
)


class TripSink(Sink[Trip]):
    """Stores finished trips (``trip``)."""

    table = "trip"
    staging_ddl = (
        "CREATE TEMP TABLE IF NOT EXISTS trip_staging ON COMMIT DELETE ROWS AS"
        " SELECT *, 0::bigint AS start_ms, 0::bigint AS end_ms FROM tianyan.trip WITH NO DATA"
    )

    def insert(self, cur: psycopg.Cursor, batch: Sequence[Trip]) -> Rows:
        with cur.copy(f"COPY trip_staging ({', '.join(_TRIP_COLUMNS)}) FROM STDIN") as copy:
            for t in batch:
                copy.write_row(msgspec.structs.astuple(t))
        cur.execute(_INSERT_TRIPS)
        return Rows(trip=cur.rowcount)
