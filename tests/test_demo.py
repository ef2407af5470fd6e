"""`tianyan demo`: the whole pipeline, small, ends with a summary that holds together."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from foundation.settings import Settings

from .conftest import TIANYAN


@pytest.mark.slow
def test_the_demo_runs_the_whole_pipeline_and_sums_it_up(
    settings: Settings, tmp_path: Path
) -> None:
    res = subprocess.run(
        [TIANYAN, "demo", "--elevators", "40", "--minutes", "5", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert "== tianyan demo: the whole pipeline ==" in res.stdout
    assert summary["samples"] > 10_000 and summary["alerts"] > 0
    assert summary["incidents_by_type"] and summary["recall_precision"]
    hooks = summary["webhooks"]
    assert hooks["delivered"] > 0 and hooks["pending"] == hooks["dead"] == 0
    assert hooks["received_verified"] == hooks["received_unique"] == hooks["delivered"]
    # every incident routed to the receiver was acknowledged, unless the detector closed it
    # before the acknowledgement arrived (refused, 409)
    assert (
        hooks["incidents_acknowledged_by_receiver"]
        + hooks["incidents_closed_by_detector_before_acknowledgement"]
        == hooks["incidents_to_rescue_platform"]
    )
    assert summary["ledger"].startswith("verified")
    # the terminals sent through the MQTT broker and the gateway, and every trapped car's
    # terminal answered its reassurance command
    assert summary["path"] == "mqtt" and summary["unsendable"] == 0
    assert "path: terminal → MQTT broker" in res.stdout
    r = summary["reassurance"]
    assert r["answered"] + r["unanswered"] == r["commands"]
    assert r["played"] == r["commands"] - r["unanswered"] - r["failed"]
    assert summary["boards_checked"] >= 6 and summary["boards_failed"] == []
    assert sum(sum(g.values()) for g in summary["grades_by_district"].values()) == 40
    assert Path(summary["report"]).stat().st_size > 1000


def test_the_demo_fails_on_anything_the_rescue_platform_would_miss() -> None:
    from tianyan.demo_pipeline import DemoSummary, failures

    ok = DemoSummary(
        elevators=10,
        simulated_s=60,
        webhooks={"delivered": 5, "pending": 0, "dead": 0},
        ledger="verified: 10 entries",
    )
    assert failures(ok) == []
    dead = DemoSummary(**{**ok.__dict__, "webhooks": {"delivered": 4, "pending": 0, "dead": 1}})
    assert failures(dead) == ["1 webhook deliveries are dead"]
    unapplied = DemoSummary(**{**ok.__dict__, "alerts_unapplied": 2})
    assert failures(unapplied) == ["2 alerts were never applied to an incident"]
    broken = DemoSummary(**{**ok.__dict__, "ledger": "FAILED: entry 3 altered"})
    assert failures(broken) == ["the ledger did not verify: FAILED: entry 3 altered"]


def test_a_warning_repeated_with_other_numbers_is_no_progress(tmp_path: Path) -> None:
    """The demo hung for its test's whole 600 s once: a worker stuck in its table recovery
    logged the same warnings every 5 s, and a growing log counted as progress."""
    from tianyan.harness import LogLines

    log = tmp_path / "worker-1.log"
    lines = LogLines(tmp_path)
    stuck = '{{"asctime": "00:13:{s:02d}", "message": "No event received for tp 2 ({s} s ago)"}}\n'
    with log.open("a") as f:
        f.write(stuck.format(s=0))
    first = lines.kinds()
    for s in range(5, 60, 5):
        with log.open("a") as f:
            f.write(stuck.format(s=s))
        assert lines.kinds() == first
    with log.open("a") as f:
        f.write('{"asctime": "00:14:00", "message": "recovery complete"}\n')
        f.write('{"asctime": "00:14:01", "message": "half a li')  # not a line yet
    assert lines.kinds() == first + 1
    (tmp_path / "dispatcher.log").write_text("dispatcher up\n")
    assert lines.kinds() == first + 2
