"""Bad input through the real CLI and daemon: one clear line, a stable code, nothing left behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import VIRTFLEET, Daemon

pytestmark = pytest.mark.integration


def _cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VIRTFLEET, "--data-dir", str(d.data_dir), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _error(d: Daemon, *args: str) -> tuple[int, str, str]:
    """Run a failing command with --json; return exit code, error code and message."""
    proc = _cli(d, *args[:2], "--json", *args[2:])
    assert proc.returncode != 0, proc.stdout
    err = json.loads(proc.stdout)["error"]
    return proc.returncode, err["code"], err["message"]


def _snapshot(d: Daemon) -> tuple[list[str], list[str]]:
    names = [i.name for i in d.client.list_instances()]
    disks = sorted(p.name for p in (d.data_dir / "disks").iterdir())
    return names, disks


@pytest.mark.parametrize(
    "name", ["", "x" * 64, "../etc", "a/b", "d\u0435mo", "Demo", "a b", "bad\x07", "-lead"]
)
def test_invalid_names_are_refused(daemon: Daemon, name: str) -> None:
    """Hostile names fail with invalid_name (exit 2) and create nothing."""
    before = _snapshot(daemon)
    code, err, message = _error(daemon, "vm", "create", "--image", "tiny", "--", name)
    assert (code, err) == (2, "invalid_name")
    assert "\n" not in message
    assert _snapshot(daemon) == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--vcpus", "512"], "invalid_input"),
        (["--vcpus", "64"], "insufficient_capacity"),
        (["--memory", "4T"], "insufficient_capacity"),
        (["--memory", "16M"], "invalid_input"),
        (["--memory", "lots"], "invalid_input"),
        (["--accel", "warp"], "invalid_input"),
    ],
)
def test_resources_beyond_host_or_minimum(daemon: Daemon, args: list[str], expected: str) -> None:
    """vCPUs/memory beyond the host or below minimums are refused before anything exists."""
    before = _snapshot(daemon)
    _, err, _ = _error(daemon, "vm", "create", "big", "--image", "tiny", *args)
    assert err == expected
    assert _snapshot(daemon) == before


def test_unknown_image_and_duplicate_name(daemon: Daemon) -> None:
    """An unknown image is not_found; a second VM of the same name is already_exists."""
    assert _error(daemon, "vm", "create", "a", "--image", "nope")[1] == "not_found"
    assert _cli(daemon, "vm", "create", "a", "--image", "tiny").returncode == 0
    assert _error(daemon, "vm", "create", "a", "--image", "tiny")[1] == "already_exists"


def test_wrong_state_calls(daemon: Daemon) -> None:
    """Pausing a stopped VM or starting a running one is invalid_state, naming both states."""
    daemon.create("w", start=False)
    code, err, message = _error(daemon, "vm", "pause", "w")
    assert (code, err) == (1, "invalid_state")
    assert "stopped" in message and "running" in message
    daemon.action("w", "start")
    assert _error(daemon, "vm", "start", "w")[1] == "invalid_state"
    assert daemon.client.get_instance("w").status.power == "running"


def test_corrupt_image_fails_cleanly_and_harms_no_other_vm(daemon: Daemon) -> None:
    """A corrupt image fails create+start with a clear error; no VM or disk is left; others run."""
    daemon.create("other")
    other_pid = daemon.qemu_pid("other")
    op = daemon.client.build_image("bad")
    assert daemon.client.wait_operation(op.id, timeout_s=120).status == "success"
    bad = Path(daemon.client.get_image("bad").path)
    bad.write_bytes(bad.read_bytes()[:4096])  # a truncated qcow2
    before = _snapshot(daemon)
    code, err, message = _error(daemon, "vm", "create", "victim", "--image", "bad", "--start")
    assert code == 1 and err in ("process_failed", "image_error"), message
    assert "\n" not in message
    assert _snapshot(daemon) == before
    assert daemon.client.get_instance("other").status.pid == other_pid


def test_missing_image_file_fails_cleanly(daemon: Daemon) -> None:
    """An image whose file vanished fails with image_error naming the file; nothing is left."""
    op = daemon.client.build_image("gone")
    assert daemon.client.wait_operation(op.id, timeout_s=120).status == "success"
    Path(daemon.client.get_image("gone").path).unlink()
    before = _snapshot(daemon)
    _, err, message = _error(daemon, "vm", "create", "v", "--image", "gone", "--start")
    assert err == "image_error" and "missing" in message
    assert _snapshot(daemon) == before
