"""External qcow2 snapshots of instance disks and their tree, on this host.

Layout: the active layer always stays at ``disks/<vm>/<disk>.qcow2`` (so a VM
starts the same way with or without snapshots); taking snapshot S freezes the
active file as ``disks/<vm>/snapshots/S/<disk>.qcow2`` and puts a new empty
overlay in its place (online: ``blockdev-snapshot``, no guest pause; QEMU keeps
its open file across the rename). The tree (parent, current) lives in
``disks/<vm>/snapshots.json``, written atomically. Revert puts a fresh overlay
over the snapshot's files; deleting the current leaf streams its data into the
active layer (``block-stream`` online, ``qemu-img rebase`` offline).

Must not write instance status except through the agent it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from virtfleet.drivers.qemu import vmstate
from virtfleet.drivers.qemu.blockjobs import BlockJobs
from virtfleet.drivers.qemu.driver import QemuDriver
from virtfleet.drivers.routing import RoutingDriver
from virtfleet.errors import (
    AlreadyExistsError,
    ConflictError,
    InUseError,
    InvalidStateError,
    NotFoundError,
    VirtfleetError,
)
from virtfleet.host import imgtool
from virtfleet.host.quiesce import NoQuiesce, Quiescer
from virtfleet.model.backup import Snapshot
from virtfleet.model.instance import InstanceSpec, PowerState
from virtfleet.model.names import validate_name

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

    def qemu(self) -> QemuDriver | None:
        """The agent's QEMU driver (behind the routing driver when containers exist too)."""
        driver = self.agent.driver
        if isinstance(driver, RoutingDriver):
            driver = driver.vm
        return driver if isinstance(driver, QemuDriver) else None

    def blockjobs(self, vm: str) -> BlockJobs | None:
        driver = self.qemu()
        qmp = driver.qmp_session(vm) if driver is not None else None
        return BlockJobs(qmp) if qmp is not None else None

    def _lock(self, vm: str) -> asyncio.Lock:
        return self.agent._locks.setdefault(vm, asyncio.Lock())  # the agent's per-VM lock

    # -- create ------------------------------------------------------------------------

    async def create(self, spec: InstanceSpec, snap: str, memory: bool = False) -> Snapshot:
        """Snapshot every disk of ``spec`` at one instant (online without pausing the guest);
        with ``memory`` (running VMs) also RAM and device state, pausing only for the last
        round of a live save.

        ``AlreadyExistsError`` if the name is taken; on failure nothing is left changed.
        """
        validate_name(snap, "snapshot name")
        async with self._lock(spec.name):
            tree = self.load(spec.name)
            if snap in tree.snapshots:
                raise AlreadyExistsError(f"snapshot {snap!r} of {spec.name!r} already exists")
            jobs = self.blockjobs(spec.name)
            quiesced, pause_ms = False, None
            if memory and jobs is None:
                raise InvalidStateError("stopped", "running", what=f"instance {spec.name!r}")
            if jobs is not None:
                quiesced = not memory and await self.quiescer.freeze(spec.name)
                try:
                    pause_ms = await self._create_online(jobs, spec, snap, memory)
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
                size = int((await imgtool.info(self.agent.disks.qemu_img, active))["virtual-size"])
                frozen.parent.mkdir(parents=True, exist_ok=True)
                os.rename(active, frozen)
                moved.append((frozen, active))
                await imgtool.overlay(self.agent.disks.qemu_img, active, frozen, size)
        except BaseException:
            for frozen, active in moved:
                os.replace(frozen, active)
            shutil.rmtree(self._dir(spec.name) / "snapshots" / snap, ignore_errors=True)
            raise

    async def _create_online(
        self, jobs: BlockJobs, spec: InstanceSpec, snap: str, memory: bool
    ) -> float | None:
        """Stage overlays, switch to them at one instant (with memory: at the end of the RAM
        save, while the guest is paused), then give the files their names. The pause in ms."""
        staged = await self._stage(jobs, spec, snap)
        pause_ms: float | None = None
        try:
            switch, carry = await self._switcher(jobs, staged)
            if memory:
                pause_ms = await self._save_memory(jobs, spec.name, snap, switch)
            else:
                await switch()
        except BaseException:
            for _, node, new in staged:
                with contextlib.suppress(Exception):
                    await jobs.delete_node(node)
                new.unlink(missing_ok=True)
            shutil.rmtree(self._dir(spec.name) / "snapshots" / snap, ignore_errors=True)
            raise
        await carry()  # after the switch the overlays are in use: never undone from here on
        for disk_name, _, new in staged:  # QEMU holds both files open: renaming is invisible
            active = self.agent.disks.path(spec.name, disk_name)
            frozen = self.frozen(spec.name, snap, disk_name)
            frozen.parent.mkdir(parents=True, exist_ok=True)
            os.rename(active, frozen)
            os.rename(new, active)
        return pause_ms

    async def _stage(
        self, jobs: BlockJobs, spec: InstanceSpec, snap: str
    ) -> list[tuple[str, str, Path]]:
        """(disk, overlay node, new file) per disk: overlays opened in QEMU, not yet in use."""
        qemu_img = self.agent.disks.qemu_img
        staged: list[tuple[str, str, Path]] = []
        try:
            for disk in spec.disks:
                active = self.agent.disks.path(spec.name, disk.name)
                size = int((await imgtool.info(qemu_img, active))["virtual-size"])
                new = active.with_name(f".new-{disk.name}.qcow2")
                await imgtool.overlay(qemu_img, new, self.frozen(spec.name, snap, disk.name), size)
                imgtool.private(new)
                node = f"vf{secrets.token_hex(6)}"
                await jobs.add_qcow2(node, new)
                staged.append((disk.name, node, new))
        except BaseException:
            for _, node, new in staged:
                with contextlib.suppress(Exception):
                    await jobs.delete_node(node)
                new.unlink(missing_ok=True)
            raise
        return staged

    async def _switcher(
        self, jobs: BlockJobs, staged: list[tuple[str, str, Path]]
    ) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
        """The switch to the staged overlays (one QMP command; it may run in the guest pause)
        and what follows it: the persistent dirty bitmaps (the backups') move up to the
        overlays, so the next backup stays incremental. Each overlay gets its empty copy
        now, recording from the switch on; the old bits are merged in after the switch
        (not in it: at the end of a memory save QEMU has the bitmaps stored away)."""
        pairs = [(await jobs.active_node(d), node) for d, node, _ in staged]
        carried = {
            old: [b.name for b in await jobs.bitmaps(old) if b.persistent and not b.inconsistent]
            for old, _ in pairs
        }
        for old, new in pairs:
            for name in carried[old]:
                await jobs.add_bitmap(new, name)

        async def switch() -> None:
            await jobs.snapshot(pairs)

        async def carry() -> None:
            for old, new in pairs:
                for name in carried[old]:
                    try:
                        await jobs.merge_bitmap(new, name, old)
                    except VirtfleetError:  # without the old bits the bitmap would lie: drop it
                        with contextlib.suppress(VirtfleetError):
                            await jobs.remove_bitmap(new, name)

        return switch, carry

    async def _save_memory(
        self, jobs: BlockJobs, vm: str, snap: str, switch: Callable[[], Awaitable[None]]
    ) -> float | None:
        state = self.state_file(vm, snap)
        state.parent.mkdir(parents=True, exist_ok=True)
        pid = (await self.agent.repo.get(vm)).status.pid  # the VM runs: its QEMU's pid
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            return await vmstate.save(jobs.qmp, fd, switch, qemu_pid=pid)
        finally:
            os.close(fd)

    def state_file(self, vm: str, snap: str) -> Path:
        return self._dir(vm) / "snapshots" / snap / "memory.state"

    # -- revert ------------------------------------------------------------------------

    async def revert(self, spec: InstanceSpec, snap: str) -> None:
        """Put the disks back to ``snap`` (a running VM is powered off and started again).

        A snapshot with memory resumes the guest exactly where it was (started if stopped)."""
        async with self._lock(spec.name):
            tree = self.load(spec.name)
            entry = self._require(spec.name, tree, snap)
            if entry.memory and entry.devices and entry.devices != _devices(spec):
                raise ConflictError(
                    f"snapshot {snap!r} of {spec.name!r} holds memory state for other devices "
                    "(CPUs, memory or disks/NICs changed since); remove the added devices first"
                )
            rec = await self.agent.repo.get(spec.name)
            running = rec.status.power in (PowerState.RUNNING, PowerState.PAUSED)
            if running:
                await self.agent._stop(rec, True, 0.0)
            for disk in spec.disks:
                await self._fresh_overlay(spec.name, snap, disk.name)
            tree.current = snap
            self._save(spec.name, tree)
            if entry.memory:
                await self._start_from_memory(spec.name, snap)
            elif running:
                await self.agent._start(await self.agent.repo.get(spec.name))

    async def _start_from_memory(self, vm: str, snap: str) -> None:
        driver = self.qemu()
        if driver is None:
            raise InvalidStateError("not a QEMU VM", "a QEMU VM", what=f"instance {vm!r}")
        driver.incoming_once.add(vm)
        await self.agent._start(await self.agent.repo.get(vm))
        qmp = driver.qmp_session(vm)
        assert qmp is not None  # just started
        fd = os.open(self.state_file(vm, snap), os.O_RDONLY | os.O_CLOEXEC)
        try:
            await vmstate.load(qmp, fd)
        except BaseException:
            await self.agent._stop(await self.agent.repo.get(vm), True, 0.0)
            raise
        finally:
            os.close(fd)

    async def _fresh_overlay(self, vm: str, snap: str, disk: str) -> None:
        qemu_img = self.agent.disks.qemu_img
        frozen, active = self.frozen(vm, snap, disk), self.agent.disks.path(vm, disk)
        size = int((await imgtool.info(qemu_img, frozen))["virtual-size"])
        new = active.with_name(f".new-{disk}.qcow2")
        await imgtool.overlay(qemu_img, new, frozen, size)
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
        async with self._lock(spec.name):
            tree = self.load(spec.name)
            entry = self._require(spec.name, tree, snap)
            children = tree.children(snap)
            if children:
                raise InUseError(
                    f"snapshot {snap!r} has child snapshots ({', '.join(children)}): "
                    "delete them first"
                )
            if tree.current == snap:
                await self._merge_current(spec, snap, entry.parent)
                tree.current = entry.parent
            shutil.rmtree(self._dir(spec.name) / "snapshots" / snap, ignore_errors=True)
            del tree.snapshots[snap]
            self._save(spec.name, tree)

    async def _merge_current(self, spec: InstanceSpec, snap: str, parent: str | None) -> None:
        """Fold ``snap``'s files into the active layers, which then sit on ``parent``."""
        jobs = self.blockjobs(spec.name)
        qemu_img = self.agent.disks.qemu_img
        for disk in spec.disks:
            frozen = self.frozen(spec.name, snap, disk.name)
            if parent is not None:
                base: str = str(self.frozen(spec.name, parent, disk.name))
            else:
                base = str((await imgtool.info(qemu_img, frozen)).get("full-backing-filename", ""))
            if jobs is None:
                active = self.agent.disks.path(spec.name, disk.name)
                args = [qemu_img, "rebase", "-q", "-f", "qcow2", "-b", base]
                await imgtool.run([*args, *(["-F", "qcow2"] if base else []), str(active)])
                continue
            top = await jobs.active_node(disk.name)
            chain = await jobs.backing_chain(top)
            base_node = chain[2] if len(chain) > 2 else None
            job = f"stream-{secrets.token_hex(4)}"
            await jobs.stream(job, top, base_node, _no_progress, backing_file=base or None)


async def _no_progress(_: float) -> None:
    return None


def _devices(spec: InstanceSpec) -> str:
    """What a saved machine state depends on: QEMU refuses to load it into other hardware."""
    disks = ",".join(sorted(d.name for d in spec.disks))
    nics = ",".join(spec.nic_names)
    memory = spec.boot_memory_mib
    return f"vcpus={spec.vcpus}/{spec.max_vcpus};mem={memory};disks={disks};nics={nics}"
