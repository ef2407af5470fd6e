"""``tianyan demo``: the whole pipeline on the local stack, in a few minutes.

A slice of the city is simulated with faults → two stream workers (validation, windows,
trips, detectors) → the incident dispatcher (incidents, signed webhooks to the reference
receiver, the ledger) → risk grades → every Grafana board's SQL checked → the regulators'
report written. It ends with a summary a person can read, and one JSON line.

Everything runs in a database and topics of the demo's own (``tianyan_demo``, recreated on
every run; topics ``demo.*.<tag>``), so the demo never mixes with other data. Its files go
to ``var/demo/``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from foundation.settings import Settings
from tianyan.processes import ServiceGroup, WaitTimeout, free_port, listening, services
from tianyan.processes import wait_for_progress as _wait_for_progress

TIANYAN = str(Path(sys.executable).with_name("tianyan"))
SCENARIO = Path(__file__).resolve().parent.parent / "simulator" / "scenarios" / "demo.toml"
REGISTRY_SEED = 20210101
#: A stage fails when nothing it watches has moved for this long (its waits follow
#: progress: a slow machine only makes the demo longer).
STALL_S = 120.0


class DemoError(RuntimeError):
    """A stage of the demo did not complete; says which and where its log is."""


@dataclass
class DemoSummary:
    elevators: int
    simulated_s: float
    messages: int = 0
    samples: int = 0
    quarantined: int = 0
    alerts: int = 0
    alerts_unapplied: int = 0
    incidents_by_type: dict[str, dict[str, Any]] = field(default_factory=dict)
    recall_precision: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks: dict[str, Any] = field(default_factory=dict)
    ledger: str = ""
    grades_by_district: dict[str, dict[str, int]] = field(default_factory=dict)
    boards_checked: int = 0
    boards_failed: list[str] = field(default_factory=list)
    report: str = ""
    boards: str = ""
    database: str = ""
    seconds: float = 0.0


def _wait(
    progress: Callable[[], Any],
    done: Callable[[Any], bool],
    what: str,
    group: ServiceGroup,
    log: Path,
) -> Any:
    """Wait while ``progress()`` moves (or the services' log grows) until ``done``; fail,
    naming the stage and where it stood, when nothing moved for :data:`STALL_S` or a service
    exited."""

    def moving() -> tuple[Any, int]:
        return progress(), log.stat().st_size if log.exists() else 0

    try:
        reached = _wait_for_progress(
            moving,
            lambda p: done(p[0]),
            stall_s=STALL_S,
            what=what,
            alive=group.exited,
        )
    except WaitTimeout as e:
        raise DemoError(f"{e}; see {log}") from None
    return reached[0]  # type: ignore[index]


def _scalar(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def run(
    settings: Settings,
    *,
    elevators: int,
    minutes: float,
    out: Path,
    database: str = "tianyan_demo",
    say: Callable[[str], None] = print,
) -> DemoSummary:
    import simulator
    from dashboards.boards import all_boards
    from dashboards.check import check
    from dashboards.macros import TimeRange
    from dashboards.report import write_report
    from detectors.alerts import Alert
    from evaluation.runs import read_labels
    from evaluation.scoring import score
    from registry.generate import generate
    from registry.store import upsert
    from replay import from_jsonl, replay
    from rescue.delivery import new_secret
    from rescue.ledger import verify
    from sql.migrate import migrate
    from streams.grading import grade_fleet
    from streams.producer import RawPublisher

    wall0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    for old in ("received.jsonl", "services.log"):
        (out / old).unlink(missing_ok=True)
    summary = DemoSummary(elevators=elevators, simulated_s=minutes * 60)

    # -- a database and topics of the demo's own -------------------------------------------
    superuser = f"postgresql://postgres@127.0.0.1:{settings.pg_port}"
    admin = f"postgresql://tianyan@127.0.0.1:{settings.pg_port}/{database}"
    writer = admin.replace("postgresql://tianyan@", "postgresql://tianyan_writer@")
    with psycopg.connect(superuser + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}" OWNER tianyan')
    with psycopg.connect(f"{superuser}/{database}", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
    migrate(admin)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=minutes + 5)
    fleet = generate(REGISTRY_SEED, elevators, start.date())
    upsert(admin, fleet)
    summary.database = admin
    say(f"registry: {elevators} elevators of a synthetic Lianyungang in {database}")

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    tag = uuid.uuid4().hex[:8]
    topics = {
        k: f"demo.{k}.{tag}" for k in ("raw", "quarantine", "alerts", "alerts-dead", "commands")
    }
    kafka = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    kafka.create_topics(
        [
            NewTopic(topics["raw"], 4, 1),
            NewTopic(topics["quarantine"], 1, 1),
            NewTopic(topics["alerts"], 4, 1),
            NewTopic(topics["alerts-dead"], 1, 1),
            NewTopic(topics["commands"], 1, 1),
        ]
    )

    # -- simulate ----------------------------------------------------------------------------
    stream = out / "city.jsonl"
    sim = simulator.simulate(
        simulator.load_scenario(SCENARIO),
        fleet,
        start=start,
        duration_s=minutes * 60,
        output=simulator.FileOutput(stream),
        progress=False,
    )
    labels = read_labels(stream)
    say(
        f"simulated {minutes:g} min of {elevators} elevators with faults: "
        f"{sim.messages} messages, {len(labels)} injected faults → {stream}"
    )

    # -- the services -----------------------------------------------------------------------
    receiver_port, dispatcher_port = free_port(), free_port()
    journal, log_path = out / "received.jsonl", out / "services.log"
    env = {
        **os.environ,
        "TIANYAN_DATABASE_URL": writer,
        "TIANYAN_ADMIN_DATABASE_URL": admin,
        "TIANYAN_RAW_TOPIC": topics["raw"],
        "TIANYAN_QUARANTINE_TOPIC": topics["quarantine"],
        "TIANYAN_ALERTS_TOPIC": topics["alerts"],
        "TIANYAN_ALERTS_DEAD_LETTER_TOPIC": topics["alerts-dead"],
        "TIANYAN_DEVICE_COMMANDS_TOPIC": topics["commands"],
        "TIANYAN_RAW_PARTITIONS": "4",
        "TIANYAN_WORKER_ID": f"demo-worker-{tag}",
        "TIANYAN_DISPATCHER_ID": f"demo-dispatcher-{tag}",
        "TIANYAN_DISPATCHER_WEB_PORT": str(dispatcher_port),
        "TIANYAN_RESCUE_WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/96333",
        "TIANYAN_RESCUE_WEBHOOK_SECRET": new_secret(),
        "TIANYAN_CHECKPOINT_INTERVAL_MS": "1000",
        "TIANYAN_GRADING_INTERVAL_S": "0",  # the demo grades once, at the end
        "TIANYAN_RECEIVER_LOGLEVEL": "WARNING",
    }
    try:
        with services() as group:

            def spawn(name: str, *args: str, **extra: str) -> None:
                group.start(name, [TIANYAN, *args], env={**env, **extra}, log=log_path)

            spawn(
                "receiver",
                "rescue-receiver",
                "--port",
                str(receiver_port),
                "--journal",
                str(journal),
                "--acknowledge",
                f"http://127.0.0.1:{dispatcher_port}",
            )
            spawn("dispatcher", "dispatcher", "--loglevel", "warn")
            for i in range(2):
                spawn(
                    f"worker {i + 1}",
                    "worker",
                    "--loglevel",
                    "warn",
                    TIANYAN_WORKER_WEB_PORT=str(free_port()),
                )
            _wait(
                lambda: (listening(receiver_port), listening(dispatcher_port)),
                all,
                "starting the receiver and the dispatcher",
                group,
                log_path,
            )
            say("started: 2 stream workers, the incident dispatcher, the reference rescue receiver")

            with RawPublisher(settings.kafka_bootstrap, topics["raw"]) as pub:
                published = replay(from_jsonl(stream), pub, progress=False)
            say(f"published {published.messages} messages to {topics['raw']}; the workers fold …")
            expected = _expected_samples(stream)
            _wait(
                lambda: _scalar(writer, "SELECT count(*) FROM telemetry_sample"),
                lambda stored: stored >= expected,
                f"the workers storing {expected} samples (stored so far)",
                group,
                log_path,
            )
            time.sleep(3.0)  # the last alerts go out with the last batch
            say("every sample stored; the dispatcher applies the alerts and delivers …")
            _wait(
                lambda: _rescue_progress(admin),
                lambda p: p["alerts_applied"] >= p["alerts"] and p["deliveries_pending"] == 0,
                "the dispatcher applying every alert and delivering every change",
                group,
                log_path,
            )
            time.sleep(2.0)  # acknowledgements from the receiver, and their webhooks
            _wait(
                lambda: _rescue_progress(admin),
                lambda p: p["deliveries_pending"] == 0,
                "delivering the acknowledgements' webhooks",
                group,
                log_path,
            )
    finally:
        kafka.delete_topics(list(topics.values()))
        kafka.close()

    # -- what the pipeline did ----------------------------------------------------------------
    with psycopg.connect(admin) as conn:
        summary.samples = _scalar(admin, "SELECT count(*) FROM telemetry_sample")
        summary.messages = published.messages
        summary.quarantined = sim.malformed
        summary.alerts = _scalar(admin, "SELECT count(*) FROM alert WHERE state = 'raised'")
        for fault_type, n, trapped, delay_p50, delay_max in conn.execute(
            "SELECT fault_type, count(*), sum(coalesce(estimated_trapped, 0)),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM opened_at -"
            " (details->>'condition_since')::timestamptz)),"
            " max(extract(epoch FROM opened_at - (details->>'condition_since')::timestamptz))"
            " FROM incident GROUP BY fault_type ORDER BY count(*) DESC"
        ):
            summary.incidents_by_type[fault_type] = {
                "incidents": n,
                "people_trapped": int(trapped),
                "detection_delay_s_p50": round(float(delay_p50), 1),
                "detection_delay_s_max": round(float(delay_max), 1),
            }
        rows = conn.execute(
            "SELECT alert_key, elevator_id, alert_type, gb_code, severity,"
            " (extract(epoch FROM condition_since) * 1000)::bigint,"
            " (extract(epoch FROM raised_at) * 1000)::bigint, evidence, probable_cause,"
            " suggested_handling, estimated_trapped, state FROM alert"
        ).fetchall()
        times: dict[str, list[int]] = defaultdict(list)
        for e, t in conn.execute(
            "SELECT elevator_id, (extract(epoch FROM time) * 1000)::bigint FROM telemetry_sample"
            " ORDER BY elevator_id, time"
        ):
            times[e].append(t)
        deliveries = dict(
            conn.execute("SELECT status, count(*) FROM webhook_delivery GROUP BY status").fetchall()
        )
        acknowledged = _scalar(
            admin, "SELECT count(*) FROM incident WHERE acknowledged_at IS NOT NULL"
        )
    alerts = [
        Alert(
            alert_key=r[0],
            elevator_id=r[1],
            alert_type=r[2],
            gb_code=r[3],
            severity=r[4],
            condition_since_ms=r[5],
            raised_at_ms=r[6],
            evidence=r[7],
            probable_cause=r[8] or "",
            suggested_handling=r[9] or "",
            estimated_trapped=r[10],
            state=r[11],
        )
        for r in rows
    ]
    end_ms = max(t[-1] for t in times.values())
    evaluation = score(
        labels,
        alerts,
        end_ms=end_ms,
        sample_times={e: np.asarray(t) for e, t in times.items()},
        elevators=len(times),
        duration_s=minutes * 60,
    )
    for fault, s in sorted(evaluation.faults.items()):
        if s.labels:
            summary.recall_precision[fault] = {
                "injected": s.labels,
                "detected": s.detected,
                "recall": round(s.recall, 3),
                "precision": round(s.precision, 3) if s.alerts else None,
                "delay_s_p50": round(float(np.median(s.delays_ms)) / 1000, 1)
                if s.delays_ms
                else None,
            }
    received = [json.loads(x) for x in journal.read_text().splitlines()] if journal.exists() else []
    ids = [r["webhook_id"] for r in received]
    summary.alerts_unapplied = _scalar(
        admin,
        "SELECT count(*) FROM alert a WHERE NOT EXISTS (SELECT 1 FROM incident_alert i"
        " WHERE i.alert_key = a.alert_key AND i.state = a.state)",
    )
    summary.webhooks = {
        "delivered": deliveries.get("delivered", 0),
        "pending": deliveries.get("pending", 0),
        "dead": deliveries.get("dead", 0),
        "received_verified": len(ids),
        "received_unique": len(set(ids)),
        "incidents_acknowledged_by_receiver": acknowledged,
    }
    ledger = verify(admin)
    summary.ledger = (
        f"verified: {ledger.entries} entries, head {ledger.head_hash[:16]}…"
        if ledger.ok
        else "FAILED: " + "; ".join(ledger.problems)
    )

    # -- grades, boards, report ------------------------------------------------------------
    end = start + dt.timedelta(minutes=minutes)
    grading = grade_fleet(writer, end)
    with psycopg.connect(admin) as conn:
        for district, grade, n in conn.execute(
            "SELECT district, grade, count(*) FROM current_risk_grade GROUP BY 1, 2"
        ):
            summary.grades_by_district.setdefault(district, {})[grade] = n
    results = check(all_boards(), admin, TimeRange(start, end))
    summary.boards_checked = len({r.board for r in results})
    summary.boards_failed = [r.describe() for r in results if not r.ok]
    report = write_report(admin.replace("tianyan@", "tianyan_regulator@"), out / "report", end)
    summary.report = str(report.html)
    summary.boards = str(Path(__file__).resolve().parent.parent / "dashboards" / "json")
    summary.seconds = round(time.monotonic() - wall0, 1)
    say(f"graded {grading.elevators} elevators; checked {len(results)} panels")
    return summary


def _rescue_progress(url: str) -> dict[str, int]:
    """Where the rescue path stands: alerts stored and applied, deliveries by status."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM alert), (SELECT count(*) FROM incident_alert),"
            " count(*) FILTER (WHERE status = 'pending'),"
            " count(*) FILTER (WHERE status = 'delivered'),"
            " count(*) FILTER (WHERE status = 'dead') FROM webhook_delivery"
        ).fetchone()
    assert row is not None
    keys = ("alerts", "alerts_applied", "deliveries_pending", "delivered", "dead")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def _expected_samples(path: Path) -> int:
    from foundation import contract

    seen: set[tuple[str, int]] = set()
    with path.open("rb") as f:
        for line in f:
            try:
                m = contract.decode(line.rstrip(b"\n"))
            except contract.InvalidMessage:
                continue
            seen.update((m.elevator_id, t) for t in m.samples.t_ms)
    return len(seen)


def failures(summary: DemoSummary) -> list[str]:
    """What makes the demo fail (exit 1): anything the rescue platform or a board would miss."""
    problems = []
    if summary.alerts_unapplied:
        problems.append(f"{summary.alerts_unapplied} alerts were never applied to an incident")
    for status in ("dead", "pending"):
        if summary.webhooks.get(status):
            problems.append(f"{summary.webhooks[status]} webhook deliveries are {status}")
    if not summary.ledger.startswith("verified"):
        problems.append(f"the ledger did not verify: {summary.ledger}")
    if summary.boards_failed:
        problems.append(f"{len(summary.boards_failed)} board panels failed")
    return problems


def render(summary: DemoSummary) -> str:
    """The summary a person reads."""
    lines = [
        "",
        "== tianyan demo: the whole pipeline ==",
        f"{summary.elevators} elevators × {summary.simulated_s / 60:g} min simulated;"
        f" {summary.messages} messages, {summary.samples} samples stored;"
        f" {summary.alerts} alerts raised.  ({summary.seconds} s)",
        "",
        "incidents by type (detection delay = condition began → incident opened):",
    ]
    for t, v in summary.incidents_by_type.items():
        trapped = f", {v['people_trapped']} people trapped" if v["people_trapped"] else ""
        lines.append(
            f"  {t:28} {v['incidents']:4}{trapped}; delay p50 {v['detection_delay_s_p50']} s,"
            f" max {v['detection_delay_s_max']} s"
        )
    lines += ["", "against the injected faults:"]
    lines.append(f"  {'fault':28} {'injected':>8} {'detected':>8} {'recall':>7} {'precision':>9}")
    for t, v in summary.recall_precision.items():
        p = "—" if v["precision"] is None else f"{v['precision']:.3f}"
        lines.append(f"  {t:28} {v['injected']:8} {v['detected']:8} {v['recall']:7.3f} {p:>9}")
    w = summary.webhooks
    lines += [
        "",
        f"rescue webhooks: {w['delivered']} delivered, {w['pending']} pending, {w['dead']} dead;"
        f" the receiver verified {w['received_verified']} signatures"
        f" ({w['received_unique']} unique ids) and acknowledged"
        f" {w['incidents_acknowledged_by_receiver']} incidents",
        f"ledger: {summary.ledger}",
        "",
        f"risk grades by district:  {'':18}{'red':>4} {'orng':>4} {'yell':>4} {'blue':>4}",
    ]
    for district, g in sorted(summary.grades_by_district.items()):
        lines.append(
            f"  {district:18} {g.get('red', 0):4} {g.get('orange', 0):4} {g.get('yellow', 0):4}"
            f" {g.get('blue', 0):4}"
        )
    failed = summary.boards_failed
    lines += [
        "",
        f"Grafana boards: {summary.boards_checked} boards' SQL checked against this run"
        + (f"; {len(failed)} panels FAILED" if failed else ", every panel passed"),
        *[f"  {f}" for f in failed],
        f"  board JSON and provisioning: {summary.boards} (publish: tianyan dashboards publish)",
        f"report: {summary.report}",
        f"data: {summary.database}",
    ]
    return "\n".join(lines)


def as_json(summary: DemoSummary) -> str:
    return json.dumps(summary.__dict__, ensure_ascii=False, default=str)
