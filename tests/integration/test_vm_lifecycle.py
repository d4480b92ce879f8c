"""Real QEMU guests under TCG through the daemon: boot, pause, stop, reboot, crash, re-adopt."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from virtfleet.drivers.qemu.uids import DEFAULT_COUNT, DEFAULT_FIRST_UID

from .conftest import Daemon, wait_for

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    """True if ``pid`` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _heartbeats(d: Daemon, name: str) -> int:
    return len(re.findall(r"^HB\d+", d.serial_log(name), re.MULTILINE))


def _start_heartbeat(d: Daemon, name: str) -> None:
    d.type_line(name, "i=0; while :; do i=$((i+1)); echo HB$i; sleep 0.2; done &")
    wait_for(lambda: _heartbeats(d, name) >= 3, 30, f"heartbeat of {name}")


def test_boot_marker_and_mode_visible(daemon: Daemon) -> None:
    """A tiny VM boots to its marker with its own hostname, and shows TCG as its mode."""
    daemon.create("vm1", vcpus=2, memory_mib=256)
    log = daemon.wait_marker("vm1")
    assert re.search(r"VIRTFLEET-READY hostname=vm1 cpus=2 mem_kib=\d+", log)
    inst = daemon.client.get_instance("vm1")
    assert inst.status.power == "running"
    assert inst.status.accel == "tcg"
    assert "KVM" in inst.status.accel_reason


def test_emulated_device_model_boots(daemon: Daemon) -> None:
    """The legacy path (i440fx, IDE disk, e1000) boots the same image."""
    daemon.create("legacy", device_model="emulated", nics=[{"mode": "user"}])
    daemon.wait_marker("legacy")
    cmdline = " ".join(psutil.Process(daemon.qemu_pid("legacy")).cmdline())
    assert "ide-hd" in cmdline and "e1000" in cmdline and "virtio" not in cmdline


def test_pause_stops_heartbeat_and_resume_continues(daemon: Daemon) -> None:
    """Pausing freezes the guest (no heartbeat); resuming lets it continue."""
    daemon.create("hb")
    daemon.wait_marker("hb")
    _start_heartbeat(daemon, "hb")
    daemon.action("hb", "pause")
    assert daemon.client.get_instance("hb").status.power == "paused"
    frozen = _heartbeats(daemon, "hb")
    time.sleep(1.5)
    assert _heartbeats(daemon, "hb") == frozen
    daemon.action("hb", "resume")
    wait_for(lambda: _heartbeats(daemon, "hb") >= frozen + 3, 20, "heartbeat after resume")


def test_graceful_stop_uses_acpi(daemon: Daemon) -> None:
    """stop presses the ACPI power button and the guest powers itself off (no kill)."""
    daemon.create("g")
    daemon.wait_marker("g")
    started = time.monotonic()
    daemon.action("g", "stop", timeout_s=60)
    assert time.monotonic() - started < 30
    assert daemon.client.get_instance("g").status.power == "stopped"
    qmp_log = (daemon.run_dir("g") / "qmp.log").read_text(errors="replace")
    assert "system_powerdown" in qmp_log
    assert "guest-shutdown" in qmp_log
    assert '"quit"' not in qmp_log


def test_force_stop(daemon: Daemon) -> None:
    """A forced stop ends QEMU at once, even while the guest is paused."""
    daemon.create("f")
    pid = daemon.qemu_pid("f")
    daemon.action("f", "pause")
    daemon.action("f", "stop", force=True)
    assert daemon.client.get_instance("f").status.power == "stopped"
    assert _gone(pid)


def test_reboot_and_hard_reset(daemon: Daemon) -> None:
    """reboot restarts QEMU (new PID, boots again); a forced reboot resets in place."""
    daemon.create("r")
    daemon.wait_marker("r")
    pid = daemon.qemu_pid("r")
    daemon.action("r", "restart")
    daemon.wait_marker("r", count=2)
    new_pid = daemon.qemu_pid("r")
    assert new_pid != pid
    daemon.action("r", "restart", force=True)
    daemon.wait_marker("r", count=3)
    assert daemon.qemu_pid("r") == new_pid


def test_sigkill_one_vm_leaves_the_other_running(daemon: Daemon) -> None:
    """Killing one QEMU marks it crashed (with an event); the other keeps its heartbeat."""
    daemon.create("a")
    daemon.create("b")
    daemon.wait_marker("a")
    daemon.wait_marker("b")
    _start_heartbeat(daemon, "b")
    os.kill(daemon.qemu_pid("a"), signal.SIGKILL)
    wait_for(lambda: daemon.client.get_instance("a").status.power == "crashed", 20, "crashed")
    beats = _heartbeats(daemon, "b")
    wait_for(lambda: _heartbeats(daemon, "b") >= beats + 3, 20, "b's heartbeat")
    assert daemon.client.get_instance("b").status.power == "running"
    events = [(e.kind, e.target) for e in daemon.client.list_events()]
    assert ("instance.crashed", "instance/a") in events


def test_agent_sigkill_readopts_vms(daemon: Daemon) -> None:
    """After kill -9 of the daemon, a new one re-adopts every VM: same PIDs, none restarted."""
    daemon.create("x")
    daemon.create("y")
    daemon.action("y", "pause")
    daemon.wait_marker("x")
    pids = {n: daemon.qemu_pid(n) for n in ("x", "y")}
    daemon.kill9()
    assert all(psutil.pid_exists(p) for p in pids.values())
    daemon.start()
    assert {n: daemon.qemu_pid(n) for n in ("x", "y")} == pids
    assert daemon.client.get_instance("x").status.power == "running"
    assert daemon.client.get_instance("y").status.power == "paused"
    daemon.action("y", "resume")  # QMP really reconnected
    daemon.action("x", "pause")
    assert daemon.serial_log("x").count("VIRTFLEET-READY") == 1


def test_restart_policy_on_failure_restarts_crashed_vm(daemon: Daemon) -> None:
    """on-failure restarts a killed VM; policy 'no' leaves it crashed."""
    daemon.create("keep", restart_policy="on-failure")
    daemon.create("leave", restart_policy="no")
    old = daemon.qemu_pid("keep")
    os.kill(old, signal.SIGKILL)
    os.kill(daemon.qemu_pid("leave"), signal.SIGKILL)

    def restarted() -> bool:
        st = daemon.client.get_instance("keep").status
        return st.power == "running" and st.pid not in (None, old)

    wait_for(restarted, 30, "policy restart")
    assert daemon.client.get_instance("keep").status.restarts == 1
    assert daemon.client.get_instance("leave").status.power == "crashed"


def test_vm_that_died_while_agent_was_down_follows_policy(daemon: Daemon) -> None:
    """A VM killed while the daemon is down is detected at start and restarted per policy."""
    daemon.create("p", restart_policy="always")
    old = daemon.qemu_pid("p")
    daemon.kill9()
    os.kill(old, signal.SIGKILL)
    daemon.start()

    def restarted() -> bool:
        st = daemon.client.get_instance("p").status
        return st.power == "running" and st.pid not in (None, old)

    wait_for(restarted, 30, "restart after re-adoption")


def test_qemu_is_confined(daemon: Daemon) -> None:
    """QEMU runs as its own pool uid, chrooted into an empty jail, in its own cgroup, with
    seccomp on."""
    daemon.create("c", memory_mib=128)
    proc = psutil.Process(daemon.qemu_pid("c"))
    uid = proc.uids().real
    assert DEFAULT_FIRST_UID <= uid < DEFAULT_FIRST_UID + DEFAULT_COUNT
    assert (proc.uids().effective, proc.gids().real, proc.gids().effective) == (uid, uid, uid)
    jail = daemon.run_dir("c") / "jail"
    assert os.readlink(f"/proc/{proc.pid}/root") == str(jail)
    assert os.listdir(jail) == []
    assert "-sandbox" in proc.cmdline()
    cgroups = Path(f"/proc/{proc.pid}/cgroup").read_text()
    assert re.search(r"^\d+:memory:/virtfleet-[0-9a-f]{8}/c$", cgroups, re.MULTILINE), cgroups
    status = Path(f"/proc/{proc.pid}/status").read_text()
    assert re.search(r"^Seccomp:\s+2", status, re.MULTILINE)


# Run with another uid: the system interpreter (our venv may sit under root's home).
SYSTEM_PYTHON = "/usr/bin/python3"
_PROBE = """
import os, sys
pid, disk, run = int(sys.argv[1]), sys.argv[2], sys.argv[3]
attempts = {
    "signal": lambda: os.kill(pid, 0),
    "disk": lambda: open(disk, "rb"),
    "run dir": lambda: os.listdir(run),
    "memory": lambda: open(f"/proc/{pid}/mem", "rb"),
}
for what, attempt in attempts.items():
    try:
        attempt()
        print(what, "allowed")
    except PermissionError:
        print(what, "denied")
"""


def test_two_vms_cannot_reach_each_other(daemon: Daemon) -> None:
    """Each VM's QEMU runs under its own uid: a process with VM a's ids can neither signal
    VM b's QEMU, nor read its memory, its disk or its run directory (all of them denied)."""
    daemon.create("a", memory_mib=128)
    daemon.create("b", memory_mib=128)
    qemu_a, qemu_b = psutil.Process(daemon.qemu_pid("a")), psutil.Process(daemon.qemu_pid("b"))
    uid_a = qemu_a.uids().real
    assert uid_a != qemu_b.uids().real
    disk_b = next((daemon.data_dir / "disks" / "b").glob("*.qcow2"))
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to probe as another uid")
    args = [SYSTEM_PYTHON, "-c", _PROBE, str(qemu_b.pid), str(disk_b), str(daemon.run_dir("b"))]
    out = subprocess.run(
        args, user=uid_a, group=uid_a, extra_groups=[], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:4] == ["signal denied", "disk denied", "run dir denied", "memory denied"]
