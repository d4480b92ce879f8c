"""``NetworkRealiser``: this host's part of the cluster's networks, kept in step with the store.

Every member realises the bridged (cluster-wide) networks and the nat/isolated networks
it owns (``NetworkSpec.realised_on``). Once the host's networking was reconciled at agent
start it reports each one's status; then it follows the network definitions and makes or
removes this host's part as they appear, change or go, reporting ok or the one-line
reason it failed (``NetworkHostStatus``, one key per network and host); and every
``lease_interval_s`` it reports the leases of its dnsmasq instances when they changed,
so every member shows the guests' addresses. A network whose making failed is tried
again at the next change of any definition; each new failure is an event
(``network.failed``, with the host and the reason). Must not decide anything about
instances.
"""

from __future__ import annotations

import asyncio
import logging

from virtfleet.errors import VirtfleetError
from virtfleet.model.event import Event
from virtfleet.model.network import NetworkHostStatus, NetworkMode, NetworkSpec
from virtfleet.network.base import NetworkHost
from virtfleet.state.follow import follow
from virtfleet.state.keys import NETWORKS
from virtfleet.state.networks import NetworkRepo
from virtfleet.state.repos import EventLog
from virtfleet.state.store import StateStore, WatchEvent

log = logging.getLogger(__name__)


class NetworkRealiser:
    def __init__(
        self,
        store: StateStore,
        host: NetworkHost,
        host_id: str,
        lease_interval_s: float = 2.0,
        events: EventLog | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.repo = NetworkRepo(store)
        self.host = host
        self.host_id = host_id
        self.lease_interval_s = lease_interval_s
        self.made: dict[str, NetworkSpec] = {}  # realised here, as defined when made
        self.reported: dict[str, NetworkHostStatus] = {}  # what this host last wrote
        self._adopted: dict[str, NetworkSpec] = {}  # the set the host's rules were last made for
        self._lock = asyncio.Lock()  # one pass at a time (watch and lease timer)

    async def wanted(self) -> dict[str, NetworkSpec]:
        """The networks this host realises, by name."""
        return {s.name: s for s in await self.repo.list() if s.realised_on(self.host_id)}

    async def initial(self) -> int:
        """Report the status of every network of this host as the reconcile left it (and
        drop reports of networks it no longer has); the revision to follow from."""
        revision = await self.store.revision()
        async with self._lock:
            wanted = await self.wanted()
            for spec in wanted.values():
                if (await self.host.state(spec)).present:
                    self.made[spec.name] = spec
                    await self._report(spec, True)
                else:
                    await self._report(spec, False, await self._why(spec))
            self._adopted = dict(self.made)  # the reconcile just wrote rules for them
            for name, statuses in (await self.repo.all_statuses()).items():
                if name not in wanted and any(s.host == self.host_id for s in statuses):
                    await self.repo.unreport(name, self.host_id)
        return revision

    async def _why(self, spec: NetworkSpec) -> str:
        try:
            await self.host.check(spec)
        except VirtfleetError as err:
            return err.message
        return "not made on this host at start (see the daemon's log)"

    async def sync(self) -> None:
        """Make this host's part of every network match the definitions."""
        async with self._lock:
            wanted = await self.wanted()
            for name, spec in list(self.made.items()):
                if wanted.get(name) != spec:
                    await self._unmake(spec, list(wanted.values()))
            for name in [n for n in self.reported if n not in wanted]:
                self.reported.pop(name)
                await self.repo.unreport(name, self.host_id)
            for spec in wanted.values():
                if spec.name not in self.made:
                    await self._make(spec, [o for o in wanted.values() if o.name != spec.name])
            if self.made != self._adopted:
                # A create here (ours or the service's) wrote rules for the set it was given,
                # which a concurrent one may not have had: rules for the whole set.
                await self.host.adopt(list(self.made.values()))
                self._adopted = dict(self.made)

    async def _make(self, spec: NetworkSpec, others: list[NetworkSpec]) -> None:
        try:
            # A nat/isolated bridge that exists was made by this host's network service.
            if spec.mode is NetworkMode.BRIDGED or not (await self.host.state(spec)).present:
                await self.host.create(spec, others)
        except VirtfleetError as err:
            log.warning("network %s not realised here: %s", spec.name, err.message)
            await self._report(spec, False, err.message)
            return
        self.made[spec.name] = spec
        await self._report(spec, True)

    async def _unmake(self, spec: NetworkSpec, wanted: list[NetworkSpec]) -> None:
        self.made.pop(spec.name, None)
        try:
            await self.host.remove(spec, [o for o in wanted if o.name != spec.name])
        except VirtfleetError as err:
            log.warning("network %s not removed here: %s", spec.name, err.message)
        self.reported.pop(spec.name, None)
        await self.repo.unreport(spec.name, self.host_id)

    async def _report(self, spec: NetworkSpec, ok: bool, reason: str = "") -> None:
        """Write this host's status of ``spec`` if it changed (leases included)."""
        dhcp = ok and spec.mode is not NetworkMode.BRIDGED
        leases = self.host.leases(spec.name) if dhcp else []
        status = NetworkHostStatus(host=self.host_id, ok=ok, reason=reason, leases=leases)
        was = self.reported.get(spec.name)
        if was != status:
            await self.repo.report(spec.name, status)
            self.reported[spec.name] = status
        if not ok and (was is None or was.ok or was.reason != reason):
            await self._failed(spec.name, reason)

    async def _failed(self, name: str, reason: str) -> None:
        if self.events is None:
            return
        message = f"network {name} not realised on this host: {reason}"
        data = {"host": self.host_id, "reason": reason}
        event = Event(kind="network.failed", target=f"network/{name}", message=message, data=data)
        await self.events.append(event)

    async def follow(self, after: int) -> None:
        """Realise every change of the definitions after ``after``, until cancelled."""

        async def everything(_: int) -> tuple[int, list[WatchEvent]]:
            # After a gap (compaction, outage) one pass over all definitions catches up.
            revision = await self.store.revision()
            return revision, [WatchEvent("put", NETWORKS, b"", revision)]

        async for _ in follow(self.store, NETWORKS, after, "network realiser", everything):
            try:
                await self.sync()
            except VirtfleetError as err:
                log.warning("networks not brought in step: %s", err.message)

    async def report_leases(self) -> None:
        """Report changed leases of this host's networks, until cancelled."""
        while True:
            await asyncio.sleep(self.lease_interval_s)  # a poll timer, not synchronisation
            try:
                async with self._lock:
                    for spec in list(self.made.values()):
                        await self._report(spec, True)
            except VirtfleetError as err:
                log.warning("leases not reported: %s", err.message)
