"""What re-feeds history: stored telemetry or the simulator's files, published back to Kafka
with per-elevator order and original event times preserved; replay runs (:mod:`.runs`), the
replay worker (:mod:`.worker`) and the run's report against the live alerts
(:mod:`.report`)."""

from .run import ReplaySummary, replay
from .runs import (
    ReplayRun,
    ReplayRunError,
    check_run_id,
    load_run,
    mark_published,
    new_run_id,
    register_run,
    run_topic,
)
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
    "ReplayRun",
    "ReplayRunError",
    "ReplaySourceError",
    "ReplaySummary",
    "check_run_id",
    "count_database",
    "count_jsonl",
    "count_parquet",
    "from_database",
    "from_jsonl",
    "from_parquet",
    "inspect_jsonl",
    "load_run",
    "mark_published",
    "new_run_id",
    "register_run",
    "replay",
    "run_topic",
]
