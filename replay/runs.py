"""Replay runs: each replay has a run id, its own topic and a row in ``replay_run``.

A run's records go to the run's own topic (``{raw topic}.replay.{run id}``), each carrying
the :data:`foundation.contract.REPLAY_RUN_HEADER` header. Nothing of a run reaches the live
platform: the live worker does not read the run's topic and refuses any record with the
header that reaches the live raw topic all the same; the replay worker
(:mod:`replay.worker`) writes the run's alerts to ``replay_alert``, never to ``alert`` or
the alerts topic, so no incident, webhook or device command comes of a replay.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from foundation.contract import MAX_MESSAGE_SPAN_MS

#: What a run id may hold: it names a Kafka topic and a consumer group.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ReplayRunError(ValueError):
    """A replay run cannot be made or read; the message says which run and why."""


@dataclass(frozen=True)
class ReplayRun:
    """One row of ``replay_run``."""

    run_id: str
    topic: str
    source: str
    range_start: dt.datetime | None
    range_end: dt.datetime | None
    elevators: tuple[str, ...]
    districts: tuple[str, ...]
    messages: int | None
    published_at: dt.datetime | None
    thresholds: dict[str, Any] | None
    thresholds_file: str | None
    detected_at: dt.datetime | None
    #: The elevators the replay worker met in the run (None before it ran).
    elevators_seen: tuple[str, ...] | None = None


def new_run_id(now: dt.datetime | None = None) -> str:
    """A fresh run id: UTC time and a random suffix, e.g. ``20261205T171500Z-3f9a1c``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is a valid run id, else :class:`ReplayRunError` saying why."""
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise ReplayRunError(
            f"run id {run_id!r}: use 1–64 letters, digits, '.', '_' or '-', starting with a"
            " letter or digit (it names the run's Kafka topic)"
        )
    return run_id


def run_topic(raw_topic: str, run_id: str) -> str:
    """The run's own topic: the raw topic's name, ``.replay.`` and the run id."""
    return f"{raw_topic}.replay.{check_run_id(run_id)}"


def register_run(
    url: str,
    run_id: str,
    *,
    topic: str,
    source: str,
    range_start: dt.datetime | None = None,
    range_end: dt.datetime | None = None,
    elevators: Sequence[str] = (),
    districts: Sequence[str] = (),
) -> None:
    """Record a new run before anything is published.

    Raises
    ------
    ReplayRunError
        The run id is invalid or was used already.
    """
    check_run_id(run_id)
    with psycopg.connect(url) as conn:
        try:
            conn.execute(
                "INSERT INTO tianyan.replay_run (run_id, topic, source, range_start, range_end,"
                " elevators, districts) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (run_id, topic, source, range_start, range_end, list(elevators), list(districts)),
            )
        except psycopg.errors.UniqueViolation:
            raise ReplayRunError(
                f"run id {run_id!r} was used already (see `tianyan replay report {run_id}`);"
                " give another --run-id, or none to have one generated"
            ) from None


def mark_published(
    url: str,
    run_id: str,
    messages: int,
    first_event_ms: int | None,
    last_event_ms: int | None,
) -> None:
    """Every message of the run is in Kafka. A run from a file gets its range from the
    event times published: from the first message's first sample to past the last
    message's (a message spans at most ``MAX_MESSAGE_SPAN_MS``)."""
    lo = _utc(first_event_ms)
    hi = _utc(last_event_ms + MAX_MESSAGE_SPAN_MS + 1) if last_event_ms is not None else None
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE tianyan.replay_run SET messages = %s, published_at = now(),"
            " range_start = coalesce(range_start, %s), range_end = coalesce(range_end, %s)"
            " WHERE run_id = %s",
            (messages, lo, hi, run_id),
        )


def load_run(url: str, run_id: str) -> ReplayRun:
    """The run's row.

    Raises
    ------
    ReplayRunError
        No such run.
    """
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT run_id, topic, source, range_start, range_end, elevators, districts,"
            " messages, published_at, thresholds, thresholds_file, detected_at, elevators_seen"
            " FROM tianyan.replay_run WHERE run_id = %s",
            (run_id,),
        ).fetchone()
    if row is None:
        raise ReplayRunError(
            f"replay run {run_id!r} is unknown: publish it first with"
            f" `tianyan replay … --run-id {run_id}`"
        )
    return ReplayRun(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        tuple(row[5]),
        tuple(row[6]),
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        tuple(row[12]) if row[12] is not None else None,
    )


def is_published(url: str, run_id: str) -> bool:
    """Whether every message of the run is in Kafka (``tianyan replay`` finished)."""
    return load_run(url, run_id).published_at is not None


def record_detection(
    url: str,
    run_id: str,
    thresholds: dict[str, Any],
    thresholds_file: str | None,
    elevators_seen: Sequence[str],
) -> None:
    """The thresholds a replay worker ran the run with, the elevators it met, and when it
    finished."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE tianyan.replay_run SET thresholds = %s::jsonb, thresholds_file = %s,"
            " elevators_seen = %s, detected_at = now() WHERE run_id = %s",
            (json.dumps(thresholds), thresholds_file, sorted(elevators_seen), run_id),
        )


def thresholds_json(thresholds: Any) -> dict[str, Any]:
    """The detectors' thresholds (a :class:`detectors.thresholds.Thresholds`) as JSON values,
    as ``replay_run.thresholds`` holds them."""
    return {f.name: _jsonable(getattr(thresholds, f.name)) for f in dataclasses.fields(thresholds)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def _utc(ms: int | None) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
