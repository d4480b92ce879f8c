"""This host as a member of the platform: its record in the store and its liveness.

Owns ``HostPresence``: at ``start`` it writes ``/hosts/{id}`` (identity, API URL and
certificate fingerprint, facts, disks, OCI runtime, capacity, versions) with the
liveness key on a store lease of ``ttl_s``, then renews the lease every third of it;
a lease that lapsed anyway (the store was unreachable, the process stalled) is granted
again and the record rewritten. ``stop`` revokes the lease: the host shows offline at
once. Must not touch instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from virtfleet.errors import NotFoundError, VirtfleetError
from virtfleet.model.capacity import OvercommitRatios
from virtfleet.model.host import HostCapacity, HostDisk, HostFacts, HostRecord, HostState
from virtfleet.state.hosts import HostRepo
from virtfleet.state.identity import HostIdentity
from virtfleet.state.store import StateStore

log = logging.getLogger(__name__)
LEASE_TTL_S = 15.0


class HostPresence:
    def __init__(
        self,
        store: StateStore,
        identity: HostIdentity,
        facts: HostFacts,
        ratios: OvercommitRatios,
        data_dir: Path,
        oci_runtime: Callable[[], str | None] = lambda: None,
        ttl_s: float = LEASE_TTL_S,
    ) -> None:
        self.repo = HostRepo(store)
        self.store = store
        self.identity = identity
        self.facts = facts
        self.ratios = ratios
        self.data_dir = data_dir
        self.oci_runtime = oci_runtime
        self.ttl_s = ttl_s
        self.api_url: str | None = None  # set by the daemon once its listeners are bound
        self.fingerprint: str | None = None  # of its TLS certificate, when TLS is on
        self.state = HostState.ONLINE
        self.lease: int | None = None
        self._task: asyncio.Task[None] | None = None

    def record(self) -> HostRecord:
        """This host's record as it stands now."""
        facts = self.facts
        return HostRecord(
            id=self.identity.id,
            name=self.identity.name,
            api_url=self.api_url,
            certificate_fingerprint=self.fingerprint,
            facts=facts,
            disks=[_disk(self.data_dir)],
            oci_runtime=self.oci_runtime(),
            capacity=HostCapacity(
                cpus=facts.cpus,
                memory_mib=facts.memory_mib,
                vcpus_limit=int(facts.cpus * self.ratios.cpu),
                memory_limit_mib=int(facts.memory_mib * self.ratios.memory),
            ),
            state=self.state,
            versions=_versions(facts),
            registered_at=datetime.now(UTC),
        )

    async def start(self) -> None:
        await self._register()
        self._task = asyncio.create_task(self._renew(), name="host-lease")

    async def stop(self) -> None:
        """Stop renewing and revoke the lease (the host shows offline from now)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.lease is not None:
            with contextlib.suppress(VirtfleetError):
                await self.store.revoke(self.lease)
            self.lease = None

    async def _register(self) -> None:
        self.lease = await self.store.grant_lease(self.ttl_s)
        await self.repo.register(self.record(), self.lease)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                assert self.lease is not None
                await self.store.keepalive(self.lease)
            except NotFoundError:
                log.warning("host lease lapsed; registering %s again", self.identity.name)
                await self._register()
            except VirtfleetError as err:
                log.warning("host lease renewal failed: %s", err.message)


def _disk(path: Path) -> HostDisk:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return HostDisk(path=str(path))
    return HostDisk(path=str(path), total_bytes=usage.total, free_bytes=usage.free)


def _versions(facts: HostFacts) -> dict[str, str]:
    try:
        own = metadata.version("virtfleet")
    except metadata.PackageNotFoundError:
        own = "unknown"
    found = {"virtfleet": own, "python": platform.python_version(), "kernel": platform.release()}
    if facts.qemu_version:
        found["qemu"] = facts.qemu_version
    return found
