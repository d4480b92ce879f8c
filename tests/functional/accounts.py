"""Clients of each role for the auth and audit tests, as a remote caller would be (no local mark).

``Accounts`` creates users through the local root (``api``), logs them in (a
cookie client that echoes its CSRF cookie on changes) and mints bearer tokens
through those sessions, the way an operator would.
"""

from __future__ import annotations

from typing import Any

import httpx

from virtfleet.app.bootstrap import Platform
from virtfleet.model.auth import Role

PASSWORD = "correct horse battery staple"
USERS = {Role.ADMIN: "ada", Role.OPERATOR: "otto", Role.VIEWER: "vera"}
BASE_URL = "http://virtfleet"


def remote_client(platform: Platform, peer: str = "127.0.0.1", **headers: str) -> httpx.AsyncClient:
    """A client on the app without the local-socket mark (it must bring credentials),
    connecting from address ``peer``."""
    transport = httpx.ASGITransport(app=platform.app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers)


class CsrfEcho(httpx.Auth):
    """Sends the ``vf_csrf`` cookie back in ``X-CSRF-Token`` on changes, as the web UI does."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    def auth_flow(self, request: httpx.Request) -> Any:
        csrf = self.client.cookies.get("vf_csrf")
        if csrf and request.method in ("POST", "PUT", "PATCH", "DELETE"):
            request.headers.setdefault("X-CSRF-Token", csrf)
        yield request


class Accounts:
    """Makes (and finally closes) clients acting as a user of a given role."""

    def __init__(self, platform: Platform, api: httpx.AsyncClient) -> None:
        self.platform = platform
        self.api = api
        self._clients: list[httpx.AsyncClient] = []

    async def user(self, role: Role, name: str | None = None) -> str:
        """The username of a user with ``role`` (created on first use)."""
        name = name or USERS[role]
        if (await self.api.get(f"/1.0/users/{name}")).status_code == 404:
            body = {"username": name, "password": PASSWORD, "role": role.value}
            r = await self.api.post("/1.0/users", json=body)
            assert r.status_code == 201, r.text
        return name

    async def cookie(
        self, role: Role, name: str | None = None, echo: bool = True
    ) -> httpx.AsyncClient:
        """A logged-in browser-like client; with ``echo`` it sends the CSRF header on changes."""
        username = await self.user(role, name)
        client = self._keep(remote_client(self.platform))
        if echo:
            client.auth = CsrfEcho(client)
        r = await client.post("/1.0/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return client

    async def mint(self, role: Role, name: str | None = None, **body: Any) -> dict[str, Any]:
        """A new token (the ``NewToken`` JSON) owned by the user of ``role``."""
        owner = await self.cookie(role, name)
        r = await owner.post("/1.0/tokens", json={"role": role.value, **body})
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def token(self, role: Role, name: str | None = None) -> httpx.AsyncClient:
        """A client sending a fresh bearer token of ``role``."""
        token = (await self.mint(role, name))["token"]
        return self.bearer(token)

    def bearer(self, token: str) -> httpx.AsyncClient:
        return self._keep(remote_client(self.platform, Authorization=f"Bearer {token}"))

    def anonymous(self, peer: str = "127.0.0.1") -> httpx.AsyncClient:
        return self._keep(remote_client(self.platform, peer))

    def _keep(self, client: httpx.AsyncClient) -> httpx.AsyncClient:
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
