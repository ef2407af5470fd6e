"""``tianyan score``: a CSV's columns scored by a named detector, through click's runner."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner, Result

from detectors.catalog import SERIES_SCORERS as DETECTORS
from tianyan.commands_eval import score_command

SPIKE_ROW = 250


def run(*args: str) -> Result:
    return CliRunner().invoke(score_command, list(args))


def scored(result: Result) -> pd.DataFrame:
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.output))


def spiky_csv(path: Path, *, with_gap: bool = False) -> Path:
    """300 rows a second apart from 2025-03-03T01:00Z; one spike of 20σ at SPIKE_ROW."""
    rng = np.random.default_rng(7)
    values = rng.normal(10.0, 1.0, 300)
    values[SPIKE_ROW] = 30.0
    frame = pd.DataFrame(
        {
            "time": pd.date_range("2025-03-03T01:00:00Z", periods=300, freq="s").strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "speed_mps": values,
        }
    )
    if with_gap:
        frame.loc[100:104, "speed_mps"] = np.nan
    frame.to_csv(path, index=False)
    return path


def test_a_spike_scores_high_and_the_rest_low(tmp_path: Path) -> None:
    out = scored(run("--detector", "robust_z", str(spiky_csv(tmp_path / "s.csv"))))
    assert list(out.columns) == ["time", "speed_mps", "anomaly_score"]
    s = out["anomaly_score"].to_numpy()
    assert np.nanmin(s) >= 0.0 and np.nanmax(s) <= 1.0
    assert s[SPIKE_ROW] > 0.5
    assert np.nanmax(np.delete(s, SPIKE_ROW)) < 0.5
    assert int(np.nanargmax(s)) == SPIKE_ROW


def test_rows_with_missing_values_score_nan(tmp_path: Path) -> None:
    path = spiky_csv(tmp_path / "gap.csv", with_gap=True)
    for detector in sorted(DETECTORS):
        s = scored(run("--detector", detector, str(path)))["anomaly_score"].to_numpy()
        assert all(math.isnan(x) for x in s[100:105]), detector
        assert not math.isnan(s[-1]), detector


def test_out_file_time_column_and_parameters(tmp_path: Path) -> None:
    src = spiky_csv(tmp_path / "s.csv")
    frame = pd.read_csv(src)[["speed_mps", "time"]]
    frame.to_csv(src, index=False)  # the time column second
    dst = tmp_path / "scored.csv"
    result = run(
        "--detector", "robust_z", "--time-column", "time", "--param", "z_limit=12",
        "--out", str(dst), str(src),
    )  # fmt: skip
    assert result.exit_code == 0 and result.output == ""
    s = pd.read_csv(dst)["anomaly_score"].to_numpy()
    # z ≈ 20 against a limit of 12: 20/12 / (1 + 20/12) ≈ 0.62 instead of ≈ 0.77 at 6.
    assert 0.5 < s[SPIKE_ROW] < 0.7


def test_numeric_timestamps_are_taken_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    rng = np.random.default_rng(1)
    pd.DataFrame({"t_ms": np.arange(200) * 100, "load_kg": rng.normal(500, 5, 200)}).to_csv(
        path, index=False
    )
    assert len(scored(run("--detector", "ewma", str(path)))) == 200


def test_list_names_every_detector() -> None:
    result = run("--list")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == sorted(DETECTORS)
    assert "alpha=0.1" in result.output


def test_unknown_detector_names_the_known_ones(tmp_path: Path) -> None:
    result = run("--detector", "prophet", str(spiky_csv(tmp_path / "s.csv")))
    assert result.exit_code == 1
    assert "prophet: unknown detector" in result.output
    assert all(name in result.output for name in DETECTORS)


def test_clear_errors_for_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,speed_mps,door\n1,0.5,closed\n2,0.6,open\n")
    result = run("--detector", "ewma", str(bad))
    assert result.exit_code == 1
    assert "column 'door' is not numeric (line 2: 'closed')" in result.output

    only_time = tmp_path / "t.csv"
    only_time.write_text("time\n1\n2\n")
    assert "no value columns" in run("--detector", "ewma", str(only_time)).output

    dates = tmp_path / "d.csv"
    dates.write_text("time,x\n2025-03-03T01:00:00Z,1\nsoon,2\n")
    result = run("--detector", "ewma", str(dates))
    assert "line 3: 'soon' is not a timestamp" in result.output

    result = run("--detector", "ewma", str(tmp_path / "missing.csv"))
    assert result.exit_code == 1 and "cannot read it as CSV" in result.output

    result = run("--detector", "ewma", "--param", "alpha", str(bad))
    assert "expected key=value" in result.output
    result = run("--detector", "ewma", "--param", "alpha=fast", str(only_time))
    assert "--param alpha: 'fast' is not a number" in result.output
    result = run("--detector", "ewma", "--param", "beta=1", str(spiky_csv(tmp_path / "s.csv")))
    assert result.exit_code == 1 and "ewma: bad parameters ['beta']" in result.output


def test_detector_is_required_unless_listing(tmp_path: Path) -> None:
    result = run(str(spiky_csv(tmp_path / "s.csv")))
    assert result.exit_code == 1 and "--detector is required" in result.output
