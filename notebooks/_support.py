"""What the analyst notebooks share: where their inputs come from, database reads as data
frames, and their figures.

The decisions stay in the packages — :mod:`evaluation.runs` and :mod:`evaluation.scoring`
score detection, :mod:`detectors.rules` raises trappings, :mod:`replay` rebuilds stored
messages, :mod:`streams.grading` grades risk; this module only reads, arranges and draws.
Every database read goes through a read-only transaction.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import psycopg

if TYPE_CHECKING:
    from detectors.alerts import Alert
    from detectors.thresholds import Thresholds
    from evaluation.scoring import Evaluation
    from replay import ReplayItem

#: The repository the notebooks live in (scenario files are found from here).
REPO = Path(__file__).resolve().parent.parent

# -- inputs ----------------------------------------------------------------------------------


def env_text(name: str, default: str | None = None) -> str | None:
    """The environment variable ``name``, or ``default`` when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_number(name: str, default: float, kind: type = float) -> Any:
    """The environment variable ``name`` as a number (``kind``), or ``default``."""
    text = env_text(name)
    if text is None:
        return default
    try:
        return kind(text)
    except ValueError:
        kind_name = "an integer" if kind is int else "a number"
        raise ValueError(f"{name}={text!r} is not {kind_name}") from None


def database_url() -> str:
    """``TIANYAN_DATABASE_URL``, else the local stack's read-only ``tianyan_analyst`` role on
    the database ``tianyan db migrate`` set up (``TIANYAN_PG_PORT``, ``TIANYAN_DATABASE_NAME``)."""
    url = env_text("TIANYAN_DATABASE_URL")
    if url:
        return url
    from foundation.settings import Settings, role_url

    return role_url(Settings.from_env().admin_database_url, "tianyan_analyst")


def read_frame(
    url: str, query: str, params: Mapping[str, Any] | Sequence[Any] = ()
) -> pd.DataFrame:
    """The rows of ``query`` as a data frame, read in a read-only transaction."""
    with psycopg.connect(url) as conn:
        conn.read_only = True
        cur = conn.execute(query, params or None)
        columns = [c.name for c in cur.description or ()]
        return pd.DataFrame(cur.fetchall(), columns=columns)


def has_relation(url: str, name: str) -> bool:
    """Whether ``tianyan.<name>`` (a table or view) exists: a database migrated before a
    view was added does not have it yet."""
    frame = read_frame(url, "SELECT to_regclass(%s) IS NOT NULL AS present", [f"tianyan.{name}"])
    return bool(frame["present"].iloc[0])


def require_relations(url: str, *names: str) -> None:
    """Raise :class:`LookupError` naming the ``tianyan`` views or tables ``url`` lacks (a
    database not migrated since they were added)."""
    missing = [n for n in names if not has_relation(url, n)]
    if missing:
        raise LookupError(
            f"the database has no {', '.join('tianyan.' + n for n in missing)}: "
            "apply the schema with `tianyan db migrate` (make setup does)"
        )


def utc(ms: int | float) -> pd.Timestamp:
    """A Unix-ms sample time as a UTC timestamp."""
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")


# -- detector evaluation ---------------------------------------------------------------------


def simulate_run(
    scenario: Path,
    seed: int | None,
    elevators: int,
    duration_s: float,
    out_dir: Path,
    registry_seed: int,
) -> Path:
    """Simulate the first ``elevators`` cars of the synthetic registry (``registry_seed``)
    under ``scenario`` into ``out_dir/run.jsonl`` (labels beside it), as
    :func:`evaluation.runs.evaluate` does, and return the stream's path: the notebook keeps
    the files to explain the misses."""
    import simulator
    from evaluation.runs import DEFAULT_START, fleet

    path = out_dir / "run.jsonl"
    simulator.simulate(
        simulator.load_scenario(scenario, seed=seed),
        fleet(elevators, DEFAULT_START.date(), registry_seed),
        start=DEFAULT_START,
        duration_s=duration_s,
        output=simulator.FileOutput(path),
        progress=False,
    )
    return path


def sample_times(stream: Path) -> dict[str, np.ndarray]:
    """Each elevator's valid sample times in a JSON Lines stream, sorted, Unix ms."""
    from foundation.contract import InvalidMessage, decode

    times: dict[str, list[int]] = {}
    with stream.open("rb") as f:
        for line in f:
            try:
                m = decode(line.rstrip(b"\r\n"))
            except InvalidMessage:
                continue
            times.setdefault(m.elevator_id, []).extend(m.samples.t_ms)
    return {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in times.items()}


def fault_scores(evaluation: Evaluation) -> pd.DataFrame:
    """One row per scored fault type of a :class:`evaluation.scoring.Evaluation`."""
    rows = [
        {
            "fault_type": kind,
            "labels": s.labels,
            "censored": sum(s.censored.values()),
            "detected": s.detected,
            "missed": len(s.missed),
            "alerts": s.alerts,
            "precision": s.precision,
            "recall": s.recall,
            "f1": s.f1,
            "delay_median_s": s.delay_median_s,
            "delay_p95_s": s.delay_p95_s,
        }
        for kind, s in sorted(evaluation.faults.items())
    ]
    return pd.DataFrame(rows).set_index("fault_type")


def alert_precision(evaluation: Evaluation) -> pd.DataFrame:
    """One row per raised alert type: alerts, explained by a label, false alarms."""
    rows = [
        {
            "alert_type": kind,
            "alerts": s.alerts,
            "explained": s.explained,
            "false_alarms": len(s.unexplained),
            "precision": s.precision,
        }
        for kind, s in sorted(evaluation.alerts.items())
    ]
    return pd.DataFrame(rows).set_index("alert_type")


def detection_delays(evaluation: Evaluation) -> pd.DataFrame:
    """One row per detected label: fault type and detection delay, s."""
    rows = [
        {"fault_type": kind, "delay_s": ms / 1000}
        for kind, s in sorted(evaluation.faults.items())
        for ms in s.delays_ms
    ]
    return pd.DataFrame(rows, columns=["fault_type", "delay_s"])


def evaluation_figure(scores: pd.DataFrame, delays: pd.DataFrame) -> plt.Figure:
    """Precision, recall and F1 per fault type beside the spread of detection delays."""
    fig, (ax_q, ax_d) = plt.subplots(
        1, 2, figsize=(13, 0.42 * len(scores) + 1.6), sharey=True, constrained_layout=True
    )
    y = np.arange(len(scores))
    for offset, column, colour in (
        (-0.27, "precision", "tab:blue"),
        (0.0, "recall", "tab:orange"),
        (0.27, "f1", "tab:green"),
    ):
        ax_q.barh(y + offset, scores[column].fillna(0), height=0.26, label=column, color=colour)
    ax_q.set_yticks(y, scores.index)
    ax_q.invert_yaxis()
    ax_q.set_xlim(0, 1.05)
    ax_q.set_xlabel("score")
    ax_q.legend(loc="upper left", bbox_to_anchor=(0, -0.08), ncol=3, fontsize="small")
    ax_q.set_title("detection quality per fault type")
    for i, kind in enumerate(scores.index):
        values = delays.loc[delays["fault_type"] == kind, "delay_s"].to_numpy()
        if len(values):
            jitter = np.linspace(-0.2, 0.2, len(values)) if len(values) > 1 else np.zeros(1)
            ax_d.scatter(values, i + jitter, s=12, alpha=0.6, color="tab:purple")
            ax_d.plot([np.median(values)] * 2, [i - 0.3, i + 0.3], color="black", lw=2)
    ax_d.set_xscale("symlog", linthresh=1.0)
    ax_d.set_xlabel("detection delay, s (alert raised − labelled onset; bar = median)")
    ax_d.set_title("detection delay")
    ax_d.grid(axis="x", alpha=0.3)
    return fig


#: Device faults that hide or distort what a terminal reports (simulator label types).
DEVICE_FAULTS = ("dropout", "stuck_sensor", "clock_skew", "out_of_order", "duplicate")
#: How far around a missed label to look for device faults, silences and stray alerts, ms.
MISS_CONTEXT_MS = 120_000


def explain_misses(
    evaluation: Evaluation,
    labels: Sequence[Mapping[str, Any]],
    times: Mapping[str, np.ndarray],
    end_ms: int,
) -> pd.DataFrame:
    """One row per missed label with what the run shows around it and a probable reason.

    Looks, on the same elevator, for a device fault (a terminal dropout…) overlapping the
    label, the longest silence between samples from a minute before the onset to the end,
    and the nearest *unexplained* alert of a type that detects the label (an alert that
    came, but outside the window in which it counts: :func:`evaluation.scoring.label_window`),
    each within :data:`MISS_CONTEXT_MS` of the label.
    """
    from evaluation.scoring import DETECTS, SLACK_MS, label_window

    rows = []
    for kind, s in sorted(evaluation.faults.items()):
        for lb in s.missed:
            car = lb["elevator_id"]
            lo, hi = label_window(lb, end_ms)
            onset, end = lo, hi - SLACK_MS
            device = sorted(
                {
                    other["fault_type"]
                    for other in labels
                    if other["elevator_id"] == car
                    and other["fault_type"] in DEVICE_FAULTS
                    and int(other["onset_ms"]) <= end
                    and (
                        other["ended_ms"] is None
                        or int(other["ended_ms"]) >= onset - MISS_CONTEXT_MS
                    )
                }
            )
            car_times = times.get(car, np.zeros(0, dtype=np.int64))
            around = car_times[(car_times >= onset - MISS_CONTEXT_MS) & (car_times <= end)]
            silence_s = float(np.diff(around).max()) / 1000 if len(around) > 1 else math.nan
            near = [
                a
                for alert_type in DETECTS[kind]
                if alert_type in evaluation.alerts
                for a in evaluation.alerts[alert_type].unexplained
                if a.elevator_id == car
                and onset - MISS_CONTEXT_MS <= a.raised_at_ms <= end + MISS_CONTEXT_MS
            ]
            nearest = min(near, key=lambda a: abs(a.raised_at_ms - onset), default=None)
            offset_s = None if nearest is None else (nearest.raised_at_ms - onset) / 1000
            if device:
                reason = f"the terminal misbehaved meanwhile ({', '.join(device)})"
            elif offset_s is not None and offset_s < 0:
                reason = (
                    f"an alert came {-offset_s:.1f} s before the labelled onset: the detector "
                    "saw the condition before the simulator labelled it"
                )
            elif offset_s is not None:
                reason = (
                    f"an alert came {offset_s:.1f} s after the onset, after the label's end "
                    f"+ {SLACK_MS / 1000:.0f} s"
                )
            else:
                reason = (
                    f"no {'/'.join(sorted(DETECTS[kind]))} alert on this elevator near it: "
                    "the condition never held in the signals as the rule judges it"
                )
            rows.append(
                {
                    "fault_type": kind,
                    "elevator_id": car,
                    "onset": utc(onset),
                    "held_s": (end - onset) / 1000,
                    "params": lb.get("params", {}),
                    "device_faults": ", ".join(device) or "—",
                    "longest_silence_s": silence_s,
                    "nearest_alert_offset_s": offset_s,
                    "probable_reason": reason,
                }
            )
    columns = [
        "fault_type",
        "elevator_id",
        "onset",
        "held_s",
        "params",
        "device_faults",
        "longest_silence_s",
        "nearest_alert_offset_s",
        "probable_reason",
    ]
    return pd.DataFrame(rows, columns=columns)


# -- a trapping, signal by signal ------------------------------------------------------------

_TRAPPINGS = """
SELECT r.alert_key, r.elevator_id, r.alert_type, r.severity, r.detector, r.condition_since,
       r.raised_at, c.raised_at AS cleared_at, r.estimated_trapped, r.evidence,
       r.probable_cause, r.suggested_handling, coalesce(i.incident_id, o.incident_id) AS incident_id
FROM tianyan.alert r
LEFT JOIN tianyan.alert c ON c.alert_key = r.alert_key AND c.state = 'cleared'
LEFT JOIN LATERAL (
    SELECT a.incident_id FROM tianyan.incident_alert a
    JOIN tianyan.alert k ON k.alert_id = a.alert_id
    WHERE k.alert_key = r.alert_key AND a.incident_id IS NOT NULL LIMIT 1
) i ON true
LEFT JOIN LATERAL (
    SELECT incident_id FROM tianyan.incident n WHERE n.alert_key = r.alert_key LIMIT 1
) o ON true
WHERE r.state = 'raised' AND r.alert_type = ANY(%(types)s)
ORDER BY r.raised_at, r.elevator_id
"""


def trapping_alerts(url: str) -> pd.DataFrame:
    """Every raised trapping alert (:data:`detectors.alerts.TRAPPED_TYPES`), with when its
    condition cleared and the incident it opened, if any."""
    from detectors.alerts import TRAPPED_TYPES

    frame = read_frame(url, _TRAPPINGS, {"types": sorted(TRAPPED_TYPES)})
    for column in ("condition_since", "raised_at", "cleared_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    frame["detection_delay_s"] = (frame["raised_at"] - frame["condition_since"]).dt.total_seconds()
    frame["held_s"] = (frame["cleared_at"] - frame["condition_since"]).dt.total_seconds()
    return frame


def pick_trapping(trappings: pd.DataFrame, alert_key: str | None = None) -> pd.Series:
    """The trapping to reconstruct: ``alert_key`` if given; else the first with an incident,
    then the first whose clearing is stored (the whole story), people between levels first.

    Raises
    ------
    LookupError
        No trapping alert (or none with that key) is stored: the message says how to get one.
    """
    if trappings.empty:
        raise LookupError(
            "no trapping alert is stored in this database: run the worker (`tianyan worker`) "
            "and simulate a fleet with trappings into Kafka (`tianyan simulate --scenario "
            "tests/scenarios/city_run.toml --elevators 80 --duration 900`), or point "
            "TIANYAN_DATABASE_URL at a database that has some"
        )
    if alert_key:
        chosen = trappings[trappings["alert_key"] == alert_key]
        if chosen.empty:
            raise LookupError(
                f"TIANYAN_NOTEBOOK_ALERT_KEY={alert_key!r}: no such raised trapping alert; "
                f"stored ones include {', '.join(trappings['alert_key'].head(3))}"
            )
        return chosen.iloc[0]
    ranked = trappings.assign(
        _no_incident=trappings["incident_id"].isna(),
        _open=trappings["cleared_at"].isna(),
        _at_level=trappings["alert_type"] != "trapped_between_levels",
    ).sort_values(["_no_incident", "_open", "_at_level", "raised_at"], kind="stable")
    return trappings.loc[ranked.index[0]]


def reconstruction_window(
    alert: pd.Series, label: Mapping[str, Any] | None, margin: pd.Timedelta
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """From ``margin`` before the earliest of the condition, the car standing still (the
    evidence's ``standing_since_ms``) and the injected onset, to ``margin`` after the
    clearing (or the raising, if the condition has not cleared)."""
    first = [alert["condition_since"]]
    standing_ms = alert["evidence"].get("standing_since_ms")
    if standing_ms:
        first.append(utc(standing_ms))
    if label is not None:
        first.append(utc(label["onset_ms"]))
    last = alert["cleared_at"] if pd.notna(alert["cleared_at"]) else alert["raised_at"]
    return min(first) - margin, last + margin


def telemetry(url: str, elevator_id: str, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """One elevator's stored samples in ``[start, end]``, in time order."""
    return read_frame(
        url,
        "SELECT time, seq, speed_mps, accel_mps2, position_m, floor, direction, load_kg, door,"
        " door_zone, leveling_offset_mm, passengers, alarm, service_mode"
        " FROM tianyan.raw_sample"
        " WHERE elevator_id = %(e)s AND time >= %(lo)s AND time <= %(hi)s"
        " AND stored_time > %(lo)s::timestamptz - interval '1 minute' AND stored_time <= %(hi)s"
        " ORDER BY time",
        {"e": elevator_id, "lo": start, "hi": end},
    )


def terminal_codes(
    url: str, elevator_id: str, start: dt.datetime, end: dt.datetime
) -> pd.DataFrame:
    """GB/T 24476 fault and event codes the terminal reported in ``[start, end]``."""
    return read_frame(
        url,
        "SELECT time, kind, code, seq FROM tianyan.telemetry_code"
        " WHERE elevator_id = %(e)s AND time >= %(lo)s AND time <= %(hi)s ORDER BY time, code",
        {"e": elevator_id, "lo": start, "hi": end},
    )


def car_alerts(url: str, elevator_id: str, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Every alert (raised and cleared) on one elevator stamped within ``[start, end]``."""
    return read_frame(
        url,
        "SELECT raised_at AS at, state, alert_type, severity, condition_since, alert_key"
        " FROM tianyan.alert WHERE elevator_id = %(e)s AND raised_at >= %(lo)s"
        " AND raised_at <= %(hi)s ORDER BY raised_at, alert_type",
        {"e": elevator_id, "lo": start, "hi": end},
    )


def incident(url: str, incident_id: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The incident row and its ``incident_event`` history (empty frames, with their columns,
    when ``incident_id`` is None or NaN)."""
    if pd.isna(incident_id):
        incident_id = None
    row = read_frame(url, "SELECT * FROM tianyan.incident WHERE incident_id = %s", [incident_id])
    events = read_frame(
        url,
        "SELECT time, event_type, from_state, to_state, actor, note FROM tianyan.incident_event"
        " WHERE incident_id = %s ORDER BY time, event_id",
        [incident_id],
    )
    return row, events


def fault_labels(url: str, elevator_id: str, labels_path: str | None = None) -> list[dict]:
    """The simulator's fault labels for one elevator: from a ``*.labels.jsonl`` file when
    given, else from ``tianyan.fault_label`` (written when simulating into Kafka)."""
    import json

    if labels_path:
        with open(labels_path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [r for r in rows if r["elevator_id"] == elevator_id]
    frame = read_frame(
        url,
        "SELECT elevator_id, fault_type, gb_code,"
        " (extract(epoch FROM onset) * 1000)::bigint AS onset_ms,"
        " (extract(epoch FROM ended) * 1000)::bigint AS ended_ms, params"
        " FROM tianyan.fault_label WHERE elevator_id = %s ORDER BY onset",
        [elevator_id],
    )
    return [
        {**r, "ended_ms": None if pd.isna(r["ended_ms"]) else int(r["ended_ms"])}
        for r in frame.to_dict("records")
    ]


def labelled_fault(labels: Sequence[Mapping[str, Any]], alert: pd.Series) -> dict | None:
    """The injected fault that explains ``alert`` by the evaluation's own rule
    (:data:`evaluation.scoring.EXPLAINED_BY`, :func:`~evaluation.scoring.explain_window`)."""
    from evaluation.scoring import EXPLAINED_BY, explain_window

    raised_ms = int(alert["raised_at"].timestamp() * 1000)
    for lb in labels:
        if lb["fault_type"] in EXPLAINED_BY.get(alert["alert_type"], ()):
            lo, hi = explain_window(lb, raised_ms)
            if lo <= raised_ms <= hi:
                return dict(lb)
    return None


#: Door states as the contract numbers them.
DOOR_STATES = ("closed", "opening", "open", "closing")


def timeline_figure(
    samples: pd.DataFrame,
    alert: pd.Series,
    *,
    label: Mapping[str, Any] | None = None,
    events: pd.DataFrame | None = None,
    codes: pd.DataFrame | None = None,
) -> plt.Figure:
    """The signals around a trapping, one lane each, with the detector's moments (condition
    since, raised, cleared), the injected fault and the incident's events marked (those
    within the samples' time span)."""
    t = samples["time"]
    fig, axes = plt.subplots(
        5,
        1,
        figsize=(13, 10),
        sharex=True,
        constrained_layout=True,
        gridspec_kw={"height_ratios": [1.2, 1.6, 1, 1, 1.3]},
    )
    ax_v, ax_p, ax_d, ax_l, ax_b = axes
    ax_v.plot(t, samples["speed_mps"], color="tab:blue", lw=1)
    ax_v.set_ylabel("speed\nm/s")
    ax_p.plot(t, samples["position_m"], color="tab:blue", lw=1, label="position")
    ax_p.set_ylabel("position\nm")
    ax_f = ax_p.twinx()
    ax_f.step(t, samples["floor"], where="post", color="tab:gray", lw=1, alpha=0.7)
    ax_f.set_ylabel("floor", color="tab:gray")
    zone = samples["door_zone"].astype(bool).to_numpy()
    ax_p.fill_between(
        t,
        0,
        1,
        where=zone,
        step="post",
        alpha=0.15,
        color="tab:green",
        transform=ax_p.get_xaxis_transform(),
        label="in a door zone",
    )
    ax_p.legend(loc="upper left", fontsize="small")
    ax_d.step(t, samples["door"], where="post", color="tab:brown", lw=1)
    ax_d.set_yticks(range(4), DOOR_STATES)
    ax_d.set_ylabel("door")
    ax_l.plot(t, samples["load_kg"], color="tab:olive", lw=1)
    ax_l.set_ylabel("load\nkg")
    lanes = [("passengers", "tab:purple"), ("alarm", "tab:red"), ("door_zone", "tab:green")]
    for i, (name, colour) in enumerate(lanes):
        on = samples[name].astype(bool).to_numpy()
        ax_b.fill_between(t, i + 0.1, i + 0.9, where=on, step="post", color=colour, alpha=0.7)
    ax_b.set_yticks([i + 0.5 for i in range(len(lanes))], [n for n, _ in lanes])
    ax_b.set_ylim(0, len(lanes))
    if codes is not None and not codes.empty:
        for _, c in codes.iterrows():
            ax_b.annotate(
                f"{c['kind']} {c['code']}",
                (c["time"], len(lanes) - 0.2),
                fontsize="x-small",
                rotation=90,
                va="top",
            )
    marks = [
        (alert["condition_since"], "condition since", "tab:orange", "--"),
        (alert["raised_at"], "alert raised", "tab:red", "-"),
        (alert["cleared_at"], "cleared", "tab:green", "-"),
    ]
    if label is not None:
        marks.append((utc(label["onset_ms"]), "injected fault onset", "black", ":"))
        if label.get("ended_ms") is not None:
            marks.append((utc(label["ended_ms"]), "injected fault end", "black", ":"))
    if events is not None:
        for _, e in events.iterrows():
            marks.append((e["time"], e["event_type"], "tab:purple", "-."))
    lo, hi = t.min(), t.max()
    for when, text, colour, style in marks:
        # Moments outside the samples shown (an escalation hours later) stay in the tables.
        if when is None or pd.isna(when) or not lo <= when <= hi:
            continue
        # Several moments often fall within a second: the legend names each with its time.
        for ax in axes:
            ax.axvline(when, color=colour, ls=style, lw=1.2)
        ax_v.lines[-1].set_label(f"{when:%H:%M:%S.%f}"[:-5] + f"  {text}")
    ax_v.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax_v.set_title(
        f"{alert['alert_type']} on {alert['elevator_id']}: signals around the alert (UTC)"
    )
    ax_b.set_xlabel("time (UTC)")
    return fig


def detect_again(url: str, items: Sequence[ReplayItem], elevator_id: str) -> list[Alert]:
    """Feed replayed messages (:class:`replay.ReplayItem`) to the worker's own
    :class:`streams.ingest.Ingest`, ticking it as the worker does (after each batch, on
    stream time), and return the alerts raised:
    what the detectors decide from the replayed slice alone (the same loop as
    ``tianyan evaluate``: :func:`evaluation.runs.run_detectors`)."""
    from types import SimpleNamespace

    from detectors.thresholds import ElevatorLimits
    from evaluation.runs import run_detectors

    ratings = read_frame(
        url,
        "SELECT rated_speed_mps, rated_load_kg, floors FROM tianyan.elevator"
        " WHERE registration_code = %s",
        [elevator_id],
    )
    th = thresholds()
    limits = (
        ElevatorLimits.of(SimpleNamespace(**ratings.iloc[0].to_dict()))
        if len(ratings)
        else ElevatorLimits.unknown(th)
    )
    run = run_detectors(((i.key, i.value) for i in items), lambda _: limits, th)
    return run.alerts


def thresholds() -> Thresholds:
    """The detectors' thresholds as the worker loads them (``TIANYAN_THRESHOLDS_FILE``)."""
    from foundation.settings import Settings

    path = Settings.from_env().thresholds_file
    if path is None:
        from detectors.thresholds import Thresholds

        return Thresholds()
    from detectors.thresholds import load_thresholds

    return load_thresholds(path)


# -- fleet risk ------------------------------------------------------------------------------


def districts_in_order(names: Sequence[str]) -> list[str]:
    """The city's districts in the registry's order, then any others present, sorted."""
    from registry.model import DISTRICT_NAMES

    present = set(names)
    return [d for d in DISTRICT_NAMES if d in present] + sorted(present - set(DISTRICT_NAMES))


def district_grades(url: str) -> pd.DataFrame:
    """``district_risk_grade``: elevators per district and current grade, districts in order."""
    frame = read_frame(url, "SELECT * FROM tianyan.district_risk_grade").set_index("district")
    return frame.loc[districts_in_order(frame.index)]


def current_grades(url: str) -> pd.DataFrame:
    """``current_risk_grade``: each graded elevator's latest grade, most severe first."""
    return read_frame(
        url,
        "SELECT * FROM tianyan.current_risk_grade ORDER BY grade_rank, score DESC, elevator_id",
    )


def factor_points(grades: pd.DataFrame) -> pd.DataFrame:
    """The ``factors`` jsonb of each grade, one row per (elevator, factor): value, points and
    the reason the grading wrote."""
    rows = [
        {
            "elevator_id": g.elevator_id,
            "factor": name,
            "value": f.get("value"),
            "points": float(f.get("points") or 0.0),
            "reason": f.get("reason", ""),
        }
        for g in grades.itertuples()
        for name, f in (g.factors or {}).get("factors", {}).items()
    ]
    return pd.DataFrame(rows, columns=["elevator_id", "factor", "value", "points", "reason"])


def riskiest(grades: pd.DataFrame, factors: pd.DataFrame, top: int) -> pd.DataFrame:
    """The ``top`` highest scores with their three largest contributions, as the grading
    explained them."""
    head = grades.sort_values(["score", "elevator_id"], ascending=[False, True]).head(top)
    scoring = factors[factors["points"] > 0].sort_values(
        ["points", "factor"], ascending=[False, True]
    )
    why = {
        elevator_id: "; ".join(
            f"{r.factor} +{r.points:g} ({r.reason})" for r in f.head(3).itertuples()
        )
        for elevator_id, f in scoring.groupby("elevator_id")
    }
    out = head[
        ["elevator_id", "district", "building_type", "address", "score", "grade", "grade_zh"]
    ]
    return out.assign(why=out["elevator_id"].map(why).fillna("")).reset_index(drop=True)


def grade_bars(by_district: pd.DataFrame) -> plt.Figure:
    """Elevators per district, stacked by current grade (ungraded in grey)."""
    from dashboards.report import GRADE_COLOURS, UNGRADED_COLOUR
    from detectors.risk import GRADES

    fig, ax = plt.subplots(figsize=(11, 0.4 * len(by_district) + 1.5), constrained_layout=True)
    left = np.zeros(len(by_district))
    for grade in [*GRADES, "ungraded"]:
        values = by_district[grade].to_numpy(dtype=float)
        colour = GRADE_COLOURS.get(grade, UNGRADED_COLOUR)
        ax.barh(by_district.index, values, left=left, color=colour, label=grade)
        left += values
    ax.invert_yaxis()
    ax.set_xlabel("elevators")
    ax.set_title("current risk grade by district")
    ax.legend(ncol=5, loc="lower right", fontsize="small")
    return fig


def factor_bars(factors: pd.DataFrame, elevators: Sequence[str]) -> plt.Figure:
    """Points per factor for the given elevators, stacked: what makes up each score."""
    points = (
        factors[factors["elevator_id"].isin(elevators) & (factors["points"] > 0)]
        .pivot_table(index="elevator_id", columns="factor", values="points", aggfunc="sum")
        .reindex(list(elevators))
        .fillna(0.0)
    )
    fig, ax = plt.subplots(figsize=(11, 0.35 * len(points) + 1.5), constrained_layout=True)
    left = np.zeros(len(points))
    colours = plt.get_cmap("tab10")
    for i, factor in enumerate(points.columns):
        ax.barh(points.index, points[factor], left=left, color=colours(i % 10), label=factor)
        left += points[factor].to_numpy()
    ax.invert_yaxis()
    ax.set_xlabel("points (score = min(100, sum))")
    ax.set_title("what makes up the highest scores")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return fig


def coverage_bars(coverage: pd.DataFrame) -> plt.Figure:
    """Terminal shares per district against the plan's targets (dashed)."""
    fig, axes = plt.subplots(
        1, 2, figsize=(13, 0.4 * len(coverage) + 1.5), sharey=True, constrained_layout=True
    )
    for ax, share, target, title, part, whole in (
        (
            axes[0],
            "terminal_share",
            "terminal_target_share",
            "elevators with a terminal",
            "with_terminal",
            "elevators",
        ),
        (
            axes[1],
            "managed_residential_share",
            "managed_residential_target_share",
            "property-managed residential elevators with a terminal",
            "managed_residential_with_terminal",
            "managed_residential",
        ),
    ):
        values = coverage[share].astype(float)
        goal = float(coverage[target].iloc[0])
        colours = ["tab:green" if v >= goal else "tab:red" for v in values.fillna(0)]
        ax.barh(coverage.index, values.fillna(0), color=colours)
        counts = zip(values.fillna(0), coverage[part], coverage[whole], strict=True)
        for y, (v, n, d) in enumerate(counts):
            ax.text(min(v, 0.85) + 0.01, y, f"{n}/{d}", va="center", fontsize="small")
        ax.axvline(goal, color="black", ls="--", lw=1)
        ax.annotate(
            f"target {goal:.0%}",
            (goal, 1.0),
            xycoords=("data", "axes fraction"),
            ha="left",
            va="bottom",
            fontsize="small",
        )
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(plt.matplotlib.ticker.PercentFormatter(1.0))
        ax.set_title(title, pad=16)
    axes[0].invert_yaxis()
    return fig


def district_coverage(url: str) -> pd.DataFrame:
    """``district_coverage``: terminal shares per district against the targets, in order."""
    frame = read_frame(url, "SELECT * FROM tianyan.district_coverage").set_index("district")
    return frame.loc[districts_in_order(frame.index)]
