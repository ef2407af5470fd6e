"""``tianyan backfill``: windows, trips and alerts derived again from the stored raw samples
with the current detectors and thresholds (``TIANYAN_THRESHOLDS_FILE``), replacing what was
there one slice (one elevator over the range) per transaction; see :mod:`replay.backfill`.

Registered in :mod:`tianyan.cli` (``backfill_command``).
"""

from __future__ import annotations

import datetime as dt

import click

from tianyan.commands_eval import UTC_TIME
from tianyan.commands_eval import settings_from_env as _settings


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@click.command("backfill")
@click.option("--start", type=UTC_TIME, required=True, help="Start of the range, UTC.")
@click.option("--end", type=UTC_TIME, required=True, help="End of the range (exclusive), UTC.")
@click.option("--elevator", "elevators", multiple=True, help="Only this elevator (repeatable).")
@click.option("--district", "districts", multiple=True, help="Only this district (repeatable).")
@click.option(
    "--warmup-minutes",
    type=float,
    default=60.0,
    show_default=True,
    help="Read each elevator's samples from this long before --start, to build up its state.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Derive and count what would be replaced, then roll back: nothing is written.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def backfill_command(
    start: dt.datetime,
    end: dt.datetime,
    elevators: tuple[str, ...],
    districts: tuple[str, ...],
    warmup_minutes: float,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Derive windows, trips and alerts of a time range again from the stored raw samples,
    with the current detectors and thresholds, and replace what differs.

    One transaction per elevator; each recorded in backfill_run / backfill_slice and in the
    audit ledger. Never publishes to Kafka: no webhook, no device command, no incident is
    opened or changed. The last line is one JSON summary.
    """
    from detectors.thresholds import ThresholdError, load_thresholds
    from replay.backfill import BackfillError, backfill

    settings = _settings()
    try:
        thresholds = load_thresholds(settings.thresholds_file)
        summary = backfill(
            settings.database_url,
            _as_utc(start),
            _as_utc(end),
            thresholds=thresholds,
            grace_ms=settings.grace_ms,
            elevators=elevators,
            districts=districts,
            warmup=dt.timedelta(minutes=warmup_minutes),
            dry_run=dry_run,
            progress=not quiet,
        )
    except (BackfillError, ThresholdError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(summary.as_json())
