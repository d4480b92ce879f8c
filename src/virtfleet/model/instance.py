"""Instances: what the user asked for (``InstanceSpec``) and what runs (``InstanceStatus``).

Pure data with validation; no I/O. Units are in field names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from virtfleet.model.cloudinit import CloudInit
from virtfleet.model.enums import Accel as Accel
from virtfleet.model.enums import DesiredPower as DesiredPower
from virtfleet.model.enums import DeviceModel as DeviceModel
from virtfleet.model.enums import Firmware as Firmware
from virtfleet.model.enums import GuestOs as GuestOs
from virtfleet.model.enums import PowerState as PowerState
from virtfleet.model.enums import RestartPolicy as RestartPolicy
from virtfleet.model.names import NameStr, validate_name

MIN_MEMORY_MIB = 64
MAX_VCPUS = 255
START_ORDER_MAX = 10_000
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class Strict(BaseModel):
    """Base for wire-facing data: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


PerSecond = Annotated[int, Field(gt=0, le=2**53)]


class DiskLimits(Strict):
    """I/O throttling of one disk (QEMU throttle group named after the disk); None = unlimited.

    A total limit and a read/write limit of the same kind exclude each other (QEMU's rule).
    """

    iops_total: PerSecond | None = None
    iops_read: PerSecond | None = None
    iops_write: PerSecond | None = None
    bps_total: PerSecond | None = None
    bps_read: PerSecond | None = None
    bps_write: PerSecond | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> DiskLimits:
        for kind in ("iops", "bps"):
            split = getattr(self, f"{kind}_read") or getattr(self, f"{kind}_write")
            if getattr(self, f"{kind}_total") and split:
                raise ValueError(f"{kind}_total excludes {kind}_read/{kind}_write")
        return self


class DiskSpec(Strict):
    name: NameStr = "root"
    size_gib: Annotated[float, Field(gt=0, le=65536)] | None = None
    image: str | None = None
    boot: bool = False
    limits: DiskLimits | None = None
    pool: NameStr | None = None  # the storage pool it lives in; None: the default, ``local``

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "disk name")

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "pool name")


class NicSpec(Strict):
    """A NIC. ``network``: a tap on a virtfleet network (``network`` names it; a unique MAC
    is allocated when absent). ``user``: QEMU user-mode networking, only when asked for;
    ``restrict`` (user mode only) keeps the host and the outside unreachable."""

    mode: Literal["user", "network"] = "user"
    network: str | None = None
    # None: virtio-net for virtio guests, e1000 for emulated ones. vmxnet3 is an emulated
    # NIC too (fully emulated by QEMU; guests need its driver, as Debian's cloud kernel has).
    model: Literal["virtio", "e1000", "vmxnet3", "rtl8139"] | None = None
    restrict: bool = True
    name: NameStr | None = None  # the device id; None = "nic<index>"
    mac: Annotated[str, Field(pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")] | None = None

    @model_validator(mode="after")
    def _network(self) -> NicSpec:
        if self.mode == "network" and not self.network:
            raise ValueError("a network NIC needs the network's name")
        if self.mode == "user" and self.network:
            raise ValueError("network is only for mode 'network' NICs")
        if self.mac is not None and int(self.mac[:2], 16) & 1:
            raise ValueError(f"MAC {self.mac} is a multicast address")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else validate_name(v, "NIC name")


class BootSpec(Strict):
    """Boot from the first boot disk, or directly from a kernel when ``kernel`` is set."""

    kernel: str | None = None
    initrd: str | None = None
    cmdline: Annotated[str, Field(max_length=4096)] | None = None


EnvStr = Annotated[str, Field(max_length=8192, pattern=r"^[A-Za-z_][A-Za-z0-9_]*=")]


class InstanceSpec(Strict):
    """Desired configuration of one instance."""

    name: NameStr
    kind: Literal["vm", "container"] = "vm"
    image: str | None = None
    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    max_vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] | None = None
    memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB, le=16 * 1024 * 1024)] = 256
    # RAM the VM boots with (QEMU -m; the balloon range's top); None = memory_mib.
    max_memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB, le=16 * 1024 * 1024)] | None = None
    min_memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB, le=16 * 1024 * 1024)] | None = None
    cpu_limit_pct: Annotated[float, Field(gt=0, le=100 * MAX_VCPUS)] | None = None  # 100 = 1 core
    cpu_weight: Annotated[int, Field(ge=1, le=10000)] | None = None  # cgroup v2 cpu.weight
    disks: list[DiskSpec] = Field(default_factory=list, max_length=16)
    nics: list[NicSpec] = Field(default_factory=list, max_length=8)
    boot: BootSpec = Field(default_factory=BootSpec)
    accel: Accel = Accel.AUTO
    device_model: DeviceModel = DeviceModel.VIRTIO
    # bios: SeaBIOS; uefi/uefi-secure: OVMF with a per-VM UEFI variable store (host/disks.py).
    firmware: Firmware = Firmware.BIOS
    # A TPM 2.0 (swtpm, its state kept with the disks); needs UEFI firmware.
    tpm: bool = False
    # windows: local-time RTC, Hyper-V enlightenments on KVM; a new one also gets UEFI
    # Secure Boot and a TPM unless it says otherwise (model.defaults).
    os: GuestOs = GuestOs.LINUX
    # windows: an ISO of drivers (e.g. virtio-win) on a CD-ROM beside the disks for Windows
    # setup; an absolute host path, checked like an import's source when the VM is created
    # and opened by the agent at each start (QEMU gets the descriptor, never the path).
    driver_iso: Annotated[str, Field(min_length=2, max_length=4096, pattern=r"^/")] | None = None
    restart_policy: RestartPolicy = RestartPolicy.NO
    pids_max: Annotated[int, Field(ge=8, le=4_194_304)] | None = None  # containers only
    # Containers: "app" runs an imported OCI image's entrypoint/cmd under a small init,
    # "system" the image's /sbin/init; None: app for OCI images, system for the others.
    container_mode: Literal["app", "system"] | None = None
    env: list[EnvStr] = Field(default_factory=list, max_length=256)  # app: added/overridden
    cmd: list[Annotated[str, Field(max_length=4096)]] | None = Field(None, max_length=256)
    # A NoCloud seed CD-ROM (CIDATA) is attached when set (model.cloudinit.CloudInit).
    cloud_init: CloudInit | None = None
    guest_agent: bool = False  # a virtio-serial channel for qemu-guest-agent
    # Per-machine identity: the SMBIOS system UUID (QEMU -uuid) and the root of the cloud-init
    # instance-id. A new instance gets a fresh one (model.defaults); None = none (older records).
    uuid: Annotated[str, Field(pattern=UUID_PATTERN)] | None = None
    # Start at boot (service/boot.py): after a host boot, autostart instances start in
    # ascending start_order; the next group waits start_delay_s after this one started.
    autostart: bool = False
    start_order: Annotated[int, Field(ge=0, le=START_ORDER_MAX)] = 0
    start_delay_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    # What `host shutdown-guests` does: stop (ACPI, then forced) or save memory and resume
    # at the next boot (VMs only).
    host_shutdown: Literal["stop", "suspend"] = "stop"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "instance name")

    @model_validator(mode="after")
    def _consistent(self) -> InstanceSpec:
        if self.max_vcpus is not None and self.max_vcpus < self.vcpus:
            raise ValueError(f"max_vcpus {self.max_vcpus} is below vcpus {self.vcpus}")
        if self.memory_mib > self.boot_memory_mib:
            raise ValueError(f"memory_mib {self.memory_mib} is above max_memory_mib")
        if self.min_memory_mib is not None and self.min_memory_mib > self.memory_mib:
            raise ValueError(f"memory_mib {self.memory_mib} is below min_memory_mib")
        names = [d.name for d in self.disks]
        if len(names) != len(set(names)):
            raise ValueError("disk names must be unique")
        wrong = _container_only(self) if self.kind == "vm" else _vm_only(self)
        if wrong:
            raise ValueError(f"{', '.join(wrong)} not valid for kind {self.kind!r}")
        nics = self.nic_names
        if len(nics) != len(set(nics)):
            raise ValueError("NIC names must be unique")
        if problem := firmware_problem(self):
            raise ValueError(problem)
        if problem := driver_iso_problem(self):
            raise ValueError(problem)
        return self

    @property
    def boot_memory_mib(self) -> int:
        """The RAM QEMU is started with; the balloon moves between the minimum and this."""
        return self.max_memory_mib or self.memory_mib

    @property
    def nic_names(self) -> list[str]:
        return [nic.name or f"nic{i}" for i, nic in enumerate(self.nics)]

    def normalized(self) -> InstanceSpec:
        """The spec with defaults made explicit: a root disk from ``image``, one boot disk."""
        if self.kind == "container":
            return self  # a container's root file system is its image, not a disk
        disks = list(self.disks)
        if not disks and self.image:
            disks = [DiskSpec(name="root", image=self.image, boot=True)]
        elif disks and not any(d.boot for d in disks):
            disks[0] = disks[0].model_copy(update={"boot": True})
        if self.image and disks and disks[0].image is None and disks[0].size_gib is None:
            disks[0] = disks[0].model_copy(update={"image": self.image})
        return self.model_copy(update={"disks": disks})

    @property
    def machine(self) -> str:
        """Modern guests get q35 (PCIe); legacy guests the i440fx ``pc`` with IDE."""
        return "q35" if self.device_model is DeviceModel.VIRTIO else "pc"


def firmware_problem(spec: InstanceSpec) -> str:
    """Why ``spec``'s firmware cannot run on its machine type, with the fix; "" if it can."""
    if spec.firmware is Firmware.UEFI_SECURE and spec.device_model is DeviceModel.EMULATED:
        # OVMF's Secure Boot build needs SMM, which only the q35 machine provides here.
        return (
            "firmware uefi-secure needs the q35 machine (device_model virtio); the emulated "
            "i440fx model cannot protect the UEFI variables: use firmware uefi, or virtio"
        )
    if spec.tpm and spec.firmware is Firmware.BIOS:
        # SeaBIOS neither measures the boot into the TPM nor hands it to the guest's loader.
        return "a TPM needs UEFI firmware to be used by the guest: add firmware uefi-secure"
    return ""


def driver_iso_problem(spec: InstanceSpec) -> str:
    """Why ``spec`` cannot have its driver ISO, with the fix; "" if it can (or has none)."""
    if spec.driver_iso is None:
        return ""
    if spec.os is not GuestOs.WINDOWS:
        return "driver_iso is for os windows VMs (Windows setup loads drivers from it)"
    if spec.device_model is not DeviceModel.VIRTIO:
        # The emulated model's IDE disk and e1000 NIC need no drivers beyond Windows' own.
        return "driver_iso is for device_model virtio (the emulated model needs no drivers)"
    return ""


def _vm_only(spec: InstanceSpec) -> list[str]:
    """Fields set to something only a VM can use (a container gets an OS, not hardware)."""
    wrong = ["disks"] if spec.disks else []
    # A container's NICs are veths on a virtual network: no user mode, no device model.
    wrong += ["user-mode nics"] if any(n.mode != "network" for n in spec.nics) else []
    wrong += ["nic model"] if any(n.model is not None for n in spec.nics) else []
    wrong += ["max_vcpus"] if spec.max_vcpus is not None else []
    wrong += ["boot"] if spec.boot != BootSpec() else []
    wrong += ["accel"] if spec.accel is not Accel.AUTO else []
    wrong += ["device_model"] if spec.device_model is not DeviceModel.VIRTIO else []
    wrong += ["firmware"] if spec.firmware is not Firmware.BIOS else []
    wrong += ["tpm"] if spec.tpm else []
    wrong += ["os"] if spec.os is not GuestOs.LINUX else []
    wrong += ["host_shutdown suspend"] if spec.host_shutdown == "suspend" else []
    return wrong


def _container_only(spec: InstanceSpec) -> list[str]:
    wrong = ["pids_max"] if spec.pids_max is not None else []
    wrong += ["container_mode"] if spec.container_mode is not None else []
    return wrong + (["env"] if spec.env else []) + (["cmd"] if spec.cmd is not None else [])


class Ownership(BaseModel):
    """Which host owns an instance, and since which epoch: a fencing token that only a
    store transaction moves (every move adds one). Kept under its own key (see
    ``state.repos``), so the agent's status writes can be conditional on it alone."""

    host: str  # the owning host's id (its ``host.json``)
    epoch: int = 1


class InstanceStatus(BaseModel):
    """Observed state, written only by the agent of the owning host."""

    power: PowerState = PowerState.STOPPED
    pid: int | None = None
    accel: Accel | None = None
    accel_reason: str = ""
    reason: str = ""
    qemu_version: str | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    restarts: int = 0
    # An application container's last exit code (None: running, never exited, or a VM).
    exit_code: int | None = None
    observed_generation: int = 0
    error_code: str | None = None
    error_message: str | None = None
    # The spec as it is live in the running process (None while stopped): the agent
    # diffs the wanted spec against it and applies what can change without a reboot.
    applied: InstanceSpec | None = None
    host: str | None = None  # the host whose agent wrote this status (None: before owners)
    epoch: int = 0  # the ownership epoch it was written under


class DesiredState(BaseModel):
    """What the agent should drive the instance towards.

    Every change bumps ``generation``; the agent answers by writing
    ``InstanceStatus.observed_generation`` (and ``error_*`` when it failed),
    so an operation knows when its request has been carried out.
    """

    power: DesiredPower = DesiredPower.STOPPED
    generation: int = 0
    force: bool = False
    timeout_s: float = 30.0
    restart: int = 0  # the generation at which a restart was asked for (0 = none)
    delete_disks: bool = False
