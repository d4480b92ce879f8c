"""What the instances hold of this host: a tally kept current from the store's watch.

Owns the rule of what counts as allocated (``counts``) and, per instance, the
parts that decide it (the spec's size, the desired power and generation, the
observed power, generation and error) with running totals, so an admission
costs O(1) instead of a listing of every instance; and the MAC addresses the
specs' NICs hold, so a create's MAC check needs no listing either. It follows
every key (not only the instances'), so ``current`` can tell when it has taken in
every commit so far and listings can be served from its records. ``reached`` lets a caller
wait until the tally has taken in a write it made. Must not write anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field

from virtfleet.model.instance import (
    DesiredPower,
    DesiredState,
    InstanceSpec,
    InstanceStatus,
    Ownership,
    PowerState,
)
from virtfleet.state.follow import follow
from virtfleet.state.keys import instance_name_of
from virtfleet.state.repos import InstanceRecord, InstanceRepo
from virtfleet.state.store import StateStore, WatchEvent

log = logging.getLogger(__name__)
_LIVE = (PowerState.STARTING, PowerState.RUNNING, PowerState.PAUSED, PowerState.STOPPING)
_WANTED = (DesiredPower.RUNNING, DesiredPower.PAUSED)
EVERY_KEY = "/"
CATCH_UP_S = 2.0  # how long a reader waits for the watch before it lists the store itself


def counts(rec: InstanceRecord) -> bool:
    """An instance holds capacity while it runs or is asked to run, unless the agent
    carried that request out and recorded an error (its start failed: nothing runs)."""
    if rec.status.power in _LIVE:
        return True
    if rec.desired.power not in _WANTED:
        return False
    failed = rec.status.observed_generation >= rec.desired.generation and rec.status.error_code
    return not failed


@dataclass
class _Parts:
    """One instance's records as last seen, the revision of each, and what it holds."""

    spec: InstanceSpec | None = None  # None until its spec is seen (or once deleted)
    desired: DesiredState = field(default_factory=DesiredState)
    status: InstanceStatus = field(default_factory=InstanceStatus)
    revisions: dict[str, int] = field(default_factory=dict)  # part -> revision taken in
    held: tuple[int, int] | None = None  # (memory MiB, vCPUs) counted for it
    owner: Ownership | None = None  # for listings served from the tally


class Allocations:
    """Totals of what counting instances hold; ``start`` loads and follows the store."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._repo = InstanceRepo(store)
        self._parts: dict[str, _Parts] = {}
        self._macs: Counter[str] = Counter()  # MAC -> NICs holding it (in every spec)
        self._records: list[InstanceRecord] | None = None  # ``records``, until a change
        self.memory_mib = self.vcpus = self.instances = 0
        self._seen = 0  # the last revision taken in
        self._advanced = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def following(self) -> bool:
        """Whether the totals are being kept current (else callers list the store)."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        after = self._seen = await self._load()
        self._task = asyncio.create_task(self._follow(after), name="capacity-tally")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def held(self, name: str) -> tuple[int, int] | None:
        """(memory MiB, vCPUs) that ``name`` holds now; None if it holds nothing."""
        parts = self._parts.get(name)
        return parts.held if parts is not None else None

    def macs(self) -> set[str]:
        """Every MAC address an instance's spec gives one of its NICs."""
        return set(self._macs)

    def records(self) -> list[InstanceRecord]:
        """Every instance's record as last taken in, in name order (shared models: read
        only). Call ``current`` first to include every write made so far."""
        if self._records is None:  # made again only after a change to an instance
            self._records = [
                InstanceRecord(
                    p.spec,
                    p.desired,
                    p.status,
                    p.revisions.get("spec", 0),
                    p.revisions.get("desired", 0),
                    p.revisions.get("status", 0),
                    p.owner,
                    p.revisions.get("owner", 0),
                )
                for _, p in sorted(self._parts.items())
                if p.spec is not None
            ]
        return list(self._records)

    async def current(self) -> bool:
        """Wait until every commit made so far is taken in; False if the tally does not
        follow the store (or lags beyond ``CATCH_UP_S``): then read the store itself."""
        if not self.following:
            return False
        revision = await self._store.revision()
        try:
            async with asyncio.timeout(CATCH_UP_S):
                await self.reached(revision)
        except TimeoutError:
            return False
        return self.following

    async def reached(self, revision: int) -> None:
        """Return once every change up to ``revision`` is taken in."""
        async with self._advanced:
            await self._advanced.wait_for(lambda: self._seen >= revision or not self.following)

    async def _load(self) -> int:
        """Count every instance afresh; the revision the watch goes on from."""
        records, revision = await self._repo.snapshot()  # the listing and its revision
        self._parts.clear()
        self._macs.clear()
        self._records = None
        self.memory_mib = self.vcpus = self.instances = 0
        for rec in records:
            revisions = {
                "spec": rec.spec_revision,
                "desired": rec.desired_revision,
                "status": rec.status_revision,
                "owner": rec.owner_revision,
            }
            parts = _Parts(None, rec.desired, rec.status, revisions, owner=rec.owner)
            self._parts[rec.name] = parts
            self._set_spec(parts, rec.spec)
            self._recount(parts)
        return revision

    async def _follow(self, after: int) -> None:
        try:
            # Every key: each revision is then seen, so ``current`` is exact. After a gap
            # (fell behind, history compacted, store out of reach): recount everything.
            async for event in follow(self._store, EVERY_KEY, after, "capacity", self._reload):
                self._take(event)
                await self._advance(event.revision)
        finally:
            self._task = None  # waiters stop waiting; admissions list the store again
            async with self._advanced:
                self._advanced.notify_all()

    async def _reload(self, _after: int) -> tuple[int, list[WatchEvent]]:
        log.warning("capacity tally re-reads every instance")
        revision = await self._load()
        await self._advance(revision)
        return revision, []

    async def _advance(self, revision: int) -> None:
        async with self._advanced:
            self._seen = max(self._seen, revision)
            self._advanced.notify_all()

    def _take(self, event: WatchEvent) -> None:
        name = instance_name_of(event.key)
        if name is None:
            return
        part = event.key.rsplit("/", 1)[1]
        self._records = None
        parts = self._parts.setdefault(name, _Parts())
        if event.revision <= parts.revisions.get(part, 0):
            return  # older than what the listing read
        parts.revisions[part] = event.revision
        value = event.value if event.type == "put" else None
        if part == "spec":
            self._set_spec(parts, InstanceSpec.model_validate_json(value) if value else None)
        elif part == "desired":
            parts.desired = DesiredState.model_validate_json(value) if value else DesiredState()
        elif part == "status":
            parts.status = InstanceStatus.model_validate_json(value) if value else InstanceStatus()
        elif part == "owner":
            parts.owner = Ownership.model_validate_json(value) if value else None
        self._recount(parts)
        if parts.spec is None and value is None:
            del self._parts[name]  # deleted (its remaining keys go the same way)

    def _set_spec(self, parts: _Parts, spec: InstanceSpec | None) -> None:
        """Replace ``parts``' spec, keeping the MAC index in step."""
        for mac in _macs_of(parts.spec):
            self._macs[mac] -= 1
            if self._macs[mac] <= 0:
                del self._macs[mac]
        self._macs.update(_macs_of(spec))
        parts.spec = spec

    def _recount(self, parts: _Parts) -> None:
        """Replace what ``parts`` held in the totals with what it holds now."""
        if parts.held is not None:
            self.memory_mib -= parts.held[0]
            self.vcpus -= parts.held[1]
            self.instances -= 1
            parts.held = None
        spec = parts.spec
        if spec is not None and counts(InstanceRecord(spec, parts.desired, parts.status)):
            parts.held = (spec.memory_mib, spec.vcpus)
            self.memory_mib += spec.memory_mib
            self.vcpus += spec.vcpus
            self.instances += 1


def _macs_of(spec: InstanceSpec | None) -> set[str]:
    return {n.mac for n in spec.nics if n.mac} if spec is not None else set()
