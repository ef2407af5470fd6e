"""``tianyan bench storage``: bytes per raw sample, and what they cost to write and read, for
several ways of storing raw samples in TimescaleDB's Apache edition (no native compression).

The workload is the simulator's busy scenario (default 200 elevators × 30 min), decoded and
de-duplicated as the worker would. Every design gets the same messages, written as the sink
writes them: batches of COPY text (each message's own bytes) into a staging table, then one
``INSERT … SELECT`` per batch into a hypertable of 15-minute chunks. Designs:

``row``
    Today's ``telemetry_sample``: one row per sample (the sink's own SQL).
``message_typed``
    One row per message: the first sample's time, elevator, seq, and one typed array per
    sample column (times as ms offsets from the row's time), lz4 TOAST compression and a
    ``toast_tuple_target`` of 128 bytes so that the arrays are compressed.
``message_matrix``
    One row per message holding one 2-D ``real[]`` (13 columns × n samples): one datum to
    compress instead of 13. Every column fits ``real`` exactly (times as ms offsets < 2^24,
    small integers, booleans as 0/1), so this is as lossless as ``row``.
``message_json``
    One row per message holding the bytes it arrived as (its JSON as ``text``, lz4).
``minute_typed`` / ``minute_matrix``
    One row per elevator-minute, built from ``message_typed`` by a repack (as a job would
    rewrite a closed chunk): bigger groups compress better. Their "ingest" is that repack.
``adopted``
    What tianyan stores (migration 0012): ``row``'s chunks packed by
    ``tianyan.pack_raw_chunks`` into ``telemetry_sample_minute`` (elevator-minute rows of
    lz4 arrays, every sample's seq kept), read through ``tianyan.raw_sample``. Run last: it
    drops ``row``'s chunks. Its "ingest" is the pack; the sink still writes ``row``.

A row of one message (10 samples, ≈ 600 bytes) stays below TOAST's 2 kB threshold
(``TOAST_TUPLE_THRESHOLD``, which ``toast_tuple_target`` does not lower), so it is never
compressed; "rows compressed %" shows it.

For each: bytes per sample from ``hypertable_size`` (table, indexes and TOAST of every
chunk), ingest samples/s, the median time of a panel query (one elevator's last hour,
10-s maxima of speed) and of an evidence read (one elevator ±5 min, every column), and
whether reading it back gives exactly the rows of ``row`` (count and a hash of every row's
text). Figures are printed; the last line is JSON. The database is dropped afterwards unless
``--keep``.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from foundation import contract
from foundation.contract import COLUMNS
from foundation.settings import Settings
from streams.sinks.base import EPOCH_MS
from streams.sinks.samples import _INSERT_SAMPLES, RawMessage, SampleSink, copy_text

_VALUES = COLUMNS[1:]
#: Messages per write, about what the worker writes per batch.
BATCH_MESSAGES = 500
#: The SQL type of each sample column but t_ms (as telemetry_sample has them).
_TYPES = {
    "speed_mps": "real",
    "accel_mps2": "real",
    "position_m": "real",
    "floor": "smallint",
    "direction": "smallint",
    "load_kg": "real",
    "door": "smallint",
    "door_zone": "boolean",
    "leveling_offset_mm": "real",
    "passengers": "boolean",
    "alarm": "boolean",
    "service_mode": "smallint",
}
#: The longest a message may span: a range read widens its row-time filter by this.
_SPAN = f"interval '{contract.MAX_MESSAGE_SPAN_MS} ms'"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Design:
    """One way of storing raw samples: its table, how a batch is written, how rows are read."""

    name: str
    table: str
    #: DDL creating ``table`` (a hypertable); None for telemetry_sample, already migrated.
    ddl: str | None
    #: SQL writing the staged batch; None for a design built from another by a repack.
    insert: str | None
    #: A SELECT of (time, elevator_id, seq, every sample column) for rows with
    #: ``%(elevator)s`` (or every elevator when NULL) between ``%(lo)s`` and ``%(hi)s``.
    rows: str
    #: For a repacked design: the SQL filling it from the other designs' tables.
    repack: str | None = None
    #: The widest column, whose share of compressed values is printed.
    widest: str | None = None


def _hypertable(table: str, columns: str, arrays: Sequence[str]) -> str:
    compress = "".join(
        f"ALTER TABLE {table} ALTER COLUMN {a} SET COMPRESSION lz4;\n" for a in arrays
    )
    return (
        f"CREATE TABLE {table} ({columns}, PRIMARY KEY (elevator_id, time))"
        " WITH (toast_tuple_target = 128);\n"
        f"{compress}"
        f"SELECT create_hypertable('{table}', by_range('time', INTERVAL '15 minutes'),"
        " create_default_indexes => false);\n"
        f"CREATE INDEX ON {table} USING brin (time);\n"
    )


_KEY = 'time timestamptz NOT NULL, elevator_id char(20) COLLATE "C" NOT NULL, seq bigint NOT NULL'
_FROM_STAGING = (
    " FROM message_staging m,"
    " LATERAL json_populate_record(NULL::tianyan.sample_columns, m.body->'samples') s"
)
_WHERE_ROWS = (
    " WHERE (%(elevator)s::text IS NULL OR m.elevator_id = %(elevator)s::char(20))"
    " AND m.time > %(lo)s::timestamptz - {widen} AND m.time <= %(hi)s"
)


def _typed(name: str, table: str, *, widen: str) -> Design:
    arrays = ["t_offset_ms", *_VALUES]
    columns = f"{_KEY}, t_offset_ms integer[] NOT NULL, " + ", ".join(
        f"{c} {_TYPES[c]}[] NOT NULL" for c in _VALUES
    )
    insert = (
        f"INSERT INTO {table} SELECT {EPOCH_MS.format('s.t_ms[1]')}, m.elevator_id, m.seq,"
        " ARRAY(SELECT (x - s.t_ms[1])::integer FROM unnest(s.t_ms) x), "
        + ", ".join(f"s.{c}" for c in _VALUES)
        + _FROM_STAGING
        + " ON CONFLICT DO NOTHING"
    )
    rows = (
        "SELECT * FROM (SELECT m.time + u.t_offset_ms * interval '1 ms' AS time, m.elevator_id,"
        " m.seq, "
        + ", ".join(f"u.{c}" for c in _VALUES)
        + f" FROM {table} m, unnest(m.t_offset_ms, "
        + ", ".join(f"m.{c}" for c in _VALUES)
        + f") AS u(t_offset_ms, {', '.join(_VALUES)})"
        + _WHERE_ROWS.format(widen=widen)
        + ") r WHERE r.time BETWEEN %(lo)s AND %(hi)s"
    )
    return Design(
        name, table, _hypertable(table, columns, arrays), insert, rows, widest="speed_mps"
    )


def _as_real(c: str, expr: str) -> str:
    return f"{expr}::integer[]::real[]" if _TYPES[c] == "boolean" else f"{expr}::real[]"


def _from_real(c: str, expr: str) -> str:
    return {"real": expr, "smallint": f"{expr}::smallint", "boolean": f"({expr} <> 0)"}[_TYPES[c]]


def _matrix(name: str, table: str, *, widen: str) -> Design:
    columns = f"{_KEY}, samples real[] NOT NULL"
    insert = (
        f"INSERT INTO {table} SELECT {EPOCH_MS.format('s.t_ms[1]')}, m.elevator_id, m.seq,"
        " ARRAY[ARRAY(SELECT (x - s.t_ms[1])::real FROM unnest(s.t_ms) x), "
        + ", ".join(_as_real(c, f"s.{c}") for c in _VALUES)
        + "]"
        + _FROM_STAGING
        + " ON CONFLICT DO NOTHING"
    )
    # One slice per column: each detoasts the datum once, not once per element.
    rows = (
        "SELECT * FROM (SELECT m.time + u.t_offset_ms * interval '1 ms' AS time, m.elevator_id,"
        " m.seq, "
        + ", ".join(_from_real(c, f"u.{c}") + f" AS {c}" for c in _VALUES)
        + f" FROM {table} m, unnest("
        + ", ".join(f"m.samples[{k + 1}:{k + 1}]" for k in range(len(COLUMNS)))
        + f") AS u(t_offset_ms, {', '.join(_VALUES)})"
        + _WHERE_ROWS.format(widen=widen)
        + ") r WHERE r.time BETWEEN %(lo)s AND %(hi)s"
    )
    return Design(
        name, table, _hypertable(table, columns, ["samples"]), insert, rows, widest="samples"
    )


def _json(name: str, table: str) -> Design:
    columns = f"{_KEY}, body text NOT NULL"
    insert = (
        f"INSERT INTO {table} SELECT"
        f" {EPOCH_MS.format('(m.body::jsonb #>> ARRAY[$$samples$$, $$t_ms$$, $$0$$])::bigint')},"
        " m.elevator_id, m.seq, m.body FROM message_text_staging m ON CONFLICT DO NOTHING"
    )
    rows = (
        f"SELECT * FROM (SELECT {EPOCH_MS.format('u.t_ms')} AS time, m.elevator_id, m.seq, "
        + ", ".join(f"u.{c}" for c in _VALUES)
        + f" FROM {table} m,"
        " LATERAL jsonb_populate_record(NULL::tianyan.sample_columns, m.body::jsonb->'samples') s,"
        " unnest("
        + ", ".join(f"s.{c}" for c in COLUMNS)
        + f") AS u(t_ms, {', '.join(_VALUES)})"
        + _WHERE_ROWS.format(widen=_SPAN)
        + ") r WHERE r.time BETWEEN %(lo)s AND %(hi)s"
    )
    return Design(name, table, _hypertable(table, columns, ["body"]), insert, rows, widest="body")


def _minute(name: str, table: str, *, matrix: bool, source: Design) -> Design:
    """One row per elevator-minute, filled from ``source`` by a repack; every sample keeps
    its seq (``seq bigint[]``), so the rows read back are exactly the source's."""
    key = 'time timestamptz NOT NULL, elevator_id char(20) COLLATE "C" NOT NULL'
    if matrix:
        columns = f"{key}, seq bigint[] NOT NULL, samples real[] NOT NULL"
        arrays = ["seq", "samples"]
        unnest = (
            "unnest(m.seq, "
            + ", ".join(f"m.samples[{k + 1}:{k + 1}]" for k in range(len(COLUMNS)))
            + ")"
        )
        values = ", ".join(_from_real(c, f"u.{c}") + f" AS {c}" for c in _VALUES)
    else:
        columns = f"{key}, seq bigint[] NOT NULL, t_offset_ms integer[] NOT NULL, " + ", ".join(
            f"{c} {_TYPES[c]}[] NOT NULL" for c in _VALUES
        )
        arrays = ["seq", "t_offset_ms", *_VALUES]
        unnest = "unnest(m.seq, m.t_offset_ms, " + ", ".join(f"m.{c}" for c in _VALUES) + ")"
        values = ", ".join(f"u.{c}" for c in _VALUES)
    rows = (
        "SELECT * FROM (SELECT m.time + u.t_offset_ms * interval '1 ms' AS time, m.elevator_id,"
        f" u.seq, {values} FROM {table} m, {unnest}"
        f" AS u(seq, t_offset_ms, {', '.join(_VALUES)})"
        + _WHERE_ROWS.format(widen="interval '1 minute'")
        + ") r WHERE r.time BETWEEN %(lo)s AND %(hi)s"
    )
    grouped = (
        "SELECT time_bucket('1 minute', r.time) AS minute, r.elevator_id,"
        " array_agg(r.seq ORDER BY r.time) AS seq,"
        " array_agg((extract(epoch FROM r.time - time_bucket('1 minute', r.time)) * 1000)"
        "::integer ORDER BY r.time) AS t_offset_ms, "
        + ", ".join(f"array_agg(r.{c} ORDER BY r.time) AS {c}" for c in _VALUES)
        + " FROM ("
        + source.rows
        + ") r GROUP BY 1, 2"
    )
    if matrix:
        select = (
            "SELECT g.minute, g.elevator_id, g.seq, ARRAY[g.t_offset_ms::real[], "
            + ", ".join(_as_real(c, f"g.{c}") for c in _VALUES)
            + "]"
        )
    else:
        select = "SELECT g.minute, g.elevator_id, g.seq, g.t_offset_ms, " + ", ".join(
            f"g.{c}" for c in _VALUES
        )
    repack = f"INSERT INTO {table} {select} FROM ({grouped}) g"
    return Design(
        name,
        table,
        _hypertable(table, columns, arrays),
        None,
        rows,
        repack,
        widest="samples" if matrix else "speed_mps",
    )


def designs() -> list[Design]:
    """Every design the bench compares, ``row`` first."""
    row = Design(
        "row",
        "tianyan.telemetry_sample",
        None,
        _INSERT_SAMPLES,
        "SELECT time, elevator_id, seq, " + ", ".join(_VALUES) + " FROM tianyan.telemetry_sample"
        " WHERE (%(elevator)s::text IS NULL OR elevator_id = %(elevator)s::char(20))"
        " AND time BETWEEN %(lo)s AND %(hi)s",
    )
    typed = _typed("message_typed", "bench.message_typed", widen=_SPAN)
    return [
        row,
        typed,
        _matrix("message_matrix", "bench.message_matrix", widen=_SPAN),
        _json("message_json", "bench.message_json"),
        _minute("minute_typed", "bench.minute_typed", matrix=False, source=typed),
        _minute("minute_matrix", "bench.minute_matrix", matrix=True, source=typed),
        # Last: packing drops row's chunks.
        Design(
            "adopted",
            "tianyan.telemetry_sample_minute",
            None,
            None,
            "SELECT time, elevator_id, seq, " + ", ".join(_VALUES) + " FROM tianyan.raw_sample"
            " WHERE (%(elevator)s::text IS NULL OR elevator_id = %(elevator)s::char(20))"
            " AND time BETWEEN %(lo)s AND %(hi)s"
            " AND stored_time > %(lo)s::timestamptz - interval '1 minute'"
            " AND stored_time <= %(hi)s",
            "SELECT tianyan.pack_raw_chunks(1)",
            widest="speed_mps",
        ),
    ]


def _workload(
    elevators: int, duration_s: float, start: dt.datetime, path: Path
) -> list[RawMessage]:
    """The busy scenario's messages, decoded and de-duplicated as the worker would."""
    import simulator
    from registry.generate import generate

    scenario = simulator.load_scenario(simulator.SCENARIO_DIR / "busy.toml")
    fleet = generate(2026, elevators, start.date())
    simulator.simulate(
        scenario,
        fleet,
        start=start,
        duration_s=duration_s,
        output=simulator.FileOutput(path),
        progress=False,
    )
    seen: set[tuple[str, int]] = set()
    out: list[RawMessage] = []
    with path.open("rb") as f:
        for line in f:
            raw = line.rstrip(b"\n")
            try:
                m = contract.decode(raw)
            except contract.InvalidMessage:
                continue
            if (m.elevator_id, m.seq) not in seen:
                seen.add((m.elevator_id, m.seq))
                out.append(RawMessage(m, raw))
    return out


def _median_ms(conn: psycopg.Connection, sql: str, params: Sequence[dict]) -> float:
    conn.execute(sql, params[0]).fetchall()  # warm the cache: every design read warm
    times = []
    for p in params:
        t = time.perf_counter()
        conn.execute(sql, p).fetchall()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


def run(settings: Settings, *, elevators: int, minutes: float, reads: int, keep: bool) -> dict:
    from sql.migrate import migrate
    from tianyan.harness import create_database, drop_database

    start = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
    dbname = f"tianyan_bench_storage_{uuid.uuid4().hex[:8]}"
    result: dict = {"elevators": elevators, "minutes": minutes}
    with tempfile.TemporaryDirectory(prefix="tianyan-bench-storage-") as work:
        _say(f"bench: simulating {elevators} elevators × {minutes:g} min of the busy scenario")
        messages = _workload(elevators, minutes * 60, start, Path(work) / "busy.jsonl")
    samples = sum(len(m.samples.t_ms) for m, _ in messages)
    result["messages"] = len(messages)
    result["samples"] = samples
    _say(f"bench: {len(messages):,} messages, {samples:,} samples")
    batches = [messages[i : i + BATCH_MESSAGES] for i in range(0, len(messages), BATCH_MESSAGES)]
    texts = [copy_text(b) for b in batches]
    first_ms = min(m.samples.t_ms[0] for m, _ in messages)
    last_ms = max(m.samples.t_ms[-1] for m, _ in messages)
    end = dt.datetime.fromtimestamp(last_ms / 1000, dt.UTC)
    begin = dt.datetime.fromtimestamp(first_ms / 1000, dt.UTC)
    ids = sorted({m.elevator_id for m, _ in messages})
    rng = random.Random(24476)
    panel_params = [
        {"elevator": e, "lo": end - dt.timedelta(hours=1), "hi": end}
        for e in rng.sample(ids, min(reads, len(ids)))
    ]
    span_s = max(1.0, (end - begin).total_seconds() - 600)

    def evidence(e: str) -> dict:
        at = begin + dt.timedelta(seconds=300 + rng.uniform(0, span_s))
        return {
            "elevator": e,
            "lo": at - dt.timedelta(minutes=5),
            "hi": at + dt.timedelta(minutes=5),
        }

    evidence_params = [evidence(e) for e in rng.sample(ids, min(reads, len(ids)))]
    everything = {"elevator": None, "lo": begin, "hi": end}

    admin_url = create_database(settings, dbname)
    try:
        migrate(admin_url)
        figures: dict[str, dict] = {}
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA bench")
            conn.execute(SampleSink.staging_ddl)
            conn.execute(
                "CREATE TEMP TABLE message_text_staging (elevator_id text, seq bigint, body text)"
                " ON COMMIT DELETE ROWS"
            )
            reference: tuple | None = None
            for d in designs():
                if d.ddl:
                    conn.execute(d.ddl)
                t = time.perf_counter()
                if d.insert is not None:
                    staging = (
                        "message_text_staging"
                        if "message_text_staging" in d.insert
                        else ("message_staging")
                    )
                    for text in texts:
                        with conn.transaction():
                            with conn.cursor().copy(f"COPY {staging} FROM STDIN") as copy:
                                copy.write(text)
                            conn.execute(d.insert)
                else:
                    assert d.repack is not None
                    conn.execute(d.repack, everything if "%(" in d.repack else None)
                ingest_s = time.perf_counter() - t
                conn.execute(f"ANALYZE {d.table}")
                size = conn.execute("SELECT hypertable_size(%s)", (d.table,)).fetchone()
                compressed = f"pg_column_compression({d.widest})" if d.widest else "NULL"
                stored = conn.execute(
                    f"SELECT count(*), count(*) FILTER (WHERE {compressed} IS NOT NULL)"
                    f" FROM {d.table}"
                ).fetchone()
                check = conn.execute(
                    "SELECT count(*), sum(hashtext(r::text)::bigint) FROM (" + d.rows + ") r",
                    everything,
                ).fetchone()
                assert size is not None and stored is not None and check is not None
                if reference is None:
                    reference = tuple(check)
                panel = (
                    "SELECT time_bucket('10 s', r.time) AS t, max(r.speed_mps) FROM ("
                    + d.rows
                    + ") r GROUP BY 1 ORDER BY 1"
                )
                f = {
                    "table_rows": stored[0],
                    "rows_compressed_pct": round(100 * stored[1] / max(1, stored[0]), 1),
                    "bytes_per_sample": round(size[0] / samples, 1),
                    "ingest_samples_per_s": round(samples / ingest_s),
                    "panel_ms": _median_ms(conn, panel, panel_params),
                    "evidence_ms": _median_ms(conn, d.rows, evidence_params),
                    "lossless": tuple(check) == reference,
                }
                if d.insert is None:
                    f["ingest_is"] = (
                        "tianyan.pack_raw_chunks of row's chunks"
                        if d.name == "adopted"
                        else "a repack of message_typed"
                    )
                figures[d.name] = f
                _say(f"bench: {d.name}: {f}")
        base = figures["row"]["bytes_per_sample"]
        for f in figures.values():
            f["times_smaller"] = round(base / f["bytes_per_sample"], 2)
        result["designs"] = figures
        return result
    finally:
        if keep:
            _say(f"bench: kept database {dbname}")
        else:
            drop_database(settings, dbname)


def table(result: dict) -> list[str]:
    """The figures as lines of a table, one design a line."""
    head = [
        "design",
        "bytes/sample",
        "× smaller",
        "rows compressed %",
        "ingest samples/s",
        "panel ms",
        "evidence ms",
        "lossless",
    ]
    lines = ["  ".join(f"{h:>16}" for h in head)]
    for name, f in result["designs"].items():
        cells = [
            name,
            f["bytes_per_sample"],
            f["times_smaller"],
            f["rows_compressed_pct"],
            f["ingest_samples_per_s"],
            f["panel_ms"],
            f["evidence_ms"],
            f["lossless"],
        ]
        lines.append("  ".join(f"{c!s:>16}" for c in cells))
    return lines
