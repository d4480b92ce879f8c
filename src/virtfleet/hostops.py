"""The host-operations port: the one public door into a host's processes and files.

Owns the ``HostOps`` protocol: every host-side action the control plane asks of a
host's agent (power, snapshots, backups and restores, disk files, live resources,
the guest agent, consoles and screenshots, network realisation, container
exec, limits and rootfs snapshots) and the per-instance exclusive lock
those actions run under. ``service/`` and ``api/`` depend on this protocol only,
never on ``host/``; the in-process implementation is ``host.ops.LocalHostOps``,
wired in the composition root (``app.bootstrap``). In a cluster the door stays
local: the API forwards a request that needs another host's door to that host
(``api.forward``). Arguments are names, ids and pydantic models. Must not
import ``host``, ``drivers``, ``service`` or ``api``.

Exceptions to "serialisable": console paths (a remote door streams the socket
instead) and ``Report`` progress callbacks (a remote door relays them as events).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from virtfleet.errors import ConflictError
from virtfleet.model.backup import RetentionPolicy, Snapshot
from virtfleet.model.container import ExecOutput
from virtfleet.model.guest import GuestInfo
from virtfleet.model.instance import Firmware, InstanceSpec
from virtfleet.model.network import Lease, NetworkSpec, NetworkState
from virtfleet.storage.backup.manifest import BackupManifest
from virtfleet.storage.backup.repo import RepoStats, VerifyReport

Report = Callable[[int, str], Coroutine[Any, Any, None]]  # (percent, message) of a long host action
Pruned = tuple[list[str], list[str], int, int]  # kept ids, removed ids, chunks, bytes freed


class InstanceLock(Protocol):
    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold instance ``name`` exclusively: the agent's reconciles, restart policies,
        snapshots, restores and direct power calls of it never overlap. Not re-entrant."""
        ...


class PowerOps(Protocol):
    """Direct power actions; each takes the instance lock and records the status.

    ``InvalidStateError`` when the instance is in the wrong state; ``NotFoundError``
    when there is no such instance. They leave desired state alone: the API changes
    power by writing desired state, which the owning agent carries out; these are for
    host actions that need power themselves (revert, fencing a copy whose ownership
    moved) and a later desired change still wins."""

    async def start_instance(self, name: str) -> None: ...
    async def stop_instance(self, name: str, force: bool = False, timeout_s: float = 60.0) -> None:
        """Idempotent: a stopped instance is success."""
        ...

    async def restart_instance(
        self, name: str, force: bool = False, timeout_s: float = 60.0
    ) -> None: ...
    async def pause_instance(self, name: str) -> None: ...
    async def resume_instance(self, name: str) -> None: ...


class SnapshotOps(Protocol):
    async def snapshots(self, name: str) -> list[Snapshot]: ...
    async def snapshot_create(self, spec: InstanceSpec, snap: str, memory: bool) -> Snapshot:
        """``AlreadyExistsError`` if taken; on failure nothing is left changed."""
        ...

    async def snapshot_revert(self, spec: InstanceSpec, snap: str) -> None:
        """Disks back to ``snap`` under the instance lock: a running VM is powered off and
        started again; a snapshot with memory resumes the guest where it was."""
        ...

    async def snapshot_delete(self, spec: InstanceSpec, snap: str) -> None:
        """``InUseError`` if ``snap`` has children; the VM's data stays as it is."""
        ...


class BackupOps(Protocol):
    async def backup(self, spec: InstanceSpec, full: bool, report: Report) -> BackupManifest:
        """Back up every disk of ``spec`` (running: live, one point in time)."""
        ...

    async def backup_restore(self, manifest: BackupManifest, vm: str, replace: bool) -> None:
        """Write ``manifest``'s disks as ``vm``'s under its lock (``replace``: over its
        stopped disks, else into an empty directory)."""
        ...

    async def backup_recover(self, specs: list[InstanceSpec]) -> None:
        """Remove what a killed backup or restore left (jobs, nodes, bitmaps, files)."""
        ...

    async def backups(self, instance: str | None = None) -> list[BackupManifest]: ...
    async def backup_get(self, backup_id: str) -> BackupManifest: ...
    async def backup_stats(self) -> RepoStats: ...
    async def backup_verify(self) -> VerifyReport: ...
    async def backup_prune(
        self, instance: str | None, policy: RetentionPolicy, dry_run: bool
    ) -> Pruned: ...
    async def backup_delete(self, backup_id: str) -> None: ...


class DiskOps(Protocol):
    """The instance disk directories (``<data-dir>/disks/<instance>``)."""

    def disk_dir(self, name: str) -> Path: ...
    def disk_path(self, name: str, disk: str) -> Path: ...
    def kept_disks(self, name: str) -> list[str]:
        """The disk files in ``name``'s directory (kept from a deleted instance, or its own)."""
        ...

    def disk_names(self) -> list[str]: ...
    async def disk_clone(
        self,
        name: str,
        disk: str,
        base: Path,
        linked: bool,
        virtual_size: int,
        firmware: Firmware = Firmware.BIOS,
        keep_tpm: bool = False,
        pool: str | None = None,
    ) -> None:
        """Write ``name``'s disk ``disk`` (in storage pool ``pool``; None: the default)
        from the template file ``base``: a qcow2 overlay
        over it (``linked``) or an independent copy; a failure leaves no file. A UEFI
        clone also gets a copy of the variable store kept with ``base``, if any; its TPM
        state only with ``keep_tpm`` (else the clone's TPM is a new one)."""
        ...

    async def machine_to_template(self, name: str, firmware: Firmware, image: Path) -> None:
        """Keep VM ``name``'s UEFI variable store and TPM state with template file ``image``
        (boot entries and keys travel to every clone, the TPM only to those asked to keep
        it); nothing for a VM without them."""
        ...

    def disk_usage(self, name: str) -> int: ...
    def remove_disks(self, name: str) -> None:
        """Idempotent: no directory is success."""
        ...


class ConsoleOps(Protocol):
    def socket_path(self, name: str) -> Path | None:
        """The serial console's Unix socket of a running instance, else None."""
        ...

    def log_path(self, name: str) -> Path | None:
        """The instance's serial log file, else None."""
        ...

    def vnc_socket(self, name: str) -> Path | None:
        """The VNC server's Unix socket of a running or paused instance, else None."""
        ...

    async def screenshot(self, name: str) -> bytes:
        """The instance's screen as PNG; ``InvalidStateError`` unless running or paused."""
        ...


class GuestOps(Protocol):
    async def guest_info(self, name: str) -> GuestInfo:
        """What the VM's qemu-guest-agent reports (``error`` set when it does not answer)."""
        ...

    async def live_stats(self, name: str) -> dict[str, Any]:
        """What the driver sees of a running VM's resources now (empty if it cannot say)."""
        ...


class NetworkOps(Protocol):
    """Network realisation on the host (bridges, DHCP/DNS, firewall); the store is the
    network service's. ``others``: the host's other networks (overlap and NAT rules)."""

    async def network_check(self, spec: NetworkSpec) -> None:
        """``ConflictError`` if ``spec`` cannot be realised here; nothing changed."""
        ...

    async def network_create(self, spec: NetworkSpec, others: list[NetworkSpec]) -> None: ...
    async def network_remove(self, spec: NetworkSpec, others: list[NetworkSpec]) -> None: ...
    async def network_state(self, spec: NetworkSpec) -> NetworkState: ...
    def network_leases(self, network: str) -> list[Lease]: ...


class ContainerOps(Protocol):
    """Container exec, live limits and rootfs snapshots (``HostOps.containers``)."""

    async def exec(self, name: str, argv: builtins.list[str], timeout_s: float) -> ExecOutput: ...

    async def update_limits(self, name: str, spec: InstanceSpec) -> None: ...

    async def snapshot(self, name: str, snap: str) -> None: ...

    async def restore(self, name: str, snap: str) -> None: ...

    def snapshots(self, name: str) -> builtins.list[str]: ...

    def delete_snapshot(self, name: str, snap: str) -> None: ...


class NoContainers:
    """``ContainerOps`` for a platform without a container driver (the fake driver)."""

    def _no(self) -> ConflictError:
        return ConflictError("this host runs no container driver")

    async def exec(self, name: str, argv: builtins.list[str], timeout_s: float) -> ExecOutput:
        raise self._no()

    async def update_limits(self, name: str, spec: InstanceSpec) -> None:
        raise self._no()

    async def snapshot(self, name: str, snap: str) -> None:
        raise self._no()

    async def restore(self, name: str, snap: str) -> None:
        raise self._no()

    def snapshots(self, name: str) -> builtins.list[str]:
        return []

    def delete_snapshot(self, name: str, snap: str) -> None:
        raise self._no()


class HostOps(
    InstanceLock,
    PowerOps,
    SnapshotOps,
    BackupOps,
    DiskOps,
    ConsoleOps,
    GuestOps,
    NetworkOps,
    Protocol,
):
    """Every host-side action, on the host that owns the instance."""

    containers: ContainerOps  # rootfs snapshots and restores take the instance lock
