"""Forming a cluster from a running single host (``cluster init``), and starting on it.

Owns ``<data-dir>/cluster/store.json``: once written, this data directory is a cluster
member and every later start uses the etcd store it names (``clustered_settings``),
with this host's supervised etcd member (``cluster_member``) started first.

``ClusterFormer.init`` is the move: refuse if already clustered; make the cluster CA
and this member's certificate; start the member; stop API requests (503) so nothing
writes behind the copy; back the SQLite file up and copy every key of that backup
into etcd in bounded transactions; write ``store.json`` (the commit point); then
the daemon restarts itself on etcd (guests keep running and are re-adopted; ETags are
etcd's revisions from then on). Any failure before the commit point stops the member
and removes what init made: the host stays a single host on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from virtfleet.app import joining
from virtfleet.app.settings import Settings
from virtfleet.errors import (
    AlreadyClusteredError,
    ConflictError,
    StoreUnavailableError,
    VirtfleetError,
)
from virtfleet.host.clusterca import (
    ClusterFiles,
    ensure_ca,
    ensure_member_cert,
    sign_member,
    write_private,
)
from virtfleet.host.etcdmember import EtcdMember, MemberConfig, load_config
from virtfleet.model.cluster import (
    ClusterInitRequest,
    ClusterInitResult,
    ClusterJoinRequest,
    ClusterJoinResult,
    ClusterLeaveResult,
)
from virtfleet.state.etcd import EtcdStore
from virtfleet.state.keys import alive_key, host_key
from virtfleet.state.memory import MemoryStore
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.store import Delete, StateStore
from virtfleet.state.transfer import copy_store
from virtfleet.util.net import is_loopback

log = logging.getLogger(__name__)
T = TypeVar("T")
LEAVE_TIMEOUT_S = 30.0
SWITCHING = "this host is becoming a cluster member (cluster init): try again in a moment"


def cluster_dir(data_dir: Path) -> Path:
    return data_dir / "cluster"


def store_file(data_dir: Path) -> Path:
    return cluster_dir(data_dir) / "store.json"


def clustered_settings(settings: Settings) -> Settings:
    """``settings`` on the cluster's etcd store once this data dir is a member; unchanged
    for a single host or an explicit non-SQLite ``--store``."""
    if settings.store != "sqlite":
        return settings
    try:
        saved = json.loads(store_file(settings.data_dir).read_text())
    except FileNotFoundError:
        return settings
    files = ClusterFiles(cluster_dir(settings.data_dir))
    return dataclasses.replace(
        settings, store=saved["store"], etcd_ca=files.ca_cert, etcd_cert=files.cert,
        etcd_key=files.key,
    )  # fmt: skip


def cluster_member(settings: Settings) -> EtcdMember | None:
    """This host's supervised etcd member, if it is a cluster member that runs one."""
    if not store_file(settings.data_dir).exists():
        return None
    config = load_config(cluster_dir(settings.data_dir))
    return EtcdMember(settings.data_dir, config) if config is not None else None


class ClusterFormer:
    """``cluster init`` on this daemon (its SQLite store, settings and API gate)."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        host_name: str,
        host_id: str,
        gate: Callable[[str | None], None],
        api_url: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.host_name = host_name
        self.host_id = host_id
        self.gate = gate  # sets (or clears) why API requests are answered 503
        self.api_url = api_url
        self.restart: Callable[[], None] | None = None  # the daemon: re-exec on the new store
        self.member: EtcdMember | None = None

    def refuse_if_clustered(self) -> None:
        """``AlreadyClusteredError`` unless this is a single host on SQLite."""
        if isinstance(self.store, MemoryStore):
            raise ConflictError("cluster init and join need the embedded SQLite store, not memory")
        if not isinstance(self.store, SQLiteStore) or store_file(self.settings.data_dir).exists():
            raise AlreadyClusteredError(
                f"this host is already clustered (store: {self.settings.store}): "
                "cluster init and join run once, on a single host with the embedded SQLite store"
            )

    async def init(self, request: ClusterInitRequest) -> ClusterInitResult:
        self.refuse_if_clustered()
        files = ClusterFiles(cluster_dir(self.settings.data_dir))
        address = request.address or self.default_address()
        config = MemberConfig(
            name=self.host_name, host=address,
            client_port=request.client_port, peer_port=request.peer_port,
        )  # fmt: skip
        member = EtcdMember(self.settings.data_dir, config)
        try:
            result = await self._form(files, member)
        except BaseException:
            await self.undo(member)
            raise
        return result

    async def leave(self) -> ClusterLeaveResult:
        """This host's etcd member leaves the cluster and its record goes; the daemon
        restarts as a single host on a fresh SQLite file (the old one moved aside: its
        records predate the cluster). Refused for a single host and for the cluster's
        last etcd member."""
        member = self.member
        if not isinstance(self.store, EtcdStore) or member is None:
            raise ConflictError("this host is not a cluster member with its own etcd member")
        others = [u for m in await self.store.members() if m.name != member.config.name
                  for u in m.client_urls]  # fmt: skip
        if not others:
            raise ConflictError("this host runs the cluster's only etcd member: it cannot leave")
        await member.detach()  # a removed member exits: it must not be started again
        self.gate("this host is leaving its cluster (cluster leave): try again in a moment")
        remaining = EtcdStore(others, tls=member.tls())  # the cluster this host leaves
        try:
            try:
                await _remove_when_allowed(remaining, member.config.name)
            except BaseException:
                self.gate(None)
                await member.start()  # still a member: supervised again
                raise
            with contextlib.suppress(VirtfleetError):  # its lease would end the alive key
                await remaining.txn(
                    [], [Delete(host_key(self.host_id)), Delete(alive_key(self.host_id))]
                )
        finally:
            await remaining.close()
        kept = await self._forget_cluster(member)
        return ClusterLeaveResult(
            member=member.config.name, kept=str(kept), restarting=self.restart is not None
        )

    async def _forget_cluster(self, member: EtcdMember) -> Path:
        """Stop the removed member and drop the cluster's files; the SQLite file (from
        before the cluster) moves aside so the next start is a fresh single host."""
        await member.stop()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        kept = self.settings.store_path.with_name(f"virtfleet.db.pre-leave-{stamp}")
        if self.settings.store_path.exists():
            self.settings.store_path.rename(kept)
        store_file(self.settings.data_dir).unlink()
        shutil.rmtree(member.etcd_dir, ignore_errors=True)
        shutil.rmtree(cluster_dir(self.settings.data_dir), ignore_errors=True)
        return kept

    async def join(self, request: ClusterJoinRequest) -> ClusterJoinResult:
        """Join a running cluster (``app.joining``)."""
        return await joining.join(self, request)

    def after_init(self) -> None:
        """Restart the daemon on etcd (after the reply went out); tests restart it themselves."""
        if self.restart is not None:
            self.restart()

    async def _form(self, files: ClusterFiles, member: EtcdMember) -> ClusterInitResult:
        ensure_ca(files, self.host_name)
        ensure_member_cert(files, self.host_name, [member.config.host])
        await member.start()
        self.gate(SWITCHING)  # from here no request writes behind the copy
        # The backup is the copy's source: etcd then holds exactly what the backup holds.
        backup = self.backup()  # on the loop: the store's connection belongs to its thread
        source = SQLiteStore(backup)
        target = EtcdStore([member.config.client_url], tls=member.tls())
        try:
            copied = await copy_store(source, target)
        finally:
            await target.close()
            await source.close()
        self.commit(member)
        log.info("cluster formed: %d keys in etcd; backup %s", copied, backup)
        return ClusterInitResult(
            member=member.config.name,
            client_url=member.config.client_url,
            ca_fingerprint=files.fingerprint(),
            keys_copied=copied,
            backup=str(backup),
            restarting=self.restart is not None,
        )

    def commit(self, member: EtcdMember) -> None:
        """The commit point: every later start of this data dir runs on etcd."""
        store = f"etcd+{member.config.client_url}"
        record = {"store": store, "formed_at": datetime.now(UTC).isoformat()}
        write_private(store_file(self.settings.data_dir), json.dumps(record).encode())
        self.member = member

    def backup(self) -> Path:
        """A consistent copy of the SQLite file next to it (SQLite's online backup)."""
        assert isinstance(self.store, SQLiteStore)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        dest = self.settings.store_path.with_name(f"virtfleet.db.pre-cluster-{stamp}")
        target = sqlite3.connect(dest)
        try:
            self.store.side_connection().backup(target)
        except sqlite3.Error as err:
            raise VirtfleetError(f"cannot back up the state file to {dest}: {err}") from err
        finally:
            target.close()
        return dest

    async def undo(self, member: EtcdMember) -> None:
        """Leave the host as it was: member stopped, its files gone, requests served."""
        with contextlib.suppress(VirtfleetError, OSError):
            await member.stop()
        store_file(self.settings.data_dir).unlink(missing_ok=True)
        shutil.rmtree(member.etcd_dir, ignore_errors=True)
        shutil.rmtree(cluster_dir(self.settings.data_dir), ignore_errors=True)
        self.gate(None)

    def default_address(self) -> str:
        url = self.api_url()
        host = urlsplit(url).hostname if url else None
        if host and host not in ("0.0.0.0", "::") and not is_loopback(host):
            return host
        return "127.0.0.1"


class EtcdAdmin:
    """Admitting a joining host on this member: the cluster CA in ``<data-dir>/cluster``
    signs its certificate, etcd's member API adds its member as a learner."""

    def __init__(self, data_dir: Path, store: EtcdStore) -> None:
        self.files = ClusterFiles(cluster_dir(data_dir))
        self.store = store

    def ca_cert(self) -> str:
        return self.files.ca_cert.read_text()

    def sign(self, csr: str, host: str) -> str:
        if not self.files.ca_key.exists():
            raise ConflictError("this member has no cluster CA key: join through the first one")
        return sign_member(self.files, csr.encode(), [host]).decode()

    async def add(self, name: str, peer_url: str) -> tuple[str, str, list[str]]:
        added = await _when_allowed(lambda: self.store.add_learner(name, [peer_url]))
        return added.member_id, added.initial_cluster, added.client_urls

    async def remove(self, member_id: str) -> None:
        await self.store.remove_member_id(member_id)


async def _remove_when_allowed(cluster: EtcdStore, name: str) -> None:
    """Remove member ``name`` once etcd allows it (see ``_when_allowed``)."""
    await _when_allowed(lambda: cluster.remove_member(name))


async def _when_allowed(change: Callable[[], Awaitable[T]]) -> T:
    """Run a membership ``change``; etcd refuses it ("unhealthy cluster") while some
    member's links are younger than its 5 s health interval (a host that joined a moment
    ago), so ask again until it allows it."""
    try:
        async with asyncio.timeout(LEAVE_TIMEOUT_S):
            for _ in itertools.count():
                try:
                    return await change()
                except StoreUnavailableError as err:
                    if "unhealthy cluster" not in err.message:
                        raise
                await asyncio.sleep(0.5)  # poll: etcd gives no signal when it would allow it
    except TimeoutError:
        pass
    raise StoreUnavailableError(
        f"etcd still refuses the membership change after {LEAVE_TIMEOUT_S:.0f} s: unhealthy cluster"
    )
