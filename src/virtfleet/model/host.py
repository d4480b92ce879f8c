"""Host facts (what this machine can do for virtualization) and host records (a member
of the platform as the store knows it: identity, address, facts, capacity, state). Pure data."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
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
    cpu_flags: list[str] = Field(default_factory=list)  # every /proc/cpuinfo flag (migration)
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
    machine_types: list[str] = Field(default_factory=list)  # `qemu -machine help` names
    accelerators: list[str] = Field(default_factory=list)  # `qemu -accel help`: kvm, tcg...
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


class HostState(StrEnum):
    """Whether placement may use a host: ``offline`` when its liveness lease lapsed."""

    ONLINE = "online"
    MAINTENANCE = "maintenance"
    OFFLINE = "offline"


class HostCapacity(BaseModel):
    """What a host offers instances: its size and the limits its overcommit ratios give."""

    cpus: int = 0
    memory_mib: int = 0
    vcpus_limit: int = 0
    memory_limit_mib: int = 0


class HostDisk(BaseModel):
    """A file system the host keeps instance data on (its data directory's)."""

    path: str
    total_bytes: int = 0
    free_bytes: int = 0


class HostRecord(BaseModel):
    """One platform member, ``/hosts/{id}`` in the store, written by that host's daemon.

    ``id`` is the persistent UUID of its data directory (``host.json``), never derived
    from a path; ``state`` is what the host asked for (online or maintenance): readers
    show ``offline`` when its liveness key (on a lease it renews) is gone.
    """

    id: str
    name: str
    api_url: str | None = None
    certificate_fingerprint: str | None = None  # SHA-256 of its TLS certificate, TLS only
    facts: HostFacts = Field(default_factory=HostFacts)
    disks: list[HostDisk] = Field(default_factory=list)
    oci_runtime: str | None = None  # crun/runc, as the container driver chose it
    capacity: HostCapacity = Field(default_factory=HostCapacity)
    state: HostState = HostState.ONLINE
    versions: dict[str, str] = Field(default_factory=dict)  # virtfleet, qemu, python...
    registered_at: datetime | None = None
    alive: bool = False  # set by readers from the liveness key, never stored as true
