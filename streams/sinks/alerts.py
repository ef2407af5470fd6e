"""Alerts: one row per alert in ``tianyan.alert``, under the alert's one id.

The id is :attr:`detectors.alerts.Alert.alert_id` (uuid5 of key and state), so the worker
that raised an alert and the dispatcher that applied it store the same row: whichever
comes first inserts it, the other's insert is skipped (``ON CONFLICT DO NOTHING``), and the
dispatcher's ``incident_alert`` record references it by that id. Both write through
:func:`insert_alerts`, in order of id, so two transactions inserting the same alerts take
their locks in the same order and never deadlock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from detectors.alerts import Alert

from .base import Rows, Sink

ALERT_COLUMNS = (
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
_INSERT_ALERT = (
    f"INSERT INTO tianyan.alert ({', '.join(ALERT_COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(ALERT_COLUMNS))}) ON CONFLICT DO NOTHING"
)


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def alert_row(a: Alert) -> tuple[object, ...]:
    """The ``tianyan.alert`` row of ``a``, in :data:`ALERT_COLUMNS` order."""
    return (
        a.alert_id,
        a.alert_key,
        a.state,
        _utc(a.raised_at_ms),
        _utc(a.condition_since_ms),
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


def insert_alerts(cur: psycopg.Cursor[Any], alerts: Sequence[Alert]) -> int:
    """Insert the alerts not stored yet, in the caller's transaction; returns how many.

    In order of id (see the module docstring); a repeated alert is inserted once.
    """
    rows = sorted({a.alert_id: alert_row(a) for a in alerts}.items())
    if not rows:
        return 0
    cur.executemany(_INSERT_ALERT, [row for _, row in rows])
    return max(cur.rowcount, 0)


class AlertSink(Sink[Alert]):
    """Stores the alerts the worker's detectors raised (``alert``)."""

    table = "alert"

    def insert(self, cur: psycopg.Cursor, batch: Sequence[Alert]) -> Rows:
        inserted = insert_alerts(cur, batch)
        if not batch:
            return Rows(alert=0)
        # each stored alert is a fact the audit ledger vouches for (README § The
        # tamper-evident record); one already ledgered is skipped
        cur.execute(
            "SELECT tianyan.ledger_facts('alert', %s)",
            (sorted({str(a.alert_id) for a in batch}),),
        )
        return Rows(alert=inserted)
