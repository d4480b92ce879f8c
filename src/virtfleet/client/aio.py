"""The asynchronous client: the same endpoints as ``Client``, awaitable, on ``httpx.AsyncClient``.

Owns only sending; the endpoints are described once in ``calls``. Must not hold
rendering or argument parsing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from virtfleet.client import calls
from virtfleet.client.calls import Action, Call
from virtfleet.client.errors import error_from_response, transport_error
from virtfleet.client.models import Image, Instance
from virtfleet.client.sync import DEFAULT_TIMEOUT_S, UDS_BASE_URL, auth_headers
from virtfleet.client.tls import pinned_context
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

T = TypeVar("T")


class AsyncClient:
    """Like ``Client``; ``AsyncClient(http=httpx.AsyncClient(transport=ASGITransport(app)))``
    drives an in-process app."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        uds_path: str | Path | None = None,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        token: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.uds_path = str(uds_path) if uds_path is not None else None
        self.base_url = base_url or UDS_BASE_URL
        self._where = self.uds_path or self.base_url
        self.headers = auth_headers(token)
        self.ssl = pinned_context(fingerprint) if fingerprint else None
        if http is None:
            transport = httpx.AsyncHTTPTransport(uds=self.uds_path) if self.uds_path else None
            http = httpx.AsyncClient(
                base_url=self.base_url,
                transport=transport,
                timeout=timeout_s,
                headers=self.headers,
                verify=self.ssl or True,
            )
        self._http = http

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, call: Call[T]) -> T:
        timeout = call.timeout_s if call.timeout_s is not None else httpx.USE_CLIENT_DEFAULT
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                timeout=timeout,
                headers=calls.csrf_headers(self._http.cookies, call.method),
            )
        except httpx.TransportError as err:
            raise transport_error(self._where, err) from err
        if response.is_error:
            raise error_from_response(response)
        return call.parse(calls.body_of(call, response.content, response.json))

    async def info(self) -> dict[str, Any]:
        return await self.call(calls.info())

    async def list_instances(self, fields: Sequence[str] | None = None) -> list[Instance]:
        """Every instance; with ``fields``, only those fields of each (the rest unset)."""
        return await self.call(calls.list_instances(fields))

    async def create_instance(
        self, spec: InstanceSpec | Mapping[str, Any], start: bool = False, reuse_disks: bool = False
    ) -> Operation:
        return await self.call(calls.create_instance(spec, start, reuse_disks))

    async def get_instance(self, name: str) -> Instance:
        return await self.call(calls.get_instance(name))

    async def delete_instance(
        self, name: str, force: bool = False, disks: bool = False
    ) -> Operation:
        return await self.call(calls.delete_instance(name, force, disks))

    async def change_state(
        self,
        name: str,
        action: Action,
        force: bool = False,
        timeout_s: float = 30.0,
        wait_s: float = 0.0,
    ) -> Operation:
        """Ask for a power change; with ``wait_s`` the answer comes once it is done (or
        ``wait_s`` passed): check ``status.done``."""
        return await self.call(calls.change_state(name, action, force, timeout_s, wait_s))

    async def instance_log(self, name: str, tail_bytes: int | None = None) -> str:
        return await self.call(calls.instance_log(name, tail_bytes))

    async def vnc_ticket(self, name: str) -> ConsoleTicket:
        """A single-use ticket (30 s) for ``/1.0/instances/{name}/vnc?ticket=...``."""
        return await self.call(calls.vnc_ticket(name))

    async def screenshot(self, name: str) -> bytes:
        """The instance's screen as PNG bytes."""
        return await self.call(calls.screenshot(name))

    async def list_images(self) -> list[Image]:
        return await self.call(calls.list_images())

    async def get_image(self, name: str) -> Image:
        return await self.call(calls.get_image(name))

    async def build_image(self, name: str, builder: str = "tiny", force: bool = False) -> Operation:
        return await self.call(calls.build_image(name, builder, force))

    async def delete_image(self, name: str) -> bool:
        return await self.call(calls.delete_image(name))

    async def list_networks(self) -> list[Network]:
        return await self.call(calls.list_networks())

    async def get_network(self, name: str) -> Network:
        return await self.call(calls.get_network(name))

    async def create_network(self, spec: Mapping[str, Any]) -> Network:
        return await self.call(calls.create_network(spec))

    async def delete_network(self, name: str) -> bool:
        return await self.call(calls.delete_network(name))

    async def host(self) -> HostFacts:
        return await self.call(calls.host())

    async def list_hosts(self) -> list[HostRecord]:
        return await self.call(calls.list_hosts())

    async def cluster_status(self) -> ClusterStatus:
        return await self.call(calls.cluster_status())

    async def cluster_init(self, **body: Any) -> ClusterInitResult:
        return await self.call(calls.cluster_init(body))

    async def cluster_remove_host(self, host: str, force: bool = False) -> HostRemoval:
        return await self.call(calls.cluster_remove_host(host, force))

    async def cluster_token_create(self, ttl_s: float = 3600.0) -> NewJoinToken:
        return await self.call(calls.cluster_token_create(ttl_s))

    async def cluster_join(self, **body: Any) -> ClusterJoinResult:
        return await self.call(calls.cluster_join(body))

    async def cluster_leave(self) -> ClusterLeaveResult:
        return await self.call(calls.cluster_leave())

    async def get_host(self, host: str) -> HostRecord:
        return await self.call(calls.get_host(host))

    async def host_check(self) -> list[Check]:
        return await self.call(calls.host_check())

    async def list_operations(self) -> list[Operation]:
        return await self.call(calls.list_operations())

    async def get_operation(self, op_id: str) -> Operation:
        return await self.call(calls.get_operation(op_id))

    async def cancel_operation(self, op_id: str) -> Operation:
        return await self.call(calls.cancel_operation(op_id))

    async def wait_operation_once(self, op_id: str, timeout_s: float = 30.0) -> Operation:
        return await self.call(calls.wait_operation_once(op_id, timeout_s))

    async def wait_operation(
        self,
        op_id: str,
        on_progress: Callable[[Operation], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
    ) -> Operation:
        """Wait until the operation is done (or ``timeout_s`` passed); the last state seen.
        ``on_progress`` sees the operation every ``poll_s``; without it the server-side waits
        are long ones that end as soon as the operation is done (see ``Client.wait_operation``)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            step = calls.wait_slice(poll_s, on_progress is not None, left)
            op = await self.wait_operation_once(op_id, step)
            if on_progress is not None:
                on_progress(op)
            if op.status.done or (deadline is not None and time.monotonic() >= deadline):
                return op
            await asyncio.sleep(0)

    async def list_events(self, after: int | None = None, limit: int = 100) -> list[Event]:
        return await self.call(calls.list_events(after, limit))

    async def login(self, username: str, password: str) -> LoginResult:
        """Open a session: its cookies stay in this client, which then sends the CSRF header."""
        return await self.call(calls.login(username, password))

    async def logout(self) -> dict[str, Any]:
        return await self.call(calls.logout())

    async def whoami(self) -> Principal:
        return await self.call(calls.whoami())

    async def list_users(self) -> list[UserInfo]:
        return await self.call(calls.list_users())

    async def get_user(self, name: str) -> UserInfo:
        return await self.call(calls.get_user(name))

    async def create_user(self, username: str, password: str, role: str = "viewer") -> UserInfo:
        return await self.call(calls.create_user(username, password, role))

    async def delete_user(self, name: str) -> bool:
        return await self.call(calls.delete_user(name))

    async def update_user(
        self, name: str, role: str | None = None, disabled: bool | None = None
    ) -> UserInfo:
        return await self.call(calls.update_user(name, role, disabled))

    async def change_password(
        self, name: str, password: str, current: str | None = None
    ) -> UserInfo:
        return await self.call(calls.change_password(name, password, current))

    async def list_tokens(self) -> list[TokenInfo]:
        return await self.call(calls.list_tokens())

    async def create_token(
        self,
        role: str,
        expires_in_s: float | None = None,
        description: str = "",
        never_expires: bool = False,
    ) -> NewToken:
        """Mint an API token; its secret (``.token``) is in this answer only. Without
        ``expires_in_s`` it lives the server's default (90 days) unless ``never_expires``."""
        return await self.call(calls.create_token(role, expires_in_s, description, never_expires))

    async def revoke_token(self, token_id: str) -> TokenInfo:
        return await self.call(calls.revoke_token(token_id))

    async def list_audit(self, **filters: Any) -> list[AuditEntry]:
        """Audit entries, newest first; filters as ``calls.list_audit`` (admins only)."""
        return await self.call(calls.list_audit(**filters))
