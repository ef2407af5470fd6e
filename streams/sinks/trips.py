"""Trips: finished trips in, ``ON CONFLICT DO NOTHING`` on (elevator, start time), so a trip
segmented again after a restart or a replay is skipped."""

from __future__ import annotations

from foundation.records import Trip

from .base import StructSink


class TripSink(StructSink[Trip]):
    """Stores finished trips (``trip``)."""

    record = Trip
    table = "trip"
    times = (("start_time", "start_ms"), ("end_time", "end_ms"))
