"""Structured logs for the long-running commands: one JSON object per line on stderr."""

from __future__ import annotations

from typing import Any


def json_logging_config(loglevel: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``loglevel`` (debug, info, warn, error)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            }
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"level": loglevel.upper().replace("WARN", "WARNING"), "handlers": ["stderr"]},
    }
