"""``tianyan dashboards check``: run every panel's SQL the way Grafana would, against the real
TimescaleDB, as the role of the board's users.

For each board: connect as its data source's role (the URL given with its user swapped),
read-only; fill the variables in order from their own queries — "All" where a variable offers
it, else its first option (a textbox: the first value of the board's ``typed`` query); then
for every panel expand variables and macros exactly as Grafana does (:mod:`dashboards.macros`)
and run the query. A panel fails on

- an SQL or macro error (the message is PostgreSQL's or Grafana's);
- a time-series result Grafana could not draw (no ``time`` column, or rows not in time order);
- no rows, when the data it shows exist in the range (its ``shows`` query finds rows) — or,
  for a panel without ``shows`` (an aggregate), no rows at all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from dashboards import macros
from dashboards.board import Board
from dashboards.datasources import MIN_INTERVAL
from dashboards.macros import TimeRange, Variable
from foundation.settings import role_url

#: A panel's query may take this long before check gives up on it.
STATEMENT_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class PanelResult:
    """What one panel's query did."""

    board: str  # the board's title
    panel: str  # the panel's title (or "variable $name")
    sql: str  # as sent to PostgreSQL
    rows: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        where = f"{self.board} / {self.panel}"
        if self.ok:
            return f"ok    {where}: {self.rows} row{'s' if self.rows != 1 else ''}"
        return f"FAIL  {where}: {self.error}\n      SQL: {' '.join(self.sql.split())}"


def panels_of(board_json: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Every panel of a dashboard, those inside collapsed rows included; rows themselves not."""
    for panel in board_json.get("panels") or []:
        if panel.get("type") == "row":
            yield from panel.get("panels") or []
        else:
            yield panel


class _Session:
    """One read-only connection as a board's role, and the board's variables so far."""

    def __init__(self, conn: psycopg.Connection, board: str, time_range: TimeRange) -> None:
        self.conn, self.board, self.time_range = conn, board, time_range
        self.variables: dict[str, Variable] = {}

    def expand(
        self, sql: str, *, interval: str | None = None, max_points: int | None = None
    ) -> str:
        ms = macros.interval_ms(
            self.time_range,
            max_data_points=max_points or macros.DEFAULT_MAX_DATA_POINTS,
            min_interval=interval or MIN_INTERVAL,
        )
        return macros.interpolate(sql, self.time_range, self.variables, interval=ms)

    def run(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self.conn.cursor() as cur:
            cur.execute(sql.encode())  # bytes: sent as given, no placeholders
            if cur.description is None:
                return [], []
            return [c.name for c in cur.description], cur.fetchall()


def _error(e: Exception) -> str:
    if isinstance(e, psycopg.Error) and e.diag.message_primary:
        return f"{e.diag.sqlstate or ''} {e.diag.message_primary}".strip()
    return str(e).strip()


def _values(columns: list[str], rows: list[tuple[Any, ...]]) -> tuple[str, ...]:
    """A variable query's options: its ``__value`` column, or else its first."""
    at = columns.index("__value") if "__value" in columns else 0
    return tuple(str(row[at]) for row in rows if row[at] is not None)


def _fill_variable(
    session: _Session, variable: Mapping[str, Any], typed: Mapping[str, str]
) -> PanelResult:
    name = variable["name"]
    kind = variable.get("type")
    label = f"variable ${name}"
    sql = ""
    try:
        if kind == "query" or (kind == "textbox" and name in typed):
            query = variable.get("query") if kind == "query" else typed[name]
            if isinstance(query, Mapping):
                query = query.get("rawSql") or query.get("query") or ""
            sql = session.expand(str(query))
            values = _values(*session.run(sql))
            # "All" (Grafana sends every option) where offered, else the first option
            if not (kind == "query" and variable.get("includeAll")):
                values = values[:1]
        elif kind in ("textbox", "constant"):
            values = (str(variable.get("query") or ""),)
        elif kind == "custom":
            values = tuple(v.strip() for v in str(variable.get("query") or "").split(","))[:1]
        else:
            return PanelResult(session.board, label, sql, 0, f"variable type {kind!r} not checked")
    except (psycopg.Error, macros.MacroError) as e:
        return PanelResult(session.board, label, sql, 0, _error(e))
    session.variables[name] = Variable(
        name,
        values,
        multi=bool(variable.get("multi")),
        include_all=bool(variable.get("includeAll")),
    )
    if not values:
        return PanelResult(session.board, label, sql, 0, "its query returned no value to pick")
    return PanelResult(session.board, label, sql, 1)


def _time_series_problem(columns: list[str], rows: list[tuple[Any, ...]]) -> str | None:
    """What Grafana would refuse in a time-series result (sqleng: time column, sort order)."""
    if "time" not in columns:
        return (
            "time column is missing; make sure your data includes a time column for time "
            "series format or switch to a table format that doesn't require it"
        )
    at = columns.index("time")
    times = [row[at] for row in rows]
    if any(b < a for a, b in itertools.pairwise(times) if a is not None and b is not None):
        return "rows are not sorted ascending by time (Grafana cannot draw a long series)"
    return None


#: Called with each panel's result set as it is read (``dashboards preview`` draws them).
OnRows = Callable[[Mapping[str, Any], list[str], list[tuple[Any, ...]]], None]


def _check_panel(
    session: _Session,
    panel: Mapping[str, Any],
    shows: Mapping[str, str],
    on_rows: OnRows | None = None,
) -> list[PanelResult]:
    title = str(panel.get("title") or f"panel {panel.get('id')}")
    results = []
    for target in panel.get("targets") or []:
        raw = target.get("rawSql")
        if not raw or target.get("hide"):
            continue
        sql = raw
        try:
            sql = session.expand(
                raw, interval=panel.get("interval"), max_points=panel.get("maxDataPoints")
            )
            columns, rows = session.run(sql)
        except (psycopg.Error, macros.MacroError) as e:
            results.append(PanelResult(session.board, title, sql, 0, _error(e)))
            continue
        if on_rows is not None:
            on_rows(panel, columns, rows)
        problem = None
        if rows and target.get("format", "time_series") == "time_series":
            problem = _time_series_problem(columns, rows)
        if not rows:
            problem = _empty_problem(session, title, shows)
        results.append(PanelResult(session.board, title, sql, len(rows), problem))
    return results


def _empty_problem(session: _Session, title: str, shows: Mapping[str, str]) -> str | None:
    if title not in shows:
        return "returned no rows (it is an aggregate and always should)"
    probe = ""
    try:
        probe = session.expand(shows[title])
        _, rows = session.run(f"SELECT EXISTS ({probe})")
    except (psycopg.Error, macros.MacroError) as e:
        return f"returned no rows, and its data query failed: {_error(e)}; query: {probe}"
    if rows and rows[0][0]:
        shown = " ".join(probe.split())
        return f"returned no rows, though the data it shows exist in the range ({shown})"
    return None


def check_board(
    board_json: Mapping[str, Any],
    url: str,
    time_range: TimeRange,
    *,
    shows: Mapping[str, str] | None = None,
    typed: Mapping[str, str] | None = None,
    on_rows: OnRows | None = None,
) -> list[PanelResult]:
    """Run a dashboard's variables and panels at ``url`` (already the role's URL); each
    panel's columns and rows go to ``on_rows`` if given."""
    title = str(board_json.get("title") or board_json.get("uid"))
    options = f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    with psycopg.connect(url, autocommit=True, options=options) as conn:
        session = _Session(conn, title, time_range)
        results = [
            _fill_variable(session, v, typed or {})
            for v in (board_json.get("templating") or {}).get("list") or []
        ]
        for panel in panels_of(board_json):
            results.extend(_check_panel(session, panel, shows or {}, on_rows))
    return results


def scoped_login_role(database_url: str, scope: str) -> str | None:
    """The first login role (by name) mapped by ``scope`` in ``tianyan.data_scope``: a scoped
    board is checked as one real unit's role, under row-level security."""
    if scope not in ("user_unit", "maintenance_company"):
        raise ValueError(f"unknown scope {scope!r}")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            f"SELECT role_name FROM tianyan.data_scope WHERE {scope} IS NOT NULL"
            " ORDER BY role_name LIMIT 1"
        ).fetchone()
    return None if row is None else str(row[0])


def check(
    boards: Sequence[Board],
    database_url: str,
    time_range: TimeRange,
    *,
    on_rows: OnRows | None = None,
) -> list[PanelResult]:
    """Check every board as its users' role; ``database_url`` names host, port and database
    (and, for a scoped board, is where ``tianyan.data_scope`` is read: the owner's URL).
    Each panel's columns and rows go to ``on_rows`` if given."""
    results = []
    for board in boards:
        role = board.source.role
        if board.source.scope:
            found = scoped_login_role(database_url, board.source.scope)
            if found is None:
                results.append(
                    PanelResult(
                        board.title,
                        "data source",
                        "",
                        0,
                        f"no login role with a {board.source.scope} in tianyan.data_scope to"
                        " check this board as: create one with `tianyan db scoped-role`",
                    )
                )
                continue
            role = found
        results.extend(
            check_board(
                board.to_json(),
                role_url(database_url, role),
                time_range,
                shows=board.shows,
                typed=board.typed,
                on_rows=on_rows,
            )
        )
    return results


def unquoted_variable_uses(board_json: Mapping[str, Any]) -> list[str]:
    """Every place in a board's SQL (panels and variable queries) where a variable's value
    would be pasted in as SQL (:func:`dashboards.macros.unquoted_variables`)."""
    declared = {str(v["name"]): v for v in (board_json.get("templating") or {}).get("list") or []}
    title = str(board_json.get("title") or board_json.get("uid"))
    sources: list[tuple[str, str]] = []
    for v in declared.values():
        query = v.get("query")
        if isinstance(query, Mapping):
            query = query.get("rawSql") or query.get("query")
        if v.get("type") == "query" and query:
            sources.append((f"variable ${v['name']}", str(query)))
    for panel in panels_of(board_json):
        for target in panel.get("targets") or []:
            if target.get("rawSql"):
                sources.append((str(panel.get("title")), str(target["rawSql"])))
    return [
        f"{title} / {where}: {ref} is pasted into the SQL unquoted; write ${{name:sqlstring}}"
        f" (and cast it, e.g. ::bigint)"
        for where, sql in sources
        for ref in macros.unquoted_variables(sql, declared)
    ]
