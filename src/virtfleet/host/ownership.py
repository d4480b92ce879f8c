"""The agent's side of instance ownership: which instances this host owns, under which
epoch, and the fenced status write.

Owns ``Fences``: per instance, the owner key revision and epoch the agent acts under
(``state.repos`` explains why ownership has its own key). Every status write goes
through ``write_status``, a transaction conditional on that revision: once the
instance has moved to another host (a txn moved its epoch), the write fails and
raises ``FencedOut``, so a stale agent can never overwrite the new owner's record.
Also decides when a new owner may take an instance over: not while the previous
owner's status says its copy may still run and that host is alive. Must not touch
processes (the agent does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from virtfleet.model.instance import InstanceStatus, PowerState
from virtfleet.state.hosts import HostRepo
from virtfleet.state.repos import InstanceRecord, InstanceRepo
from virtfleet.state.store import Put

LIVE = (PowerState.STARTING, PowerState.RUNNING, PowerState.PAUSED, PowerState.STOPPING)


class FencedOut(Exception):
    """The instance is not (or no longer) this host's: nothing was written."""

    def __init__(self, name: str) -> None:
        super().__init__(f"instance {name!r} is not owned by this host")
        self.name = name


@dataclass(frozen=True)
class Fence:
    revision: int  # the owner key's mod_revision the agent read
    epoch: int


class Fences:
    def __init__(self, repo: InstanceRepo, hosts: HostRepo, host_id: str) -> None:
        self.repo = repo
        self.hosts = hosts
        self.host_id = host_id
        self._held: dict[str, Fence] = {}
        self.waiting: set[str] = set()  # owned here; the previous owner may still run it

    def owns(self, rec: InstanceRecord) -> bool:
        return rec.owner is not None and rec.owner.host == self.host_id

    def current(self, rec: InstanceRecord) -> bool:
        """Whether the agent already acts under ``rec``'s ownership (no new epoch)."""
        held = self._held.get(rec.name)
        return held is not None and held.revision == rec.owner_revision

    def hold(self, rec: InstanceRecord) -> None:
        assert rec.owner is not None
        self._held[rec.name] = Fence(rec.owner_revision, rec.owner.epoch)
        self.waiting.discard(rec.name)

    def drop(self, name: str) -> None:
        self._held.pop(name, None)
        self.waiting.discard(name)

    def held(self, name: str) -> bool:
        return name in self._held

    async def previous_runs(self, rec: InstanceRecord) -> bool:
        """Whether another host's agent wrote ``rec``'s status as live and that host is
        still alive: its copy may run, so this host must not start one yet."""
        writer = rec.status.host
        if writer in (None, self.host_id) or rec.status.power not in LIVE:
            return False
        assert writer is not None
        return await self.hosts.is_alive(writer)

    async def write_status(
        self, name: str, status: InstanceStatus, also: Sequence[Put] = ()
    ) -> InstanceStatus:
        """Write ``status`` stamped with this host and epoch, conditional on the ownership
        the agent holds (read now if it holds none); ``FencedOut`` if it moved."""
        fence = self._held.get(name) or await self._read(name)
        status = status.model_copy(update={"host": self.host_id, "epoch": fence.epoch})
        if not await self.repo.put_status_owned(name, status, fence.revision, also):
            self.drop(name)
            raise FencedOut(name)
        return status

    async def _read(self, name: str) -> Fence:
        owner, revision = await self.repo.owner(name)
        if owner is None or owner.host != self.host_id:
            raise FencedOut(name)
        fence = Fence(revision, owner.epoch)
        self._held[name] = fence
        return fence

    async def write_released(self, rec: InstanceRecord, status: InstanceStatus) -> bool:
        """As the previous owner, record that its copy of ``rec`` is stopped: only while
        the status is still this host's (the new owner has not written yet) and the
        ownership is still the one read; False if either moved (nothing written)."""
        if rec.status.host not in (None, self.host_id):
            return False
        status = status.model_copy(update={"host": self.host_id})
        written = await self.repo.put_status_owned(
            rec.name, status, rec.owner_revision, status_revision=rec.status_revision
        )
        return written.succeeded
