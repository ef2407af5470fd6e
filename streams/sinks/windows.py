"""Window features: closed windows in, ``ON CONFLICT DO NOTHING`` on (elevator, width,
bucket start), so a window folded again after a restart or a replay is skipped."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import psycopg

from foundation.records import WindowFeature

from .base import EPOCH_MS, Rows, Sink

_WINDOW_COLUMNS = tuple(WindowFeature.__struct_fields__)
_WINDOW_TARGET = [c for c in _WINDOW_COLUMNS if c != "bucket_start_ms"]
_INSERT_WINDOWS = (
    f"INSERT INTO tianyan.window_feature (bucket_start, {', '.join(_WINDOW_TARGET)}) "
    f"SELECT {EPOCH_MS.format('bucket_start_ms')}, {', '.join(_WINDOW_TARGET)} "
    "FROM window_staging ON CONFLICT DO NOTHING"
)


class WindowSink(Sink[WindowFeature]):
    """Stores closed 1-s and 1-min windows (``window_feature``)."""

    table = "window_feature"
    staging_ddl = (
        "CREATE TEMP TABLE IF NOT EXISTS window_staging ON COMMIT DELETE ROWS AS"
        " SELECT *, 0::bigint AS bucket_start_ms FROM tianyan.window_feature WITH NO DATA"
    )

    def insert(self, cur: psycopg.Cursor, batch: Sequence[WindowFeature]) -> Rows:
        with cur.copy(f"COPY window_staging ({', '.join(_WINDOW_COLUMNS)}) FROM STDIN") as copy:
            for w in batch:
                copy.write_row(msgspec.structs.astuple(w))
        cur.execute(_INSERT_WINDOWS)
        return Rows(window_feature=cur.rowcount)
