"""Scenario files: the shipped ones load, and bad ones fail naming the key."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from simulator import SCENARIO_DIR, ScenarioError, load_scenario
from simulator.scenario import FAULTS, SECTIONS, SERVICE

GOOD = """
[scenario]
name = "t"
seed = 1
[physics]
relevel_speed_mps = 0.3
[faults.overspeed]
probability = 0.01
factor_max = 1.3
"""


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    load_scenario(path)


def test_shipped_scenarios_load() -> None:
    default = load_scenario(SCENARIO_DIR / "default.toml")
    assert set(default.faults) == set(FAULTS), "default.toml enables every fault type"
    assert not load_scenario(SCENARIO_DIR / "no_faults.toml").faults
    assert load_scenario(SCENARIO_DIR / "default.toml", seed=9).seed == 9
    assert default.with_seed(3).seed == 3


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[physics]", "[physics]\nspeed_limit = 2"), "physics.speed_limit: unknown key"),
        (
            ("relevel_speed_mps = 0.3", "relevel_speed_mps = -1.0"),
            "physics.relevel_speed_mps: -1.0 is below 0.05",
        ),
        (
            ("probability = 0.01", "probability = 1.5"),
            "faults.overspeed.probability: 1.5 is above 1.0",
        ),
        (("factor_max = 1.3", "factor_max = 3.0"), "faults.overspeed.factor_max: 3.0 is above 2.0"),
        (("seed = 1\n", ""), "scenario.seed: required field is missing"),
        (("probability = 0.01\n", ""), "faults.overspeed.probability: required field is missing"),
        (("[physics]", "[physics]\njerk_min_mps3 = 0"), "physics.jerk_min_mps3: 0 is below 0.2"),
        (
            (
                "[faults.overspeed]",
                "[faults.overload]\nprobability = 0.1\nfactor_max = 12.0\n[faults.overspeed]",
            ),
            "faults.overload.factor_max: 12.0 is above 2.0",
        ),
        (
            ("[faults.overspeed]", "[faults.meteor]\nrate_per_day = 1\n[faults.overspeed]"),
            "faults.meteor: unknown fault type",
        ),
        (
            ("[physics]", "[sampling]\nsample_hz = 7\n[physics]"),
            "sampling.sample_hz: 7 does not divide 1000",
        ),
        (
            ("[physics]", "[doors]\nopening_min_s = 4.0\n[physics]"),
            "doors.opening_min_s: 4.0 is above doors.opening_max_s (3.0)",
        ),
    ],
)
def test_bad_scenarios_name_the_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    assert edit[0] in GOOD
    with pytest.raises(ScenarioError, match=re.escape(message)):
        _load(tmp_path, GOOD.replace(edit[0], edit[1], 1))


def test_every_key_is_documented() -> None:
    doc = (SCENARIO_DIR.parent / "SCENARIOS.md").read_text()
    for section, keys in SECTIONS.items():
        for key in keys:
            assert f"`{key}`" in doc, f"{section}.{key} is not in SCENARIOS.md"
    for name, keys in FAULTS.items():
        assert f"faults.{name}" in doc
        for key in keys:
            assert f"`{key}`" in doc
    for name, keys in SERVICE.items():
        assert f"[service.{name}]" in doc
        for key in keys:
            assert f"`{key}`" in doc


def test_simulate_says_when_it_simulates_fewer_elevators_than_asked(tmp_path: Path) -> None:
    """`--elevators 500 --registry-seed 5` has 500 elevators but not 500 terminals: say so."""
    import json

    from click.testing import CliRunner

    from registry.generate import generate
    from tianyan.cli import main

    fitted = sum(e.has_terminal for e in generate(5, 500, dt.date(2026, 12, 1)))
    out = tmp_path / "run.jsonl"
    args = ["simulate", "--elevators", "500", "--registry-seed", "5", "--duration", "1"]
    args += ["--start", "2026-12-01T00:00:00", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"simulating {fitted} elevators, not 500" in result.stderr
    assert "have a monitoring terminal" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["elevators"] == fitted
