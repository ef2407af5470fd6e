"""Series scorers: named detectors for any numeric series (a CSV's columns), the
``tianyan score`` backend; listed with the stream detectors in :mod:`detectors.catalog`.

>>> import numpy as np
>>> t = np.arange(300) * 1000
>>> x = np.r_[np.random.default_rng(0).normal(0, 1, 250), np.full(50, 6.0)]
>>> s = score_series("ewma", t, {"x": x})
>>> bool(np.nanmax(s[:200]) < 0.5), bool(s[-1] > 0.5)
(True, True)

Scores are in [0, 1]; 0.5 is each detector's own alarm threshold (``stat / (stat + 1)``
with the statistic in units of its control limit). Gaps are treated explicitly:

- a row with a non-finite value in any column scores NaN and is not learned;
- a time step longer than ``max_gap`` (default 10 × the median step) restarts the
  sequential detectors (EWMA, CUSUM) — their baseline is kept, their running statistic is
  not carried across the gap;
- timestamps must be finite and non-decreasing, else :class:`SeriesError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from .online import HalfSpaceTreesDetector
from .stats import Cusum, Ewma, RobustZ


class SeriesError(ValueError):
    """The series or the detector request cannot be scored; the message says why."""


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
            if sequential and i > 0 and t[i] - t[i - 1] > max_gap:
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


def _hst(t: np.ndarray, cols: dict[str, np.ndarray], max_gap: float, **p: Any) -> np.ndarray:
    det = HalfSpaceTreesDetector(**p)
    out = np.full(len(t), np.nan)
    for i in range(len(t)):
        row = {k: float(v[i]) for k, v in cols.items()}
        if not all(math.isfinite(v) for v in row.values()):
            continue
        out[i] = det.score_one(row)
        det.learn_one(row)
    return out


#: name → factory(**params) returning a scorer(t, columns, max_gap) -> scores.
SCORERS: dict[str, Callable[..., Callable[..., np.ndarray]]] = {
    "ewma": lambda alpha=0.1, limit_sigmas=4.0, warmup=50: _univariate(
        lambda: Ewma(alpha, limit_sigmas, warmup), True, True
    ),
    "cusum": lambda k=0.5, h=8.0, warmup=50: _univariate(lambda: Cusum(k, h, warmup), True, True),
    "robust_z": lambda z_limit=6.0, size=500: _univariate(_robust(z_limit, size), False, False),
    "half_space_trees": lambda n_trees=10, height=8, window_size=100, seed=42: (
        lambda t, cols, max_gap: _hst(
            t, cols, max_gap, n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
    ),
}


def score_series(
    name: str,
    timestamps: Any,
    columns: Mapping[str, Any],
    max_gap: float | None = None,
    **params: Any,
) -> np.ndarray:
    """Score every row of ``columns`` (equal-length numeric arrays) with detector ``name``.

    Parameters
    ----------
    name
        A key of :data:`SCORERS`.
    timestamps
        Row times (any unit, e.g. epoch ms), finite and non-decreasing.
    columns
        Column name → values; a row's score is the worst over its columns (HST: joint).
    max_gap
        Time step beyond which sequential detectors restart; default 10 × median step.
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
        raise SeriesError("timestamps: every timestamp must be a finite number")
    if len(t) > 1 and np.any(np.diff(t) < 0):
        k = int(np.argmax(np.diff(t) < 0)) + 1
        raise SeriesError(f"timestamps[{k}]: {t[k]} is before timestamps[{k - 1}] = {t[k - 1]}")
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
        max_gap = float(10 * np.median(steps)) if len(steps) else math.inf
    try:
        scorer = factory(**params)
    except TypeError as e:
        raise SeriesError(f"{name}: bad parameters {sorted(params)} ({e})") from e
    return np.asarray(scorer(t, cols, max_gap), dtype=float)
