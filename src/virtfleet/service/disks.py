"""Kept disks: the disk directories ``vm delete`` leaves without ``--disks``.

Owns the rule that a new instance never silently boots the disks of a deleted one
(``refuse_kept``: every create path asks it before writing anything) and the
``disk list`` / ``disk delete`` use cases over ``<data-dir>/disks``. The host
reads and removes the files (``HostOps`` disk calls); must not run QEMU or know HTTP.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

from virtfleet.errors import InUseError, KeptDisksError
from virtfleet.hostops import DiskOps
from virtfleet.model.disks import DiskDir
from virtfleet.model.event import Event
from virtfleet.model.names import validate_name
from virtfleet.state.repos import EventLog, InstanceRepo
from virtfleet.state.store import StateStore


def refuse_kept(disks: DiskOps, name: str, reusable: bool = False) -> None:
    """Raise ``KeptDisksError`` naming them if ``name`` has kept disk files.

    ``reusable``: the caller could attach them (``--reuse-disks``), so the message offers it.
    """
    kept = disks.kept_disks(name)
    if not kept:
        return
    reuse = "attach them with --reuse-disks or " if reusable else ""
    raise KeptDisksError(
        f"{name!r} has disks kept from a deleted instance: {', '.join(kept)} "
        f"(in {disks.disk_dir(name)}); {reuse}remove them with 'virtfleet disk delete {name}'",
        files=kept,
    )


class DiskService:
    def __init__(self, store: StateStore, disks: DiskOps, events: EventLog) -> None:
        self._repo = InstanceRepo(store)
        self._disks = disks
        self._events = events

    def refuse_kept(self, name: str, reusable: bool = False) -> None:
        refuse_kept(self._disks, name, reusable)

    async def list(self, orphaned: bool = False) -> builtins.list[DiskDir]:
        """Every disk directory (``orphaned``: only those no instance owns), by name."""
        owners = {rec.name for rec in await self._repo.list()}
        names = [n for n in self._disks.disk_names() if not (orphaned and n in owners)]
        return await asyncio.to_thread(self._describe, names, owners)

    def _describe(self, names: builtins.list[str], owners: set[str]) -> builtins.list[DiskDir]:
        return [
            DiskDir(
                name=n,
                path=str(self._disks.disk_dir(n)),
                files=self._disks.kept_disks(n),
                size_bytes=self._disks.disk_usage(n),
                orphaned=n not in owners,
            )
            for n in names
        ]

    async def delete(self, name: str) -> dict[str, Any]:
        """Remove the kept disks of ``name``; ``InUseError`` if instance ``name`` exists
        (its disks go with ``vm delete --disks``). Idempotent: none there is success."""
        if await self._repo.find(validate_name(name, "instance name")) is not None:
            raise InUseError(
                f"the disks of {name!r} belong to instance {name}; "
                f"delete it with 'virtfleet vm delete {name} --disks'"
            )
        # No await from the check to the removal: no create of ``name`` can come between.
        existed = self._disks.disk_dir(name).is_dir()
        self._disks.remove_disks(name)
        if existed:
            await self._events.append(
                Event(kind="disks.deleted", target=f"instance/{name}", message="kept disks deleted")
            )
        return {"name": name, "deleted": existed}
