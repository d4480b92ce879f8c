"""What this machine offers for virtualization, and what to tell the operator about it.

Owns: reading CPU, KVM, nested-virtualization, IOMMU, memory, QEMU, cgroup and
UEFI firmware facts into a ``HostFacts`` (``probe_host``), the warnings and the plain-language
recommendation ("do I need special hardware?") derived from them, and the
rows of ``virtfleet host check`` (``host_check``).

Must not: cache (callers cache), change host configuration (load modules,
write sysfs), or start VMs -- the only thing it runs is ``qemu --version`` and
the KVM probe child of ``virtfleet.host.kvmprobe``. The parsers and the
text builders are pure functions so they can be unit-tested with fixtures.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from virtfleet.drivers.qemu import firmware
from virtfleet.host.kvmprobe import KVM_DEVICE, probe_kvm
from virtfleet.model.host import Check, CheckLevel, HostFacts
from virtfleet.util.cgroups import detect_mode

MIN_QEMU = (9, 0)
_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon"}
_VIRT_TECH = {"vmx": "Intel VT-x", "svm": "AMD-V"}
_KVM_MODULES = ("kvm_intel", "kvm_amd")
_QEMU_VERSION_RE = re.compile(r"QEMU emulator version (\d+\.\d+(?:\.\d+)?)")
TCG_SLOWDOWN = "expect roughly 5-20x slower CPU-bound work than on hardware virtualization"


@dataclass(frozen=True)
class CpuInfo:
    vendor: str
    model: str
    flags: frozenset[str]

    @property
    def virt_flags(self) -> list[str]:
        return [flag for flag in _VIRT_TECH if flag in self.flags]

    @property
    def hypervisor(self) -> bool:
        return "hypervisor" in self.flags


def parse_cpuinfo(text: str) -> CpuInfo:
    """Vendor, model name and flags of the first CPU in a /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    vendor_id = fields.get("vendor_id", "")
    return CpuInfo(
        vendor=_VENDORS.get(vendor_id, vendor_id),
        model=fields.get("model name", ""),
        flags=frozenset(fields.get("flags", "").split()),
    )


def parse_qemu_version(text: str) -> str | None:
    """'10.0.2' from ``qemu-system-x86_64 --version`` output, None if absent."""
    match = _QEMU_VERSION_RE.search(text)
    return match.group(1) if match else None


def version_tuple(version: str | None) -> tuple[int, ...]:
    """'9.2.1' -> (9, 2, 1); unparsable parts stop the tuple."""
    out: list[int] = []
    for part in (version or "").split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


# --- readers (I/O) -----------------------------------------------------------


def read_nested(sys_module: Path = Path("/sys/module")) -> bool | None:
    """Nested virtualization of kvm_intel/kvm_amd; None when neither is loaded."""
    for module in _KVM_MODULES:
        try:
            value = (sys_module / module / "parameters" / "nested").read_text().strip()
        except OSError:
            continue
        return value.upper() in ("Y", "1")
    return None


def detect_kvm_module(sys_module: Path = Path("/sys/module")) -> str | None:
    """The loaded KVM backend module (kvm_intel, kvm_amd, kvm_pvm, ...)."""
    found = sorted(p.name for p in sys_module.glob("kvm_*") if p.is_dir())
    preferred = [name for name in found if name in _KVM_MODULES]
    return next(iter(preferred or found), None)


def detect_iommu(sys_root: Path = Path("/sys")) -> bool:
    """An IOMMU is active (/sys/class/iommu) or announced by ACPI (DMAR / IVRS)."""
    try:
        if any((sys_root / "class" / "iommu").iterdir()):
            return True
    except OSError:
        pass
    tables = sys_root / "firmware" / "acpi" / "tables"
    return any((tables / name).exists() for name in ("DMAR", "IVRS"))


def find_qemu(qemu_binary: str) -> tuple[str | None, str | None]:
    """(path, version) of the QEMU system emulator; (None, None) if not installed."""
    path = shutil.which(qemu_binary)
    if path is None:
        return None, None
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return path, None
    return path, parse_qemu_version(out.stdout)


def parse_help_names(text: str) -> list[str]:
    """The names a ``qemu -machine help`` / ``-accel help`` listing offers (first word of
    each entry line, headers and aliases' targets dropped), sorted."""
    names = set()
    for line in text.splitlines():
        word = line.split(maxsplit=1)[0] if line.strip() else ""
        if word and not line.startswith(("Supported", "Accelerators", "Use ")):
            names.add(word)
    return sorted(names)


def qemu_catalogue(qemu_path: str | None) -> tuple[list[str], list[str]]:
    """(machine types, accelerators) the emulator was built with; empty if it cannot say."""
    found: list[list[str]] = []
    for option in ("-machine", "-accel"):
        try:
            out = (
                subprocess.run(
                    [qemu_path, option, "help"], capture_output=True, text=True, timeout=10
                )
                if qemu_path
                else None
            )
        except (OSError, subprocess.TimeoutExpired):
            out = None
        found.append(parse_help_names(out.stdout) if out and out.returncode == 0 else [])
    return found[0], found[1]


def find_qemu_img(qemu_path: str | None) -> str | None:
    """qemu-img next to the emulator if there is one, else on PATH."""
    if qemu_path:
        sibling = Path(qemu_path).with_name("qemu-img")
        if os.access(sibling, os.X_OK):
            return str(sibling)
    return shutil.which("qemu-img")


def _read_cpuinfo() -> CpuInfo:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return CpuInfo("", "", frozenset())


# --- derived texts (pure) ----------------------------------------------------


def _kvm_reason(facts: HostFacts) -> str:
    return facts.kvm.reason.removesuffix("; using TCG")


def _virt_tech(facts: HostFacts) -> str:
    names = [_VIRT_TECH[flag] for flag in facts.virt_flags if flag in _VIRT_TECH]
    return " / ".join(names) or "hardware virtualization"


def qemu_warning(facts: HostFacts, qemu_binary: str = "qemu-system-x86_64") -> str | None:
    if facts.qemu_path is None:
        return f"QEMU ({qemu_binary}) not found: install QEMU >= 9.0 (bookworm-backports)"
    if facts.qemu_version is None:
        return f"could not read the QEMU version from '{facts.qemu_path} --version'"
    if version_tuple(facts.qemu_version) < MIN_QEMU:
        return (
            f"QEMU {facts.qemu_version} is below 9.0: live migration of busy guests under TCG "
            "corrupts memory; install QEMU >= 9.0 (bookworm-backports)"
        )
    return None


def host_warnings(facts: HostFacts, qemu_binary: str = "qemu-system-x86_64") -> list[str]:
    """Everything the operator should fix or know, one sentence each."""
    warnings = [w for w in (qemu_warning(facts, qemu_binary),) if w]
    if facts.qemu_img_path is None:
        warnings.append("qemu-img not found: install qemu-utils; disk images cannot be made")
    if not facts.kvm.device_present:
        warnings.append(f"{KVM_DEVICE} missing: VMs run under TCG binary translation")
    elif not facts.kvm.usable:
        warnings.append(f"KVM unusable, VMs run under TCG: {_kvm_reason(facts)}")
    if facts.cgroup_mode == "none":
        warnings.append("no cgroup hierarchy: per-instance CPU/memory limits are not enforced")
    return warnings


def _tcg_fix(facts: HostFacts) -> str:
    """What to change to get from TCG to hardware virtualization."""
    if facts.kvm.device_present:
        backend = facts.kvm_module or "kvm"
        return (
            f"{KVM_DEVICE} exists ({backend}) but cannot run guests: {_kvm_reason(facts)}. "
            "For hardware speed enable VT-x/AMD-V in the firmware (BIOS/UEFI) or, "
            f"{'as this host is itself a VM' if facts.cpu_hypervisor else 'if this host is a VM'}"
            ", enable nested virtualization in the parent hypervisor."
        )
    if facts.virt_flags:
        module = "kvm_amd" if "svm" in facts.virt_flags else "kvm_intel"
        return (
            f"The CPU offers {_virt_tech(facts)} but {KVM_DEVICE} is missing: "
            f"load the KVM module (modprobe {module})."
        )
    if facts.cpu_hypervisor:
        return (
            "This host is a VM whose CPU does not expose VT-x/AMD-V: enable nested "
            "virtualization in the parent hypervisor, or use a bare-metal host, for hardware speed."
        )
    return (
        "The CPU reports no VT-x/AMD-V: enable it in the firmware (BIOS/UEFI) if the CPU "
        "has it, or use a host that does, for hardware speed."
    )


def recommend(facts: HostFacts) -> str:
    """Plain-language answer to "do I need special hardware?"."""
    if facts.kvm.usable:
        text = (
            "No special hardware needed, and none missing: KVM works here, so VMs use "
            f"hardware-assisted virtualization ({_virt_tech(facts)}) at near-native speed."
        )
    else:
        text = (
            "No special hardware is required: VMs run under TCG binary translation; "
            f"{TCG_SLOWDOWN}. {_tcg_fix(facts)}"
        )
    if facts.qemu_path is None:
        text += " Install QEMU >= 9.0 first: without it no VM can start."
    return text


# --- host check rows (pure) --------------------------------------------------


def _check(name: str, level: CheckLevel, detail: str) -> Check:
    return Check(name=name, ok=level == "ok", level=level, detail=detail)


def _qemu_checks(facts: HostFacts) -> list[Check]:
    problem = qemu_warning(facts)
    if problem and facts.qemu_path and facts.qemu_version is None:
        qemu = _check("qemu", "warn", problem)  # installed, version unreadable
    elif problem:
        qemu = _check("qemu", "fail", problem)  # missing, or too old to migrate safely
    else:
        qemu = _check("qemu", "ok", f"QEMU {facts.qemu_version} at {facts.qemu_path}")
    if facts.qemu_img_path is None:
        img = _check("qemu-img", "fail", "qemu-img not found: install qemu-utils")
    else:
        img = _check("qemu-img", "ok", facts.qemu_img_path)
    return [qemu, img]


def _kvm_checks(facts: HostFacts) -> list[Check]:
    if facts.kvm.usable:
        kvm = _check("kvm", "ok", facts.kvm.reason)
    elif facts.kvm.device_present:
        kvm = _check("kvm", "warn", f"unusable, VMs use TCG: {_kvm_reason(facts)}")
    else:
        kvm = _check("kvm", "warn", f"{KVM_DEVICE} missing, VMs use TCG")
    if facts.virt_flags or facts.kvm.usable:
        flags = _check("cpu virtualization", "ok", f"{_virt_tech(facts)}")
    else:
        vm = " (this host is itself a VM)" if facts.cpu_hypervisor else ""
        flags = _check("cpu virtualization", "warn", f"CPU reports neither vmx nor svm{vm}")
    nested = {
        True: "enabled: guests may run KVM themselves",
        False: "disabled: guests cannot run KVM themselves",
        None: "not applicable (kvm_intel/kvm_amd not loaded)",
    }[facts.nested]
    return [kvm, flags, _check("nested virtualization", "ok", nested)]


def _platform_checks(facts: HostFacts) -> list[Check]:
    if facts.iommu:
        iommu = _check("iommu", "ok", "present: PCI passthrough possible")
    else:
        iommu = _check("iommu", "warn", "none: PCI device passthrough unavailable")
    if facts.cgroup_mode == "none":
        cgroups = _check("cgroups", "warn", "none mounted: CPU/memory limits not enforced")
    else:
        cgroups = _check("cgroups", "ok", facts.cgroup_mode)
    resources = f"{facts.cpus} logical CPUs, {facts.memory_mib} MiB memory"
    return [iommu, cgroups, _check("resources", "ok", resources)]


def _firmware_check(facts: HostFacts) -> Check:
    found = ", ".join(f"{mode} ({code})" for mode, code in sorted(facts.firmware.items()))
    missing = sorted({"uefi", "uefi-secure"} - set(facts.firmware))
    if not missing:
        return _check("firmware", "ok", f"bios (SeaBIOS); {found}")
    fix = f"{', '.join(missing)} unavailable: install Debian's 'ovmf' package"
    return _check("firmware", "warn", f"bios (SeaBIOS){'; ' + found if found else ''}; {fix}")


def host_check(facts: HostFacts) -> list[Check]:
    """Rows for ``virtfleet host check``: fail = VMs cannot run (safely) until fixed."""
    checks = [*_qemu_checks(facts), *_kvm_checks(facts), *_platform_checks(facts)]
    return [*checks, _firmware_check(facts), _tpm_check(facts)]


def _tpm_check(facts: HostFacts) -> Check:
    if facts.swtpm_path:
        return _check("tpm", "ok", f"TPM 2.0 emulator {facts.swtpm_path}")
    return _check("tpm", "warn", "swtpm not found: VMs cannot have a TPM (apt-get install swtpm)")


# --- assembly ----------------------------------------------------------------


def probe_host(qemu_binary: str = "qemu-system-x86_64", kvm_timeout_s: float = 3.0) -> HostFacts:
    """Gather all host facts; takes up to ``kvm_timeout_s`` plus a second or so."""
    cpu = _read_cpuinfo()
    qemu_path, qemu_version = find_qemu(qemu_binary)
    machines, accels = qemu_catalogue(qemu_path)
    facts = HostFacts(
        hostname=socket.gethostname(),
        cpu_vendor=cpu.vendor,
        cpu_model=cpu.model,
        cpu_flags=sorted(cpu.flags),
        cpus=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        memory_mib=psutil.virtual_memory().total // (1024 * 1024),
        virt_flags=cpu.virt_flags,
        cpu_hypervisor=cpu.hypervisor,
        kvm_module=detect_kvm_module(),
        nested=read_nested(),
        iommu=detect_iommu(),
        kvm=probe_kvm(kvm_timeout_s),
        qemu_path=qemu_path,
        qemu_version=qemu_version,
        qemu_img_path=find_qemu_img(qemu_path),
        machine_types=machines,
        accelerators=accels,
        cgroup_mode=detect_mode(),
        firmware=firmware.available(),
        swtpm_path=shutil.which("swtpm"),
    )
    facts.warnings = host_warnings(facts, qemu_binary)
    facts.recommendation = recommend(facts)
    return facts
