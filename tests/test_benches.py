"""Every `tianyan bench` runs to its end on the real stack, at its smallest size, and its last
line is the JSON object its figures are read from.

The benches measure the issues' figures; none ran in the tests before, and two broke
unseen (`bench gateway` in a NameError, `bench storage` on a staging column changed from
jsonb to json). These runs check that each completes and that its own consistency figures
hold; the speeds they print at this size mean nothing and are not checked (speed is measured
by running the benches, never by a test). `bench nab` is run in tests/test_nab.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from foundation.settings import PROJECT_ROOT, Settings

from .conftest import TIANYAN

# Whole pipelines, a minute at real-time rate.
pytestmark = pytest.mark.slow

Figures = dict[str, object]


def _stream(f: Figures) -> None:
    assert f["messages"] == f["simulated_messages"]
    for key in ("worker_messages_per_s", "worker_with_detectors_messages_per_s", "copy_rows"):
        assert isinstance(f[key], int | float) and f[key] > 0, key
    cpu = f["worker_with_detectors_cpu_us_per_msg"]
    assert isinstance(cpu, dict) and set(cpu) == {"worker", "postgres", "kafka"}
    assert cpu["worker"] > 0 and cpu["postgres"] > 0, cpu


def _city(f: Figures) -> None:
    assert f["every_sample_stored_once"] is True
    assert f["stored_samples"] == f["expected_samples"]
    assert f["published_messages"] == f["expected_messages"]


def _gateway(f: Figures) -> None:
    assert f["terminals_connected"] == 5
    assert f["stored_throughput_phase"] == f["published_throughput_phase"]


def _storage(f: Figures) -> None:
    designs = f["designs"]
    assert isinstance(designs, dict) and "adopted" in designs
    assert all(d["lossless"] is True for d in designs.values()), designs


def _registry(f: Figures) -> None:
    assert f["full_import_inserted"] == f["elevators"] == 100
    assert f["same_export_again_unchanged"] == 100


def _regulators(f: Figures) -> None:
    assert f["incidents"] == 20
    assert isinstance(f["rescue_performance_year_rows"], int)
    assert f["rescue_performance_year_rows"] > 0


def _evidence(f: Figures) -> None:
    assert f["calls"] == 10
    assert isinstance(f["evidence_rows_per_call_mean"], float)
    assert f["evidence_rows_per_call_mean"] > 0


def _backfill(f: Figures) -> None:
    assert isinstance(f["messages_stored"], int) and f["messages_stored"] > 0
    # the same thresholds again change nothing stored
    same = f["same_thresholds_rows"]
    assert isinstance(same, dict)
    assert all(r["deleted"] == r["inserted"] == 0 for r in same.values()), same
    assert f["audit_verify_ok"] is True


def _online(f: Figures) -> None:
    assert isinstance(f["messages"], int) and f["messages"] > 0
    assert isinstance(f["trips"], int) and f["trips"] > 0


def _rescue(f: Figures) -> None:
    assert f["burst_delivered"] == f["burst_queued"] == 100
    assert f["burst_dead"] == 0
    assert f["cut_incidents_opened"] == f["cut_alerts"] == f["cut_alerts_measured"]


#: Each bench's arguments at its smallest size, and the check of its figures.
BENCHES: dict[str, tuple[str, Callable[[Figures], None]]] = {
    # more messages than the worker's first batch, or no rate can be measured
    "stream": ("--elevators 2000 --duration 20 --rate 200 --latency-seconds 5", _stream),
    "city": ("--elevators 50 --minutes 0.25 --workers 1", _city),
    "gateway": (
        "--terminals 5 --loaders 1 --seconds 2 --latency-seconds 2 --latency-rate 20 --rate 50",
        _gateway,
    ),
    "storage": ("--elevators 2 --minutes 1 --reads 2", _storage),
    "registry": ("--elevators 100", _registry),
    "regulators": ("--elevators 100 --incidents 20 --calls 1", _regulators),
    "evidence": ("--rows 10000 --calls 10 --contenders 1", _evidence),
    "backfill": ("--elevators 2 --minutes 21", _backfill),
    "online": ("--elevators 2 --duration 600", _online),
    "rescue": (
        "--rate 5 --seconds 5 --burst 100 --cut-elevators 10 --cut-trapped 2 --cut-seconds 1",
        _rescue,
    ),
}


@pytest.mark.parametrize("name", list(BENCHES))
def test_the_bench_runs_and_ends_in_its_figures(name: str, settings: Settings) -> None:
    args, check = BENCHES[name]
    scratch = ("tianyan-bench-*", "tianyan-city-*")
    before = {p for pattern in scratch for p in (PROJECT_ROOT / "var").glob(pattern)}
    res = subprocess.run(
        [TIANYAN, "bench", name, *args.split()], capture_output=True, text=True, timeout=540
    )
    assert res.returncode == 0, res.stderr[-3000:]
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    assert isinstance(figures, dict)
    check(figures)
    # a completed run leaves no folder behind (its workload is hundreds of MB at the defaults)
    after = {p for pattern in scratch for p in (PROJECT_ROOT / "var").glob(pattern)}
    assert after <= before, sorted(after - before)


def test_every_bench_is_run_here_or_in_test_nab() -> None:
    from tianyan.cli import bench

    assert set(bench.commands) == {*BENCHES, "nab"}
