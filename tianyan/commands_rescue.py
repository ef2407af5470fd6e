"""Commands of the incident dispatcher: ``tianyan dispatcher``, ``tianyan incidents``,
``tianyan audit verify`` and ``tianyan rescue-receiver``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from tianyan.commands_eval import settings_from_env as _settings
from tianyan.logs import json_logging_config

_LOGLEVEL = click.option(
    "--loglevel",
    type=click.Choice(["debug", "info", "warn", "error"]),
    default="info",
    show_default=True,
)


@click.command()
@_LOGLEVEL
def dispatcher(loglevel: str) -> None:
    """Run the incident dispatcher: alerts → incidents → signed rescue webhooks.

    Consumes TIANYAN_ALERTS_TOPIC; delivers every incident change to each
    TIANYAN_RESCUE_WEBHOOK_URL, signed with that endpoint's TIANYAN_RESCUE_WEBHOOK_SECRET;
    escalates unacknowledged trappings; serves the acknowledgement API at
    http://TIANYAN_RESCUE_API_BIND:TIANYAN_RESCUE_API_PORT/incidents/ID/ACTION (behind a TLS
    reverse proxy), metrics at
    http://TIANYAN_DISPATCHER_WEB_BIND:TIANYAN_DISPATCHER_WEB_PORT/metrics.
    """
    from faust.worker import Worker as FaustWorker

    from rescue.delivery import SecretError
    from rescue.dispatcher import create_app

    settings = _settings()
    try:
        app, _ = create_app(settings)
    except (SecretError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    app.conf.logging_config = json_logging_config(loglevel)
    FaustWorker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


@click.group(invoke_without_command=True)
@click.option(
    "--stuck-after",
    type=float,
    default=300.0,
    show_default=True,
    help="A pending delivery older than this many seconds is listed as stuck.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of tables.")
@click.pass_context
def incidents(ctx: click.Context, stuck_after: float, as_json: bool) -> None:
    """List active incidents and stuck deliveries (dead, or pending too long)."""
    if ctx.invoked_subcommand is not None:
        return
    import psycopg

    from rescue import store

    settings = _settings()
    try:
        with psycopg.connect(settings.database_url) as conn:
            active = store.active_incidents(conn)
            stuck = store.stuck_deliveries(conn, stuck_after)
            backlog = store.outbox_backlog(conn)
    except psycopg.OperationalError as e:
        raise click.ClickException(f"cannot reach the database: {e}") from e
    if as_json:
        click.echo(
            json.dumps(
                {
                    "active_incidents": [
                        {k: store.jsonable(v) for k, v in r.items()} for r in active
                    ],
                    "stuck_deliveries": [
                        {k: store.jsonable(v) for k, v in r.items()} for r in stuck
                    ],
                    "outbox": backlog,
                },
                ensure_ascii=False,
            )
        )
        return
    click.echo(f"{len(active)} active incidents")
    for r in active:
        trapped = f" {r['estimated_trapped']} trapped" if r["estimated_trapped"] else ""
        click.echo(
            f"  {r['incident_id']}  {r['opened_at']:%Y-%m-%d %H:%M:%S}  {r['elevator_id']}"
            f"  {r['fault_type']} ({r['severity']}){trapped}  {r['state']}"
            f"  level={r['escalation_level']}  {r['district'] or ''} {r['address'] or ''}"
        )
    click.echo(
        f"outbox: {backlog['pending']} pending ({backlog['retrying']} retrying),"
        f" {backlog['dead']} dead; {len(stuck)} stuck"
    )
    for r in stuck:
        click.echo(
            f"  delivery {r['delivery_id']}  {r['status']}  {r['event_type']}  {r['endpoint']}"
            f"  attempts={r['attempts']}  last={r['last_status_code']}  {r['last_error'] or ''}"
        )


@incidents.command("redeliver")
@click.argument("delivery_ids", nargs=-1, type=int)
@click.option("--all-dead", is_flag=True, help="Every dead delivery.")
@click.option("--endpoint", help="Only deliveries to this endpoint.")
def incidents_redeliver(
    delivery_ids: tuple[int, ...], all_dead: bool, endpoint: str | None
) -> None:
    """Queue dead deliveries again (same webhook-id, so receivers still de-duplicate)."""
    import psycopg

    from rescue import store

    if not delivery_ids and not all_dead:
        raise click.UsageError("name delivery ids, or give --all-dead")
    settings = _settings()
    with psycopg.connect(settings.database_url) as conn:
        n = store.redeliver(conn, delivery_ids=delivery_ids, all_dead=all_dead, endpoint=endpoint)
    click.echo(f"{n} deliveries queued again")
    if delivery_ids and n < len(delivery_ids):
        raise click.ClickException(
            f"{len(delivery_ids) - n} of the named deliveries are not dead (or do not exist)"
        )


@click.group()
def audit() -> None:
    """The tamper-evident ledger."""


@audit.command("verify")
@click.option("--database-url", help="Default: TIANYAN_DATABASE_URL (any role that can read).")
@click.option(
    "--anchors/--no-anchors",
    default=True,
    show_default=True,
    help="Also check the ledger heads published to TIANYAN_AUDIT_ANCHORS_TOPIC.",
)
def audit_verify(database_url: str | None, anchors: bool) -> None:
    """Walk the hash chain, check it against its published anchors, and check the
    registry, alerts, incidents, events, applied alerts, actions, deliveries and evidence
    against it, all in one snapshot.

    Exits 1 naming each table tampered with and how (edited, deleted, inserted, reordered,
    truncated, emptied, rewritten).
    """
    import psycopg

    from rescue.ledger import as_json, read_anchors, verify

    settings = _settings()
    url = database_url or settings.database_url
    published = []
    if anchors:
        try:
            published = read_anchors(
                settings.kafka_bootstrap,
                settings.audit_anchors_topic,
                security=settings.kafka_security,
            )
        except Exception as e:  # Kafka down, topic missing: say so, verify nothing half-way
            raise click.ClickException(
                f"cannot read the ledger anchors from {settings.audit_anchors_topic} at"
                f" {settings.kafka_bootstrap}: {e} (--no-anchors checks the database alone)"
            ) from e
    try:
        report = verify(url, published if anchors else None)
    except psycopg.OperationalError as e:
        raise click.ClickException(f"cannot reach the database: {e}") from e
    if report.ok:
        anchored = (
            f"; {report.anchors} published anchors match it"
            if anchors
            else "; anchors not checked (--no-anchors)"
        )
        click.echo(
            f"ledger verified: {report.entries} entries, head seq {report.head_seq}"
            f" hash {report.head_hash[:16]}…{anchored}; incidents, events and"
            f" {report.facts} facts (registry, alerts, applied alerts, actions, deliveries,"
            " evidence) match it"
        )
    else:
        click.echo(f"ledger verification FAILED after {report.entries} good entries:", err=True)
        for p in report.problems:
            click.echo(f"  {p}", err=True)
    click.echo(as_json(report))
    if not report.ok:
        sys.exit(1)


@click.command("rescue-receiver")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8099, show_default=True)
@click.option(
    "--secret",
    envvar="TIANYAN_RESCUE_WEBHOOK_SECRET",
    help="whsec_… (default: TIANYAN_RESCUE_WEBHOOK_SECRET).",
)
@click.option(
    "--action-secret",
    envvar="TIANYAN_RESCUE_ACTION_SECRET",
    help="whsec_… that signs --acknowledge requests (default: TIANYAN_RESCUE_ACTION_SECRET).",
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append each event here (JSON Lines); seen ids are restored from it on start.",
)
@click.option(
    "--acknowledge",
    "acknowledge_url",
    metavar="DISPATCHER_URL",
    help="Acknowledge each new incident at this dispatcher (e.g. http://127.0.0.1:6067).",
)
@click.option(
    "--arrive-minutes",
    "arrive_minutes",
    type=(click.FloatRange(min=0, min_open=True), click.FloatRange(min=0, min_open=True)),
    default=None,
    metavar="MEDIAN P90",
    help="With --acknowledge, play the rescuers: report arriving at each incident routed to"
    " the rescue platform, opened + a log-normal travel time (minutes), at the latest now.",
)
def rescue_receiver(
    host: str,
    port: int,
    secret: str | None,
    action_secret: str | None,
    journal: Path | None,
    acknowledge_url: str | None,
    arrive_minutes: tuple[float, float] | None,
) -> None:
    """Run the reference webhook receiver: verify, de-duplicate, log, acknowledge (and
    report the rescuers' arrival)."""
    import logging

    from aiohttp import web

    from rescue.delivery import SecretError
    from rescue.receiver import Receiver, RescuerTravel

    if not secret:
        raise click.UsageError("give --secret or set TIANYAN_RESCUE_WEBHOOK_SECRET")
    try:
        travel = RescuerTravel(*arrive_minutes) if arrive_minutes else None
        receiver = Receiver(
            secret, journal, acknowledge_url, action_secret=action_secret, travel=travel
        )
    except SecretError as e:
        raise click.ClickException(
            str(e)
            .replace("TIANYAN_RESCUE_WEBHOOK_SECRET", "--secret")
            .replace("TIANYAN_RESCUE_ACTION_SECRET", "--action-secret")
        ) from e
    except ValueError as e:
        raise click.UsageError(
            str(e).replace("(TIANYAN_RESCUE_ACTION_SECRET)", "(--action-secret)")
        ) from e
    logging.basicConfig(
        level=os.environ.get("TIANYAN_RECEIVER_LOGLEVEL", "INFO"),
        format="%(asctime)s %(message)s",
        stream=sys.stdout,
    )
    click.echo(f"rescue receiver on http://{host}:{port}/ ({len(receiver.seen)} ids restored)")
    web.run_app(receiver.app(), host=host, port=port, print=None)
