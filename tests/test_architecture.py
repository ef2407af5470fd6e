"""The house's floors (README § Architecture): the import-layer contract in setup.cfg holds,
and it is a contract that can fail."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from foundation.settings import PROJECT_ROOT

LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def test_every_package_imports_only_the_floors_below_it() -> None:
    res = subprocess.run(
        [LINT_IMPORTS], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "1 kept, 0 broken" in res.stdout


def test_an_import_from_a_floor_above_breaks_the_contract(tmp_path: Path) -> None:
    """The same contract over a copy in which the foundation imports the application."""
    import shutil

    for package in ("foundation", "tianyan", "detectors"):
        shutil.copytree(
            PROJECT_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc")
        )
    bad = tmp_path / "foundation" / "upstairs.py"
    bad.write_text("from tianyan import cli  # noqa: F401\n")
    config = tmp_path / ".importlinter"
    config.write_text(
        textwrap.dedent(
            """
            [importlinter]
            root_packages =
                tianyan
                detectors
                foundation

            [importlinter:contract:floors]
            name = floors
            type = layers
            layers =
                tianyan
                detectors
                foundation
            """
        )
    )
    res = subprocess.run(
        [LINT_IMPORTS, "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode != 0
    assert "foundation.upstairs -> tianyan.cli" in res.stdout


def test_the_stream_worker_does_not_load_the_offline_scorers_libraries() -> None:
    """river, and the scipy.stats it loads, serve only ``tianyan score`` and the NAB bench:
    loaded by the worker through the detectors' catalogue they cost each worker ≈ 60 MB of
    resident memory (README § The stream worker)."""
    probe = (
        "import sys, streams.app, detectors.catalog; "
        "print(sorted(m for m in ('river', 'scipy.stats', 'pandas') if m in sys.modules))"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert res.stdout.strip() == "[]", res.stdout
