"""The deduplicating backup repository: chunks, manifests, verify, prune and restore.

A repository is a directory (``chunks/``, ``backups/<instance>/<id>.json``,
``tmp/``); the layout keeps every write atomic (write to ``tmp/``, rename) so a
remote target can later implement the same small surface. This package knows
nothing of QEMU or the store: it turns extents of a disk image into chunks and
manifests and back.
"""

from __future__ import annotations

from virtfleet.storage.backup.chunks import CHUNK_SIZE, ZERO, ChunkStore
from virtfleet.storage.backup.manifest import BackupManifest, DiskManifest
from virtfleet.storage.backup.prune import RetentionPolicy, select_kept
from virtfleet.storage.backup.repo import Repository, VerifyReport

__all__ = [
    "CHUNK_SIZE",
    "ZERO",
    "BackupManifest",
    "ChunkStore",
    "DiskManifest",
    "Repository",
    "RetentionPolicy",
    "VerifyReport",
    "select_kept",
]
