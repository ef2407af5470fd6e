"""The shared simulated run stored what the stream carried, and the faults it injected."""

from __future__ import annotations

import psycopg
import pytest

from .city_run import CityRun

# The shared city run: the whole pipeline on 80 elevators.
pytestmark = pytest.mark.slow


def test_the_city_run_stored_every_sample_and_raised_alerts(city_run: CityRun) -> None:
    with psycopg.connect(city_run.analyst_url) as conn:
        samples = conn.execute("SELECT count(*) FROM telemetry_sample").fetchone()
        alerts = conn.execute(
            "SELECT count(DISTINCT alert_type) FROM alert WHERE state = 'raised'"
        ).fetchone()
    assert samples is not None and samples[0] == city_run.samples
    assert alerts is not None and alerts[0] >= 3
    assert city_run.labels.exists()


def test_the_city_runs_trappings_reached_the_rescue_receiver_signed_and_once(
    city_run: CityRun,
) -> None:
    import json

    with psycopg.connect(city_run.analyst_url) as conn:
        trapped = conn.execute(
            "SELECT count(*) FROM incident WHERE fault_type LIKE 'trapped%'"
        ).fetchone()
        deliveries = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'delivered') FROM webhook_delivery"
        ).fetchone()
        evidence = conn.execute(
            "SELECT count(DISTINCT incident_id) FROM evidence_sample"
        ).fetchone()
    received = [json.loads(x) for x in city_run.rescue_journal.read_text().splitlines()]
    assert evidence is not None and evidence[0] >= 1  # raw samples kept with incidents
    ids = [r["webhook_id"] for r in received]
    assert trapped is not None and trapped[0] >= 1
    assert deliveries is not None and deliveries[0] == deliveries[1] == len(ids) == len(set(ids))
    assert any(r["payload"]["data"]["fault"]["trapped"] for r in received)
