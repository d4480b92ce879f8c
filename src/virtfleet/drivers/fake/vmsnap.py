"""``SupportsVmSnapshots`` for ``FakeDriver``: the same contract, on the disk files themselves.

The fake has no guest, but its VMs' disks are real files (the agent makes them): a switch
onto new overlays changes nothing in them (QEMU's does not either: the host made the
overlays over their future backing names); merging a layer is an offline ``qemu-img
rebase`` of the active file, which leaves it as QEMU's ``block-stream`` would; a saved
state is a small JSON file naming the VM's disks, and loading one into a start that waits
for it (``defer_start``) checks the devices match, as QEMU does. Must not touch the store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from virtfleet.errors import DriverError, InvalidStateError, NotFoundError
from virtfleet.model.instance import InstanceStatus, PowerState
from virtfleet.storage import qemuimg


class FakeVmSnapshots:
    """Mixed into ``FakeDriver``, which provides ``_vms`` and calls ``_launched`` on start."""

    _vms: dict[str, InstanceStatus]

    def _snap(self) -> tuple[dict[str, dict[str, Path]], set[str], set[str]]:
        """(disk files per VM, names whose next start is deferred, names waiting for one)."""
        found = self.__dict__.setdefault("_vm_snapshots", ({}, set(), set()))
        return found  # type: ignore[no-any-return]

    def _launched(self, name: str, disks: Mapping[str, Path]) -> None:
        files, deferred, waiting = self._snap()
        files[name] = dict(disks)
        waiting.discard(name)
        if name in deferred:
            deferred.discard(name)
            waiting.add(name)

    def _disk_files(self, name: str, disks: list[str] | None = None) -> dict[str, Path]:
        status = self._vms.get(name)
        power = status.power if status else PowerState.STOPPED
        if power not in (PowerState.RUNNING, PowerState.PAUSED):
            raise InvalidStateError(power.value, ["running", "paused"])
        files = self._snap()[0].get(name, {})
        for disk in disks or []:
            if disk not in files:
                raise NotFoundError(f"disk {disk!r} is not attached to the running VM")
        return files

    async def snapshot_disks(
        self,
        name: str,
        overlays: Mapping[str, Path],
        state: Path | None = None,
        in_pause: Callable[[], Awaitable[None]] | None = None,
    ) -> float | None:
        files = self._disk_files(name, list(overlays))
        if state is None:
            return None
        if in_pause is not None:
            await in_pause()
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"vm": name, "disks": sorted(files)}, out)
        return 0.0  # no guest to pause

    async def merge_disk(self, name: str, disk: str, backing: str) -> None:
        files = self._disk_files(name, [disk])
        await qemuimg.rebase(files[disk], backing)

    def defer_start(self, name: str) -> None:
        self._snap()[1].add(name)

    async def load_state(self, name: str, state: Path) -> None:
        files = self._disk_files(name)
        waiting = self._snap()[2]
        if name not in waiting:
            raise InvalidStateError("running", "waiting for a saved state")
        saved = json.loads(state.read_text())
        if saved.get("disks") != sorted(files):
            raise DriverError(f"the saved state of {name!r} belongs to other devices")
        waiting.discard(name)
