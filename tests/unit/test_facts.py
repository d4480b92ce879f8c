"""Host facts without touching the host: parsers, texts, check levels, cgroup layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from virtfleet.errors import HostError, InvalidNameError
from virtfleet.host import kvmprobe
from virtfleet.host.facts import (
    detect_iommu,
    detect_kvm_module,
    host_check,
    host_warnings,
    parse_cpuinfo,
    parse_help_names,
    parse_qemu_version,
    read_nested,
    recommend,
    version_tuple,
)
from virtfleet.model.host import HostFacts, KvmProbe
from virtfleet.util.cgroups import (
    CgroupLayout,
    CgroupManager,
    cpu_weight_to_shares,
    layout_from_mounts,
    parse_mountinfo,
)

INTEL = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu vme de pse tsc msr pae mce vmx smx est tm2 ssse3 sse4_1 avx2

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu vme de pse tsc msr pae mce vmx smx est tm2 ssse3 sse4_1 avx2
"""

AMD = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce svm extapic cr8_legacy npt
"""

NESTED_GUEST = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme de pse tsc sse sse2 hypervisor lahf_lm avx512f
"""

Lines = list[dict[str, Any]]  # JSON lines of the KVM probe child

QEMU_10 = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright..."
QEMU_7 = "QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)\nCopyright..."

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_COMOUNTED = """\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:8 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory
"""
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
NO_CGROUPS = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"


def facts(**overrides: object) -> HostFacts:
    """A healthy KVM host; tests override what they break."""
    base: dict[str, object] = {
        "cpu_vendor": "Intel",
        "virt_flags": ["vmx"],
        "kvm": KvmProbe(device_present=True, usable=True, reason="vCPU ran to HLT in 0.4 ms"),
        "qemu_path": "/usr/bin/qemu-system-x86_64",
        "qemu_version": "10.0.2",
        "qemu_img_path": "/usr/bin/qemu-img",
        "cgroup_mode": "v2",
        "iommu": True,
        "nested": True,
        "firmware": {"uefi": "/usr/share/OVMF/OVMF_CODE_4M.fd", "uefi-secure": "/x/sb.fd"},
        "swtpm_path": "/usr/bin/swtpm",
    }
    base.update(overrides)
    return HostFacts.model_validate(base)


BROKEN_KVM = KvmProbe(
    device_present=True,
    usable=False,
    reason="KVM_RUN did not complete within 3.0 s: vCPUs hang on this host; using TCG",
)


# --- parsers -----------------------------------------------------------------


def test_parse_cpuinfo_intel() -> None:
    """An Intel CPU with VT-x yields vendor Intel, its model name and the vmx flag."""
    cpu = parse_cpuinfo(INTEL)
    assert (cpu.vendor, cpu.model) == ("Intel", "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz")
    assert cpu.virt_flags == ["vmx"]
    assert not cpu.hypervisor


def test_parse_cpuinfo_amd() -> None:
    """An AMD CPU with AMD-V yields vendor AMD and the svm flag."""
    cpu = parse_cpuinfo(AMD)
    assert (cpu.vendor, cpu.virt_flags) == ("AMD", ["svm"])


def test_parse_cpuinfo_without_virt_flags() -> None:
    """A VM without nested virtualization has no vmx/svm but the hypervisor flag."""
    cpu = parse_cpuinfo(NESTED_GUEST)
    assert cpu.virt_flags == []
    assert cpu.hypervisor


def test_parse_cpuinfo_empty() -> None:
    """Unreadable or foreign cpuinfo gives empty facts instead of an exception."""
    cpu = parse_cpuinfo("")
    assert (cpu.vendor, cpu.model, cpu.virt_flags) == ("", "", [])


@pytest.mark.parametrize(
    ("text", "version"),
    [(QEMU_10, "10.0.2"), (QEMU_7, "7.2.15"), ("QEMU emulator version 9.0\n", "9.0"), ("", None)],
    ids=["debian-10.0.2", "debian-7.2.15", "two-part", "empty"],
)
def test_parse_qemu_version(text: str, version: str | None) -> None:
    """The version number is taken from the first line of `qemu --version`."""
    assert parse_qemu_version(text) == version


def test_version_tuple_orders_versions() -> None:
    """Versions compare numerically, so 10.0 is not below 9.0."""
    assert version_tuple("10.0.2") > version_tuple("9.0") > version_tuple("8.2.9")
    assert version_tuple("9.1-rc0") == (9,)
    assert version_tuple(None) == ()


# --- sysfs readers on fake trees ----------------------------------------------


def test_read_nested_and_kvm_module(tmp_path: Path) -> None:
    """nested=Y of kvm_intel reads as True; no vendor module means None."""
    assert read_nested(tmp_path) is None
    assert detect_kvm_module(tmp_path) is None
    params = tmp_path / "kvm_intel" / "parameters"
    params.mkdir(parents=True)
    (params / "nested").write_text("Y\n")
    (tmp_path / "kvm_pvm").mkdir()
    assert read_nested(tmp_path) is True
    assert detect_kvm_module(tmp_path) == "kvm_intel"
    (params / "nested").write_text("0\n")
    assert read_nested(tmp_path) is False


def test_detect_iommu(tmp_path: Path) -> None:
    """An IOMMU shows as a /sys/class/iommu entry or an ACPI DMAR/IVRS table."""
    assert not detect_iommu(tmp_path)
    tables = tmp_path / "firmware" / "acpi" / "tables"
    tables.mkdir(parents=True)
    (tables / "IVRS").write_text("")
    assert detect_iommu(tmp_path)


# --- warnings and recommendation -----------------------------------------------


def test_old_qemu_warns_about_migration() -> None:
    """QEMU below 9.0 produces the migration-corruption warning with the fix."""
    warnings = host_warnings(facts(qemu_version="7.2.15"))
    assert warnings == [
        "QEMU 7.2.15 is below 9.0: live migration of busy guests under TCG corrupts memory; "
        "install QEMU >= 9.0 (bookworm-backports)"
    ]


def test_warnings_for_missing_pieces() -> None:
    """Missing QEMU, missing /dev/kvm and missing cgroups each get a warning."""
    warnings = host_warnings(
        facts(qemu_path=None, qemu_version=None, kvm=KvmProbe(), cgroup_mode="none")
    )
    assert any("not found" in w and "QEMU" in w for w in warnings)
    assert any("/dev/kvm missing" in w for w in warnings)
    assert any("cgroup" in w for w in warnings)


def test_recommend_kvm_usable() -> None:
    """A working KVM means hardware-assisted virtualization is used, nothing to buy."""
    text = recommend(facts())
    assert "hardware-assisted virtualization (Intel VT-x)" in text
    assert "TCG" not in text


def test_recommend_device_but_probe_failed() -> None:
    """A /dev/kvm that cannot run guests means TCG, the slowdown, and how to fix it."""
    text = recommend(facts(virt_flags=[], cpu_hypervisor=True, kvm=BROKEN_KVM))
    assert "TCG binary translation" in text
    assert "5-20x slower" in text
    assert "VT-x/AMD-V in the firmware" in text
    assert "nested virtualization in the parent hypervisor" in text
    assert "vCPUs hang on this host" in text


def test_recommend_flags_but_no_device() -> None:
    """VT-x present but /dev/kvm absent points at loading the kvm module."""
    text = recommend(facts(kvm=KvmProbe()))
    assert "modprobe kvm_intel" in text


def test_recommend_no_flags() -> None:
    """Without vmx/svm: a VM is told about nested virtualization, bare metal about firmware."""
    in_vm = recommend(facts(virt_flags=[], cpu_hypervisor=True, kvm=KvmProbe()))
    bare = recommend(facts(virt_flags=[], cpu_hypervisor=False, kvm=KvmProbe()))
    assert "No special hardware is required" in in_vm
    assert "nested virtualization in the parent hypervisor" in in_vm
    assert "firmware (BIOS/UEFI)" in bare


def test_recommend_mentions_missing_qemu() -> None:
    """Without QEMU the recommendation says to install it first."""
    assert "Install QEMU >= 9.0 first" in recommend(facts(qemu_path=None, qemu_version=None))


# --- host check rows -----------------------------------------------------------


def levels(f: HostFacts) -> dict[str, str]:
    return {check.name: check.level for check in host_check(f)}


def test_host_check_healthy_host_all_ok() -> None:
    """A KVM host with QEMU >= 9, IOMMU and cgroups passes every check."""
    checks = host_check(facts())
    assert all(check.ok and check.level == "ok" for check in checks)
    assert {"qemu", "qemu-img", "kvm", "cgroups", "iommu"} <= {c.name for c in checks}


def test_host_check_levels_for_problems() -> None:
    """Old or missing QEMU fails; broken KVM, no flags, no IOMMU, no cgroups warn."""
    broken = facts(
        qemu_version="8.2.2", virt_flags=[], kvm=BROKEN_KVM, iommu=False, cgroup_mode="none"
    )
    got = levels(broken)
    assert got["qemu"] == "fail"
    assert (got["kvm"], got["cpu virtualization"], got["iommu"], got["cgroups"]) == ("warn",) * 4
    assert levels(facts(qemu_path=None, qemu_version=None, qemu_img_path=None))["qemu-img"] == (
        "fail"
    )
    assert not next(c for c in host_check(broken) if c.name == "kvm").ok


def test_host_check_lists_the_firmware_found_and_names_the_missing_package() -> None:
    """The firmware row names each UEFI mode found with its code image; a host without
    OVMF warns with the package to install (BIOS VMs still run)."""
    ok = next(c for c in host_check(facts()) if c.name == "firmware")
    assert ok.level == "ok" and "uefi (/usr/share/OVMF/OVMF_CODE_4M.fd)" in ok.detail
    assert "uefi-secure (/x/sb.fd)" in ok.detail
    bare = next(c for c in host_check(facts(firmware={})) if c.name == "firmware")
    assert bare.level == "warn" and "uefi, uefi-secure unavailable" in bare.detail
    assert "'ovmf'" in bare.detail


def test_host_check_names_the_tpm_emulator_or_the_package_to_install() -> None:
    """VMs with a TPM need swtpm: found, the row names it; missing, it warns with the fix."""
    assert next(c for c in host_check(facts()) if c.name == "tpm").detail.endswith("swtpm")
    none = next(c for c in host_check(facts(swtpm_path=None)) if c.name == "tpm")
    assert none.level == "warn" and "apt-get install swtpm" in none.detail


# --- KVM probe: ioctl numbers and interpretation ---------------------------------


def test_kvm_ioctl_numbers_match_linux_headers() -> None:
    """_IO/_IOR/_IOW encodings equal the values in linux/kvm.h on x86_64."""
    assert kvmprobe.KVM_GET_API_VERSION == 0xAE00
    assert kvmprobe.KVM_CREATE_VM == 0xAE01
    assert kvmprobe.KVM_GET_VCPU_MMAP_SIZE == 0xAE04
    assert kvmprobe.KVM_CREATE_VCPU == 0xAE41
    assert kvmprobe.KVM_SET_USER_MEMORY_REGION == 0x4020AE46
    assert kvmprobe.KVM_RUN == 0xAE80
    assert (kvmprobe.KVM_GET_REGS, kvmprobe.KVM_SET_REGS) == (0x8090AE81, 0x4090AE82)
    assert (kvmprobe.KVM_GET_SREGS, kvmprobe.KVM_SET_SREGS) == (0x8138AE83, 0x4138AE84)


def test_probe_interpretation() -> None:
    """Child output maps to usable/unusable with the documented plain-language reasons."""
    stages: Lines = [{"stage": "open"}, {"stage": "KVM_RUN", "phase": "real-mode"}]
    usable, reason = kvmprobe._interpret(stages, True, 3.0)
    assert (usable, reason) == (
        False,
        "KVM_RUN did not complete within 3.0 s: vCPUs hang on this host; using TCG",
    )
    run_ms = {"real-mode": 0.25, "64-bit FPU/SSE": 0.15}
    ok: Lines = [*stages, {"ok": True, "run_ms": run_ms}]
    assert kvmprobe._interpret(ok, False, 3.0) == (
        True,
        "vCPU ran to HLT in 0.4 ms (real-mode and 64-bit FPU/SSE code)",
    )
    denied: Lines = [{"stage": "open"}, {"ok": False, "stage": "open", "errno": 13, "error": "x"}]
    assert "permission denied" in kvmprobe._interpret(denied, False, 3.0)[1]
    crash: Lines = [{"ok": False, "stage": "KVM_RUN", "phase": "64-bit FPU/SSE", "exit": "X"}]
    assert "real guests would stop at boot" in kvmprobe._interpret(crash, False, 3.0)[1]


# --- cgroup layout and limit files (fake trees) -----------------------------------


def test_cgroup_layouts_from_mountinfo() -> None:
    """mountinfo of hybrid, v1 (co-mounted cpu,cpuacct), v2 and no-cgroup hosts."""
    hybrid = layout_from_mounts(parse_mountinfo(HYBRID_MOUNTINFO))
    assert hybrid.mode == "hybrid"
    assert hybrid.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert hybrid.unified == Path("/sys/fs/cgroup/unified")
    v1 = layout_from_mounts(parse_mountinfo(V1_COMOUNTED))
    assert v1.mode == "v1"
    assert v1.v1["cpu"] == v1.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert layout_from_mounts(parse_mountinfo(V2_MOUNTINFO)).mode == "v2"
    assert layout_from_mounts(parse_mountinfo(NO_CGROUPS)).mode == "none"


def _fake_v2(root: Path, offered: str) -> CgroupManager:
    """A cgroup2 tree as the kernel would show it to a fresh parent cgroup."""
    for path in (root, root / "virtfleet-0123abcd"):
        path.mkdir(exist_ok=True)
        (path / "cgroup.controllers").write_text(offered)
        (path / "cgroup.subtree_control").write_text("")
    return CgroupManager("virtfleet-0123abcd", CgroupLayout(mode="v2", unified=root))


def test_cgroup_v2_writes_unified_files(tmp_path: Path) -> None:
    """On v2 the manager enables controllers and writes cpu.max, memory.max, pids.max."""
    manager = _fake_v2(tmp_path, "cpuset cpu io memory pids\n")
    assert manager.available
    cg = manager.create("vm1", cpu_quota_pct=50, cpu_weight=200, memory_max_bytes=1 << 26)
    cg.set_pids_max(64)
    d = tmp_path / "virtfleet-0123abcd" / "vm1"
    assert cg.procs_files == (d / "cgroup.procs",)
    assert (tmp_path / "virtfleet-0123abcd" / "cgroup.subtree_control").read_text() == (
        "+cpu +memory +pids"
    )
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "cpu.weight").read_text() == "200"
    assert (d / "memory.max").read_text() == str(1 << 26)
    assert (d / "pids.max").read_text() == "64"
    cg.set_memory_max(None)
    assert (d / "memory.max").read_text() == "max"


def test_cgroup_v2_missing_controller_is_skipped(tmp_path: Path) -> None:
    """A controller the host does not offer is skipped and named in reason, not fatal."""
    cg = _fake_v2(tmp_path, "memory pids\n").create("vm1", cpu_quota_pct=50, memory_max_bytes=4096)
    assert set(cg.dirs) == {"memory", "pids"}
    assert "cpu" in cg.reason
    assert (tmp_path / "virtfleet-0123abcd" / "vm1" / "memory.max").read_text() == "4096"
    with pytest.raises(HostError):
        cg.set_cpu_quota(10)


def test_cgroup_v1_writes_controller_files(tmp_path: Path) -> None:
    """On v1 each controller gets a directory and the cfs/shares/limit_in_bytes files."""
    v1 = {c: tmp_path / c for c in ("cpu", "cpuacct", "memory", "pids")}
    for path in v1.values():
        path.mkdir()
    manager = CgroupManager("virtfleet-0123abcd", CgroupLayout(mode="hybrid", v1=v1))
    cg = manager.create("vm1", cpu_quota_pct=150, cpu_weight=50, memory_max_bytes=4096)
    assert len(cg.procs_files) == 4
    cpu = tmp_path / "cpu" / "virtfleet-0123abcd" / "vm1"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.shares").read_text() == str(cpu_weight_to_shares(50)) == "512"
    mem = tmp_path / "memory" / "virtfleet-0123abcd" / "vm1" / "memory.limit_in_bytes"
    assert mem.read_text() == "4096"
    cg.set_cpu_quota(None)
    assert (cpu / "cpu.cfs_quota_us").read_text() == "-1"


def test_cgroups_unavailable_degrades() -> None:
    """Without a hierarchy: available is False, create() gives no procs files, setters refuse."""
    manager = CgroupManager("virtfleet-0123abcd", CgroupLayout(mode="none"))
    assert not manager.available
    assert manager.reason
    cg = manager.create("vm1", memory_max_bytes=1 << 20)
    assert cg.procs_files == ()
    assert cg.cpu_usage_ns() is None and cg.memory_current_bytes() is None
    assert cg.remove()
    with pytest.raises(HostError):
        cg.set_memory_max(1 << 20)


def test_cgroup_names_are_single_path_components() -> None:
    """Parent and instance names cannot escape the hierarchy."""
    with pytest.raises(InvalidNameError):
        CgroupManager("../etc", CgroupLayout(mode="none"))
    with pytest.raises(InvalidNameError):
        CgroupManager("virtfleet-0123abcd", CgroupLayout(mode="none")).create("a/b")


def test_machine_types_and_accelerators_from_qemu_help() -> None:
    """The names of ``-machine help`` and ``-accel help`` listings, headers dropped."""
    machines = (
        "Supported machines are:\n"
        "microvm              microvm (i386)\n"
        "pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-9.2)\n"
        "pc-i440fx-9.2        Standard PC (i440FX + PIIX, 1996) (default)\n"
        "q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-9.2)\n"
    )
    accels = "Accelerators supported in QEMU binary:\ntcg\nkvm\n"
    assert parse_help_names(machines) == ["microvm", "pc", "pc-i440fx-9.2", "q35"]
    assert parse_help_names(accels) == ["kvm", "tcg"]
