"""Storage pools and their volumes as users see them, and the stored pool record. Pure data.

A pool is where disks live; its back-end (``dir``, ``shared-dir``, ``fake``) decides
the capabilities the rest of the code asks (``PoolCapabilities``) instead of the type.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from virtfleet.model.instance import Strict
from virtfleet.model.names import NameStr, validate_name

DEFAULT_POOL = "local"  # the data dir's disk directory, on every host
MAX_OVERCOMMIT = 100.0
Health = Literal["ok", "degraded", "unreachable", "unverified"]


class PoolCapabilities(BaseModel):
    """What a pool can do; callers ask these, never the type."""

    shared: bool = False  # one copy reachable from several hosts
    thin_clone: bool = False  # a linked clone costs nothing (qcow2 backing, RBD clone)
    snapshots: bool = False
    dirty_bitmaps: bool = False  # incremental backups
    live_migrate_without_copy: bool = False  # the target opens the same volume


EVERY_CAPABILITY = PoolCapabilities(**dict.fromkeys(PoolCapabilities.model_fields, True))


class PoolCreate(Strict):
    """``POST /1.0/storage-pools``. ``hosts``: host ids or names the pool is reachable
    from; None = every host. ``overcommit``: allocated may reach total x this."""

    name: NameStr
    type: str = Field(min_length=1, max_length=32)
    path: str = Field(min_length=1, max_length=1024)
    hosts: list[str] | None = None
    overcommit: Annotated[float, Field(gt=0, le=MAX_OVERCOMMIT)] = 1.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "pool name")


class PoolRecord(BaseModel):
    """What the store keeps of a pool. ``path`` None: each host's own data-dir disk
    directory (the default pool). ``marker``: the token written in a shared pool's
    marker file, which every host must read back."""

    name: str
    type: str
    path: str | None = None
    hosts: list[str] | None = None  # host ids; None = all
    overcommit: float = 1.0
    marker: str | None = None
    created_by: str | None = None  # host id


class HostCheck(BaseModel):
    """One host's verification of a pool: its marker read back, the lock probe."""

    host: str  # host id
    reachable: bool
    marker_ok: bool
    lock_ok: bool
    message: str = ""
    checked_at: float = 0.0


class PoolCapacity(BaseModel):
    total_bytes: int  # the filesystem's size
    allocated_bytes: int  # virtual sizes of the volumes (what guests were promised)
    used_bytes: int  # bytes the volumes really occupy
    overcommit: float  # allocated may reach total x this


class Pool(BaseModel):
    name: str
    type: str
    path: str | None
    hosts: list[str] | None
    capabilities: PoolCapabilities
    capacity: PoolCapacity
    health: Health
    checks: list[HostCheck] = []
    volumes: int = 0


class Volume(BaseModel):
    """A disk of an instance in a pool: ``<pool>/<instance>/<disk>.qcow2`` for files."""

    pool: str
    name: str  # "<instance>/<disk>"
    instance: str
    disk: str
    path: str | None  # None: not created yet (the instance has not started)
    size_bytes: int  # virtual size
    allocated_bytes: int  # really used on the pool
