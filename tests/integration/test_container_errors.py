"""A runtime directory under a 0700 parent: the containers' mapped root cannot reach its
rootfs mount point, so runc fails while preparing it. The user sees runc's own words (not "the
runtime sent no console fd"), ``host check`` names the directory and the fix, and
``serve`` warns at start."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.client import ApiError

from .containers import Containers, _containers_daemon, _environ


@pytest.fixture
def hidden() -> Iterator[Containers]:
    """A container daemon whose runtime directory lies under a 0700 parent."""
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("container tests need root and runc")
    parent = Path(tempfile.mkdtemp(prefix="vfh", dir="/tmp"))  # mkdtemp: mode 0700
    data = Path(tempfile.mkdtemp(prefix="vfd", dir="/tmp"))
    try:
        with (
            _environ(VIRTFLEET_RUNTIME_DIR=str(parent / "run")),
            contextlib.closing(_containers_daemon(data)) as daemons,
        ):
            yield next(daemons)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.integration
def test_unreachable_data_dir_says_why(hidden: Containers) -> None:
    parent = hidden.mounts.parent.parent
    assert parent.stat().st_mode & 0o777 == 0o700
    spec = {"name": "c1", "kind": "container", "image": "ctiny"}
    op = hidden.client.create_instance(spec, start=True)
    done = hidden.client.wait_operation(op.id, timeout_s=120)
    assert done.status == "failure", done
    message = done.error_message or ""
    assert "error preparing rootfs" in message and "permission denied" in message, message
    assert "console fd" not in message
    assert "\n" not in message
    assert hidden.leftovers("c1") == []
    with pytest.raises(ApiError):
        hidden.client.get_instance("c1")  # create+start is one request: nothing half-made

    out = json.loads(hidden.cli("host", "check", "--json").stdout)
    rows = [c for c in out["checks"] if c["name"] == "container data path"]
    assert len(rows) == 1 and rows[0]["level"] == "warn", out["checks"]
    assert f"chmod o+x {parent}" in rows[0]["detail"]
    log = (hidden.d.data_dir / "daemon.log").read_text()
    assert "container data path" in log and str(parent) in log


@pytest.mark.integration
def test_reachable_data_dir_has_no_warning(hidden: Containers) -> None:
    """With the parent opened as the check advises, containers start and the row is gone."""
    parent = hidden.mounts.parent.parent
    parent.chmod(0o711)
    hidden.create("c2")
    assert hidden.sh("c2", "echo up").strip() == "up"
    out = json.loads(hidden.cli("host", "check", "--json").stdout)
    assert not [c for c in out["checks"] if c["name"] == "container data path"]
