"""``tianyan dashboards build | check | preview | publish``: the Grafana boards as code
(dashboards/).

Registered in :mod:`tianyan.cli` as the group ``dashboards``.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tianyan.commands_eval import UTC_TIME

if TYPE_CHECKING:
    from dashboards.macros import TimeRange


def _boards(uids: tuple[str, ...]) -> list:
    from dashboards.boards import all_boards

    boards = all_boards()
    if uids:
        known = {b.uid for b in boards}
        unknown = [u for u in uids if u not in known]
        if unknown:
            raise click.BadParameter(
                f"no board {', '.join(unknown)}; boards: {', '.join(sorted(known))}",
                param_hint="--board",
            )
        boards = [b for b in boards if b.uid in uids]
    return boards


def _admin_url() -> str:
    from foundation.settings import Settings, SettingsError

    try:
        return Settings.from_env().admin_database_url
    except SettingsError as e:
        raise click.ClickException(str(e)) from e


@click.group()
def dashboards() -> None:
    """Grafana boards as code: build the JSON, check every panel's SQL, publish."""


@dashboards.command("build")
@click.option(
    "--check-drift",
    is_flag=True,
    help="Write nothing; exit 1 if the committed files differ from what the code builds.",
)
def build_command(check_drift: bool) -> None:
    """Write dashboards/json/*.json and dashboards/provisioning/ from the board code."""
    from dashboards import build

    boards = _boards(())
    if check_drift:
        problems = build.drift(boards)
        for p in problems:
            click.echo(p, err=True)
        if problems:
            raise click.ClickException(
                f"{len(problems)} generated file(s) differ: run `tianyan dashboards build`"
            )
        click.echo(f"no drift: {len(boards)} boards and the provisioning files are up to date")
        return
    for path in build.write(boards):
        click.echo(path.relative_to(build.HERE.parent))


@dashboards.command("check")
@click.option(
    "--database-url",
    default=None,
    help="TimescaleDB to check against; each board connects as its role (the URL's user "
    "swapped). Default: TIANYAN_ADMIN_DATABASE_URL.",
)
@click.option(
    "--from", "start", type=UTC_TIME, default=None, help="Range start, UTC (default: 6 h ago)."
)
@click.option("--to", "end", type=UTC_TIME, default=None, help="Range end, UTC (default: now).")
@click.option("--board", "uids", multiple=True, help="Only this board (uid); repeatable.")
@click.option("--verbose", "-v", is_flag=True, help="List the panels that passed too.")
def check_command(
    database_url: str | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
    uids: tuple[str, ...],
    verbose: bool,
) -> None:
    """Run every panel's SQL as Grafana would (macros and variables filled) as the board's
    role; fail on an SQL error or on no rows where the data exist."""
    import psycopg

    from dashboards.check import check

    time_range = _time_range(start, end)

    try:
        results = check(_boards(uids), database_url or _admin_url(), time_range)
    except (ValueError, psycopg.OperationalError) as e:
        raise click.ClickException(f"cannot check: {e}") from e
    failures = [r for r in results if not r.ok]
    for r in results:
        if verbose or not r.ok:
            click.echo(r.describe())
    click.echo(
        f"{len(results)} queries on {len({r.board for r in results})} boards, "
        f"{len(failures)} failed ({time_range.start:%Y-%m-%dT%H:%M:%SZ} – "
        f"{time_range.end:%Y-%m-%dT%H:%M:%SZ})"
    )
    sys.exit(1 if failures else 0)


def _time_range(start: dt.datetime | None, end: dt.datetime | None) -> TimeRange:
    from dashboards.macros import TimeRange

    end_utc = end.replace(tzinfo=dt.UTC) if end else dt.datetime.now(dt.UTC)
    start_utc = start.replace(tzinfo=dt.UTC) if start else end_utc - dt.timedelta(hours=6)
    try:
        return TimeRange(start_utc, end_utc)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--from/--to") from e


@dashboards.command("preview")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for one PNG per board and index.html (created).",
)
@click.option(
    "--database-url",
    default=None,
    help="TimescaleDB to draw from; each board connects as its role. "
    "Default: TIANYAN_ADMIN_DATABASE_URL.",
)
@click.option(
    "--from", "start", type=UTC_TIME, default=None, help="Range start, UTC (default: 6 h ago)."
)
@click.option("--to", "end", type=UTC_TIME, default=None, help="Range end, UTC (default: now).")
@click.option("--board", "uids", multiple=True, help="Only this board (uid); repeatable.")
def preview_command(
    out: Path,
    database_url: str | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
    uids: tuple[str, ...],
) -> None:
    """Draw every board from the real SQL results as Grafana lays it out (time series, stat,
    table, geomap as scatter): one PNG per board and an index page."""
    import psycopg

    from dashboards.preview import preview

    time_range = _time_range(start, end)
    try:
        drawn = preview(_boards(uids), database_url or _admin_url(), time_range, out)
    except (ValueError, psycopg.OperationalError) as e:
        raise click.ClickException(f"cannot preview: {e}") from e
    for p in drawn:
        failed = f", {len(p.failed)} queries failed" if p.failed else ""
        click.echo(f"{p.png}: {p.title}, {p.panels} panels{failed}")
    click.echo(str(out / "index.html"))
    sys.exit(1 if any(p.failed for p in drawn) else 0)


@dashboards.command("publish")
@click.option("--url", required=True, help="Grafana's address, e.g. http://grafana:3000.")
@click.option(
    "--token",
    envvar="TIANYAN_GRAFANA_TOKEN",
    required=True,
    help="A service-account token with the Admin role (or TIANYAN_GRAFANA_TOKEN).",
)
@click.option(
    "--database-url",
    default=None,
    help="Where Grafana reaches TimescaleDB (host, port and database are used; each data "
    "source logs in as its role). Default: TIANYAN_ADMIN_DATABASE_URL.",
)
@click.option("--board", "uids", multiple=True, help="Only this board (uid); repeatable.")
@click.option(
    "--unit-role",
    default=None,
    help="The user unit's login role the unit data source connects as, when publishing into "
    "that unit's Grafana organisation (`tianyan db scoped-role`). Default: tianyan_analyst "
    "(the analysts' organisation sees every unit).",
)
@click.option(
    "--maintenance-role",
    default=None,
    help="Likewise, the maintenance company's login role for the maintenance data source.",
)
def publish_command(
    url: str,
    token: str,
    database_url: str | None,
    uids: tuple[str, ...],
    unit_role: str | None,
    maintenance_role: str | None,
) -> None:
    """Create or update the data sources (by uid) and overwrite the boards in Grafana;
    nothing is written unless Grafana is reachable and the token accepted."""
    from dashboards.publish import PublishError, publish
    from foundation.settings import Settings

    try:
        done = publish(
            url,
            token,
            _boards(uids),
            database_url or _admin_url(),
            sslmode=Settings.from_env().pg_sslmode,
            scoped_roles={
                k: v
                for k, v in (("user_unit", unit_role), ("maintenance_company", maintenance_role))
                if v
            },
        )
    except PublishError as e:
        raise click.ClickException(str(e)) from e
    for uid in done.datasources_created:
        click.echo(f"data source {uid}: created")
    for uid in done.datasources_updated:
        click.echo(f"data source {uid}: updated")
    if done.folder_created:
        click.echo("folder tianyan: created")
    for board in done.boards:
        click.echo(f"board {board}: saved")
