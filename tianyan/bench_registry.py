"""``tianyan bench registry``: what fusing a city's registry exports and counting reporting
terminals cost at the city's size.

A database of the run's own gets a synthetic registry of ``--elevators`` (default 40,000,
the city has 30,000-45,000), then, timed:

- the whole export, first import (every elevator inserted, every value's provenance);
- the same export again (nothing changes: every value weighed, nothing written);
- a partial export of the inspection agency (inspection dates only, every elevator, most
  of them different from the registry's: updates, and one conflict each);
- ``city_coverage`` with the terminals that reported in the last 24 h, once every fitted
  elevator has a day of 1-minute windows (one every 30 minutes, 48 per elevator).

Figures are printed, the last line as JSON; the database is dropped afterwards unless
``--keep``.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from foundation.settings import Settings

AS_OF = dt.date(2026, 12, 1)


def run(settings: Settings, *, elevators: int, keep: bool) -> dict[str, object]:
    from registry.generate import generate
    from registry.store import fuse_rows, read_csv, upsert
    from sql.migrate import migrate
    from tianyan.harness import create_database, drop_database

    dbname = f"tianyan_bench_registry_{uuid.uuid4().hex[:8]}"
    url = create_database(settings, dbname)
    result: dict[str, object] = {"elevators": elevators}
    try:
        migrate(url)
        fleet = generate(20210101, elevators, AS_OF)
        started = time.perf_counter()
        first = upsert(url, fleet, "registry", AS_OF)
        result["full_import_s"] = round(time.perf_counter() - started, 2)
        result["full_import_inserted"] = first.inserted
        started = time.perf_counter()
        again = upsert(url, fleet, "registry", AS_OF)
        result["same_export_again_s"] = round(time.perf_counter() - started, 2)
        result["same_export_again_unchanged"] = again.unchanged
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "inspections.csv"
            with path.open("w", encoding="utf-8") as f:
                f.write("registration_code,last_inspection_on\n")
                for i, e in enumerate(fleet):
                    f.write(f"{e.registration_code},{AS_OF + dt.timedelta(days=i % 3)}\n")
            started = time.perf_counter()
            partial = fuse_rows(
                url, read_csv(path).rows, "inspection agency", AS_OF + dt.timedelta(days=3)
            )
            result["partial_export_s"] = round(time.perf_counter() - started, 2)
        result["partial_export_updated"] = partial.updated
        result["partial_export_conflicts"] = len(partial.conflicts)
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO window_feature (bucket_start, elevator_id, width_s, samples)"
                " SELECT date_trunc('minute', now()) - m * interval '1 minute',"
                " registration_code, 60, 1"
                " FROM elevator, generate_series(0, 1439, 30) m WHERE has_terminal"
            )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
            timings = []
            for _ in range(3):
                started = time.perf_counter()
                row = conn.execute("SELECT reporting_24h, with_terminal FROM city_coverage")
                reporting, declared = row.fetchone() or (None, None)
                timings.append(time.perf_counter() - started)
        result["city_coverage_ms"] = round(sorted(timings)[1] * 1000)
        result["reporting_24h"] = reporting
        result["with_terminal"] = declared
    finally:
        if not keep:
            drop_database(settings, dbname)
    return result
