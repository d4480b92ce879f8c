"""Fixtures shared by the protocol tests (a QMP or NBD peer on a unix socket)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets: pytest's tmp_path can push their paths past the
    ~108-byte limit."""
    path = Path(tempfile.mkdtemp(prefix="vfq-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
