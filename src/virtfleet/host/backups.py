"""Backups of this host's VMs into a ``storage.backup.Repository``, and restores from it.

Owns the backup procedure: decide full vs incremental (a persistent dirty
bitmap ``vf-<last backup id>`` on each disk's active layer that QEMU reports
consistent, else full with the reason), run QEMU's point-in-time backup job
into a temporary qcow2 next to the disk, chunk what it wrote, and
publish the manifest. The previous bitmap is dropped only after the manifest
is safely stored, so a failed or killed backup never loses changes. Leftovers
of a killed daemon (jobs, nodes, bitmaps, temp files) are cleaned up by the
next backup. Must not touch the store: the service layer records results.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtfleet.drivers.qemu.blockjobs import BlockJobs
from virtfleet.errors import ConflictError, VirtfleetError
from virtfleet.host import imgtool
from virtfleet.host.quiesce import NoQuiesce, Quiescer
from virtfleet.model.instance import InstanceSpec
from virtfleet.storage.backup.ingest import ingest
from virtfleet.storage.backup.manifest import BackupManifest, BackupStats, DiskManifest
from virtfleet.storage.backup.prune import RetentionPolicy, select_kept
from virtfleet.storage.backup.repo import Repository, VerifyReport, new_backup_id

if TYPE_CHECKING:
    from virtfleet.host.agent import Agent
    from virtfleet.host.snapshots import SnapshotManager

Report = Callable[[int, str], Coroutine[Any, Any, None]]
JOB_PREFIX, NODE_PREFIX, BITMAP_PREFIX = "vfbk-", "vfbt", "vf-"


async def _quiet(_: int, __: str) -> None:
    return None


class BackupManager:
    def __init__(
        self,
        agent: Agent,
        snapshots: SnapshotManager,
        repo: Repository,
        quiescer: Quiescer | None = None,
    ) -> None:
        self.agent = agent
        self.snapshots = snapshots
        self.repo = repo
        self.quiescer: Quiescer = quiescer or NoQuiesce()
        self._lock = asyncio.Lock()

    @property
    def qemu_img(self) -> str:
        return self.agent.disks.qemu_img

    def _scratch(self, manifest: BackupManifest, disk: str) -> Path:
        """The backup job's temporary target: next to the VM's disk, never in the repository,
        so a full repository fails our own writes, never QEMU's (no guest write is at risk)."""
        return self.agent.disks.dir(manifest.instance) / f".backup-{manifest.id}-{disk}.qcow2"

    async def backup(
        self, spec: InstanceSpec, *, full: bool = False, report: Report = _quiet
    ) -> BackupManifest:
        """Back up every disk of ``spec`` (running: live, point in time; stopped: offline)."""
        async with self._lock:
            with self.repo.locked():
                self.repo.clean_tmp()
                for leftover in self.agent.disks.dir(spec.name).glob(".backup-*"):
                    leftover.unlink()  # a killed daemon's temporary backup target
                jobs = self.snapshots.blockjobs(spec.name)
                parent = self.repo.latest(spec.name)
                manifest = BackupManifest(
                    id=new_backup_id(),
                    instance=spec.name,
                    created_at=datetime.now(UTC),
                    kind="full",
                    spec=spec.model_dump(mode="json"),
                    disks={},
                )
                started = time.monotonic()
                if jobs is None:
                    await self._offline(spec, manifest, report)
                else:
                    await self._online(jobs, spec, manifest, parent, full, report)
                manifest.stats.seconds = round(time.monotonic() - started, 3)
                return manifest

    # -- running VMs -------------------------------------------------------------------

    async def _online(
        self,
        jobs: BlockJobs,
        spec: InstanceSpec,
        manifest: BackupManifest,
        parent: BackupManifest | None,
        full: bool,
        report: Report,
    ) -> None:
        await _clean_qemu(jobs)
        nodes = {d.name: await jobs.active_node(d.name) for d in spec.disks}
        since, reason = await self._plan(jobs, nodes, parent, full)
        manifest.kind = "incremental" if since else "full"
        manifest.parent = parent.id if since and parent else None
        manifest.full_reason = reason
        new_bitmap = BITMAP_PREFIX + manifest.id
        quiesced = await self.quiescer.freeze(spec.name)
        manifest.consistency = "application" if quiesced else "crash"
        try:
            for index, disk in enumerate(spec.disks):
                share = (index / len(spec.disks), (index + 1) / len(spec.disks))
                base = parent.disks.get(disk.name) if since and parent else None
                manifest.disks[disk.name] = await self._disk_online(
                    jobs,
                    nodes[disk.name],
                    disk.name,
                    since,
                    new_bitmap,
                    base,
                    manifest,
                    share,
                    report,
                    quiesced and index == 0,
                )
                quiesced = False
            await asyncio.to_thread(self.repo.save, manifest)
        except BaseException:
            for node in nodes.values():
                with contextlib.suppress(Exception):
                    await jobs.remove_bitmap(node, new_bitmap)
            raise
        finally:
            if quiesced:
                await self.quiescer.thaw(spec.name)
        for node in nodes.values():  # safely stored: the old bitmap is no longer needed
            if since:
                with contextlib.suppress(VirtfleetError):
                    await jobs.remove_bitmap(node, since)

    async def _plan(
        self,
        jobs: BlockJobs,
        nodes: dict[str, str],
        parent: BackupManifest | None,
        full: bool,
    ) -> tuple[str | None, str | None]:
        """(bitmap to read since, or None for full; why full). Drops stale bitmaps."""
        want = BITMAP_PREFIX + parent.id if parent else None
        reason: str | None = None
        for disk, node in nodes.items():
            maps = {b.name: b for b in await jobs.bitmaps(node)}
            for name in maps:
                if name.startswith(BITMAP_PREFIX) and name != want:
                    await jobs.remove_bitmap(node, name)  # left by an interrupted backup
            reason = reason or _why_full(disk, maps.get(want or ""), parent, full)
        if parent is None:
            return None, "first backup of this instance"
        return (None, reason) if reason else (want, None)

    async def _disk_online(
        self,
        jobs: BlockJobs,
        node: str,
        disk: str,
        since: str | None,
        new_bitmap: str,
        base: DiskManifest | None,
        manifest: BackupManifest,
        share: tuple[float, float],
        report: Report,
        thaw_after_start: bool,
    ) -> DiskManifest:
        size = int(
            (await imgtool.info(self.qemu_img, self.agent.disks.path(manifest.instance, disk)))[
                "virtual-size"
            ]
        )
        target = self._scratch(manifest, disk)
        await imgtool.run([self.qemu_img, "create", "-q", "-f", "qcow2", str(target), str(size)])
        imgtool.give_to(target, self.snapshots.runas())
        tnode, job = NODE_PREFIX + secrets.token_hex(6), JOB_PREFIX + secrets.token_hex(6)
        try:
            await jobs.add_qcow2(tnode, target)
            await jobs.start_backup(job, node, tnode, new_bitmap, since)
            if thaw_after_start:  # the point in time is taken: the guest may write again
                await self.quiescer.thaw(manifest.instance)
            lo, hi = share

            async def copied(frac: float) -> None:
                await report(int(100 * (lo + (hi - lo) * frac * 0.5)), f"copying {disk}")

            started = time.monotonic()
            await jobs.wait_job(job, copied)
            await jobs.delete_node(tnode)
            manifest.stats.copy_seconds += round(time.monotonic() - started, 3)
            chunks = await self._ingest(target, size, base, manifest.stats, share, disk, report)
        except BaseException:
            with contextlib.suppress(Exception):
                await jobs.cancel_job(job)
            with contextlib.suppress(Exception):
                await jobs.delete_node(tnode)
            raise
        finally:
            target.unlink(missing_ok=True)
        return DiskManifest(size=size, chunks=chunks, bitmap=new_bitmap)

    async def _ingest(
        self,
        target: Path,
        size: int,
        base: DiskManifest | None,
        stats: BackupStats,
        share: tuple[float, float],
        disk: str,
        report: Report,
    ) -> list[str]:
        loop = asyncio.get_running_loop()
        lo, hi = share
        last = [-1]

        def progress(frac: float) -> None:
            pct = int(100 * (lo + (hi - lo) * (0.5 + frac * 0.5)))
            if pct != last[0]:
                last[0] = pct
                asyncio.run_coroutine_threadsafe(report(pct, f"storing {disk}"), loop)

        started = time.monotonic()
        chunks = await asyncio.to_thread(
            ingest, target, size, self.repo.chunks, base, stats, progress
        )
        stats.store_seconds += round(time.monotonic() - started, 3)
        return chunks

    # -- stopped VMs -------------------------------------------------------------------

    async def _offline(self, spec: InstanceSpec, manifest: BackupManifest, report: Report) -> None:
        """Read whole disks (no QEMU to track changes), then leave a bitmap for the next one."""
        self.snapshots.require_disks(spec)
        manifest.full_reason = "the VM is stopped: whole disks are read"
        new_bitmap = BITMAP_PREFIX + manifest.id
        for index, disk in enumerate(spec.disks):
            active = self.agent.disks.path(spec.name, disk.name)
            size = int((await imgtool.info(self.qemu_img, active))["virtual-size"])
            target = self._scratch(manifest, disk.name)
            try:
                await imgtool.run(
                    [self.qemu_img, "convert", "-O", "qcow2", str(active), str(target)]
                )
                share = (index / len(spec.disks), (index + 1) / len(spec.disks))
                chunks = await self._ingest(
                    target, size, None, manifest.stats, share, disk.name, report
                )
            finally:
                target.unlink(missing_ok=True)
            manifest.disks[disk.name] = DiskManifest(size=size, chunks=chunks, bitmap=new_bitmap)
        await asyncio.to_thread(self.repo.save, manifest)
        for disk in spec.disks:
            await self._reset_offline_bitmaps(
                self.agent.disks.path(spec.name, disk.name), new_bitmap
            )

    async def _reset_offline_bitmaps(self, image: Path, keep: str) -> None:
        data = (await imgtool.info(self.qemu_img, image)).get("format-specific", {}).get("data", {})
        for bitmap in data.get("bitmaps", []):
            if bitmap["name"].startswith(BITMAP_PREFIX):
                await imgtool.run([self.qemu_img, "bitmap", "--remove", str(image), bitmap["name"]])
        await imgtool.run([self.qemu_img, "bitmap", "--add", str(image), keep])

    # -- restore -----------------------------------------------------------------------

    async def restore_disks(self, manifest: BackupManifest, vm: str, *, replace: bool) -> None:
        """Write the backup's disks as ``vm``'s disk files (checked first: a damaged backup
        raises ``BackupDamagedError`` listing its bad chunks, and nothing is written)."""
        await asyncio.to_thread(self.repo.require_intact, manifest)
        if replace and self.snapshots.load(vm).snapshots:
            raise ConflictError(
                f"instance {vm!r} has snapshots: delete them before restoring over it"
            )
        vm_dir = self.agent.disks.dir(vm)
        if not replace and vm_dir.exists() and any(vm_dir.iterdir()):
            raise ConflictError(f"disk directory of {vm!r} is not empty")
        vm_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        made: list[Path] = []
        try:
            for disk in manifest.disks:
                made += await self._restore_disk(manifest, disk, self.agent.disks.path(vm, disk))
        except BaseException:
            for path in made:
                path.unlink(missing_ok=True)
            if not replace:
                with contextlib.suppress(OSError):
                    vm_dir.rmdir()
            raise

    async def _restore_disk(self, manifest: BackupManifest, disk: str, dest: Path) -> list[Path]:
        raw = dest.with_name(f".restore-{disk}.raw")
        new = dest.with_name(f".restore-{disk}.qcow2")
        try:
            await asyncio.to_thread(self.repo.write_raw, manifest, disk, raw)
            await imgtool.run(
                [self.qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(new)]
            )
        except BaseException:
            new.unlink(missing_ok=True)
            raise
        finally:
            raw.unlink(missing_ok=True)
        new.replace(dest)
        return [dest]


async def _clean_qemu(jobs: BlockJobs) -> None:
    """Drop the job and target node a killed daemon left in QEMU."""
    for job in await jobs.jobs():
        if str(job["id"]).startswith(JOB_PREFIX):
            await jobs.cancel_job(job["id"])
    for node in await jobs.node_names():
        if node.startswith(NODE_PREFIX):
            with contextlib.suppress(VirtfleetError):
                await jobs.delete_node(node)


def _why_full(disk: str, bitmap: Any, parent: BackupManifest | None, full: bool) -> str | None:
    if full:
        return "full backup requested"
    if parent is None:
        return "first backup of this instance"
    if disk not in parent.disks:
        return f"disk {disk} is new since the last backup"
    if bitmap is None:
        return (
            f"no dirty bitmap for the last backup on disk {disk} "
            "(snapshot, revert, restore or a QEMU crash since): reading whole disks"
        )
    if bitmap.inconsistent:
        return f"the dirty bitmap of disk {disk} is inconsistent (QEMU did not stop cleanly)"
    return None


class RepositoryAccess:
    """Repository-wide work (verify, prune, delete) under the same lock as backups."""

    def __init__(self, manager: BackupManager) -> None:
        self.manager = manager
        self.repo = manager.repo

    async def verify(self) -> VerifyReport:
        async with self.manager._lock:
            with self.repo.locked():
                return await asyncio.to_thread(self.repo.verify)

    async def prune(
        self, instance: str | None, policy: RetentionPolicy, dry_run: bool = False
    ) -> tuple[list[str], list[str], int, int]:
        """(kept ids, removed ids, chunks removed, bytes freed), per instance by the policy."""
        async with self.manager._lock:
            with self.repo.locked():
                return await asyncio.to_thread(self._prune, instance, policy, dry_run)

    def _prune(
        self, instance: str | None, policy: RetentionPolicy, dry_run: bool
    ) -> tuple[list[str], list[str], int, int]:
        backups = self.repo.list(instance)
        kept: set[str] = set()
        for vm in {b.instance for b in backups}:
            mine = [(b.id, b.created_at) for b in backups if b.instance == vm]
            kept |= select_kept(mine, policy)
        removed = [b for b in backups if b.id not in kept]
        if dry_run:
            return sorted(kept), [b.id for b in removed], 0, 0
        for b in removed:
            self.repo.delete(b)
        chunks, freed = self.repo.gc()
        return sorted(kept), [b.id for b in removed], chunks, freed

    async def delete(self, backup_id: str) -> None:
        async with self.manager._lock:
            with self.repo.locked():
                self.repo.delete(self.repo.get(backup_id))
                await asyncio.to_thread(self.repo.gc)
