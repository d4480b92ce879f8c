"""One ``Call`` per API endpoint: method, path, parameters and how to parse the answer.

Owns the wire contract as the client sees it; shared by the sync ``Client`` and
the ``AsyncClient`` so each endpoint is described once. Names are checked here
(``invalid_name``) so a bad name never becomes a different URL (``..``, ``a/b``).
Answers are parsed into pydantic models named by reference (``one("model.operation:
Operation")``), imported at the first answer that needs them: building a call, or
sending one whose answer is read ``raw``, costs no pydantic import. Must not do I/O.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import quote

from virtfleet.client.errors import ApiError
from virtfleet.errors import InvalidNameError
from virtfleet.model.namecheck import validate_name

if TYPE_CHECKING:
    from datetime import datetime

    from pydantic import BaseModel

    from virtfleet.client.models import Image, Instance
    from virtfleet.model.audit import AuditEntry
    from virtfleet.model.auth import LoginResult, NewToken, Principal, TokenInfo, UserInfo
    from virtfleet.model.boot import BootReport
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
Action = Literal["start", "stop", "restart", "pause", "resume"]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    timeout_s: float | None = None  # None: the client's default
    binary: bool = False  # parse the body's bytes, not its JSON


def body_of(call: Call[Any], content: bytes, as_json: Callable[[], Any]) -> Any:
    """What ``call.parse`` takes: the raw bytes of a binary answer, else its JSON."""
    return content if call.binary else as_json()


def model(ref: str) -> type[BaseModel]:
    """The pydantic model ``ref`` names: ``"<module under virtfleet>:<class>"``."""
    module, _, name = ref.partition(":")
    found: type[BaseModel] = getattr(importlib.import_module(f"virtfleet.{module}"), name)
    return found


def one(ref: str) -> Callable[[Any], Any]:
    """Parse an answer into the model ``ref`` names (see ``model``)."""
    return lambda data: model(ref).model_validate(data)


def many(ref: str) -> Callable[[Any], list[Any]]:
    """Parse a list answer into models ``ref`` names (see ``model``)."""
    return lambda data: [model(ref).model_validate(item) for item in data]


def partial(ref: str, fields: Sequence[str]) -> Callable[[Any], list[Any]]:
    """Parse a list answered with only ``fields`` of each model ``ref`` names: each field
    is validated, the rest is left unset (reading it raises ``AttributeError``)."""

    def parse(data: Any) -> list[Any]:
        from pydantic import TypeAdapter  # at the first answer, as ``model``

        cls = model(ref)
        adapters: dict[str, Any] = {f: TypeAdapter(cls.model_fields[f].annotation) for f in fields}
        return [
            cls.model_construct(**{f: a.validate_python(item[f]) for f, a in adapters.items()})
            for item in data
        ]

    return parse


def raw(data: Any) -> Any:
    return data


def as_raw(call: Call[Any]) -> Call[Any]:
    """``call`` with its answer read as plain JSON (no model imported or validated)."""
    return dataclasses.replace(call, parse=raw)


def segment(name: str, what: str) -> str:
    """``name`` checked and quoted as one path segment; ``ApiError(invalid_name)`` if bad."""
    try:
        return quote(validate_name(name, what), safe="")
    except InvalidNameError as err:
        raise ApiError(err.code, err.message, err.status) from err


def inst(name: str) -> str:
    return f"/1.0/instances/{segment(name, 'instance name')}"


def img(name: str) -> str:
    return f"/1.0/images/{segment(name, 'image name')}"


def op(op_id: str) -> str:
    return f"/1.0/operations/{quote(op_id, safe='')}"


def info() -> Call[dict[str, Any]]:
    return Call("GET", "/1.0", raw)


def list_instances(fields: Sequence[str] | None = None) -> Call[list[Instance]]:
    """Every instance; with ``fields``, only those fields of each are asked for and set."""
    if fields is None:
        return Call("GET", "/1.0/instances", many("client.models:Instance"))
    params = {"fields": ",".join(fields)}
    return Call("GET", "/1.0/instances", partial("client.models:Instance", fields), params=params)


def create_instance(
    spec: InstanceSpec | Mapping[str, Any], start: bool, reuse_disks: bool = False
) -> Call[Operation]:
    body = dict(spec) if isinstance(spec, Mapping) else spec.model_dump(mode="json")
    body = {**body, "start": start, **({"reuse_disks": True} if reuse_disks else {})}
    return Call("POST", "/1.0/instances", one("model.operation:Operation"), json=body)


def get_instance(name: str) -> Call[Instance]:
    return Call("GET", inst(name), one("client.models:Instance"))


def delete_instance(name: str, force: bool, disks: bool) -> Call[Operation]:
    params = {"force": str(force).lower(), "disks": str(disks).lower()}
    return Call("DELETE", inst(name), one("model.operation:Operation"), params=params)


def change_state(
    name: str, action: Action, force: bool, timeout_s: float, wait_s: float = 0.0
) -> Call[Operation]:
    """``wait_s`` > 0: the server answers once the operation is done (or ``wait_s`` passed)."""
    body: dict[str, Any] = {"action": action, "force": force, "timeout_s": timeout_s}
    if not wait_s:  # only when asked: a daemon older than ``wait_s`` refuses the field
        return Call("PUT", f"{inst(name)}/state", one("model.operation:Operation"), json=body)
    body["wait_s"] = wait_s
    return Call(
        "PUT",
        f"{inst(name)}/state",
        one("model.operation:Operation"),
        json=body,
        timeout_s=wait_s + 15,
    )


def instance_log(name: str, tail_bytes: int | None) -> Call[str]:
    params = {} if tail_bytes is None else {"tail_bytes": tail_bytes}
    return Call("GET", f"{inst(name)}/log", lambda d: str(d["log"]), params=params)


def vnc_ticket(name: str) -> Call[ConsoleTicket]:
    return Call("POST", f"{inst(name)}/console/vnc-ticket", one("model.console:ConsoleTicket"))


def screenshot(name: str) -> Call[bytes]:
    return Call("GET", f"{inst(name)}/screenshot", bytes, binary=True)


def list_images() -> Call[list[Image]]:
    return Call("GET", "/1.0/images", many("client.models:Image"))


def get_image(name: str) -> Call[Image]:
    return Call("GET", img(name), one("client.models:Image"))


def build_image(name: str, builder: str, force: bool) -> Call[Operation]:
    segment(name, "image name")
    body = {"name": name, "builder": builder, "force": force}
    return Call("POST", "/1.0/images", one("model.operation:Operation"), json=body)


def delete_image(name: str) -> Call[bool]:
    return Call("DELETE", img(name), lambda d: bool(d["deleted"]))


def net(name: str) -> str:
    from virtfleet.model.network import validate_network_name

    try:
        return f"/1.0/networks/{quote(validate_network_name(name), safe='')}"
    except InvalidNameError as err:
        raise ApiError(err.code, err.message, err.status) from err


def list_networks() -> Call[list[Network]]:
    return Call("GET", "/1.0/networks", many("model.network:Network"))


def get_network(name: str) -> Call[Network]:
    return Call("GET", net(name), one("model.network:Network"))


def create_network(spec: Mapping[str, Any]) -> Call[Network]:
    return Call("POST", "/1.0/networks", one("model.network:Network"), json=dict(spec))


def delete_network(name: str) -> Call[bool]:
    return Call("DELETE", net(name), lambda d: bool(d["deleted"]))


def pool(name: str) -> str:
    return f"/1.0/storage-pools/{segment(name, 'pool name')}"


def list_pools() -> Call[list[Pool]]:
    return Call("GET", "/1.0/storage-pools", many("model.pools:Pool"))


def get_pool(name: str) -> Call[Pool]:
    return Call("GET", pool(name), one("model.pools:Pool"))


def create_pool(body: Mapping[str, Any]) -> Call[Pool]:
    return Call("POST", "/1.0/storage-pools", one("model.pools:Pool"), json=dict(body))


def delete_pool(name: str) -> Call[bool]:
    return Call("DELETE", pool(name), lambda d: bool(d["deleted"]))


def list_volumes(name: str) -> Call[list[Volume]]:
    return Call("GET", f"{pool(name)}/volumes", many("model.pools:Volume"))


def get_volume(name: str, volume: str) -> Call[Volume]:
    """``volume``: ``<instance>/<disk>``."""
    instance, _, disk = volume.partition("/")
    where = f"{segment(instance, 'instance name')}/{segment(disk, 'disk name')}"
    return Call("GET", f"{pool(name)}/volumes/{where}", one("model.pools:Volume"))


def host() -> Call[HostFacts]:
    return Call("GET", "/1.0/host", one("model.host:HostFacts"))


def list_hosts() -> Call[list[HostRecord]]:
    return Call("GET", "/1.0/hosts", many("model.host:HostRecord"))


def cluster_status() -> Call[ClusterStatus]:
    return Call("GET", "/1.0/cluster", one("model.cluster:ClusterStatus"))


def cluster_init(body: dict[str, Any]) -> Call[ClusterInitResult]:
    return Call("POST", "/1.0/cluster/init", one("model.cluster:ClusterInitResult"), json=body)


def cluster_remove_host(host: str, force: bool) -> Call[HostRemoval]:
    path = f"/1.0/cluster/hosts/{quote(host, safe='')}"
    parse = one("model.cluster:HostRemoval")
    return Call("DELETE", path, parse, params={"force": "true" if force else "false"})


def cluster_token_create(ttl_s: float) -> Call[NewJoinToken]:
    parse = one("model.cluster:NewJoinToken")
    return Call("POST", "/1.0/cluster/tokens", parse, json={"ttl_s": ttl_s})


def cluster_join(body: dict[str, Any]) -> Call[ClusterJoinResult]:
    return Call("POST", "/1.0/cluster/join", one("model.cluster:ClusterJoinResult"), json=body)


def cluster_leave() -> Call[ClusterLeaveResult]:
    return Call("POST", "/1.0/cluster/leave", one("model.cluster:ClusterLeaveResult"), json={})


def get_host(host: str) -> Call[HostRecord]:
    return Call("GET", f"/1.0/hosts/{quote(host, safe='')}", one("model.host:HostRecord"))


def host_check() -> Call[list[Check]]:
    return Call("GET", "/1.0/host/check", many("model.host:Check"))


def boot_report() -> Call[BootReport]:
    return Call("GET", "/1.0/host/boot-report", one("model.boot:BootReport"))


def shutdown_guests(timeout_s: float) -> Call[Operation]:
    return Call(
        "POST", "/1.0/host/shutdown-guests", one("model.operation:Operation"),
        json={"timeout_s": timeout_s},
    )  # fmt: skip


def list_operations() -> Call[list[Operation]]:
    return Call("GET", "/1.0/operations", many("model.operation:Operation"))


def get_operation(op_id: str) -> Call[Operation]:
    return Call("GET", op(op_id), one("model.operation:Operation"))


def cancel_operation(op_id: str) -> Call[Operation]:
    return Call("DELETE", op(op_id), one("model.operation:Operation"))


LONG_POLL_S = 30.0  # one server-side wait when no progress is reported (the server's default)


def wait_slice(poll_s: float, reporting: bool, left_s: float | None) -> float:
    """How long the next server-side wait may last: ``poll_s`` while progress is reported,
    else one long poll (the server answers the moment the operation is done, so waiting
    longer costs no latency, only fewer requests); never more than ``left_s``."""
    step = poll_s if reporting else max(poll_s, LONG_POLL_S)
    return max(0.0, step if left_s is None else min(step, left_s))


def wait_operation_once(op_id: str, timeout_s: float) -> Call[Operation]:
    return Call(
        "GET",
        f"{op(op_id)}/wait",
        one("model.operation:Operation"),
        params={"timeout_s": timeout_s},
        timeout_s=timeout_s + 15.0,
    )


def list_events(after: int | None, limit: int) -> Call[list[Event]]:
    params: dict[str, Any] = {"limit": limit}
    if after is not None:
        params["after"] = after
    return Call("GET", "/1.0/events", many("model.event:Event"), params=params)


CSRF_COOKIE = "vf_csrf"
CSRF_HEADER = "X-CSRF-Token"
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def csrf_headers(cookies: Mapping[str, str], method: str) -> dict[str, str]:
    """After ``login`` a change must echo the ``vf_csrf`` cookie in ``X-CSRF-Token``."""
    csrf = cookies.get(CSRF_COOKIE) if method in CHANGING else None
    return {CSRF_HEADER: csrf} if csrf else {}


def user(name: str) -> str:
    if not name or name in (".", "..") or len(name) > 64:
        raise ApiError("invalid_name", f"invalid username {name[:40]!r}", 400)
    return f"/1.0/users/{quote(name, safe='')}"


def login(username: str, password: str) -> Call[LoginResult]:
    body = {"username": username, "password": password}
    return Call("POST", "/1.0/login", one("model.auth:LoginResult"), json=body)


def logout() -> Call[dict[str, Any]]:
    return Call("POST", "/1.0/logout", raw)


def whoami() -> Call[Principal]:
    return Call("GET", "/1.0/whoami", one("model.auth:Principal"))


def list_users() -> Call[list[UserInfo]]:
    return Call("GET", "/1.0/users", many("model.auth:UserInfo"))


def get_user(name: str) -> Call[UserInfo]:
    return Call("GET", user(name), one("model.auth:UserInfo"))


def create_user(username: str, password: str, role: str) -> Call[UserInfo]:
    body = {"username": username, "password": password, "role": role}
    return Call("POST", "/1.0/users", one("model.auth:UserInfo"), json=body)


def delete_user(name: str) -> Call[bool]:
    return Call("DELETE", user(name), lambda d: bool(d["deleted"]))


def update_user(name: str, role: str | None, disabled: bool | None) -> Call[UserInfo]:
    body = {k: v for k, v in (("role", role), ("disabled", disabled)) if v is not None}
    return Call("PATCH", user(name), one("model.auth:UserInfo"), json=body)


def change_password(name: str, password: str, current: str | None) -> Call[UserInfo]:
    body = {"password": password, "current_password": current}
    return Call("PUT", f"{user(name)}/password", one("model.auth:UserInfo"), json=body)


def list_tokens() -> Call[list[TokenInfo]]:
    return Call("GET", "/1.0/tokens", many("model.auth:TokenInfo"))


def create_token(
    role: str, expires_in_s: float | None, description: str, never_expires: bool = False
) -> Call[NewToken]:
    body: dict[str, Any] = {"role": role, "expires_in_s": expires_in_s}
    body |= {"description": description, "never_expires": never_expires}
    return Call("POST", "/1.0/tokens", one("model.auth:NewToken"), json=body)


def revoke_token(token_id: str) -> Call[TokenInfo]:
    return Call("DELETE", f"/1.0/tokens/{quote(token_id, safe='')}", one("model.auth:TokenInfo"))


def list_audit(
    *,
    actor: str | None = None,
    method: str | None = None,
    path: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: int | None = None,
    limit: int = 100,
) -> Call[list[AuditEntry]]:
    given = {"actor": actor, "method": method, "path": path, "status": status, "limit": limit}
    params: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    params.update({k: v.isoformat() for k, v in (("since", since), ("until", until)) if v})
    return Call("GET", "/1.0/audit", many("model.audit:AuditEntry"), params=params)
