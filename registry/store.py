"""Reading registry exports and storing the registry in TimescaleDB.

A CSV export is read row by row: every bad row is reported with its line number and the
reason, and every good row is kept. Storing is an upsert on the registration code, so a
re-import updates elevators rather than duplicating them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path

import psycopg

from .model import BUILDING_TYPES, DISTRICTS, ELEVATOR_COLUMNS, REGISTRATION_CODE, Elevator

REQUIRED = (
    "registration_code",
    "address",
    "district",
    "building_type",
    "rated_speed_mps",
    "rated_load_kg",
    "floors",
)
_DISTRICT_BY_NAME = {d.name.lower(): d.name for d in DISTRICTS} | {
    d.name_zh: d.name for d in DISTRICTS
}
_TRUE = {"true", "1", "yes", "y", "是", "t"}
_FALSE = {"false", "0", "no", "n", "否", "f", ""}


class RegistryError(ValueError):
    """The registry file cannot be read at all (missing columns, not CSV)."""


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


@dataclass
class ImportResult:
    elevators: list[Elevator] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)


class _RowError(ValueError):
    pass


def _text(row: dict[str, str], name: str) -> str | None:
    value = (row.get(name) or "").strip()
    return value or None


def _number(row: dict[str, str], name: str, lo: float, hi: float) -> float | None:
    raw = _text(row, name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _RowError(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _RowError(f"{name}: {raw} is outside {lo:g}..{hi:g}")
    return value


def _date(row: dict[str, str], name: str) -> dt.date | None:
    raw = _text(row, name)
    if raw is None:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise _RowError(f"{name}: {raw!r} is not a date (YYYY-MM-DD)") from None


def _bool(row: dict[str, str], name: str) -> bool:
    raw = (row.get(name) or "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise _RowError(f"{name}: {raw!r} is not true/false")


def parse_row(row: dict[str, str]) -> Elevator:
    """One CSV row as an :class:`Elevator`; raises ``ValueError`` naming the bad field."""
    for name in REQUIRED:
        if _text(row, name) is None:
            raise _RowError(f"{name}: missing")
    code = _text(row, "registration_code") or ""
    if not REGISTRATION_CODE.match(code):
        raise _RowError(f"registration_code: {code!r} is not 20 digits")
    district_raw = _text(row, "district") or ""
    district = _DISTRICT_BY_NAME.get(district_raw.lower()) or _DISTRICT_BY_NAME.get(district_raw)
    if district is None:
        raise _RowError(f"district: {district_raw!r} is not a district, county or zone of the city")
    btype = (_text(row, "building_type") or "").lower()
    if btype not in BUILDING_TYPES:
        raise _RowError(f"building_type: {btype!r} is not one of {', '.join(BUILDING_TYPES)}")
    floors = _number(row, "floors", 2, 250)
    if floors is None or floors != int(floors):
        raise _RowError(f"floors: {_text(row, 'floors')!r} is not a whole number of floors")
    speed = _number(row, "rated_speed_mps", 0.05, 20.0)
    load = _number(row, "rated_load_kg", 50.0, 10_000.0)
    assert speed is not None and load is not None  # required above
    return Elevator(
        registration_code=code,
        address=_text(row, "address") or "",
        district=district,
        latitude=_number(row, "latitude", -90, 90),
        longitude=_number(row, "longitude", -180, 180),
        building_type=btype,
        user_unit=_text(row, "user_unit"),
        property_managed=_bool(row, "property_managed"),
        rated_speed_mps=speed,
        rated_load_kg=load,
        floors=int(floors),
        installed_on=_date(row, "installed_on"),
        maintenance_company=_text(row, "maintenance_company"),
        maintenance_contact=_text(row, "maintenance_contact"),
        last_maintenance_on=_date(row, "last_maintenance_on"),
        last_inspection_on=_date(row, "last_inspection_on"),
        has_terminal=_bool(row, "has_terminal"),
    )


def read_csv(path: Path) -> ImportResult:
    """Read a registry export; bad rows are reported by line number, good rows kept."""
    result = ImportResult()
    seen: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise RegistryError(f"{path}: the header lacks column(s) {', '.join(missing)}")
            unknown = [c for c in header if c not in ELEVATOR_COLUMNS]
            if unknown:
                raise RegistryError(f"{path}: unknown column(s) {', '.join(unknown)}")
            for row in reader:
                line = reader.line_num
                if None in row:
                    result.bad_rows.append(
                        BadRow(line, f"{len(row[None])} value(s) more than the header")
                    )
                    continue
                try:
                    e = parse_row(row)
                except _RowError as err:
                    result.bad_rows.append(BadRow(line, str(err)))
                    continue
                if e.registration_code in seen:
                    result.bad_rows.append(
                        BadRow(
                            line,
                            f"registration_code: {e.registration_code} repeats line "
                            f"{seen[e.registration_code]}",
                        )
                    )
                    continue
                seen[e.registration_code] = line
                result.elevators.append(e)
    except UnicodeDecodeError as e:
        raise RegistryError(f"{path}: not UTF-8 text ({e})") from e
    return result


def write_csv(elevators: Iterable[Elevator], out: io.TextIOBase | io.StringIO) -> None:
    """Write elevators in the import format (header = the table's columns)."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(ELEVATOR_COLUMNS)
    for e in elevators:
        w.writerow(["" if v is None else v for v in astuple(e)])


_COLUMNS_SQL = ", ".join(ELEVATOR_COLUMNS)
_UPSERT = f"""
INSERT INTO tianyan.elevator ({_COLUMNS_SQL})
SELECT {_COLUMNS_SQL} FROM elevator_staging
ON CONFLICT (registration_code) DO UPDATE SET
  {", ".join(f"{c} = EXCLUDED.{c}" for c in ELEVATOR_COLUMNS[1:])}, updated_at = now()
WHERE ({", ".join(f"elevator.{c}" for c in ELEVATOR_COLUMNS[1:])})
      IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in ELEVATOR_COLUMNS[1:])})
RETURNING (xmax = 0) AS inserted, registration_code
"""


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int
    unchanged: int


def upsert(url: str, elevators: Sequence[Elevator]) -> UpsertResult:
    """Insert new elevators and update changed ones, in one transaction."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE elevator_staging (LIKE tianyan.elevator INCLUDING DEFAULTS) "
            "ON COMMIT DROP"
        )
        with cur.copy(f"COPY elevator_staging ({_COLUMNS_SQL}) FROM STDIN") as copy:
            for e in elevators:
                copy.write_row(astuple(e))
        cur.execute(_UPSERT)
        written = cur.fetchall()
        flags = [r[0] for r in written]
        # the registry is a fact the audit ledger vouches for (README § The tamper-evident
        # record): each elevator written gets a ledger entry with its content's digest
        cur.execute("SELECT tianyan.ledger_facts('elevator', %s)", ([r[1] for r in written],))
    inserted = sum(flags)
    return UpsertResult(inserted, len(flags) - inserted, len(elevators) - len(flags))


def load(url: str, districts: Sequence[str] | None = None) -> list[Elevator]:
    """The registry as stored, optionally only some districts, ordered by code."""
    query = f"SELECT {_COLUMNS_SQL} FROM tianyan.elevator"
    params: list[object] = []
    if districts:
        query += " WHERE district = ANY(%s)"
        params.append(list(districts))
    with psycopg.connect(url) as conn:
        rows = conn.execute(query + " ORDER BY registration_code", params).fetchall()
    return [Elevator(*row) for row in rows]
