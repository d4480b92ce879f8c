"""The real host: KVM probe in a child process, host facts, and per-instance cgroups."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from virtfleet.host.facts import detect_kvm_module, parse_cpuinfo, probe_host
from virtfleet.host.kvmprobe import KVM_DEVICE, probe_kvm, run_probe
from virtfleet.util.cgroups import CgroupManager

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TIMEOUT_S = 3.0
HANG = "KVM_RUN did not complete within 3.0 s: vCPUs hang on this host; using TCG"


def _needs_kvm_device() -> None:
    if not os.path.exists(KVM_DEVICE):
        pytest.skip(f"{KVM_DEVICE} missing on this host")


def _software_only_kvm() -> bool:
    """/dev/kvm backed by something other than VT-x/AMD-V (e.g. kvm_pvm in a cloud VM)."""
    cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    return not cpu.virt_flags and detect_kvm_module() not in ("kvm_intel", "kvm_amd")


def _probe_children() -> list[psutil.Process]:
    kids = psutil.Process().children(recursive=True)
    return [p for p in kids if "virtfleet.host.kvmprobe" in " ".join(_cmdline(p))]


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def test_probe_kvm_decides_within_timeout() -> None:
    """probe_kvm answers within timeout + 2 s and its verdict matches this host's KVM."""
    _needs_kvm_device()
    start = time.monotonic()
    result = probe_kvm(TIMEOUT_S)
    assert time.monotonic() - start < TIMEOUT_S + 2
    assert result.device_present
    assert result.elapsed_ms is not None
    if _software_only_kvm():  # this sandbox: KVM exists but cannot run real guests
        assert not result.usable
        assert result.reason == HANG or "real guests would stop at boot" in result.reason
    if result.usable:
        assert result.reason.startswith("vCPU ran to HLT in ")
    else:
        assert result.reason.endswith("using TCG")


def test_probe_kills_a_vcpu_that_never_halts() -> None:
    """A guest spinning in `jmp $` is SIGKILLed at the timeout and reaped, not leaked."""
    _needs_kvm_device()
    start = time.monotonic()
    result = run_probe(1.0, ["--spin"])
    assert time.monotonic() - start < 3.0
    assert not result.usable
    assert "did not complete within 1.0 s" in result.reason
    deadline = time.monotonic() + 5.0
    while _probe_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _probe_children() == []


def test_probe_host_finds_qemu_9_or_newer() -> None:
    """probe_host reads QEMU >= 9 and a consistent KVM verdict, warnings and recommendation."""
    facts = probe_host(kvm_timeout_s=TIMEOUT_S)
    assert facts.qemu_path and facts.qemu_img_path
    assert facts.qemu_major >= 9, facts.qemu_version
    assert not any("below 9.0" in w for w in facts.warnings)
    assert facts.cgroup_mode in ("v1", "v2", "hybrid")
    assert facts.recommendation
    assert facts.default_accel == ("kvm" if facts.kvm.usable else "tcg")


@pytest.fixture
def manager() -> Iterator[CgroupManager]:
    if os.geteuid() != 0:
        pytest.skip("creating cgroups needs root")
    mgr = CgroupManager(f"virtfleet-{secrets.token_hex(4)}")
    if not mgr.available:
        pytest.skip(f"cgroups unavailable: {mgr.reason}")
    yield mgr
    mgr.remove_parent(timeout_s=2.0)


def _limit_values(dirs: dict[str, Path], unified: bool) -> tuple[str, str]:
    """(memory limit, "quota period") as the kernel reports them."""
    if unified:
        return (dirs["memory"] / "memory.max").read_text(), (dirs["cpu"] / "cpu.max").read_text()
    quota = (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip()
    period = (dirs["cpu"] / "cpu.cfs_period_us").read_text().strip()
    return (dirs["memory"] / "memory.limit_in_bytes").read_text(), f"{quota} {period}"


def test_cgroup_holds_process_and_limits(manager: CgroupManager) -> None:
    """A process that writes its PID into procs_files before exec is in the cgroup, limited."""
    cg = manager.create("itest", memory_max_bytes=64 << 20, cpu_quota_pct=50)
    assert cg.procs_files
    script = 'for f in "$@"; do echo $$ > "$f" || exit 97; done; exec sleep 30'
    proc = subprocess.Popen(["sh", "-c", script, "sh", *map(str, cg.procs_files)])
    try:
        deadline = time.monotonic() + 5
        while proc.pid not in cg.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        for procs in cg.procs_files:
            assert str(proc.pid) in procs.read_text().split()
        memory, cpu = _limit_values(cg.dirs, cg.unified)
        assert memory.strip() == str(64 << 20)
        assert cpu.strip() == "50000 100000"
        assert cg.cpu_usage_ns() is not None
        assert cg.memory_current_bytes() is not None
    finally:
        proc.kill()
        proc.wait()
    assert cg.remove()
    assert not any(path.exists() for path in cg.paths)
    assert cg.remove()  # idempotent
