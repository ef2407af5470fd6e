"""``tianyan bench nab``: every series scorer of ``tianyan score`` on the Numenta Anomaly
Benchmark, scored by NAB's own rules (:mod:`evaluation.nab`).

The NAB checkout is the user's (``git clone https://github.com/numenta/NAB``); nothing of it
is stored in this repository. Each detector scores every corpus file exactly as ``tianyan
score --detector NAME`` scores that file (the timestamp column parsed the same way, rows in
file order); a NaN score (warm-up) counts as 0 for NAB. ``--nab-results NAME`` also scores
NAB's stored outputs of its own detectors (``results/NAME/``) to check the scorer against
NAB's published ``results/final_results.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from evaluation import nab


def _epoch_ms(stamps: np.ndarray) -> np.ndarray:
    import pandas as pd

    parsed = pd.to_datetime(pd.Series(stamps).astype(str), utc=True, format="mixed")
    return ((parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(milliseconds=1)).to_numpy()


def _detector_scores(name: str, corpus: Sequence[nab.NabFile]) -> list[np.ndarray]:
    from detectors.series import score_series

    out = []
    for f in corpus:
        s = score_series(name, _epoch_ms(f.timestamps), {"value": f.values})
        out.append(np.nan_to_num(s, nan=0.0))
    return out


def run(
    data: Path,
    detectors: Sequence[str],
    nab_results: Sequence[str] = (),
    say: Callable[[str], None] = print,
) -> dict[str, object]:
    """Score ``detectors`` (and NAB's stored ``nab_results``) on the corpus under ``data``.

    Returns ``{"files", "rows", "detectors": {name: {profile: score, ..., "threshold",
    "cpu_s", "wall_s"}}, "published": {...}}``; ``published`` holds NAB's own figures for
    the ``nab_results`` names when ``results/final_results.json`` is there.
    """
    started = time.perf_counter()
    corpus = nab.load_corpus(data)
    scorers = {
        name: nab.Scorer([(len(f.values), f.windows) for f in corpus], profile)
        for name, profile in nab.PROFILES.items()
    }
    rows = sum(len(f.values) for f in corpus)
    say(
        f"bench nab: {len(corpus)} files, {rows} rows, "
        f"read in {time.perf_counter() - started:.1f} s"
    )
    results: dict[str, dict[str, float]] = {}
    jobs = [(name, False) for name in detectors] + [(name, True) for name in nab_results]
    for name, stored in jobs:
        wall, cpu = time.perf_counter(), time.process_time()
        scores = nab.stored_scores(data, name, corpus) if stored else _detector_scores(name, corpus)
        figures: dict[str, float] = {}
        for profile, scorer in scorers.items():
            best = scorer.optimise(scores)
            figures[profile] = round(scorer.normalised(best), 2)
            figures[f"{profile}_threshold"] = best.threshold
        figures["cpu_s"] = round(time.process_time() - cpu, 1)
        figures["wall_s"] = round(time.perf_counter() - wall, 1)
        label = f"NAB's {name}" if stored else name
        results[label] = figures
        say(
            f"bench nab: {label:24} standard {figures['standard']:6.2f}  low FP "
            f"{figures['reward_low_FP_rate']:6.2f}  low FN {figures['reward_low_FN_rate']:6.2f}"
            f"  (threshold {figures['standard_threshold']:.4g}; {figures['cpu_s']} s CPU,"
            f" {figures['wall_s']} s)"
        )
    published: dict[str, object] = {}
    final = data / "results" / "final_results.json"
    if nab_results and final.is_file():
        board = json.loads(final.read_text())
        published = {name: board[name] for name in nab_results if name in board}
    return {
        "files": len(corpus),
        "rows": rows,
        "detectors": results,
        "published": published,
        "wall_s": round(time.perf_counter() - started, 1),
    }
