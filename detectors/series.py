"""Series scorers: named detectors for any numeric series (a CSV's columns), the
``tianyan score`` backend; listed with the stream detectors in :mod:`detectors.catalog`.

>>> import numpy as np
>>> t = np.arange(900) * 1000
>>> x = np.r_[np.random.default_rng(0).normal(0, 1, 800), np.full(100, 6.0)]
>>> s = score_series("ewma", t, {"x": x})
>>> bool(np.nanmax(s[:800]) < 0.5), bool(s[-1] > 0.5)
(True, True)

Scores are in [0, 1]; 0.5 is each detector's own alarm threshold (``stat / (stat + 1)``
with the statistic in units of its control limit; Half-Space Trees: its tail probability,
see :func:`_hst`). The first rows are warm-up and score NaN: :data:`WARMUP_ROWS` for EWMA
and CUSUM (their in-control baseline: with 50 values the estimated mean and σ were off
enough that CUSUM raised on up to 28 % of a clean N(0, 1) series, 5 seeds in 30 above 1 %;
with 500, none), 30 for robust z, ``warmup + calibration_min`` for Half-Space Trees.

Gaps and time faults are treated explicitly; rows are always scored in file order:

- a row with a non-finite value in any column scores NaN and is not learned;
- a time step longer than ``max_gap`` (default 10 × the median positive step) restarts the
  sequential detectors (EWMA, CUSUM) — their baseline is kept, their running statistic is
  not carried across the gap. A step *back* longer than ``max_gap`` (a clock reset) restarts
  them the same way; a shorter step back or a repeated time is scored like any other row;
- :func:`time_order` counts the steps back and the repeats (``tianyan score`` warns with
  them); ``strict_time=True`` refuses them with :class:`SeriesError` naming the row;
- timestamps must be finite, else :class:`SeriesError` naming the first bad row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .stats import Cusum, Ewma, RobustZ

#: Rows of in-control baseline for the EWMA and CUSUM scorers (NAB's own probationary
#: period is 15 % of a file: 605 rows of its 4,032-row files).
WARMUP_ROWS = 500


class SeriesError(ValueError):
    """The series or the detector request cannot be scored; the message says why."""


@dataclass(frozen=True)
class TimeOrder:
    """Where a series' time is not strictly increasing; row positions are 0-based indices.

    >>> time_order(np.array([1.0, 2.0, 2.0, 1.5, 3.0, 3.0]))
    TimeOrder(steps_back=1, first_step_back=3, repeats=2, first_repeat=2, longest_step_back=0.5)
    """

    steps_back: int
    first_step_back: int | None
    repeats: int
    first_repeat: int | None
    #: The longest step back, in the timestamps' unit (0 if none).
    longest_step_back: float

    @property
    def clean(self) -> bool:
        return self.steps_back == 0 and self.repeats == 0


def time_order(t: np.ndarray) -> TimeOrder:
    """Count the rows whose time steps back from, or repeats, the previous row's."""
    steps = np.diff(np.asarray(t, dtype=float))
    back = np.flatnonzero(steps < 0)
    same = np.flatnonzero(steps == 0)
    return TimeOrder(
        steps_back=len(back),
        first_step_back=int(back[0]) + 1 if len(back) else None,
        repeats=len(same),
        first_repeat=int(same[0]) + 1 if len(same) else None,
        longest_step_back=float(-steps[back].min()) if len(back) else 0.0,
    )


class _Univariate(Protocol):
    def learn_one(self, x: float) -> None: ...
    def score_one(self, x: float) -> float: ...


def _to_unit(stat: float) -> float:
    return (
        math.nan
        if not math.isfinite(stat) and not math.isinf(stat)
        else (1.0 if math.isinf(stat) else stat / (stat + 1.0))
    )


def _univariate(make: Callable[[], Any], sequential: bool, pre_update: bool) -> Callable[..., Any]:
    def score(t: np.ndarray, cols: dict[str, np.ndarray], max_gap: float) -> np.ndarray:
        n = len(t)
        out = np.full(n, np.nan)
        dets = {k: make() for k in cols}
        for i in range(n):
            row = {k: float(v[i]) for k, v in cols.items()}
            if not all(math.isfinite(v) for v in row.values()):
                continue
            if sequential and i > 0 and abs(t[i] - t[i - 1]) > max_gap:
                for d in dets.values():
                    if isinstance(d, Cusum):
                        d.reset()
                    elif isinstance(d, Ewma) and d.n >= d.warmup:
                        d.ewma = d.mean
            best = 0.0
            seen = False
            for k, x in row.items():
                d = dets[k]
                if pre_update:
                    d.learn_one(x)
                    s = d.score_one()
                else:
                    s = abs(d.score_one(x))
                    d.learn_one(x)
                if math.isfinite(s) or math.isinf(s):
                    best = max(best, s)
                    seen = True
            out[i] = _to_unit(best) if seen else np.nan
        return out

    return score


def _robust(z_limit: float = 6.0, size: int = 500) -> Callable[..., Any]:
    def make() -> Any:
        class _Scaled(RobustZ):
            def score_one(self, x: float) -> float:
                return abs(super().score_one(x)) / z_limit

        return _Scaled(size=size)

    return make


def _hst(
    t: np.ndarray,
    cols: dict[str, np.ndarray],
    max_gap: float,
    *,
    warmup: int,
    margin: float,
    alpha: float,
    calibration_size: int,
    calibration_min: int,
    **hst: Any,
) -> np.ndarray:
    """river's Half-Space Trees, its inputs scaled over a warm-up and its raw scores calibrated.

    - **Inputs.** The trees' ranges are fixed from the first ``warmup`` scorable rows: each
      column's [min, max] widened by ``margin`` × its width on both sides (width 1 if the
      column was constant). river's running min-max scaler maps every new extreme to 1, where
      the previous extremes lie, so a level shift looked like the old maximum; with fixed
      ranges, values far outside the warm-up fall in regions the trees have never filled.
    - **Scores.** The raw score (1 − mass, high = anomalous) has no fixed alarm level: on a
      clean N(0, 1) series its median was 0.9 and 100 % of rows scored above 0.5. The score
      is therefore its tail probability among the detector's own recent raw scores, a
      conformal p-value ``p = (#{past ≥ raw} + 1) / (n + 1)`` over the last
      ``calibration_size`` raw scores of rows that did not alarm, mapped to
      ``alpha / (alpha + p)``: 0.5 at ``p = alpha``. Rows score NaN until
      ``calibration_min`` raw scores are held.
    """
    out = np.full(len(t), np.nan)
    names = sorted(cols)
    rows = [
        (i, {k: float(cols[k][i]) for k in names})
        for i in range(len(t))
        if all(math.isfinite(float(cols[k][i])) for k in names)
    ]
    if len(rows) <= warmup:
        return out
    limits: dict[Hashable, tuple[float, float]] = {}
    for k in names:
        lo = min(r[k] for _, r in rows[:warmup])
        hi = max(r[k] for _, r in rows[:warmup])
        width = (hi - lo) or 1.0
        limits[k] = (lo - margin * width, hi + margin * width)
    # river (and the scipy.stats it loads) only here: imported at the top, through
    # detectors.catalog, it cost every stream worker ≈ 60 MB of resident memory for a scorer
    # only `tianyan score` and the NAB bench run.
    from river import anomaly

    model = anomaly.HalfSpaceTrees(limits=limits, **hst)
    for _, row in rows[:warmup]:
        model.learn_one(row)
    calibration = np.full(calibration_size, np.nan)
    held = 0
    for i, row in rows[warmup:]:
        raw = float(model.score_one(row))
        model.learn_one(row)
        score = math.nan
        if held >= calibration_min:
            past = calibration[: min(held, calibration_size)]
            p = (int(np.sum(past >= raw)) + 1) / (len(past) + 1)
            score = out[i] = alpha / (alpha + p)
        if not score > 0.5:
            calibration[held % calibration_size] = raw
            held += 1
    return out


def _hst_scorer(
    n_trees: int = 10,
    height: int = 8,
    window_size: int = 100,
    seed: int = 42,
    warmup: int = 200,
    margin: float = 2.0,
    alpha: float = 0.002,
    calibration_size: int = 2000,
    calibration_min: int = 500,
) -> Callable[..., np.ndarray]:
    def score(t: np.ndarray, cols: dict[str, np.ndarray], max_gap: float) -> np.ndarray:
        return _hst(
            t, cols, max_gap, warmup=warmup, margin=margin, alpha=alpha,
            calibration_size=calibration_size, calibration_min=calibration_min,
            n_trees=n_trees, height=height, window_size=window_size, seed=seed,
        )  # fmt: skip

    return score


#: CAD OSE's raw score at which ``contextual`` scores 0.5: NAB's optimiser's threshold for
#: it on the standard profile (``tianyan bench nab``; CAD OSE's own NAB run: 0.766).
CONTEXTUAL_ALARM_RAW = 0.766


def _contextual_scorer(
    range_rows: int = 0,
    margin: float = 0.0,
    rest_rows: int = 0,
    alarm_raw: float = CONTEXTUAL_ALARM_RAW,
    whole_file_range: int = 1,
    spatial_tolerance: float = 0.05,
) -> Callable[..., np.ndarray]:
    """CAD OSE (:class:`~detectors.contextual.ContextualDetector`) per column, worst column.

    - **Range.** By default (``whole_file_range=1``) each column's value range is the
      file's own minimum and maximum, given to the detector before its first row as NAB
      hands every detector (``inputMin``, ``inputMax``; CAD OSE's and HTM's published
      scores use them); everything else is learnt online, from the past only. With
      ``whole_file_range=0`` the range is fixed from the first ``range_rows`` finite
      values (0: NAB's probationary period, 15 % of the rows, at most 750), widened by
      ``margin`` × its width each side; those rows are learned and score NaN. On NAB that
      strictly online variant scores 59.4 (standard) against 70.0.
    - **Spatial anomaly.** A value beyond the range seen so far by more than
      ``spatial_tolerance`` of its width scores 1 (NAB's Numenta detector's 0.05; 0 off).
    - **Rest.** After a raw score above 0.75, ``rest_rows`` rows report 0 (0: NAB's
      probationary period / 5, as NAB runs CAD OSE).
    - **Score.** The raw score mapped piecewise linearly so that ``alarm_raw`` is 0.5.
    """
    from .contextual import ContextualDetector

    def calibrated(raw: float) -> float:
        if raw <= alarm_raw:
            return 0.5 * raw / alarm_raw
        return 0.5 + 0.5 * (raw - alarm_raw) / (1.0 - alarm_raw)

    def score(t: np.ndarray, cols: dict[str, np.ndarray], max_gap: float) -> np.ndarray:
        n = len(t)
        out = np.full(n, np.nan)
        finite = np.ones(n, dtype=bool)
        for v in cols.values():
            finite &= np.isfinite(v)
        rows = np.flatnonzero(finite)
        probation = int(min(math.floor(0.15 * n), 750))  # NAB's, as evaluation.nab's
        warm = max(1, min(range_rows or probation, len(rows)))
        rest = rest_rows or max(1, probation // 5)
        dets = {}
        for k, v in cols.items():
            seen = v[finite] if whole_file_range else v[rows[:warm]]
            lo, hi = (float(seen.min()), float(seen.max())) if len(seen) else (0.0, 1.0)
            width = hi - lo
            dets[k] = ContextualDetector(
                lo - margin * width,
                hi + margin * width,
                rest_rows=rest,
                spatial_tolerance=spatial_tolerance,
            )
        for j, i in enumerate(rows):
            worst = max(d.score_one(float(cols[k][i])) for k, d in dets.items())
            if whole_file_range or j >= warm:
                out[i] = calibrated(worst)
        return out

    return score


#: name → factory(**params) returning a scorer(t, columns, max_gap) -> scores.
SCORERS: dict[str, Callable[..., Callable[..., np.ndarray]]] = {
    "ewma": lambda alpha=0.1, limit_sigmas=4.0, warmup=WARMUP_ROWS: _univariate(
        lambda: Ewma(alpha, limit_sigmas, warmup), True, True
    ),
    "cusum": lambda k=0.5, h=8.0, warmup=WARMUP_ROWS: _univariate(
        lambda: Cusum(k, h, warmup), True, True
    ),
    "robust_z": lambda z_limit=6.0, size=500: _univariate(_robust(z_limit, size), False, False),
    "half_space_trees": _hst_scorer,
    "contextual": _contextual_scorer,
}


def score_series(
    name: str,
    timestamps: Any,
    columns: Mapping[str, Any],
    max_gap: float | None = None,
    strict_time: bool = False,
    **params: Any,
) -> np.ndarray:
    """Score every row of ``columns`` (equal-length numeric arrays) with detector ``name``.

    Parameters
    ----------
    name
        A key of :data:`SCORERS`.
    timestamps
        Row times (any unit, e.g. epoch ms), finite; rows are scored in the given order.
    columns
        Column name → values; a row's score is the worst over its columns (HST: joint).
    max_gap
        Time step (forward or back) beyond which sequential detectors restart; default
        10 × the median positive step.
    strict_time
        Refuse timestamps that step back or repeat (:func:`time_order`) instead of scoring
        them in order.
    params
        The detector's parameters (see :data:`SCORERS`).

    Returns
    -------
    numpy.ndarray
        Scores in [0, 1] (≥ 0.5 beyond the detector's alarm threshold), NaN where a row had
        a non-finite value or the detector was still warming up.
    """
    factory = SCORERS.get(name)
    if factory is None:
        raise SeriesError(f"{name}: unknown detector (known: {', '.join(sorted(SCORERS))})")
    t = np.asarray(timestamps, dtype=float)
    if t.ndim != 1:
        raise SeriesError("timestamps: a one-dimensional array is required")
    if not np.all(np.isfinite(t)):
        k = int(np.argmax(~np.isfinite(t)))
        raise SeriesError(f"timestamps[{k}]: {t[k]} is not a finite number")
    order = time_order(t)
    if strict_time and order.first_step_back is not None:
        k = order.first_step_back
        raise SeriesError(f"timestamps[{k}]: {t[k]} is before timestamps[{k - 1}] = {t[k - 1]}")
    if strict_time and order.first_repeat is not None:
        k = order.first_repeat
        raise SeriesError(f"timestamps[{k}]: {t[k]} repeats timestamps[{k - 1}]")
    if not columns:
        raise SeriesError("columns: at least one column is required")
    cols: dict[str, np.ndarray] = {}
    for col, v in columns.items():
        try:
            arr = np.asarray(v, dtype=float)
        except (TypeError, ValueError) as e:
            raise SeriesError(f"columns[{col!r}]: not numeric ({e})") from e
        if arr.shape != t.shape:
            raise SeriesError(f"columns[{col!r}]: {arr.size} values but {len(t)} timestamps")
        cols[col] = arr
    if max_gap is None:
        steps = np.diff(t)
        forward = steps[steps > 0]
        max_gap = float(10 * np.median(forward)) if len(forward) else math.inf
    try:
        scorer = factory(**params)
    except TypeError as e:
        raise SeriesError(f"{name}: bad parameters {sorted(params)} ({e})") from e
    return np.asarray(scorer(t, cols, max_gap), dtype=float)
