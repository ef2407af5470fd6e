"""One simulated slice of the city, run once per test session through the real pipeline:
simulator → Kafka → `tianyan worker` → TimescaleDB. The dashboard, report and notebook
tests read what it stored, as the roles their users have.

Use the ``city_run`` fixture (registered in conftest.py).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from foundation.settings import Settings
from registry.generate import generate
from registry.model import Elevator
from registry.store import upsert
from rescue.delivery import new_secret
from sql.roles import create_scoped_role
from tianyan.harness import pipeline
from tianyan.processes import free_port

CITY_SEED, CITY_SIZE = 7, 80
CITY_START = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)
# The registry as of the run's own day, as `tianyan evaluate` regenerates it from a stream.
CITY_DATE = CITY_START.date()
CITY_DURATION_S = 900.0
CITY_DB = f"tianyan_test_city_run_{os.getpid()}"  # one per test session
#: The user unit login role the use-safety board is checked as (roles are cluster-wide).
CITY_UNIT_ROLE = "tianyan_test_city_unit"
CITY_COMPANY_ROLE = "tianyan_test_city_company"
SCENARIO = Path(__file__).parent / "scenarios" / "city_run.toml"


@dataclass(frozen=True)
class CityRun:
    """Where the run's data is and what went into it."""

    admin_url: str  # the owner (tianyan)
    writer_url: str
    analyst_url: str
    regulator_url: str
    public_url: str
    start: dt.datetime
    end: dt.datetime
    elevators: list[Elevator]
    stream: Path  # the simulated messages, JSON Lines
    labels: Path  # the injected faults, JSON Lines
    samples: int  # distinct valid samples the stream carried
    rescue_journal: Path  # what the reference receiver received (JSON Lines)


@pytest.fixture(scope="session")
def city_run(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CityRun]:
    import simulator
    from replay import inspect_jsonl
    from streams.grading import grade_fleet

    work = tmp_path_factory.mktemp("city_run")
    elevators = generate(CITY_SEED, CITY_SIZE, CITY_DATE)
    stream = work / "city.jsonl"
    simulator.simulate(
        simulator.load_scenario(SCENARIO),
        elevators,
        start=CITY_START,
        duration_s=CITY_DURATION_S,
        output=simulator.FileOutput(stream),
        progress=False,
    )
    samples = len(inspect_jsonl(stream).samples)
    receiver_port = free_port()
    journal = work / "rescue-received.jsonl"
    with pipeline(
        settings,
        CITY_DB,
        work,
        checkpoint_interval_s=0.5,
        rescue_webhook_urls=(f"http://127.0.0.1:{receiver_port}/96333",),
        rescue_webhook_secret=new_secret(),
    ) as run:
        upsert(run.admin_url, elevators)
        run.start_receiver(receiver_port, journal)
        run.start_dispatcher()
        run.start_worker()
        run.publish(stream)
        run.wait(
            lambda: run.scalar("SELECT count(*) FROM telemetry_sample"),
            lambda n: n >= samples,
            f"the city-run worker storing {samples} samples",
        )
        time.sleep(3.0)  # the last alerts and checkpoints
        run.group.stop("worker")
        run.wait(
            lambda: run.row(
                "SELECT (SELECT count(*) FROM alert), (SELECT count(*) FROM incident_alert),"
                " (SELECT count(*) FROM webhook_delivery WHERE status = 'delivered'),"
                " (SELECT count(*) FROM webhook_delivery)"
            ),
            lambda p: p[1] >= p[0] and p[3] > 0 and p[2] == p[3],
            "the city-run dispatcher applying every alert and delivering every change",
        )
        run.group.stop_all()
        # risk grades: the run graded as of its end, as the worker's timer would
        grade_fleet(run.writer_url, CITY_START + dt.timedelta(seconds=CITY_DURATION_S))
        # the use-safety board reads as one user unit's role (row-level security): the unit
        # with the most alerts
        unit = run.scalar(
            "SELECT e.user_unit FROM alert a JOIN elevator e ON e.registration_code ="
            " a.elevator_id WHERE e.user_unit IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC,"
            " 1 LIMIT 1"
        )
        create_scoped_role(run.admin_url, CITY_UNIT_ROLE, user_unit=str(unit))
        company = run.scalar(
            "SELECT e.maintenance_company FROM telemetry_sample s JOIN elevator e ON"
            " e.registration_code = s.elevator_id WHERE s.service_mode <> 1"
            " AND e.maintenance_company IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
        )
        create_scoped_role(run.admin_url, CITY_COMPANY_ROLE, maintenance_company=str(company))
        yield CityRun(
            admin_url=run.admin_url,
            writer_url=run.writer_url,
            analyst_url=run.url("tianyan_analyst"),
            regulator_url=run.url("tianyan_regulator"),
            public_url=run.url("tianyan_public"),
            start=CITY_START,
            end=CITY_START + dt.timedelta(seconds=CITY_DURATION_S),
            elevators=elevators,
            stream=stream,
            labels=stream.with_name("city.labels.jsonl"),
            samples=samples,
            rescue_journal=journal,
        )
