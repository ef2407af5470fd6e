"""Maintenance sessions: a visit is stored when it opens (``end_time`` NULL) and completed
when it ends; on (elevator, start time), so a session segmented again after a restart or a
replay changes nothing, and an open one never overwrites its end."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from foundation.records import MaintenanceSession

from .base import Rows, StructSink


class MaintenanceSessionSink(StructSink[MaintenanceSession]):
    """Stores maintenance sessions (``maintenance_session``)."""

    record = MaintenanceSession
    table = "maintenance_session"
    times = (("start_time", "start_ms"), ("end_time", "end_ms"))
    on_conflict = (
        "ON CONFLICT (elevator_id, start_time) DO UPDATE SET"
        " end_time = EXCLUDED.end_time, duration_s = EXCLUDED.duration_s,"
        " inspection_runs = EXCLUDED.inspection_runs, event_43 = EXCLUDED.event_43"
        " WHERE maintenance_session.end_time IS NULL AND EXCLUDED.end_time IS NOT NULL"
    )

    def insert(self, cur: psycopg.Cursor, batch: Sequence[MaintenanceSession]) -> Rows:
        # A batch may hold a session's opening and its end: one row per session, the end
        # (one statement may not update a row twice).
        latest: dict[tuple[str, int], MaintenanceSession] = {}
        for s in batch:
            key = (s.elevator_id, s.start_ms)
            if key not in latest or s.end_ms is not None:
                latest[key] = s
        return super().insert(cur, list(latest.values()))
