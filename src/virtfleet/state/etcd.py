"""``EtcdStore``: the ``StateStore`` protocol on an etcd v3 cluster, for clustered mode.

It owns the gRPC channel to etcd (one channel, every endpoint of the cluster behind
gRPC's own ``pick_first`` failover), the mapping between the protocol and etcd's
KV, Lease and Watch services (the generated stubs come from aetcd), and the
translation of etcd's failures into the project's errors (aetcd supplies the generated
etcd v3 stubs; its own client has no TLS, which cluster members need, so the channel is
ours): a cluster without quorum
or out of reach is ``StoreUnavailableError`` (HTTP 503 ``store_unavailable``).

Keys live under ``namespace`` (stripped on the way out), so one etcd can serve many
stores (the test suite gives each test its own). Revisions are etcd's own: a fresh
etcd is at revision 1, not 0, and other namespaces' writes advance it too, so callers
only ever compare revisions with each other, never with constants.

It must not cache values or hold locks of its own: etcd is the only truth, and every
other member writes to it concurrently.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ipaddress
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

from virtfleet.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RevisionConflictError,
    StoreUnavailableError,
    VirtfleetError,
)
from virtfleet.model.cluster import StoreMember
from virtfleet.state.checks import (
    check_compares,
    check_key,
    check_lease_id,
    check_ops,
    check_prefix,
    check_revision,
    check_ttl,
    check_value,
    is_int,
)
from virtfleet.state.store import Compare, Delete, KeyValue, Put, Range, TxnResult, WatchEvent

log = logging.getLogger(__name__)

T = TypeVar("T")
# A watch asks etcd for a leader: a member cut off from quorum ends it instead of hanging.
_REQUIRE_LEADER = (("hasleader", "true"),)
_UNAVAILABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}

# gRPC's reconnect back-off grows to 120 s: an etcd back after a restart would go
# unnoticed for minutes. Capped at 2 s, a member that returns is used again at once.
_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


@dataclass(frozen=True)
class EtcdTLS:
    """Client TLS for etcd: the cluster CA (None: the system's), this member's certificate
    and key."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    # The name every member's certificate carries, checked when the target lists several
    # addresses: gRPC verifies them all against one name, none of which is each address.
    server_name: str | None = None


@dataclass(frozen=True)
class AddedMember:
    """A member just added: its id (hex), the ``--initial-cluster`` it starts with, and
    the client URLs of the members already running."""

    member_id: str
    initial_cluster: str
    client_urls: list[str]


@dataclass(frozen=True)
class _Stubs:
    channel: grpc.aio.Channel
    kv: Any
    lease: Any
    watch: Any
    cluster: Any


class EtcdStore:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        namespace: str = "",
        tls: EtcdTLS | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        if not endpoints:
            raise InvalidInputError("etcd needs at least one endpoint")
        self._ns = namespace
        self._timeout = timeout_s
        self._target = grpc_target(endpoints)  # checked now; connected on first use
        self._tls = tls
        self._grpc: _Stubs | None = None
        self._seen = 0  # the newest revision any reply showed: "now" for watch(None)
        self._watchers: set[_EtcdWatcher] = set()
        self._closed = False

    # -- keys ---------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        check_key(key)
        reply = await self._call(self._stubs().kv.Range, rpc.RangeRequest(key=self._k(key)))
        return self._kv_of(reply.kvs[0]) if reply.kvs else None

    async def list(
        self,
        prefix: str,
        *,
        end: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> builtins.list[KeyValue]:
        found = await self.range(prefix, end=end, limit=limit, descending=descending)
        return found.kvs

    async def range(
        self,
        prefix: str,
        *,
        end: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> Range:
        check_prefix(prefix)
        if limit is not None and (not is_int(limit) or limit < 1):
            raise InvalidInputError("limit must be a positive number of keys")
        start, stop = self._range(prefix)
        if end is not None:
            stop = min(stop, self._k(end)) if stop != b"\0" else self._k(end)
        order = rpc.RangeRequest.DESCEND if descending else rpc.RangeRequest.ASCEND
        request = rpc.RangeRequest(
            key=start,
            range_end=stop,
            limit=limit or 0,
            sort_order=order,
            sort_target=rpc.RangeRequest.KEY,
        )
        reply = await self._call(self._stubs().kv.Range, request)
        return Range([self._kv_of(kv) for kv in reply.kvs], int(reply.header.revision))

    async def count(self, prefix: str) -> int:
        check_prefix(prefix)
        start, stop = self._range(prefix)
        request = rpc.RangeRequest(key=start, range_end=stop, count_only=True)
        return int((await self._call(self._stubs().kv.Range, request)).count)

    async def revision(self) -> int:
        request = rpc.RangeRequest(key=self._k("\0"), count_only=True)
        return int((await self._call(self._stubs().kv.Range, request)).header.revision)

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        check_key(key)
        check_value(value)
        check_revision(expect_revision, "expect_revision")
        check_lease_id(lease, optional=True)
        op = self._put_op(Put(key, value, lease))
        if expect_revision is None:
            reply = await self._call(self._stubs().kv.Put, op.request_put)
            return int(reply.header.revision)
        guard = [self._compare(Compare(key, expect_revision))]
        txn = await self._txn(guard, [op], [self._get_op(key)])
        if not txn.succeeded:
            raise _conflict(key, expect_revision, txn)
        return int(txn.header.revision)

    async def delete(self, key: str, *, expect_revision: int | None = None) -> bool:
        check_key(key)
        check_revision(expect_revision, "expect_revision")
        op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._k(key)))
        guard = [] if expect_revision is None else [self._compare(Compare(key, expect_revision))]
        txn = await self._txn(guard, [op], [self._get_op(key)])
        if not txn.succeeded:
            raise _conflict(key, expect_revision or 0, txn)
        return bool(txn.responses[0].response_delete_range.deleted)

    async def delete_prefix(self, prefix: str) -> int:
        check_prefix(prefix)
        if not prefix:
            raise InvalidInputError("delete_prefix needs a non-empty prefix")
        start, stop = self._range(prefix)
        request = rpc.DeleteRangeRequest(key=start, range_end=stop)
        return int((await self._call(self._stubs().kv.DeleteRange, request)).deleted)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Put | Delete],
        failure: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        check_compares(compares)
        check_ops(success)
        check_ops(failure)
        reply = await self._txn(
            [self._compare(c) for c in compares],
            [self._op(o) for o in success],
            [self._op(o) for o in failure],
        )
        return TxnResult(bool(reply.succeeded), int(reply.header.revision))

    # -- watch --------------------------------------------------------------

    def watch(self, prefix: str, after_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` after ``after_revision`` (None: after the newest revision
        this store has seen). ``ConflictError`` (with ``compacted``) once history is gone."""
        check_prefix(prefix)
        check_revision(after_revision, "after_revision")
        self._check_open()
        after = self._seen if after_revision is None else after_revision
        start, stop = self._range(prefix)
        watcher = _EtcdWatcher(self._stubs().watch, start, stop, after, self._kv_of)
        watcher.on_close = self._watchers.discard
        self._watchers.add(watcher)
        return watcher

    # -- leases -------------------------------------------------------------

    async def grant_lease(self, ttl_s: float) -> int:
        """A lease of at least ``ttl_s``: etcd counts whole seconds, so it is rounded up."""
        check_ttl(ttl_s)
        request = rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl_s)))
        return int((await self._call(self._stubs().lease.LeaseGrant, request)).ID)

    async def keepalive(self, lease: int) -> None:
        check_lease_id(lease, optional=False)

        async def once() -> Any:
            stream = self._stubs().lease.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease)]), timeout=self._timeout
            )
            async for reply in stream:
                return reply
            raise StoreUnavailableError("etcd ended a lease keepalive without an answer")

        reply = await self._guard(once)
        if reply.TTL <= 0:
            raise NotFoundError(f"lease {lease} not found or expired")

    async def revoke(self, lease: int) -> None:
        check_lease_id(lease, optional=False)
        with contextlib.suppress(NotFoundError):
            await self._call(self._stubs().lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease))

    # -- the etcd cluster -----------------------------------------------------

    async def members(self) -> builtins.list[StoreMember]:
        """etcd's members, each with its own status (leader, db size, raft index,
        version) asked of it directly; a member that does not answer says why."""
        reply = await self._call(self._stubs().cluster.MemberList, rpc.MemberListRequest())
        found = await asyncio.gather(*(self._member(m) for m in reply.members))
        return sorted(found, key=lambda m: m.name)

    async def remove_member(self, name: str) -> bool:
        """Remove etcd member ``name`` from the cluster (a host removed for good);
        whether there was one by that name."""
        reply = await self._call(self._stubs().cluster.MemberList, rpc.MemberListRequest())
        found = [m for m in reply.members if m.name == name]
        for member in found:
            request = rpc.MemberRemoveRequest(ID=member.ID)
            await self._call(self._stubs().cluster.MemberRemove, request)
        return bool(found)

    async def add_learner(self, name: str, peer_urls: builtins.list[str]) -> AddedMember:
        """Add a non-voting member ``name`` at ``peer_urls`` (it catches up without
        counting for quorum, until promoted): its id and how it starts."""
        request = rpc.MemberAddRequest(peerURLs=peer_urls, isLearner=True)
        reply = await self._call(self._stubs().cluster.MemberAdd, request)
        new = int(reply.member.ID)
        peers, clients = [], []
        for m in reply.members:
            label = name if int(m.ID) == new else m.name
            peers += [f"{label}={url}" for url in m.peerURLs]
            clients += list(m.clientURLs)
        return AddedMember(f"{new:x}", ",".join(peers), clients)

    async def promote(self, member_id: str) -> bool:
        """Promote the learner with this (hex) id to a voting member; False while it has
        not caught up with the leader yet (etcd refuses then)."""
        request = rpc.MemberPromoteRequest(ID=int(member_id, 16))
        try:
            await self._call(self._stubs().cluster.MemberPromote, request)
        except VirtfleetError as err:
            if "not in sync" in err.message or "not ready" in err.message:
                return False
            raise
        return True

    async def remove_member_id(self, member_id: str) -> None:
        """Remove the member with this (hex) id: a join that failed half-way."""
        request = rpc.MemberRemoveRequest(ID=int(member_id, 16))
        await self._call(self._stubs().cluster.MemberRemove, request)

    async def _member(self, member: Any) -> StoreMember:
        about = StoreMember(
            id=f"{int(member.ID):x}", name=member.name, client_urls=list(member.clientURLs)
        )
        if not member.clientURLs:
            return about.model_copy(update={"error": "not started yet (no client URL)"})
        channel = _channel(grpc_target(list(member.clientURLs)), self._tls)  # this member alone
        try:
            status = await rpc.MaintenanceStub(channel).Status(
                rpc.StatusRequest(), timeout=min(self._timeout, 2.0)
            )
        except grpc.aio.AioRpcError as err:
            return about.model_copy(update={"error": _error(err).message})
        finally:
            await channel.close()
        return about.model_copy(
            update={
                "leader": int(status.leader) == int(member.ID),
                "db_size_bytes": int(status.dbSize),
                "raft_index": int(status.raftIndex),
                "version": status.version,
            }
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for watcher in list(self._watchers):
            await watcher.aclose()
        if self._grpc is not None:
            await self._grpc.channel.close()

    # -- internals ----------------------------------------------------------

    def _stubs(self) -> _Stubs:
        """The channel and stubs, made on first use: a gRPC channel belongs to the event
        loop it was made in, and the daemon builds its store before its loop runs."""
        self._check_open()
        if self._grpc is None:
            channel = _channel(self._target, self._tls)
            self._grpc = _Stubs(
                channel,
                rpc.KVStub(channel),
                rpc.LeaseStub(channel),
                rpc.WatchStub(channel),
                rpc.ClusterStub(channel),
            )
        return self._grpc

    def _k(self, key: str) -> bytes:
        return (self._ns + key).encode()

    def _range(self, prefix: str) -> tuple[bytes, bytes]:
        start = self._k(prefix)
        # etcd needs a key: with no namespace the empty prefix is "from \0 to the end".
        return start or b"\0", _prefix_end(start)

    def _kv_of(self, kv: Any) -> KeyValue:
        return KeyValue(
            key=kv.key.decode()[len(self._ns) :],
            value=bytes(kv.value),
            create_revision=int(kv.create_revision),
            mod_revision=int(kv.mod_revision),
            version=int(kv.version),
            lease=int(kv.lease) or None,
        )

    def _compare(self, c: Compare) -> Any:
        return rpc.Compare(
            key=self._k(c.key),
            result=rpc.Compare.EQUAL,
            target=rpc.Compare.MOD,
            mod_revision=c.mod_revision,
        )

    def _put_op(self, p: Put) -> Any:
        return rpc.RequestOp(
            request_put=rpc.PutRequest(key=self._k(p.key), value=p.value, lease=p.lease or 0)
        )

    def _get_op(self, key: str) -> Any:
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=self._k(key)))

    def _op(self, op: Put | Delete) -> Any:
        if isinstance(op, Put):
            return self._put_op(op)
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._k(op.key)))

    async def _txn(
        self, compare: builtins.list[Any], success: builtins.list[Any], failure: builtins.list[Any]
    ) -> Any:
        request = rpc.TxnRequest(compare=compare, success=success, failure=failure)
        return await self._call(self._stubs().kv.Txn, request)

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        return await self._guard(lambda: method(request, timeout=self._timeout))

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one RPC, noting the revision it saw and mapping etcd's errors to ours."""
        self._check_open()
        try:
            reply = await call()
        except grpc.aio.AioRpcError as err:
            raise _error(err) from None
        header = getattr(reply, "header", None)
        if header is not None:
            self._seen = max(self._seen, int(header.revision))
        return reply

    def _check_open(self) -> None:
        if self._closed:
            raise VirtfleetError("state store is closed")


class _EtcdWatcher:
    """One etcd watch stream under the store's prefix, as an async iterator of events."""

    def __init__(
        self,
        stub: Any,
        start: bytes,
        stop: bytes,
        after: int,
        kv_of: Callable[[Any], KeyValue],
    ) -> None:
        self._stub = stub
        self._kv_of = kv_of
        self.on_close: Callable[[_EtcdWatcher], None] = lambda _: None
        self._request = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(
                key=start, range_end=stop, start_revision=after + 1
            )
        )
        self._call: Any = None
        self._pending: builtins.list[WatchEvent] = []
        self._done = False

    def __aiter__(self) -> _EtcdWatcher:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            await self._fill()
        return self._pending.pop(0)

    async def aclose(self) -> None:
        self._done = True
        self.on_close(self)
        if self._call is not None:
            self._call.cancel()

    async def _fill(self) -> None:
        if self._call is None:
            self._call = self._stub.Watch(iter([self._request]), metadata=_REQUIRE_LEADER)
        try:
            reply = await self._call.read()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._done and not (task and task.cancelling()):
                return  # aclose() cancelled the stream: the iteration ends
            raise
        except grpc.aio.AioRpcError as err:
            if self._done or err.code() == grpc.StatusCode.CANCELLED:
                self._done = True
                return
            await self.aclose()
            raise _error(err) from None
        if reply is grpc.aio.EOF or reply.canceled:
            await self._end(reply)
            return
        self._pending.extend(self._event(e) for e in reply.events)

    async def _end(self, reply: Any) -> None:
        closed_here = self._done  # aclose() (ours, or the store's close) came first
        await self.aclose()
        if reply is not grpc.aio.EOF and reply.compact_revision:
            compacted = int(reply.compact_revision)
            raise ConflictError(f"revision {compacted} has been compacted", compacted=compacted)
        if not closed_here:
            raise StoreUnavailableError("etcd ended a watch (no leader, or the member went away)")

    def _event(self, event: Any) -> WatchEvent:
        kv = self._kv_of(event.kv)
        if event.type == rpc.Event.DELETE:
            return WatchEvent("delete", kv.key, None, kv.mod_revision)
        return WatchEvent("put", kv.key, kv.value, kv.mod_revision)


def grpc_target(endpoints: Sequence[str]) -> str:
    """The gRPC target of ``endpoints``: one host (a name or an address), or several IP
    addresses of one family, between which gRPC itself fails over."""
    hosts = [urlsplit(e if "://" in e else f"http://{e}") for e in endpoints]
    if any(not h.hostname or not h.port for h in hosts):
        raise InvalidInputError(f"etcd endpoints must be host:port URLs, got {list(endpoints)}")
    addresses = [(h.hostname or "", h.port) for h in hosts]
    if len(addresses) == 1:
        host, port = addresses[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    families = {_family(host) for host, _ in addresses}
    if families == {4}:
        return "ipv4:" + ",".join(f"{host}:{port}" for host, port in addresses)
    if families == {6}:
        return "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in addresses)
    raise InvalidInputError(
        "several etcd endpoints must be IP addresses of one family (IPv4 or IPv6), "
        f"got {list(endpoints)}"
    )


def _family(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None  # a host name


def _channel(target: str, tls: EtcdTLS | None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(target, options=_RECONNECT)
    creds = grpc.ssl_channel_credentials(
        tls.ca.read_bytes() if tls.ca else None,
        tls.key.read_bytes() if tls.key else None,
        tls.cert.read_bytes() if tls.cert else None,
    )
    options: list[tuple[str, str | int]] = list(_RECONNECT)
    if tls.server_name and target.startswith(("ipv4:", "ipv6:")):
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, creds, options=options)


def _prefix_end(start: bytes) -> bytes:
    """etcd's range end for "every key starting with ``start``" (``\\0``: to the end)."""
    trimmed = start.rstrip(b"\xff")
    if not trimmed:
        return b"\0"
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _conflict(key: str, expected: int, txn: Any) -> RevisionConflictError:
    kvs = txn.responses[0].response_range.kvs if txn.responses else []
    actual = int(kvs[0].mod_revision) if kvs else 0
    return RevisionConflictError(
        f"{key!r} is at revision {actual}, expected {expected}",
        key=key,
        expected=expected,
        actual=actual,
    )


def _error(err: grpc.aio.AioRpcError) -> VirtfleetError:
    detail = err.details() or err.code().name
    if err.code() in _UNAVAILABLE:
        return StoreUnavailableError(f"etcd is unavailable: {detail}")
    if "lease not found" in detail:
        return NotFoundError(f"etcd: {detail}")
    if "too many operations" in detail or err.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInputError(f"etcd refused the request: {detail}")
    return StoreUnavailableError(f"etcd failed: {detail}")
