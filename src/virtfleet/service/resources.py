"""Changing an instance's resources (PATCH /1.0/instances/{name}, ``vm set``).

Owns validating a ``ResourcePatch`` against the instance (bounds fixed at boot,
the boot disk, shrinking, power state), admission of growth, writing the new
spec and asking the agent to apply it, and answering per field whether it took
effect live or waits for the next boot. A change the agent fails to apply is
rolled back to the previous spec, so what is stored never claims more than
what runs or will run. Must not touch QEMU or files: the agent applies the
spec (host/resources.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from virtfleet.errors import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    RevisionConflictError,
    VirtfleetError,
)
from virtfleet.model.instance import DiskSpec, InstanceSpec, NicSpec
from virtfleet.model.names import validate_name
from virtfleet.model.operation import Operation
from virtfleet.model.resources import POLICY, Change, ResourcePatch, changes
from virtfleet.service.capacity import CapacityService, counts
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OpContext
from virtfleet.service.preconditions import IfMatch, claim
from virtfleet.state.repos import InstanceRecord, InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage.images import ImageStore

LiveStats = Callable[[str], Awaitable[dict[str, Any]]]
# Live changes a paused guest cannot take part in (it must answer the hot-plug).
_NEED_GUEST = {"memory", "vcpus", "disk-add", "disk-remove", "disk-grow", "nic-add", "nic-remove"}


class ResourceService:
    def __init__(
        self,
        store: StateStore,
        instances: InstanceService,
        capacity: CapacityService | None = None,
        live_stats: LiveStats | None = None,
        images: ImageStore | None = None,
    ) -> None:
        self._store = store
        self._repo = InstanceRepo(store)
        self._instances = instances
        self._capacity = capacity
        self._live_stats = live_stats
        self._images = images

    async def update(self, name: str, patch: ResourcePatch, if_match: IfMatch = None) -> Operation:
        """Validate ``patch`` now (nothing is written on an error), then queue an
        ``instance.resize`` operation whose result lists every change with its mode."""
        rec = await self._repo.get(validate_name(name, "instance name"))
        if patch.is_empty():
            raise InvalidInputError("nothing to change: give at least one resource field")
        spec, _ = await self._plan(rec, patch)
        if self._instances.pools is not None:  # added or grown disks fit their pools
            owner = rec.owner.host if rec.owner is not None else None
            await self._instances.pools.admit(spec, owner, before=rec.spec)
        if self._capacity is not None and _grows(rec, spec):
            # Early answer only: the operation admits again, as a reservation, as it writes.
            await self._capacity.admit(rec.name, spec.memory_mib, spec.vcpus)
        await claim(self._store, rec, if_match)

        async def run(ctx: OpContext) -> dict[str, Any]:
            current = await self._repo.get(name)
            spec, planned = await self._plan(current, patch)
            await ctx.progress(10, f"applying {len(planned)} change(s) to {name}")
            done = await self._apply(current, spec)
            return {"name": name, "changes": [c.model_dump() for c in planned], **done}

        return await self._instances.submit_change("instance.resize", name, run)

    async def live(self, name: str) -> dict[str, Any]:
        """What the hypervisor reports now (balloon actual, guest memory statistics, vCPUs)."""
        rec = await self._repo.get(validate_name(name, "instance name"))
        stats: dict[str, Any] = {}
        if self._live_stats is not None and rec.status.applied is not None:
            stats = await self._live_stats(name)
        return {"name": name, "applied": rec.status.applied, "live": stats}

    async def _plan(
        self, rec: InstanceRecord, patch: ResourcePatch
    ) -> tuple[InstanceSpec, list[Change]]:
        """The new spec and its changes, each marked live or next-boot; raises on bad input."""
        old = rec.spec.normalized()
        spec = _patched(old, patch, await self._sizes(old))
        power = self._instances.expected_power(rec)
        running = power in ("running", "paused")
        planned = changes(rec.status.applied or old, spec) if running else changes(old, spec)
        if not running:
            planned = [c.model_copy(update={"mode": "next-boot", "reason": f"the VM is {power}"})
                       for c in planned]  # fmt: skip
        if power not in ("running", "paused", "stopped", "crashed"):
            raise InvalidStateError(power, ["running", "paused", "stopped", "crashed"])
        if running and spec.os is not old.os:  # a guest never sees its OS type change under it
            what = f"instance {rec.name!r}"
            raise InvalidStateError(power, "stopped to change its os", what=what)
        if power == "paused" and any(c.mode == "live" and c.kind in _NEED_GUEST for c in planned):
            raise InvalidStateError("paused", "running: resume it first (the guest takes part)")
        return spec, planned

    def _admission(
        self, rec: InstanceRecord, spec: InstanceSpec
    ) -> AbstractAsyncContextManager[None]:
        """Capacity reserved for the grown ``spec`` while the block writes it."""
        if self._capacity is None or not _grows(rec, spec):
            return contextlib.nullcontext()
        return self._capacity.reserving(rec.name, spec.memory_mib, spec.vcpus)

    async def _sizes(self, spec: InstanceSpec) -> dict[str, float]:
        """Each disk's size in GiB: its ``size_gib``, else its image's virtual size."""
        sizes: dict[str, float] = {}
        for disk in spec.disks:
            if disk.size_gib is not None:
                sizes[disk.name] = disk.size_gib
            elif disk.image is not None and self._images is not None:
                with contextlib.suppress(NotFoundError):
                    record = await self._images.get(disk.image)
                    sizes[disk.name] = record.virtual_size_bytes / 2**30
        return sizes

    async def _apply(self, rec: InstanceRecord, spec: InstanceSpec) -> dict[str, Any]:
        """Admit and write ``spec``, let the agent apply it; on its error restore the old spec."""
        try:
            async with self._admission(rec, spec):  # the written spec is the reservation
                await self._repo.put_spec(spec, expect_revision=rec.spec_revision)
        except RevisionConflictError as err:
            raise RevisionConflictError(f"instance {rec.name!r} changed meanwhile; retry") from err
        gen = await self._instances.next_generation(rec.name)
        try:
            done = await self._instances.await_generation(rec.name, gen)
        except VirtfleetError:
            await asyncio.shield(self._restore(rec.name, rec.spec))
            raise
        return {"generation": gen, "pending": [c.model_dump() for c in _pending(done)]}

    async def _restore(self, name: str, spec: InstanceSpec) -> None:
        current = await self._repo.find(name)
        if current is None:
            return
        await self._repo.put_spec(spec, expect_revision=current.spec_revision)
        gen = await self._instances.next_generation(name)
        with contextlib.suppress(VirtfleetError):  # the original error is the one to report
            await self._instances.await_generation(name, gen)


def _grows(rec: InstanceRecord, spec: InstanceSpec) -> bool:
    """Whether ``spec`` needs admission: more vCPUs or memory for an instance that holds
    capacity (a stopped one is admitted when it starts)."""
    old = rec.spec.normalized()
    return (spec.memory_mib > old.memory_mib or spec.vcpus > old.vcpus) and counts(rec)


def _pending(rec: InstanceRecord) -> list[Change]:
    return [] if rec.status.applied is None else changes(rec.status.applied, rec.spec.normalized())


def _patched(old: InstanceSpec, patch: ResourcePatch, sizes: dict[str, float]) -> InstanceSpec:
    """``old`` with ``patch`` applied; ``InvalidInputError`` / ``NotFoundError`` naming
    the field for anything the VM cannot be given."""
    given = patch.model_fields_set
    update: dict[str, Any] = {"max_memory_mib": old.boot_memory_mib}  # pin it: it is the boot RAM
    for field in ("memory_mib", "max_memory_mib", "vcpus", "max_vcpus"):
        if field in given and getattr(patch, field) is not None:
            update[field] = getattr(patch, field)
    for field in ("cpu_limit_pct", "cpu_weight", "min_memory_mib"):
        if field in given:
            update[field] = getattr(patch, field)  # explicit null removes the limit
    for field in (*POLICY, "firmware", "tpm", "os"):
        if field in given and getattr(patch, field) is not None:
            update[field] = getattr(patch, field)
    _check_bounds(old.model_copy(update=update))
    update["disks"] = _disks(old, patch, sizes)
    update["nics"] = _nics(old, patch)
    try:
        return InstanceSpec.model_validate(old.model_copy(update=update).model_dump())
    except ValueError as err:
        raise InvalidInputError(f"invalid change: {_first_error(err)}") from err


def _check_bounds(spec: InstanceSpec) -> None:
    low, high = spec.min_memory_mib, spec.boot_memory_mib
    if low is not None and spec.memory_mib < low:
        raise InvalidInputError(f"memory {spec.memory_mib} MiB is below the minimum {low} MiB")
    if spec.memory_mib > high:
        raise InvalidInputError(
            f"memory {spec.memory_mib} MiB is above the maximum {high} MiB "
            "(raise max_memory_mib; it applies at the next boot)"
        )
    top = spec.max_vcpus or spec.vcpus
    if spec.vcpus > top:
        raise InvalidInputError(
            f"{spec.vcpus} vCPUs is more than max_vcpus {top} "
            "(raise max_vcpus; it applies at the next boot)"
        )


def _disks(old: InstanceSpec, patch: ResourcePatch, sizes: dict[str, float]) -> list[DiskSpec]:
    disks = {d.name: d for d in old.disks}
    for name in patch.disks_remove:
        disk = _known(disks, name, "disk")
        if disk.boot:
            raise InvalidInputError(f"disk {name!r} is the boot disk; it cannot be removed")
        del disks[name]
    for disk in patch.disks_add:
        if disk.name in disks:
            raise AlreadyExistsError(f"the VM already has a disk {disk.name!r}")
        if disk.image is not None or disk.boot:
            raise InvalidInputError(
                f"disk {disk.name!r}: an added disk is an empty volume (size_gib) or an "
                "existing volume of this VM, never an image or a boot disk"
            )
        disks[disk.name] = disk
    for name, size in patch.disk_sizes_gib.items():
        disk = _known(disks, name, "disk")
        current = sizes.get(name, disk.size_gib)
        if current is not None and size < current:
            raise InvalidInputError(
                f"disk {name!r} is {current:g} GiB; shrinking to {size:g} GiB would destroy data"
            )
        disks[name] = disk.model_copy(update={"size_gib": size})
    for name, limits in patch.disk_limits.items():
        disks[name] = _known(disks, name, "disk").model_copy(update={"limits": limits})
    return list(disks.values())


def _nics(old: InstanceSpec, patch: ResourcePatch) -> list[NicSpec]:
    named = zip(old.nic_names, old.nics, strict=True)
    nics = {n: nic.model_copy(update={"name": n}) for n, nic in named}
    for name in patch.nics_remove:
        _known(nics, name, "NIC")
        del nics[name]
    for nic in patch.nics_add:
        name = nic.name or _free_nic_name(nics)
        if name in nics:
            raise AlreadyExistsError(f"the VM already has a NIC {name!r}")
        nics[name] = nic.model_copy(update={"name": name})
    if not patch.nics_add and not patch.nics_remove:
        return list(old.nics)  # unchanged: keep the stored form
    return list(nics.values())


def _free_nic_name(nics: dict[str, NicSpec]) -> str:
    return next(f"nic{i}" for i in range(len(nics) + 1) if f"nic{i}" not in nics)


def _known(items: dict[str, Any], name: str, what: str) -> Any:
    if name not in items:
        raise NotFoundError(f"the VM has no {what} {name!r} (it has: {', '.join(items) or 'none'})")
    return items[name]


def _first_error(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", err)).removeprefix("Value error, ")
    return str(err)
