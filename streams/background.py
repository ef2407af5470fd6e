"""Background tasks that keep serving: a timer's failure is logged and counted, never fatal.

Faust stops the whole worker when a timer raises. A retention sweep, a ledger anchor or an
escalation pass that fails once (the database restarting, Kafka away) must not take the
ingest or the rescue path down with it: the next tick tries again, and the failures show in
``tianyan_background_errors_total{task=…}`` and the log.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter


def keep_serving(
    task: str, errors: Counter, log: logging.Logger
) -> Callable[[Callable[[], Awaitable[None]]], Callable[[], Awaitable[None]]]:
    """Decorate a timer's coroutine function so that an exception is logged with its
    traceback and counted in ``errors`` (labelled ``task``) instead of ending the process."""

    def decorate(fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        @functools.wraps(fn)
        async def guarded() -> None:
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                errors.labels(task).inc()
                log.exception("background task %s failed; it runs again on its next turn", task)

        return guarded

    return decorate
