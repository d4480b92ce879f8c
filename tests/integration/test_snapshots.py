"""Live disk snapshots of a real tiny guest: take, revert, tree rules, online delete, bad input."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from virtfleet.client import ApiError, resources
from virtfleet.client import backups as calls

from .conftest import VIRTFLEET, Daemon, _running_daemon, wait_for
from .guestdata import guest_run, guest_sum, run_op, write_random

pytestmark = pytest.mark.integration
VM = "snapvm"
DATA = "/root/data.bin"


@pytest.fixture(scope="module")
def snapd(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Daemon]:
    """One daemon and one running guest shared by the tests of this module (in order)."""
    for d in _running_daemon(request, ("--listen", "none")):
        d.create(VM)
        d.wait_marker(VM)
        yield d


def _ok(d: Daemon, call: calls.Call[calls.Operation]) -> dict[str, object]:
    done = run_op(d, call)
    assert done.status == "success", done
    return done.result or {}


def test_revert_disk_snapshot_restores_data(snapd: Daemon) -> None:
    """Data written before a live snapshot comes back after change + revert (checksum in guest);
    taking the snapshot does not stop the guest."""
    write_random(snapd, VM, DATA, 1024)
    before = guest_sum(snapd, VM, DATA)
    pid = snapd.qemu_pid(VM)
    _ok(snapd, calls.create_snapshot(VM, "s1"))
    assert snapd.qemu_pid(VM) == pid and snapd.client.get_instance(VM).status.power == "running"
    write_random(snapd, VM, DATA, 512)
    assert guest_sum(snapd, VM, DATA) != before
    _ok(snapd, calls.revert_snapshot(VM, "s1"))
    snapd.wait_marker(VM, count=2)
    assert guest_sum(snapd, VM, DATA) == before
    [s1] = snapd.client.call(calls.list_snapshots(VM))
    assert s1.name == "s1" and s1.current and s1.parent is None


def test_tree_and_online_delete(snapd: Daemon) -> None:
    """A child snapshot makes its parent undeletable (409, nothing changed); deleting the
    current leaf online keeps the guest's data and leaves a consistent chain."""
    _ok(snapd, calls.create_snapshot(VM, "s2"))
    tree = {s.name: s for s in snapd.client.call(calls.list_snapshots(VM))}
    assert tree["s2"].parent == "s1" and tree["s2"].current and tree["s1"].children == ["s2"]
    with pytest.raises(ApiError) as err:
        snapd.client.call(calls.delete_snapshot(VM, "s1"))
    assert err.value.code == "in_use" and "s2" in err.value.message
    write_random(snapd, VM, DATA, 256)
    expected = guest_sum(snapd, VM, DATA)
    _ok(snapd, calls.delete_snapshot(VM, "s2"))
    assert [s.name for s in snapd.client.call(calls.list_snapshots(VM))] == ["s1"]
    assert snapd.client.call(calls.list_snapshots(VM))[0].current
    assert guest_sum(snapd, VM, DATA) == expected
    assert not (snapd.data_dir / "disks" / VM / "snapshots" / "s2").exists()
    _ok(snapd, calls.delete_snapshot(VM, "s1"))  # the root, online, streams from the image
    guest_run(snapd, VM, "true")
    assert guest_sum(snapd, VM, DATA) == expected
    assert snapd.client.call(calls.list_snapshots(VM)) == []


def test_bad_snapshot_requests(snapd: Daemon) -> None:
    """Path characters, unknown and duplicate names are clear 4xx errors; nothing changes."""
    http = httpx.Client(transport=httpx.HTTPTransport(uds=str(snapd.data_dir / "api.sock")))
    for bad in ("../x", "a/b", "UPPER", ".."):
        r = http.post(f"http://x/1.0/instances/{VM}/snapshots", json={"name": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_name", bad
    r = http.post(f"http://x/1.0/instances/{VM}/snapshots/..%2Fx/revert")
    assert r.status_code in (400, 404)
    with pytest.raises(ApiError) as err:
        snapd.client.call(calls.revert_snapshot(VM, "nope"))
    assert err.value.code == "not_found"
    _ok(snapd, calls.create_snapshot(VM, "dup"))
    with pytest.raises(ApiError) as err:
        snapd.client.call(calls.create_snapshot(VM, "dup"))
    assert err.value.code == "already_exists"
    assert [s.name for s in snapd.client.call(calls.list_snapshots(VM))] == ["dup"]
    assert snapd.client.get_instance(VM).status.power == "running"


def test_cli_snapshot_commands(snapd: Daemon) -> None:
    """The CLI takes, lists (--json) and deletes a snapshot; a bad name exits non-zero."""
    base = [VIRTFLEET, "--data-dir", str(snapd.data_dir), "vm", "snapshot"]
    made = subprocess.run([*base, "create", VM, "clisnap", "--json"], capture_output=True)
    assert made.returncode == 0, made.stderr
    listed = subprocess.run([*base, "list", VM, "--json"], capture_output=True, check=True)
    assert "clisnap" in [s["name"] for s in json.loads(listed.stdout)]
    bad = subprocess.run([*base, "create", VM, "a/b"], capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid_name" in bad.stderr + bad.stdout
    gone = subprocess.run([*base, "delete", VM, "clisnap"], capture_output=True)
    assert gone.returncode == 0, gone.stderr


def _counts(d: Daemon, since: int = 0) -> list[int]:
    return [int(n) for n in re.findall(r"^CTR(\d+)\r?$", d.serial_log(VM)[since:], re.MULTILINE)]


def test_memory_snapshot_resumes_where_it_was(snapd: Daemon) -> None:
    """With memory, revert resumes the guest without a reboot: a counter held in a shell
    variable (guest RAM) continues from its value at the snapshot, not from where it got to."""
    snapd.type_line(VM, "c=0; while :; do c=$((c+1)); echo CTR$c; sleep 0.3; done &")
    wait_for(lambda: len(_counts(snapd)) >= 3, 60, "counter")
    low = _counts(snapd)[-1]
    done = run_op(snapd, calls.create_snapshot(VM, "mem", memory=True))
    assert done.status == "success", done
    assert done.result and done.result["memory"] and done.result["pause_ms"] is not None
    high = _counts(snapd)[-1]
    wait_for(lambda: _counts(snapd)[-1] >= high + 8, 60, "counter to move on")
    moved = _counts(snapd)[-1]
    boots = snapd.serial_log(VM).count("VIRTFLEET-READY")
    mark = len(snapd.serial_log(VM))
    assert run_op(snapd, calls.revert_snapshot(VM, "mem")).status == "success"
    wait_for(lambda: len(_counts(snapd, mark)) >= 2, 60, "counter after revert")
    after = _counts(snapd, mark)[0]
    assert low < after <= high + 2 < moved, (low, high, after, moved)
    assert snapd.serial_log(VM).count("VIRTFLEET-READY") == boots  # resumed, not rebooted
    snapd.type_line(VM, "kill %1")


def test_memory_revert_refused_after_hot_add(snapd: Daemon) -> None:
    """Saved machine state only loads into the hardware it came from: after a disk hot-add
    a memory revert is a clear 409 and the running guest is left alone (and its disk)."""
    patch = resources.patch_instance(VM, {"disks_add": [{"name": "hot", "size_gib": 0.0625}]})
    added = snapd.client.wait_operation(snapd.client.call(patch).id, timeout_s=120)
    assert added.status == "success", added
    pid = snapd.client.get_instance(VM).status.pid
    done = run_op(snapd, calls.revert_snapshot(VM, "mem"))
    assert done.status == "failure", done
    assert done.error_code == "conflict" and "devices" in (done.error_message or ""), done
    now = snapd.client.get_instance(VM)
    assert (now.status.power, now.status.pid) == ("running", pid)
    assert "hot" in [disk.name for disk in now.spec.disks]
    gone = resources.patch_instance(VM, {"disks_remove": ["hot"]})
    removed = snapd.client.wait_operation(snapd.client.call(gone).id, timeout_s=120)
    assert removed.status == "success", removed


def test_stopped_vm_snapshots(snapd: Daemon) -> None:
    """On a stopped VM: a memory snapshot is refused (409); a disk snapshot, a revert and a
    delete of the current snapshot work offline (qemu-img) and the data survives them."""
    write_random(snapd, VM, DATA, 256)
    expected = guest_sum(snapd, VM, DATA)
    snapd.action(VM, "stop", force=True)
    with pytest.raises(ApiError) as err:
        snapd.client.call(calls.create_snapshot(VM, "memstopped", memory=True))
    assert err.value.code == "invalid_state"
    for call in (
        calls.create_snapshot(VM, "off"),
        calls.revert_snapshot(VM, "off"),
        calls.delete_snapshot(VM, "off"),
    ):
        _ok(snapd, call)
        assert snapd.client.get_instance(VM).status.power == "stopped"
    assert "off" not in [s.name for s in snapd.client.call(calls.list_snapshots(VM))]
    check = subprocess.run(
        ["qemu-img", "check", str(snapd.data_dir / "disks" / VM / "root.qcow2")],
        capture_output=True,
    )
    assert check.returncode == 0, check.stdout
    boots = snapd.serial_log(VM).count("VIRTFLEET-READY")
    snapd.action(VM, "start")
    snapd.wait_marker(VM, count=boots + 1)
    assert guest_sum(snapd, VM, DATA) == expected
