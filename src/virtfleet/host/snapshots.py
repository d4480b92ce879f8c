"""External qcow2 snapshots of instance disks and their tree, on this host.

Layout: the active layer always stays at ``disks/<vm>/<disk>.qcow2`` (so a VM
starts the same way with or without snapshots); taking snapshot S freezes the
active file as ``disks/<vm>/snapshots/S/<disk>.qcow2`` and puts a new empty
overlay in its place (online: ``blockdev-snapshot``, no guest pause; QEMU keeps
its open file across the rename). The tree (parent, current) lives in
``disks/<vm>/snapshots.json``, written atomically. Revert puts a fresh overlay
over the snapshot's files; deleting the current leaf streams its data into the
active layer (``block-stream`` online, ``qemu-img rebase`` offline).

Must not write instance status, and must not lock: every public method runs with
the instance's lock held by its caller (``host.ops.LocalHostOps``, which also
owns revert: power off, ``reset_to``, power on through the agent's public door).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from virtfleet.drivers.base import SupportsVmSnapshots
from virtfleet.errors import (
    AlreadyExistsError,
    ConflictError,
    InUseError,
    InvalidStateError,
    NotFoundError,
)
from virtfleet.host.quiesce import NoQuiesce, Quiescer
from virtfleet.model.backup import Snapshot
from virtfleet.model.instance import InstanceSpec, PowerState
from virtfleet.model.names import validate_name
from virtfleet.model.pools import DEFAULT_POOL
from virtfleet.storage import qemuimg

if TYPE_CHECKING:
    from virtfleet.host.agent import Agent


class _Entry(BaseModel):
    parent: str | None = None
    created_at: datetime
    memory: bool = False
    quiesced: bool = False
    pause_ms: float | None = None
    devices: str = ""  # with memory: the device set the saved state belongs to


class _Tree(BaseModel):
    current: str | None = None
    snapshots: dict[str, _Entry] = {}

    def children(self, name: str) -> list[str]:
        return sorted(n for n, e in self.snapshots.items() if e.parent == name)


class SnapshotManager:
    def __init__(self, agent: Agent, quiescer: Quiescer | None = None) -> None:
        self.agent = agent
        self.quiescer: Quiescer = quiescer or NoQuiesce()

    # -- files and metadata ------------------------------------------------------------

    def _dir(self, vm: str) -> Path:
        return self.agent.disks.dir(vm)

    def frozen(self, vm: str, snap: str, disk: str) -> Path:
        return self._dir(vm) / "snapshots" / snap / f"{disk}.qcow2"

    def load(self, vm: str) -> _Tree:
        path = self._dir(vm) / "snapshots.json"
        return _Tree.model_validate_json(path.read_text()) if path.exists() else _Tree()

    def _save(self, vm: str, tree: _Tree) -> None:
        path = self._dir(vm) / "snapshots.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(tree.model_dump_json(indent=1))
        os.replace(tmp, path)

    def snapshots(self, vm: str) -> list[Snapshot]:
        tree = self.load(vm)
        return [
            Snapshot(
                name=n,
                parent=e.parent,
                created_at=e.created_at,
                memory=e.memory,
                quiesced=e.quiesced,
                pause_ms=e.pause_ms,
                current=n == tree.current,
                children=tree.children(n),
            )
            for n, e in sorted(tree.snapshots.items(), key=lambda kv: kv[1].created_at)
        ]

    async def online(self, vm: str) -> SupportsVmSnapshots | None:
        """The driver, if it snapshots running VMs and ``vm`` runs (or is paused) in it."""
        driver = self.agent.driver
        if not isinstance(driver, SupportsVmSnapshots):
            return None
        power = (await self.agent.driver.status(vm)).power
        return driver if power in (PowerState.RUNNING, PowerState.PAUSED) else None

    # -- create ------------------------------------------------------------------------

    async def create(self, spec: InstanceSpec, snap: str, memory: bool = False) -> Snapshot:
        """Snapshot every disk of ``spec`` at one instant (online without pausing the guest);
        with ``memory`` (running VMs) also RAM and device state, pausing only for the last
        round of a live save.

        ``AlreadyExistsError`` if the name is taken; on failure nothing is left changed.
        """
        validate_name(snap, "snapshot name")
        _refuse_pooled(spec)
        tree = self.load(spec.name)
        if snap in tree.snapshots:
            raise AlreadyExistsError(f"snapshot {snap!r} of {spec.name!r} already exists")
        driver = await self.online(spec.name)
        quiesced, pause_ms = False, None
        if memory and driver is None:
            raise InvalidStateError("stopped", "running", what=f"instance {spec.name!r}")
        if driver is not None:
            quiesced = not memory and await self.quiescer.freeze(spec.name)
            try:
                pause_ms = await self._create_online(driver, spec, snap, memory)
            finally:
                if quiesced:
                    await self.quiescer.thaw(spec.name)
        else:
            await self._create_offline(spec, snap)
        entry = _Entry(
            parent=tree.current,
            created_at=datetime.now(UTC),
            quiesced=quiesced,
            memory=memory,
            pause_ms=pause_ms,
            devices=_devices(spec) if memory else "",
        )
        if not memory:  # with memory it was taken in the guest's pause (_create_online)
            self._save_machine(spec.name, snap)
        tree.snapshots[snap], tree.current = entry, snap
        self._save(spec.name, tree)
        return next(s for s in self.snapshots(spec.name) if s.name == snap)

    def require_disks(self, spec: InstanceSpec) -> None:
        """``ConflictError`` if the VM's disks do not exist yet (created at its first start)."""
        for disk in spec.disks:
            if not self.agent.disks.path(spec.name, disk.name).exists():
                raise ConflictError(
                    f"instance {spec.name!r} has no disk {disk.name!r} yet: start it once first"
                )

    async def _create_offline(self, spec: InstanceSpec, snap: str) -> None:
        self.require_disks(spec)
        moved: list[tuple[Path, Path]] = []
        try:
            for disk in spec.disks:
                active, frozen = (
                    self.agent.disks.path(spec.name, disk.name),
                    self.frozen(spec.name, snap, disk.name),
                )
                size = await qemuimg.virtual_size(active)
                frozen.parent.mkdir(parents=True, exist_ok=True)
                os.rename(active, frozen)
                moved.append((frozen, active))
                await qemuimg.overlay(active, frozen, size)
        except BaseException:
            for frozen, active in moved:
                os.replace(frozen, active)
            shutil.rmtree(self._dir(spec.name) / "snapshots" / snap, ignore_errors=True)
            raise

    async def _create_online(
        self, driver: SupportsVmSnapshots, spec: InstanceSpec, snap: str, memory: bool
    ) -> float | None:
        """Stage overlays, have the driver switch the VM to them at one instant (with memory:
        at the end of the RAM save, while the guest is paused), then give the files their
        names. The pause in ms."""
        staged = await self._stage(spec, snap)
        state = self.state_file(spec.name, snap) if memory else None

        async def in_pause() -> None:
            # The guest is paused and QEMU has taken the TPM's state blobs for the saved
            # state (after the last command finished): swtpm changes nothing until the
            # guest runs again, so its files now are exactly the saved state's TPM.
            await asyncio.to_thread(self._save_machine, spec.name, snap)

        try:
            if state is not None:
                state.parent.mkdir(parents=True, exist_ok=True)
            pause_ms = await driver.snapshot_disks(spec.name, staged, state, in_pause)
        except BaseException:
            for new in staged.values():
                new.unlink(missing_ok=True)
            shutil.rmtree(self._dir(spec.name) / "snapshots" / snap, ignore_errors=True)
            raise
        for disk_name, new in staged.items():  # QEMU holds both files open: renaming is invisible
            active = self.agent.disks.path(spec.name, disk_name)
            frozen = self.frozen(spec.name, snap, disk_name)
            frozen.parent.mkdir(parents=True, exist_ok=True)
            os.rename(active, frozen)
            os.rename(new, active)
        return pause_ms

    async def _stage(self, spec: InstanceSpec, snap: str) -> dict[str, Path]:
        """Per disk a new overlay file over the name its active file is about to get."""
        staged: dict[str, Path] = {}
        try:
            for disk in spec.disks:
                active = self.agent.disks.path(spec.name, disk.name)
                size = await qemuimg.virtual_size(active)
                new = active.with_name(f".new-{disk.name}.qcow2")
                staged[disk.name] = new
                await qemuimg.overlay(new, self.frozen(spec.name, snap, disk.name), size)
                qemuimg.private(new)
        except BaseException:
            for new in staged.values():
                new.unlink(missing_ok=True)
            raise
        return staged

    def _save_machine(self, vm: str, snap: str) -> None:
        """The machine-state files (UEFI variables, TPM state) into ``snap``'s directory. A
        running VM's without a pause (disk-only snapshot): each file is one swtpm or QEMU
        wrote whole (machinefiles.py), crash-consistent like the disks."""
        self.agent.disks.save_machine(vm, self._dir(vm) / "snapshots" / snap)

    def state_file(self, vm: str, snap: str) -> Path:
        return self._dir(vm) / "snapshots" / snap / "memory.state"

    # -- revert ------------------------------------------------------------------------

    def check_revert(self, spec: InstanceSpec, snap: str) -> bool:
        """Whether ``spec`` can go back to ``snap`` (``NotFoundError``, or ``ConflictError``
        for memory state of other devices); True if ``snap`` holds memory state."""
        entry = self._require(spec.name, self.load(spec.name), snap)
        if entry.memory and entry.devices and entry.devices != _devices(spec):
            raise ConflictError(
                f"snapshot {snap!r} of {spec.name!r} holds memory state for other devices "
                "(CPUs, memory or disks/NICs changed since); remove the added devices first"
            )
        return entry.memory

    async def reset_to(self, spec: InstanceSpec, snap: str) -> None:
        """Put fresh overlays over ``snap``'s files and make it current (the VM is off)."""
        tree = self.load(spec.name)
        self._require(spec.name, tree, snap)
        for disk in spec.disks:
            await self._fresh_overlay(spec.name, snap, disk.name)
        self.agent.disks.restore_machine(spec.name, self._dir(spec.name) / "snapshots" / snap)
        tree.current = snap
        self._save(spec.name, tree)

    async def _fresh_overlay(self, vm: str, snap: str, disk: str) -> None:
        frozen, active = self.frozen(vm, snap, disk), self.agent.disks.path(vm, disk)
        size = await qemuimg.virtual_size(frozen)
        new = active.with_name(f".new-{disk}.qcow2")
        await qemuimg.overlay(new, frozen, size)
        os.replace(new, active)

    def _require(self, vm: str, tree: _Tree, snap: str) -> _Entry:
        validate_name(snap, "snapshot name")
        entry = tree.snapshots.get(snap)
        if entry is None:
            raise NotFoundError(f"snapshot {snap!r} of {vm!r} not found")
        return entry

    # -- delete ------------------------------------------------------------------------

    async def delete(self, spec: InstanceSpec, snap: str) -> None:
        """Delete a snapshot without children (online too); the VM's data stays as it is.

        ``InUseError`` if it has child snapshots (delete those first), nothing changed.
        """
        tree = self.load(spec.name)
        entry = self._require(spec.name, tree, snap)
        children = tree.children(snap)
        if children:
            raise InUseError(
                f"snapshot {snap!r} has child snapshots ({', '.join(children)}): delete them first"
            )
        if tree.current == snap:
            await self._merge_current(spec, snap, entry.parent)
            tree.current = entry.parent
        shutil.rmtree(self._dir(spec.name) / "snapshots" / snap, ignore_errors=True)
        del tree.snapshots[snap]
        self._save(spec.name, tree)

    async def _merge_current(self, spec: InstanceSpec, snap: str, parent: str | None) -> None:
        """Fold ``snap``'s files into the active layers, which then sit on ``parent``."""
        driver = await self.online(spec.name)
        for disk in spec.disks:
            frozen = self.frozen(spec.name, snap, disk.name)
            if parent is not None:
                base: str = str(self.frozen(spec.name, parent, disk.name))
            else:
                head = (await qemuimg.info(frozen, "qcow2", shared=True))[0]
                base = str(head.get("full-backing-filename", ""))
            if driver is None:
                await qemuimg.rebase(self.agent.disks.path(spec.name, disk.name), base)
            else:
                await driver.merge_disk(spec.name, disk.name, base)


def _devices(spec: InstanceSpec) -> str:
    """What a saved machine state depends on: QEMU refuses to load it into other hardware."""
    disks = ",".join(sorted(d.name for d in spec.disks))
    nics = ",".join(spec.nic_names)
    memory = spec.boot_memory_mib
    return f"vcpus={spec.vcpus}/{spec.max_vcpus};mem={memory};disks={disks};nics={nics}"


def _refuse_pooled(spec: InstanceSpec) -> None:
    """Snapshot files live in the instance's directory: a disk in another pool (maybe
    another filesystem, where the freezing rename fails) is refused until they move."""
    pooled = [d.name for d in spec.disks if d.pool not in (None, DEFAULT_POOL)]
    if pooled:
        raise ConflictError(
            f"instance {spec.name!r}: snapshots of disks in a storage pool other than "
            f"{DEFAULT_POOL!r} ({', '.join(pooled)}) are not supported yet"
        )
