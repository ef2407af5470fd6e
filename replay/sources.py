"""Where replayed history comes from: TimescaleDB, or the simulator's JSON Lines and Parquet.

Every source yields :class:`ReplayItem` in event-time order across elevators and in
original order per elevator, with the original event times untouched.
"""

from __future__ import annotations

import datetime as dt
import queue
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg

from foundation import contract
from foundation.contract import COLUMNS, CodeEvent, Samples, TelemetryMessage


class ReplaySourceError(ValueError):
    """The history to replay cannot be read; the message says which input and why."""


@dataclass(frozen=True)
class ReplayItem:
    key: bytes | None  # the elevator id (None for a line with no recognisable id)
    value: bytes  # the message exactly as it will be published
    event_ms: int | None  # first sample time, for pacing (None if unknown)


def _message_item(m: TelemetryMessage) -> ReplayItem:
    return ReplayItem(m.elevator_id.encode(), contract.encode(m), m.samples.t_ms[0])


# -- JSON Lines ------------------------------------------------------------------------------
_ID_FIELD = b'"elevator_id":"'
_T_FIELD = b'"t_ms":['


def _peek(line: bytes) -> tuple[bytes | None, int | None]:
    """Elevator id and first sample time without a full parse (replay must be fast)."""
    key = None
    i = line.find(_ID_FIELD)
    if i >= 0:
        candidate = line[i + len(_ID_FIELD) : i + len(_ID_FIELD) + 20]
        if candidate.isdigit() and len(candidate) == 20:
            key = candidate
    t = None
    j = line.find(_T_FIELD)
    if j >= 0:
        k = j + len(_T_FIELD)
        end = k
        while end < len(line) and 48 <= line[end] <= 57:
            end += 1
        if end > k:
            t = int(line[k:end])
    return key, t


def peek_key(line: bytes) -> bytes | None:
    """The elevator id of a JSON Lines message (its Kafka key) without a full parse; None
    when the line has no recognisable id."""
    return _peek(line)[0]


def from_jsonl(path: Path) -> Iterator[ReplayItem]:
    """Each line as it was sent, malformed lines included (the pipeline must meet them too)."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise ReplaySourceError(f"{path}: {e.strerror}") from e
    with f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            key, t = _peek(line)
            yield ReplayItem(key, line, t)


@dataclass(frozen=True)
class JsonlContents:
    """What a correct pipeline must make of a JSON Lines stream: the benches, the demo and
    the tests wait for and check against this."""

    lines: int  # non-empty lines, as published
    samples: frozenset[tuple[str, int]]  # (elevator id, t_ms) of every valid message
    malformed: int  # lines failing the contract (quarantined)
    duplicates: int  # valid messages repeating an (elevator id, seq) already seen

    @property
    def messages(self) -> int:
        """Valid, distinct messages: what the worker folds."""
        return self.lines - self.malformed - self.duplicates


def inspect_jsonl(path: Path) -> JsonlContents:
    """Read ``path`` as the worker will (:func:`foundation.contract.decode`) and count."""
    samples: set[tuple[str, int]] = set()
    seen: set[tuple[str, int]] = set()
    lines = malformed = duplicates = 0
    for item in from_jsonl(path):
        lines += 1
        try:
            m = contract.decode(item.value)
        except contract.InvalidMessage:
            malformed += 1
            continue
        duplicates += (m.elevator_id, m.seq) in seen
        seen.add((m.elevator_id, m.seq))
        samples.update((m.elevator_id, t) for t in m.samples.t_ms)
    return JsonlContents(lines, frozenset(samples), malformed, duplicates)


# -- Parquet ---------------------------------------------------------------------------------
def from_parquet(path: Path) -> Iterator[ReplayItem]:
    """Rows of one message (same elevator and seq, consecutive) rebuilt into that message."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:
        raise ReplaySourceError(f"{path}: not a readable Parquet file ({e})") from e
    needed = {"elevator_id", "seq", "kind", "faults", "events", *COLUMNS}
    missing = needed - set(table.column_names)
    if missing:
        raise ReplaySourceError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    cols = {name: table.column(name).to_pylist() for name in needed}
    n = table.num_rows
    start = 0
    while start < n:
        end = start + 1
        while (
            end < n
            and cols["elevator_id"][end] == cols["elevator_id"][start]
            and cols["seq"][end] == cols["seq"][start]
        ):
            end += 1
        yield _message_item(_rebuild(cols, start, end))
        start = end


def _rebuild(cols: dict[str, list], start: int, end: int) -> TelemetryMessage:
    t = cols["t_ms"][start:end]
    faults = [
        CodeEvent(t[i - start], c) for i in range(start, end) for c in (cols["faults"][i] or [])
    ]
    events = [
        CodeEvent(t[i - start], c) for i in range(start, end) for c in (cols["events"][i] or [])
    ]
    return TelemetryMessage(
        schema=contract.SCHEMA_NAME,
        elevator_id=cols["elevator_id"][start],
        seq=cols["seq"][start],
        kind=cols["kind"][start],
        samples=Samples(**{c: cols[c][start:end] for c in COLUMNS}),
        faults=faults,
        events=events,
    )


# -- TimescaleDB -----------------------------------------------------------------------------
#: One minute of the city is ≈ 600,000 messages (≈ 0.6 GB of JSON); two are held at once.
_SLICE = dt.timedelta(seconds=60)
_FETCHERS = 2
_SPAN = dt.timedelta(milliseconds=contract.MAX_MESSAGE_SPAN_MS)


def _filters(elevators: Sequence[str], districts: Sequence[str]) -> tuple[str, dict[str, object]]:
    where = ""
    params: dict[str, object] = {}
    if elevators:
        where += " AND elevator_id = ANY(%(elevators)s)"
        params["elevators"] = list(elevators)
    if districts:
        where += (
            " AND elevator_id IN (SELECT registration_code FROM tianyan.elevator"
            " WHERE district = ANY(%(districts)s))"
        )
        params["districts"] = list(districts)
    return where, params


def from_database(
    url: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    elevators: Sequence[str] = (),
    districts: Sequence[str] = (),
    slice_length: dt.timedelta = _SLICE,
) -> Iterator[ReplayItem]:
    """Stored messages whose first sample lies in ``[start, end)``, rebuilt from their samples.

    PostgreSQL regroups each message's samples (same elevator and ``seq``) and writes the
    message JSON itself, in slices of ``slice_length`` (one minute: a minute of the whole
    city; one elevator's history reads faster in longer ones); messages come out ordered by
    first sample time, hence per elevator in their original order. Stored samples do not
    record whether they came as a heartbeat: one-sample messages are replayed as heartbeats.
    """
    if end <= start:
        raise ReplaySourceError(
            f"time range: end {end.isoformat()} is not after start {start.isoformat()}"
        )
    where, params = _filters(elevators, districts)
    query = _QUERY.format(where=where)
    slices = []
    lo = start
    while lo < end:
        slices.append((lo, min(lo + slice_length, end)))
        lo = slices[-1][1]
    # PostgreSQL builds the JSON, one backend per connection: two connections fetch the
    # next slices while the current one is published (in order), using both cores.
    with ExitStack() as stack:
        conns = [stack.enter_context(psycopg.connect(url)) for _ in range(_FETCHERS)]
        for conn in conns:
            # The samples reach array_agg in (elevator, seq, time) order from the sorted
            # subquery only through a plain sort + group aggregate: no hashing, no parallelism.
            conn.execute("SET enable_hashagg = off")
            conn.execute("SET max_parallel_workers_per_gather = 0")
            # Short analytical queries: JIT compilation costs more than it saves, and the
            # final sort of a slice should stay in memory.
            conn.execute("SET jit = off")
            conn.execute("SET work_mem = '256MB'")
        idle: queue.SimpleQueue[psycopg.Connection] = queue.SimpleQueue()
        for conn in conns:
            idle.put(conn)

        def fetch(bounds: tuple[dt.datetime, dt.datetime]) -> list[tuple[str, int, str]]:
            conn = idle.get()
            try:
                window = {
                    "lo": bounds[0],
                    "hi": bounds[1],
                    "lo_wide": bounds[0] - _SPAN,
                    "hi_wide": bounds[1] + _SPAN,
                    "schema": contract.SCHEMA_NAME,
                }
                return conn.execute(query, {**params, **window}).fetchall()
            finally:
                idle.put(conn)

        pool = stack.enter_context(ThreadPoolExecutor(max_workers=_FETCHERS))
        ahead: deque[Future[list[tuple[str, int, str]]]] = deque()
        todo = iter(slices)
        for bounds in todo:
            ahead.append(pool.submit(fetch, bounds))
            if len(ahead) == _FETCHERS:
                break
        while ahead:
            rows = ahead.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                ahead.append(pool.submit(fetch, nxt))
            for elevator_id, first_ms, value in rows:
                yield ReplayItem(elevator_id.encode(), value.encode(), first_ms)


# A message spans at most MAX_MESSAGE_SPAN_MS, so reading that much either side of a slice
# and keeping the messages that begin inside it splits none. raw_sample holds recent and
# packed samples (migration 0012); the bound on stored_time reaches packed minutes by key.
# real columns print in JSON as their shortest float4 form (1.23, not 1.2300000190734863).
_QUERY = (
    "SELECT m.elevator_id, m.t_ms[1], json_build_object("
    "'schema', %(schema)s::text, 'elevator_id', m.elevator_id, 'seq', m.seq,"
    " 'kind', CASE WHEN m.n = 1 THEN 'heartbeat' ELSE 'batch' END,"
    " 'samples', json_build_object("
    + ", ".join(f"'{c}', m.{c}" for c in COLUMNS)
    + "), 'faults', coalesce(c.faults, '[]'::json), 'events', coalesce(c.events, '[]'::json)"
    ")::text"
    " FROM (SELECT elevator_id, seq, min(time) AS first_time, count(*) AS n,"
    " array_agg((extract(epoch FROM time) * 1000)::bigint) AS t_ms, "
    + ", ".join(f"array_agg({c}) AS {c}" for c in COLUMNS[1:])
    + " FROM (SELECT * FROM tianyan.raw_sample"
    " WHERE time >= %(lo_wide)s AND time < %(hi_wide)s"
    " AND stored_time > %(lo_wide)s::timestamptz - interval '1 minute'"
    " AND stored_time < %(hi_wide)s{where}"
    " ORDER BY elevator_id, seq, time) s"
    " GROUP BY elevator_id, seq HAVING min(time) >= %(lo)s AND min(time) < %(hi)s) m"
    " LEFT JOIN (SELECT elevator_id, seq,"
    " json_agg(json_build_object('t_ms', (extract(epoch FROM time) * 1000)::bigint,"
    " 'code', code) ORDER BY time, code) FILTER (WHERE kind = 'fault') AS faults,"
    " json_agg(json_build_object('t_ms', (extract(epoch FROM time) * 1000)::bigint,"
    " 'code', code) ORDER BY time, code) FILTER (WHERE kind = 'event') AS events"
    " FROM tianyan.telemetry_code WHERE time >= %(lo_wide)s AND time < %(hi_wide)s{where}"
    " GROUP BY elevator_id, seq) c USING (elevator_id, seq)"
    " ORDER BY m.first_time, m.elevator_id"
)


# -- totals, for the progress bar ------------------------------------------------------------
def count_jsonl(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def count_parquet(path: Path) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["elevator_id", "seq"])
    if t.num_rows == 0:
        return 0
    ids, seqs = t.column("elevator_id"), t.column("seq")
    changed = pc.or_(pc.not_equal(ids[1:], ids[:-1]), pc.not_equal(seqs[1:], seqs[:-1]))
    return 1 + int(pc.sum(changed).as_py() or 0)


def count_database(
    url: str,
    start: dt.datetime,
    end: dt.datetime,
    *,
    elevators: Sequence[str] = (),
    districts: Sequence[str] = (),
) -> int:
    where, params = _filters(elevators, districts)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT (elevator_id, seq)) FROM tianyan.raw_sample"
            " WHERE time >= %(lo)s AND time < %(hi)s"
            " AND stored_time > %(lo)s::timestamptz - interval '1 minute'"
            " AND stored_time < %(hi)s" + where,
            {**params, "lo": start, "hi": end},
        ).fetchone()
    return int(row[0]) if row else 0
