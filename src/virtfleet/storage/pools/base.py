"""The storage-pool port: the ``StoragePool`` protocol every back-end implements, and
the registry that opens a stored pool record with its back-end.

Owns the contract (volumes ``<instance>/<disk>``, capacity, capabilities, the per-host
probe) and which back-end a type names. Must not know the store or instances: the
service (service/pools.py) passes records in and keeps what the probes say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from virtfleet.errors import InvalidInputError
from virtfleet.model.pools import HostCheck, PoolCapabilities, PoolRecord


@dataclass(frozen=True)
class VolumeInfo:
    instance: str
    disk: str
    path: Path
    size_bytes: int  # virtual
    allocated_bytes: int  # really used


@dataclass(frozen=True)
class Space:
    total_bytes: int
    free_bytes: int


@runtime_checkable
class StoragePool(Protocol):
    """One pool as this host sees it. Volume calls are idempotent where stated;
    errors are the project's (``NotFoundError``, ``ImageError``, ``InvalidInputError``)."""

    record: PoolRecord
    capabilities: PoolCapabilities

    def validate(self) -> None:
        """Refuse a configuration that cannot be a pool (``InvalidInputError``,
        ``PathNotAllowedError``) before anything is written."""

    def prepare(self) -> str | None:
        """Make the pool ready on the creating host; the marker token others must read
        back (None: the back-end has none). Undone by ``destroy``."""

    def probe(self, host_id: str) -> HostCheck:
        """This host's view of the pool: reachable, its marker matches, locks work."""

    def space(self) -> Space:
        """The size of what holds the volumes, and what is free there."""

    def volumes(self) -> list[VolumeInfo]:
        """Every volume in the pool, by instance then disk."""

    def volume_path(self, instance: str, disk: str) -> Path:
        """Where volume ``instance/disk`` is (or will be) opened from."""

    async def create_volume(
        self, instance: str, disk: str, size_bytes: int, backing: Path | None = None
    ) -> Path:
        """A new empty volume, or a linked clone of ``backing`` where ``thin_clone``
        (a full copy otherwise); ``AlreadyExistsError`` if it exists."""

    async def grow_volume(self, instance: str, disk: str, size_bytes: int) -> None:
        """Grow to ``size_bytes``; never shrinks (a smaller size is a no-op)."""

    def delete_volume(self, instance: str, disk: str) -> None:
        """Remove the volume; idempotent."""

    def destroy(self) -> None:
        """Remove what ``prepare`` made (the pool has no volumes); idempotent."""


@dataclass(frozen=True)
class PoolContext:
    """What a back-end needs of this host: the default pool's directory (the data dir's
    disks) and the private directories no pool may be inside or contain."""

    default_root: Path
    private: tuple[Path, ...] = ()


Factory = Callable[[PoolRecord, PoolContext], StoragePool]
_BACKENDS: dict[str, Factory] = {}


def register(kind: str) -> Callable[[Factory], Factory]:
    """Class decorator: back-end ``kind`` is made by the decorated factory."""

    def add(factory: Factory) -> Factory:
        _BACKENDS[kind] = factory
        return factory

    return add


def types() -> list[str]:
    return sorted(_BACKENDS)


def open_pool(record: PoolRecord, ctx: PoolContext) -> StoragePool:
    """The back-end of ``record``; ``InvalidInputError`` naming the known types."""
    factory = _BACKENDS.get(record.type)
    if factory is None:
        known = ", ".join(types())
        raise InvalidInputError(f"unknown pool type {record.type!r} (known: {known})")
    return factory(record, ctx)


def volume_name(instance: str, disk: str) -> str:
    return f"{instance}/{disk}"
