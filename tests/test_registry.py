"""The registry: a deterministic synthetic city; imports, whole or partial, that report bad
rows and keep good ones and fuse values by source and date (provenance, conflicts); coverage
of terminals declared and reporting — on the real TimescaleDB."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import os
import subprocess
from dataclasses import asdict
from pathlib import Path

import psycopg
import pytest

from registry import BUILDING_TYPES, DISTRICT_NAMES, ELEVATOR_COLUMNS, Elevator
from registry.fusion import Provenance, fuse
from registry.generate import generate
from registry.store import RegistryError, conflicts, fuse_rows, read_csv, upsert, write_csv
from rescue.ledger import verify
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
    assert [r.registration_code for r in result.rows] == [e.registration_code for e in good]
    reasons = {b.line: b.reason for b in result.bad_rows}
    assert "registration_code: '1234' is not 20 digits" in reasons[7]
    assert "district: 'Atlantis'" in reasons[8]
    assert "rated_load_kg" in reasons[9]
    assert f"repeats line {5}" in reasons[10]
    assert "floors" in reasons[12]
    assert len(reasons) == 5

    first = fuse_rows(scratch_db, result.rows, "registry", AS_OF)
    assert (first.inserted, first.updated, first.unchanged) == (5, 0, 0)
    # Re-import with one change: an update, no duplicate.
    changed = path.read_text(encoding="utf-8").replace(
        good[0].address, good[0].address + "（新）", 1
    )
    path.write_text(changed, encoding="utf-8")
    again = fuse_rows(scratch_db, read_csv(path).rows, "registry", AS_OF)
    assert (again.inserted, again.updated, again.unchanged) == (0, 1, 4)
    assert again.conflicts == ()  # the same source correcting itself
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT count(*) FROM tianyan.elevator").fetchone() == (5,)
        assert conn.execute(
            "SELECT address FROM tianyan.elevator WHERE registration_code = %s",
            [good[0].registration_code],
        ).fetchone() == (good[0].address + "（新）",)


def test_unreadable_exports_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("address,district\n1,2\n")
    with pytest.raises(RegistryError, match=r"lacks column\(s\) registration_code"):
        read_csv(p)
    p.write_text("registration_code,floors,floors\n1,2,3\n")
    with pytest.raises(RegistryError, match="floors repeated"):
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


# -- fusion, not overwrite ---------------------------------------------------------------------

CODE = "31103207062019000001"
REGISTRY = Provenance("registry", dt.date(2026, 11, 1))


@pytest.mark.parametrize(
    ("offered_value", "offer", "changes", "outcome", "stale"),
    [
        # another source, newer: replaces, and the conflict is recorded
        (5, Provenance("agency", dt.date(2026, 11, 2)), {"floors": 5}, "replaced", []),
        # another source, the same date or older: the stored value stays, conflict recorded
        (5, Provenance("agency", dt.date(2026, 11, 1)), {}, "kept", []),
        (5, Provenance("agency", dt.date(2026, 10, 1)), {}, "kept", []),
        # the same source, the same date or newer: its own correction, no conflict
        (5, Provenance("registry", dt.date(2026, 11, 1)), {"floors": 5}, None, []),
        # the same source, older: stale, nothing changes
        (5, Provenance("registry", dt.date(2026, 10, 1)), {}, None, ["floors"]),
        # the same value from anyone: no change, no conflict
        (9, Provenance("agency", dt.date(2026, 10, 1)), {}, None, []),
    ],
)
def test_the_precedence_rule(
    offered_value: int,
    offer: Provenance,
    changes: dict[str, object],
    outcome: str | None,
    stale: list[str],
) -> None:
    r = fuse(CODE, {"floors": 9}, {"floors": REGISTRY}, {"floors": offered_value}, offer)
    assert r.changes == changes
    assert [c.outcome for c in r.conflicts] == ([outcome] if outcome else [])
    assert r.stale == stale
    if changes:
        assert r.provenance == {"floors": offer}
    # a value nothing is known of yet is simply taken
    new = fuse(CODE, {}, {}, {"floors": offered_value}, offer)
    assert (new.changes, new.conflicts) == ({"floors": offered_value}, [])


def _stored(url: str) -> dict[str, dict[str, object]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT {', '.join(ELEVATOR_COLUMNS)} FROM elevator ORDER BY registration_code"
        ).fetchall()
    return {r[0]: dict(zip(ELEVATOR_COLUMNS, r, strict=True)) for r in rows}


def _provenance(url: str, code: str) -> dict[str, tuple[str, str, dt.date]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, value, source, as_of FROM elevator_provenance"
            " WHERE registration_code = %s",
            [code],
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_a_partial_export_updates_only_its_columns_and_keeps_sources(
    tmp_path: Path, scratch_db: str
) -> None:
    migrate(scratch_db)
    fleet = generate(11, 3, AS_OF)
    a, b, c = (e.registration_code for e in fleet)
    assert upsert(scratch_db, fleet, "registry", AS_OF).inserted == 3
    before = _stored(scratch_db)
    assert _provenance(scratch_db, a)["floors"] == (str(fleet[0].floors), "registry", AS_OF)

    # The inspection agency's file: inspection dates only, two elevators, one cell empty.
    agency_file = tmp_path / "inspections.csv"
    agency_file.write_text(
        f"registration_code,last_inspection_on\n{a},2026-12-02\n{b},\n", encoding="utf-8"
    )
    agency_day = AS_OF + dt.timedelta(days=5)
    read = read_csv(agency_file)
    assert read.columns == ("last_inspection_on",)
    r = fuse_rows(scratch_db, read.rows, "inspection agency", agency_day)
    assert (r.inserted, r.updated, r.unchanged) == (0, 1, 1)
    after = _stored(scratch_db)
    assert after[a] == before[a] | {"last_inspection_on": dt.date(2026, 12, 2)}
    assert after[b] == before[b] and after[c] == before[c]  # an empty cell erases nothing
    assert _provenance(scratch_db, a)["last_inspection_on"] == (
        "2026-12-02",
        "inspection agency",
        agency_day,
    )
    assert _provenance(scratch_db, a)["address"][1:] == ("registry", AS_OF)
    # a disagreement with the registry's value: recorded, with what the rule did
    [conflict] = r.conflicts
    assert (conflict.column, conflict.outcome) == ("last_inspection_on", "replaced")
    assert conflict.stored == Provenance("registry", AS_OF)

    # A user unit's contact list, dated before the registry's export: its contact differs,
    # the registry's newer value is kept, and the conflict is stored for the keeper.
    unit_file = tmp_path / "contacts.csv"
    unit_file.write_text(
        f"registration_code,maintenance_contact,user_unit\n{b},0518-12345678,\n",
        encoding="utf-8",
    )
    old_day = AS_OF - dt.timedelta(days=10)
    r = fuse_rows(scratch_db, read_csv(unit_file).rows, "unit 海州物业", old_day)
    assert [(x.column, x.outcome) for x in r.conflicts] == [("maintenance_contact", "kept")]
    assert _stored(scratch_db)[b] == before[b]
    stored = conflicts(scratch_db, registration_code=b)
    assert [(x["column_name"], x["outcome"], x["offered_value"]) for x in stored] == [
        ("maintenance_contact", "kept", "0518-12345678")
    ]
    assert stored[0]["stored_value"] == before[b]["maintenance_contact"]
    assert len(conflicts(scratch_db, source="inspection agency")) == 1

    # The agency's next, newer file is its own update: no conflict; its older one is stale.
    agency_file.write_text(f"registration_code,last_inspection_on\n{a},2026-12-09\n")
    r = fuse_rows(scratch_db, read_csv(agency_file).rows, "inspection agency", agency_day)
    assert (r.updated, r.conflicts) == (1, ())
    agency_file.write_text(f"registration_code,last_inspection_on\n{a},2026-01-01\n")
    r = fuse_rows(scratch_db, read_csv(agency_file).rows, "inspection agency", old_day)
    assert (r.updated, r.stale_values, r.conflicts) == (0, 1, ())
    assert _stored(scratch_db)[a]["last_inspection_on"] == dt.date(2026, 12, 9)
    # every write is ledgered: the registry verifies clean
    report = verify(scratch_db)
    assert report.ok, report.problems


def test_manufacturer_and_model_import_and_the_command_prints_conflicts(
    tmp_path: Path, scratch_db: str
) -> None:
    migrate(scratch_db)
    fleet = [dataclasses.replace(e, manufacturer=None, model=None) for e in generate(12, 2, AS_OF)]
    upsert(scratch_db, fleet, "registry", AS_OF)
    a, b = (e.registration_code for e in fleet)
    path = tmp_path / "products.csv"
    path.write_text(
        "registration_code,manufacturer,model,floors\n"
        f"{a},通力电梯有限公司,KONE MonoSpace 500,{fleet[0].floors + 1}\n"
        f"{b},康力电梯股份有限公司,KLK2,\n"
        "12345678901234567890,康力电梯股份有限公司,KLW,\n",
        encoding="utf-8",
    )
    env = {**os.environ, "TIANYAN_DATABASE_URL": scratch_db}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TIANYAN, "registry", *args], env=env, capture_output=True, text=True, timeout=120
        )

    res = run("import", str(path), "--source", "quality bureau", "--as-of", "2026-12-01")
    assert res.returncode == 1, res.stderr  # the unknown elevator is a bad row
    assert f"{path}:4: registration_code: 12345678901234567890 is not in the registry" in (
        res.stderr
    )
    assert "lacks address, district" in res.stderr
    assert (
        f"{path}:2: conflict: {a} floors: stored '{fleet[0].floors}' (registry, as of {AS_OF})"
        f" vs '{fleet[0].floors + 1}' (quality bureau, as of 2026-12-01): replaced (newer)"
    ) in res.stderr
    summary = json.loads(res.stdout)
    assert summary["columns"] == ["floors", "manufacturer", "model"]
    assert (summary["updated"], summary["conflicts"], summary["bad_rows"]) == (2, 1, 1)
    stored = _stored(scratch_db)
    assert (stored[a]["manufacturer"], stored[a]["model"]) == (
        "通力电梯有限公司",
        "KONE MonoSpace 500",
    )
    assert (stored[b]["manufacturer"], stored[b]["model"]) == ("康力电梯股份有限公司", "KLK2")
    assert stored[b]["floors"] == fleet[1].floors
    listed = [json.loads(line) for line in run("conflicts", "--elevator", a).stdout.splitlines()]
    assert [(c["column_name"], c["outcome"]) for c in listed] == [("floors", "replaced")]
    shown = [json.loads(line) for line in run("provenance", b).stdout.splitlines()]
    assert {c["column_name"]: c["source"] for c in shown}["model"] == "quality bureau"
    assert verify(scratch_db).ok


def test_facts_ledgered_before_manufacturer_and_model_still_verify(
    scratch_db: str, migrations_copy: Path
) -> None:
    mig_dir, idem_dir = migrations_copy / "migrations", migrations_copy / "idempotent"
    fusion = next(mig_dir.glob("0014_*.sql"))
    held = fusion.read_text()
    fusion.unlink()
    migrate(scratch_db, mig_dir, idem_dir)
    old_columns = [c for c in ELEVATOR_COLUMNS if c not in ("manufacturer", "model")]
    fleet = generate(13, 3, AS_OF)
    with psycopg.connect(scratch_db) as conn:  # written and ledgered as before 0014
        conn.cursor().executemany(
            f"INSERT INTO elevator ({', '.join(old_columns)})"
            f" VALUES ({', '.join(['%s'] * len(old_columns))})",
            [[getattr(e, c) for c in old_columns] for e in fleet],
        )
        conn.execute("SELECT ledger_facts('elevator', %s)", [[e.registration_code for e in fleet]])
    fusion.write_text(held)
    migrate(scratch_db, mig_dir, idem_dir)
    assert verify(scratch_db).ok
    # the values stored before have a provenance of their own, dated by their last update
    assert {v[1] for v in _provenance(scratch_db, fleet[0].registration_code).values()} == {
        "before provenance (migration 0014)"
    }
    upsert(scratch_db, fleet[:1], "registry", AS_OF)  # now with a manufacturer and model
    report = verify(scratch_db)
    assert report.ok, report.problems
    with psycopg.connect(scratch_db) as conn:
        conn.execute("UPDATE elevator SET model = 'forged' WHERE model IS NOT NULL")
    assert verify(scratch_db).tampered == [("elevator", "edited")]


# -- coverage: declared and reporting ----------------------------------------------------------


def test_coverage_counts_terminals_reporting_in_the_last_24_hours(
    tmp_path: Path, scratch_db: str
) -> None:
    migrate(scratch_db)
    base = generate(14, 1, AS_OF)[0]

    def elevator(n: int, district: str, has_terminal: bool) -> Elevator:
        return dataclasses.replace(
            base,
            registration_code=f"{31103207060000000000 + n}",
            district=district,
            has_terminal=has_terminal,
        )

    fleet = [
        elevator(1, "Haizhou", True),  # declared, reported 1 h ago
        elevator(2, "Haizhou", True),  # declared, last reported 30 h ago: silent
        elevator(3, "Haizhou", False),  # undeclared, reported 2 h ago
        elevator(4, "Haizhou", True),  # declared, never reported
        elevator(5, "Ganyu", True),  # declared, reported 23 h ago
        elevator(6, "Ganyu", False),  # nothing
    ]
    upsert(scratch_db, fleet)
    reports_hours_ago = {1: [1, 40], 2: [30, 50], 3: [2], 5: [23]}
    with psycopg.connect(scratch_db) as conn:
        for n, hours in reports_hours_ago.items():
            for h in hours:
                for width in (1, 60):
                    conn.execute(
                        "INSERT INTO window_feature (bucket_start, elevator_id, width_s, samples)"
                        " VALUES (date_trunc('minute', now()) - %s * interval '1 hour', %s, %s, 1)",
                        (h, fleet[n - 1].registration_code, width),
                    )
        cur = conn.execute(
            "SELECT district, with_terminal, reporting_24h, reporting_24h_share,"
            " declared_silent_24h, reporting_undeclared_24h FROM district_coverage"
            " ORDER BY district"
        )
        assert cur.fetchall() == [("Ganyu", 1, 1, 0.5, 0, 0), ("Haizhou", 3, 2, 0.5, 2, 1)]
        city = conn.execute(
            "SELECT with_terminal, reporting_24h, reporting_24h_share, declared_silent_24h,"
            " reporting_undeclared_24h FROM city_coverage"
        ).fetchone()
        assert city == (4, 3, 0.5, 2, 1)
    # the report's coverage table shows the figures beside the declared terminals
    from dashboards.report import read_report, render_html

    data = read_report(scratch_db, dt.datetime.now(dt.UTC), 15, 365)
    html_path = tmp_path / "index.html"
    render_html(data, html_path, "heatmap.png", "map.png", "grid.png", "history.png")
    page = html_path.read_text(encoding="utf-8")
    assert "reported in the last 24 h" in page
    city_row = page[page.index('<tr class="total"><td>City 全市</td><td>6</td>') :]
    assert city_row.split("</tr>")[0].endswith("<td>3</td><td>2</td>")
