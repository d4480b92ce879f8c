"""Who may do what: every route group per role, by token and by session cookie; 401s for
missing, expired and revoked credentials; the local socket as root; websockets refused
with close code 4000 + status."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.exceptions import ConnectionClosed

from virtfleet.app.bootstrap import Platform
from virtfleet.client.paths import api_socket
from virtfleet.model.auth import Role
from virtfleet.model.event import utcnow

from .accounts import BASE_URL, PASSWORD, Accounts
from .helpers import assert_error, create, wait_op
from .platform import serve_uds

VIEW, OPER, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN


@dataclass(frozen=True)
class Route:
    group: str
    method: str
    path: str
    needs: Role
    ok: int  # the status an allowed caller gets in the ``world`` fixture
    body: dict[str, Any] | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


# Allowed changes never disturb the routes after them; changes that go on in the background
# (operations) come after every route an operator is refused.
ROUTES = [
    Route("meta", "GET", "/1.0", VIEW, 200),
    Route("session", "GET", "/1.0/whoami", VIEW, 200),
    Route("users", "GET", "/1.0/users", ADMIN, 200),
    Route("users", "GET", "/1.0/users/victim", ADMIN, 200),
    Route("users", "POST", "/1.0/users", ADMIN, 201, {"username": "newbie", "password": PASSWORD}),
    Route("users", "PUT", "/1.0/users/victim/password", ADMIN, 200, {"password": "a new secret!"}),
    Route("users", "DELETE", "/1.0/users/victim", ADMIN, 200),
    Route("audit", "GET", "/1.0/audit", ADMIN, 200),
    Route("instances", "GET", "/1.0/instances", VIEW, 200),
    Route("instances", "GET", "/1.0/instances/demo", VIEW, 200),
    Route("instances", "GET", "/1.0/instances/demo/log", VIEW, 200),
    Route("instances", "POST", "/1.0/instances", OPER, 202, {"name": "web", "image": "tiny"}),
    Route("instances", "PUT", "/1.0/instances/demo/state", OPER, 202, {"action": "start"}),
    Route("instances", "DELETE", "/1.0/instances/spare", OPER, 202),
    Route("images", "GET", "/1.0/images", VIEW, 200),
    Route("images", "GET", "/1.0/images/tiny", VIEW, 200),
    Route("images", "POST", "/1.0/images", OPER, 202, {"name": "other"}),
    Route("images", "DELETE", "/1.0/images/tiny", OPER, 409),  # allowed, but in use
    Route("operations", "GET", "/1.0/operations", VIEW, 200),
    Route("operations", "GET", "/1.0/operations/{op}", VIEW, 200),
    Route("operations", "GET", "/1.0/operations/{op}/wait", VIEW, 200),
    Route("operations", "DELETE", "/1.0/operations/{op}", OPER, 409),  # allowed, but done
    Route("host", "GET", "/1.0/host", VIEW, 200),
    Route("host", "GET", "/1.0/host/check", VIEW, 200),
    Route("events", "GET", "/1.0/events", VIEW, 200),
    Route("tokens", "GET", "/1.0/tokens", VIEW, 200),
    Route("tokens", "POST", "/1.0/tokens", VIEW, 201, {"role": "viewer"}),
]
GROUPS = sorted({r.group for r in ROUTES})


@pytest.fixture
async def world(api: httpx.AsyncClient, image: str, accounts: Accounts) -> dict[str, str]:
    """Instances ``demo`` and ``spare`` (stopped), a user ``victim``; ``op``: a done operation."""
    op = await create(api, "demo")
    await create(api, "spare")
    await accounts.user(VIEW, "victim")
    return {"op": str(op["id"])}


async def check(
    client: httpx.AsyncClient, route: Route, role: Role, platform: Platform, world: dict[str, str]
) -> None:
    """Allowed: the route's usual status. Forbidden: 403 and not one store write."""
    path = route.path.format(**world)
    rev = await platform.store.revision()
    r = await client.request(route.method, path, json=route.body)
    if role.allows(route.needs):
        assert r.status_code == route.ok, f"{role} {route}: {r.text}"
    else:
        assert r.status_code == 403, f"{role} {route}: {r.text}"
        assert_error(r, 403, "forbidden")
        assert await platform.store.revision() == rev, f"{role} {route} wrote to the store"


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("role", list(Role))
async def test_each_role_by_token(
    role: Role, group: str, accounts: Accounts, platform: Platform, world: dict[str, str]
) -> None:
    """A bearer token of each role: allowed calls succeed, the others are 403 and write nothing."""
    client = await accounts.token(role)
    for route in (r for r in ROUTES if r.group == group):
        await check(client, route, role, platform, world)


@pytest.mark.parametrize("role", list(Role))
async def test_each_role_by_session_cookie(
    role: Role, accounts: Accounts, platform: Platform, world: dict[str, str]
) -> None:
    """The same rules hold for a logged-in browser session (sending its CSRF header)."""
    client = await accounts.cookie(role)
    for route in ROUTES:
        await check(client, route, role, platform, world)


@pytest.mark.parametrize("group", GROUPS)
async def test_no_credentials_is_401_everywhere(
    group: str, anon: httpx.AsyncClient, platform: Platform, world: dict[str, str]
) -> None:
    """Off the local socket, every route but login wants credentials: 401, nothing written."""
    for route in (r for r in ROUTES if r.group == group):
        rev = await platform.store.revision()
        r = await anon.request(route.method, route.path.format(**world), json=route.body)
        assert "log in" in assert_error(r, 401, "unauthenticated"), str(route)
        assert await platform.store.revision() == rev


async def test_local_socket_is_root(api: httpx.AsyncClient) -> None:
    """The local socket needs no password: the caller is root@local, an admin."""
    me = (await api.get("/1.0/whoami")).json()
    assert (me["username"], me["role"], me["via"]) == ("root@local", "admin", "local")
    assert "session_id" not in me


async def test_credentials_sent_on_the_local_socket_are_honoured(
    api: httpx.AsyncClient, accounts: Accounts, platform: Platform, image: str
) -> None:
    """A token sent over the local socket is who the caller is: a viewer stays a viewer."""
    token = (await accounts.mint(VIEW))["token"]
    rev = await platform.store.revision()
    r = await api.post(
        "/1.0/instances",
        json={"name": "web", "image": "tiny"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_error(r, 403, "forbidden")
    assert await platform.store.revision() == rev
    bad = await api.get("/1.0/instances", headers={"Authorization": "Bearer vf_nonsense"})
    assert_error(bad, 401, "unauthenticated")


@pytest.mark.parametrize(
    "header", ["Basic YWRtaW46cGFzc3dvcmQ=", "Bearer", "Bearer vf_0123456789abcdef.wrong", "x"]
)
async def test_bad_authorization_header_is_401(accounts: Accounts, header: str) -> None:
    """Another scheme, no token or a wrong secret: 401, never a fallback to anything else."""
    client = accounts.anonymous()
    assert_error(
        await client.get("/1.0/instances", headers={"Authorization": header}),
        401,
        "unauthenticated",
    )


async def test_expired_token_is_401_saying_so(accounts: Accounts, platform: Platform) -> None:
    """A token past its expiry is refused with a message that says it expired."""
    new = await accounts.mint(OPER, expires_in_s=60)
    client = accounts.bearer(new["token"])
    assert (await client.get("/1.0/instances")).status_code == 200
    platform.services.tokens.clock = lambda: utcnow() + timedelta(minutes=2)
    message = assert_error(await client.get("/1.0/instances"), 401, "unauthenticated")
    assert "expired" in message and new["id"] in message


async def test_revoked_token_is_401_saying_so(accounts: Accounts) -> None:
    """A revoked token stops working at once; revoking again changes nothing."""
    new = await accounts.mint(OPER)
    client = accounts.bearer(new["token"])
    r = await client.delete(f"/1.0/tokens/{new['id']}")
    assert r.status_code == 200 and r.json()["revoked_at"] is not None, r.text
    message = assert_error(await client.get("/1.0/instances"), 401, "unauthenticated")
    assert "revoked" in message
    owner = await accounts.cookie(OPER)
    assert (await owner.delete(f"/1.0/tokens/{new['id']}")).status_code == 200


async def test_tokens_of_a_deleted_user_die_with_it(
    api: httpx.AsyncClient, accounts: Accounts
) -> None:
    """Deleting a user revokes its tokens (a re-created namesake does not revive them)."""
    new = await accounts.mint(OPER, "temp")
    client = accounts.bearer(new["token"])
    assert (await api.delete("/1.0/users/temp")).json() == {"username": "temp", "deleted": True}
    assert_error(await client.get("/1.0/instances"), 401, "unauthenticated")
    await accounts.user(ADMIN, "temp")
    assert_error(await client.get("/1.0/instances"), 401, "unauthenticated")


async def test_tokens_expire_in_90_days_unless_asked(
    accounts: Accounts, platform: Platform
) -> None:
    """No lifetime asked: 90 days, then 401; ``never_expires`` only when asked, not with one."""
    default = await accounts.mint(OPER)
    lifetime = datetime.fromisoformat(default["expires_at"]) - utcnow()
    assert timedelta(days=89, hours=23) < lifetime <= timedelta(days=90)
    forever = await accounts.mint(OPER, never_expires=True)
    assert forever["expires_at"] is None
    owner = await accounts.cookie(OPER)
    body = {"role": "viewer", "never_expires": True, "expires_in_s": 60}
    assert_error(await owner.post("/1.0/tokens", json=body), 400, "invalid_input")
    platform.services.tokens.clock = lambda: utcnow() + timedelta(days=91)
    assert_error(await accounts.bearer(default["token"]).get("/1.0/whoami"), 401, "unauthenticated")
    assert (await accounts.bearer(forever["token"]).get("/1.0/whoami")).status_code == 200


@pytest.mark.parametrize("by", ["self", "admin"])
async def test_a_password_change_revokes_the_users_tokens(
    accounts: Accounts, api: httpx.AsyncClient, by: str
) -> None:
    """Changing a password (the user's own change or an admin's reset) revokes every
    token the user minted with the old one; other users' tokens live on."""
    mine = await accounts.mint(OPER)
    other = await accounts.mint(VIEW)
    url = "/1.0/users/otto/password"
    if by == "self":
        session = await accounts.cookie(OPER)
        body = {"password": "a new password", "current_password": PASSWORD}
        r = await session.put(url, json=body)
    else:
        r = await api.put(url, json={"password": "a new password"})
    assert r.status_code == 200, r.text
    message = assert_error(
        await accounts.bearer(mine["token"]).get("/1.0/whoami"), 401, "unauthenticated"
    )
    assert "revoked" in message
    assert (await accounts.bearer(other["token"]).get("/1.0/whoami")).status_code == 200
    listed = {t["id"]: t for t in (await api.get("/1.0/tokens")).json()}
    assert listed[mine["id"]]["revoked_at"] is not None


@pytest.mark.parametrize(("role", "asked"), [(OPER, ADMIN), (VIEW, OPER), (VIEW, ADMIN)])
async def test_nobody_mints_a_token_above_their_role(
    accounts: Accounts, platform: Platform, role: Role, asked: Role
) -> None:
    """An operator cannot mint an admin token, nor a viewer an operator one."""
    client = await accounts.token(role)
    rev = await platform.store.revision()
    r = await client.post("/1.0/tokens", json={"role": asked.value})
    assert_error(r, 403, "forbidden")
    assert await platform.store.revision() == rev


async def test_token_minted_by_a_token_expires_no_later(accounts: Accounts) -> None:
    """A short-lived token cannot mint a longer-lived (or endless) one."""
    parent = await accounts.mint(OPER, expires_in_s=3600)
    client = accounts.bearer(parent["token"])
    child = (await client.post("/1.0/tokens", json={"role": "viewer"})).json()
    assert child["expires_at"] == parent["expires_at"]


async def test_token_is_shown_once_and_stored_hashed(
    accounts: Accounts, platform: Platform
) -> None:
    """The secret is in the create answer only: not in listings, not in the store."""
    new = await accounts.mint(OPER, description="ci")
    secret = new["token"].split(".", 1)[1]
    assert new["token"].startswith(f"vf_{new['id']}.")
    listed = (await (await accounts.cookie(OPER)).get("/1.0/tokens")).json()
    assert [t["id"] for t in listed] == [new["id"]] and "token" not in listed[0]
    for kv in await platform.store.list("/"):
        assert secret.encode() not in kv.value, kv.key


async def test_users_see_their_own_tokens_admins_all(accounts: Accounts) -> None:
    """Listing is scoped to the owner; revoking someone else's token is 403, for an admin fine."""
    mine = await accounts.mint(VIEW)
    theirs = await accounts.mint(OPER)
    viewer = await accounts.cookie(VIEW)
    assert [t["id"] for t in (await viewer.get("/1.0/tokens")).json()] == [mine["id"]]
    assert_error(await viewer.delete(f"/1.0/tokens/{theirs['id']}"), 403, "forbidden")
    admin = await accounts.cookie(ADMIN)
    every = {t["id"] for t in (await admin.get("/1.0/tokens")).json()}
    assert {mine["id"], theirs["id"]} <= every
    assert (await admin.delete(f"/1.0/tokens/{theirs['id']}")).status_code == 200
    assert_error(await admin.delete("/1.0/tokens/0000000000000000"), 404, "not_found")


# Websockets, through uvicorn on a Unix socket served like TCP (no local mark).


@contextlib.contextmanager
def _admin_session(data_dir: Path) -> Iterator[httpx.Client]:
    """The first admin, logged in with the one-time password the daemon wrote."""
    password = (data_dir / "initial-admin-password").read_text().strip()
    transport = httpx.HTTPTransport(uds=str(api_socket(data_dir)))
    with httpx.Client(transport=transport, base_url=BASE_URL) as client:
        r = client.post("/1.0/login", json={"username": "admin", "password": password})
        assert r.status_code == 200, r.text
        client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        yield client


def _ws(data_dir: Path, path: str, headers: dict[str, str] | None = None) -> unix_connect:
    return unix_connect(
        str(api_socket(data_dir)), f"ws://virtfleet{path}", additional_headers=headers
    )


async def _closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 10)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def test_websockets_need_credentials_and_role(tmp_path: Path) -> None:
    """No credentials: 4401. A viewer on a console: 4403. A viewer on events: streams."""

    async def scenario(data_dir: Path, viewer: str, operator: str) -> None:
        async with _ws(data_dir, "/1.0/events") as ws:
            code, reason = await _closed_with(ws)
            assert code == 4401 and "log in" in reason
        async with _ws(data_dir, "/1.0/instances/demo/console", viewer) as ws:
            assert (await _closed_with(ws))[0] == 4403
        async with _ws(data_dir, "/1.0/instances/ghost/console", operator) as ws:
            assert (await _closed_with(ws))[0] == 4404  # past the guard: no such instance
        async with _ws(data_dir, "/1.0/events?after=0", viewer) as ws:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert event["kind"] and event["revision"] > 0  # the history since revision 0

    with serve_uds(tmp_path, local=False) as data_dir, _admin_session(data_dir) as admin:
        assert wait_done(admin, admin.post("/1.0/images", json={"name": "tiny"}))
        tokens = {
            role: admin.post("/1.0/tokens", json={"role": role}).json()["token"]
            for role in ("viewer", "operator")
        }
        headers = {role: {"Authorization": f"Bearer {t}"} for role, t in tokens.items()}
        asyncio.run(scenario(data_dir, headers["viewer"], headers["operator"]))


def test_cookie_websocket_from_another_origin_is_refused(tmp_path: Path) -> None:
    """A session cookie on a cross-site websocket handshake is refused (4403 csrf_failed)."""

    async def scenario(data_dir: Path, cookie: str) -> None:
        other = {"Cookie": cookie, "Origin": "https://evil.example"}
        async with _ws(data_dir, "/1.0/events", other) as ws:
            code, reason = await _closed_with(ws)
            assert code == 4403 and "origin" in reason
        same = {"Cookie": cookie, "Origin": "http://virtfleet"}
        async with _ws(data_dir, "/1.0/events", same) as ws:
            with pytest.raises(TimeoutError):  # open: nothing to say yet
                await asyncio.wait_for(ws.recv(), 0.3)

    with serve_uds(tmp_path, local=False) as data_dir, _admin_session(data_dir) as admin:
        cookie = f"vf_session={admin.cookies['vf_session']}"
        asyncio.run(scenario(data_dir, cookie))


def wait_done(client: httpx.Client, r: httpx.Response) -> bool:
    assert r.status_code == 202, r.text
    done = client.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})
    return bool(done.json()["status"] == "success")


async def test_forbidden_instance_change_leaves_it_alone(
    accounts: Accounts, world: dict[str, str], api: httpx.AsyncClient
) -> None:
    """A viewer's stop/delete of an instance is 403 and the instance is as it was."""
    viewer = await accounts.token(VIEW)
    assert_error(await viewer.delete("/1.0/instances/demo"), 403, "forbidden")
    r = await viewer.put("/1.0/instances/demo/state", json={"action": "start"})
    assert_error(r, 403, "forbidden")
    demo = (await api.get("/1.0/instances/demo")).json()
    assert demo["status"]["power"] == "stopped" and demo["desired"]["power"] == "stopped"
    assert (await wait_op(api, {"id": world["op"]}))["status"] == "success"
