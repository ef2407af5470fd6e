"""The registry: a deterministic synthetic city, and imports that report bad rows and keep
good ones, on the real TimescaleDB."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import subprocess
from dataclasses import asdict
from pathlib import Path

import psycopg
import pytest

from registry import BUILDING_TYPES, DISTRICT_NAMES, ELEVATOR_COLUMNS, Elevator
from registry.generate import generate
from registry.store import RegistryError, read_csv, upsert, write_csv
from sql.migrate import migrate

from .conftest import TIANYAN

AS_OF = dt.date(2026, 11, 29)


def _csv(elevators: list) -> str:
    buf = io.StringIO()
    write_csv(elevators, buf)
    return buf.getvalue()


def _row(e: Elevator, **changes: object) -> str:
    """One CSV line of ``e`` with some fields replaced by raw text."""
    values = {**{k: ("" if v is None else v) for k, v in asdict(e).items()}, **changes}
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([values[c] for c in ELEVATOR_COLUMNS])
    return buf.getvalue()


def test_generation_is_deterministic_and_plausible() -> None:
    a, b = generate(7, 1500, AS_OF), generate(7, 1500, AS_OF)
    assert _csv(a) == _csv(b)
    assert _csv(generate(8, 1500, AS_OF)) != _csv(a)
    codes = [e.registration_code for e in a]
    assert len(set(codes)) == len(codes)
    assert all(len(c) == 20 and c.isdigit() for c in codes)
    assert {e.district for e in a} == set(DISTRICT_NAMES)
    assert {e.building_type for e in a} <= set(BUILDING_TYPES)
    speeds = [e.rated_speed_mps for e in a]
    # Mostly 1.0-1.75 m/s, some 2.5, a few 4 m/s towers.
    assert sum(1.0 <= s <= 1.75 for s in speeds) / len(speeds) > 0.7
    assert any(s == 2.5 for s in speeds) and 0 < sum(s == 4.0 for s in speeds) < 30
    assert all(630 <= e.rated_load_kg <= 1600 for e in a)
    # Coordinates near Lianyungang (34.1-34.9 N, 118.7-119.6 E).
    assert all(33.9 < (e.latitude or 0) < 35.0 and 118.6 < (e.longitude or 0) < 119.7 for e in a)
    fitted = sum(e.has_terminal for e in a) / len(a)
    assert 0.3 < fitted < 0.8


def test_import_reports_bad_rows_and_keeps_good_ones(tmp_path: Path, scratch_db: str) -> None:
    migrate(scratch_db)
    good = generate(3, 5, AS_OF)
    lines = _csv(good).splitlines()
    header, rows = lines[0], lines[1:]
    bad = [
        _row(good[0], registration_code="1234"),  # line 7
        _row(good[1], district="Atlantis"),  # line 8
        _row(good[2], rated_load_kg="-5"),  # line 9
        rows[3],  # line 10: repeats line 5
        "",  # line 11: blank, skipped
        _row(good[4], floors="many"),  # line 12
    ]
    path = tmp_path / "export.csv"
    path.write_text("\n".join([header, *rows, *bad]) + "\n", encoding="utf-8")
    result = read_csv(path)
    assert [e.registration_code for e in result.elevators] == [e.registration_code for e in good]
    reasons = {b.line: b.reason for b in result.bad_rows}
    assert "registration_code: '1234' is not 20 digits" in reasons[7]
    assert "district: 'Atlantis'" in reasons[8]
    assert "rated_load_kg" in reasons[9]
    assert f"repeats line {5}" in reasons[10]
    assert "floors" in reasons[12]
    assert len(reasons) == 5

    first = upsert(scratch_db, result.elevators)
    assert (first.inserted, first.updated, first.unchanged) == (5, 0, 0)
    # Re-import with one change: an update, no duplicate.
    changed = path.read_text(encoding="utf-8").replace(
        good[0].address, good[0].address + "（新）", 1
    )
    path.write_text(changed, encoding="utf-8")
    again = upsert(scratch_db, read_csv(path).elevators)
    assert (again.inserted, again.updated, again.unchanged) == (0, 1, 4)
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT count(*) FROM tianyan.elevator").fetchone() == (5,)
        assert conn.execute(
            "SELECT address FROM tianyan.elevator WHERE registration_code = %s",
            [good[0].registration_code],
        ).fetchone() == (good[0].address + "（新）",)


def test_unreadable_exports_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("registration_code,address\n1,2\n")
    with pytest.raises(RegistryError, match="lacks column"):
        read_csv(p)
    p.write_text(_csv(generate(1, 1, AS_OF)).replace("has_terminal", "has_terminal,colour", 1))
    with pytest.raises(RegistryError, match="unknown column"):
        read_csv(p)
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(RegistryError, match="not UTF-8"):
        read_csv(p)


def test_import_command_exit_code_and_messages(tmp_path: Path, scratch_db: str) -> None:
    migrate(scratch_db)
    good = generate(5, 3, AS_OF)
    text = _csv(good) + _row(generate(6, 1, AS_OF)[0], building_type="castle") + "\n"
    path = tmp_path / "export.csv"
    path.write_text(text, encoding="utf-8")
    env = {**os.environ, "TIANYAN_DATABASE_URL": scratch_db}
    res = subprocess.run(
        [TIANYAN, "registry", "import", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert f"{path}:5: building_type" in res.stderr
    assert '"good_rows": 3' in res.stdout and '"inserted": 3' in res.stdout
