"""Instances: what the user asked for (``InstanceSpec``) and what runs (``InstanceStatus``).

Pure data with validation; no I/O. Units are in field names.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from virtfleet.model.cloudinit import CloudInit
from virtfleet.model.names import NameStr, validate_name

MIN_MEMORY_MIB = 64
MAX_VCPUS = 255


class Accel(StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class DeviceModel(StrEnum):
    """virtio = paravirtualized devices; emulated = e1000 + IDE/AHCI for legacy guests."""

    VIRTIO = "virtio"
    EMULATED = "emulated"


class RestartPolicy(StrEnum):
    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


class PowerState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    CRASHED = "crashed"


class DesiredPower(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    DELETED = "deleted"


class Strict(BaseModel):
    """Base for wire-facing data: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class DiskSpec(Strict):
    name: NameStr = "root"
    size_gib: Annotated[float, Field(gt=0, le=65536)] | None = None
    image: str | None = None
    boot: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "disk name")


class NicSpec(Strict):
    """A NIC. ``user`` is QEMU user-mode networking; ``restrict`` keeps the host unreachable."""

    mode: Literal["user"] = "user"
    restrict: bool = True
    mac: Annotated[str, Field(pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")] | None = None


class BootSpec(Strict):
    """Boot from the first boot disk, or directly from a kernel when ``kernel`` is set."""

    kernel: str | None = None
    initrd: str | None = None
    cmdline: Annotated[str, Field(max_length=4096)] | None = None


class InstanceSpec(Strict):
    """Desired configuration of one instance."""

    name: NameStr
    kind: Literal["vm"] = "vm"
    image: str | None = None
    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    max_vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] | None = None
    memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB, le=16 * 1024 * 1024)] = 256
    disks: list[DiskSpec] = Field(default_factory=list, max_length=16)
    nics: list[NicSpec] = Field(default_factory=list, max_length=8)
    boot: BootSpec = Field(default_factory=BootSpec)
    accel: Accel = Accel.AUTO
    device_model: DeviceModel = DeviceModel.VIRTIO
    restart_policy: RestartPolicy = RestartPolicy.NO
    # A NoCloud seed CD-ROM (CIDATA) is attached when set (model.cloudinit.CloudInit).
    cloud_init: CloudInit | None = None
    guest_agent: bool = False  # a virtio-serial channel for qemu-guest-agent

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "instance name")

    @model_validator(mode="after")
    def _consistent(self) -> InstanceSpec:
        if self.max_vcpus is not None and self.max_vcpus < self.vcpus:
            raise ValueError(f"max_vcpus {self.max_vcpus} is below vcpus {self.vcpus}")
        names = [d.name for d in self.disks]
        if len(names) != len(set(names)):
            raise ValueError("disk names must be unique")
        return self

    def normalized(self) -> InstanceSpec:
        """The spec with defaults made explicit: a root disk from ``image``, one boot disk."""
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


class InstanceStatus(BaseModel):
    """Observed state, written only by the agent."""

    power: PowerState = PowerState.STOPPED
    pid: int | None = None
    accel: Accel | None = None
    accel_reason: str = ""
    reason: str = ""
    qemu_version: str | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    restarts: int = 0
    observed_generation: int = 0
    error_code: str | None = None
    error_message: str | None = None


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
