"""NAB's scorer (evaluation/nab.py) on cases checked by hand, and ``tianyan bench nab`` on a
small corpus made in the test (the NAB data itself stays out of the repository)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from evaluation import nab
from tianyan.cli import main

STANDARD = nab.PROFILES["standard"]


def sig(position: float) -> float:
    """NAB's scaled sigmoid, written out again: 2 / (1 + e^(5x)) - 1."""
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def test_sweep_weights_by_hand() -> None:
    # 20 rows: probation floor(0.15 * 20) = 3 rows; one window, rows 8..11 (width 4).
    w, win = nab.sweep_file(20, [(8, 11)], STANDARD)
    assert win.tolist() == [-2] * 3 + [-1] * 5 + [0] * 4 + [-1] * 8
    max_tp = sig(-1.0)
    # In the window: x = -(11 - i + 1) / 4, so -1, -0.75, -0.5, -0.25.
    assert w[8:12] == pytest.approx([sig(x) / max_tp for x in (-1.0, -0.75, -0.5, -0.25)])
    assert w[8] == pytest.approx(1.0)
    # Before any window: -fp. After it: fp × sig(rows past the right edge / (width - 1)).
    assert w[3:8] == pytest.approx([-0.11] * 5)
    assert w[12] == pytest.approx(0.11 * sig(1 / 3))
    assert w[19] == pytest.approx(0.11 * sig(8 / 3)) and w[19] > -0.11
    assert nab.sweep_file(40, [(8, 11)], STANDARD)[0][39] == pytest.approx(-0.11)  # x > 3


def test_threshold_optimiser_and_normalisation_by_hand() -> None:
    # File A: 20 rows, window 8..11. File B: 20 rows, no window.
    files = [(20, [(8, 11)]), (20, [])]
    scorer = nab.Scorer(files, STANDARD)
    a = np.zeros(20)
    a[9] = 0.8  # inside A's window, second row: x = -0.75
    a[15] = 0.9  # A, 4 rows past the window: a false positive
    b = np.zeros(20)
    b[10] = 0.6  # B: a false positive with no window before it
    tp_weight = sig(-0.75) / sig(-1.0)
    fp_a = 0.11 * sig(4 / 3)
    # Thresholds: 1.1 -> the window missed (-1); 0.9 -> -1 + fp_a; 0.8 -> tp + fp_a;
    # 0.6 -> tp + fp_a - 0.11; 0 -> everything (tp from row 8, 22 FPs more).
    best = scorer.optimise([a, b])
    assert best.threshold == 0.8
    assert best.score == pytest.approx(tp_weight + fp_a)
    assert (best.tp, best.fp) == (1, 1)
    assert scorer.at([a, b], 0.6).score == pytest.approx(tp_weight + fp_a - 0.11)
    # Null: constant scores, so all or nothing. All: the window from its first row (1), A's
    # rows 3..7 and B's 3..19 at -fp, A's rows 12..19 past the window.
    everything = 1.0 - 0.11 * (5 + 17) + sum(0.11 * sig((i - 11) / 3) for i in range(12, 20))
    assert everything < -1.0
    assert scorer.null == pytest.approx(-1.0)
    assert scorer.perfect == 1.0
    expected = 100 * (tp_weight + fp_a - scorer.null) / (1.0 - scorer.null)
    assert scorer.normalised(best) == pytest.approx(expected)


def test_windows_in_probation_and_bad_scores() -> None:
    # A window wholly inside the probation is not scored, but still counts as perfect's.
    scorer = nab.Scorer([(100, [(2, 5)])], STANDARD)
    assert scorer.optimise([np.zeros(100)]).score == pytest.approx(0.0)
    assert scorer.perfect == 1.0
    with pytest.raises(nab.NabError, match=r"in \[0, 1\]"):
        scorer.optimise([np.full(100, np.nan)])
    with pytest.raises(nab.NabError, match="3 scores for 100 rows"):
        scorer.optimise([np.zeros(3)])


def nab_checkout(root: Path, rows: int = 1200) -> Path:
    """A NAB-shaped directory: two 5-minute series, one with a spike inside a window, and
    NAB-style stored outputs of a detector 'spiky' that flags exactly the spike."""
    rng = np.random.default_rng(11)
    stamps = pd.date_range("2014-04-01", periods=rows, freq="5min")
    text = stamps.strftime("%Y-%m-%d %H:%M:%S")
    windows = {}
    for folder, name, spike in (("realA", "a.csv", 900), ("realB", "b.csv", None)):
        values = 50 + 5 * np.sin(np.arange(rows) * 2 * np.pi / 288) + rng.normal(0, 0.5, rows)
        if spike is not None:
            values[spike] = 120.0
        (root / "data" / folder).mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": text, "value": values}).to_csv(
            root / "data" / folder / name, index=False
        )
        windows[f"{folder}/{name}"] = (
            [[f"{text[spike - 40]}.000000", f"{text[spike + 40]}.000000"]] if spike else []
        )
        out = root / "results" / "spiky" / folder
        out.mkdir(parents=True, exist_ok=True)
        flags = np.zeros(rows)
        if spike is not None:
            flags[spike] = 1.0
        pd.DataFrame({"timestamp": text, "value": values, "anomaly_score": flags}).to_csv(
            out / f"spiky_{name}", index=False
        )
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    return root


def test_bench_nab_on_a_small_corpus(tmp_path: Path) -> None:
    root = nab_checkout(tmp_path / "nab")
    result = CliRunner().invoke(
        main,
        ["bench", "nab", "--data", str(root), "--detector", "contextual",
         "--detector", "robust_z", "--nab-results", "spiky"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["files"] == 2 and report["rows"] == 2400
    figures = report["detectors"]
    # The stored 'spiky' output flags the spike 40 rows into an 81-row window, nothing else.
    expected = 100 * (1 + sig(-41 / 81) / sig(-1.0)) / 2  # null: -1, perfect: 1
    assert figures["NAB's spiky"]["standard"] == pytest.approx(expected, abs=0.01)
    for name in ("contextual", "robust_z"):  # both find the 14σ spike, nothing else worse
        assert figures[name]["standard"] > 50, figures[name]
    assert "bench nab: contextual" in result.stderr


def test_bench_nab_names_what_is_missing(tmp_path: Path) -> None:
    root = nab_checkout(tmp_path / "nab")
    result = CliRunner().invoke(
        main, ["bench", "nab", "--data", str(root), "--detector", "prophet"]
    )
    assert result.exit_code == 1 and "--detector prophet: unknown" in result.output
    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    labels["realA/a.csv"] = [["2030-01-01 00:00:00.000000", "2030-01-02 00:00:00.000000"]]
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    result = CliRunner().invoke(main, ["bench", "nab", "--data", str(root)])
    assert result.exit_code == 1
    assert "realA/a.csv: window time" in result.output and "is not in the file" in result.output
