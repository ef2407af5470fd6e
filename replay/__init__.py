"""What re-feeds history: stored telemetry or the simulator's files, published back to Kafka
with per-elevator order and original event times preserved."""

from .run import ReplaySummary, replay
from .sources import (
    JsonlContents,
    ReplayItem,
    ReplaySourceError,
    count_database,
    count_jsonl,
    count_parquet,
    from_database,
    from_jsonl,
    from_parquet,
    inspect_jsonl,
)

__all__ = [
    "JsonlContents",
    "ReplayItem",
    "ReplaySourceError",
    "ReplaySummary",
    "count_database",
    "count_jsonl",
    "count_parquet",
    "from_database",
    "from_jsonl",
    "from_parquet",
    "inspect_jsonl",
    "replay",
]
