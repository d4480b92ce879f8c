"""Live resource changes of one real tiny guest (TCG), each verified inside the guest.

One daemon and one VM for the whole module (booting is the expensive part);
each test leaves the VM as it found it. The guest is driven over its serial
console: commands go in as typed lines, answers are read between markers.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from virtfleet.client import backups
from virtfleet.client import resources as calls
from virtfleet.client.errors import ApiError

from .conftest import Daemon, _running_daemon, wait_for

pytestmark = pytest.mark.integration
VM = "live"
SPEC: dict[str, Any] = {"vcpus": 1, "max_vcpus": 3, "memory_mib": 384, "max_memory_mib": 512}
_tags = itertools.count(1)


@pytest.fixture(scope="module")
def d(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Daemon]:
    for daemon in _running_daemon(request, ("--listen", "none")):
        daemon.create(VM, min_memory_mib=128, **SPEC)
        daemon.wait_marker(VM)
        guest(daemon, "dmesg -n 1")  # kernel messages on the console would split answers
        yield daemon


def guest(d: Daemon, command: str, timeout_s: float = 60.0) -> str:
    """Run ``command`` in the guest's shell; its output (between two markers)."""
    tag = f"Q{next(_tags)}X"
    d.type_line(VM, f"echo {tag}B; {command}; echo {tag}E")
    # Not the echoed command line ("echo TAGB; ..."), only the shell's output.
    pattern = re.compile(rf"(?<!echo ){tag}B\r?\n(.*?)(?<!echo ){tag}E", re.DOTALL)
    found: list[str] = []

    def answered() -> bool:
        m = pattern.search(d.serial_log(VM))
        if m:
            found.append(m[1].replace("\r", ""))
        return m is not None

    wait_for(answered, timeout_s, f"guest answer to {command!r}")
    return found[0]


def resize(d: Daemon, **body: Any) -> dict[str, Any]:
    """PATCH the VM and wait: the operation's result (changes, pending)."""
    op = d.client.call(calls.patch_instance(VM, body))
    done = d.client.wait_operation(op.id, timeout_s=120)
    assert done.status == "success", done
    return dict(done.result)


def mem_total_kib(d: Daemon) -> int:
    return int(re.findall(r"MemTotal:\s+(\d+)", guest(d, "grep MemTotal /proc/meminfo"))[0])


def test_balloon_moves_guest_memory(d: Daemon) -> None:
    """Shrinking memory deflates MemTotal in the guest; growing back restores it."""
    start = mem_total_kib(d)
    result = resize(d, memory_mib=256)
    assert [c["mode"] for c in result["changes"]] == ["live"]
    wait_for(lambda: mem_total_kib(d) < start - 100 * 1024, 60, "MemTotal to drop ~128 MiB")
    resize(d, memory_mib=384)
    wait_for(lambda: mem_total_kib(d) > start - 16 * 1024, 60, "MemTotal to come back")
    live = d.client.call(calls.instance_resources(VM))
    assert live["live"]["balloon_actual_mib"] == 384


def test_vcpus_hot_add_and_remove(d: Daemon) -> None:
    """Hot-added vCPUs come online in the guest and hot-removed ones leave; under TCG a
    vCPU beyond what the process may still create is refused, the VM unharmed."""
    resize(d, vcpus=3)
    wait_for(lambda: guest(d, "cat /sys/devices/system/cpu/online").strip() == "0-2", 60, "0-2")
    resize(d, vcpus=1)
    assert guest(d, "cat /sys/devices/system/cpu/online").strip() == "0"
    # TCG never frees a vCPU's translation context: QEMU aborts when more vCPUs than
    # maxcpus were ever created. Re-plugging is refused instead, and the VM runs on.
    op = d.client.call(calls.patch_instance(VM, {"vcpus": 2}))
    done = d.client.wait_operation(op.id, timeout_s=120)
    assert done.status == "failure" and done.error_code == "conflict", done
    assert "after a restart" in (done.error_message or "")
    assert d.client.get_instance(VM).spec.vcpus == 1
    assert guest(d, "cat /sys/devices/system/cpu/online").strip() == "0"
    applied = d.client.get_instance(VM).status.applied
    assert applied is not None and applied.vcpus == 1


def _open_copies(pid: int, path: Path) -> int:
    """How many descriptors process ``pid`` holds on ``path``."""
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if _readlink(fd) == str(path))


def _readlink(fd: Path) -> str:
    try:
        return str(fd.readlink())
    except OSError:  # closed meanwhile
        return ""


def test_disk_hot_add_grow_and_remove(d: Daemon) -> None:
    """A new 64 MiB disk appears as vdb, grows to 128 MiB online, then goes away; QEMU keeps
    only its node's own descriptor of the file (the fd set that carried it in is gone)."""
    resize(d, disks_add=[{"name": "data", "size_gib": 0.0625}])
    wait_for(lambda: "vdb" in guest(d, "ls /sys/block"), 30, "vdb in the guest")
    pid = d.client.get_instance(VM).status.pid
    assert pid is not None
    assert _open_copies(pid, d.data_dir / "disks" / VM / "data.qcow2") == 1
    assert guest(d, "cat /sys/block/vdb/size").strip() == str(64 * 2048)
    resize(d, disk_sizes_gib={"data": 0.125})
    wait_for(lambda: guest(d, "cat /sys/block/vdb/size").strip() == str(128 * 2048), 30, "grow")
    resize(d, disks_remove=["data"])
    assert "vdb" not in guest(d, "ls /sys/block")


def test_nic_hot_add_and_remove(d: Daemon) -> None:
    """A hot-added user-mode NIC shows up in /sys/class/net; removing it takes it away."""
    before = guest(d, "ls /sys/class/net").split()
    resize(d, nics_add=[{"name": "extra"}])
    wait_for(lambda: len(guest(d, "ls /sys/class/net").split()) == len(before) + 1, 30, "NIC")
    resize(d, nics_remove=["extra"])
    assert guest(d, "ls /sys/class/net").split() == before


def test_disk_write_limit_holds_in_the_guest(d: Daemon) -> None:
    """A 2 MiB/s write limit makes a 6 MiB direct write take ~3 s (within 20 %)."""
    limit = 2 * 2**20
    resize(d, disks_add=[{"name": "slow", "size_gib": 0.09375, "limits": {"bps_write": limit}}])
    dev: list[str] = []

    def appeared() -> bool:  # the 96 MiB disk, whatever the guest named it
        sizes = guest(d, "for b in /sys/block/vd*; do echo $b $(cat $b/size); done")
        dev[:] = re.findall(r"/sys/block/(vd\w+) 196608", sizes)
        return bool(dev)

    wait_for(appeared, 30, "the 96 MiB disk in the guest")
    out = guest(
        d,
        f"a=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero of=/dev/{dev[0]} bs=256k count=24 "
        "oflag=direct 2>/dev/null; b=$(cut -d' ' -f1 /proc/uptime); echo took $a $b",
    )
    a, b = map(float, re.findall(r"took ([\d.]+) ([\d.]+)", out)[0])
    assert 3.0 * 0.8 <= b - a <= 3.0 * 1.2, f"6 MiB at 2 MiB/s took {b - a:.2f} s"
    resize(d, disks_remove=["slow"])


def test_cpu_cap_limits_the_qemu_process(d: Daemon) -> None:
    """With a 30 % cap a guest busy loop keeps QEMU near 30 % of a core; lifting it frees it."""
    resize(d, cpu_limit_pct=30)
    guest(d, "(while :; do :; done) & echo $! > /tmp/spin")
    try:
        proc = psutil.Process(d.qemu_pid(VM))
        capped = _cpu_pct(proc, 4.0)
        assert capped <= 30 * 1.5, f"QEMU used {capped:.0f} % of a core under a 30 % cap"
        assert capped >= 5, "the busy loop did not run at all"
    finally:
        guest(d, "kill $(cat /tmp/spin)")
        resize(d, cpu_limit_pct=None)


def test_bad_input_leaves_the_vm_running(d: Daemon) -> None:
    """Out-of-range memory, too many vCPUs or removing the boot disk: errors, VM unchanged."""
    bad: list[tuple[dict[str, Any], str]] = [
        ({"memory_mib": 1024}, "invalid_input"),
        ({"memory_mib": 64}, "invalid_input"),
        ({"vcpus": 9}, "invalid_input"),
        ({"disks_remove": ["root"]}, "invalid_input"),
        ({"disk_sizes_gib": {"root": 0.001}}, "invalid_input"),
    ]
    for body, code in bad:
        with pytest.raises(ApiError) as err:
            d.client.call(calls.patch_instance(VM, body))
        assert err.value.code == code, body
    inst = d.client.get_instance(VM)
    assert inst.status.power == "running" and inst.pending == []
    assert guest(d, "echo alive").strip() == "alive"


def test_readded_volume_brings_its_snapshot_chain(d: Daemon) -> None:
    """A volume re-added after a snapshot is an overlay over a frozen file: QEMU, chrooted
    under its own uid, gets the whole chain as descriptors and the guest reads the data
    that lives only in the frozen file. (Last here: the VM keeps the snapshot.)"""
    resize(d, disks_add=[{"name": "keep", "size_gib": 0.0625}])
    wait_for(lambda: "vdb" in guest(d, "ls /sys/block"), 30, "vdb in the guest")
    guest(d, "dd if=/dev/urandom of=/dev/vdb bs=64k count=1 2>/dev/null; sync")
    read = "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vdb bs=64k count=1 2>/dev/null | md5sum"
    before = guest(d, read).split()[0]
    snap = d.client.wait_operation(
        d.client.call(backups.create_snapshot(VM, "s")).id, timeout_s=120
    )
    assert snap.status == "success", snap
    resize(d, disks_remove=["keep"])
    resize(d, disks_add=[{"name": "keep"}])
    wait_for(lambda: "vdb" in guest(d, "ls /sys/block"), 30, "vdb back in the guest")
    assert guest(d, read).split()[0] == before


def _cpu_pct(proc: psutil.Process, seconds: float) -> float:
    """CPU use of ``proc`` and its threads over ``seconds``, in % of one core."""
    t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
    time.sleep(seconds)
    t1, c1 = time.monotonic(), sum(proc.cpu_times()[:2])
    return (c1 - c0) / (t1 - t0) * 100
