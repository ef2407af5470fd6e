"""Sinks: where stream records come to rest, one sink per record type.

``SampleSink`` (samples and codes, from each message's own bytes), ``WindowSink``,
``TripSink``, ``MaintenanceSessionSink`` and ``AlertSink`` each connect in ``setup()`` and
store a batch in one transaction with ``write(batch)``; ``TimescaleSink`` writes a worker's
whole batch through all of them in one transaction.
"""

from .alerts import AlertSink, insert_alerts
from .base import Connection, Refused, Sink, SinkError
from .maintenance import MaintenanceSessionSink
from .samples import RawMessage, SampleSink
from .timescale import TimescaleSink, WriteResult
from .trips import TripSink
from .windows import WindowSink

__all__ = [
    "AlertSink",
    "Connection",
    "MaintenanceSessionSink",
    "RawMessage",
    "Refused",
    "SampleSink",
    "Sink",
    "SinkError",
    "TimescaleSink",
    "TripSink",
    "WindowSink",
    "WriteResult",
    "insert_alerts",
]
