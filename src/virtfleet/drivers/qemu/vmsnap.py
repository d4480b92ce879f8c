"""``SupportsVmSnapshots`` and ``SupportsBlockJobs`` for ``QemuDriver``: a running VM's
block layer, for snapshots (switching onto new disk layers) and backups.

Owns, for one VM, the QMP side of an online snapshot: opening the host's overlays as
block nodes, making them the disks' tops at one instant (``blockdev-snapshot`` in one
transaction, or in the final pause of a RAM save, see vmstate.py), carrying the backups'
persistent dirty bitmaps up to the new tops; streaming a layer into the top above it;
and loading a saved RAM state into a QEMU started with ``-incoming defer``. Must not name
or rename files (host/snapshots.py does) nor touch the store.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from virtfleet.drivers.qemu import vmstate
from virtfleet.drivers.qemu.blockjobs import BlockJobs
from virtfleet.drivers.qemu.config import QemuOptions, RunPaths
from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.errors import InvalidStateError, VirtfleetError

Step = Callable[[], Awaitable[None]]


class VmSnapshots:
    """Mixed into ``QemuDriver``, which provides ``_monitor``, ``paths``, ``opts`` and
    ``incoming_once`` (the names whose next start waits for a state)."""

    incoming_once: set[str]
    opts: QemuOptions

    def _monitor(self, name: str, *, running: bool = True) -> tuple[QMPSession, list[str]]:
        raise NotImplementedError

    def paths(self, name: str) -> RunPaths:
        raise NotImplementedError

    def block_jobs(self, name: str) -> BlockJobs | None:
        try:
            qmp, _ = self._monitor(name, running=False)
        except InvalidStateError:
            return None
        return BlockJobs(qmp)

    def nbd_socket(self, name: str) -> Path:
        return self.paths(name).root / "nbd.sock"  # the run directory is root's alone

    async def snapshot_disks(
        self,
        name: str,
        overlays: Mapping[str, Path],
        state: Path | None = None,
        in_pause: Step | None = None,
    ) -> float | None:
        qmp, _ = self._monitor(name, running=False)
        jobs = BlockJobs(qmp)
        staged: list[tuple[str, str]] = []  # (disk, overlay node)
        try:
            for disk, path in overlays.items():
                await jobs.active_node(disk)  # NotFoundError before anything is opened
                node = f"vf{secrets.token_hex(6)}"
                await jobs.add_qcow2(node, path, aio=self.opts.aio)
                staged.append((disk, node))
            switch, carry = await _switcher(jobs, staged)
            at_stop = _then(in_pause, switch) if in_pause else switch
            pause_ms = await self._save(qmp, name, state, at_stop) if state else None
            if state is None:
                await switch()
        except BaseException:
            for _, node in staged:
                with contextlib.suppress(Exception):
                    await jobs.delete_node(node)
            raise
        await carry()  # after the switch the overlays are in use: never undone from here on
        return pause_ms

    async def _save(self, qmp: QMPSession, name: str, state: Path, switch: Step) -> float | None:
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            return await vmstate.save(qmp, fd, switch)
        finally:
            os.close(fd)

    async def merge_disk(self, name: str, disk: str, backing: str) -> None:
        qmp, _ = self._monitor(name, running=False)
        jobs = BlockJobs(qmp)
        top = await jobs.active_node(disk)
        chain = await jobs.backing_chain(top)
        base_node = chain[2] if len(chain) > 2 else None
        job = f"stream-{secrets.token_hex(4)}"
        await jobs.stream(job, top, base_node, _no_progress, backing_file=backing or None)

    def defer_start(self, name: str) -> None:
        self.incoming_once.add(name)

    async def load_state(self, name: str, state: Path) -> None:
        qmp, _ = self._monitor(name, running=False)
        fd = os.open(state, os.O_RDONLY | os.O_CLOEXEC)
        try:
            await vmstate.load(qmp, fd)
        finally:
            os.close(fd)


def _then(first: Step, second: Step) -> Step:
    """``first``, then ``second`` (not run if ``first`` fails: the VM stays on its layers)."""

    async def both() -> None:
        await first()
        await second()

    return both


async def _switcher(jobs: BlockJobs, staged: list[tuple[str, str]]) -> tuple[Step, Step]:
    """The switch to the staged overlays (one QMP command; it may run in the guest pause)
    and what follows it: the persistent dirty bitmaps (the backups') move up to the
    overlays, so the next backup stays incremental. Each overlay gets its empty copy
    now, recording from the switch on; the old bits are merged in after the switch
    (not in it: at the end of a memory save QEMU has the bitmaps stored away), and the
    old layer's bitmaps are then removed: QEMU keeps every layer writable, and stores
    and reloads each one's persistent bitmaps in every memory save's pause."""
    pairs = [(await jobs.active_node(d), node) for d, node in staged]
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
                # The frozen layer's copy is superseded (backups read the top's). Left there,
                # every later pause stored and reloaded it, with fdatasyncs, once per layer.
                with contextlib.suppress(VirtfleetError):
                    await jobs.remove_bitmap(old, name)

    return switch, carry


async def _no_progress(_: float) -> None:
    return None
