"""``tianyan grade`` and ``tianyan report``: risk grades for the fleet, and the static risk
report for regulators who do not use Grafana.

``grade`` runs :func:`streams.grading.grade_fleet` as of now or a given time.
``report`` runs :func:`dashboards.report.write_report` (four PNGs and an HTML page).

The report reads as ``tianyan_regulator`` (read-only): the ``--database-url`` given, or
``TIANYAN_ADMIN_DATABASE_URL`` with its user replaced by ``tianyan_regulator``.
Registered in :mod:`tianyan.cli` (``grade_command``, ``report_command``).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import click

from foundation.settings import Settings
from tianyan.commands_eval import UTC_TIME
from tianyan.commands_eval import settings_from_env as _settings

REGULATOR_ROLE = "tianyan_regulator"


def _as_utc(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _thresholds(settings: Settings) -> Any:
    from detectors.thresholds import ThresholdError, load_thresholds

    try:
        return load_thresholds(settings.thresholds_file)
    except ThresholdError as e:
        raise click.ClickException(str(e)) from e


# -- grade -----------------------------------------------------------------------------------
@click.command("grade")
@click.option("--at", type=UTC_TIME, default=None, help="Grade as of this time, UTC (default now).")
def grade_command(at: dt.datetime | None) -> None:
    """Grade every elevator's risk (red 重大 / orange 较大 / yellow 一般 / blue 低) and store
    the grades that changed; prints a summary and a JSON line."""
    from detectors.risk import GRADE_ZH, GRADES
    from streams.grading import GradingError, grade_fleet

    settings = _settings()
    when = _as_utc(at)
    try:
        summary = grade_fleet(settings.database_url, when, _thresholds(settings))
    except GradingError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"graded {summary.elevators} elevators as of {when.isoformat()}")
    for g in GRADES:
        click.echo(f"  {g:7} {GRADE_ZH[g]:3} {summary.grades[g]:7d}")
    click.echo(
        f"{summary.written} grades recorded ({summary.grade_changes} changed grade), "
        f"weights {summary.weights_version}"
    )
    click.echo(json.dumps(summary.to_dict(), ensure_ascii=False))


# -- report ----------------------------------------------------------------------------------
@click.command("report")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for index.html and the two PNGs (created if missing).",
)
@click.option(
    "--at", type=UTC_TIME, default=None, help="Grades as of this time, UTC (default now)."
)
@click.option(
    "--database-url",
    default=None,
    help=f"Read as this role (default: the admin URL's user replaced by {REGULATOR_ROLE}).",
)
def report_command(out: Path, at: dt.datetime | None, database_url: str | None) -> None:
    """A static risk report for regulators: the risk heatmap on a grid map, grades by district,
    the elevators' map and grade history as PNGs, and an HTML page of tables, among them rescue
    performance and the maintenance companies' ranking."""
    import psycopg

    from dashboards.report import write_report
    from foundation.settings import role_url

    settings = _settings()
    th = _thresholds(settings)
    url = database_url or role_url(settings.admin_database_url, REGULATOR_ROLE)
    try:
        files = write_report(
            url,
            out,
            _as_utc(at),
            th.risk_maintenance_interval_days,
            th.risk_inspection_interval_days,
        )
    except psycopg.Error as e:
        raise click.ClickException(f"reading the report's data failed: {e}") from e
    except OSError as e:
        raise click.ClickException(f"writing the report to {out} failed: {e}") from e
    for p in (files.html, files.grid_map, files.heatmap, files.map, files.history):
        click.echo(str(p))
