"""The README's development commands that are not the suite itself: ``make flake-check``
(scripts/flake-check.sh) repeats a path's tests and stops at the first failing run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .blocks import ROOT

# Passes on its first run, fails on its second: a flake the loop must catch.
FLAKY = """
from pathlib import Path

def test_second_run_fails():
    runs = Path(__file__).with_name("runs")
    n = int(runs.read_text()) if runs.exists() else 0
    runs.write_text(str(n + 1))
    assert n == 0
"""


def test_flake_check_repeats_until_a_run_fails(tmp_path: Path) -> None:
    test = tmp_path / "test_flaky.py"
    test.write_text(FLAKY)
    proc = subprocess.run(
        ["bash", "scripts/flake-check.sh", "-n", "5", str(test)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # a bare pytest starts fast
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "run 1 of 5 passed" in proc.stdout
    assert "run 2 of 5 failed" in proc.stderr and "test_second_run_fails" in proc.stderr
    assert (tmp_path / "runs").read_text() == "2"  # stopped there: no third run
