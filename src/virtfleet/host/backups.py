"""Backups of this host's VMs into a ``storage.backup.Repository``, and restores from it.

Owns the backup procedure: decide full vs incremental (a persistent dirty
bitmap ``vf-<last backup id>`` on each disk's active layer that QEMU reports
consistent, else full with the reason), take the point in time by image
fleecing (a temporary qcow2 overlay next to the disk receives old data before
the guest overwrites it), read that view through QEMU's NBD server (only the
chunks the bitmap marks dirty when incremental), chunk it and publish the
manifest. The previous bitmap is dropped only after the manifest
is safely stored, so a failed or killed backup never loses changes. Leftovers
of a killed daemon (jobs, nodes, exports, bitmaps, temp files of backups and
restores) are removed at the next start (``recover``) and again by the next
backup. Must not touch the store: the service layer records results.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtfleet.drivers.base import SupportsBlockJobs
from virtfleet.drivers.qemu.blockjobs import Bitmap, BlockJobs, Fleece
from virtfleet.drivers.qemu.nbd import NBDClient, export_ranges
from virtfleet.errors import ConflictError, NotFoundError, VirtfleetError
from virtfleet.host import machinefiles
from virtfleet.host.quiesce import NoQuiesce, Quiescer
from virtfleet.model.instance import InstanceSpec
from virtfleet.storage import qemuimg
from virtfleet.storage.backup.chunks import ChunkStore
from virtfleet.storage.backup.ingest import ingest, ingest_ranges
from virtfleet.storage.backup.manifest import BackupManifest, BackupStats, DiskManifest
from virtfleet.storage.backup.prune import RetentionPolicy, select_kept
from virtfleet.storage.backup.repo import Repository, VerifyReport, new_backup_id

if TYPE_CHECKING:
    from virtfleet.host.agent import Agent
    from virtfleet.host.snapshots import SnapshotManager

log = logging.getLogger(__name__)
Report = Callable[[int, str], Coroutine[Any, Any, None]]
PROGRESS_EVERY_S = 0.25
JOB_PREFIX, NODE_PREFIX, BITMAP_PREFIX, FROZEN_PREFIX = "vfbk-", "vfbt", "vf-", "vffz-"


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
        self.repo_lock = asyncio.Lock()  # one repository job at a time (backups, verify, prune)

    def _scratch(self, manifest: BackupManifest, disk: str) -> Path:
        """The backup job's temporary target: next to the VM's disk, never in the repository,
        so a full repository fails our own writes, never QEMU's (no guest write is at risk)."""
        return self.agent.disks.dir(manifest.instance) / f".backup-{manifest.id}-{disk}.qcow2"

    async def backup(
        self, spec: InstanceSpec, *, full: bool = False, report: Report = _quiet
    ) -> BackupManifest:
        """Back up every disk of ``spec`` (running: live, point in time; stopped: offline)."""
        async with self.repo_lock:
            with self.repo.locked():
                self.repo.clean_tmp()
                for leftover in self.agent.disks.dir(spec.name).glob(".backup-*"):
                    leftover.unlink()  # a killed daemon's temporary backup target
                jobs = self._jobs(spec.name)
                parent = self.repo.latest(spec.name)
                manifest = BackupManifest(
                    id=new_backup_id(),
                    instance=spec.name,
                    created_at=datetime.now(UTC),
                    kind="full",
                    spec=spec.model_dump(mode="json"),
                    disks={},
                )
                if jobs is None:
                    await self._offline(spec, manifest, report)
                else:
                    await self._online(jobs, spec, manifest, parent, full, report)
                return manifest

    async def _take_machine(self, manifest: BackupManifest) -> None:
        """Store the VM's machine-state files (UEFI variables, TPM state: small, whole) as
        they are now, the backup's point in time (machinefiles.py: each file whole)."""
        files = await asyncio.to_thread(machinefiles.read, self.agent.disks.dir(manifest.instance))
        manifest.files = await asyncio.to_thread(self.repo.put_files, files)

    async def _save(self, manifest: BackupManifest) -> None:
        """Store the finished ``manifest``, its duration (since ``created_at``) included."""
        elapsed = datetime.now(UTC) - manifest.created_at
        manifest.stats.seconds = round(elapsed.total_seconds(), 3)
        await asyncio.to_thread(self.repo.save, manifest)

    # -- recovery ----------------------------------------------------------------------

    async def recover(self, instances: list[InstanceSpec]) -> None:
        """After a daemon restart (running VMs re-adopted): remove what a killed backup or
        restore left behind: fleecing jobs, nodes, NBD exports and stale bitmaps in each
        running VM's QEMU (the guest runs on), then temporary files next to the disks and in
        the repository. Finished backups and their chunks are never touched."""
        async with self.repo_lock:
            for spec in instances:
                jobs = self._jobs(spec.name)
                if jobs is None:
                    continue
                try:
                    await self._recover_qemu(jobs, spec)
                except VirtfleetError as err:  # the next backup of this VM tries again
                    log.warning("cleaning backup leftovers in %s failed: %s", spec.name, err)
            await asyncio.to_thread(self._recover_files)

    async def _recover_qemu(self, jobs: BlockJobs, spec: InstanceSpec) -> None:
        await _clean_qemu(jobs)
        parent = await asyncio.to_thread(self.repo.latest, spec.name)
        keep = BITMAP_PREFIX + parent.id if parent else None  # the next incremental's base
        for disk in spec.disks:
            with contextlib.suppress(NotFoundError):  # a disk not attached has no bitmaps
                await _drop_stale_bitmaps(jobs, await jobs.active_node(disk.name), keep)
        self._nbd_path(spec.name).unlink(missing_ok=True)

    def _recover_files(self) -> None:
        # Every disk directory: a restore into a new instance may have lost its record too.
        for pattern in ("*/.backup-*", "*/.restore-*"):
            for leftover in self.agent.disks.root.glob(pattern):
                log.info("removing %s, left by an interrupted backup or restore", leftover)
                leftover.unlink(missing_ok=True)
        if not self.repo.tmp.is_dir():
            return  # no repository yet (never made here: it may be a mount not there yet)
        try:
            with self.repo.locked():
                self.repo.clean_tmp()
        except ConflictError:  # another process writes to the repository: its files
            log.warning("backup repository %s is busy: its tmp/ is left alone", self.repo.root)

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
        sizes = {d.name: await self._size(spec.name, d.name) for d in spec.disks}
        since, reason = await self._plan(jobs, nodes, sizes, parent, full)
        manifest.kind = "incremental" if since else "full"
        manifest.parent = parent.id if since and parent else None
        manifest.full_reason = reason
        fleeces = [_fleece(nodes[d.name], manifest.id, since) for d in spec.disks]
        try:
            await self._freeze_point(jobs, spec, manifest, fleeces, sizes)
            await self._read_all(jobs, spec, manifest, fleeces, sizes, parent, report)
            await self._save(manifest)
        except BaseException:
            for f in fleeces:
                with contextlib.suppress(Exception):
                    await jobs.remove_bitmap(f.node, f.new_bitmap)
            raise
        finally:
            await self._unfleece(jobs, manifest, spec, fleeces)
        for node in nodes.values():  # safely stored: the old bitmap is no longer needed
            if since:
                with contextlib.suppress(VirtfleetError):
                    await jobs.remove_bitmap(node, since)

    async def _size(self, vm: str, disk: str) -> int:
        return await qemuimg.virtual_size(self.agent.disks.path(vm, disk))

    async def _plan(
        self,
        jobs: BlockJobs,
        nodes: dict[str, str],
        sizes: dict[str, int],
        parent: BackupManifest | None,
        full: bool,
    ) -> tuple[str | None, str | None]:
        """(bitmap to read since, or None for full; why full). Drops stale bitmaps."""
        want = BITMAP_PREFIX + parent.id if parent else None
        reason: str | None = None
        for disk, node in nodes.items():
            maps = {b.name: b for b in await _drop_stale_bitmaps(jobs, node, want)}
            why = _why_full(disk, sizes[disk], maps.get(want or ""), parent, full)
            reason = reason or why
        if parent is None:
            return None, "first backup of this instance"
        return (None, reason) if reason else (want, None)

    async def _freeze_point(
        self,
        jobs: BlockJobs,
        spec: InstanceSpec,
        manifest: BackupManifest,
        fleeces: list[Fleece],
        sizes: dict[str, int],
    ) -> None:
        """Take the point in time of all disks at one instant (quiesced if the agent answers):
        from then on QEMU copies old data into each fleecing overlay before the guest
        overwrites it, so the overlay reads as the disk was at that instant."""
        started = time.monotonic()
        for disk, f in zip(spec.disks, fleeces, strict=True):
            target = self._scratch(manifest, disk.name)
            await qemuimg.create(target, sizes[disk.name])
            qemuimg.private(target)
            await jobs.add_qcow2(f.target, target, backing=f.node)
        quiesced = await self.quiescer.freeze(spec.name)
        manifest.consistency = "application" if quiesced else "crash"
        try:
            await jobs.start_fleecing(fleeces)
            await self._take_machine(manifest)
        finally:
            if quiesced:  # the point in time is taken: the guest may write again
                await self.quiescer.thaw(spec.name)
        manifest.stats.copy_seconds += round(time.monotonic() - started, 3)

    async def _read_all(
        self,
        jobs: BlockJobs,
        spec: InstanceSpec,
        manifest: BackupManifest,
        fleeces: list[Fleece],
        sizes: dict[str, int],
        parent: BackupManifest | None,
        report: Report,
    ) -> None:
        """Read each disk's point-in-time view over NBD (only dirty chunks when incremental)."""
        sock = self._nbd_path(spec.name)
        sock.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(sock))
            listener.listen(4)
            await jobs.serve_nbd(listener)
        for index, (disk, f) in enumerate(zip(spec.disks, fleeces, strict=True)):
            await jobs.export(f.target, f.target, f.frozen if f.since else None)
            base = parent.disks.get(disk.name) if f.since and parent else None
            size = sizes[disk.name]
            work = functools.partial(
                _read_export, sock, f.target, f.frozen if f.since else None,
                size, self.repo.chunks, base, manifest.stats,
            )  # fmt: skip
            share = (index / len(spec.disks), (index + 1) / len(spec.disks))
            chunks = await self._store(work, manifest.stats, share, disk.name, report)
            manifest.disks[disk.name] = DiskManifest(size=size, chunks=chunks, bitmap=f.new_bitmap)

    async def _unfleece(
        self, jobs: BlockJobs, manifest: BackupManifest, spec: InstanceSpec, fleeces: list[Fleece]
    ) -> None:
        """Drop the NBD exports, fleecing jobs, overlays and frozen bitmaps (each may be gone)."""
        with contextlib.suppress(Exception):
            await jobs.stop_nbd()
        for f in fleeces:
            with contextlib.suppress(Exception):
                await jobs.cancel_job(f.job)
            with contextlib.suppress(Exception):
                await jobs.delete_node(f.target)
            if f.since:
                with contextlib.suppress(Exception):
                    await jobs.remove_bitmap(f.node, f.frozen)
        for disk in spec.disks:
            self._scratch(manifest, disk.name).unlink(missing_ok=True)
        self._nbd_path(spec.name).unlink(missing_ok=True)

    def _nbd_path(self, vm: str) -> Path:
        """The NBD socket in the VM's run directory (root-only: the socket reads its disks)."""
        driver = self.agent.driver
        if not isinstance(driver, SupportsBlockJobs):
            raise VirtfleetError("backups of running VMs need the QEMU driver")
        return driver.nbd_socket(vm)

    def _jobs(self, vm: str) -> BlockJobs | None:
        """The running VM's block layer (None: stopped, or a driver without one)."""
        driver = self.agent.driver
        return driver.block_jobs(vm) if isinstance(driver, SupportsBlockJobs) else None

    async def _store(
        self,
        work: Callable[[Callable[[float], None]], list[str]],
        stats: BackupStats,
        share: tuple[float, float],
        disk: str,
        report: Report,
    ) -> list[str]:
        """Run ``work(progress)`` (reading + chunking) in a thread, reporting its progress."""
        loop = asyncio.get_running_loop()
        lo, hi = share
        last = [-1.0, 0.0]  # pct, when

        def progress(frac: float) -> None:
            pct, now = int(100 * (lo + (hi - lo) * frac)), time.monotonic()
            # a few updates a second: each is a store write the reading threads would wait on
            if pct != last[0] and (now - last[1] >= PROGRESS_EVERY_S or frac >= 1):
                last[:] = [pct, now]
                asyncio.run_coroutine_threadsafe(report(pct, f"storing {disk}"), loop)

        started = time.monotonic()
        chunks = await asyncio.to_thread(work, progress)
        stats.store_seconds += round(time.monotonic() - started, 3)
        return chunks

    # -- stopped VMs -------------------------------------------------------------------

    async def _offline(self, spec: InstanceSpec, manifest: BackupManifest, report: Report) -> None:
        """Read whole disks (no QEMU to track changes), then leave a bitmap for the next one."""
        self.snapshots.require_disks(spec)
        manifest.full_reason = "the VM is stopped: whole disks are read"
        await self._take_machine(manifest)
        new_bitmap = BITMAP_PREFIX + manifest.id
        for index, disk in enumerate(spec.disks):
            active = self.agent.disks.path(spec.name, disk.name)
            size = await qemuimg.virtual_size(active)
            target = self._scratch(manifest, disk.name)
            try:
                await qemuimg.convert(active, "qcow2", target, "qcow2")
                share = (index / len(spec.disks), (index + 1) / len(spec.disks))
                stats = manifest.stats
                work = functools.partial(ingest, target, size, self.repo.chunks, None, stats)
                chunks = await self._store(work, stats, share, disk.name, report)
            finally:
                target.unlink(missing_ok=True)
            manifest.disks[disk.name] = DiskManifest(size=size, chunks=chunks, bitmap=new_bitmap)
        await self._save(manifest)
        for disk in spec.disks:
            await self._reset_offline_bitmaps(
                self.agent.disks.path(spec.name, disk.name), new_bitmap
            )

    async def _reset_offline_bitmaps(self, image: Path, keep: str) -> None:
        head = (await qemuimg.info(image, "qcow2", shared=True))[0]
        for bitmap in head.get("format-specific", {}).get("data", {}).get("bitmaps", []):
            if bitmap["name"].startswith(BITMAP_PREFIX):
                await qemuimg.bitmap(image, "remove", bitmap["name"])
        await qemuimg.bitmap(image, "add", keep)

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
            files = {name: self.repo.read_file(manifest, name) for name in manifest.files}
            made += self.agent.disks.write_machine(vm, files)
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
            await qemuimg.convert(raw, "raw", new, "qcow2")
        except BaseException:
            new.unlink(missing_ok=True)
            raise
        finally:
            raw.unlink(missing_ok=True)
        new.replace(dest)
        return [dest]


def _read_export(
    sock: Path,
    export: str,
    bitmap: str | None,
    size: int,
    store: ChunkStore,
    base: DiskManifest | None,
    stats: BackupStats,
    progress: Callable[[float], None],
) -> list[str]:
    """The disk's chunk list: chunks touching dirty (or, without a bitmap, data) ranges read
    from the NBD export, the rest inherited from ``base``. Runs in a worker thread."""
    ranges = export_ranges(sock, export, bitmap)
    with NBDClient(sock, export) as client:
        return ingest_ranges(client.read_ahead, ranges, size, store, base, stats, progress)


def _fleece(node: str, backup_id: str, since: str | None) -> Fleece:
    token = secrets.token_hex(6)
    return Fleece(
        node=node,
        target=NODE_PREFIX + token,
        job=JOB_PREFIX + token,
        new_bitmap=BITMAP_PREFIX + backup_id,
        since=since,
        frozen=FROZEN_PREFIX + token,
    )


async def _clean_qemu(jobs: BlockJobs) -> None:
    """Drop the NBD server, jobs and fleecing nodes a killed daemon left in QEMU (a backup
    owns the VM's NBD server; leftover frozen bitmaps go in ``_plan``)."""
    await jobs.stop_nbd()
    for job in await jobs.jobs():
        if str(job["id"]).startswith(JOB_PREFIX):
            await jobs.cancel_job(job["id"])
    for node in await jobs.node_names():
        if node.startswith(NODE_PREFIX):
            with contextlib.suppress(VirtfleetError):
                await jobs.delete_node(node)


async def _drop_stale_bitmaps(jobs: BlockJobs, node: str, keep: str | None) -> list[Bitmap]:
    """Remove our bitmaps on ``node`` but ``keep`` (left by an interrupted backup); the rest."""
    kept = []
    for bitmap in await jobs.bitmaps(node):
        if bitmap.name.startswith((BITMAP_PREFIX, FROZEN_PREFIX)) and bitmap.name != keep:
            await jobs.remove_bitmap(node, bitmap.name)
        else:
            kept.append(bitmap)
    return kept


def _why_full(
    disk: str, size: int, bitmap: Any, parent: BackupManifest | None, full: bool
) -> str | None:
    if full:
        return "full backup requested"
    if parent is None:
        return "first backup of this instance"
    if disk not in parent.disks:
        return f"disk {disk} is new since the last backup"
    if parent.disks[disk].size != size:
        return f"disk {disk} was resized since the last backup"
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
        async with self.manager.repo_lock:
            with self.repo.locked():
                return await asyncio.to_thread(self.repo.verify)

    async def prune(
        self, instance: str | None, policy: RetentionPolicy, dry_run: bool = False
    ) -> tuple[list[str], list[str], int, int]:
        """(kept ids, removed ids, chunks removed, bytes freed), per instance by the policy."""
        async with self.manager.repo_lock:
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
        async with self.manager.repo_lock:
            with self.repo.locked():
                self.repo.delete(self.repo.get(backup_id))
                await asyncio.to_thread(self.repo.gc)
