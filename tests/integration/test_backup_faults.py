"""Backup faults on a real guest: daemon SIGKILLed mid-backup, repository disk full.

The repository sits on a small tmpfs this module mounts (and resizes), so a
full filesystem is real. Each recovery is proven by restoring the next backup
and comparing it byte for byte with a copy of the disk taken at that instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from virtfleet.client import backups as calls
from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.model.backup import BackupInfo

from .conftest import Daemon, _running_daemon, wait_for
from .guestdata import guest_run, guest_sum, run_op, write_random

pytestmark = pytest.mark.integration
VM = "faultvm"
DATA = "/root/data.bin"


def _mount_tmpfs(path: Path, mib: int) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)], check=True)


def _resize(path: Path, mib: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={mib}m", str(path)], check=True)


@pytest.fixture(scope="module")
def repo_mount() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vfrepo", dir="/tmp"))
    _mount_tmpfs(path, 512)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)
    path.rmdir()


@pytest.fixture(scope="module")
def fd(request: pytest.FixtureRequest, tiny_cache: Path, repo_mount: Path) -> Iterator[Daemon]:
    os.environ["VIRTFLEET_BACKUP_REPO"] = str(repo_mount)
    try:
        for d in _running_daemon(request, ("--listen", "none")):
            d.create(VM)
            d.wait_marker(VM)
            yield d
    finally:
        del os.environ["VIRTFLEET_BACKUP_REPO"]


def _disk(d: Daemon, vm: str) -> Path:
    return d.data_dir / "disks" / vm / "root.qcow2"


def _backup_paused(d: Daemon, ref: Path | None = None, full: bool = False) -> calls.Operation:
    d.action(VM, "pause")
    if ref is not None:
        cmd = ["qemu-img", "convert", "-U", "-O", "qcow2", str(_disk(d, VM)), str(ref)]
        subprocess.run(cmd, check=True)
    done = run_op(d, calls.create_backup(VM, full=full))
    d.action(VM, "resume")
    return done


def _restore_matches(d: Daemon, backup_id: str, ref: Path, target: str) -> None:
    done = run_op(d, calls.restore_backup(backup_id, target))
    assert done.status == "success", done
    cmp = subprocess.run(["qemu-img", "compare", str(ref), str(_disk(d, target))])
    assert cmp.returncode == 0


def _manifests(repo: Path) -> list[Path]:
    return sorted((repo / "backups").glob("*/*.json"))


def _id(done: calls.Operation) -> str:
    return BackupInfo.model_validate(done.result).id


def _verify_ok(d: Daemon) -> None:
    done = run_op(d, calls.verify_backups())
    assert done.status == "success" and done.result and done.result["ok"] is True, done


def _qemu_state(d: Daemon) -> dict[str, Any]:
    """What the backup leaves in the VM's QEMU, asked over its QMP socket (the daemon is
    down: QEMU serves one monitor client at a time)."""

    async def ask() -> dict[str, Any]:
        session = await QMPSession.connect(d.run_dir(VM) / "qmp.sock", timeout_s=10)
        try:
            nodes = await session.execute("query-named-block-nodes", {"flat": True})
            return {
                "status": await session.query_status(),
                "nodes": sorted(n["node-name"] for n in nodes if n["node-name"].startswith("vf")),
                "bitmaps": sorted(
                    b.get("name", "") for n in nodes for b in n.get("dirty-bitmaps", [])
                ),
                "jobs": [j["id"] for j in await session.execute("query-jobs")],
                "exports": [e["id"] for e in await session.execute("query-block-exports")],
            }
        finally:
            await session.close()

    return asyncio.run(ask())


def _qmp_log(d: Daemon) -> list[dict[str, Any]]:
    entries = []
    for line in (d.run_dir(VM) / "qmp.log").read_text().splitlines():
        with contextlib.suppress(ValueError):  # the last line may be half written
            entries.append(json.loads(line))
    return entries


def _answered(log: list[dict[str, Any]], command: str) -> bool:
    """Whether QEMU has returned success for ``command`` in this stretch of its QMP log."""
    sent = {e["msg"].get("id") for e in log if e["msg"].get("execute") == command}
    return any(e["dir"] == "recv" and "return" in e["msg"] and e["msg"].get("id") in sent
               for e in log)  # fmt: skip


def _work_files(d: Daemon, repo: Path) -> list[Path]:
    """Temporary files of a backup: fleecing targets, the NBD socket, repository tmp/."""
    found = list((d.data_dir / "disks" / VM).glob(".backup-*")) + list((repo / "tmp").iterdir())
    return found + [p for p in [d.run_dir(VM) / "nbd.sock"] if p.exists()]


def test_sigkill_mid_backup(fd: Daemon, repo_mount: Path) -> None:
    """SIGKILL while a backup runs: no manifest appears, the VM keeps running; the restarted
    daemon removes the fleecing job, node, NBD export, frozen bitmap and work files from the
    running QEMU and the disk (the guest never notices), verify is clean, and the next backup
    (incremental: the last backup's bitmap survived) restores identical to the disk."""
    write_random(fd, VM, DATA, 4096)
    first = _backup_paused(fd)
    assert first.status == "success", first
    guest_run(fd, VM, "dd if=/dev/urandom of=/root/big.bin bs=1M count=96 2>/dev/null")
    before = _manifests(repo_mount)
    pid = fd.qemu_pid(VM)
    seen = _qmp_log(fd)
    fd.client.call(calls.create_backup(VM, full=True))
    # Fleecing job, node and NBD export all exist once QEMU has answered the export.
    wait_for(lambda: _answered(_qmp_log(fd)[len(seen) :], "block-export-add"), 120, "the export")
    fd.kill9()
    assert list((fd.data_dir / "disks" / VM).glob(".backup-*")), "killed after the backup"
    assert _manifests(repo_mount) == before
    assert psutil.pid_exists(pid)
    left = _qemu_state(fd)  # the killed backup's fleecing is still in QEMU
    assert left["nodes"] and left["jobs"] and left["exports"], left
    assert any(b.startswith("vf-") and b != f"vf-{_id(first)}" for b in left["bitmaps"]), left
    fd.start()
    wait_for(lambda: fd.client.get_instance(VM).status.power == "running", 30, "re-adoption")
    fd.stop()  # the VM runs on; QEMU's monitor is free for a look
    after = _qemu_state(fd)
    assert after == {"status": "running", "nodes": [], "bitmaps": [f"vf-{_id(first)}"],
                     "jobs": [], "exports": []}  # fmt: skip
    assert _work_files(fd, repo_mount) == []
    assert psutil.pid_exists(pid)
    fd.start()
    wait_for(lambda: fd.client.get_instance(VM).status.power == "running", 30, "re-adoption")
    _verify_ok(fd)
    write_random(fd, VM, DATA, 1024, seek_kib=512)
    ref = fd.data_dir / "ref-after-kill.qcow2"
    done = _backup_paused(fd, ref)
    assert done.status == "success", done
    info = BackupInfo.model_validate(done.result)
    assert info.kind == "incremental" and info.parent == _id(first)
    _verify_ok(fd)
    _restore_matches(fd, info.id, ref, "afterkill")


def test_repository_full(fd: Daemon, repo_mount: Path) -> None:
    """A full repository: clear repository_full error, guest unharmed, nothing published;
    once there is space the next incremental (same bitmap) is correct."""
    last = fd.client.call(calls.list_backups(VM))[-1]
    used = os.statvfs(repo_mount)
    used_mib = (used.f_blocks - used.f_bfree) * used.f_frsize // 2**20
    _resize(repo_mount, used_mib + 4)
    write_random(fd, VM, DATA, 16384)
    before = _manifests(repo_mount)
    failed = _backup_paused(fd)
    assert failed.status == "failure" and failed.error_code == "repository_full", failed
    assert "full" in (failed.error_message or "")
    assert _manifests(repo_mount) == before
    assert fd.client.get_instance(VM).status.power == "running"
    digest = guest_sum(fd, VM, DATA)
    _resize(repo_mount, 512)
    ref = fd.data_dir / "ref-after-full.qcow2"
    done = _backup_paused(fd, ref)
    assert done.status == "success", done
    info = BackupInfo.model_validate(done.result)
    assert info.kind == "incremental" and info.parent == last.id
    _verify_ok(fd)
    _restore_matches(fd, info.id, ref, "afterfull")
    fd.action("afterfull", "start")
    fd.wait_marker("afterfull")
    assert guest_sum(fd, "afterfull", DATA) == digest
