"""The ``Driver`` protocol every instance back-end implements (QEMU, fake, later OCI).

A driver owns the processes of its instances on this host and nothing else: it
never reads or writes the store (the agent does). Contract for implementations:
- ``start`` leaves the instance running (or raises, leaving nothing behind);
- ``stop``/``delete`` are idempotent: an unknown or stopped instance is success;
- ``pause``/``resume``/``reset`` on an instance that is not running raise
  ``InvalidStateError``;
- ``adopt`` re-attaches to a process that outlived the agent and reports what it
  finds, never starting anything;
- every power change, whoever caused it, is also reported through ``events``.
tests/contract/test_driver.py runs the same suite against every driver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from virtfleet.model.instance import (
    Accel,
    DiskLimits,
    DiskSpec,
    InstanceSpec,
    InstanceStatus,
    NicSpec,
)

if TYPE_CHECKING:
    from virtfleet.drivers.qemu.blockjobs import BlockJobs

# Given a container init's PID, attach its network namespace to the instance's networks.
JoinNetns = Callable[[int], Awaitable[None]]
EventKind = Literal["running", "paused", "stopped", "crashed", "reset", "powerdown", "panicked"]


@dataclass(frozen=True)
class DriverInfo:
    name: str
    available: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UefiFiles:
    """A UEFI VM's flash: the shared read-only code image and the VM's own variable store."""

    code: Path
    vars: Path
    secure: bool  # Secure Boot build: needs SMM and secure-only flash writes


@dataclass(frozen=True)
class LaunchContext:
    """Everything the agent resolved for one start: accel, disk files, cgroup."""

    accel: Accel
    accel_reason: str
    disks: dict[str, Path]
    cgroup_procs: tuple[Path, ...] = ()
    hostname: str = ""
    taps: dict[int, str] = field(default_factory=dict)  # NIC index -> tap made by the agent
    cidata: Path | None = None  # a NoCloud seed ISO to attach as a read-only CD-ROM
    join_netns: JoinNetns | None = None  # containers: veths into the init's netns (its PID)
    uefi: UefiFiles | None = None  # None: the machine's default BIOS (SeaBIOS)
    tpm_state: Path | None = None  # a TPM's state directory (with the disks); None: no TPM
    driver_iso_fd: int | None = None  # the driver ISO the agent opened (read-only), if any


@dataclass(frozen=True)
class DriverEvent:
    name: str
    kind: EventKind
    reason: str = ""
    requested: bool = False  # the exit was asked for through stop/delete, not a surprise
    exit_code: int | None = None  # what an application container's command exited with


class Driver(Protocol):
    name: str

    def info(self) -> DriverInfo: ...

    def validate(self, spec: InstanceSpec) -> None:
        """Raise ``InvalidInputError`` if this driver cannot run ``spec`` here."""
        ...

    async def start(self, spec: InstanceSpec, ctx: LaunchContext) -> InstanceStatus: ...

    async def stop(self, name: str, *, force: bool = False, timeout_s: float = 30.0) -> None: ...

    async def pause(self, name: str) -> None: ...

    async def resume(self, name: str) -> None: ...

    async def reset(self, name: str) -> None: ...

    async def delete(self, name: str) -> None: ...

    async def status(self, name: str) -> InstanceStatus: ...

    async def adopt(self, name: str) -> InstanceStatus: ...

    async def list(self) -> list[str]: ...

    def events(self) -> AsyncIterator[DriverEvent]: ...

    def console_socket(self, name: str) -> Path | None: ...

    def console_log(self, name: str) -> Path | None: ...

    async def close(self) -> None: ...


@runtime_checkable
class SupportsScreendump(Protocol):
    async def screendump(self, name: str, path: Path) -> None: ...


@runtime_checkable
class SupportsGraphics(Protocol):
    """A driver whose instances have a screen: a VNC server on a Unix socket, screenshots."""

    def vnc_socket(self, name: str) -> Path | None:
        """The VNC Unix socket of a running or paused instance, else None."""
        ...

    async def screenshot(self, name: str) -> bytes:
        """The screen as PNG; ``InvalidStateError`` unless running or paused."""
        ...


@runtime_checkable
class SupportsVmSnapshots(Protocol):
    """A driver that snapshots a running (or paused) VM's disks, and its RAM, without a stop.

    The host owns the files and their names (host/snapshots.py): it creates each new
    overlay (an empty qcow2 over the disk's current file, under the name that file is about
    to get) and renames files afterwards; the driver only moves the running VM. A stopped
    VM's snapshots are file operations and never reach the driver. Every call on a VM that
    is not running or paused raises ``InvalidStateError``; a disk the VM does not have,
    ``NotFoundError``.
    """

    async def snapshot_disks(
        self,
        name: str,
        overlays: Mapping[str, Path],
        state: Path | None = None,
        in_pause: Callable[[], Awaitable[None]] | None = None,
    ) -> float | None:
        """Make each ``overlays[disk]`` that disk's active layer, all at one instant, without
        pausing the guest; with ``state``, also write RAM and device state into that file and
        switch in the save's final pause, whose length (ms) is returned (else None), running
        ``in_pause`` in that pause first (the host copies what must match the saved state).
        On failure the VM runs on its old layers."""
        ...

    async def merge_disk(self, name: str, disk: str, backing: str) -> None:
        """Copy the data of the layer below ``disk``'s active layer up into it; the active
        layer then sits on ``backing`` (a qcow2 path; "": on nothing)."""
        ...

    def defer_start(self, name: str) -> None:
        """The next ``start`` of ``name`` waits for ``load_state`` instead of booting."""
        ...

    async def load_state(self, name: str, state: Path) -> None:
        """Load a ``state`` written by ``snapshot_disks`` into ``name``, started after
        ``defer_start`` with the same devices; the guest then runs on from that moment."""
        ...


@runtime_checkable
class SupportsBlockJobs(Protocol):
    """A driver whose running VMs' block layer the host drives itself (pull-mode backups:
    fleecing, dirty bitmaps, an NBD export)."""

    def block_jobs(self, name: str) -> BlockJobs | None:
        """The block layer of a running or paused VM, else None."""
        ...

    def nbd_socket(self, name: str) -> Path:
        """Where the VM may serve NBD: a root-only path (the socket reads its disks)."""
        ...


@runtime_checkable
class SupportsLiveResources(Protocol):
    """A driver that changes a running instance's resources without a reboot.

    Each call either takes effect or raises leaving the instance as it was (a
    half-added device is removed again); none of them waits for the guest to
    use what it got, except removals, which wait until the guest let go.
    """

    async def set_memory(self, name: str, target_mib: int) -> None:
        """Move the balloon so the guest has ``target_mib`` (at most its boot RAM)."""
        ...

    async def set_vcpus(self, name: str, count: int) -> None:
        """Hot-add or hot-remove vCPUs until ``count`` are present (up to maxcpus)."""
        ...

    async def add_disk(self, name: str, disk: DiskSpec, path: Path) -> None: ...

    async def remove_disk(self, name: str, disk: str) -> None: ...

    async def grow_disk(self, name: str, disk: str, size_bytes: int) -> None: ...

    async def set_disk_limits(self, name: str, disk: str, limits: DiskLimits | None) -> None: ...

    async def add_nic(self, name: str, nic_name: str, nic: NicSpec) -> None: ...

    async def remove_nic(self, name: str, nic_name: str) -> None: ...

    async def live_stats(self, name: str) -> dict[str, Any]:
        """What the hypervisor sees now: balloon actual, guest memory statistics, vCPUs."""
        ...
