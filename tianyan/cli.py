"""The ``tianyan`` command: the shell on top. It imports the rest; nothing imports it."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from foundation.settings import Settings
from tianyan.commands_eval import UTC_TIME
from tianyan.commands_eval import settings_from_env as _settings
from tianyan.logs import json_logging_config


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
@click.option(
    "--secure",
    is_flag=True,
    help="Run the broker with a SASL_SSL listener (SCRAM-SHA-512, a local CA) and ACLs on "
    "TIANYAN_KAFKA_SECURE_PORT; each component's settings go to var/kafka-secure/clients/.",
)
@click.option(
    "--brokers",
    type=click.IntRange(min=1),
    default=None,
    help="Run a cluster of N Kafka brokers on this machine (as TIANYAN_KAFKA_BROKERS=N, which "
    "the other commands must see too: export it); node n listens 10 × (n − 1) ports above "
    "TIANYAN_KAFKA_PORT.",
)
def stack_up(secure: bool, brokers: int | None) -> None:
    """Install what is missing (once), start the services, wait until they answer."""
    import dataclasses

    from tianyan import stack as local_stack

    started = time.monotonic()
    settings = _settings()
    if brokers is not None and brokers != settings.kafka_brokers:
        if "TIANYAN_KAFKA_REPLICATION_FACTOR" not in os.environ:
            settings = dataclasses.replace(settings, kafka_replication_factor=min(3, brokers))
        settings = dataclasses.replace(settings, kafka_brokers=brokers)
        click.echo(f"export TIANYAN_KAFKA_BROKERS={brokers} for the other commands", err=True)
    try:
        statuses = local_stack.up(settings, secure=secure)
    except local_stack.StackError as e:
        raise click.ClickException(str(e)) from e
    ok = _print_status(statuses)
    if secure:
        clients = settings.var_dir / "kafka-secure" / "clients"
        click.echo(f"secure broker at 127.0.0.1:{settings.kafka_secure_port}; each component's")
        click.echo(f"TIANYAN_KAFKA_* settings: {clients}/<admin|worker|dispatcher|...>.env")
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
    from sql.roles import apply_role_settings

    settings = _settings()
    try:
        report = migrate(settings.admin_database_url)
    except MigrationError as e:
        raise click.ClickException(str(e)) from e
    # passwords (from TIANYAN_PG_*_PASSWORD) and the read roles' limits
    apply_role_settings(settings.admin_database_url, settings)
    if report.applied:
        click.echo(f"applied: {', '.join(report.applied)}")
    else:
        click.echo(f"up to date ({report.already_applied} migrations applied before)")
    click.echo(f"re-applied: {', '.join(report.idempotent)}")


@db.command("scoped-role")
@click.argument("role")
@click.option("--user-unit", help="The user unit (elevator.user_unit) the role stands for.")
@click.option(
    "--maintenance-company",
    help="The maintenance company (elevator.maintenance_company) the role stands for.",
)
@click.option(
    "--password-env",
    metavar="VAR",
    help="An environment variable holding the role's password (never on the command line).",
)
def db_scoped_role(
    role: str, user_unit: str | None, maintenance_company: str | None, password_env: str | None
) -> None:
    """Create or update the login role of ONE user unit or maintenance company: it sees only
    that unit's or company's elevators (row-level security); its Grafana organisation's data
    source connects as it (README § Production)."""
    import os

    from sql.roles import ReadLimits, create_scoped_role

    settings = _settings()
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise click.ClickException(f"--password-env {password_env}: that variable is empty")
    try:
        create_scoped_role(
            settings.admin_database_url,
            role,
            user_unit=user_unit,
            maintenance_company=maintenance_company,
            password=password,
            limits=ReadLimits.from_settings(settings),
        )
    except ValueError as e:
        raise click.ClickException(f"{e} (give --user-unit or --maintenance-company)") from e
    click.echo(f"{role}: sees only {user_unit or maintenance_company}")


# -- kafka topics -------------------------------------------------------------------------------
@main.group()
def topics() -> None:
    """The Kafka topics."""


@topics.command("ensure")
def topics_ensure() -> None:
    """Create the pipeline's topics that do not exist yet."""
    from streams.topics import TopicError, ensure_topics, topic_specs

    s = _settings()
    try:
        created = ensure_topics(s.kafka_bootstrap, topic_specs(s), security=s.kafka_security)
    except TopicError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


# -- contract -----------------------------------------------------------------------------------
@main.group()
def contract() -> None:
    """The telemetry contract terminals must follow."""


@contract.command("schema")
def contract_schema() -> None:
    """Print the contract as a JSON Schema."""
    from foundation.contract import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@contract.command("validate")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def contract_validate(path: Path) -> None:
    """Validate a JSON Lines file of raw messages; report every bad line with its reason."""
    from foundation.contract import InvalidMessage, decode

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


# -- registry -----------------------------------------------------------------------------------
@main.group()
def registry() -> None:
    """The elevator registry: a synthetic city, or a real export."""


@registry.command("generate")
@click.option("--seed", type=int, default=20210101, show_default=True)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Elevators (the real city has 30,000-45,000).",
)
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Date the registry describes (maintenance and inspection dates are "
    "relative to it); default today.",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the registry to this CSV file (the import format).",
)
@click.option("--no-db", is_flag=True, help="Do not store it in TimescaleDB.")
def registry_generate(
    seed: int, count: int, as_of: dt.datetime | None, csv_path: Path | None, no_db: bool
) -> None:
    """Build a synthetic Lianyungang deterministically from a seed."""
    from registry.generate import generate
    from registry.store import upsert, write_csv

    day = as_of.date() if as_of else dt.date.today()
    elevators = generate(seed, count, day)
    summary: dict[str, object] = {
        "elevators": len(elevators),
        "seed": seed,
        "as_of": day.isoformat(),
    }
    if csv_path:
        with csv_path.open("w", encoding="utf-8") as f:
            write_csv(elevators, f)
        summary["csv"] = str(csv_path)
    if not no_db:
        r = upsert(_settings().database_url, elevators, f"synthetic (seed {seed})", day)
        summary |= {
            "inserted": r.inserted,
            "updated": r.updated,
            "unchanged": r.unchanged,
            "conflicts": len(r.conflicts),
        }
    click.echo(json.dumps(summary, ensure_ascii=False))


@registry.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--source",
    default="registry",
    show_default=True,
    help="Who the export comes from (e.g. 'inspection agency', a user unit's name); every "
    "value it sets is recorded with this source.",
)
@click.option(
    "--as-of",
    "as_of",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="The date the export describes; default today (the city's date). A value is "
    "replaced only by a newer one.",
)
def registry_import(path: Path, source: str, as_of: dt.datetime | None) -> None:
    """Fuse a registry export (CSV), whole or partial, into the registry.

    Only the columns the file carries are updated, and in each row only its non-empty
    cells; rows for elevators it does not name are untouched. A value another source gave
    differently is a conflict: printed here (stderr) and stored (`tianyan registry
    conflicts`); it replaces the stored value only when this export is newer (--as-of).
    Every bad row is reported, every good one kept. Exits 1 when some rows were bad (the
    good rows are stored all the same).
    """
    from registry.fusion import display
    from registry.store import RegistryError, city_today, fuse_rows, read_csv

    if not source.strip():
        raise click.BadParameter("empty; name the source of the export", param_hint="--source")
    try:
        result = read_csv(path)
    except RegistryError as e:
        raise click.ClickException(str(e)) from e
    day = as_of.date() if as_of else city_today()
    r = fuse_rows(_settings().database_url, result.rows, source, day)
    bad = sorted([*result.bad_rows, *r.not_in_registry], key=lambda b: b.line)
    for b in bad:
        click.echo(f"{path}:{b.line}: {b.reason}", err=True)
    line_of = {row.registration_code: row.line for row in result.rows}
    for c in r.conflicts:
        click.echo(
            f"{path}:{line_of[c.registration_code]}: conflict: {c.registration_code} {c.column}:"
            f" stored {display(c.stored_value)!r} ({c.stored.source}, as of {c.stored.as_of})"
            f" vs {display(c.offered_value)!r} ({c.offered.source}, as of {c.offered.as_of}):"
            f" {'replaced (newer)' if c.outcome == 'replaced' else 'kept the stored value'}",
            err=True,
        )
    click.echo(
        json.dumps(
            {
                "source": source.strip(),
                "as_of": day.isoformat(),
                "columns": list(result.columns),
                "good_rows": len(result.rows) - len(r.not_in_registry),
                "bad_rows": len(bad),
                "inserted": r.inserted,
                "updated": r.updated,
                "unchanged": r.unchanged,
                "stale_values": r.stale_values,
                "conflicts": len(r.conflicts),
                "conflicts_replaced": sum(c.outcome == "replaced" for c in r.conflicts),
            },
            ensure_ascii=False,
        )
    )
    sys.exit(1 if bad else 0)


@registry.command("conflicts")
@click.option("--elevator", help="Only this elevator (registration code).")
@click.option("--source", help="Only conflicts this source was party to (stored or offered).")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Only conflicts met on or after this date (UTC).",
)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def registry_conflicts(
    elevator: str | None, source: str | None, since: dt.datetime | None, limit: int
) -> None:
    """The conflicts between sources that imports met, newest first, one JSON line each."""
    from registry.store import conflicts

    for c in conflicts(_settings().database_url, elevator, source, since, limit):
        click.echo(json.dumps(c, ensure_ascii=False, default=str))


@registry.command("provenance")
@click.argument("registration_code")
def registry_provenance(registration_code: str) -> None:
    """Each stored value of one elevator with its source and date, one JSON line each."""
    from registry.store import provenance

    rows = provenance(_settings().database_url, registration_code)
    if not rows:
        raise click.ClickException(f"registration_code: {registration_code} has no recorded values")
    for row in rows:
        click.echo(json.dumps(row, ensure_ascii=False, default=str))


# -- simulate ----------------------------------------------------------------------------------
DEFAULT_SCENARIO = (
    Path(__file__).resolve().parent.parent / "simulator" / "scenarios" / "default.toml"
)


def _utc(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


@main.command()
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=DEFAULT_SCENARIO,
    show_default=True,
)
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option(
    "--elevators",
    "count",
    type=click.IntRange(min=1),
    default=None,
    help="Simulate this many elevators of the registry (default: all fitted with a terminal).",
)
@click.option("--district", "districts", multiple=True, help="Only these districts (repeatable).")
@click.option(
    "--start",
    type=UTC_TIME,
    default=None,
    help="Simulated clock start, UTC (default now).",
)
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="Simulated seconds.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="N× real time (1 = real time); default as fast as possible.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE.jsonl or FILE.parquet instead of Kafka.",
)
@click.option(
    "--registry-seed",
    type=int,
    default=None,
    help="Simulate a generated registry (this seed) instead of the stored one.",
)
@click.option(
    "--mqtt",
    is_flag=True,
    help="Every terminal connects to the MQTT broker with its own credential (issued now) "
    "and publishes through it; `tianyan gateway` bridges to Kafka.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(
    scenario_path: Path,
    seed: int | None,
    count: int | None,
    districts: tuple[str, ...],
    start: dt.datetime | None,
    duration_s: float,
    speed: float | None,
    out: Path | None,
    registry_seed: int | None,
    mqtt: bool,
    quiet: bool,
) -> None:
    """Simulate the fleet's terminals, with labelled faults, into Kafka, MQTT or files.

    The last line is one JSON object with the counts and the rate.
    """
    import simulator
    from streams.producer import RawPublisher

    try:
        scenario = simulator.load_scenario(scenario_path, seed=seed)
    except simulator.ScenarioError as e:
        raise click.ClickException(str(e)) from e
    settings = _settings()
    clock = _utc(start)
    elevators = _fleet(settings, registry_seed, count, districts, clock.date())
    if out is not None:
        if out.suffix not in (".jsonl", ".parquet"):
            raise click.ClickException(f"--out: {out} must end in .jsonl or .parquet")
        output: simulator.FileOutput | simulator.KafkaOutput = simulator.FileOutput(out)
        summary = simulator.simulate(
            scenario,
            elevators,
            start=clock,
            duration_s=duration_s,
            output=output,
            speed=speed,
            progress=not quiet,
        )
    elif mqtt:
        from tianyan import stack as local_stack

        broker = local_stack.LocalMosquitto(settings)
        try:
            credentials = broker.issue_many([e.registration_code for e in elevators])
        except local_stack.StackError as e:
            raise click.ClickException(str(e)) from e
        broker.reload()
        summary = simulator.simulate(
            scenario,
            elevators,
            start=clock,
            duration_s=duration_s,
            output=simulator.MqttOutput(settings, credentials, labels_db_url=settings.database_url),
            speed=speed,
            progress=not quiet,
        )
    else:
        with RawPublisher(
            settings.kafka_bootstrap, settings.raw_topic, security=settings.kafka_security
        ) as publisher:
            output = simulator.KafkaOutput(publisher, settings.database_url)
            summary = simulator.simulate(
                scenario,
                elevators,
                start=clock,
                duration_s=duration_s,
                output=output,
                speed=speed,
                progress=not quiet,
            )
    click.echo(summary.as_json())


def _fleet(
    settings: Settings,
    registry_seed: int | None,
    count: int | None,
    districts: tuple[str, ...],
    day: dt.date,
) -> list:
    from registry.generate import generate
    from registry.store import load

    if registry_seed is not None:
        fleet = generate(registry_seed, count or 2000, day)
        if districts:
            fleet = [e for e in fleet if e.district in districts]
    else:
        fleet = load(settings.database_url, districts or None)
        if not fleet:
            raise click.ClickException(
                "the registry is empty: run `tianyan registry generate` (or import one), "
                "or pass --registry-seed"
            )
    fitted = [e for e in fleet if e.has_terminal]
    chosen = (fitted or fleet)[: count or None]
    if count is not None and len(chosen) < count:
        where = f"registry seed {registry_seed}" if registry_seed is not None else "the registry"
        click.echo(
            f"simulating {len(chosen)} elevators, not {count}: {where} has {len(fleet)} "
            f"elevators{' in ' + ', '.join(districts) if districts else ''}, of which "
            f"{len(fitted)} have a monitoring terminal (only those send telemetry)",
            err=True,
        )
    return chosen


# -- replay ------------------------------------------------------------------------------------
@main.group("replay", invoke_without_command=True)
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Replay a FILE.jsonl or FILE.parquet instead of TimescaleDB.",
)
@click.option(
    "--start",
    type=UTC_TIME,
    default=None,
    help="Start of the stored time range, UTC.",
)
@click.option(
    "--end",
    type=UTC_TIME,
    default=None,
    help="End of the stored time range (exclusive), UTC.",
)
@click.option("--elevator", "elevators", multiple=True, help="Only this elevator (repeatable).")
@click.option("--district", "districts", multiple=True, help="Only this district (repeatable).")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="N× real time; default as fast as possible.",
)
@click.option(
    "--run-id",
    default=None,
    help="The replay run's id (letters, digits, . _ -); generated and printed when not given.",
)
@click.option(
    "--topic",
    default=None,
    help="Publish here instead of the run's own topic (RAW_TOPIC.replay.RUN_ID); records keep"
    " the run's header, so a live worker refuses them.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def replay_command(
    ctx: click.Context,
    source: Path | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
    elevators: tuple[str, ...],
    districts: tuple[str, ...],
    speed: float | None,
    run_id: str | None,
    topic: str | None,
    quiet: bool,
) -> None:
    """Publish history back to Kafka as a replay run, per-elevator order and event times
    preserved; `tianyan replay report RUN` compares a run's alerts with the live ones.

    The run goes to its own topic, every record carrying the run id in the
    `tianyan-replay-run` header: no live worker reads it (one that meets such a record on
    the live raw topic quarantines it), so a replay never opens an incident, sends a webhook
    or commands a terminal. `tianyan worker --replay-run RUN` detects on it into
    `replay_alert`. The first line names the run; the last is one JSON summary.
    """
    if ctx.invoked_subcommand is not None:
        if source or start or end or elevators or districts or speed or run_id or topic:
            raise click.ClickException(
                f"`tianyan replay {ctx.invoked_subcommand}` takes its own options only"
            )
        return
    import replay as rp
    from streams.producer import PublishError, RawPublisher
    from streams.topics import ensure_topics, replay_topic_spec

    settings = _settings()
    try:
        run_id = rp.check_run_id(run_id) if run_id is not None else rp.new_run_id()
        lo = hi = None
        if source is not None:
            if elevators or districts or start or end:
                raise click.ClickException(
                    "--from replays a whole file: drop the range and filters"
                )
            if source.suffix == ".jsonl":
                items, total = rp.from_jsonl(source), rp.count_jsonl(source)
            elif source.suffix == ".parquet":
                items, total = rp.from_parquet(source), rp.count_parquet(source)
            else:
                raise click.ClickException(f"--from: {source} must end in .jsonl or .parquet")
        else:
            if start is None or end is None:
                raise click.ClickException("replaying from TimescaleDB needs --start and --end")
            lo, hi = _utc(start), _utc(end)
            if hi <= lo:
                raise rp.ReplaySourceError(
                    f"time range: end {hi.isoformat()} is not after start {lo.isoformat()}"
                )
            total = rp.count_database(
                settings.database_url, lo, hi, elevators=elevators, districts=districts
            )
            items = rp.from_database(
                settings.database_url, lo, hi, elevators=elevators, districts=districts
            )
        destination = topic or rp.run_topic(settings.raw_topic, run_id)
        rp.register_run(
            settings.database_url,
            run_id,
            topic=destination,
            source=str(source) if source is not None else "timescaledb",
            range_start=lo,
            range_end=hi,
            elevators=elevators,
            districts=districts,
        )
        click.echo(f"replay run {run_id} → {destination}", err=True)
        if topic is None:
            ensure_topics(
                settings.kafka_bootstrap,
                [replay_topic_spec(settings, destination)],
                security=settings.kafka_security,
            )
        publisher = RawPublisher(
            settings.kafka_bootstrap, destination, security=settings.kafka_security
        )
        summary = rp.replay(
            items, publisher, speed=speed, total=total, progress=not quiet, run_id=run_id
        )
        rp.mark_published(
            settings.database_url,
            run_id,
            summary.messages,
            summary.first_event_ms,
            summary.last_event_ms,
        )
    except (rp.ReplaySourceError, rp.ReplayRunError, PublishError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        json.dumps({"run_id": run_id, "topic": destination, **json.loads(summary.as_json())})
    )


@replay_command.command("report")
@click.argument("run_id")
@click.option(
    "--onset-tolerance-s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="A run alert and a live alert of the same elevator and type whose onsets lie this"
    " close are the same condition.",
)
def replay_report(run_id: str, onset_tolerance_s: float) -> None:
    """Compare a replay run's alerts with the live alerts of its range and elevators: new,
    gone, changed (same elevator, type and onset within the tolerance; severity, people
    trapped or evidence differ). A table, then one JSON line."""
    from replay import ReplayRunError, load_run
    from replay.report import compare, load_facts, render

    settings = _settings()
    try:
        run = load_run(settings.database_url, run_id)
        live, mine = load_facts(settings.database_url, run)
    except ReplayRunError as e:
        raise click.ClickException(str(e)) from e
    comparison = compare(live, mine, onset_tolerance_s)
    click.echo(render(run, comparison, len(live), len(mine), onset_tolerance_s))


# -- worker ------------------------------------------------------------------------------------
@main.command()
@click.option(
    "--loglevel",
    type=click.Choice(["debug", "info", "warn", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--replay-run",
    "replay_run",
    default=None,
    metavar="RUN",
    help="Detect on replay run RUN instead (TIANYAN_THRESHOLDS_FILE applies): its alerts go"
    " to replay_alert, nothing else is written; ends when the run is read to its end.",
)
def worker(loglevel: str, replay_run: str | None) -> None:
    """Run a stream worker: raw telemetry → validation → windows and trips → TimescaleDB.

    Start several (each with its own TIANYAN_WORKER_WEB_PORT) to share the partitions.
    Metrics at http://127.0.0.1:PORT/metrics, health at /health.

    With --replay-run, the detectors run over a replay run's own topic under a consumer
    group of their own; the last line is one JSON summary.
    """
    from faust.worker import Worker as FaustWorker

    from detectors.thresholds import ThresholdError, load_thresholds
    from streams.app import create_app, tune_gc

    settings = _settings()
    if replay_run is not None:
        from replay import ReplayRunError
        from replay.worker import ReplayWorkerError, detect_run

        try:
            thresholds = load_thresholds(settings.thresholds_file)
            tune_gc()
            done = detect_run(
                settings, replay_run, thresholds, thresholds_file=settings.thresholds_file
            )
        except (ThresholdError, ReplayRunError, ReplayWorkerError) as e:
            raise click.ClickException(str(e)) from e
        click.echo(done.as_json())
        return
    try:
        app, _ = create_app(settings)
    except ThresholdError as e:
        raise click.ClickException(str(e)) from e
    # Structured logs: one JSON object per line on stderr, Faust's own lines included.
    app.conf.logging_config = json_logging_config(loglevel)
    tune_gc()
    FaustWorker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


# -- MQTT: terminals and the gateway -------------------------------------------------------------
@main.group()
def terminals() -> None:
    """Terminals' MQTT credentials on the local broker (username = registration code)."""


@terminals.command("issue")
@click.argument("terminal_ids", nargs=-1, required=True)
def terminals_issue(terminal_ids: tuple[str, ...]) -> None:
    """Create (or replace) each terminal's password; prints `ID PASSWORD` lines.

    The passwords are also kept, readable by root only, under var/mosquitto/terminals/.
    """
    from tianyan import stack as local_stack

    broker = local_stack.LocalMosquitto(_settings())
    try:
        for terminal_id, password in broker.issue_many(list(terminal_ids)).items():
            click.echo(f"{terminal_id} {password}")
    except local_stack.StackError as e:
        raise click.ClickException(str(e)) from e
    broker.reload()


@terminals.command("revoke")
@click.argument("terminal_ids", nargs=-1, required=True)
def terminals_revoke(terminal_ids: tuple[str, ...]) -> None:
    """Take the terminals' credentials away; the broker reloads (SIGHUP) and refuses them."""
    from tianyan import stack as local_stack

    broker = local_stack.LocalMosquitto(_settings())
    revoked = broker.revoke_many(list(terminal_ids))
    broker.reload()
    unknown = [t for t in terminal_ids if t not in revoked]
    if unknown:
        raise click.ClickException(f"no credential to revoke for: {', '.join(unknown)}")
    click.echo(f"revoked: {', '.join(terminal_ids)}")


@main.command()
@click.option("--loglevel", type=click.Choice(["debug", "info", "warn", "error"]), default="info")
@click.option(
    "--retire",
    is_flag=True,
    help="End this gateway's broker session (TIANYAN_GATEWAY_ID) and exit: for a gateway "
    "taken out of service for good. Messages queued for it and not yet forwarded are dropped.",
)
def gateway(loglevel: str, retire: bool) -> None:
    """Bridge every terminal's MQTT telemetry to the raw Kafka topic.

    Start several, each with its own TIANYAN_GATEWAY_ID and TIANYAN_GATEWAY_WEB_PORT: they
    share one subscription. Metrics at http://127.0.0.1:PORT/metrics, health at /health.
    """
    import logging
    import logging.config
    import signal

    from streams.gateway import Gateway
    from tianyan import stack as local_stack

    logging.config.dictConfig(json_logging_config(loglevel))
    settings = _settings()
    broker = local_stack.LocalMosquitto(settings)
    try:
        password = broker.gateway_password()
    except local_stack.StackError as e:
        raise click.ClickException(str(e)) from e
    if retire:
        try:
            broker.retire_gateway()
        except ConnectionError as e:
            raise click.ClickException(str(e)) from e
        click.echo(f"gateway {settings.gateway_id}: session ended")
        return
    gw = Gateway(settings, password)
    if settings.mqtt_local:
        # Mosquitto 2.0.11 forgets shared subscriptions on a restart; the local broker's
        # start puts these back into its persistence file before it listens.
        broker.remember_shared_subscriptions(gw.client_id, gw.subscriptions)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: gw.stopping.set())
    try:
        gw.run(web_port=settings.gateway_web_port)
    except ConnectionError as e:
        raise click.ClickException(str(e)) from e


# -- bench -------------------------------------------------------------------------------------
@main.group()
def bench() -> None:
    """Benchmarks on the local stack; each prints its figures, the last line one JSON object."""


#: Every database bench's option to keep its throw-away database to look into afterwards.
_keep_database = click.option("--keep", is_flag=True, help="Keep the bench's database afterwards.")


def _echo_figures(result: dict[str, Any], width: int = 40) -> None:
    """A bench's figures, a ``name value`` line each, then all of them as the last line's
    JSON object."""
    for key, value in result.items():
        click.echo(f"{key:{width}} {value}")
    click.echo(json.dumps(result, ensure_ascii=False))


@bench.command("stream")
@click.option("--elevators", type=click.IntRange(min=10), default=12_000, show_default=True)
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=10),
    default=90.0,
    show_default=True,
    help="Simulated seconds of backlog for (a), (b), (d).",
)
@click.option(
    "--rate",
    "rate",
    type=click.FloatRange(min=1),
    default=10_000.0,
    show_default=True,
    help="Messages/s arriving in real time for the latency run (c).",
)
@click.option(
    "--latency-seconds", "latency_s", type=click.FloatRange(min=5), default=30.0, show_default=True
)
@click.option(
    "--detectors/--no-detectors",
    default=True,
    show_default=True,
    help="Also run (b) with the detectors on.",
)
def bench_stream(
    elevators: int, duration_s: float, rate: float, latency_s: float, detectors: bool
) -> None:
    """Stream processing: ceiling, one worker end to end, latency, COPY, memory."""
    from tianyan.bench import BenchConfig, run

    result = run(
        _settings(),
        BenchConfig(
            elevators=elevators,
            duration_s=duration_s,
            rate_msgs_per_s=rate,
            latency_s=latency_s,
            detectors=detectors,
        ),
    )
    _echo_figures(result)


@bench.command("city")
@click.option("--elevators", type=click.IntRange(min=10), default=40_000, show_default=True)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0.25),
    default=10.0,
    show_default=True,
    help="Simulated minutes, published at real time (0.25 at least: a smoke run).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Stream workers in the consumer group, on this machine.",
)
def bench_city(elevators: int, minutes: float, workers: int) -> None:
    """The city at real-time rate: consumer lag p99, every sample stored once, memory and
    storage per elevator, and the workers a city needs from their measured rate."""
    from tianyan.bench_city import CityBenchConfig, run

    result = run(
        _settings(), CityBenchConfig(elevators=elevators, minutes=minutes, workers=workers)
    )
    _echo_figures(result)


@bench.command("gateway")
@click.option("--terminals", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--gateways", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--loaders",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Processes the simulated terminals are spread over.",
)
@click.option("--seconds", type=click.FloatRange(min=2), default=20.0, show_default=True)
@click.option(
    "--latency-rate",
    type=click.FloatRange(min=1),
    default=1000.0,
    show_default=True,
    help="Messages/s for the latency phase (a): below what the gateways can take.",
)
@click.option("--latency-seconds", type=click.FloatRange(min=2), default=15.0, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Messages/s the terminals offer in the throughput phase (b), e.g. 11000 for the "
    "city's peak; 0: as fast as the broker acknowledges them.",
)
def bench_gateway(
    terminals: int,
    gateways: int,
    loaders: int,
    seconds: float,
    rate: float,
    latency_rate: float,
    latency_seconds: float,
) -> None:
    """MQTT ingress: terminals → Mosquitto → gateway → Kafka, msgs/s, p99, RSS, gateways needed."""
    from tianyan.bench_gateway import GatewayBenchConfig, run

    result = run(
        _settings(),
        GatewayBenchConfig(
            terminals=terminals,
            gateways=gateways,
            loaders=loaders,
            throughput_s=seconds,
            throughput_rate_msgs_per_s=rate or None,
            latency_s=latency_seconds,
            latency_rate_msgs_per_s=latency_rate,
        ),
    )
    _echo_figures(result)


@bench.command("rescue")
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=20.0,
    show_default=True,
    help="Alerts/s for the latency run (a).",
)
@click.option("--seconds", type=click.FloatRange(min=5), default=30.0, show_default=True)
@click.option(
    "--burst",
    type=click.IntRange(min=100),
    default=5000,
    show_default=True,
    help="Deliveries queued for the throughput run (b).",
)
@click.option(
    "--cut-elevators",
    type=click.IntRange(min=10),
    default=2000,
    show_default=True,
    help="Elevators that lose power in the power-cut run (c).",
)
@click.option(
    "--cut-trapped",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Of them, cars with people trapped (c).",
)
@click.option(
    "--cut-seconds",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="The power cut's alerts arrive within this time (c).",
)
def bench_rescue(
    rate: float,
    seconds: float,
    burst: int,
    cut_elevators: int,
    cut_trapped: int,
    cut_seconds: float,
) -> None:
    """Incident dispatcher: alert → signed webhook latency, deliveries per second, and a
    district power cut's burst."""
    from tianyan.bench_rescue import run

    if cut_trapped > cut_elevators:
        raise click.BadParameter("cannot exceed --cut-elevators", param_hint="--cut-trapped")
    result = run(
        _settings(),
        rate_per_s=rate,
        duration_s=seconds,
        burst=burst,
        cut_elevators=cut_elevators,
        cut_trapped=cut_trapped,
        cut_seconds=cut_seconds,
    )
    _echo_figures(result)


@bench.command("evidence")
@click.option(
    "--rows",
    type=click.IntRange(min=10_000),
    default=50_000_000,
    show_default=True,
    help="Raw samples in the table (10,000 per elevator).",
)
@click.option("--calls", type=click.IntRange(min=10), default=200, show_default=True)
@click.option(
    "--contenders",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Connections appending to the ledger during the contended run.",
)
@_keep_database
def bench_evidence(rows: int, calls: int, contenders: int, keep: bool) -> None:
    """Recording an incident against a large raw table: evidence copy, ledger append, the
    whole transaction, per call."""
    from tianyan.bench_evidence import run

    result = run(_settings(), rows=rows, calls=calls, contenders=contenders, keep=keep)
    _echo_figures(result)


@bench.command("regulators")
@click.option("--elevators", type=click.IntRange(min=10), default=40_000, show_default=True)
@click.option(
    "--incidents",
    type=click.IntRange(min=1),
    default=29_000,
    show_default=True,
    help="Incidents over the year generated.",
)
@click.option("--calls", type=click.IntRange(min=1), default=5, show_default=True)
@_keep_database
def bench_regulators(elevators: int, incidents: int, calls: int, keep: bool) -> None:
    """The regulators' figures (rescue performance, company ranking, grade history) on a
    year of a city's incidents and grades, per call."""
    from tianyan.bench_regulators import run

    result = run(_settings(), elevators=elevators, incidents=incidents, calls=calls, keep=keep)
    _echo_figures(result, width=45)


@bench.command("storage")
@click.option("--elevators", type=click.IntRange(min=1), default=200, show_default=True)
@click.option(
    "--minutes",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Simulated minutes of the busy scenario.",
)
@click.option(
    "--reads",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Elevators read per query kind (the median is printed).",
)
@_keep_database
def bench_storage(elevators: int, minutes: float, reads: int, keep: bool) -> None:
    """Raw-sample storage designs on the same simulated samples: bytes per sample, ingest
    samples/s, a panel query and an evidence read."""
    from tianyan.bench_storage import run, table

    result = run(_settings(), elevators=elevators, minutes=minutes, reads=reads, keep=keep)
    click.echo(f"{result['samples']:,} samples in {result['messages']:,} messages")
    for line in table(result):
        click.echo(line)
    click.echo(json.dumps(result, ensure_ascii=False))


@bench.command("registry")
@click.option(
    "--elevators",
    type=click.IntRange(min=1),
    default=40_000,
    show_default=True,
    help="Elevators in the synthetic registry (the city has 30,000-45,000).",
)
@_keep_database
def bench_registry(elevators: int, keep: bool) -> None:
    """Registry fusion at the city's size: a whole export, the same again, a partial export
    with conflicts, and the coverage of terminals reporting in the last 24 h."""
    from tianyan.bench_registry import run

    result = run(_settings(), elevators=elevators, keep=keep)
    _echo_figures(result)


@bench.command("backfill")
@click.option("--elevators", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--minutes",
    type=click.FloatRange(min=21),
    default=60.0,
    show_default=True,
    help="Simulated minutes; the backfill covers all but the first and last ten.",
)
@click.option(
    "--scenario",
    type=click.Choice(["demo", "default", "busy", "no_faults"]),
    default="demo",
    show_default=True,
    help="The simulator's scenario (simulator/scenarios/).",
)
@click.option("--keep", is_flag=True, help="Keep the bench's database afterwards.")
def bench_backfill(elevators: int, minutes: float, scenario: str, keep: bool) -> None:
    """Backfill over stored, packed history: the same thresholds, changed ones, and the
    same again; slices and messages per second, rows replaced, and audit verify after."""
    from tianyan.bench_backfill import as_json, run

    result = run(_settings(), elevators=elevators, minutes=minutes, scenario=scenario, keep=keep)
    for key, value in result.items():
        click.echo(f"{key:40} {value}")
    click.echo(as_json(result))


@bench.command("online")
@click.option(
    "--scenario",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("tests/scenarios/degradation.toml"),
    show_default=True,
)
@click.option("--elevators", type=int, default=20, show_default=True)
@click.option(
    "--duration", "duration_s", type=float, default=None, help="Simulated s (the scenario's)."
)
@click.option("--seed", type=int, default=None, help="Overrides the scenario's seed.")
def bench_online(
    scenario: Path, elevators: int, duration_s: float | None, seed: int | None
) -> None:
    """Online learning against the EWMA charts on slow degradation (who alerts first after
    onset; online alerts from healthy cars), and the detection loop's cost per message
    without and with the online detectors. No stack needed: the worker's detection loop
    runs in-process. A table, then one JSON line."""
    import json

    from evaluation.online import measure

    report = measure(scenario, seed=seed, elevators=elevators, duration_s=duration_s)
    click.echo(report.table())
    click.echo(json.dumps(report.to_dict()))


@bench.command("nab")
@click.option(
    "--data",
    "data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="A NAB checkout (data/, labels/; results/ for --nab-results).",
)
@click.option(
    "--detector",
    "detector_names",
    multiple=True,
    help="A `tianyan score` detector (repeatable; default: every one).",
)
@click.option(
    "--nab-results",
    "nab_results",
    multiple=True,
    metavar="NAME",
    help="Also score NAB's stored outputs of its detector NAME, e.g. windowedGaussian "
    "(repeatable): checks the scorer against NAB's published figures.",
)
def bench_nab(data: Path, detector_names: tuple[str, ...], nab_results: tuple[str, ...]) -> None:
    """The Numenta Anomaly Benchmark: every detector of `tianyan score`, scored by NAB's rules
    (windows, cost profiles, threshold optimiser, null/perfect normalisation)."""
    from detectors.catalog import SERIES_SCORERS
    from evaluation.nab import NabError
    from tianyan.bench_nab import run

    names = list(detector_names) or sorted(SERIES_SCORERS)
    unknown = [n for n in names if n not in SERIES_SCORERS]
    if unknown:
        raise click.ClickException(
            f"--detector {', '.join(unknown)}: unknown (known: {', '.join(sorted(SERIES_SCORERS))})"
        )
    try:
        result = run(data, names, nab_results, say=lambda m: click.echo(m, err=True))
    except NabError as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps(result))


# -- detectors: scoring series, evaluating against labels -------------------------------------
def _register_detector_commands() -> None:
    from tianyan.commands_eval import evaluate_command, score_command

    main.add_command(score_command, "score")
    main.add_command(evaluate_command, "evaluate")


_register_detector_commands()


# -- demo ---------------------------------------------------------------------------------------
@main.group(invoke_without_command=True)
@click.option("--elevators", type=click.IntRange(min=10), default=150, show_default=True)
@click.option(
    "--minutes",
    type=click.FloatRange(min=2),
    default=15.0,
    show_default=True,
    help="Simulated minutes.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the stream, the received webhooks and the report go (default var/demo).",
)
@click.option(
    "--database",
    default="tianyan_demo",
    show_default=True,
    help="The demo's own database, dropped and created again on every run.",
)
@click.option(
    "--kafka",
    "straight_to_kafka",
    is_flag=True,
    help="Publish the simulated stream straight to Kafka, as fast as possible, instead of"
    " through the terminals' MQTT broker and the gateway at 10x real time.",
)
@click.pass_context
def demo(
    ctx: click.Context,
    elevators: int,
    minutes: float,
    out: Path | None,
    database: str,
    straight_to_kafka: bool,
) -> None:
    """The whole pipeline in a few minutes: simulated city → terminals → MQTT → gateway →
    Kafka → workers → detectors → incidents → signed webhooks (and reassurance played in
    the trapped cars) → risk grades → boards checked → report; then a summary.

    Runs in a database (--database, recreated) and topics of its own.
    """
    if ctx.invoked_subcommand is not None:
        return
    from tianyan import demo_pipeline

    settings = _settings()
    try:
        summary = demo_pipeline.run(
            settings,
            elevators=elevators,
            minutes=minutes,
            out=out or settings.var_dir / "demo",
            database=database,
            mqtt=not straight_to_kafka,
            say=lambda m: click.echo(m, err=True),
        )
    except demo_pipeline.DemoError as e:
        raise click.ClickException(str(e)) from e
    click.echo(demo_pipeline.render(summary))
    click.echo(demo_pipeline.as_json(summary))
    problems = demo_pipeline.failures(summary)
    if problems:
        raise click.ClickException("the demo finished with failures: " + "; ".join(problems))


@demo.command("round-trip")
def demo_round_trip() -> None:
    """A quick round trip through the real stack: Kafka → validation → TimescaleDB."""
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


# -- incidents, the rescue webhook and the ledger (tianyan/commands_rescue.py) -------------------
from tianyan.commands_rescue import (  # noqa: E402
    audit,
    dispatcher,
    incidents,
    rescue_receiver,
)

main.add_command(dispatcher)
main.add_command(incidents)
main.add_command(audit)
main.add_command(rescue_receiver)

from tianyan.commands_risk import grade_command, report_command  # noqa: E402

main.add_command(grade_command)
main.add_command(report_command)

from tianyan.commands_dashboards import dashboards  # noqa: E402

main.add_command(dashboards)

from tianyan.commands_backfill import backfill_command  # noqa: E402

main.add_command(backfill_command)
