"""The synchronous client: one method per API endpoint, over TCP or the daemon's Unix socket.

Owns sending ``Call``s through a ``Transport`` (transport.py: httpx with a bearer
``token`` and a pinned certificate ``fingerprint`` for remotes; local.py on the
daemon's own socket) and turning failures into ``ApiError``. Imports nothing heavy
until it is used: a CLI command pays for httpx only over TCP and for pydantic only
when it parses a model. Must not hold rendering or argument parsing (that is the CLI's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from virtfleet.client import calls
from virtfleet.client.calls import Action, Call
from virtfleet.client.errors import ApiError, error_from_answer, transport_error
from virtfleet.client.local import LocalTransport
from virtfleet.client.transport import Answer, HttpxTransport, Transport

if TYPE_CHECKING:
    from ssl import SSLContext

    import httpx
    import websockets.asyncio.client as ws_client

    from virtfleet.client.models import Image, Instance
    from virtfleet.model.audit import AuditEntry
    from virtfleet.model.auth import LoginResult, NewToken, Principal, TokenInfo, UserInfo
    from virtfleet.model.cluster import (
        ClusterInitResult,
        ClusterJoinResult,
        ClusterLeaveResult,
        ClusterStatus,
        HostRemoval,
        NewJoinToken,
    )
    from virtfleet.model.console import ConsoleTicket
    from virtfleet.model.event import Event
    from virtfleet.model.host import Check, HostFacts, HostRecord
    from virtfleet.model.instance import InstanceSpec
    from virtfleet.model.network import Network
    from virtfleet.model.operation import Operation
    from virtfleet.model.pools import Pool, Volume

T = TypeVar("T")
UDS_BASE_URL = "http://virtfleet"
DEFAULT_TIMEOUT_S = 30.0


class WsTarget:
    """Where a websocket endpoint is: ``uri`` and, through a Unix socket, ``uds_path``;
    over a remote also the pinned ``ssl`` context and the ``Authorization`` header."""

    def __init__(
        self,
        uri: str,
        uds_path: str | None,
        ssl: SSLContext | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.uri = uri
        self.uds_path = uds_path
        self.ssl = ssl
        self.headers = headers or {}

    def connect(self, query: str = "") -> ws_client.connect:
        """A websockets opener (``async with target.connect() as ws``) for this endpoint."""
        from websockets.asyncio.client import connect, unix_connect

        uri = self.uri + (f"?{query}" if query else "")
        if self.uds_path:
            return unix_connect(self.uds_path, uri)
        ssl = self.ssl if uri.startswith("wss://") else None
        return connect(uri, ssl=ssl, additional_headers=self.headers)

    def error(self, err: Exception) -> ApiError:
        """The ``ApiError`` for a failed websocket connect (``OSError`` or handshake error)."""
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            code = "unauthenticated" if status == 401 else "forbidden"
            message = f"{self.uri}: the server refused the credentials (HTTP {status})"
            return ApiError(code, message, status)
        return transport_error(self.uds_path or self.uri, err)


class Client:
    """``Client(base_url)`` for TCP, ``Client(uds_path=...)`` for the daemon's Unix socket,
    ``Client(http=...)`` to reuse an ``httpx.Client`` (tests pass FastAPI's TestClient)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        uds_path: str | Path | None = None,
        http: httpx.Client | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        token: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.uds_path = str(uds_path) if uds_path is not None else None
        self.base_url = base_url or UDS_BASE_URL
        self._where = self.uds_path or self.base_url
        self.headers = auth_headers(token)
        self.ssl: SSLContext | None = None
        if fingerprint:
            from virtfleet.client.tls import pinned_context

            self.ssl = pinned_context(fingerprint)
        self._timeout_s = timeout_s
        self.transport: Transport
        if http is not None:
            self.transport = HttpxTransport(http)
        elif self.uds_path is not None:
            self.transport = LocalTransport(self.uds_path)
        else:
            self.transport = HttpxTransport(self._tcp_client(timeout_s))

    def _tcp_client(self, timeout_s: float) -> httpx.Client:
        import httpx

        verify = self.ssl or True
        return httpx.Client(base_url=self.base_url, timeout=timeout_s, verify=verify)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def call(self, call: Call[T]) -> T:
        """Send one ``Call``; its parsed answer, or ``ApiError``."""
        answer = self.send(call)
        if answer.status >= 400:
            raise error_from_answer(answer.status, answer.content)
        return call.parse(calls.body_of(call, answer.content, answer.json))

    def send(self, call: Call[Any]) -> Answer:
        """``call`` sent as it is (with the token, and the CSRF header in a session); its
        answer whatever its status. ``ApiError`` only if the daemon could not be reached."""
        timeout_s = self._timeout_s if call.timeout_s is None else call.timeout_s
        csrf = calls.csrf_headers(self.transport.cookies, call.method)
        headers = {**self.headers, **csrf}
        try:
            return self.transport.send(
                call.method, call.path, call.params, call.json, headers, timeout_s
            )
        except self.transport.failures as err:
            raise transport_error(self._where, err) from err

    def websocket(self, path: str) -> WsTarget:
        """The target of a websocket endpoint, e.g. ``/1.0/events``."""
        base = self.base_url.replace("https://", "wss://").replace("http://", "ws://")
        return WsTarget(base.rstrip("/") + path, self.uds_path, self.ssl, self.headers)

    def info(self) -> dict[str, Any]:
        return self.call(calls.info())

    def list_instances(self, fields: Sequence[str] | None = None) -> list[Instance]:
        """Every instance; with ``fields``, only those fields of each (the rest unset)."""
        return self.call(calls.list_instances(fields))

    def create_instance(
        self, spec: InstanceSpec | Mapping[str, Any], start: bool = False, reuse_disks: bool = False
    ) -> Operation:
        return self.call(calls.create_instance(spec, start, reuse_disks))

    def get_instance(self, name: str) -> Instance:
        return self.call(calls.get_instance(name))

    def delete_instance(self, name: str, force: bool = False, disks: bool = False) -> Operation:
        return self.call(calls.delete_instance(name, force, disks))

    def change_state(
        self,
        name: str,
        action: Action,
        force: bool = False,
        timeout_s: float = 30.0,
        wait_s: float = 0.0,
    ) -> Operation:
        """Ask for a power change; with ``wait_s`` the answer comes once it is done (or
        ``wait_s`` passed): check ``status.done``."""
        return self.call(calls.change_state(name, action, force, timeout_s, wait_s))

    def instance_log(self, name: str, tail_bytes: int | None = None) -> str:
        return self.call(calls.instance_log(name, tail_bytes))

    def vnc_ticket(self, name: str) -> ConsoleTicket:
        """A single-use ticket (30 s) for ``/1.0/instances/{name}/vnc?ticket=...``."""
        return self.call(calls.vnc_ticket(name))

    def screenshot(self, name: str) -> bytes:
        """The instance's screen as PNG bytes."""
        return self.call(calls.screenshot(name))

    def list_images(self) -> list[Image]:
        return self.call(calls.list_images())

    def get_image(self, name: str) -> Image:
        return self.call(calls.get_image(name))

    def build_image(self, name: str, builder: str = "tiny", force: bool = False) -> Operation:
        return self.call(calls.build_image(name, builder, force))

    def delete_image(self, name: str) -> bool:
        return self.call(calls.delete_image(name))

    def list_networks(self) -> list[Network]:
        return self.call(calls.list_networks())

    def get_network(self, name: str) -> Network:
        return self.call(calls.get_network(name))

    def create_network(self, spec: Mapping[str, Any]) -> Network:
        return self.call(calls.create_network(spec))

    def delete_network(self, name: str) -> bool:
        return self.call(calls.delete_network(name))

    def list_pools(self) -> list[Pool]:
        return self.call(calls.list_pools())

    def get_pool(self, name: str) -> Pool:
        return self.call(calls.get_pool(name))

    def create_pool(self, body: Mapping[str, Any]) -> Pool:
        return self.call(calls.create_pool(body))

    def delete_pool(self, name: str) -> bool:
        return self.call(calls.delete_pool(name))

    def list_volumes(self, pool: str) -> list[Volume]:
        return self.call(calls.list_volumes(pool))

    def get_volume(self, pool: str, volume: str) -> Volume:
        return self.call(calls.get_volume(pool, volume))

    def host(self) -> HostFacts:
        return self.call(calls.host())

    def list_hosts(self) -> list[HostRecord]:
        return self.call(calls.list_hosts())

    def cluster_status(self) -> ClusterStatus:
        return self.call(calls.cluster_status())

    def cluster_init(self, **body: Any) -> ClusterInitResult:
        return self.call(calls.cluster_init(body))

    def cluster_remove_host(self, host: str, force: bool = False) -> HostRemoval:
        return self.call(calls.cluster_remove_host(host, force))

    def cluster_token_create(self, ttl_s: float = 3600.0) -> NewJoinToken:
        return self.call(calls.cluster_token_create(ttl_s))

    def cluster_join(self, **body: Any) -> ClusterJoinResult:
        return self.call(calls.cluster_join(body))

    def cluster_leave(self) -> ClusterLeaveResult:
        return self.call(calls.cluster_leave())

    def get_host(self, host: str) -> HostRecord:
        return self.call(calls.get_host(host))

    def host_check(self) -> list[Check]:
        return self.call(calls.host_check())

    def list_operations(self) -> list[Operation]:
        return self.call(calls.list_operations())

    def get_operation(self, op_id: str) -> Operation:
        return self.call(calls.get_operation(op_id))

    def cancel_operation(self, op_id: str) -> Operation:
        return self.call(calls.cancel_operation(op_id))

    def wait_operation_once(self, op_id: str, timeout_s: float = 30.0) -> Operation:
        """One server-side wait of up to ``timeout_s``; the operation, done or not."""
        return self.call(calls.wait_operation_once(op_id, timeout_s))

    def wait_operation(
        self,
        op_id: str,
        on_progress: Callable[[Operation], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
    ) -> Operation:
        """Wait until the operation is done (or ``timeout_s`` passed), calling ``on_progress``
        with each intermediate state (every ``poll_s``); return the last state seen.

        Without ``on_progress`` the server-side waits are long (``calls.LONG_POLL_S``): the
        server answers as soon as the operation is done, so ``poll_s`` then changes nothing."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            step = calls.wait_slice(poll_s, on_progress is not None, left)
            op = self.wait_operation_once(op_id, step)
            if on_progress is not None:
                on_progress(op)
            if op.status.done or (deadline is not None and time.monotonic() >= deadline):
                return op

    def list_events(self, after: int | None = None, limit: int = 100) -> list[Event]:
        return self.call(calls.list_events(after, limit))

    def login(self, username: str, password: str) -> LoginResult:
        """Open a session: its cookies stay in this client, which then sends the CSRF header."""
        return self.call(calls.login(username, password))

    def logout(self) -> dict[str, Any]:
        return self.call(calls.logout())

    def whoami(self) -> Principal:
        return self.call(calls.whoami())

    def list_users(self) -> list[UserInfo]:
        return self.call(calls.list_users())

    def get_user(self, name: str) -> UserInfo:
        return self.call(calls.get_user(name))

    def create_user(self, username: str, password: str, role: str = "viewer") -> UserInfo:
        return self.call(calls.create_user(username, password, role))

    def delete_user(self, name: str) -> bool:
        return self.call(calls.delete_user(name))

    def update_user(
        self, name: str, role: str | None = None, disabled: bool | None = None
    ) -> UserInfo:
        return self.call(calls.update_user(name, role, disabled))

    def change_password(self, name: str, password: str, current: str | None = None) -> UserInfo:
        return self.call(calls.change_password(name, password, current))

    def list_tokens(self) -> list[TokenInfo]:
        return self.call(calls.list_tokens())

    def create_token(
        self,
        role: str,
        expires_in_s: float | None = None,
        description: str = "",
        never_expires: bool = False,
    ) -> NewToken:
        """Mint an API token; its secret (``.token``) is in this answer only. Without
        ``expires_in_s`` it lives the server's default (90 days) unless ``never_expires``."""
        return self.call(calls.create_token(role, expires_in_s, description, never_expires))

    def revoke_token(self, token_id: str) -> TokenInfo:
        return self.call(calls.revoke_token(token_id))

    def list_audit(self, **filters: Any) -> list[AuditEntry]:
        """Audit entries, newest first; filters as ``calls.list_audit`` (admins only)."""
        return self.call(calls.list_audit(**filters))


def auth_headers(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header carrying ``token`` (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def raise_for_operation(op: Operation) -> Operation:
    """``op`` if it succeeded, else the ``ApiError`` it failed with."""
    if op.status.value == "success":
        return op
    if not op.status.done:
        hint = f"see `virtfleet operation show {op.id}`"
        raise ApiError("timeout", f"operation {op.id} is still {op.status.value}; {hint}", 504)
    code = op.error_code or op.status.value
    message = op.error_message or f"operation {op.id} is {op.status.value}"
    raise ApiError(code, message, 0)
