"""The cluster tests' fixtures: one three-host lab (``lab.Lab``) per test module."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, tiny_cache  # noqa: F401 - a fixture we use

from .lab import Lab


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Lab]:  # noqa: F811
    """Three hosts in one cluster, names unique to this run (other runs may share the
    machine); data on tmpfs (etcd's fsyncs); all of it removed after, logs kept."""
    tag = secrets.token_hex(3)
    made = Lab(Path(f"/dev/shm/vfc-{tag}"), prefix=f"vfc{tag}")
    try:
        made.up(images_on=(3,))  # only host 3 runs guests here
        yield made
    finally:
        _keep_logs(made, request.module.__name__.rsplit(".", 1)[-1])
        made.down()
    made.down()  # idempotent: a second removal finds nothing and fails on nothing
    assert made.leftovers() == []


def _keep_logs(lab: Lab, module: str) -> None:
    """Each host's daemon and etcd log, in artifacts/<module>/ (read when a test failed)."""
    dest = ROOT / "artifacts" / module
    dest.mkdir(parents=True, exist_ok=True)
    for h in lab.hosts:
        for log in ("daemon.log", "cluster/etcd.log"):
            path = h.data_dir / log
            if path.exists():
                shutil.copy(path, dest / f"h{h.index}-{path.name}")
