"""Sinks: where stream records come to rest."""

from .timescale import SinkError, TimescaleSink

__all__ = ["SinkError", "TimescaleSink"]
