"""The supervisor units in deploy/systemd/: each runs a real tianyan command with options it
accepts, is restarted always (with no start limit that would stop the restarts), reads its
``TIANYAN_*`` settings from one environment file, and gives Faust time to stop cleanly."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest

from foundation.settings import PROJECT_ROOT
from tianyan.cli import main

UNITS = PROJECT_ROOT / "deploy" / "systemd"


def read_unit(path: Path) -> configparser.ConfigParser:
    """A unit file as sections of keys (systemd may repeat a key: the last one wins here)."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # keys are case-sensitive
    assert unit.read(path), f"{path} is missing"
    return unit


def console_scripts() -> set[str]:
    setup = configparser.ConfigParser()
    setup.read(PROJECT_ROOT / "setup.cfg")
    scripts = setup["options.entry_points"]["console_scripts"]
    return {line.split("=", 1)[0].strip() for line in scripts.splitlines() if line.strip()}


def seconds(value: str) -> float:
    """A systemd time span of the simple kinds the units use: ``5``, ``5s``, ``2min``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value.strip())
    assert match, f"not a time span the test reads: {value!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


@pytest.mark.parametrize(
    ("unit_name", "command"),
    [
        ("tianyan-worker@.service", "worker"),
        ("tianyan-dispatcher.service", "dispatcher"),
        ("tianyan-gateway@.service", "gateway"),
    ],
)
def test_unit_runs_a_console_command_and_restarts_always(unit_name: str, command: str) -> None:
    unit = read_unit(UNITS / unit_name)
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].startswith("/"), "systemd wants an absolute ExecStart path"
    assert Path(argv[0]).name in console_scripts()
    assert argv[1] == command and command in main.commands
    # the options given are ones the command accepts (click raises on any other)
    main.commands[command].make_context(command, argv[2:])
    assert service["Restart"] == "always"
    assert seconds(service["RestartSec"]) > 0
    # systemd stops restarting a unit that failed 5 times in 10 s unless this is 0
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert service["EnvironmentFile"].lstrip("-") == "/etc/tianyan/tianyan.env"
    # SIGTERM to Faust alone, which leaves its consumer group and commits; SIGKILL to
    # everything left only after the stop timeout
    assert service.get("KillSignal", "SIGTERM") == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert 30 <= seconds(service["TimeoutStopSec"]) <= 300
    assert service["WorkingDirectory"].startswith("%S/")
    # Faust writes its data folder under TIANYAN_VAR_DIR: the state directory, the one
    # place ProtectSystem=strict leaves writable
    environment = dict(kv.split("=", 1) for kv in shlex.split(service["Environment"]))
    assert environment["TIANYAN_VAR_DIR"] == "%S/" + service["StateDirectory"]
    assert unit["Install"]["WantedBy"]


def test_the_environment_example_names_only_real_settings() -> None:
    settings_source = (PROJECT_ROOT / "foundation" / "settings.py").read_text()
    names = [
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (UNITS / "tianyan.env.example").read_text().splitlines()
        if re.match(r"#?\s*TIANYAN_\w+=", line)
    ]
    assert "TIANYAN_RESCUE_WEBHOOK_SECRET" in names
    unknown = [n for n in names if f'"{n}"' not in settings_source]
    assert not unknown, f"not settings tianyan reads: {unknown}"
    # the worker template sets its web port from the instance name; the file would override it
    assert "TIANYAN_WORKER_WEB_PORT" not in names
