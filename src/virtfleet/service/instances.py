"""Instance use cases: create, inspect, change power state and delete instances.

Owns the rules a request must pass before anything is written (names, images,
host capacity, power-state guards) and the translation of a request into the
*desired* state in the store, plus the operation that waits (through the
store's watch) until the agent has observed it. Must not touch QEMU, processes
or files: the per-host agent carries desired state out and writes the status.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

from pydantic import BaseModel, Field

from virtfleet.errors import (
    AlreadyExistsError,
    CapacityError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    RevisionConflictError,
    TimeoutError_,
    VirtfleetError,
)
from virtfleet.model.defaults import complete
from virtfleet.model.event import Event
from virtfleet.model.host import HostFacts
from virtfleet.model.instance import (
    DesiredPower,
    DesiredState,
    InstanceSpec,
    InstanceStatus,
    Ownership,
    PowerState,
    RestartPolicy,
)
from virtfleet.model.names import validate_name
from virtfleet.model.network import Lease, NicAddress
from virtfleet.model.operation import Operation
from virtfleet.model.resources import Change, pending
from virtfleet.service.capacity import CapacityService
from virtfleet.service.disks import DiskService
from virtfleet.service.errcodes import error_from_code
from virtfleet.service.imagefetch import ImageFetcher
from virtfleet.service.listing import Mask, Page, Tokens, ViewCache, render
from virtfleet.service.networks import NetworkService
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.service.placement import Placement
from virtfleet.service.pools import PoolService
from virtfleet.service.preconditions import IfMatch, Version, claim, stale, version_of
from virtfleet.service.waiting import wait_until
from virtfleet.state.keys import instance_prefix
from virtfleet.state.repos import EventLog, InstanceRecord, InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage.images import OCI_FORMAT, ROOTFS_FORMAT, ImageRecord, ImageStore

Prepare = Callable[[], Awaitable[None]]  # makes a new instance's disk files
Action = Literal["start", "stop", "restart", "pause", "resume"]
ACTIONS: tuple[Action, ...] = ("start", "stop", "restart", "pause", "resume")
DELETING = "deleting"
_P = PowerState
# Which observed power states each action may start from (a forced stop: any but stopped).
ALLOWED: dict[Action, tuple[PowerState, ...]] = {
    "start": (_P.STOPPED, _P.CRASHED),
    "stop": (_P.RUNNING, _P.PAUSED, _P.STARTING),
    "pause": (_P.RUNNING,),
    "resume": (_P.PAUSED,),
    "restart": (_P.RUNNING, _P.PAUSED),
}
TARGET: dict[Action, DesiredPower] = {
    "start": DesiredPower.RUNNING,
    "stop": DesiredPower.STOPPED,
    "pause": DesiredPower.PAUSED,
    "resume": DesiredPower.RUNNING,
    "restart": DesiredPower.RUNNING,
}
DELETABLE = (_P.STOPPED, _P.CRASHED)
_LIVE = (_P.STARTING, _P.RUNNING, _P.PAUSED, _P.STOPPING)


class Instance(BaseModel):
    """What users see of one instance: its spec, desired and observed state, and the mode."""

    name: str
    spec: InstanceSpec
    status: InstanceStatus
    desired: DesiredState
    mode: str  # "kvm"/"tcg" in use; when not running, what the next start would use
    owner: Ownership | None = None  # the owning host's id and the ownership epoch
    addresses: list[NicAddress] = Field(default_factory=list)  # leased IPs of network NICs
    pending: list[Change] = []  # spec changes the running VM does not have (yet)

    @classmethod
    def of(cls, rec: InstanceRecord, default_accel: str = "tcg") -> Instance:
        live = rec.status.power in _LIVE and rec.status.accel is not None
        if rec.spec.kind == "container":
            mode = "container"  # OS-level: shares the host kernel
        elif live and rec.status.accel:
            mode = rec.status.accel.value
        else:
            mode = default_accel if rec.spec.accel.value == "auto" else rec.spec.accel.value
        waiting = pending(rec.status.applied, rec.spec.normalized())
        return cls(
            name=rec.name,
            spec=rec.spec,
            status=rec.status,
            desired=rec.desired,
            mode=mode,
            owner=rec.owner,
            pending=waiting,
        )


def check_action(action: Action, power: str, force: bool = False) -> None:
    """Raise ``InvalidStateError(power, required)`` unless ``action`` is allowed from ``power``."""
    if power == DELETING:
        raise InvalidStateError(DELETING, "not being deleted")
    allowed = ALLOWED[action]
    if action == "stop" and force:
        allowed = tuple(p for p in PowerState if p is not _P.STOPPED)
    if power not in allowed:
        raise InvalidStateError(power, [p.value for p in allowed])


def check_power_action(action: Action, rec: InstanceRecord, power: str, force: bool) -> None:
    """``check_action``, and a stop of a down instance whose restart policy is due to start
    it again: that stop keeps it down (the agent's policy restart honours it)."""
    down = power in (_P.STOPPED.value, _P.CRASHED.value)
    if action == "stop" and down and _restart_due(rec):
        return
    check_action(action, power, force)


def _restart_due(rec: InstanceRecord) -> bool:
    return (
        rec.desired.power is DesiredPower.RUNNING
        and rec.spec.restart_policy is not RestartPolicy.NO
    )


def check_deletable(power: str, force: bool) -> None:
    if not force and power not in (*DELETABLE, DELETING):
        raise InvalidStateError(power, "stopped or crashed (or deleted with force)")


class InstanceService:
    """Instance use cases over the store; every slow step is an operation on ``instance/{name}``."""

    def __init__(
        self,
        store: StateStore,
        images: ImageStore,
        facts: HostFacts,
        runner: OperationRunner,
        events: EventLog,
        wait_timeout_s: float = 120.0,
        owner: str | None = None,
        *,
        networks: NetworkService | None = None,
        capacity: CapacityService | None = None,
        disks: DiskService | None = None,
        placement: Placement | None = None,
        fetcher: ImageFetcher | None = None,
        pools: PoolService | None = None,
    ) -> None:
        """``owner``: the id of this host; ``placement`` chooses the owner of a new instance
        among the members (without it, this host owns the instances created here);
        ``fetcher`` brings the images the owner lacks from a member that has them."""
        self._store = store
        self.fetcher = fetcher
        self._owner = owner
        self.placement = placement
        self._repo = InstanceRepo(store)
        self._images = images
        self._facts = facts
        self._runner = runner
        self._events = events
        self.wait_timeout_s = wait_timeout_s
        self.networks = networks
        # Power state each instance will have once its queued operations are done: the
        # synchronous guards check against it so that queued requests do not fail.
        self._projected: dict[str, tuple[str, str]] = {}  # name -> (operation id, power)
        self.capacity = capacity  # admission control, when wired
        self.disks = disks  # kept disks refuse a new instance, when wired
        self.pools = pools  # disks' pools must exist, be reachable and have room, when wired
        self._views = ViewCache(Instance.model_fields)  # serialised views, per revision
        self._tokens = Tokens()  # continue tokens of paged listings

    async def list(self) -> builtins.list[Instance]:
        records = await self._repo.list()
        remote = await self._remote_leases(r.spec for r in records)
        return [self._view(rec, remote=remote) for rec in records]

    async def list_json(
        self,
        fields: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        mask: Mask | None = None,
    ) -> Page:
        """Instances (in name order) as a JSON array of views with only ``fields`` (comma
        separated; all if None), at most ``limit`` of them, after the page that
        ``continue_token`` ended; ``mask``: what a viewer may see of a view.

        ``UnknownFieldError``/``InvalidContinueError`` for a bad field or token. Views come
        from a cache kept per record revision (no model is validated or dumped again).
        """
        chosen = self._views.check_fields(fields)
        after = self._tokens.after(continue_token) if continue_token is not None else None
        records = [r for r in await self._records() if after is None or r.name > after]
        more = limit is not None and len(records) > limit
        records = records[:limit] if limit is not None else records
        remote = await self._remote_leases(r.spec for r in records)
        items = [self._json(rec, mask, chosen, remote) for rec in records]
        token = self._tokens.make(records[-1].name) if more else None
        return Page(render(items), token)

    async def _records(self) -> builtins.list[InstanceRecord]:
        """Every record (shared: read only), from the capacity tally when it is current
        (no store scan: 3,000 keys for 1,000 instances), else from the store."""
        tally = self.capacity.tally if self.capacity is not None else None
        if tally is not None and await tally.current():
            return tally.records()
        return await self._repo.list(shared=True)

    def _json(
        self,
        rec: InstanceRecord,
        mask: Mask | None,
        fields: tuple[str, ...],
        remote: dict[str, builtins.list[Lease]] | None = None,
    ) -> bytes:
        addresses = self.networks.addresses(rec.spec, remote) if self.networks is not None else []
        revisions = (rec.spec_revision, rec.desired_revision, rec.status_revision)
        key = (*revisions, rec.owner_revision, repr(addresses))
        return self._views.json(rec.name, key, lambda: self._view(rec, addresses), mask, fields)

    def _view(
        self,
        rec: InstanceRecord,
        addresses: builtins.list[NicAddress] | None = None,
        remote: dict[str, builtins.list[Lease]] | None = None,
    ) -> Instance:
        view = Instance.of(rec, self._facts.default_accel)
        if addresses is not None:
            view.addresses = addresses
        elif self.networks is not None:
            view.addresses = self.networks.addresses(rec.spec, remote)
        return view

    async def _remote_leases(
        self, specs: Iterable[InstanceSpec]
    ) -> dict[str, builtins.list[Lease]] | None:
        """Leases other hosts reported (addresses of NICs on their networks); not read for
        instances without network NICs (a GET of one stays one store read)."""
        if self.networks is None or not any(n.mode == "network" for s in specs for n in s.nics):
            return None
        return await self.networks.remote_leases()

    async def get(self, name: str) -> Instance:
        """The instance view; ``NotFoundError`` if there is no such instance."""
        rec = await self._repo.get(validate_name(name, "instance name"))
        return self._view(rec, remote=await self._remote_leases([rec.spec]))

    async def get_versioned(self, name: str) -> tuple[Instance, Version]:
        """The instance view and the ``Version`` it reflects (one read: they agree)."""
        rec = await self._repo.get(validate_name(name, "instance name"))
        return self._view(rec, remote=await self._remote_leases([rec.spec])), version_of(rec)

    async def create(
        self,
        spec: InstanceSpec,
        start: bool = False,
        prepare: Prepare | None = None,
        reuse_disks: bool = False,
        host: str | None = None,
    ) -> Operation:
        """Validate now, write spec + desired state, and return an ``instance.create`` operation.

        The instance is owned by ``host`` (a member's id or name: ``UnknownHostError`` if
        none) or, without one, by the host placement chooses (this host when alone).

        Raises before writing anything: ``NotFoundError`` (image), ``CapacityError``,
        ``AlreadyExistsError``, ``KeptDisksError`` (the name has disks kept from a deleted
        instance, unless ``reuse_disks``: then they are its disks). With ``start`` the
        operation waits for the agent to run it; a failed start removes the instance (and
        its disks, unless reused). ``prepare`` (not with ``start``): makes the instance's
        disk files once its name is claimed, first on its queue (a start asked for
        meanwhile waits for it); if it fails the instance is removed again and its error
        raised. When the owner lacks the file of an image of the spec, the instance is
        written stopped and the operation has the owner fetch it first (byte progress in
        the operation; a failed fetch removes the instance), then asks for the start.
        """
        if start and prepare is not None:
            raise InvalidInputError("an instance whose disks are prepared is started after")
        spec = complete(spec).normalized()  # unset fields: the one place defaults come from
        owner = await self._owner_for(spec, host)
        await self._validate_new(spec)
        if self.disks is not None and not reuse_disks:
            self.disks.refuse_kept(spec.name, reusable=True)
        if self.pools is not None:
            await self.pools.admit(spec, owner)  # the pools exist, are reachable, have room
        if self.networks is not None:
            # networks exist (on the owner); unique MACs
            spec = await self.networks.prepare_nics(spec, owner or self._owner)
        fetch = await self._to_fetch(spec, owner)  # the owner lacks these images' files
        run_now = start and not fetch  # else it is started once they are there
        power = DesiredPower.RUNNING if run_now else DesiredPower.STOPPED
        target = f"instance/{spec.name}"
        done = None
        if not start and not fetch and prepare is None and await self._runner.idle(target):
            # Nothing to wait for: the operation is recorded done in the create's commit.
            done = self._runner.finished(
                "instance.create", target, {"name": spec.name, "power": _P.STOPPED.value}
            )
        created = Event(
            kind="instance.created", target=target, message=f"instance {spec.name} created"
        )
        guards, macs = await self.networks.mac_claims(spec) if self.networks else ([], [])
        async with self._admission(spec, run_now and owner == self._owner):  # name claim reserves
            also = [await self._events.entry(created), *([done[1]] if done else []), *macs]
            desired = DesiredState(power=power, generation=1)
            await self._repo.create(spec, desired, also, guards, owner=owner)
        if done is not None:
            await self._runner.counted()
            return done[0]

        async def run(ctx: OpContext) -> dict[str, Any]:
            if fetch:
                await self._fetch(spec.name, fetch, owner, ctx, reuse_disks)
            if prepare is not None:
                await self._prepare(spec.name, prepare)
            if not start:
                return {"name": spec.name, "power": _P.STOPPED.value}
            await ctx.progress(10, f"waiting for the agent to start {spec.name}")
            try:
                generation = await self._start_fetched(spec, owner) if fetch else 1
                rec = await self._await_generation(spec.name, generation, self.wait_timeout_s)
            except (VirtfleetError, asyncio.CancelledError):
                # create+start is one request: a failed or cancelled start leaves no VM behind.
                await asyncio.shield(self._undo_create(spec.name, delete_disks=not reuse_disks))
                raise
            return _result(rec)

        return await self._submit("instance.create", spec.name, run, "running" if start else None)

    async def _to_fetch(self, spec: InstanceSpec, owner: str | None) -> builtins.list[str]:
        """The images of ``spec`` whose files its owning host lacks."""
        host = owner or self._owner
        if self.fetcher is None or host is None:
            return []
        names = sorted({i for i in (spec.image, *(d.image for d in spec.disks)) if i})
        return await self.fetcher.missing(names, host)

    async def _fetch(
        self, name: str, images: builtins.list[str], owner: str | None, ctx: OpContext,
        reuse_disks: bool,
    ) -> None:  # fmt: skip
        """Bring ``images`` to the owning host; if that fails the instance is removed again
        (it never ran: nothing of it stays) and the fetch's error raised."""
        assert self.fetcher is not None
        try:
            await self.fetcher.ensure(images, owner or self._owner or "", ctx.progress)
        except (VirtfleetError, asyncio.CancelledError):
            await asyncio.shield(self._undo_create(name, delete_disks=not reuse_disks))
            raise

    async def _start_fetched(self, spec: InstanceSpec, owner: str | None) -> int:
        """Ask for the start of a new instance whose images had to be fetched first."""
        async with self._admission(spec, owner == self._owner):
            running = {"power": DesiredPower.RUNNING}
            return await self._bump(
                spec.name, lambda d, g: d.model_copy(update={**running, "generation": g})
            )

    async def _owner_for(self, spec: InstanceSpec, host: str | None) -> str | None:
        """The owning host of a new instance: ``host`` if named, else placement's choice."""
        if self.placement is None:
            if host is not None:
                raise InvalidInputError("this server does not place instances on hosts")
            return self._owner
        if host is not None:
            return await self.placement.named(host)
        return await self.placement.choose(spec)

    def _admission(self, spec: InstanceSpec, start: bool) -> AbstractAsyncContextManager[None]:
        """Capacity reserved for ``spec`` while the block writes its start (when wired)."""
        if not start or self.capacity is None:
            return contextlib.nullcontext()
        return self.capacity.reserving(spec.name, spec.memory_mib, spec.vcpus)

    async def _prepare(self, name: str, prepare: Prepare) -> None:
        """Run ``prepare`` for the claimed ``name``; on failure remove the instance again
        (its files are ``prepare``'s to clean up: the directory may hold kept disks)."""
        try:
            await prepare()
        except BaseException:
            await asyncio.shield(self._undo_create(name, delete_disks=False))
            raise

    async def _undo_create(self, name: str, delete_disks: bool = True) -> None:
        gen = await self._bump(name, lambda d, g: _desired_deleted(d, g, True, delete_disks))
        await self._await_gone(name, gen, self.wait_timeout_s)

    async def change_state(
        self,
        name: str,
        action: Action,
        force: bool = False,
        timeout_s: float = 30.0,
        if_match: IfMatch = None,
    ) -> Operation:
        """Ask for a power change; ``InvalidStateError`` now if the state does not allow it,
        ``PreconditionFailedError`` (nothing written) if not at a version in ``if_match``.

        The operation re-checks when its turn comes (earlier operations on the instance
        run first), bumps the desired generation and waits until the agent observed it,
        raising the error the agent recorded.
        """
        rec = await self._repo.get(validate_name(name, "instance name"))
        check_power_action(action, rec, self._expected_power(rec), force)
        if action == "start" and self.capacity is not None:
            # Early answer only: the operation admits again, as a reservation, when it runs.
            await self.capacity.admit(name, rec.spec.memory_mib, rec.spec.vcpus)
        await claim(self._store, rec, if_match)

        async def run(ctx: OpContext) -> dict[str, Any]:
            current = await self._repo.get(name)
            check_power_action(action, current, _power_of(current), force)
            async with self._admission(current.spec, action == "start"):
                gen, rev = await self._bump_at(
                    name, lambda d, g: _desired_for(action, d, g, force, timeout_s), current
                )
            wait_s = timeout_s + self.wait_timeout_s
            try:
                return _result(await self._await_generation(name, gen, wait_s, rev))
            except asyncio.CancelledError:
                if action == "stop":  # called off: the instance stays as it was
                    await asyncio.shield(self._call_off(name, gen, current.desired.power))
                raise

        # The message is stored with the operation: no progress write between the desired
        # state and the agent acting on it (a container starts in tens of milliseconds).
        message = f"waiting for the agent to {action} {name}"
        return await self._submit(f"instance.{action}", name, run, TARGET[action].value, message)

    async def _call_off(self, name: str, generation: int, power: DesiredPower) -> None:
        """Ask again for ``power`` unless the agent already carried out ``generation``; the
        agent ends a stop it is still waiting on when it sees this."""
        rec = await self._repo.find(name)
        if rec is not None and rec.status.observed_generation < generation:
            again = {"power": power}
            await self._bump(name, lambda d, g: d.model_copy(update={**again, "generation": g}))

    async def delete(
        self, name: str, force: bool = False, delete_disks: bool = False, if_match: IfMatch = None
    ) -> Operation:
        """Delete an instance; ``InvalidStateError`` if it runs (unless ``force``),
        ``PreconditionFailedError`` if not at a version in ``if_match`` (or missing).

        Idempotent: deleting a missing instance is a successful operation. The operation
        asks the agent (desired ``deleted``) and waits until the instance's keys are gone.
        """
        rec = await self._repo.find(validate_name(name, "instance name"))
        if rec is not None:
            check_deletable(self._expected_power(rec), force)
            await claim(self._store, rec, if_match)
        elif if_match is not None:
            raise stale(name)

        async def run(ctx: OpContext) -> dict[str, Any]:
            current = await self._repo.find(name)
            if current is None:
                return {"name": name, "deleted": False}
            check_deletable(_power_of(current), force)
            gen = await self._bump(name, lambda d, g: _desired_deleted(d, g, force, delete_disks))
            await ctx.progress(10, f"waiting for the agent to delete {name}")
            await self._await_gone(name, gen, current.desired.timeout_s + self.wait_timeout_s)
            return {"name": name, "deleted": True}  # the agent emits instance.deleted

        return await self._submit("instance.delete", name, run, DELETING)

    async def _validate_new(self, spec: InstanceSpec) -> None:
        images = {spec.image, *(d.image for d in spec.disks)}
        for image in sorted(i for i in images if i is not None):
            record = await self._images.get(image)
            if (record.format in CONTAINER_FORMATS) != (spec.kind == "container"):
                raise InvalidInputError(_image_mismatch(spec.kind, image, record.format))
            if image == spec.image:
                _check_container_mode(spec, record)
        if spec.kind == "container" and not spec.image:
            raise InvalidInputError(f"container {spec.name!r} needs an image (its rootfs)")
        short = []
        if spec.vcpus > self._facts.cpus:
            short.append(f"{spec.vcpus} vCPUs asked, {self._facts.cpus} on this host")
        if self._facts.memory_mib and spec.memory_mib > self._facts.memory_mib:
            short.append(f"{spec.memory_mib} MiB memory asked, {self._facts.memory_mib} MiB here")
        if short:
            raise CapacityError(f"instance {spec.name!r} does not fit: " + "; ".join(short))
        if await self._repo.find(spec.name) is not None:
            raise AlreadyExistsError(f"instance {spec.name!r} already exists")

    # -- for sibling services that change an instance (service/resources.py) -------------

    async def submit_change(
        self, kind: str, name: str, fn: Callable[[OpContext], Awaitable[dict[str, Any]]]
    ) -> Operation:
        """Queue ``fn`` as an operation on the instance, behind its earlier operations."""
        return await self._submit(kind, name, fn, None)

    async def next_generation(self, name: str) -> int:
        """Bump the desired generation (desired state otherwise unchanged): the agent
        reconciles the instance's spec again. Returns the generation to await."""
        return await self._bump(name, lambda d, g: d.model_copy(update={"generation": g}))

    async def await_generation(self, name: str, generation: int) -> InstanceRecord:
        """Wait until the agent observed ``generation``; raise the error it recorded."""
        return await self._await_generation(name, generation, self.wait_timeout_s)

    def expected_power(self, rec: InstanceRecord) -> str:
        return self._expected_power(rec)

    def _expected_power(self, rec: InstanceRecord) -> str:
        entry = self._projected.get(rec.name)
        if entry is not None:
            if self._runner.active(entry[0]):
                return entry[1]
            del self._projected[rec.name]
        return _power_of(rec)

    async def _submit(
        self,
        kind: str,
        name: str,
        fn: Callable[[OpContext], Awaitable[dict[str, Any]]],
        projected: str | None,
        message: str = "",
    ) -> Operation:
        op = await self._runner.submit(kind, f"instance/{name}", fn, message)
        if projected is not None:
            self._projected[name] = (op.id, projected)
        return op

    async def _bump(
        self,
        name: str,
        change: Callable[[DesiredState, int], DesiredState],
        read: InstanceRecord | None = None,
    ) -> int:
        """Write the next desired generation with compare-and-swap; return the generation.
        ``read``: the record, read with no await since (the first try need not read it again)."""
        return (await self._bump_at(name, change, read))[0]

    async def _bump_at(
        self,
        name: str,
        change: Callable[[DesiredState, int], DesiredState],
        read: InstanceRecord | None = None,
    ) -> tuple[int, int]:
        """``_bump``; also the store revision of the write (the agent cannot have observed
        the generation at it, so a wait for it may start watching from there)."""
        for _ in range(5):
            rec, read = read or await self._repo.get(name), None
            gen = max(rec.desired.generation, rec.status.observed_generation) + 1
            try:
                desired = change(rec.desired, gen)
                return gen, await self._repo.put_desired(name, desired, rec.desired_revision)
            except RevisionConflictError:
                continue
        raise RevisionConflictError(f"instance {name!r} desired state kept changing; try again")

    async def _await_generation(
        self, name: str, generation: int, timeout_s: float, after_revision: int | None = None
    ) -> InstanceRecord:
        """Wait until the agent observed ``generation``; raise the error it recorded.
        ``after_revision``: the revision that wrote ``generation`` (watch from there on).

        ``NotFoundError`` if the instance vanished meanwhile, ``TimeoutError_`` on timeout.
        """
        rec = await self._await_agent(
            name,
            lambda r: r is None or r.status.observed_generation >= generation,
            timeout_s,
            after_revision,
        )
        if rec is None:
            raise NotFoundError(f"instance {name!r} was deleted")
        return rec

    async def _await_gone(self, name: str, generation: int, timeout_s: float) -> None:
        """Wait until the instance's keys are gone, or raise the error the agent recorded."""
        await self._await_agent(
            name,
            lambda r: (
                r is None
                or (r.status.observed_generation >= generation and r.status.error_code is not None)
            ),
            timeout_s,
        )

    async def _await_agent(
        self,
        name: str,
        ready: Callable[[InstanceRecord | None], bool],
        timeout_s: float,
        after_revision: int | None = None,
    ) -> InstanceRecord | None:
        async def check() -> tuple[InstanceRecord | None] | None:
            rec = await self._repo.find(name)
            return (rec,) if ready(rec) else None

        prefix = instance_prefix(name)
        found = await wait_until(self._store, prefix, check, timeout_s, after_revision)
        if found is None:
            raise TimeoutError_(
                f"instance {name!r}: the agent did not act within {timeout_s:g}s (is it running?)"
            )
        rec = found[0]
        if rec is not None and rec.status.error_code:
            raise error_from_code(rec.status.error_code, rec.status.error_message or "")
        return rec

    async def _emit(self, kind: str, name: str, message: str) -> None:
        await self._events.append(Event(kind=kind, target=f"instance/{name}", message=message))


CONTAINER_FORMATS = (ROOTFS_FORMAT, OCI_FORMAT)


def _check_container_mode(spec: InstanceSpec, record: ImageRecord) -> None:
    """An application container needs an imported OCI image with a command to run."""
    app = spec.container_mode == "app" or (spec.container_mode is None and record.oci)
    if spec.kind != "container" or not app:
        return
    if record.oci is None:
        raise InvalidInputError(
            f"image {record.name!r} is no OCI image: its containers run as system containers"
        )
    config = record.oci.config
    if not config.entrypoint and not config.cmd and spec.cmd is None:
        raise InvalidInputError(f"image {record.name!r} has no entrypoint or cmd: give a cmd")


def _image_mismatch(kind: str, image: str, fmt: str) -> str:
    container = "a container rootfs (builder container-*) or OCI image (import-oci)"
    want = container if kind == "container" else "a disk image"
    return f"image {image!r} ({fmt}) is not {want}: a {kind} cannot use it"


def _power_of(rec: InstanceRecord) -> str:
    return DELETING if rec.desired.power is DesiredPower.DELETED else rec.status.power.value


def _desired_for(
    action: Action, desired: DesiredState, gen: int, force: bool, timeout_s: float
) -> DesiredState:
    update: dict[str, Any] = {
        "power": TARGET[action],
        "generation": gen,
        "force": force,
        "timeout_s": timeout_s,
    }
    if action == "restart":
        update["restart"] = gen
    return desired.model_copy(update=update)


def _desired_deleted(
    desired: DesiredState, gen: int, force: bool, delete_disks: bool
) -> DesiredState:
    update = {
        "power": DesiredPower.DELETED,
        "generation": gen,
        "force": force,
        "delete_disks": delete_disks,
    }
    return desired.model_copy(update=update)


def _result(rec: InstanceRecord) -> dict[str, Any]:
    return {
        "name": rec.name,
        "power": rec.status.power.value,
        "generation": rec.status.observed_generation,
    }
