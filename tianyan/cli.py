"""The ``tianyan`` command: the shell on top. It imports the rest; nothing imports it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from tianyan.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as e:
        raise click.ClickException(str(e)) from e


@click.group()
@click.version_option(package_name="tianyan")
def main() -> None:
    """tianyan (天眼): elevator safety supervision on Kafka and TimescaleDB."""


# -- stack --------------------------------------------------------------------------------------
@main.group()
def stack() -> None:
    """The local Kafka broker and TimescaleDB cluster (data and logs under var/)."""


def _print_status(statuses: list) -> bool:
    for s in statuses:
        click.echo(f"{s.name:12} {'up' if s.ok else 'DOWN':5} {s.detail}")
    return all(s.ok for s in statuses)


@stack.command("up")
def stack_up() -> None:
    """Install what is missing (once), start both services, wait until they answer."""
    from tianyan import stack as local_stack

    started = time.monotonic()
    try:
        statuses = local_stack.up(_settings())
    except local_stack.StackError as e:
        raise click.ClickException(str(e)) from e
    ok = _print_status(statuses)
    click.echo(f"stack up in {time.monotonic() - started:.1f} s")
    sys.exit(0 if ok else 1)


@stack.command("down")
def stack_down() -> None:
    """Stop both services; their data stay under var/."""
    from tianyan import stack as local_stack

    local_stack.down(_settings())
    click.echo("stack down")


@stack.command("status")
def stack_status() -> None:
    """Exit 0 only when both Kafka and TimescaleDB answer; name the one that does not."""
    from tianyan import stack as local_stack

    sys.exit(0 if _print_status(local_stack.status(_settings())) else 1)


# -- database -----------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """The TimescaleDB schema."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations and re-apply views and grants; a no-op when up to date."""
    from sql.migrate import MigrationError, migrate

    try:
        report = migrate(_settings().admin_database_url)
    except MigrationError as e:
        raise click.ClickException(str(e)) from e
    if report.applied:
        click.echo(f"applied: {', '.join(report.applied)}")
    else:
        click.echo(f"up to date ({report.already_applied} migrations applied before)")
    click.echo(f"re-applied: {', '.join(report.idempotent)}")


# -- kafka topics -------------------------------------------------------------------------------
@main.group()
def topics() -> None:
    """The Kafka topics."""


@topics.command("ensure")
def topics_ensure() -> None:
    """Create the pipeline's topics that do not exist yet."""
    from streams.topics import ensure_topics, topic_specs

    s = _settings()
    created = ensure_topics(s.kafka_bootstrap, topic_specs(s))
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


# -- contract -----------------------------------------------------------------------------------
@main.group()
def contract() -> None:
    """The telemetry contract terminals must follow."""


@contract.command("schema")
def contract_schema() -> None:
    """Print the contract as a JSON Schema."""
    from tianyan.contract import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@contract.command("validate")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def contract_validate(path: Path) -> None:
    """Validate a JSON Lines file of raw messages; report every bad line with its reason."""
    from tianyan.contract import InvalidMessage, decode

    good = bad = 0
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                decode(line.rstrip(b"\r\n"))
                good += 1
            except InvalidMessage as e:
                bad += 1
                click.echo(f"{path}:{lineno}: {e.reason}")
    click.echo(json.dumps({"valid": good, "invalid": bad}))
    sys.exit(1 if bad else 0)


# -- demo ---------------------------------------------------------------------------------------
@main.command()
def demo() -> None:
    """A round trip through the real stack: Kafka → validation → TimescaleDB."""
    from tianyan import demo as demo_run

    result = demo_run.run(_settings(), say=click.echo)
    click.echo(
        json.dumps(
            {
                "produced": result.produced,
                "consumed": result.consumed,
                "rejected": len(result.rejected),
                "samples_written": result.samples_written,
                "rows_in_database": result.rows_in_database,
                "seconds": round(result.seconds, 2),
            }
        )
    )
    if result.rows_in_database == 0 or len(result.rejected) != 1:
        raise click.ClickException("the round trip did not complete")
