"""Reading registry exports and fusing them into the registry in TimescaleDB.

A CSV export is read row by row: every bad row is reported with its line number, the column
and the reason, and every good row is kept. An export may be partial — an inspection
agency's file of inspection dates, a user unit's contact list: only ``registration_code``
is required, and an import updates only the columns the file carries (and, in each row,
only its non-empty cells). Storing fuses the values into the registry by the precedence
rule of :mod:`registry.fusion`, records each value's source and date in
``elevator_provenance`` and every disagreement between sources in ``registry_conflict``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from foundation.city import CITY_TZ

from .fusion import Conflict, Provenance, display, fuse
from .model import BUILDING_TYPES, DISTRICTS, ELEVATOR_COLUMNS, REGISTRATION_CODE, Elevator

#: The key: every export carries it.
KEY = "registration_code"
#: The columns a row must carry to add an elevator the registry does not hold yet.
REQUIRED = (
    "registration_code",
    "address",
    "district",
    "building_type",
    "rated_speed_mps",
    "rated_load_kg",
    "floors",
)
#: The source an import is attributed to when it names none: the regulator's own registry.
DEFAULT_SOURCE = "registry"
_DISTRICT_BY_NAME = {d.name.lower(): d.name for d in DISTRICTS} | {
    d.name_zh: d.name for d in DISTRICTS
}
_TRUE = {"true", "1", "yes", "y", "是", "t"}
_FALSE = {"false", "0", "no", "n", "否", "f"}
_BOOLEANS = {f.name for f in fields(Elevator) if f.type == "bool"}
_DATES = {f.name for f in fields(Elevator) if "dt.date" in str(f.type)}
#: column -> (lowest, highest) for the numbers.
_RANGES = {
    "latitude": (-90.0, 90.0),
    "longitude": (-180.0, 180.0),
    "rated_speed_mps": (0.05, 20.0),
    "rated_load_kg": (50.0, 10_000.0),
    "floors": (2.0, 250.0),
}


class RegistryError(ValueError):
    """The registry file cannot be read at all (no registration_code column, not CSV)."""


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


@dataclass(frozen=True)
class RegistryRow:
    """One good row of an export: the elevator and the values its non-empty cells carry."""

    line: int
    registration_code: str
    values: dict[str, object]


@dataclass
class ImportResult:
    """An export as read: the columns it carries besides the key, its good rows, its bad."""

    columns: tuple[str, ...] = ()
    rows: list[RegistryRow] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)


class _RowError(ValueError):
    pass


def _number(name: str, raw: str) -> float:
    lo, hi = _RANGES[name]
    try:
        value = float(raw)
    except ValueError:
        raise _RowError(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _RowError(f"{name}: {raw} is outside {lo:g}..{hi:g}")
    return value


def _value(name: str, raw: str) -> object:
    """One non-empty cell, checked and typed; raises ``_RowError`` naming the column."""
    if name == KEY:
        if not REGISTRATION_CODE.match(raw):
            raise _RowError(f"registration_code: {raw!r} is not 20 digits")
        return raw
    if name == "district":
        district = _DISTRICT_BY_NAME.get(raw.lower()) or _DISTRICT_BY_NAME.get(raw)
        if district is None:
            raise _RowError(f"district: {raw!r} is not a district, county or zone of the city")
        return district
    if name == "building_type":
        btype = raw.lower()
        if btype not in BUILDING_TYPES:
            raise _RowError(f"building_type: {btype!r} is not one of {', '.join(BUILDING_TYPES)}")
        return btype
    if name == "floors":
        floors = _number(name, raw)
        if floors != int(floors):
            raise _RowError(f"floors: {raw!r} is not a whole number of floors")
        return int(floors)
    if name in _RANGES:
        return _number(name, raw)
    if name in _DATES:
        try:
            return dt.date.fromisoformat(raw)
        except ValueError:
            raise _RowError(f"{name}: {raw!r} is not a date (YYYY-MM-DD)") from None
    if name in _BOOLEANS:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise _RowError(f"{name}: {raw!r} is not true/false")
    return raw


def parse_cells(row: dict[str, str]) -> dict[str, object]:
    """The non-empty cells of one CSV row, checked and typed (an empty cell carries
    nothing); raises ``ValueError`` naming the bad column. The key is required."""
    values: dict[str, object] = {}
    for name in ELEVATOR_COLUMNS:
        raw = (row.get(name) or "").strip()
        if raw:
            values[name] = _value(name, raw)
    if KEY not in values:
        raise _RowError("registration_code: missing")
    return values


def _missing(values: dict[str, object]) -> list[str]:
    return [c for c in REQUIRED if c not in values]


def _elevator(values: dict[str, object]) -> Elevator:
    """A whole elevator from a row carrying every required column; the rest default to
    None (False for the flags)."""
    defaults: dict[str, object] = {f.name: None for f in fields(Elevator)}
    defaults |= {name: False for name in _BOOLEANS}
    return Elevator(**(defaults | values))  # type: ignore[arg-type]


def parse_row(row: dict[str, str]) -> Elevator:
    """One whole CSV row as an :class:`Elevator`; raises ``ValueError`` naming the bad
    field (a missing required one included)."""
    values = parse_cells(row)
    missing = _missing(values)
    if missing:
        raise _RowError(f"{missing[0]}: missing")
    return _elevator(values)


def read_csv(path: Path) -> ImportResult:
    """Read a registry export, whole or partial; bad rows are reported by line number and
    column, good rows kept."""
    result = ImportResult()
    seen: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if KEY not in header:
                raise RegistryError(f"{path}: the header lacks column(s) {KEY}")
            unknown = [c for c in header if c not in ELEVATOR_COLUMNS]
            if unknown:
                raise RegistryError(f"{path}: unknown column(s) {', '.join(unknown)}")
            repeated = sorted({c for c in header if header.count(c) > 1})
            if repeated:
                raise RegistryError(f"{path}: column(s) {', '.join(repeated)} repeated")
            result.columns = tuple(c for c in ELEVATOR_COLUMNS if c in header and c != KEY)
            for row in reader:
                line = reader.line_num
                if None in row:
                    result.bad_rows.append(
                        BadRow(line, f"{len(row[None])} value(s) more than the header")
                    )
                    continue
                try:
                    values = parse_cells(row)
                except _RowError as err:
                    result.bad_rows.append(BadRow(line, str(err)))
                    continue
                code = str(values[KEY])
                if code in seen:
                    result.bad_rows.append(
                        BadRow(line, f"registration_code: {code} repeats line {seen[code]}")
                    )
                    continue
                seen[code] = line
                result.rows.append(RegistryRow(line, code, values))
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
_VALUE_COLUMNS = ELEVATOR_COLUMNS[1:]
# One staged row per elevator written: its new or changed values as jsonb, laid over the
# stored row (or over nothing, for a new elevator) by jsonb_populate_record.
_INSERT = f"""
INSERT INTO tianyan.elevator ({_COLUMNS_SQL})
SELECT {", ".join(f"r.{c}" for c in ELEVATOR_COLUMNS)}
  FROM registry_change s,
       jsonb_populate_record(NULL::tianyan.elevator, s.change_values) r
 WHERE s.new_elevator
"""
_UPDATE = f"""
UPDATE tianyan.elevator e
   SET ({", ".join(_VALUE_COLUMNS)}) =
       (SELECT {", ".join(f"r.{c}" for c in _VALUE_COLUMNS)}
          FROM jsonb_populate_record(e, s.change_values) r),
       updated_at = now()
  FROM registry_change s
 WHERE NOT s.new_elevator AND e.registration_code = s.registration_code
"""
_PROVENANCE = """
INSERT INTO tianyan.elevator_provenance
       (registration_code, column_name, value, source, as_of, imported_at)
SELECT registration_code, column_name, value, source, as_of, now() FROM provenance_change
ON CONFLICT (registration_code, column_name) DO UPDATE
   SET value = EXCLUDED.value, source = EXCLUDED.source, as_of = EXCLUDED.as_of,
       imported_at = EXCLUDED.imported_at
"""
_CONFLICT_COLUMNS = (
    "registration_code, column_name, stored_value, stored_source, stored_as_of,"
    " offered_value, offered_source, offered_as_of, outcome"
)


@dataclass(frozen=True)
class UpsertResult:
    """What an import did: elevators added, changed, untouched; values ignored as stale
    (older than their own source's stored one); the conflicts between sources met (each
    also stored in ``registry_conflict``); rows naming an elevator the registry does not
    hold without the columns needed to add it (nothing stored for them)."""

    inserted: int
    updated: int
    unchanged: int
    stale_values: int = 0
    conflicts: tuple[Conflict, ...] = ()
    not_in_registry: tuple[BadRow, ...] = ()


def city_today() -> dt.date:
    """Today in Lianyungang: the date an import describes when it names none."""
    return dt.datetime.now(CITY_TZ).date()


def _fields(e: Elevator) -> dict[str, object]:
    # not dataclasses.asdict: its deep copy is most of the time of a city's import
    return {c: getattr(e, c) for c in ELEVATOR_COLUMNS}


def _jsonable(values: dict[str, object]) -> dict[str, object]:
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in values.items()}


def fuse_rows(url: str, rows: Sequence[RegistryRow], source: str, as_of: dt.date) -> UpsertResult:
    """Fuse one source's rows (as of one date) into the registry, in one transaction.

    Each row's values are weighed against the stored ones by :func:`registry.fusion.fuse`;
    the values it wins are written, their provenance recorded, and every conflict stored.
    Imports run one at a time (an advisory lock), so two never weigh against the same
    stale state.
    """
    if not source.strip():
        raise ValueError("source: empty; name the source of the export")
    offer = Provenance(source.strip(), as_of)
    codes = [r.registration_code for r in rows]
    changes: list[tuple[str, bool, str]] = []
    provenance: list[tuple[str, str, str, str, dt.date]] = []
    conflicts: list[Conflict] = []
    not_in_registry: list[BadRow] = []
    stale = inserted = 0
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('tianyan.registry_import'))")
        cur.execute(
            f"SELECT {_COLUMNS_SQL} FROM tianyan.elevator WHERE registration_code = ANY(%s)",
            (codes,),
        )
        stored = {r[0]: dict(zip(ELEVATOR_COLUMNS, r, strict=True)) for r in cur.fetchall()}
        cur.execute(
            "SELECT registration_code, column_name, source, as_of"
            " FROM tianyan.elevator_provenance WHERE registration_code = ANY(%s)",
            (codes,),
        )
        stored_provenance: dict[str, dict[str, Provenance]] = {}
        for code, column, src, day in cur.fetchall():
            stored_provenance.setdefault(code, {})[column] = Provenance(src, day)
        for row in rows:
            code = row.registration_code
            offered = {k: v for k, v in row.values.items() if k != KEY}
            now_stored = stored.get(code)
            if now_stored is None:
                missing = _missing(row.values)
                if missing:
                    not_in_registry.append(
                        BadRow(
                            row.line,
                            f"registration_code: {code} is not in the registry, and the row"
                            f" lacks {', '.join(missing)} needed to add it",
                        )
                    )
                    continue
            fused = fuse(code, now_stored or {}, stored_provenance.get(code, {}), offered, offer)
            stale += len(fused.stale)
            conflicts.extend(fused.conflicts)
            if now_stored is None:
                inserted += 1
                whole = _fields(_elevator(row.values))
                changes.append((code, True, json.dumps(_jsonable(whole), ensure_ascii=False)))
                final: dict[str, object] = whole
            else:
                if fused.changes:
                    changes.append(
                        (code, False, json.dumps(_jsonable(fused.changes), ensure_ascii=False))
                    )
                final = now_stored | fused.changes
            provenance.extend(
                (code, column, display(final[column]), p.source, p.as_of)
                for column, p in fused.provenance.items()
            )
        cur.execute(
            "CREATE TEMP TABLE registry_change (registration_code text, new_elevator boolean,"
            " change_values jsonb) ON COMMIT DROP"
        )
        with cur.copy("COPY registry_change FROM STDIN") as copy:
            for change in changes:
                copy.write_row(change)
        cur.execute(_INSERT)
        cur.execute(_UPDATE)
        cur.execute(
            "CREATE TEMP TABLE provenance_change (registration_code text, column_name text,"
            " value text, source text, as_of date) ON COMMIT DROP"
        )
        with cur.copy("COPY provenance_change FROM STDIN") as copy:
            for p_row in provenance:
                copy.write_row(p_row)
        cur.execute(_PROVENANCE)
        with cur.copy(f"COPY tianyan.registry_conflict ({_CONFLICT_COLUMNS}) FROM STDIN") as copy:
            for c in conflicts:
                copy.write_row(
                    (
                        c.registration_code,
                        c.column,
                        display(c.stored_value),
                        c.stored.source,
                        c.stored.as_of,
                        display(c.offered_value),
                        c.offered.source,
                        c.offered.as_of,
                        c.outcome,
                    )
                )
        # the registry is a fact the audit ledger vouches for (README § The tamper-evident
        # record): each elevator written gets a ledger entry with its content's digest
        cur.execute("SELECT tianyan.ledger_facts('elevator', %s)", ([c[0] for c in changes],))
    return UpsertResult(
        inserted,
        len(changes) - inserted,
        len(rows) - len(changes) - len(not_in_registry),
        stale,
        tuple(conflicts),
        tuple(not_in_registry),
    )


def upsert(
    url: str,
    elevators: Sequence[Elevator],
    source: str = DEFAULT_SOURCE,
    as_of: dt.date | None = None,
) -> UpsertResult:
    """Fuse whole elevator records from one source into the registry (a None carries
    nothing, like an empty cell); ``as_of`` defaults to today in the city."""
    rows = [
        RegistryRow(0, e.registration_code, {k: v for k, v in _fields(e).items() if v is not None})
        for e in elevators
    ]
    return fuse_rows(url, rows, source, as_of or city_today())


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


def provenance(url: str, registration_code: str) -> list[dict[str, object]]:
    """Each stored value of one elevator with its source, date and import time."""
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT column_name, value, source, as_of, imported_at"
            " FROM tianyan.elevator_provenance WHERE registration_code = %s"
            " ORDER BY column_name",
            (registration_code,),
        )
        return cur.fetchall()


def conflicts(
    url: str,
    registration_code: str | None = None,
    source: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 100,
) -> list[dict[str, object]]:
    """The conflicts imports met, newest first, optionally of one elevator, of one source
    (stored or offered) or since a moment."""
    where: list[str] = []
    params: list[object] = []
    if registration_code:
        where.append("registration_code = %s")
        params.append(registration_code)
    if source:
        where.append("(stored_source = %s OR offered_source = %s)")
        params += [source, source]
    if since:
        where.append("detected_at >= %s")
        params.append(since if since.tzinfo else since.replace(tzinfo=dt.UTC))
    query = "SELECT * FROM tianyan.registry_conflict"
    if where:
        query += " WHERE " + " AND ".join(where)
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query + " ORDER BY conflict_id DESC LIMIT %s", [*params, limit])
        return cur.fetchall()
