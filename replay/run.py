"""Publishing history back to Kafka (or through the terminals' MQTT broker), as fast as
possible or at N× real time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Protocol

from tqdm import tqdm

from foundation.contract import REPLAY_RUN_HEADER
from streams.producer import Headers

from .sources import ReplayItem


class Publisher(Protocol):
    """Where :func:`replay` sends: Kafka (:class:`streams.producer.RawPublisher`), or the
    terminals themselves over MQTT (:class:`simulator.mqtt_output.MqttOutput`)."""

    def publish(self, key: bytes, value: bytes, *, headers: Headers = None) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class ReplaySummary:
    messages: int
    without_key: int
    first_event_ms: int | None
    last_event_ms: int | None
    wall_s: float
    messages_per_s: float

    def as_json(self) -> str:
        return json.dumps(asdict(self))


def replay(
    items: Iterable[ReplayItem],
    publisher: Publisher,
    *,
    speed: float | None = None,
    total: int | None = None,
    progress: bool = True,
    run_id: str | None = None,
) -> ReplaySummary:
    """Publish ``items`` in the order given, keyed by elevator id, original times untouched.

    Parameters
    ----------
    speed
        ``None`` publishes as fast as possible; ``N`` keeps event time running N× faster
        than wall time (1.0 is real time).
    run_id
        Each record carries it in the :data:`foundation.contract.REPLAY_RUN_HEADER` header:
        a live worker refuses such records, a replay worker detects on them
        (:mod:`replay.worker`). None publishes the records as live telemetry (the demo,
        the benches and the tests feeding the simulator's files to a pipeline).
    """
    if speed is not None and speed <= 0:
        raise ValueError(f"speed: {speed} is not a positive multiple of real time")
    headers: Headers = [(REPLAY_RUN_HEADER, run_id.encode())] if run_id is not None else None
    started = time.perf_counter()
    first = last = None
    n = without_key = 0
    bar = tqdm(total=total, unit="msg", disable=not progress, smoothing=0.1, mininterval=0.5)
    try:
        for item in items:
            if item.event_ms is not None:
                if first is None:
                    first = item.event_ms
                last = item.event_ms if last is None else max(last, item.event_ms)
                if speed is not None:
                    due = (item.event_ms - first) / 1000.0 / speed
                    ahead = due - (time.perf_counter() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            if item.key is None:
                without_key += 1
            publisher.publish(item.key or b"", item.value, headers=headers)
            n += 1
            if n % 1000 == 0:
                bar.update(1000)
        bar.update(n % 1000)
        publisher.flush()
    finally:
        bar.close()
    wall = time.perf_counter() - started
    return ReplaySummary(
        n, without_key, first, last, round(wall, 3), round(n / wall if wall else 0.0, 1)
    )
