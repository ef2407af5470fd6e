"""The Numenta Anomaly Benchmark's scorer, ported from NAB (numenta/NAB, ``nab/sweeper.py``,
``nab/optimizer.py``, ``nab/runner.py``; MIT licence) — pure, no I/O but :func:`load_corpus`.

How NAB scores a detector, as ported here
-----------------------------------------
- **Windows.** Each labelled anomaly is a window of rows (``labels/combined_windows.json``);
  a detection inside a window counts once, by its earliest row in the window, with the
  scaled sigmoid of its relative position: ``2·sigmoid(−5·x) − 1`` with ``x = −(right − i + 1)
  / width`` (≈ 1 at the window's left edge, 0 at its right edge), times ``tp`` / its maximum.
  A window with no detection costs ``−fn``.
- **False positives.** A detection outside every window costs ``fp`` × the scaled sigmoid
  of its distance past the previous window's right edge in that window's widths (−1 after
  three widths, or with no window before it): a detection just after a window costs less.
- **Probation.** The first ``min(floor(0.15·rows), 750)`` rows of every file are not scored.
- **Threshold.** One anomaly-score threshold for the whole corpus, per profile: the
  optimiser sweeps every distinct score and keeps the best corpus total (ties: the highest
  threshold). A row is a detection when its score is ≥ the threshold.
- **Normalisation.** ``100 · (score − null) / (perfect − null)``: ``null`` is the same
  scorer run on the null detector (a constant score, so it detects everything or nothing),
  ``perfect`` is ``tp`` × the number of windows.

The three cost profiles are NAB's ``config/profiles.json`` (:data:`PROFILES`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Share of each file NAB leaves unscored at its start, and the cap in rows (NAB:
#: ``probationPercent`` 0.15, ``min(floor(0.15 · rows), 0.15 · 5000)``).
PROBATION_SHARE = 0.15
PROBATION_CAP_ROWS = 0.15 * 5000


@dataclass(frozen=True)
class Profile:
    """A cost matrix (NAB ``config/profiles.json``)."""

    tp: float
    fp: float
    fn: float


#: NAB's application profiles, from its ``config/profiles.json``.
PROFILES: Mapping[str, Profile] = {
    "standard": Profile(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": Profile(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": Profile(tp=1.0, fp=0.11, fn=2.0),
}


class NabError(ValueError):
    """The NAB corpus or a detector's scores cannot be read or scored; the message says why."""


@dataclass(frozen=True)
class NabFile:
    """One corpus file: its timestamps (as read), values and windows as row indices."""

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    #: (first row, last row) of each window, inclusive, in file order.
    windows: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ThresholdScore:
    """The corpus total at one threshold (NAB's ``ThresholdScore``)."""

    threshold: float
    score: float
    tp: int
    fp: int
    fn: int
    tn: int


def scaled_sigmoid(position: float) -> float:
    """NAB's ``scaledSigmoid``: 2·sigmoid(−5·position) − 1, and −1 beyond 3.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.5)
    (0.98661, 0.0, -1.0)
    """
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_rows(rows: int) -> float:
    """Rows NAB leaves unscored at the start of a file of ``rows`` rows."""
    return min(math.floor(PROBATION_SHARE * rows), PROBATION_CAP_ROWS)


#: Window id of a row outside every window, and of a probationary row.
OUTSIDE, PROBATION = -1, -2


def sweep_file(
    rows: int, windows: Sequence[tuple[int, int]], profile: Profile
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the weighted score a detection there earns (NAB's ``sweepScore``) and the
    index of its window (:data:`OUTSIDE`, :data:`PROBATION`), as NAB's ``calcSweepScore``.

    >>> w, win = sweep_file(10, [(6, 7)], PROFILES["standard"])
    >>> [round(x, 4) for x in w[5:10].tolist()], win[:3].tolist(), win[5:10].tolist()
    ([-0.11, 1.0, 0.8598, -0.1085, -0.11], [-2, -1, -1], [-1, 0, 0, -1, -1])
    """
    max_tp = scaled_sigmoid(-1.0)
    probation = probation_rows(rows)
    weighted = np.empty(rows)
    window_of = np.full(rows, OUTSIDE, dtype=np.int64)
    pending = list(enumerate(windows))
    current: tuple[int, int, int] | None = None  # (window index, right row, width)
    previous: tuple[int, int] | None = None  # (right row, width)
    for i in range(rows):
        if current is None and pending and i == pending[0][1][0]:
            k, (left, right) = pending.pop(0)
            current = (k, right, right - left + 1)
        if current is not None:
            k, right, width = current
            weighted[i] = scaled_sigmoid(-(right - i + 1) / width) * profile.tp / max_tp
            window_of[i] = k
        elif previous is None:
            weighted[i] = -1.0 * profile.fp
        else:
            right, width = previous
            weighted[i] = scaled_sigmoid(abs(right - i) / (width - 1)) * profile.fp
        if i < probation:
            window_of[i] = PROBATION
        if current is not None and i == current[1]:
            previous = (current[1], current[2])
            current = None
    return weighted, window_of


class Scorer:
    """NAB's scorer for one corpus' files (their lengths and windows), one cost profile.

    The per-row weights (:func:`sweep_file`) and the null detector's total are computed once;
    :meth:`optimise` and :meth:`at` then take any detector's scores.

    >>> scorer = Scorer([(10, [(7, 8)])], PROFILES["standard"])  # probation: 1 row
    >>> s = np.array([0.0] * 8 + [0.9, 0.2])
    >>> best = scorer.optimise([s])  # row 8: the window's second of two rows
    >>> best.threshold, round(best.score, 4), (best.tp, best.fp, best.fn, best.tn)
    (0.9, 0.8598, (1, 0, 1, 7))
    >>> round(scorer.null, 4), scorer.perfect  # null: all detected, 1 - 6 × 0.11 - 0.1085
    (0.2315, 1.0)
    >>> round(scorer.normalised(best), 2)
    81.76
    """

    def __init__(self, files: Sequence[tuple[int, Sequence[tuple[int, int]]]], profile: Profile):
        self.profile = profile
        self.rows = [rows for rows, _ in files]
        weights, windows, keeps = [], [], []
        n_windows = 0
        for rows, file_windows in files:
            w, win = sweep_file(rows, file_windows, profile)
            keep = win != PROBATION
            keeps.append(keep)
            weights.append(w[keep])
            windows.append(np.where(win[keep] >= 0, win[keep] + n_windows, OUTSIDE))
            n_windows += len(file_windows)
        self._keep = keeps
        self._weight = np.concatenate(weights) if weights else np.empty(0)
        self._window = np.concatenate(windows) if windows else np.empty(0, dtype=np.int64)
        #: NAB's perfect detector: every window found at its left edge.
        self.perfect = profile.tp * n_windows
        self.null = self.optimise([np.full(rows, 0.5) for rows in self.rows]).score

    def _scorable(self, scores: Sequence[np.ndarray]) -> np.ndarray:
        if len(scores) != len(self.rows):
            raise NabError(f"scores for {len(scores)} files, the corpus has {len(self.rows)}")
        parts = []
        for k, (s, rows, keep) in enumerate(zip(scores, self.rows, self._keep, strict=True)):
            a = np.asarray(s, dtype=float)
            if a.shape != (rows,):
                raise NabError(f"file {k}: {a.size} scores for {rows} rows")
            if not np.all((a >= 0.0) & (a <= 1.0)):
                raise NabError(f"file {k}: scores must be numbers in [0, 1] (NaN is not one)")
            parts.append(a[keep])
        return np.concatenate(parts) if parts else np.empty(0)

    def optimise(self, scores: Sequence[np.ndarray]) -> ThresholdScore:
        """The best corpus total over every threshold (NAB's ``optimizeThreshold``)."""
        return max(self._sweep(scores), key=lambda row: row.score)  # first max: highest

    def at(self, scores: Sequence[np.ndarray], threshold: float) -> ThresholdScore:
        """The corpus total with detections at scores ≥ ``threshold``."""
        rows = [row for row in self._sweep(scores) if row.threshold >= threshold]
        return rows[-1]

    def normalised(self, total: ThresholdScore) -> float:
        """NAB's final score: 0 for the null detector, 100 for the perfect one."""
        return 100.0 * (total.score - self.null) / (self.perfect - self.null)

    def _sweep(self, scores: Sequence[np.ndarray]) -> list[ThresholdScore]:
        """NAB's ``calcScoreByThreshold``: the total after each distinct score, highest first."""
        a = self._scorable(scores)
        order = np.argsort(-a, kind="stable")
        fn_weight = self.profile.fn
        a_sorted = a[order].tolist()
        weights = self._weight[order].tolist()
        windows = self._window[order].tolist()
        # Only windows with a scorable row carry a cost (NAB's _prepareScoreByThresholdParts).
        best_of: dict[int, float] = {k: -fn_weight for k in set(windows) if k >= 0}
        window_total = sum(best_of.values())
        fp_total = 0.0
        tp = fp = 0
        fn = sum(1 for k in windows if k >= 0)
        tn = len(windows) - fn
        out = [ThresholdScore(1.1, window_total, tp, fp, fn, tn)]
        n = len(a_sorted)
        for i in range(n):
            k = windows[i]
            if k >= 0:
                tp, fn = tp + 1, fn - 1
                if weights[i] > best_of[k]:
                    window_total += weights[i] - best_of[k]
                    best_of[k] = weights[i]
            else:
                fp, tn = fp + 1, tn - 1
                fp_total += weights[i]
            if i + 1 == n or a_sorted[i + 1] != a_sorted[i]:
                out.append(ThresholdScore(a_sorted[i], window_total + fp_total, tp, fp, fn, tn))
        return out


def load_corpus(root: Path) -> list[NabFile]:
    """Every file of a NAB checkout (``data/**.csv`` named in ``labels/combined_windows.json``).

    Raises :class:`NabError` naming what is missing or does not match.
    """
    import pandas as pd

    labels_path = root / "labels" / "combined_windows.json"
    try:
        labels = json.loads(labels_path.read_text())
    except (OSError, ValueError) as e:
        raise NabError(f"{labels_path}: cannot read NAB's windows ({e})") from e
    files = []
    for name in sorted(labels):
        path = root / "data" / name
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as e:
            raise NabError(f"{path}: cannot read it ({e})") from e
        if list(frame.columns[:2]) != ["timestamp", "value"]:
            raise NabError(f"{path}: expected columns timestamp,value")
        stamps = pd.to_datetime(frame["timestamp"]).to_numpy()
        index: dict[np.datetime64, int] = {}
        for i, t in enumerate(stamps):
            index.setdefault(t, i)  # NAB: list.index, the first row with that time
        windows = []
        for start, end in labels[name]:
            try:
                windows.append(
                    (
                        index[np.datetime64(pd.Timestamp(start))],
                        index[np.datetime64(pd.Timestamp(end))],
                    )
                )
            except KeyError as e:
                raise NabError(f"{labels_path}: {name}: window time {e} is not in the file") from e
        files.append(
            NabFile(
                name=name,
                timestamps=frame["timestamp"].to_numpy(),
                values=frame["value"].to_numpy(dtype=float),
                windows=tuple(windows),
            )
        )
    if not files:
        raise NabError(f"{labels_path}: no files")
    return files


def stored_scores(root: Path, detector: str, corpus: Sequence[NabFile]) -> list[np.ndarray]:
    """A NAB detector's published scores, ``results/DETECTOR/<dir>/DETECTOR_<file>.csv``."""
    import pandas as pd

    out = []
    for f in corpus:
        folder, base = f.name.rsplit("/", 1)
        path = root / "results" / detector / folder / f"{detector}_{base}"
        try:
            scores = pd.read_csv(path, usecols=["anomaly_score"])["anomaly_score"]
        except (OSError, ValueError) as e:
            raise NabError(f"{path}: cannot read its anomaly_score column ({e})") from e
        if len(scores) != len(f.values):
            raise NabError(f"{path}: {len(scores)} rows, the data file has {len(f.values)}")
        out.append(scores.to_numpy(dtype=float))
    return out
