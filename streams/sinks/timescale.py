"""TimescaleDB sink for raw samples: COPY into a staging table, then insert what is new.

The insert is ``ON CONFLICT DO NOTHING`` on the natural key (elevator, sample time), so a
replay, a redelivery after a crash or a duplicated message never writes a row twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg

from tianyan.contract import COLUMNS, TelemetryMessage


class SinkError(RuntimeError):
    """Writing to TimescaleDB failed; the batch was rolled back and may be retried."""


_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS telemetry_sample_staging (
    elevator_id text, seq bigint, t_ms bigint, speed_mps real, accel_mps2 real,
    position_m real, floor smallint, direction smallint, load_kg real, door smallint,
    door_zone boolean, leveling_offset_mm real, passengers boolean, alarm boolean,
    service_mode smallint
) ON COMMIT DELETE ROWS
"""
_VALUE_COLUMNS = COLUMNS[1:]  # every sample column but t_ms
_COPY = (
    "COPY telemetry_sample_staging (elevator_id, seq, t_ms, "
    + ", ".join(_VALUE_COLUMNS)
    + ") FROM STDIN"
)
_INSERT = (
    "INSERT INTO tianyan.telemetry_sample (time, elevator_id, seq, "
    + ", ".join(_VALUE_COLUMNS)
    + ") SELECT timestamptz 'epoch' + t_ms * interval '1 millisecond', elevator_id, seq, "
    + ", ".join(_VALUE_COLUMNS)
    + " FROM telemetry_sample_staging ON CONFLICT DO NOTHING"
)


def sample_rows(messages: Iterable[TelemetryMessage]) -> Iterable[tuple[object, ...]]:
    """Flatten messages into staging rows: (elevator_id, seq, t_ms, *values)."""
    for m in messages:
        s = m.samples
        columns = [getattr(s, c) for c in COLUMNS]
        for values in zip(*columns, strict=True):
            yield (m.elevator_id, m.seq, *values)


class TimescaleSink:
    """Writes raw samples to ``tianyan.telemetry_sample`` in batches.

    Parameters
    ----------
    url
        libpq connection string of a role allowed to insert (``tianyan_writer``).

    The connection is opened on first use and reused; each :meth:`write_samples` call is
    one transaction, durable when it returns.
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
                raise SinkError(f"cannot connect to TimescaleDB: {e}") from e
        return self._conn

    def write_samples(self, messages: Sequence[TelemetryMessage]) -> int:
        """Store every sample of ``messages``; returns how many rows were new."""
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(_COPY) as copy:
                    for row in sample_rows(messages):
                        copy.write_row(row)
                cur.execute(_INSERT)
                return cur.rowcount
        except psycopg.Error as e:
            raise SinkError(f"writing {len(messages)} messages failed: {e}") from e

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> TimescaleSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
