"""``tianyan backfill`` on the real TimescaleDB (issue 16, part 5).

A simulated fleet with faults is stored through the worker's own detection loop
(:class:`streams.ingest.Ingest`) and sinks (:class:`streams.sinks.TimescaleSink`), one alert
of it applied to an incident by the dispatcher's store. Then the detectors' thresholds
change and a backfill over the middle of the run replaces windows, trips and alerts there
— exactly there — records what it did, leaves the incident alone, and leaves the ledger
verifying; a second run of it changes nothing, and a plain deletion is still caught.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from detectors.alerts import Alert
from detectors.thresholds import ElevatorLimits, Thresholds
from foundation.settings import Settings, role_url
from registry.store import upsert
from replay.backfill import BackfillError, backfill, slice_rows
from rescue import store
from rescue.ledger import verify, verify_snapshot
from streams.ingest import Ingest, RawRecord
from tianyan.bench_backfill import store_stream
from tianyan.harness import create_database, drop_database

from .detectors_support import FAULTS_TOML, START, elevators, run_simulation

TIANYAN = str(Path(sys.executable).with_name("tianyan"))
CARS = 3
MINUTES = 20
#: The backfilled range: minutes 6 to 14 of the run.
LO = START + dt.timedelta(minutes=6)
HI = START + dt.timedelta(minutes=14)
#: The corrected thresholds: overspeed judged tighter, trapping confirmed later.
NEW = Thresholds(overspeed_ratio=1.05, trapped_after_s=45.0)
ENDPOINT = "http://a.invalid/hook"


@dataclass
class Stored:
    admin_url: str
    writer_url: str
    records: list[bytes]
    limits: dict[str, ElevatorLimits]
    held_alert_id: str  # an in-range alert an incident holds
    applied_alert_id: str  # an in-range alert the dispatcher applied to no incident


def _derive(records: list[bytes], limits: dict[str, ElevatorLimits], th: Thresholds) -> Ingest:
    return Ingest(5_000, limits_for=lambda e: limits[e], thresholds=th)


def _alerts_raised(
    records: list[bytes], limits: dict[str, ElevatorLimits], th: Thresholds
) -> list[Alert]:
    ingest = _derive(records, limits, th)
    out: list[Alert] = []
    for i, v in enumerate(records):
        out += ingest.process([RawRecord(None, v, 0, i)]).alerts
        out += ingest.tick().alerts
    return out


@pytest.fixture(scope="module")
def stored(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    name = f"tianyan_test_backfill_{uuid.uuid4().hex[:8]}"
    admin_url = create_database(settings, name)
    try:
        from sql.migrate import migrate

        migrate(admin_url)
        writer_url = role_url(admin_url, "tianyan_writer")
        cars = elevators(CARS)
        upsert(admin_url, cars)
        limits = {e.registration_code: ElevatorLimits.of(e) for e in cars}
        path = tmp_path_factory.mktemp("backfill") / "run.jsonl"
        run_simulation(path, FAULTS_TOML, cars, MINUTES * 60, seed=11)
        records = [line for line in path.read_bytes().splitlines() if line.strip()]
        store_stream(writer_url, records, limits.__getitem__, Thresholds(), 5_000)
        # the dispatcher applies two in-range alerts the new thresholds do not raise: a raised
        # one, which opens an incident a backfill must not touch, and a clearing of another
        # car or type, which finds no incident to resolve (its incident_alert names none)
        rederived = [str(a.alert_id) for a in _alerts_raised(records, limits, NEW)]
        stored_alerts = {str(a.alert_id): a for a in _alerts_raised(records, limits, Thresholds())}
        pick = (
            "SELECT alert_id::text FROM tianyan.alert WHERE state = %s"
            " AND condition_since >= %s AND raised_at < %s AND alert_id <> ALL(%s::uuid[])"
            " AND NOT EXISTS (SELECT FROM tianyan.alert o WHERE o.alert_id = %s"
            "  AND (o.elevator_id, o.alert_type) = (alert.elevator_id, alert.alert_type))"
            " ORDER BY raised_at LIMIT 1"
        )
        with psycopg.connect(admin_url) as conn:
            held = conn.execute(pick, ("raised", LO, HI, rederived, None)).fetchone()
            assert held is not None, "the new thresholds raise every alert of the range again"
            unheld = conn.execute(pick, ("cleared", LO, HI, rederived, held[0])).fetchone()
            assert unheld is not None, "the new thresholds clear every alert of the range again"
        config = store.DispatchConfig(
            (ENDPOINT,), (10**8, 2 * 10**8, 3 * 10**8), 1800, rescue_min_severity="info"
        )
        with psycopg.connect(writer_url) as conn:
            for alert_id in (held[0], unheld[0]):
                store.apply_alert(
                    conn, stored_alerts[alert_id], config, received_at=dt.datetime.now(dt.UTC)
                )
            assert conn.execute(
                "SELECT incident_id FROM tianyan.incident_alert WHERE alert_id = %s", unheld
            ).fetchone() == (None,)
        yield Stored(admin_url, writer_url, records, limits, held[0], unheld[0])
    finally:
        drop_database(settings, name)


def _rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(query, params).fetchall()]


def _windows(url: str) -> list[tuple[Any, ...]]:
    return _rows(
        url, "SELECT * FROM tianyan.window_feature ORDER BY elevator_id, width_s, bucket_start"
    )


def _alert_rows(url: str) -> dict[str, tuple[Any, ...]]:
    rows = _rows(
        url,
        "SELECT alert_id::text, alert_key, state, raised_at, condition_since, evidence::text"
        " FROM tianyan.alert",
    )
    return {r[0]: r for r in rows}


def _in_range(a: Alert) -> bool:
    lo, hi = LO.timestamp() * 1000, HI.timestamp() * 1000
    return lo <= a.condition_since_ms < hi and a.raised_at_ms < hi and a.alert_type != "clock_fault"


@pytest.mark.parametrize("packed", [False, True], ids=["recent", "packed"])
def test_backfill_with_the_same_thresholds_changes_nothing(stored: Stored, packed: bool) -> None:
    """The stored derivation is reproduced, from recent samples and, once the worker's
    hourly turn has packed them into elevator-minutes, from packed ones."""
    if packed:
        with psycopg.connect(stored.writer_url, autocommit=True) as conn:
            assert conn.execute("SELECT tianyan.pack_raw_chunks(1)").fetchone()[0] > 0
            assert not conn.execute("SELECT 1 FROM tianyan.telemetry_sample LIMIT 1").fetchall()
    before = (_windows(stored.admin_url), _alert_rows(stored.admin_url))
    summary = backfill(
        stored.writer_url, LO, HI, thresholds=Thresholds(), grace_ms=5_000, progress=False
    )
    assert summary.slices == CARS
    assert summary.windows.unchanged > 0 and summary.trips.unchanged > 0
    assert summary.alerts.unchanged > 0
    changed = [
        (t, c)
        for t, c in (
            ("windows", summary.windows),
            ("trips", summary.trips),
            ("alerts", summary.alerts),
        )
        if c.deleted or c.inserted
    ]
    assert not changed, f"the live derivation was not reproduced: {changed}"
    assert (_windows(stored.admin_url), _alert_rows(stored.admin_url)) == before


def test_backfill_replaces_exactly_the_range_and_records_it(stored: Stored) -> None:
    url = stored.admin_url
    # an old derivation's mistakes, inside the range and outside it
    with psycopg.connect(url) as conn:
        inside = conn.execute(
            "UPDATE tianyan.window_feature SET speed_max_mps = 99 WHERE (elevator_id, width_s,"
            " bucket_start) = (SELECT elevator_id, width_s, bucket_start FROM"
            " tianyan.window_feature WHERE bucket_start >= %s AND bucket_start < %s"
            " ORDER BY 1, 2, 3 LIMIT 1) RETURNING elevator_id, width_s, bucket_start",
            (LO, HI),
        ).fetchone()
        outside = conn.execute(
            "UPDATE tianyan.window_feature SET speed_max_mps = 99 WHERE (elevator_id, width_s,"
            " bucket_start) = (SELECT elevator_id, width_s, bucket_start FROM"
            " tianyan.window_feature WHERE bucket_start < %s ORDER BY 3 DESC LIMIT 1)"
            " RETURNING elevator_id, width_s, bucket_start",
            (LO,),
        ).fetchone()
        gone_trip = conn.execute(
            "DELETE FROM tianyan.trip WHERE (elevator_id, start_time) = (SELECT elevator_id,"
            " start_time FROM tianyan.trip WHERE start_time >= %s AND start_time < %s"
            " ORDER BY 2 LIMIT 1) RETURNING elevator_id, start_time",
            (LO, HI),
        ).fetchone()
    assert inside and outside and gone_trip
    alerts_before = _alert_rows(url)
    incidents_before = _rows(url, "SELECT * FROM tianyan.incident ORDER BY incident_id")
    trips_outside = _rows(
        url,
        "SELECT * FROM tianyan.trip WHERE start_time < %s OR start_time >= %s ORDER BY 1, 2",
        LO,
        HI,
    )

    summary = backfill(stored.writer_url, LO, HI, thresholds=NEW, grace_ms=5_000, progress=False)

    # windows and trips: the range corrected, outside untouched
    assert summary.windows.deleted == 1 and summary.windows.inserted == 1
    assert summary.trips.inserted == 1 and summary.trips.deleted == 0
    speed = (
        "SELECT speed_max_mps FROM tianyan.window_feature"
        " WHERE elevator_id = %s AND width_s = %s AND bucket_start = %s"
    )
    assert _rows(url, speed, *inside)[0][0] != 99
    assert _rows(url, speed, *outside)[0][0] == 99
    assert _rows(
        url, "SELECT 1 FROM tianyan.trip WHERE elevator_id = %s AND start_time = %s", *gone_trip
    )
    assert trips_outside == _rows(
        url,
        "SELECT * FROM tianyan.trip WHERE start_time < %s OR start_time >= %s ORDER BY 1, 2",
        LO,
        HI,
    )
    # alerts: in the range, what the new thresholds raise (but the one an incident holds);
    # outside it, what was there
    expected = {
        str(a.alert_id) for a in _alerts_raised(stored.records, stored.limits, NEW) if _in_range(a)
    }
    after = _alert_rows(url)
    lo, hi = LO, HI
    in_range = {
        i for i, r in after.items() if lo <= r[4] < hi and r[3] < hi and ":clock_fault:" not in r[1]
    }
    assert in_range - {stored.held_alert_id} == expected - {stored.held_alert_id}
    assert stored.held_alert_id in in_range
    assert after[stored.held_alert_id] == alerts_before[stored.held_alert_id]
    outside_before = {i: r for i, r in alerts_before.items() if not (lo <= r[4] < hi and r[3] < hi)}
    outside_after = {i: r for i, r in after.items() if not (lo <= r[4] < hi and r[3] < hi)}
    assert outside_after == outside_before
    assert summary.alerts.deleted > 0 and summary.alerts.inserted > 0 and summary.alerts_kept == 1
    assert _rows(url, "SELECT * FROM tianyan.incident ORDER BY incident_id") == incidents_before

    # the audit: the run, its slices and their ledger entries
    run = _rows(
        url,
        "SELECT range_start, range_end, thresholds_sha256, thresholds ->> 'trapped_after_s',"
        " slices, finished_at IS NOT NULL, requested_by FROM tianyan.backfill_run"
        " WHERE backfill_run_id = %s",
        summary.backfill_run_id,
    )
    assert run and run[0][:6] == (LO, HI, summary.thresholds_sha256, "45.0", CARS, True)
    slices = slice_rows(url, summary.backfill_run_id)
    assert len(slices) == CARS
    assert sum(s["alerts_deleted"] for s in slices) == summary.alerts.deleted
    assert sum(s["windows_deleted"] for s in slices) == 1
    assert [str(k) for s in slices for k in s["kept_alert_ids"]] == [stored.held_alert_id]
    removed = {str(k) for s in slices for k in s["removed_alert_ids"]}
    assert removed and removed.isdisjoint(after.keys() - expected)
    # the clearing the dispatcher applied to no incident is removed with its record of it
    assert stored.applied_alert_id in removed
    assert not _rows(
        url, "SELECT 1 FROM tianyan.incident_alert WHERE alert_id = %s", stored.applied_alert_id
    )
    entries = _rows(
        url,
        "SELECT seq, payload FROM tianyan.audit_ledger WHERE entry_type = 'backfill'"
        " AND payload ->> 'backfill_run_id' = %s ORDER BY seq",
        summary.backfill_run_id,
    )
    assert sorted(e[0] for e in entries) == sorted(s["ledger_seq"] for s in slices)
    ledgered = {r["key"] for _, p in entries for r in p["removed"] if r["table"] == "alert"}
    assert ledgered == removed
    assert [
        r["key"] for _, p in entries for r in p["removed"] if r["table"] == "incident_alert"
    ] == [stored.applied_alert_id]

    # the ledger verifies after the backfill
    report = verify(url)
    assert report.ok, report.problems

    # the same backfill again changes nothing
    again = backfill(stored.writer_url, LO, HI, thresholds=NEW, grace_ms=5_000, progress=False)
    for counts in (again.windows, again.trips, again.alerts):
        assert counts.deleted == 0 and counts.inserted == 0
    assert again.windows.unchanged == summary.windows.unchanged + summary.windows.inserted
    assert again.alerts.unchanged == summary.alerts.unchanged + summary.alerts.inserted
    assert _alert_rows(url) == after
    assert verify(url).ok


def test_a_plain_deletion_is_still_caught_after_a_backfill(stored: Stored) -> None:
    backfill(stored.writer_url, LO, HI, thresholds=NEW, grace_ms=5_000, progress=False)
    with psycopg.connect(stored.admin_url) as conn, conn.transaction(force_rollback=True):
        # one the backfill wrote, and one outside its range
        victims = conn.execute(
            "DELETE FROM tianyan.alert WHERE alert_id IN ("
            " (SELECT alert_id FROM tianyan.alert a WHERE condition_since >= %s AND"
            "  raised_at < %s AND NOT EXISTS (SELECT FROM tianyan.incident_alert i"
            "  WHERE i.alert_id = a.alert_id) ORDER BY 1 LIMIT 1),"
            " (SELECT alert_id FROM tianyan.alert WHERE condition_since < %s ORDER BY 1 LIMIT 1))"
            " RETURNING alert_id::text",
            (LO, HI, LO),
        ).fetchall()
        assert len(victims) == 2
        report = verify_snapshot(conn)
        assert ("alert", "deleted") in report.tampered
        assert all(any(v[0][:8] in p for p in report.problems) for v in victims)


def test_dry_run_writes_nothing_and_the_cli_reports(stored: Stored, tmp_path: Path) -> None:
    url = stored.admin_url
    runs = _rows(url, "SELECT count(*) FROM tianyan.backfill_run")[0][0]
    ledger = _rows(url, "SELECT count(*) FROM tianyan.audit_ledger")[0][0]
    alerts = _alert_rows(url)
    toml = tmp_path / "thresholds.toml"
    toml.write_text("overspeed_ratio = 1.3\ntrapped_after_s = 35.0\n")
    env = {
        **os.environ,
        "TIANYAN_DATABASE_URL": stored.writer_url,
        "TIANYAN_THRESHOLDS_FILE": str(toml),
    }
    args = [TIANYAN, "backfill", "--start", LO.strftime("%Y-%m-%dT%H:%M:%S")]
    done = subprocess.run(
        [*args, "--end", HI.strftime("%Y-%m-%dT%H:%M:%S"), "--dry-run", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["dry_run"] is True and summary["slices"] == CARS
    assert summary["alerts"]["deleted"] + summary["alerts"]["inserted"] > 0
    assert _rows(url, "SELECT count(*) FROM tianyan.backfill_run")[0][0] == runs
    assert _rows(url, "SELECT count(*) FROM tianyan.audit_ledger")[0][0] == ledger
    assert _alert_rows(url) == alerts
    # bad arguments are named
    bad = subprocess.run(
        [*args, "--end", LO.strftime("%Y-%m-%dT%H:%M:%S")], env=env, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "is not after --start" in bad.stderr
    bad = subprocess.run(
        [*args, "--end", HI.strftime("%Y-%m-%dT%H:%M:%S"), "--district", "Atlantis"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "--district Atlantis: not in the registry" in bad.stderr
    # narrowed to an elevator, or to a district
    eid, district = _rows(
        url, "SELECT registration_code::text, district FROM tianyan.elevator ORDER BY 1 LIMIT 1"
    )[0]
    in_district = _rows(url, "SELECT count(*) FROM tianyan.elevator WHERE district = %s", district)
    for narrowed, slices in (
        ({"elevators": [eid]}, 1),
        ({"districts": [district]}, in_district[0][0]),
    ):
        got = backfill(
            stored.writer_url,
            LO,
            HI,
            thresholds=NEW,
            grace_ms=5_000,
            dry_run=True,
            progress=False,
            **narrowed,  # type: ignore[arg-type]
        )
        assert got.slices == slices, narrowed
    with pytest.raises(BackfillError, match="raw samples are stored from"):
        backfill(
            stored.writer_url,
            START - dt.timedelta(days=30),
            HI,
            thresholds=NEW,
            grace_ms=5_000,
            progress=False,
        )
