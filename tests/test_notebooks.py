"""The analyst notebooks (notebooks/*.ipynb), executed end to end on the shared city run
(tests/city_run.py) as the read-only analyst, each in a fresh kernel of this interpreter.

Each run appends one probe cell that prints, as JSON, what the notebook computed; the
assertions are on that and on the database, not only on the notebook having run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import nbformat
import psycopg
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from detectors.alerts import TRAPPED_TYPES
from evaluation.scoring import DETECTS, EXPLAINED_BY

from .city_run import CITY_SEED, CityRun

# The notebooks run on the shared city run.
pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ("detector_evaluation.ipynb", "trapping_reconstruction.ipynb", "fleet_risk.ipynb")
KERNEL = "tianyan-notebook-tests"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel spec that starts this very interpreter (the venv's Python): a ``python3``
    spec installed for the user or the system may point at another one."""
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(root / KERNEL, overrides={"display_name": "tianyan tests"})
    return root


def execute(name: str, kernel_dir: Path, env: dict[str, str], probe: str) -> tuple[Any, Any]:
    """Run notebook ``name`` with ``env`` added to the environment, then ``probe`` (a Python
    expression) in the same kernel; the executed notebook and the probe's value."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(
        new_code_cell(
            "import json as _json, sys as _sys\n"
            f"print(_json.dumps({{'python': _sys.executable, 'probe': {probe}}}, default=str))"
        )
    )
    km = AsyncKernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    )
    client = NotebookClient(
        nb, km=km, timeout=180, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute(
        env={**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline", **env}
    )
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    out = json.loads(printed)
    assert out["python"] == sys.executable  # the venv's interpreter ran the notebook
    return nb, out["probe"]


def figures(nb: Any) -> int:
    """PNG images among the executed notebook's outputs."""
    return sum(
        1
        for cell in nb.cells
        for o in cell.get("outputs", [])
        if o.output_type in ("display_data", "execute_result") and "image/png" in o.data
    )


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "**Inputs**" in first.source


def test_detector_evaluation(city_run: CityRun, kernel_dir: Path) -> None:
    nb, got = execute(
        "detector_evaluation.ipynb",
        kernel_dir,
        {
            "TIANYAN_NOTEBOOK_STREAM": str(city_run.stream),
            "TIANYAN_NOTEBOOK_ELEVATORS": str(len(city_run.elevators)),
            "TIANYAN_NOTEBOOK_REGISTRY_SEED": str(CITY_SEED),
        },
        "{'scores': scores.reset_index().to_dict('records'),"
        " 'misses': misses.to_dict('records'), 'delays': len(delays),"
        " 'elevators': report.elevators, 'alerts_raised': report.alerts_raised}",
    )
    labels = [json.loads(line) for line in city_run.labels.read_text().splitlines() if line]
    per_type = Counter(lb["fault_type"] for lb in labels if lb["fault_type"] in DETECTS)
    scores = {row["fault_type"]: row for row in got["scores"]}
    # One row per scored fault type the run injected, every label counted or censored.
    assert set(scores) == set(per_type)
    for kind, n in per_type.items():
        assert scores[kind]["labels"] + scores[kind]["censored"] == n, kind
    assert got["elevators"] == len(city_run.elevators) and got["alerts_raised"] > 0
    # The trappings are found, about the 30-s trapped time after the people were caught.
    for kind in TRAPPED_TYPES:
        assert scores[kind]["detected"] >= 1, kind
        assert 20.0 <= scores[kind]["delay_median_s"] <= 40.0, kind
    assert got["delays"] == sum(s["detected"] for s in scores.values())
    # Every miss is listed, each with a reason.
    assert len(got["misses"]) == sum(s["missed"] for s in scores.values())
    assert all(m["probable_reason"] for m in got["misses"])
    assert figures(nb) == 1


def test_trapping_reconstruction(city_run: CityRun, kernel_dir: Path) -> None:
    nb, got = execute(
        "trapping_reconstruction.ipynb",
        kernel_dir,
        {
            "TIANYAN_DATABASE_URL": city_run.analyst_url,
            "TIANYAN_NOTEBOOK_LABELS": str(city_run.labels),
        },
        "{'alert_key': alert['alert_key'], 'alert_type': alert['alert_type'],"
        " 'start': start.isoformat(), 'end': end.isoformat(), 'samples': len(samples),"
        " 'first': samples['time'].min().isoformat(),"
        " 'last': samples['time'].max().isoformat(),"
        " 'label': label, 'delays': delays, 'replay': replay_counts.to_dict(),"
        " 'same_alert_again': same_alert_again, 'trappings': len(trappings),"
        " 'incident': len(incident), 'incident_events': len(incident_events)}",
    )
    assert got["alert_type"] in TRAPPED_TYPES
    with psycopg.connect(city_run.analyst_url) as conn:
        stored = conn.execute(
            "SELECT r.condition_since, c.raised_at,"
            " (SELECT count(*) FROM tianyan.telemetry_sample s WHERE s.elevator_id ="
            "  r.elevator_id AND s.time >= %(lo)s AND s.time <= %(hi)s),"
            " (SELECT count(*) FROM tianyan.alert WHERE state = 'raised'"
            "  AND alert_type = ANY(%(types)s)),"
            " (SELECT count(*) FROM tianyan.incident_event WHERE incident_id IN"
            "  (SELECT i.incident_id FROM tianyan.incident_alert i JOIN tianyan.alert k"
            "  USING (alert_id) WHERE k.alert_key = %(key)s)) AS events,"
            " (SELECT count(DISTINCT i.incident_id) FROM tianyan.incident_alert i"
            "  JOIN tianyan.alert k USING (alert_id)"
            "  WHERE k.alert_type = ANY(%(types)s)) AS trapping_incidents"
            " FROM tianyan.alert r LEFT JOIN tianyan.alert c"
            "  ON c.alert_key = r.alert_key AND c.state = 'cleared'"
            " WHERE r.alert_key = %(key)s AND r.state = 'raised'",
            {
                "key": got["alert_key"],
                "lo": dt.datetime.fromisoformat(got["start"]),
                "hi": dt.datetime.fromisoformat(got["end"]),
                "types": sorted(TRAPPED_TYPES),
            },
        ).fetchone()
    assert stored is not None, "the notebook's alert is not a stored raised alert"
    since, cleared, samples_in_window, trappings, events, trapping_incidents = stored
    assert got["trappings"] == trappings >= 1
    # The timeline covers the condition from before it began to after it cleared.
    assert cleared is not None  # the pick prefers a trapping whose clearing is stored
    assert got["samples"] == samples_in_window > 100
    first, last = (dt.datetime.fromisoformat(got[k]) for k in ("first", "last"))
    assert first < since < cleared < last
    # The injected trapping behind it, caught about the trapped time after its onset.
    assert got["label"] is not None
    assert got["label"]["fault_type"] in EXPLAINED_BY[got["alert_type"]]
    assert 0.0 <= got["delays"]["people caught (injected onset) → raised, s"] <= 40.0
    # The slice rebuilt for replay: every stored message of the window, and the detectors
    # raise the same alert from it again.
    replay = got["replay"]
    assert (
        replay["messages it would publish"]
        == replay["messages stored in the window (count_database)"]
        > 0
    )
    assert replay["samples in them"] >= got["samples"]
    assert got["same_alert_again"] is True
    # Where the dispatcher opened incidents for trappings, the notebook shows one, with its
    # whole history.
    assert got["incident"] == (1 if trapping_incidents else 0)
    assert got["incident_events"] == events
    assert figures(nb) == 1


def test_fleet_risk(city_run: CityRun, kernel_dir: Path) -> None:
    nb, got = execute(
        "fleet_risk.ipynb",
        kernel_dir,
        {"TIANYAN_DATABASE_URL": city_run.analyst_url, "TIANYAN_NOTEBOOK_TOP": "10"},
        "{'by_district': by_district.reset_index().to_dict('records'),"
        " 'top': top.to_dict('records'), 'factors': factors.to_dict('records'),"
        " 'coverage': coverage.reset_index().to_dict('records'),"
        " 'drivers': drivers.reset_index().to_dict('records')}",
    )
    per_district = Counter(e.district for e in city_run.elevators)
    terminals = Counter(e.district for e in city_run.elevators if e.has_terminal)
    # Grades for every district, every elevator graded.
    by_district = {r["district"]: r for r in got["by_district"]}
    assert set(by_district) == set(per_district)
    for district, n in per_district.items():
        row = by_district[district]
        assert row["graded"] == n and row["ungraded"] == 0, district
        assert row["red"] + row["orange"] + row["yellow"] + row["blue"] == n, district
    # The riskiest first, and each score is the sum of the factors the notebook unpacked.
    top = got["top"]
    assert len(top) == 10
    assert [r["score"] for r in top] == sorted((r["score"] for r in top), reverse=True)
    points: Counter[str] = Counter()
    for f in got["factors"]:
        points[f["elevator_id"]] += f["points"]
    for r in top:
        assert r["score"] == pytest.approx(min(100.0, points[r["elevator_id"]]), abs=0.11)
        assert r["why"], r["elevator_id"]
    # The trappings of the run weigh in the highest grades.
    assert any(d["factor"] == "trapping" and d["elevators"] >= 1 for d in got["drivers"])
    # Coverage per district against the registry the run stored.
    coverage = {r["district"]: r for r in got["coverage"]}
    assert set(coverage) == set(per_district)
    for district, n in per_district.items():
        row = coverage[district]
        assert row["elevators"] == n and row["with_terminal"] == terminals[district]
        assert row["terminal_target_met"] == (terminals[district] / n >= 0.30)
    assert figures(nb) == 3
