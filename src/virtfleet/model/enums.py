"""The instance enums (accelerator, device model, firmware, restart policy, power states).

Pure and free of pydantic, so the CLI can offer them as option choices without
importing the models; ``model.instance`` re-exports them.
"""

from __future__ import annotations

from enum import StrEnum


class Accel(StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class DeviceModel(StrEnum):
    """virtio = paravirtualized devices; emulated = e1000 + IDE/AHCI for legacy guests."""

    VIRTIO = "virtio"
    EMULATED = "emulated"


class Firmware(StrEnum):
    """bios = SeaBIOS; uefi = OVMF; uefi-secure = OVMF with Secure Boot (q35 + SMM)."""

    BIOS = "bios"
    UEFI = "uefi"
    UEFI_SECURE = "uefi-secure"


class GuestOs(StrEnum):
    """The guest's OS family, for the defaults and tuning it needs (Windows: UEFI Secure
    Boot, a TPM, local-time RTC, Hyper-V enlightenments on KVM)."""

    LINUX = "linux"
    WINDOWS = "windows"
    OTHER = "other"  # BSDs and the rest: tuned like linux (UTC clock, no enlightenments)


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
