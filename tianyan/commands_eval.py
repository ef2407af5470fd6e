"""``tianyan score`` and ``tianyan evaluate``: click commands for the ``tianyan`` group.

``score`` runs a named detector (:data:`detectors.catalog.SERIES_SCORERS`) over a CSV's numeric
columns; ``evaluate`` measures the worker's detectors against a simulated, labelled fleet
(:mod:`evaluation.runs`). Registered in :mod:`tianyan.cli` as ``score_command`` and
``evaluate_command``.
"""

from __future__ import annotations

import datetime as dt
import inspect
import sys
from pathlib import Path
from typing import Any

import click

from foundation.settings import Settings, SettingsError

#: A date or date-time on the command line, read as UTC (the commands share it).
UTC_TIME = click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"])


def settings_from_env() -> Settings:
    """The ``TIANYAN_*`` settings, or a click error naming the bad variable (every command
    reads them this way)."""
    try:
        return Settings.from_env()
    except SettingsError as e:
        raise click.ClickException(str(e)) from e


#: Name of the column ``score`` adds.
SCORE_COLUMN = "anomaly_score"
#: One line per detector for ``score --list``; parameters and defaults are read from the
#: registry itself, so only the sentence lives here.
DETECTOR_SUMMARY = {
    "ewma": "EWMA chart per column against a baseline learned over the first values",
    "cusum": "two-sided CUSUM per column: small persistent shifts of the mean",
    "robust_z": "robust z-score (median / MAD) per column against a bounded history",
    "half_space_trees": "river Half-Space Trees over all columns jointly (multivariate)",
    "contextual": "CAD OSE contextual anomaly per column (NAB 70 standard; one alarm per event)",
}


def _detector_lines() -> list[str]:
    from detectors.catalog import SERIES_SCORERS as DETECTORS

    lines = []
    for name in sorted(DETECTORS):
        params = " ".join(
            f"{p.name}={p.default}" for p in inspect.signature(DETECTORS[name]).parameters.values()
        )
        lines.append(f"{name:18} {DETECTOR_SUMMARY.get(name, '')} ({params})")
    return lines


def _parse_params(pairs: tuple[str, ...]) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.ClickException(f"--param {pair!r}: expected key=value, e.g. alpha=0.2")
        try:
            out[key] = int(text)
        except ValueError:
            try:
                out[key] = float(text)
            except ValueError:
                raise click.ClickException(f"--param {key}: {text!r} is not a number") from None
    return out


def _read_series(path: Path, time_column: str | None) -> tuple[Any, str, Any, dict[str, Any]]:
    """(frame, time column name, timestamps as float, value columns as float arrays).

    Positions in messages are file lines (the header is line 1)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise click.ClickException(f"{path}: cannot read it as CSV ({e})") from e
    if len(frame.columns) == 0:
        raise click.ClickException(f"{path}: no columns")
    if time_column is None:
        time_column = str(frame.columns[0])
    elif time_column not in frame.columns:
        raise click.ClickException(
            f"--time-column {time_column}: no such column "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    if SCORE_COLUMN in frame.columns:
        raise click.ClickException(f"{path}: already has a column {SCORE_COLUMN!r}")
    value_names = [str(c) for c in frame.columns if c != time_column]
    if not value_names:
        raise click.ClickException(
            f"{path}: no value columns (only the time column {time_column!r})"
        )
    timestamps = _timestamps(path, frame[time_column], time_column)
    columns = {}
    for name in value_names:
        raw = frame[name]
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise click.ClickException(
                f"{path}: column {name!r} is not numeric (line {row + 2}: {raw.iloc[row]!r})"
            )
        columns[name] = values.to_numpy(dtype=float)
    return frame, time_column, timestamps, columns


def _timestamps(path: Path, raw: Any, name: str) -> Any:
    """Numbers as they are (any unit); anything else parsed as dates, in epoch ms."""
    import pandas as pd

    if raw.isna().any():
        row = int(raw.isna().to_numpy().argmax())
        raise click.ClickException(f"{path}: time column {name!r}: line {row + 2} is empty")
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        return raw.to_numpy(dtype=float)
    parsed = pd.to_datetime(raw.astype(str), utc=True, errors="coerce", format="mixed")
    if parsed.isna().any():
        row = int(parsed.isna().to_numpy().argmax())
        raise click.ClickException(
            f"{path}: time column {name!r}: line {row + 2}: {raw.iloc[row]!r} is not a "
            "timestamp (ISO 8601 or a number)"
        )
    return (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(milliseconds=1)


@click.command("score")
@click.argument(
    "path", type=click.Path(dir_okay=False, path_type=Path), required=False, metavar="FILE.csv"
)
@click.option("--detector", "detector", default=None, help="Detector name (see --list).")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the scored CSV here instead of stdout.",
)
@click.option(
    "--time-column",
    "time_column",
    default=None,
    help="The timestamp column (default: the first column).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A detector parameter, e.g. alpha=0.2 (repeatable; see --list).",
)
@click.option(
    "--strict-time",
    "strict_time",
    is_flag=True,
    help="Refuse a file whose time steps back or repeats (default: score it in file order "
    "and warn).",
)
@click.option("--list", "list_", is_flag=True, help="Name the detectors and their parameters.")
def score_command(
    path: Path | None,
    detector: str | None,
    out: Path | None,
    time_column: str | None,
    params: tuple[str, ...],
    strict_time: bool,
    list_: bool,
) -> None:
    """Score every row of a CSV's numeric columns with a named detector.

    The first column (or --time-column) holds timestamps — numbers in any unit, or dates;
    every other column is a numeric value column. Rows are scored in file order: rows whose
    time steps back or repeats are counted in a warning on stderr (refused with
    --strict-time), and a step back longer than the gap threshold restarts EWMA and CUSUM
    as a long gap does. The output is
    the input with an anomaly_score column in [0, 1] (0.5 is the detector's own alarm
    threshold), NaN where a row has a missing value or the detector is still warming up.
    """
    import numpy as np

    from detectors.catalog import SERIES_SCORERS as DETECTORS
    from detectors.series import SeriesError, score_series, time_order

    if list_:
        for line in _detector_lines():
            click.echo(line)
        return
    if detector is None:
        raise click.ClickException("--detector is required (see `tianyan score --list`)")
    if detector not in DETECTORS:
        raise click.ClickException(
            f"--detector {detector}: unknown detector (known: {', '.join(sorted(DETECTORS))})"
        )
    if path is None:
        raise click.ClickException("FILE.csv is required")
    kwargs = _parse_params(params)
    frame, name, timestamps, columns = _read_series(path, time_column)
    order = time_order(np.asarray(timestamps, dtype=float))
    raw = frame[name]
    if strict_time and order.first_step_back is not None:
        k = order.first_step_back
        raise click.ClickException(
            f"{path}: time column {name!r}: line {k + 2}: {str(raw.iloc[k])!r} is before line "
            f"{k + 1}: {str(raw.iloc[k - 1])!r} (--strict-time)"
        )
    if strict_time and order.first_repeat is not None:
        k = order.first_repeat
        raise click.ClickException(
            f"{path}: time column {name!r}: line {k + 2}: {str(raw.iloc[k])!r} repeats line "
            f"{k + 1} (--strict-time)"
        )
    if not order.clean:
        numeric = np.issubdtype(np.asarray(raw).dtype, np.number)
        unit = "in the column's unit" if numeric else "ms"
        parts = []
        if order.steps_back:
            parts.append(
                f"{order.steps_back} rows step back in time (first at line "
                f"{order.first_step_back + 2 if order.first_step_back is not None else '-'}, "
                f"longest {order.longest_step_back:.15g} {unit})"
            )
        if order.repeats:
            parts.append(
                f"{order.repeats} rows repeat the previous row's time (first at line "
                f"{order.first_repeat + 2 if order.first_repeat is not None else '-'})"
            )
        click.echo(
            f"warning: {path}: time column {name!r}: {'; '.join(parts)}; scored in file "
            "order (CSV line numbers, the header is line 1; --strict-time refuses such files)",
            err=True,
        )
    try:
        scores = score_series(detector, timestamps, columns, **kwargs)
    except SeriesError as e:
        raise click.ClickException(f"{path}: {e}") from e
    frame[SCORE_COLUMN] = scores
    try:
        frame.to_csv(out if out is not None else sys.stdout, index=False, na_rep="NaN")
    except OSError as e:
        raise click.ClickException(f"--out {out}: cannot write ({e})") from e


@click.command("evaluate")
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Scenario to simulate (simulator/SCENARIOS.md).",
)
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option(
    "--elevators",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Fleet size; with --from, the --elevators the file was simulated with.",
)
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="Simulated seconds.",
)
@click.option(
    "--start",
    type=UTC_TIME,
    default=None,
    help="Simulated clock start, UTC (default 2025-03-03T01:00:00, the morning peak).",
)
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Evaluate a simulated FILE.jsonl already on disk (its .labels.jsonl beside it).",
)
@click.option(
    "--registry-seed",
    type=int,
    default=None,
    help="Seed of the synthetic registry the fleet is drawn from (default 3).",
)
def evaluate_command(
    scenario_path: Path | None,
    seed: int | None,
    elevators: int,
    duration_s: float,
    start: dt.datetime | None,
    source: Path | None,
    registry_seed: int | None,
) -> None:
    """Measure the detectors on a simulated fleet with labelled faults.

    Simulates the scenario (or reads --from), runs the worker's detectors over it exactly as
    the worker does, and prints per fault type: labels, detected, precision, recall, F1 and
    the detection delay; per alert type: false alarms; whether degradations were flagged
    before they became safety faults; false alarms per 1,000 elevator-days. The last line
    is one JSON object.
    """
    import simulator
    from evaluation import runs as ev

    rseed = ev.REGISTRY_SEED if registry_seed is None else registry_seed
    try:
        if source is not None:
            if scenario_path is not None or seed is not None or start is not None:
                raise click.ClickException(
                    "--from evaluates a run already simulated: drop --scenario, --seed, --start"
                )
            if source.suffix != ".jsonl":
                raise click.ClickException(f"--from: {source} must be a .jsonl file")
            report = ev.evaluate_file(source, registry_elevators=elevators, registry_seed=rseed)
        else:
            if scenario_path is None:
                raise click.ClickException("--scenario FILE (or --from FILE.jsonl) is required")
            clock = ev.DEFAULT_START if start is None else start
            report = ev.evaluate(
                scenario_path,
                seed,
                elevators,
                duration_s,
                clock,  # evaluate() reads a naive time as UTC
                registry_seed=rseed,
            )
    except (simulator.ScenarioError, ev.EvaluationError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(report.table())
    click.echo(report.as_json())
