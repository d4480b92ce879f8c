"""The door refuses what belongs to another host (the API forwards those requests).

Owns ``OwnerCheckedOps``: this host's ``LocalHostOps`` whose instance actions (power
calls, snapshot create/delete/revert, backup and restore into an existing instance,
screenshots) first check the instance's owner key. An instance owned by another host
is ``OwnedElsewhereError`` naming that host: acting on it here would touch files and
processes this host does not have. (Power actions through the API need no door: they
are desired state the owner's agent carries out.) Requests for such actions are
forwarded to the owner's API before they reach a service (``api.forward``); this check
is the safety net for what is not (a request already forwarded here, a leader's
scheduled backup of another host's instance).
"""

from __future__ import annotations

from virtfleet.errors import NotFoundError, OwnedElsewhereError
from virtfleet.host.ops import LocalHostOps
from virtfleet.hostops import Report
from virtfleet.model.backup import Snapshot
from virtfleet.model.instance import InstanceSpec
from virtfleet.state.hosts import HostRepo
from virtfleet.storage.backup.manifest import BackupManifest


class OwnerCheckedOps(LocalHostOps):
    """``LocalHostOps`` that acts only on instances this host owns (or that are new)."""

    async def owned_here(self, name: str) -> None:
        """Return if ``name`` is this host's (or has no record yet); else refuse."""
        rec = await self.agent.repo.find(name)
        if rec is None or rec.owner is None or rec.owner.host == self.agent.host_id:
            return
        owner = rec.owner.host
        try:
            host = await HostRepo(self.agent.store).get(owner)
            label = f"{host.name} ({owner})"
        except NotFoundError:
            label = owner
        raise OwnedElsewhereError(
            f"instance {name!r} is owned by host {label}: ask that host",
            host=owner,
        )

    async def start_instance(self, name: str) -> None:
        await self.owned_here(name)
        await super().start_instance(name)

    async def stop_instance(self, name: str, force: bool = False, timeout_s: float = 60.0) -> None:
        await self.owned_here(name)
        await super().stop_instance(name, force, timeout_s)

    async def restart_instance(
        self, name: str, force: bool = False, timeout_s: float = 60.0
    ) -> None:
        await self.owned_here(name)
        await super().restart_instance(name, force, timeout_s)

    async def pause_instance(self, name: str) -> None:
        await self.owned_here(name)
        await super().pause_instance(name)

    async def resume_instance(self, name: str) -> None:
        await self.owned_here(name)
        await super().resume_instance(name)

    async def snapshot_create(self, spec: InstanceSpec, snap: str, memory: bool) -> Snapshot:
        await self.owned_here(spec.name)
        return await super().snapshot_create(spec, snap, memory)

    async def snapshot_delete(self, spec: InstanceSpec, snap: str) -> None:
        await self.owned_here(spec.name)
        await super().snapshot_delete(spec, snap)

    async def snapshot_revert(self, spec: InstanceSpec, snap: str) -> None:
        await self.owned_here(spec.name)
        await super().snapshot_revert(spec, snap)

    async def backup(self, spec: InstanceSpec, full: bool, report: Report) -> BackupManifest:
        await self.owned_here(spec.name)
        return await super().backup(spec, full, report)

    async def backup_restore(self, manifest: BackupManifest, vm: str, replace: bool) -> None:
        await self.owned_here(vm)
        await super().backup_restore(manifest, vm, replace)

    async def screenshot(self, name: str) -> bytes:
        await self.owned_here(name)
        return await super().screenshot(name)
