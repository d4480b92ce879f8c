"""Host facts: what this machine can do for virtualization. Pure data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class KvmProbe(BaseModel):
    """Result of really running a vCPU through /dev/kvm."""

    device_present: bool = False
    usable: bool = False
    reason: str = ""
    elapsed_ms: float | None = None


class HostFacts(BaseModel):
    hostname: str = ""
    cpu_vendor: str = ""
    cpu_model: str = ""
    cpus: int = 1
    memory_mib: int = 0
    virt_flags: list[str] = Field(default_factory=list)  # "vmx" (Intel VT-x) / "svm" (AMD-V)
    cpu_hypervisor: bool = False  # cpuinfo "hypervisor" flag: this host is itself a VM
    kvm_module: str | None = None  # loaded KVM backend: "kvm_intel", "kvm_amd", "kvm_pvm", ...
    nested: bool | None = None
    iommu: bool = False
    kvm: KvmProbe = Field(default_factory=KvmProbe)
    qemu_path: str | None = None
    qemu_version: str | None = None
    qemu_img_path: str | None = None
    cgroup_mode: str = "none"  # "v1", "v2", "hybrid", "none"
    # UEFI modes whose OVMF files are installed -> the code image (bios always works).
    firmware: dict[str, str] = Field(default_factory=dict)
    swtpm_path: str | None = None  # the TPM 2.0 emulator VMs with a TPM need
    warnings: list[str] = Field(default_factory=list)
    recommendation: str = ""
    boot_id: str = ""  # the boot the probe ran in (its KVM verdict holds for that boot)

    @property
    def default_accel(self) -> str:
        return "kvm" if self.kvm.usable else "tcg"

    @property
    def qemu_major(self) -> int:
        try:
            return int((self.qemu_version or "0").split(".")[0])
        except ValueError:
            return 0


CheckLevel = Literal["ok", "warn", "fail"]


class Check(BaseModel):
    """One row of ``virtfleet host check``: fail = VMs cannot run (well) until fixed."""

    name: str
    ok: bool
    level: CheckLevel
    detail: str = ""
