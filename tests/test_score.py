"""``tianyan score``: a CSV's columns scored by a named detector, through click's runner."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from detectors.catalog import SERIES_SCORERS as DETECTORS
from detectors.series import SeriesError, score_series
from tianyan.commands_eval import score_command

SPIKE_ROW = 250


def run(*args: str) -> Result:
    return CliRunner().invoke(score_command, list(args))


def scored(result: Result) -> pd.DataFrame:
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.output))


def spiky_csv(path: Path, *, with_gap: bool = False, rows: int = 300) -> Path:
    """``rows`` rows a second apart from 2025-03-03T01:00Z; one spike of 20σ at SPIKE_ROW."""
    rng = np.random.default_rng(7)
    values = rng.normal(10.0, 1.0, rows)
    values[SPIKE_ROW] = 30.0
    frame = pd.DataFrame(
        {
            "time": pd.date_range("2025-03-03T01:00:00Z", periods=rows, freq="s").strftime(
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
    path = spiky_csv(tmp_path / "gap.csv", with_gap=True, rows=1000)  # past every warm-up
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


def clock_reset_csv(path: Path) -> Path:
    """1,000 rows a minute apart; at row 600 the clock steps back 2 h (a reset), and rows
    301 and 302 repeat row 300's time. Values stationary, N(10, 1)."""
    t = pd.Timestamp("2025-03-03T01:00:00Z") + pd.to_timedelta(np.arange(1000), unit="min")
    t = t.where(np.arange(1000) < 600, t - pd.Timedelta(hours=2))
    times = t.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
    times[301:303] = times[300]
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"time": times, "temp_c": rng.normal(10.0, 1.0, 1000)})
    frame.to_csv(path, index=False)
    return path


def test_time_stepping_back_or_repeating_is_scored_in_order_with_a_warning(
    tmp_path: Path,
) -> None:
    path = clock_reset_csv(tmp_path / "reset.csv")
    for detector in sorted(DETECTORS):
        result = CliRunner().invoke(score_command, ["--detector", detector, str(path)])
        assert result.exit_code == 0, result.output
        # 2 h back, less the minute of the step: 7,140,000 ms.
        assert "1 rows step back in time (first at line 602, longest 7140000 ms)" in result.stderr
        assert "2 rows repeat the previous row's time (first at line 303)" in result.stderr
        out = pd.read_csv(io.StringIO(result.stdout))
        assert len(out) == 1000
        assert list(out["time"]) == list(pd.read_csv(path)["time"])  # file order kept
        assert not out["anomaly_score"].iloc[-300:].isna().any(), detector


def test_strict_time_refuses_naming_the_line(tmp_path: Path) -> None:
    path = clock_reset_csv(tmp_path / "reset.csv")
    result = run("--detector", "ewma", "--strict-time", str(path))
    assert result.exit_code == 1
    assert "line 602: '2025-03-03T09:00:00Z' is before line 601" in result.output
    repeats = tmp_path / "repeats.csv"
    repeats.write_text("t_s,x\n1,0.5\n2,0.6\n2,0.7\n")
    result = run("--detector", "ewma", "--strict-time", str(repeats))
    assert result.exit_code == 1 and "line 4: '2' repeats line 3" in result.output
    with pytest.raises(SeriesError, match=r"timestamps\[2\]: 2.0 repeats timestamps\[1\]"):
        score_series("ewma", [1.0, 2.0, 2.0], {"x": [1.0, 2.0, 3.0]}, strict_time=True)
    with pytest.raises(SeriesError, match=r"timestamps\[1\]: nan is not a finite number"):
        score_series("ewma", [1.0, math.nan, 3.0], {"x": [1.0, 2.0, 3.0]})


def test_a_step_back_longer_than_the_gap_restarts_the_sequential_statistic() -> None:
    """After a shift of 2σ the CUSUM statistic is far above its limit; a clock reset (a step
    back of 100 steps, beyond the 10-step gap threshold) restarts it, a step back of 2 does
    not."""
    rng = np.random.default_rng(5)
    x = np.r_[rng.normal(0.0, 1.0, 600), np.full(50, 2.0), np.zeros(1)]
    for back_s, restarted in ((100.0, True), (2.0, False)):
        t = np.arange(len(x), dtype=float)
        t[-1] = t[-2] - back_s
        s = score_series("cusum", t, {"x": x})
        assert s[-2] > 0.5
        assert bool(s[-1] < 0.5) is restarted, back_s


#: The calibration series: CLEAN_ROWS of N(10, 1), then SHIFT_ROWS shifted by SHIFT_SIGMAS.
CLEAN_ROWS, SHIFT_ROWS, SHIFT_SIGMAS = 3000, 100, 8.0
#: Rows every detector may spend warming up (Half-Space Trees: 200 + 500 calibration).
WARMUP_ALLOWED = 700
#: Calibration: at most 1 % of clean rows above 0.5; the shift alarmed on most of its
#: first DETECT_ROWS rows, from its first FIRST_ALARM_ROWS.
CLEAN_ALARM_SHARE, DETECT_ROWS, FIRST_ALARM_ROWS = 0.01, 50, 3
#: Detectors that alarm once per event, then report 0 for a rest period (CAD OSE).
ONE_ALARM_PER_EVENT = {"contextual"}


@pytest.mark.parametrize("detector", sorted(DETECTORS))
def test_half_is_the_alarm_threshold_on_a_clean_series_and_a_level_shift(detector: str) -> None:
    rng = np.random.default_rng(2025)
    x = np.r_[rng.normal(10.0, 1.0, CLEAN_ROWS), rng.normal(10.0 + SHIFT_SIGMAS, 1.0, SHIFT_ROWS)]
    t_ms = np.arange(len(x)) * 60_000.0
    s = score_series(detector, t_ms, {"temp_c": x})
    clean = s[WARMUP_ALLOWED:CLEAN_ROWS]
    assert not np.isnan(clean).any()
    assert np.mean(clean > 0.5) <= CLEAN_ALARM_SHARE, np.sum(clean > 0.5)
    shifted = s[CLEAN_ROWS : CLEAN_ROWS + DETECT_ROWS]
    assert (shifted[:FIRST_ALARM_ROWS] > 0.5).any()
    if detector in ONE_ALARM_PER_EVENT:
        first = int(np.argmax(shifted > 0.5))
        assert not (shifted[first + 1 :] > 0).any()  # resting after its alarm
    else:
        assert np.mean(shifted > 0.5) > 0.8, np.sum(shifted > 0.5)
