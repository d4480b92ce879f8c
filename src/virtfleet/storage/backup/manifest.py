"""Backup manifests: one JSON file per backup, self-contained (every chunk of every disk).

A manifest lists the chunk hash of every ``CHUNK_SIZE`` range of each disk, so a
backup never depends on its parent's manifest: deleting any backup is safe and
incremental backups only differ in what was read from the VM. Pure data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from virtfleet.storage.backup.chunks import CHUNK_SIZE


class DiskManifest(BaseModel):
    size: int  # virtual size in bytes
    chunk_size: int = CHUNK_SIZE
    chunks: list[str]  # hash (or "zero") of each chunk_size range, in disk order
    bitmap: str | None = None  # dirty bitmap that records writes since this backup

    def chunk_len(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)


class BackupStats(BaseModel):
    bytes_read: int = 0  # bytes copied out of the VM for this backup
    bytes_written: int = 0  # compressed bytes of new chunks
    chunks_new: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    copy_seconds: float = 0.0  # QEMU's backup job (reading the VM's disks)
    store_seconds: float = 0.0  # hashing, compressing and writing chunks


class BackupManifest(BaseModel):
    id: str
    instance: str
    created_at: datetime
    kind: Literal["full", "incremental"]
    parent: str | None = None  # the backup an incremental was read relative to
    full_reason: str | None = None  # why a full backup was taken when incremental was possible
    consistency: Literal["crash", "application"] = "crash"
    spec: dict[str, Any] = Field(default_factory=dict)  # the instance spec, for restore
    disks: dict[str, DiskManifest]
    # Small files of the machine besides its disks (UEFI variable stores, "tpm/<file>" TPM
    # state: host/machinefiles.py), by relative name.
    files: dict[str, DiskManifest] = Field(default_factory=dict)
    stats: BackupStats = Field(default_factory=BackupStats)

    def chunk_set(self) -> set[str]:
        return {c for d in (*self.disks.values(), *self.files.values()) for c in d.chunks}
