"""What Grafana does to a panel's SQL before PostgreSQL sees it, done the same way here.

Three steps, in Grafana's order:

1. the browser fills dashboard variables (``templateSrv.replace`` with the SQL data
   sources' ``interpolateVariable``): ``$var``, ``${var}``, ``[[var]]``, ``${var:format}``;
2. the server's global substitutions (``sqleng.Interpolate``): ``$__interval_ms``,
   ``$__interval``, ``$__unixEpochFrom()``, ``$__unixEpochTo()``;
3. the PostgreSQL macro engine (``postgresMacroEngine``, TimescaleDB option on):
   ``$__timeFilter(c)``, ``$__timeFrom()``, ``$__timeTo()``, ``$__timeGroup(c, '5m')``,
   ``$__timeGroupAlias``, ``$__time``, ``$__timeEpoch``, ``$__unixEpochFilter``,
   ``$__unixEpochNanoFilter/From/To``, ``$__unixEpochGroup(Alias)``.

Sources: grafana/grafana ``pkg/tsdb/grafana-postgresql-datasource/macros.go`` and
``sqleng/sql_engine.go``; ``public/app/features/plugins/sql/datasource/SqlDatasource.ts``;
grafana-plugin-sdk-go ``gtime``; ``@grafana/data`` ``rangeutil.roundInterval``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass


class MacroError(ValueError):
    """A macro Grafana would refuse (its message is Grafana's)."""


@dataclass(frozen=True)
class TimeRange:
    """A dashboard time range (timezone-aware)."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a time range needs timezone-aware datetimes")
        if self.end <= self.start:
            raise ValueError(f"time range ends ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True)
class Variable:
    """A dashboard variable's current value(s) and how it was declared."""

    name: str
    values: tuple[str, ...]
    multi: bool = False
    include_all: bool = False


# -- time formats ---------------------------------------------------------------------------


def rfc3339(t: dt.datetime) -> str:
    """Go's ``time.RFC3339Nano`` of ``t`` in UTC: trailing zeros of the fraction dropped."""
    u = t.astimezone(dt.UTC)
    fraction = f".{u.microsecond:06d}".rstrip("0") if u.microsecond else ""
    return u.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def _unix(t: dt.datetime) -> int:
    return int(t.timestamp() // 1)


def _unix_ns(t: dt.datetime) -> int:
    delta = t.astimezone(dt.UTC) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


# -- intervals ----------------------------------------------------------------------------

#: ``rangeutil.roundInterval``: (below this many ms, use this many ms).
_ROUND_INTERVAL_MS = (
    (10, 1),
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1_500, 1_000),
    (3_500, 2_000),
    (7_500, 5_000),
    (12_500, 10_000),
    (17_500, 15_000),
    (25_000, 20_000),
    (45_000, 30_000),
    (90_000, 60_000),
    (210_000, 120_000),
    (450_000, 300_000),
    (750_000, 600_000),
    (1_050_000, 900_000),
    (1_500_000, 1_200_000),
    (2_700_000, 1_800_000),
    (5_400_000, 3_600_000),
    (9_000_000, 7_200_000),
    (16_200_000, 10_800_000),
    (32_400_000, 21_600_000),
    (86_400_000, 43_200_000),
    (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000),
    (3_628_800_000, 2_592_000_000),
)
_YEAR_MS = 31_536_000_000

#: The panel resolution ``check`` assumes: Grafana uses the panel's width in pixels (or its
#: ``maxDataPoints``), which only a browser knows; 1000 is a wide panel.
DEFAULT_MAX_DATA_POINTS = 1000

_GO_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
_GO_UNITS_NS["h"] = 3600 * 10**9
_DAY_NS = 86_400 * 10**9
_DATE_UNITS_NS = {"d": _DAY_NS, "w": 7 * _DAY_NS, "M": 30 * _DAY_NS, "y": 365 * _DAY_NS}


def parse_interval_ns(text: str) -> int:
    """``gtime.ParseInterval``: ``5m``, ``1h30m``, ``300ms``, ``1d``, ``2w`` → nanoseconds."""
    m = re.fullmatch(r"(\d+)([dwMy])", text)
    if m:
        return int(m.group(1)) * _DATE_UNITS_NS[m.group(2)]
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise MacroError(f"error parsing interval {text}")
    return round(sum(float(n) * _GO_UNITS_NS[u] for n, u in parts))


def round_interval_ms(interval_ms: float) -> int:
    """``rangeutil.roundInterval``: the "nice" interval Grafana picks for a raw one."""
    for below, nice in _ROUND_INTERVAL_MS:
        if interval_ms < below:
            return nice
    return _YEAR_MS


def interval_ms(
    time_range: TimeRange,
    *,
    max_data_points: int = DEFAULT_MAX_DATA_POINTS,
    min_interval: str | None = None,
) -> int:
    """``$__interval_ms`` as Grafana computes it for a panel: the range over the panel's
    resolution, rounded, and not below the panel's or data source's minimum interval."""
    range_ms = (time_range.end - time_range.start) / dt.timedelta(milliseconds=1)
    rounded = round_interval_ms(range_ms / max_data_points)
    low_ms = parse_interval_ns(min_interval) // 1_000_000 if min_interval else 1
    return max(rounded, low_ms)


def format_interval(ms: int) -> str:
    """``gtime.FormatInterval``: the largest whole unit, truncated (``90000`` → ``1m``)."""
    for unit, size in (("y", _YEAR_MS), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    if ms >= 1000:
        return f"{ms // 1000}s"
    return f"{ms}ms" if ms >= 1 else "1ms"


# -- step 1: dashboard variables -----------------------------------------------------------

# templateSrv's variable pattern: $name | [[name(:format)]] | ${name(.path)(:format)}
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}"
)


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format(variable: Variable, fmt: str | None) -> str:
    values = variable.values
    if fmt is None:
        # SqlDatasource.interpolateVariable
        if variable.multi or variable.include_all:
            return ",".join(_quote_literal(v) for v in values)
        return values[0].replace("'", "''") if values else ""
    if fmt in ("raw", "text"):
        return ",".join(values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "sqlstring":
        return ",".join(_quote_literal(v) for v in values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "queryparam":
        from urllib.parse import quote

        return "&".join(f"var-{variable.name}={quote(v, safe='')}" for v in values)
    raise MacroError(f"${{{variable.name}:{fmt}}}: unknown variable format {fmt!r}")


def interpolate_variables(
    sql: str, variables: Mapping[str, Variable], time_range: TimeRange | None = None
) -> str:
    """Fill dashboard variables as Grafana's browser does for a SQL data source.

    Unknown names are left as they are (Grafana does the same); with ``time_range`` the
    built-ins ``$__from`` and ``$__to`` (Unix milliseconds) are filled too.
    """
    builtins: dict[str, Variable] = {}
    if time_range is not None:
        for name, t in (("__from", time_range.start), ("__to", time_range.end)):
            builtins[name] = Variable(name, (str(int(t.timestamp() * 1000)),))

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        variable = variables.get(name) or builtins.get(name)
        if variable is None:
            return m.group(0)
        return _format(variable, fmt)

    return _VARIABLE.sub(replace, sql)


# -- step 2: sqleng.Interpolate ------------------------------------------------------------


def global_substitutions(sql: str, time_range: TimeRange, interval: int) -> str:
    """``sqleng.Interpolate``: the interval (``interval`` ms) and the Unix-epoch bounds."""
    sql = sql.replace("$__interval_ms", str(interval))
    sql = sql.replace("$__interval", format_interval(interval))
    sql = sql.replace("$__unixEpochFrom()", str(_unix(time_range.start)))
    return sql.replace("$__unixEpochTo()", str(_unix(time_range.end)))


# -- step 3: the PostgreSQL macro engine ---------------------------------------------------

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


def _seconds(ns: int) -> float:
    return ns / 1e9


def _go_float(x: float) -> str:
    """Go's ``%v`` of a float64: shortest digits; exponent form below 1e-4 or from 1e6."""
    if x != 0 and not 1e-4 <= abs(x) < 1e6:
        mantissa, _, exponent = f"{x:e}".partition("e")
        digits = repr(float(mantissa)).removesuffix(".0")
        return f"{digits}e{exponent[0]}{int(exponent[1:]):02d}"
    return repr(x).removesuffix(".0")


def _macro(name: str, args: list[str], time_range: TimeRange, timescaledb: bool) -> str:
    start, end = time_range.start, time_range.end
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{rfc3339(start)}' AND '{rfc3339(end)}'"
    if name == "__timeFrom":
        return f"'{rfc3339(start)}'"
    if name == "__timeTo":
        return f"'{rfc3339(end)}'"
    if name in ("__timeGroup", "__unixEpochGroup"):
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        ns = parse_interval_ns(args[1].strip("'"))
        if name == "__unixEpochGroup":
            s = _go_float(_seconds(ns))
            return f"floor(({args[0]})/{s})*{s}"
        if timescaledb:
            return f"time_bucket('{_seconds(ns):.3f}s',{args[0]})"
        s = _go_float(_seconds(ns))
        return f"floor(extract(epoch from {args[0]})/{s})*{s}"
    if name == "__timeGroupAlias":
        return _macro("__timeGroup", args, time_range, timescaledb) + ' AS "time"'
    if name == "__unixEpochGroupAlias":
        return _macro("__unixEpochGroup", args, time_range, timescaledb) + ' AS "time"'
    if name == "__unixEpochFilter":
        c = args[0]
        return f"{c} >= {_unix(start)} AND {c} <= {_unix(end)}"
    if name == "__unixEpochNanoFilter":
        c = args[0]
        return f"{c} >= {_unix_ns(start)} AND {c} <= {_unix_ns(end)}"
    if name == "__unixEpochNanoFrom":
        return str(_unix_ns(start))
    if name == "__unixEpochNanoTo":
        return str(_unix_ns(end))
    raise MacroError(f'unknown macro "{name}"')


def expand_macros(sql: str, time_range: TimeRange, *, timescaledb: bool = True) -> str:
    """The PostgreSQL macro engine's ``Interpolate``."""

    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        # Before Grafana 5.3 $__timeGroup added AS "time" itself: a ',' right after the
        # macro's first occurrence still means the alias form.
        if name == "__timeGroup":
            at = sql.find(m.group(0)) + len(m.group(0))
            if at < len(sql) and sql[at] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in m.group(2).split(",")]
        return _macro(name, args, time_range, timescaledb)

    return _MACRO.sub(replace, sql)


def interpolate(
    sql: str,
    time_range: TimeRange,
    variables: Mapping[str, Variable] | None = None,
    *,
    interval: int | None = None,
    timescaledb: bool = True,
) -> str:
    """All three steps: the SQL PostgreSQL receives from Grafana for this panel query.

    ``interval`` is ``$__interval_ms`` (default: :func:`interval_ms` of the range).
    """
    sql = interpolate_variables(sql, variables or {}, time_range)
    sql = global_substitutions(sql, time_range, interval or interval_ms(time_range))
    return expand_macros(sql, time_range, timescaledb=timescaledb)


# -- safety: how each variable reaches the SQL ---------------------------------------------

#: Formats whose every value Grafana puts in an SQL string literal with its quotes doubled.
_QUOTING_FORMATS = ("sqlstring",)


def unquoted_variables(sql: str, declared: Mapping[str, Mapping[str, object]]) -> list[str]:
    """The references in ``sql`` through which a dashboard variable's value (which anyone can
    set in the URL) would reach PostgreSQL as SQL text rather than as a string literal.

    Safe: ``${name:sqlstring}``; a multi-value or "All" variable without a format and without a
    custom all-value (Grafana quotes each value); a single-value one without a format written
    inside quotes, ``'$name'`` (Grafana doubles its quotes). ``declared`` maps a variable's name
    to its dashboard JSON; Grafana's built-ins (``$__…``) and undeclared names are not values
    a viewer sets.
    """
    found = []
    for m in _VARIABLE.finditer(sql):
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        variable = declared.get(name)
        if name.startswith("__") or variable is None:
            continue
        if fmt in _QUOTING_FORMATS:
            continue
        if fmt is None:
            if (variable.get("multi") or variable.get("includeAll")) and not variable.get(
                "allValue"
            ):
                continue
            quoted = sql[m.start() - 1 : m.start()] == "'" and sql[m.end() : m.end() + 1] == "'"
            if quoted and not (variable.get("multi") or variable.get("includeAll")):
                continue
        found.append(m.group(0))
    return found
