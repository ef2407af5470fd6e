"""Window features: closed windows in, ``ON CONFLICT DO NOTHING`` on (elevator, width,
bucket start), so a window folded again after a restart or a replay is skipped."""

from __future__ import annotations

from foundation.records import WindowFeature

from .base import StructSink


class WindowSink(StructSink[WindowFeature]):
    """Stores closed 1-s and 1-min windows (``window_feature``)."""

    record = WindowFeature
    table = "window_feature"
    times = (("bucket_start", "bucket_start_ms"),)
