"""Backfill that corrects: windows, trips and alerts derived again from the stored raw
samples with the current detectors and thresholds, replacing what was there.

A **slice** is one elevator over the whole range. Everything the detection loop derives
for an elevator depends on that elevator's samples alone (its windows, trip segmenter and
detector states are its own), so a slice is self-contained and its replacement is one
transaction; a run over many elevators commits slice by slice and can be stopped and run
again. Each slice runs the worker's own detection loop (:class:`streams.ingest.Ingest`)
offline over the slice's stored messages (:func:`replay.sources.from_database`, which reads
``tianyan.raw_sample``: recent and packed samples alike):

- read from ``warmup`` before the range start, so that the elevator's state (open trips,
  trapped timers, door-reopening counts, windows straddling the start) is built up before
  the first record that counts; what the warm-up derives before the start is discarded;
- read on for :data:`LOOKAHEAD` past the range end, so that trips and windows begun
  inside the range close as they did in the worker (by the samples that followed), then
  judge silence at the end of the read (the worker's partitions move on with other
  elevators' messages; one elevator's read has only its own, so its clock is moved to the
  read's end through the injected wall clock);
- keep what belongs to the range: windows by ``bucket_start``, trips by ``start_time``,
  alerts whose condition began in the range and was raised before its end. The rows
  stored there are selected by the same rule, compared column by column, and only those
  that differ are replaced: rows deleted, rows inserted and rows unchanged are counted per
  table; a second run of the same backfill changes nothing.

Alerts are facts the tamper-evident ledger vouches for. A slice removes the alerts it
replaces only through ``tianyan.backfill_remove_alerts`` (sql/idempotent/25_backfill.sql),
which appends the slice's ledger entry, naming each removed alert with its last digest, in
the same transaction; the alerts it inserts are ledgered as facts as the worker's are
(``ledger_facts``). An alert an incident holds (its ``incident_alert`` names an incident)
is kept, and counted: a backfill corrects history, it never opens, changes or closes an
incident, publishes nothing to Kafka, and so sends no webhook and no device command.

Each run is recorded in ``backfill_run`` and each slice in ``backfill_slice`` (migration
0016): who, when, the range, the thresholds and their digest, the counts, the alert ids.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import hashlib
import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from tqdm import tqdm

from detectors.alerts import Alert
from detectors.thresholds import ElevatorLimits, Thresholds
from foundation.records import Trip, WindowFeature
from registry.store import load as load_registry
from streams.ingest import Ingest, RawRecord
from streams.sinks.alerts import ALERT_COLUMNS, alert_row, insert_alerts
from streams.sinks.base import EPOCH_MS

from .sources import from_database

#: How long before the range start each slice's read begins, to build up the elevator's
#: state (the worker's default): a trip or a trapping under way at the start, the door
#: cycles counted before it. Longer warm-ups cost read time only.
DEFAULT_WARMUP = dt.timedelta(hours=1)
#: How long past the range end each slice reads on: trips and windows begun inside the
#: range close on the samples that follow (a trip lasts at most the run-time limiter's
#: 45 s, a window 60 s plus the grace, a silent car sends a heartbeat every 30 s).
LOOKAHEAD = dt.timedelta(minutes=5)
#: One elevator's messages are rebuilt by PostgreSQL an hour at a time.
READ_SLICE = dt.timedelta(hours=1)
#: Alert types a backfill cannot derive again, left as they are: a terminal's clock is
#: judged against its messages' arrival times, which are not stored.
NOT_REDERIVED = ("clock_fault",)

_REGISTRATION_CODE = re.compile(r"[0-9]{20}")


class BackfillError(ValueError):
    """A backfill cannot run as asked; the message names the argument or the data at fault."""


@dataclass(frozen=True)
class TableCounts:
    """Rows of one table in one slice: deleted (stored, not derived again), inserted
    (derived, not stored), unchanged (stored exactly as derived)."""

    deleted: int = 0
    inserted: int = 0
    unchanged: int = 0

    def __add__(self, other: TableCounts) -> TableCounts:
        return TableCounts(
            self.deleted + other.deleted,
            self.inserted + other.inserted,
            self.unchanged + other.unchanged,
        )


@dataclass
class Derived:
    """What the detection loop derived for one slice, in the range."""

    elevator_id: str
    messages: int = 0
    windows: list[WindowFeature] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


@dataclass(frozen=True)
class SliceResult:
    """What one slice replaced."""

    elevator_id: str
    messages: int
    windows: TableCounts
    trips: TableCounts
    alerts: TableCounts
    #: Alerts that differ from what was derived but are kept: an incident holds them.
    kept_alert_ids: tuple[str, ...]
    removed_alert_ids: tuple[str, ...]
    #: The slice's ``backfill`` ledger entry (its seq; in a dry run, the seq it would have).
    ledger_seq: int


@dataclass
class BackfillSummary:
    """A whole run, for the last line ``tianyan backfill`` prints."""

    backfill_run_id: str
    dry_run: bool
    start: str
    end: str
    warmup_s: int
    thresholds_sha256: str
    slices: int = 0
    messages: int = 0
    windows: TableCounts = TableCounts()
    trips: TableCounts = TableCounts()
    alerts: TableCounts = TableCounts()
    alerts_kept: int = 0
    wall_s: float = 0.0

    def add(self, s: SliceResult) -> None:
        self.slices += 1
        self.messages += s.messages
        self.windows += s.windows
        self.trips += s.trips
        self.alerts += s.alerts
        self.alerts_kept += len(s.kept_alert_ids)

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)


def thresholds_record(thresholds: Thresholds) -> tuple[str, dict[str, Any]]:
    """The thresholds as a JSON object and the sha256 of its canonical text (sorted keys)."""
    values = dataclasses.asdict(thresholds)
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest(), values


def _ms(t: dt.datetime) -> int:
    return round(t.timestamp() * 1000)


def check_arguments(
    start: dt.datetime, end: dt.datetime, elevators: Sequence[str], warmup: dt.timedelta
) -> None:
    """Raise :class:`BackfillError` naming the first argument that cannot be used."""
    if start.tzinfo is None or end.tzinfo is None:
        raise BackfillError("--start and --end must carry a time zone (UTC is assumed by the CLI)")
    if end <= start:
        raise BackfillError(f"--end {end.isoformat()} is not after --start {start.isoformat()}")
    now = dt.datetime.now(dt.UTC)
    if end > now - LOOKAHEAD:
        raise BackfillError(
            f"--end {end.isoformat()} is not yet history: the worker is still deriving what"
            f" follows {(now - LOOKAHEAD).isoformat(timespec='seconds')} (now less the"
            f" {LOOKAHEAD.total_seconds():.0f} s a slice reads past its end)"
        )
    if warmup < dt.timedelta(0):
        raise BackfillError(f"--warmup-minutes: {warmup.total_seconds() / 60:g} is negative")
    for e in elevators:
        if not _REGISTRATION_CODE.fullmatch(e):
            raise BackfillError(f"--elevator {e!r}: not a 20-digit registration code")


def plan(
    conn: psycopg.Connection[Any],
    start: dt.datetime,
    end: dt.datetime,
    *,
    elevators: Sequence[str] = (),
    districts: Sequence[str] = (),
    warmup: dt.timedelta = DEFAULT_WARMUP,
) -> list[str]:
    """The slices (elevator ids) of a backfill, in order: every elevator with raw samples,
    windows, trips or alerts in the range, narrowed to ``elevators`` and ``districts``
    (an elevator named with ``--elevator`` is a slice even with nothing stored).

    Raises
    ------
    BackfillError
        An argument is unusable, a district is not in the registry, or the raw samples of
        the range (warm-up included) are no longer stored: replacing from samples that are
        gone would delete what cannot be derived again.
    """
    check_arguments(start, end, elevators, warmup)
    if districts:
        known = [r[0] for r in conn.execute("SELECT DISTINCT district FROM tianyan.elevator")]
        unknown = sorted(set(districts) - set(known))
        if unknown:
            raise BackfillError(
                f"--district {', '.join(unknown)}: not in the registry"
                f" (its districts: {', '.join(sorted(known)) or 'none, the registry is empty'})"
            )
    oldest = conn.execute(
        "SELECT min(range_start) FROM timescaledb_information.chunks"
        " WHERE hypertable_schema = 'tianyan'"
        " AND hypertable_name IN ('telemetry_sample', 'telemetry_sample_minute')"
    ).fetchone()
    if oldest is None or oldest[0] is None:
        raise BackfillError("no raw samples are stored: there is nothing to derive from")
    if oldest[0] > start:
        raise BackfillError(
            f"--start {start.isoformat()}: raw samples are stored from"
            f" {oldest[0].astimezone(dt.UTC).isoformat()} only (raw retention,"
            " TIANYAN_RAW_RETENTION_DAYS): a backfill would delete what it cannot derive"
            " again. Start later."
        )
    where = ""
    params: dict[str, object] = {"lo": start, "hi": end}
    if elevators:
        where += " AND elevator_id = ANY(%(elevators)s::char(20)[])"
        params["elevators"] = list(elevators)
    if districts:
        where += (
            " AND elevator_id IN (SELECT registration_code FROM tianyan.elevator"
            " WHERE district = ANY(%(districts)s))"
        )
        params["districts"] = list(districts)
    rows = conn.execute(
        # the raw samples' two tables read directly: a packed minute names its elevator
        # without unpacking its samples (as raw_sample would)
        "SELECT DISTINCT elevator_id::text FROM ("
        " SELECT elevator_id FROM tianyan.telemetry_sample WHERE time >= %(lo)s AND time < %(hi)s"
        " UNION SELECT elevator_id FROM tianyan.telemetry_sample_minute"
        "  WHERE time > %(lo)s::timestamptz - interval '1 minute' AND time < %(hi)s"
        " UNION SELECT elevator_id FROM tianyan.window_feature"
        "  WHERE bucket_start >= %(lo)s AND bucket_start < %(hi)s"
        " UNION SELECT elevator_id FROM tianyan.trip"
        "  WHERE start_time >= %(lo)s AND start_time < %(hi)s"
        " UNION SELECT elevator_id FROM tianyan.alert"
        "  WHERE condition_since >= %(lo)s AND condition_since < %(hi)s) e"
        " WHERE true" + where,
        params,
    ).fetchall()
    return sorted({r[0] for r in rows} | set(elevators))


def derive(
    url: str,
    elevator_id: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    thresholds: Thresholds,
    limits: ElevatorLimits,
    grace_ms: int,
    warmup: dt.timedelta = DEFAULT_WARMUP,
) -> Derived:
    """Run the detection loop over one elevator's stored messages from ``start - warmup``
    to ``end +`` :data:`LOOKAHEAD` and keep what belongs to ``[start, end)`` (see the
    module docstring). Pure but for reading the samples."""
    read_from, read_to = start - warmup, end + LOOKAHEAD
    lo_ms, hi_ms, read_to_ms = _ms(start), _ms(end), _ms(read_to)
    # The injected wall clock follows the stream, so it never moves an elevator's time on
    # by itself, until the end: then it moves it to the end of the read (see Ingest).
    wall = [0.0]
    advanced_at = 0.0
    ingest = Ingest(
        grace_ms, limits_for=lambda _: limits, thresholds=thresholds, wall_clock_ms=lambda: wall[0]
    )
    out = Derived(elevator_id)
    alerts: list[Alert] = []
    items = from_database(url, read_from, read_to, elevators=[elevator_id], slice_length=READ_SLICE)
    for offset, item in enumerate(items):
        if item.event_ms is not None:
            wall[0] = max(wall[0], float(item.event_ms))
        before = ingest.stream_time_ms
        batch = ingest.process([RawRecord(item.key, item.value, 0, offset)])
        if ingest.stream_time_ms > before:
            advanced_at = wall[0]
        out.messages += len(batch.messages)
        out.windows += [w for w in batch.windows if lo_ms <= w.bucket_start_ms < hi_ms]
        out.trips += [t for t in batch.trips if lo_ms <= t.start_ms < hi_ms]
        alerts += batch.alerts
        alerts += ingest.tick().alerts
    if out.messages:
        silent_ms = thresholds.heartbeat_timeout_s * 1000.0
        wall[0] = advanced_at + silent_ms + max(0, read_to_ms - ingest.stream_time_ms)
        alerts += ingest.tick().alerts
    out.alerts = [a for a in alerts if _in_range(a, lo_ms, hi_ms)]
    return out


def _in_range(a: Alert, lo_ms: int, hi_ms: int) -> bool:
    """An alert belongs to a range when its condition began in it and it was raised before
    its end (a clearing after the end stays with the range that follows)."""
    return (
        lo_ms <= a.condition_since_ms < hi_ms
        and a.raised_at_ms < hi_ms
        and a.alert_type not in NOT_REDERIVED
    )


# -- replacing one slice ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Table:
    """A derived table replaced by key: its record type, its time column (the range's) and
    the record's Unix-ms fields holding its time columns."""

    table: str
    key: tuple[str, ...]
    range_column: str
    times: tuple[tuple[str, str], ...]
    fields: tuple[str, ...]


_WINDOWS = _Table(
    "window_feature",
    ("elevator_id", "width_s", "bucket_start"),
    "bucket_start",
    (("bucket_start", "bucket_start_ms"),),
    WindowFeature.__struct_fields__,
)
_TRIPS = _Table(
    "trip",
    ("elevator_id", "start_time"),
    "start_time",
    (("start_time", "start_ms"), ("end_time", "end_ms")),
    Trip.__struct_fields__,
)


def _replace_rows(
    cur: psycopg.Cursor[Any],
    spec: _Table,
    rows: Sequence[tuple[Any, ...]],
    elevator_id: str,
    start: dt.datetime,
    end: dt.datetime,
) -> TableCounts:
    """Replace the elevator's rows of ``spec.table`` in ``[start, end)`` by ``rows`` (the
    records' fields, in ``spec.fields`` order): those stored exactly so are left alone."""
    staged = f"backfill_{spec.table}"
    ms = ", ".join(f"0::bigint AS {f}" for _, f in spec.times)
    cur.execute(f"DROP TABLE IF EXISTS {staged}")
    cur.execute(
        f"CREATE TEMP TABLE {staged} ON COMMIT DROP AS"
        f" SELECT *, {ms} FROM tianyan.{spec.table} WITH NO DATA"
    )
    with cur.copy(f"COPY {staged} ({', '.join(spec.fields)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cur.execute(
        f"UPDATE {staged} SET "
        + ", ".join(f"{column} = {EPOCH_MS.format(f)}" for column, f in spec.times)
    )
    columns = [
        *(c for c, _ in spec.times),
        *(f for f in spec.fields if f not in dict(spec.times).values()),
    ]
    same_key = " AND ".join(f"n.{k} = t.{k}" for k in spec.key)
    same_row = (
        f"ROW({', '.join(f'n.{c}' for c in columns)})"
        f" IS NOT DISTINCT FROM ROW({', '.join(f't.{c}' for c in columns)})"
    )
    cur.execute(
        f"DELETE FROM tianyan.{spec.table} t WHERE t.elevator_id = %s"
        f" AND t.{spec.range_column} >= %s AND t.{spec.range_column} < %s"
        f" AND NOT EXISTS (SELECT FROM {staged} n WHERE {same_key} AND {same_row})",
        (elevator_id, start, end),
    )
    deleted = max(cur.rowcount, 0)
    cur.execute(
        f"INSERT INTO tianyan.{spec.table} ({', '.join(columns)})"
        f" SELECT {', '.join(columns)} FROM {staged} ON CONFLICT DO NOTHING"
    )
    inserted = max(cur.rowcount, 0)
    return TableCounts(deleted, inserted, len(rows) - inserted)


def _replace_alerts(
    cur: psycopg.Cursor[Any],
    run_id: str,
    derived: Derived,
    start: dt.datetime,
    end: dt.datetime,
    slice_payload: dict[str, Any],
) -> tuple[TableCounts, list[str], list[str], int]:
    """Replace the slice's alerts; returns the counts, the removed and the kept alert ids,
    and the seq of the slice's ledger entry."""
    new = {str(a.alert_id): a for a in derived.alerts}
    cur.execute("DROP TABLE IF EXISTS backfill_alert")
    cur.execute(
        "CREATE TEMP TABLE backfill_alert ON COMMIT DROP AS"
        " SELECT * FROM tianyan.alert WITH NO DATA"
    )
    if new:
        cur.executemany(
            f"INSERT INTO backfill_alert ({', '.join(ALERT_COLUMNS)})"
            f" VALUES ({', '.join(['%s'] * len(ALERT_COLUMNS))})",
            [alert_row(a) for a in new.values()],
        )
    same_row = (
        f"ROW({', '.join(f'n.{c}' for c in ALERT_COLUMNS)})"
        f" IS NOT DISTINCT FROM ROW({', '.join(f'a.{c}' for c in ALERT_COLUMNS)})"
    )
    # the stored alerts of the slice, by the rule derive() keeps them: each with whether
    # it is stored exactly as derived, and whether an incident holds it
    cur.execute(
        "SELECT a.alert_id::text,"
        f" EXISTS (SELECT FROM backfill_alert n WHERE n.alert_id = a.alert_id AND {same_row}),"
        " EXISTS (SELECT FROM tianyan.incident_alert ia WHERE ia.alert_id = a.alert_id"
        "  AND ia.incident_id IS NOT NULL)"
        " FROM tianyan.alert a WHERE a.elevator_id = %s"
        " AND a.condition_since >= %s AND a.condition_since < %s AND a.raised_at < %s"
        " AND a.alert_type <> ALL(%s) ORDER BY 1",
        (derived.elevator_id, start, end, end, list(NOT_REDERIVED)),
    )
    unchanged: set[str] = set()
    kept: list[str] = []
    removed: list[str] = []
    for alert_id, same, held in cur.fetchall():
        if same:
            unchanged.add(alert_id)
        elif held:
            kept.append(alert_id)
        else:
            removed.append(alert_id)
    inserting = [a for i, a in new.items() if i not in unchanged and i not in kept]
    payload = {
        **slice_payload,
        "alerts": {
            "deleted": len(removed),
            "inserted": len(inserting),
            "unchanged": len(unchanged),
        },
        "kept": kept,
    }
    cur.execute(
        "SELECT tianyan.backfill_remove_alerts(%s, %s, %s::uuid[], %s::jsonb)",
        (run_id, derived.elevator_id, removed, json.dumps(payload)),
    )
    row = cur.fetchone()
    assert row is not None
    seq = int(row[0])
    inserted = insert_alerts(cur, inserting)
    if inserting:
        # each stored alert is a fact the ledger vouches for, as the worker's sink does
        cur.execute(
            "SELECT tianyan.ledger_facts('alert', %s)",
            (sorted(str(a.alert_id) for a in inserting),),
        )
    return TableCounts(len(removed), inserted, len(unchanged)), removed, kept, seq


def replace_slice(
    conn: psycopg.Connection[Any],
    run_id: str,
    derived: Derived,
    start: dt.datetime,
    end: dt.datetime,
    thresholds_sha256: str,
    *,
    dry_run: bool = False,
    first: Callable[[psycopg.Connection[Any]], None] | None = None,
) -> SliceResult:
    """Replace one slice's windows, trips and alerts by ``derived`` in one transaction, and
    record it (``backfill_slice`` and the ledger). ``dry_run`` rolls the transaction back:
    the counts are what it would do. ``first`` runs first in the transaction (a dry run
    records its run there, to be rolled back with it)."""
    eid = derived.elevator_id
    with conn.transaction() as tx:
        if first is not None:
            first(conn)
        with conn.cursor() as cur:
            # two backfills of one elevator at once take turns, slice by slice
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('tianyan.backfill/' || %s))", (eid,))
            windows = _replace_rows(
                cur,
                _WINDOWS,
                _first_per_key(derived.windows),
                eid,
                start,
                end,
            )
            trips = _replace_rows(cur, _TRIPS, _first_per_key(derived.trips), eid, start, end)
            slice_payload = {
                "backfill_run_id": run_id,
                "elevator_id": eid,
                "range": [start.isoformat(), end.isoformat()],
                "thresholds_sha256": thresholds_sha256,
                "windows": dataclasses.asdict(windows),
                "trips": dataclasses.asdict(trips),
            }
            alerts, removed, kept, seq = _replace_alerts(
                cur, run_id, derived, start, end, slice_payload
            )
            cur.execute(
                "INSERT INTO tianyan.backfill_slice (backfill_run_id, elevator_id, messages,"
                " windows_deleted, windows_inserted, windows_unchanged,"
                " trips_deleted, trips_inserted, trips_unchanged,"
                " alerts_deleted, alerts_inserted, alerts_unchanged, alerts_kept,"
                " removed_alert_ids, kept_alert_ids, ledger_seq)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s::uuid[], %s::uuid[], %s)",
                (
                    run_id,
                    eid,
                    derived.messages,
                    *dataclasses.astuple(windows),
                    *dataclasses.astuple(trips),
                    *dataclasses.astuple(alerts),
                    len(kept),
                    removed,
                    kept,
                    seq,
                ),
            )
            cur.execute(
                "UPDATE tianyan.backfill_run SET slices = slices + 1 WHERE backfill_run_id = %s",
                (run_id,),
            )
        if dry_run:
            raise psycopg.Rollback(tx)
    return SliceResult(
        eid, derived.messages, windows, trips, alerts, tuple(kept), tuple(removed), seq
    )


def _first_per_key(records: Sequence[WindowFeature] | Sequence[Trip]) -> list[tuple[Any, ...]]:
    """Each record's fields in order, as COPY takes them; of records with one key (the
    table's), the first, as the sinks keep it (``ON CONFLICT DO NOTHING``)."""
    rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in records:
        key = (
            (r.elevator_id, r.width_s, r.bucket_start_ms)
            if isinstance(r, WindowFeature)
            else (r.elevator_id, r.start_ms)
        )
        rows.setdefault(key, msgspec.structs.astuple(r))
    return list(rows.values())


def _record_run(
    conn: psycopg.Connection[Any],
    run_id: str,
    start: dt.datetime,
    end: dt.datetime,
    warmup: dt.timedelta,
    elevators: Sequence[str],
    districts: Sequence[str],
    thresholds_sha256: str,
    thresholds_values: dict[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO tianyan.backfill_run (backfill_run_id, requested_by, range_start,"
        " range_end, warmup_s, elevators, districts, thresholds_sha256, thresholds)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
        (
            run_id,
            f"{getpass.getuser()}@{socket.gethostname()}",
            start,
            end,
            round(warmup.total_seconds()),
            list(elevators),
            list(districts),
            thresholds_sha256,
            json.dumps(thresholds_values),
        ),
    )


def backfill(
    url: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    thresholds: Thresholds,
    grace_ms: int,
    elevators: Sequence[str] = (),
    districts: Sequence[str] = (),
    warmup: dt.timedelta = DEFAULT_WARMUP,
    dry_run: bool = False,
    progress: bool = True,
    on_slice: Callable[[SliceResult], None] | None = None,
) -> BackfillSummary:
    """Backfill ``[start, end)``: plan the slices, then derive and replace each in turn
    (module docstring). ``url`` is the writer role's (``TIANYAN_DATABASE_URL``).

    A dry run derives and replaces every slice inside a transaction it rolls back, so its
    counts are exact, and records nothing (no ``backfill_run``, no ledger entry).

    Raises
    ------
    BackfillError
        The arguments or the stored samples do not allow it (see :func:`plan`).
    """
    wall0 = time.perf_counter()
    digest, values = thresholds_record(thresholds)
    run_id = str(uuid.uuid4())
    summary = BackfillSummary(
        run_id,
        dry_run,
        start.isoformat(),
        end.isoformat(),
        round(warmup.total_seconds()),
        digest,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        slices = plan(conn, start, end, elevators=elevators, districts=districts, warmup=warmup)
        registry = {e.registration_code: ElevatorLimits.of(e) for e in load_registry(url)}
        unknown = ElevatorLimits.unknown(thresholds)

        def record(c: psycopg.Connection[Any]) -> None:
            _record_run(c, run_id, start, end, warmup, elevators, districts, digest, values)

        if not dry_run:
            record(conn)
        bar = tqdm(total=len(slices), unit="slice", disable=not progress, mininterval=0.5)
        try:
            for eid in slices:
                derived = derive(
                    url,
                    eid,
                    start,
                    end,
                    thresholds=thresholds,
                    limits=registry.get(eid, unknown),
                    grace_ms=grace_ms,
                    warmup=warmup,
                )
                result = replace_slice(
                    conn,
                    run_id,
                    derived,
                    start,
                    end,
                    digest,
                    dry_run=dry_run,
                    # a dry run records its run inside each slice's rolled-back transaction
                    first=record if dry_run else None,
                )
                summary.add(result)
                if on_slice is not None:
                    on_slice(result)
                bar.update(1)
        finally:
            bar.close()
        if not dry_run:
            conn.execute(
                "UPDATE tianyan.backfill_run SET finished_at = clock_timestamp()"
                " WHERE backfill_run_id = %s",
                (run_id,),
            )
    summary.wall_s = round(time.perf_counter() - wall0, 3)
    return summary


def slice_rows(url: str, run_id: str) -> list[dict[str, Any]]:
    """The ``backfill_slice`` rows of a run, by elevator (for reports and tests)."""
    from psycopg.rows import dict_row

    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM tianyan.backfill_slice WHERE backfill_run_id = %s ORDER BY elevator_id",
            (run_id,),
        )
        return list(cur.fetchall())
