"""``tianyan demo``: the whole pipeline on the local stack, in a few minutes.

A slice of the city is simulated with faults → every elevator's terminal publishes its
messages through the MQTT broker, paced at :data:`MQTT_SPEED` × real time, with its own
credential → the gateway → Kafka (``--kafka``: straight to Kafka, as fast as possible) →
two stream workers (validation, windows, trips, detectors) → the incident dispatcher
(incidents, signed webhooks to the reference receiver, the ledger; a trapped car's terminal
is told to play the reassurance message and answers) → risk grades → every Grafana board's
SQL checked → the regulators' report written. It ends with a summary a person can read,
and one JSON line.

Everything runs in a database and topics of the demo's own (``tianyan_demo``, recreated on
every run; topics ``demo.*.<tag>``), so the demo never mixes with other data. Its files go
to ``var/demo/``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from foundation.settings import Settings
from tianyan.harness import pipeline
from tianyan.processes import WaitTimeout, free_port

SCENARIO = Path(__file__).resolve().parent.parent / "simulator" / "scenarios" / "demo.toml"
REGISTRY_SEED = 20210101
#: The reference receiver plays the rescuers: their travel time to a trapping, median and
#: 90th percentile in minutes (a city's maintenance crews; the plan's target is 30 min).
RESCUER_TRAVEL_MIN = (12.0, 28.0)
#: Through MQTT the terminals send as real ones do, paced by their own sample times, this
#: many times faster than real time (a 15-minute demo publishes for 90 s).
MQTT_SPEED = 10.0


class DemoError(RuntimeError):
    """A stage of the demo did not complete; says which and where its log is."""


@dataclass
class DemoSummary:
    elevators: int
    simulated_s: float
    #: "mqtt" (terminal → broker → gateway → Kafka) or "kafka" (straight to Kafka).
    path: str = "mqtt"
    messages: int = 0
    #: Records no terminal could send (a malformed one whose elevator id cannot be read).
    unsendable: int = 0
    #: Trappings' reassurance commands and what the terminals answered (MQTT only).
    reassurance: dict[str, int] = field(default_factory=dict)
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
    previews: str = ""
    database: str = ""
    seconds: float = 0.0


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
    mqtt: bool = True,
    say: Callable[[str], None] = print,
) -> DemoSummary:
    import simulator
    from dashboards.boards import all_boards
    from dashboards.macros import TimeRange
    from dashboards.preview import preview
    from dashboards.report import write_report
    from detectors.alerts import Alert
    from evaluation.runs import read_labels
    from evaluation.scoring import score
    from registry.generate import generate
    from registry.store import upsert
    from replay import inspect_jsonl
    from rescue.delivery import new_secret
    from rescue.ledger import verify
    from sql.roles import create_sample_scoped_roles
    from streams.grading import grade_fleet

    wall0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    for old in ("received.jsonl", *(p.name for p in out.glob("*.log"))):
        (out / old).unlink(missing_ok=True)
    summary = DemoSummary(
        elevators=elevators, simulated_s=minutes * 60, path="mqtt" if mqtt else "kafka"
    )
    if mqtt and not settings.mqtt_local:
        raise DemoError(
            "the demo's terminals get their credentials from the local MQTT broker, and"
            " TIANYAN_MQTT_LOCAL is off: run it with --kafka"
        )
    terminals = None

    # -- a database and topics of the demo's own, and its services ---------------------------
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=minutes + 5)
    receiver_port = free_port()
    journal = out / "received.jsonl"
    try:
        with pipeline(
            settings,
            database,
            out,
            keep_database=True,  # for the person to look at
            rescue_webhook_urls=(f"http://127.0.0.1:{receiver_port}/96333",),
            rescue_webhook_secret=new_secret(),
            rescue_action_secret=new_secret(),  # the platform's own, for its acknowledgements
            checkpoint_interval_s=1.0,
            grading_interval_s=0,  # the demo grades once, at the end
        ) as run:
            admin, writer = run.admin_url, run.writer_url
            fleet = generate(REGISTRY_SEED, elevators, start.date())
            upsert(admin, fleet)
            summary.database = admin
            say(f"registry: {elevators} elevators of a synthetic Lianyungang in {database}")

            # -- simulate --------------------------------------------------------------------
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

            # -- the services ----------------------------------------------------------------
            run.start_receiver(
                receiver_port,
                journal,
                "--acknowledge",
                f"http://127.0.0.1:{run.settings.rescue_api_port}",
                "--arrive-minutes",  # the rescuers: median and p90 travel time
                *(str(m) for m in RESCUER_TRAVEL_MIN),
            )
            run.start_dispatcher()
            for i in range(2):
                run.start_worker(f"worker {i + 1}")
            say("started: 2 stream workers, the incident dispatcher, the reference rescue receiver")

            if mqtt:
                run.start_gateway()
                terminals = run.connect_terminals([e.registration_code for e in fleet])
                say(
                    f"started the MQTT gateway; {len(terminals.terminals)} terminals connected,"
                    f" each with its own credential; publishing at {MQTT_SPEED:g}× real time …"
                )
                published = run.publish(stream, speed=MQTT_SPEED, terminals=terminals)
                summary.unsendable = terminals.skipped
                say(
                    f"the terminals published {published.messages - terminals.skipped}"
                    f" messages through the broker ({terminals.skipped} with no elevator id"
                    " to send them from); the gateway bridges them to"
                    f" {run.settings.raw_topic}; the workers fold …"
                )
            else:
                published = run.publish(stream)
                say(
                    f"published {published.messages} messages to {run.settings.raw_topic};"
                    " the workers fold …"
                )
            expected = len(inspect_jsonl(stream).samples)
            run.wait(
                lambda: run.scalar("SELECT count(*) FROM telemetry_sample"),
                lambda stored: stored >= expected,
                f"the workers storing {expected} samples (stored so far)",
            )
            time.sleep(3.0)  # the last alerts go out with the last batch
            say("every sample stored; the dispatcher applies the alerts and delivers …")
            run.wait(
                lambda: _rescue_progress(admin),
                lambda p: p["alerts_applied"] >= p["alerts"] and p["deliveries_pending"] == 0,
                "the dispatcher applying every alert and delivering every change",
            )
            run.wait(
                lambda: {**_rescue_progress(admin), **_receiver_stats(receiver_port)},
                lambda p: (
                    p["deliveries_pending"] == 0
                    and p["in_flight"] == 0
                    and p["received"] >= p["delivered"]
                ),
                "the receiver's acknowledgements and arrivals, and their webhooks",
            )
            if mqtt:
                run.wait(
                    lambda: _reassurance(admin),
                    lambda r: r["answered"] + r["unanswered"] >= r["commands"],
                    "every trapped car's terminal answering its reassurance command",
                )
                summary.reassurance = _reassurance(admin)
    except WaitTimeout as e:
        raise DemoError(f"{e}; the services' logs are in {out}") from None
    finally:
        if terminals is not None:
            terminals.disconnect()

    # -- what the pipeline did ----------------------------------------------------------------
    with psycopg.connect(admin) as conn:
        summary.samples = _scalar(admin, "SELECT count(*) FROM telemetry_sample")
        summary.messages = published.messages
        summary.quarantined = sim.malformed
        summary.alerts = _scalar(admin, "SELECT count(*) FROM alert WHERE state = 'raised'")
        for fault_type, route, n, trapped, delay_p50, delay_max in conn.execute(
            # the route (rescue/routing.py): a type's is the same for all its incidents
            "SELECT fault_type, max(coalesce(details->>'route', 'rescue')), count(*),"
            " sum(coalesce(estimated_trapped, 0)),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM opened_at -"
            " (details->>'condition_since')::timestamptz)),"
            " max(extract(epoch FROM opened_at - (details->>'condition_since')::timestamptz))"
            " FROM incident GROUP BY fault_type ORDER BY count(*) DESC"
        ):
            summary.incidents_by_type[fault_type] = {
                "route": route,
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
        # an incident the detector closed before the receiver's acknowledgement reached the
        # dispatcher is refused (409, the state forbids it): counted, so the figures add up
        acknowledged, arrived, arrival_p50_s, closed_first = conn.execute(
            "SELECT count(*) FILTER (WHERE acknowledged_at IS NOT NULL),"
            " count(*) FILTER (WHERE arrived_at IS NOT NULL),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY arrival_s),"
            " count(*) FILTER (WHERE acknowledged_at IS NULL AND closed_by = 'detector'"
            " AND coalesce(details->>'route', 'rescue') = 'rescue')"
            " FROM incident"
        ).fetchone() or (0, 0, None, 0)
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
        " WHERE i.alert_id = a.alert_id)",
    )
    summary.webhooks = {
        "delivered": deliveries.get("delivered", 0),
        "pending": deliveries.get("pending", 0),
        "dead": deliveries.get("dead", 0),
        "received_verified": len(ids),
        "received_unique": len(set(ids)),
        "incidents_acknowledged_by_receiver": acknowledged,
        "incidents_arrived_by_receiver": arrived,
        "incidents_closed_by_detector_before_acknowledgement": closed_first,
        "arrival_s_p50": None if arrival_p50_s is None else round(float(arrival_p50_s)),
        # the demo sets only the rescue platform's endpoint: the other incidents are
        # recorded (boards, report) and delivered nowhere
        "incidents_to_rescue_platform": sum(
            v["incidents"] for v in summary.incidents_by_type.values() if v["route"] == "rescue"
        ),
        "incidents_recorded_only": sum(
            v["incidents"] for v in summary.incidents_by_type.values() if v["route"] != "rescue"
        ),
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
    # the use-safety and maintenance boards read as one unit's and one company's own role
    create_sample_scoped_roles(admin)
    # Every board's panels run as its role (as `dashboards check` does) and drawn.
    previews = preview(all_boards(), admin, TimeRange(start, end), out / "boards")
    results = [r for p in previews for r in p.results]
    summary.previews = str(out / "boards" / "index.html")
    summary.boards_checked = len({r.board for r in results})
    summary.boards_failed = [r.describe() for r in results if not r.ok]
    report = write_report(admin.replace("tianyan@", "tianyan_regulator@"), out / "report", end)
    summary.report = str(report.html)
    summary.boards = str(Path(__file__).resolve().parent.parent / "dashboards" / "json")
    summary.seconds = round(time.monotonic() - wall0, 1)
    say(f"graded {grading.elevators} elevators; checked {len(results)} panels")
    return summary


def _receiver_stats(port: int) -> dict[str, int]:
    """The reference receiver's counts: received, acknowledged, arrived, in flight."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
        return {k: int(v) for k, v in json.loads(r.read()).items()}


def _reassurance(url: str) -> dict[str, int]:
    """Trappings told to play the reassurance message, and their terminals' answers."""
    from detectors.alerts import TRAPPED_TYPES

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT i.incident_id),"
            " count(DISTINCT e.incident_id) FILTER (WHERE e.event_type = 'reassurance.played'),"
            " count(DISTINCT e.incident_id) FILTER (WHERE e.event_type = 'reassurance.failed'),"
            " count(DISTINCT e.incident_id)"
            " FILTER (WHERE e.event_type = 'reassurance.unanswered')"
            " FROM incident i LEFT JOIN incident_event e USING (incident_id)"
            " WHERE i.fault_type = ANY(%s)",
            (list(TRAPPED_TYPES),),
        ).fetchone()
    assert row is not None
    commands, played, failed, unanswered = (int(v) for v in row)
    return {
        "commands": commands,
        "played": played,
        "failed": failed,
        "answered": played + failed,
        "unanswered": unanswered,
    }


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
        (
            "path: terminal → MQTT broker (a credential each) → gateway → Kafka → workers;"
            f" {summary.unsendable} records had no terminal to send them"
            if summary.path == "mqtt"
            else "path: straight to Kafka (--kafka) → workers"
        ),
        "",
        "incidents by type (detection delay = condition began → incident opened;"
        " '→ rescue platform': routed to it, the rest recorded for the boards and the"
        " maintenance endpoint):",
    ]
    for t, v in summary.incidents_by_type.items():
        trapped = f", {v['people_trapped']} people trapped" if v["people_trapped"] else ""
        lines.append(
            f"  {t:28} {v['incidents']:4}{trapped}; delay p50 {v['detection_delay_s_p50']} s,"
            f" max {v['detection_delay_s_max']} s"
            + ("  → rescue platform" if v["route"] == "rescue" else "")
        )
    lines += ["", "against the injected faults:"]
    lines.append(f"  {'fault':28} {'injected':>8} {'detected':>8} {'recall':>7} {'precision':>9}")
    for t, v in summary.recall_precision.items():
        p = "—" if v["precision"] is None else f"{v['precision']:.3f}"
        lines.append(f"  {t:28} {v['injected']:8} {v['detected']:8} {v['recall']:7.3f} {p:>9}")
    w = summary.webhooks
    lines += [
        "",
        f"rescue webhooks for the {w['incidents_to_rescue_platform']} incidents routed to the"
        f" rescue platform ({w['incidents_recorded_only']} others recorded only):"
        f" {w['delivered']} delivered, {w['pending']} pending, {w['dead']} dead;"
        f" the receiver verified {w['received_verified']} signatures"
        f" ({w['received_unique']} unique ids) and acknowledged"
        f" {w['incidents_acknowledged_by_receiver']} incidents"
        f" ({w['incidents_closed_by_detector_before_acknowledgement']} closed by the detector"
        " before its acknowledgement arrived); its rescuers arrived at"
        f" {w['incidents_arrived_by_receiver']} (median {w['arrival_s_p50']} s after opening)",
        f"ledger: {summary.ledger}",
        *(
            [
                f"reassurance: {r['commands']} trapped cars' terminals told to play it;"
                f" {r['played']} played, {r['failed']} failed, {r['unanswered']} unanswered"
            ]
            if (r := summary.reassurance)
            else []
        ),
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
        f"  every board drawn from the demo's data: {summary.previews}",
        f"report: {summary.report}",
        f"data: {summary.database}",
    ]
    return "\n".join(lines)


def as_json(summary: DemoSummary) -> str:
    return json.dumps(summary.__dict__, ensure_ascii=False, default=str)
