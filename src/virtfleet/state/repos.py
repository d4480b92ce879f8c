"""Typed repositories over a ``StateStore``: instances, flat model records, the event log.

The keys they read and write are built in ``state/keys.py`` (the one place).

Ownership has a key of its own (not fields of the desired state) because it is the
fencing token: the agent makes every status write conditional on the owner key's
``mod_revision`` it read (a ``Compare`` in the same txn). Desired state changes with
every user request; were the epoch in it, each request would fence out the agent's
writes, and a conditional write could not tell "the user asked for something" from
"the instance moved". Spec and desired state stay host-independent.
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

from virtfleet.errors import AlreadyExistsError, ConflictError, NotFoundError
from virtfleet.model.event import Event
from virtfleet.model.instance import DesiredState, InstanceSpec, InstanceStatus, Ownership
from virtfleet.model.operation import Operation
from virtfleet.state.bulk import delete_keys
from virtfleet.state.keys import (
    EVENTS,
    INSTANCES,
    OPERATIONS,
    instance_key,
    instance_name_of,
    instance_prefix,
)
from virtfleet.state.store import (
    Compare,
    Delete,
    KeyValue,
    Put,
    StateStore,
    TxnResult,
    WatchEvent,
)

M = TypeVar("M", bound=BaseModel)
MAX_EVENTS = 2000


def _dump(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


@dataclass
class InstanceRecord:
    spec: InstanceSpec
    desired: DesiredState
    status: InstanceStatus
    spec_revision: int = 0
    desired_revision: int = 0
    status_revision: int = 0
    owner: Ownership | None = None  # None: no host owns it (only stores from before owners)
    owner_revision: int = 0

    @property
    def name(self) -> str:
        return self.spec.name


MAX_PARSED = 20_000  # parsed instance parts kept per repository (cleared beyond)


class InstanceRepo:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        # key -> (mod revision, model parsed from it): listing 200 instances parsed 600
        # documents (~9 ms) on every start's admission check; now only changed ones.
        self._parsed: dict[str, tuple[int, BaseModel]] = {}

    async def create(
        self,
        spec: InstanceSpec,
        desired: DesiredState,
        also: Sequence[Put] = (),
        guards: Sequence[Compare] = (),
        owner: str | None = None,
    ) -> None:
        """Write spec, desired and a stopped status in one transaction; fail if the name exists.
        ``also``: further writes in the same commit (its event, its operation record, its
        MAC claims); ``guards``: further compares (``ConflictError`` if one misses);
        ``owner``: the host that owns it from now (epoch 1)."""
        key = instance_key(spec.name, "owner")
        owned = [Put(key, _dump(Ownership(host=owner)))] if owner is not None else []
        ok = await self.store.txn(
            [Compare(instance_key(spec.name, "spec"), 0), *guards],
            [
                Put(instance_key(spec.name, "spec"), _dump(spec)),
                Put(instance_key(spec.name, "desired"), _dump(desired)),
                Put(instance_key(spec.name, "status"), _dump(InstanceStatus())),
                *owned,
                *also,
            ],
        )
        if not ok and (not guards or await self.store.get(instance_key(spec.name, "spec"))):
            raise AlreadyExistsError(f"instance {spec.name!r} already exists")
        if not ok:
            raise ConflictError(f"what instance {spec.name!r} claims was just taken (its MAC)")

    async def get(self, name: str) -> InstanceRecord:
        rec = await self.find(name)
        if rec is None:
            raise NotFoundError(f"instance {name!r} not found")
        return rec

    async def find(self, name: str) -> InstanceRecord | None:
        kvs = {kv.key: kv for kv in await self.store.list(instance_prefix(name))}
        return self._record(name, kvs)

    async def list(self, shared: bool = False) -> builtins.list[InstanceRecord]:
        """Every instance's record. ``shared``: records sharing the parsed models this
        repository keeps, for callers that only read them (copies are ~half the cost of
        listing 200 instances)."""
        return (await self.snapshot(shared))[0]

    async def snapshot(self, shared: bool = False) -> tuple[builtins.list[InstanceRecord], int]:
        """``list`` and the revision it was read at (a watch from there misses nothing)."""
        found = await self.store.range(INSTANCES)
        by_name: dict[str, dict[str, object]] = {}
        for kv in found.kvs:
            name = instance_name_of(kv.key)
            if name:
                by_name.setdefault(name, {})[kv.key] = kv
        records = [self._record(n, kvs, not shared) for n, kvs in sorted(by_name.items())]
        return [r for r in records if r is not None], found.revision

    def _record(
        self, name: str, kvs: Mapping[str, object], copy: bool = True
    ) -> InstanceRecord | None:
        spec = kvs.get(instance_key(name, "spec"))
        if not isinstance(spec, KeyValue):
            return None
        desired = kvs.get(instance_key(name, "desired"))
        status = kvs.get(instance_key(name, "status"))
        owner = kvs.get(instance_key(name, "owner"))
        return InstanceRecord(
            spec=self._parse(spec, InstanceSpec, copy),
            desired=self._parse(desired, DesiredState, copy)
            if isinstance(desired, KeyValue)
            else DesiredState(),
            status=self._parse(status, InstanceStatus, copy)
            if isinstance(status, KeyValue)
            else InstanceStatus(),
            spec_revision=spec.mod_revision,
            desired_revision=desired.mod_revision if isinstance(desired, KeyValue) else 0,
            status_revision=status.mod_revision if isinstance(status, KeyValue) else 0,
            owner=self._parse(owner, Ownership, copy) if isinstance(owner, KeyValue) else None,
            owner_revision=owner.mod_revision if isinstance(owner, KeyValue) else 0,
        )

    def _parse(self, kv: KeyValue, model: type[M], copy: bool = True) -> M:
        """``kv``'s model: (a copy of) the one parsed at this revision, else parsed now."""
        hit = self._parsed.get(kv.key)
        if hit is None or hit[0] != kv.mod_revision:
            if len(self._parsed) >= MAX_PARSED:
                self._parsed.clear()  # keys of deleted instances pile up otherwise
            hit = (kv.mod_revision, model.model_validate_json(kv.value))
            self._parsed[kv.key] = hit
        parsed = hit[1]
        assert isinstance(parsed, model)
        return parsed.model_copy() if copy else parsed  # callers may change their copy

    async def put_spec(self, spec: InstanceSpec, expect_revision: int | None = None) -> int:
        return await self.store.put(
            instance_key(spec.name, "spec"), _dump(spec), expect_revision=expect_revision
        )

    async def put_desired(
        self, name: str, desired: DesiredState, expect_revision: int | None = None
    ) -> int:
        return await self.store.put(
            instance_key(name, "desired"), _dump(desired), expect_revision=expect_revision
        )

    async def put_status(self, name: str, status: InstanceStatus, also: Sequence[Put] = ()) -> int:
        """Write ``status``; ``also``: further writes in the same commit (an event)."""
        put = Put(instance_key(name, "status"), _dump(status))
        if not also:
            return await self.store.put(put.key, put.value)
        return (await self.store.txn([], [put, *also])).revision

    async def owner(self, name: str) -> tuple[Ownership | None, int]:
        """``name``'s ownership and its key's revision ((None, 0): none)."""
        kv = await self.store.get(instance_key(name, "owner"))
        if kv is None:
            return None, 0
        return self._parse(kv, Ownership), kv.mod_revision

    async def move_owner(self, name: str, host: str, expect_revision: int) -> Ownership | None:
        """Give ``name`` to ``host`` with the next epoch, if its owner key is still at
        ``expect_revision`` (0: it has none); the new ownership, None if it moved meanwhile."""
        kv = await self.store.get(instance_key(name, "owner"))
        if (kv.mod_revision if kv else 0) != expect_revision:
            return None
        epoch = self._parse(kv, Ownership).epoch + 1 if kv is not None else 1
        moved = Ownership(host=host, epoch=epoch)
        key = instance_key(name, "owner")
        ok = await self.store.txn([Compare(key, expect_revision)], [Put(key, _dump(moved))])
        return moved if ok else None

    async def put_status_owned(
        self,
        name: str,
        status: InstanceStatus,
        owner_revision: int,
        also: Sequence[Put] = (),
        status_revision: int | None = None,
    ) -> TxnResult:
        """Write ``status`` (and ``also``) only if the owner key is still at
        ``owner_revision`` (and the status at ``status_revision``, if given): the write of
        an agent fenced by the ownership it read. Falsy: the instance moved (or is gone)."""
        compares = [Compare(instance_key(name, "owner"), owner_revision)]
        if status_revision is not None:
            compares.append(Compare(instance_key(name, "status"), status_revision))
        put = Put(instance_key(name, "status"), _dump(status))
        return await self.store.txn(compares, [put, *also])

    async def remove_owned(self, name: str, owner_revision: int) -> bool:
        """Delete every key of ``name`` if its owner key is still at ``owner_revision``."""
        keys = [kv.key for kv in await self.store.list(instance_prefix(name))]
        compare = [Compare(instance_key(name, "owner"), owner_revision)]
        return bool(await self.store.txn(compare, [Delete(key) for key in keys]))

    async def remove(self, name: str) -> None:
        await self.store.delete_prefix(instance_prefix(name))

    def watch(self, after_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        return self.store.watch(INSTANCES, after_revision)


class ModelRepo:
    """Flat ``prefix/{id}`` records of one pydantic model (operations, images)."""

    def __init__(self, store: StateStore, prefix: str, model: type[M]) -> None:
        self.store = store
        self.prefix = prefix
        self.model: type[BaseModel] = model

    async def put(self, key: str, value: BaseModel, expect_revision: int | None = None) -> int:
        return await self.store.put(
            self.prefix + key, _dump(value), expect_revision=expect_revision
        )

    def put_of(self, key: str, value: BaseModel) -> Put:
        """The write of ``value`` at ``key``, for a caller's transaction."""
        return Put(self.prefix + key, _dump(value))

    async def get_raw(self, key: str) -> tuple[BaseModel, int] | None:
        kv = await self.store.get(self.prefix + key)
        if kv is None:
            return None
        return self.model.model_validate_json(kv.value), kv.mod_revision

    async def delete(self, key: str) -> bool:
        return await self.store.delete(self.prefix + key)

    async def items(self) -> builtins.list[tuple[BaseModel, int]]:
        """Every record with its ``mod_revision`` (for a compare-and-swap write back)."""
        return [
            (self.model.model_validate_json(kv.value), kv.mod_revision)
            for kv in await self.store.list(self.prefix)
        ]

    async def values(self) -> builtins.list[BaseModel]:
        return [
            self.model.model_validate_json(kv.value) for kv in await self.store.list(self.prefix)
        ]


class EventLog:
    """Append-only event log kept to ``MAX_EVENTS`` entries.

    An entry's key is the revision read before the write, this writer's random id and
    its own count: unique, so concurrent writers (tasks, daemons) never land on one key,
    and only roughly in order. An event's place is the revision its commit got
    (``mod_revision``): readers and the pruner order by it, so nothing is reordered.
    """

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._count = 0
        self._writer = secrets.token_hex(6)

    async def append(self, event: Event) -> Event:
        entry = await self.entry(event)
        rev = await self.store.put(entry.key, entry.value)
        return event.model_copy(update={"revision": rev})

    async def entry(self, event: Event) -> Put:
        """``event`` as the ``Put`` appending it, for the very next commit (which may
        carry other writes: one commit instead of two)."""
        self._count += 1
        count = self._count  # taken before awaiting: other appends go on meanwhile
        if count % 100 == 0:
            await self._prune()
        rev = await self.store.revision()
        return Put(f"{EVENTS}{rev + 1:020d}-{self._writer}-{count:012d}", _dump(event))

    async def _ordered(self) -> builtins.list[KeyValue]:
        """Every entry in commit order (entries are never rewritten: one revision each)."""
        return sorted(await self.store.list(EVENTS), key=lambda kv: kv.mod_revision)

    async def _prune(self) -> None:
        kvs = await self._ordered()
        extra = kvs[: max(0, len(kvs) - (MAX_EVENTS - 1))]  # room for the one being added
        # batched commits, not one per event (they were ~100 every 100 appends)
        await delete_keys(self.store, [kv.key for kv in extra])

    async def recent(self, limit: int = 100) -> builtins.list[Event]:
        kvs = (await self._ordered())[-limit:]
        return [
            Event.model_validate_json(kv.value).model_copy(update={"revision": kv.mod_revision})
            for kv in kvs
        ]

    def watch(self, after_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        return self.store.watch(EVENTS, after_revision)


def operation_repo(store: StateStore) -> ModelRepo:
    return ModelRepo(store, OPERATIONS, Operation)
