"""Storage pools and volumes: create, list, show, delete, this host's verification of
each pool, and admission of disks against a pool's overcommit.

Owns the pool records (``/storage-pools/``) and the per-host checks
(``/storage-pool-checks/``), the default pool ``local`` (the data dir's disks,
made at start so existing VMs need nothing), the rule that a shared pool is only
shared once every host read its marker back and its locks exclude, and refusing
to delete a pool that holds volumes. Back-ends do the I/O (storage/pools); must
not know HTTP or QEMU.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import Iterable

from virtfleet.errors import (
    AlreadyExistsError,
    ConflictError,
    InUseError,
    InvalidInputError,
    NotFoundError,
    PoolNotSharedError,
    PoolOvercommitError,
    UnknownHostError,
)
from virtfleet.model.instance import DiskSpec, InstanceSpec
from virtfleet.model.names import validate_name
from virtfleet.model.pools import (
    DEFAULT_POOL,
    Health,
    HostCheck,
    Pool,
    PoolCapacity,
    PoolCreate,
    PoolRecord,
    Volume,
)
from virtfleet.state import keys
from virtfleet.state.hosts import HostRepo
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage.pools import PoolContext, Space, StoragePool, VolumeInfo, open_pool

GIB = 1 << 30


def pool_of(disk: DiskSpec) -> str:
    """The pool a disk lives in (disks made before pools: the default one)."""
    return disk.pool or DEFAULT_POOL


def disk_bytes(disk: DiskSpec) -> int:
    return int((disk.size_gib or 0) * 1024) * (GIB // 1024)


class PoolService:
    def __init__(self, store: StateStore, host_id: str, ctx: PoolContext) -> None:
        self._store = store
        self._me = host_id
        self._ctx = ctx
        self._hosts = HostRepo(store)
        self._instances = InstanceRepo(store)

    async def ensure_default(self) -> None:
        """Make the default pool ``local`` if the store has none (a new or upgraded data
        dir: its VMs' disks are already where ``local`` keeps them)."""
        record = PoolRecord(name=DEFAULT_POOL, type="dir", path=None, created_by=self._me)
        with contextlib.suppress(ConflictError):  # made before, by this host or another
            value = record.model_dump_json().encode()
            await self._store.put(keys.pool_key(DEFAULT_POOL), value, expect_revision=0)

    async def create(self, body: PoolCreate) -> Pool:
        """A new pool, verified on this host (which must be one of its hosts);
        ``AlreadyExistsError``, ``InUseError`` (its path is another pool's),
        ``PoolNotSharedError``/``ConflictError`` if this host's probe fails. Nothing is
        left behind on failure."""
        if await self._store.get(keys.pool_key(body.name)) is not None:
            raise AlreadyExistsError(f"storage pool {body.name!r} already exists")
        hosts = None if body.hosts is None else await self._host_ids(body.hosts)
        if hosts is not None and self._me not in hosts:
            raise InvalidInputError("create a pool through one of the hosts it is reachable from")
        await self._refuse_taken_path(body.path)
        record = PoolRecord(
            name=body.name, type=body.type, path=body.path, hosts=hosts,
            overcommit=body.overcommit, created_by=self._me,
        )  # fmt: skip
        backend = open_pool(record, self._ctx)
        await asyncio.to_thread(backend.validate)
        record.marker = await asyncio.to_thread(backend.prepare)
        try:
            check = await asyncio.to_thread(backend.probe, self._me)
            _refuse_failed(backend, check)
            await self._put_new(record)
        except BaseException:
            await asyncio.to_thread(backend.destroy)  # the marker goes: nothing half-made
            raise
        await self._put_check(body.name, check)
        return await self.get(body.name)

    async def _put_new(self, record: PoolRecord) -> None:
        """Write ``record``; ``AlreadyExistsError`` if a pool of its name came meanwhile."""
        value = record.model_dump_json().encode()
        try:
            await self._store.put(keys.pool_key(record.name), value, expect_revision=0)
        except ConflictError as err:
            raise AlreadyExistsError(f"storage pool {record.name!r} already exists") from err

    async def list(self) -> builtins.list[Pool]:
        records = await self._records()
        specs = await self._specs()
        return [await self._view(r, specs) for r in records]

    async def get(self, name: str) -> Pool:
        return await self._view(await self._record(name), await self._specs())

    async def delete(self, name: str) -> dict[str, object]:
        """Remove pool ``name``; ``InUseError`` naming its volumes if it has any, or for
        the default pool. Missing: ``NotFoundError``."""
        record = await self._record(name)
        if name == DEFAULT_POOL:
            raise InUseError(f"{DEFAULT_POOL!r} is the default pool; it cannot be deleted")
        used = [v.name for v in await self.volumes(name)]
        if used:
            raise InUseError(f"storage pool {name!r} holds volumes: {', '.join(used)}")
        await asyncio.to_thread(open_pool(record, self._ctx).destroy)
        await self._store.delete_prefix(keys.pool_checks_prefix(name))
        await self._store.delete(keys.pool_key(name))
        return {"name": name, "deleted": True}

    async def volumes(self, name: str) -> builtins.list[Volume]:
        """The pool's volumes on this host, and the disks instances gave it that are not
        made yet (``path`` None), by name."""
        record = await self._record(name)
        backend = open_pool(record, self._ctx)
        found = await asyncio.to_thread(backend.volumes)
        return _volumes(name, found, await self._specs())

    async def volume(self, name: str, instance: str, disk: str) -> Volume:
        wanted = f"{instance}/{disk}"
        for vol in await self.volumes(name):
            if vol.name == wanted:
                return vol
        raise NotFoundError(f"volume {wanted!r} not found in storage pool {name!r}")

    async def verify_here(self) -> builtins.list[HostCheck]:
        """Probe every pool this host should reach and record what it found (at start:
        the marker another host wrote must read back here)."""
        checks = []
        for record in await self._records():
            if record.hosts is None or self._me in record.hosts:
                backend = open_pool(record, self._ctx)
                check = await asyncio.to_thread(backend.probe, self._me)
                await self._put_check(record.name, check)
                checks.append(check)
        return checks

    async def admit(
        self, spec: InstanceSpec, host_id: str | None = None, before: InstanceSpec | None = None
    ) -> None:
        """Refuse disks of ``spec`` in an unknown pool, one ``host_id`` cannot reach, or
        one whose allocation would pass total x overcommit (``PoolOvercommitError``).
        ``before``: the instance's spec now; only pools it grows in are checked."""
        wanted, had = _bytes_per_pool(spec), _bytes_per_pool(before) if before else {}
        for name, more in sorted(wanted.items()):
            if before is not None and more <= had.get(name, 0):
                continue  # not grown there: an overcommitted pool still keeps what it has
            record = await self._known(name)
            if record.hosts is not None and (host_id or self._me) not in record.hosts:
                raise ConflictError(f"storage pool {name!r} is not reachable from that host")
            await self._admit_bytes(record, more, skip=spec.name)

    async def _admit_bytes(self, record: PoolRecord, more: int, skip: str) -> None:
        """``more`` bytes for instance ``skip`` (whose current volumes are not counted)."""
        backend = open_pool(record, self._ctx)
        space, found = await asyncio.to_thread(_space_and_volumes, backend)
        others = [s for s in await self._specs() if s.name != skip]
        vols = _volumes(record.name, [v for v in found if v.instance != skip], others)
        allocated = sum(v.size_bytes for v in vols)
        total = space.total_bytes if space else 0
        limit = int(total * record.overcommit)
        if allocated + more > limit:
            raise PoolOvercommitError(
                f"storage pool {record.name!r} would be overcommitted: {_gib(more)} asked, "
                f"{_gib(allocated)} of {_gib(limit)} allocated "
                f"(total {_gib(total)} x {record.overcommit:g})"
            )

    async def _known(self, name: str) -> PoolRecord:
        try:
            return await self._record(name)
        except NotFoundError:
            names = ", ".join(r.name for r in await self._records())
            raise InvalidInputError(
                f"unknown storage pool {name!r}; the pools are: {names}"
            ) from None

    async def _view(self, record: PoolRecord, specs: Iterable[InstanceSpec]) -> Pool:
        backend = open_pool(record, self._ctx)
        space, found = await asyncio.to_thread(_space_and_volumes, backend)
        vols = _volumes(record.name, found, specs)
        checks, missing = await self._checks_of(record, backend)
        capacity = PoolCapacity(
            total_bytes=space.total_bytes if space else 0,
            allocated_bytes=sum(v.size_bytes for v in vols),
            used_bytes=sum(v.allocated_bytes for v in vols),
            overcommit=record.overcommit,
        )
        verified = not missing and all(_passed(c) for c in checks)
        caps = backend.capabilities.model_copy()
        caps.shared = caps.shared and verified  # refused as shared until every host agrees
        caps.live_migrate_without_copy = caps.live_migrate_without_copy and caps.shared
        return Pool(
            name=record.name, type=record.type, path=record.path, hosts=record.hosts,
            capabilities=caps, capacity=capacity,
            health=_health(checks, missing, space is not None),
            checks=checks, volumes=len(vols),
        )  # fmt: skip

    async def _checks_of(
        self, record: PoolRecord, backend: StoragePool
    ) -> tuple[builtins.list[HostCheck], builtins.list[str]]:
        """The pool's recorded checks, this host's made now if it should reach the pool and
        has none yet (a pool another host created), and the hosts that have not checked."""
        checks = await self._checks(record.name)
        expected = record.hosts or [h.id for h in await self._hosts.list()] or [self._me]
        if self._me in expected and all(c.host != self._me for c in checks):
            mine = await asyncio.to_thread(backend.probe, self._me)
            await self._put_check(record.name, mine)
            checks.append(mine)
        seen = {c.host for c in checks}
        return checks, [h for h in expected if h not in seen]

    async def _checks(self, name: str) -> builtins.list[HostCheck]:
        kvs = await self._store.list(keys.pool_checks_prefix(name))
        return [HostCheck.model_validate_json(kv.value) for kv in kvs]

    async def _put_check(self, name: str, check: HostCheck) -> None:
        check.checked_at = time.time()
        await self._store.put(keys.pool_check_key(name, self._me), check.model_dump_json().encode())

    async def _records(self) -> builtins.list[PoolRecord]:
        kvs = await self._store.list(keys.STORAGE_POOLS)
        return [PoolRecord.model_validate_json(kv.value) for kv in kvs]

    async def _record(self, name: str) -> PoolRecord:
        kv = await self._store.get(keys.pool_key(validate_name(name, "pool name")))
        if kv is None:
            raise NotFoundError(f"storage pool {name!r} not found")
        return PoolRecord.model_validate_json(kv.value)

    async def _specs(self) -> builtins.list[InstanceSpec]:
        return [rec.spec for rec in await self._instances.list(shared=True)]

    async def _host_ids(self, names: builtins.list[str]) -> builtins.list[str]:
        ids = []
        for name in names:
            try:
                ids.append((await self._hosts.get(name)).id)
            except NotFoundError:
                members = ", ".join(h.name for h in await self._hosts.list()) or "none"
                raise UnknownHostError(
                    f"unknown host {name!r}; the members are: {members}"
                ) from None
        return sorted(set(ids))

    async def _refuse_taken_path(self, path: str) -> None:
        for other in await self._records():
            if other.path is not None and other.path.rstrip("/") == path.rstrip("/"):
                raise InUseError(f"{path} is already storage pool {other.name!r}")


def _bytes_per_pool(spec: InstanceSpec) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for disk in spec.disks:
        wanted[pool_of(disk)] = wanted.get(pool_of(disk), 0) + disk_bytes(disk)
    return wanted


def _refuse_failed(backend: StoragePool, check: HostCheck) -> None:
    if check.reachable and check.marker_ok and check.lock_ok:
        return
    name = backend.record.name
    if backend.capabilities.shared:
        raise PoolNotSharedError(f"storage pool {name!r} cannot be shared: {check.message}")
    raise ConflictError(f"storage pool {name!r} is not usable here: {check.message}")


def _space_and_volumes(backend: StoragePool) -> tuple[Space | None, builtins.list[VolumeInfo]]:
    try:
        return backend.space(), backend.volumes()
    except OSError:
        return None, []  # not mounted here: unreachable, no volumes seen


def _volumes(
    pool: str, found: Iterable[VolumeInfo], specs: Iterable[InstanceSpec]
) -> builtins.list[Volume]:
    vols = {f"{v.instance}/{v.disk}": _volume(pool, v) for v in found}
    for spec in specs:
        for disk in spec.disks:
            name = f"{spec.name}/{disk.name}"
            if pool_of(disk) == pool and name not in vols:
                vols[name] = Volume(
                    pool=pool, name=name, instance=spec.name, disk=disk.name, path=None,
                    size_bytes=disk_bytes(disk), allocated_bytes=0,
                )  # fmt: skip
            elif pool_of(disk) == pool:
                vols[name].size_bytes = max(vols[name].size_bytes, disk_bytes(disk))
    return [vols[n] for n in sorted(vols)]


def _volume(pool: str, v: VolumeInfo) -> Volume:
    return Volume(
        pool=pool, name=f"{v.instance}/{v.disk}", instance=v.instance, disk=v.disk,
        path=str(v.path), size_bytes=v.size_bytes, allocated_bytes=v.allocated_bytes,
    )  # fmt: skip


def _passed(check: HostCheck) -> bool:
    return check.reachable and check.marker_ok and check.lock_ok


def _health(checks: builtins.list[HostCheck], missing: builtins.list[str], seen: bool) -> Health:
    """ok: every host passed; degraded: some failed; unreachable: none passed (or not
    even this host sees it); unverified: none failed but some hosts have not checked."""
    good = [c for c in checks if _passed(c)]
    if not good:
        return "unreachable" if checks or not seen else "unverified"
    if len(good) < len(checks):
        return "degraded"
    return "unverified" if missing else "ok"


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"
