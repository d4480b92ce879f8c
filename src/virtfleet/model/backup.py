"""Snapshot and backup views shown by the API, CLI and web UI. Pure data."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class Snapshot(BaseModel):
    name: str
    parent: str | None = None
    created_at: datetime
    memory: bool = False  # guest RAM and device state saved too
    current: bool = False  # the VM's disks sit on top of this snapshot
    children: list[str] = Field(default_factory=list)
    quiesced: bool = False
    pause_ms: float | None = None  # how long the guest was paused (memory snapshots)


class RetentionPolicy(BaseModel):
    """Which backups a prune keeps (``storage.backup.prune.select_kept`` applies it)."""

    model_config = {"extra": "forbid"}

    last: int = Field(0, ge=0)
    daily: int = Field(0, ge=0)
    weekly: int = Field(0, ge=0)
    monthly: int = Field(0, ge=0)

    def empty(self) -> bool:
        return not (self.last or self.daily or self.weekly or self.monthly)


class BackupInfo(BaseModel):
    id: str
    instance: str
    created_at: datetime
    kind: Literal["full", "incremental"]
    parent: str | None = None
    full_reason: str | None = None
    consistency: str = "crash"
    disks: dict[str, int]  # disk name -> virtual size in bytes
    stats: dict[str, Any] = Field(default_factory=dict)


class VerifyResult(BaseModel):
    ok: bool
    backups: int
    chunks: int
    damaged_backups: list[str]
    damaged_chunks: list[str]
    unreadable_manifests: list[str]


class LastVerify(VerifyResult):
    at: datetime  # when the verify finished


class RepositoryStats(BaseModel):
    backups: int
    instances: int
    chunks: int  # distinct data chunks referenced (all-zero ranges are not stored)
    logical_bytes: int  # data the backups hold, each counted whole
    stored_bytes: int  # compressed chunk files on disk
    dedup_ratio: float  # logical_bytes / stored_bytes (0 when empty)
    last_verify: LastVerify | None = None


class PruneResult(BaseModel):
    kept: list[str]
    removed: list[str]
    chunks_removed: int
    bytes_freed: int


class Schedule(BaseModel):
    model_config = {"extra": "forbid"}

    name: str
    instance: str
    cron: str  # five fields, e.g. "0 3 * * *"
    keep_last: int = Field(0, ge=0)
    keep_daily: int = Field(0, ge=0)
    keep_weekly: int = Field(0, ge=0)
    keep_monthly: int = Field(0, ge=0)
    created_at: datetime | None = None
    last_run: datetime | None = None
    last_status: str | None = None  # "success", or the error of the last failed run
