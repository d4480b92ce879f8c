"""A directory backup repository: manifests, chunk store, lock, verify, garbage collection.

Owns the layout (``chunks/``, ``backups/<instance>/<id>.json``, ``tmp/``,
``lock``) and its consistency rules: a manifest is written last, atomically,
after every chunk it names is on disk (``syncfs``), so a crash at any moment
leaves no visible half-backup and no referenced partial chunk; unreferenced
chunks from an interrupted backup are removed by ``gc``. Must not talk to QEMU.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from virtfleet.errors import (
    BackupDamagedError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    VirtfleetError,
)
from virtfleet.storage.backup.chunks import CHUNK_SIZE, ZERO, ChunkStore, translate_os_error
from virtfleet.storage.backup.manifest import BackupManifest, DiskManifest

_ID_RE = re.compile(r"^[0-9]{8}t[0-9]{6}z-[0-9a-f]{6}$")


def new_backup_id(now: datetime | None = None) -> str:
    """Sortable, unique, path-safe: ``20261127t043012z-1a2b3c``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dt%H%M%Sz")
    return f"{stamp}-{secrets.token_hex(3)}"


def check_backup_id(backup_id: str) -> str:
    if not _ID_RE.fullmatch(backup_id):
        raise InvalidInputError(f"invalid backup id {backup_id[:80]!r}")
    return backup_id


@dataclass
class VerifyReport:
    backups: int = 0
    chunks: int = 0
    damaged_chunks: list[str] = field(default_factory=list)
    damaged_backups: list[str] = field(default_factory=list)  # ids, sorted
    unreadable_manifests: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.damaged_backups or self.unreadable_manifests)


@dataclass
class RepoStats:
    backups: int = 0
    instances: int = 0
    chunks: int = 0  # distinct data chunks the backups reference (all-zero ranges excluded)
    logical_bytes: int = 0  # data all backups hold, each counted whole: what no dedup would store
    stored_bytes: int = 0  # compressed chunk files on disk

    @property
    def dedup_ratio(self) -> float:
        return round(self.logical_bytes / self.stored_bytes, 2) if self.stored_bytes else 0.0


class Repository:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.chunks = ChunkStore(root / "chunks", self.tmp)

    def init(self) -> None:
        for sub in ("chunks", "backups", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use (one writer); the kernel drops the lock if the daemon dies.

        ``ConflictError`` at once if another process holds it (never blocks the caller)."""
        self.init()
        with open(self.root / "lock", "a+b") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                raise ConflictError(f"backup repository {self.root} is busy") from err
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def clean_tmp(self) -> None:
        """Remove leftovers of an interrupted backup (call with the lock held)."""
        for path in self.tmp.iterdir():
            path.unlink(missing_ok=True)

    # -- manifests ---------------------------------------------------------------------

    def _manifest_path(self, instance: str, backup_id: str) -> Path:
        return self.root / "backups" / instance / f"{check_backup_id(backup_id)}.json"

    def save(self, manifest: BackupManifest) -> None:
        """Publish a backup: chunks made durable first, then the manifest atomically."""
        missing = [c for c in manifest.chunk_set() if not self.chunks.exists(c)]
        if missing:
            raise VirtfleetError(
                f"refusing to publish a manifest with {len(missing)} absent chunks"
            )
        path = self._manifest_path(manifest.instance, manifest.id)
        tmp = self.tmp / f"manifest-{manifest.id}.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.sync()  # every chunk durable before anything references it
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(manifest.model_dump_json())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise translate_os_error(err, "writing the manifest") from err

    def _load(self, path: Path) -> BackupManifest:
        try:
            return BackupManifest.model_validate_json(path.read_bytes())
        except (OSError, ValidationError, ValueError) as err:
            raise BackupDamagedError(f"backup manifest {path.name} is unreadable: {err}") from err

    def list(self, instance: str | None = None) -> list[BackupManifest]:
        """Every readable backup (of ``instance``), oldest first; unreadable ones are skipped."""
        pattern = f"{instance}/*.json" if instance else "*/*.json"
        found = []
        for path in (self.root / "backups").glob(pattern):
            with contextlib.suppress(BackupDamagedError):
                found.append(self._load(path))
        return sorted(found, key=lambda m: (m.created_at, m.id))

    def get(self, backup_id: str) -> BackupManifest:
        check_backup_id(backup_id)
        for path in (self.root / "backups").glob(f"*/{backup_id}.json"):
            return self._load(path)
        raise NotFoundError(f"backup {backup_id!r} not found")

    def latest(self, instance: str) -> BackupManifest | None:
        backups = self.list(instance)
        return backups[-1] if backups else None

    def delete(self, manifest: BackupManifest) -> None:
        self._manifest_path(manifest.instance, manifest.id).unlink(missing_ok=True)

    # -- integrity ---------------------------------------------------------------------

    def missing_chunks(self, manifest: BackupManifest) -> builtins.list[str]:
        """Chunks of ``manifest`` that are absent or damaged (re-read and re-hashed)."""
        return sorted(c for c in manifest.chunk_set() if c != ZERO and not self.chunks.check(c))

    def verify(self) -> VerifyReport:
        """Re-read every chunk once; name exactly the backups that reference a bad one."""
        report = VerifyReport()
        manifests: builtins.list[BackupManifest] = []
        for path in sorted((self.root / "backups").glob("*/*.json")):
            try:
                manifests.append(self._load(path))
            except BackupDamagedError:
                report.unreadable_manifests.append(path.stem)
        referenced = set().union(*(m.chunk_set() for m in manifests)) - {ZERO}
        bad = {c for c in referenced if not self.chunks.check(c)}
        report.backups, report.chunks = len(manifests), len(referenced)
        report.damaged_chunks = sorted(bad)
        report.damaged_backups = sorted(m.id for m in manifests if m.chunk_set() & bad)
        return report

    def gc(self) -> tuple[int, int]:
        """Remove chunks no manifest references; (chunks removed, bytes freed). Needs the lock."""
        live = set().union(*(m.chunk_set() for m in self.list()))
        removed = freed = 0
        for chunk in list(self.chunks.all()):
            if chunk not in live:
                freed += self.chunks.remove(chunk)
                removed += 1
        return removed, freed

    def stats(self) -> RepoStats:
        """Sizes and counts of the repository (reads every manifest, no chunk)."""
        manifests = self.list()
        live: set[str] = set()
        logical = 0
        for m in manifests:
            for disk in m.disks.values():
                data = [(i, c) for i, c in enumerate(disk.chunks) if c != ZERO]
                logical += sum(disk.chunk_len(i) for i, _ in data)
                live.update(c for _, c in data)
        return RepoStats(
            backups=len(manifests),
            instances=len({m.instance for m in manifests}),
            chunks=len(live),
            logical_bytes=logical,
            stored_bytes=self.stored_bytes(),
        )

    def stored_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.root / "chunks").glob("*/*.zst"))

    # -- restore -----------------------------------------------------------------------

    def write_raw(self, manifest: BackupManifest, disk: str, out: Path) -> None:
        """Write ``disk`` of ``manifest`` as a sparse raw image (zero chunks stay holes).

        Refuses with ``BackupDamagedError`` (every missing or damaged chunk listed)
        before writing anything.
        """
        self.require_intact(manifest)
        dm = manifest.disks[disk]
        with open(out, "wb") as fh:
            fh.truncate(dm.size)
            for index, chunk in enumerate(dm.chunks):
                if chunk != ZERO:
                    fh.seek(index * dm.chunk_size)
                    fh.write(self.chunks.get(chunk, dm.chunk_len(index)))

    def put_files(self, files: dict[str, bytes]) -> dict[str, DiskManifest]:
        """Store small files (a VM's UEFI variable stores, TPM state) as chunks, by name."""
        stored: dict[str, DiskManifest] = {}
        for name, data in files.items():
            ranges = range(0, len(data), CHUNK_SIZE)
            chunks = [self.chunks.put(data[i : i + CHUNK_SIZE])[0] for i in ranges]
            stored[name] = DiskManifest(size=len(data), chunks=chunks)
        return stored

    def read_file(self, manifest: BackupManifest, name: str) -> bytes:
        """The bytes of file ``name`` of ``manifest`` (``VirtfleetError`` if a chunk is bad)."""
        entry = manifest.files[name]
        return b"".join(self.chunks.get(c, entry.chunk_len(i)) for i, c in enumerate(entry.chunks))

    def require_intact(self, manifest: BackupManifest) -> None:
        """``BackupDamagedError`` listing every missing or damaged chunk of ``manifest``."""
        missing = self.missing_chunks(manifest)
        if missing:
            shown = ", ".join(c[:12] for c in missing[:8])
            raise BackupDamagedError(
                f"backup {manifest.id} is damaged: {len(missing)} missing or corrupt chunks "
                f"({shown}{', ...' if len(missing) > 8 else ''})",
                chunks=missing,
            )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
