"""Meta tests: linters, type checks and import contracts are part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.meta


def _run(*args: str) -> None:
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


def test_ruff_lint() -> None:
    """ruff finds nothing in src, tests or bench."""
    _run(str(BIN / "ruff"), "check", "src", "tests", "bench")


def test_ruff_format() -> None:
    """The code is formatted as ruff formats it."""
    _run(str(BIN / "ruff"), "format", "--check", "src", "tests", "bench")


def test_mypy_strict() -> None:
    """src passes mypy --strict."""
    _run(str(BIN / "mypy"))


def test_import_contracts() -> None:
    """The layering of the architecture doc holds (import-linter)."""
    _run(str(BIN / "lint-imports"))
