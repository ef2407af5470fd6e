"""The shared simulated run stored what the stream carried, and the faults it injected."""

from __future__ import annotations

import psycopg

from .city_run import CityRun


def test_the_city_run_stored_every_sample_and_raised_alerts(city_run: CityRun) -> None:
    with psycopg.connect(city_run.analyst_url) as conn:
        samples = conn.execute("SELECT count(*) FROM telemetry_sample").fetchone()
        alerts = conn.execute(
            "SELECT count(DISTINCT alert_type) FROM alert WHERE state = 'raised'"
        ).fetchone()
    assert samples is not None and samples[0] == city_run.samples
    assert alerts is not None and alerts[0] >= 3
    assert city_run.labels.exists()
