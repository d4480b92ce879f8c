"""Logins and sessions: cookies with CSRF double submit, throttled failures that tell nothing,
the first admin of an empty store, and password rules (hashed, changed by whom)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.app.firstrun import PASSWORD_ENV, PASSWORD_FILE, ensure_admin
from virtfleet.errors import InvalidInputError
from virtfleet.model.auth import Role
from virtfleet.model.event import utcnow

from .accounts import PASSWORD, Accounts
from .helpers import assert_error
from .platform import make_platform, running

INSTANCE = {"name": "web", "image": "tiny"}


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/1.0/login", json={"username": username, "password": password})


async def test_login_sets_cookies_and_whoami(accounts: Accounts) -> None:
    """Login answers the user and a CSRF token and sets the session (HttpOnly) and CSRF cookies."""
    await accounts.user(Role.OPERATOR)
    client = accounts.anonymous()
    r = await login(client, "otto", PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["username"], body["role"]) == ("otto", "operator")
    assert client.cookies["vf_csrf"] == body["csrf_token"]
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("vf_session="))
    assert "HttpOnly" in session and "SameSite=strict" in session and "Secure" not in session
    csrf = next(c for c in cookies if c.startswith("vf_csrf="))
    assert "HttpOnly" not in csrf
    me = (await client.get("/1.0/whoami")).json()
    assert (me["username"], me["role"], me["via"]) == ("otto", "operator", "session")


@pytest.mark.parametrize("header", [None, "", "wrong-token"])
async def test_cookie_change_without_the_csrf_header_is_403(
    accounts: Accounts, platform: Platform, image: str, header: str | None
) -> None:
    """A change made with the session cookie but no or a wrong X-CSRF-Token is 403 csrf_failed."""
    client = await accounts.cookie(Role.OPERATOR, echo=False)
    headers = {} if header is None else {"X-CSRF-Token": header}
    rev = await platform.store.revision()
    r = await client.post("/1.0/instances", json=INSTANCE, headers=headers)
    assert "X-CSRF-Token" in assert_error(r, 403, "csrf_failed")
    assert await platform.store.revision() == rev
    assert (await client.get("/1.0/instances")).status_code == 200  # reads need no token
    csrf = client.cookies["vf_csrf"]
    r = await client.post("/1.0/instances", json=INSTANCE, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 202, r.text


async def test_csrf_token_of_another_session_is_refused(
    accounts: Accounts, platform: Platform, image: str
) -> None:
    """Double submit is bound to the session: a planted vf_csrf cookie of another login fails."""
    mine = await accounts.cookie(Role.OPERATOR, echo=False)
    other = await accounts.cookie(Role.VIEWER, echo=False)
    planted = other.cookies["vf_csrf"]
    mine.cookies.set("vf_csrf", planted)
    rev = await platform.store.revision()
    r = await mine.post("/1.0/instances", json=INSTANCE, headers={"X-CSRF-Token": planted})
    assert_error(r, 403, "csrf_failed")
    assert await platform.store.revision() == rev


async def test_logout_ends_the_session(accounts: Accounts) -> None:
    """After logout the old cookie is worthless (401), even if replayed."""
    client = await accounts.cookie(Role.VIEWER)
    cookie = client.cookies["vf_session"]
    r = await client.post("/1.0/logout")
    assert r.json() == {"username": "vera", "logged_out": True}
    replay = accounts.anonymous()
    replay.cookies.set("vf_session", cookie)
    assert "log in" in assert_error(await replay.get("/1.0/whoami"), 401, "unauthenticated")


async def test_expired_session_is_401(accounts: Accounts, platform: Platform) -> None:
    """A session past its TTL is refused with a message saying so."""
    client = await accounts.cookie(Role.VIEWER)
    platform.services.auth.clock = lambda: utcnow() + timedelta(days=1)
    assert "expired" in assert_error(await client.get("/1.0/whoami"), 401, "unauthenticated")


async def test_bad_logins_tell_nothing(accounts: Accounts) -> None:
    """A wrong password and an unknown user get the same 401 and the same message."""
    await accounts.user(Role.VIEWER)
    client = accounts.anonymous()
    wrong = assert_error(await login(client, "vera", "not the password"), 401, "unauthenticated")
    nobody = assert_error(await login(client, "nobody", "not the password"), 401, "unauthenticated")
    odd = assert_error(await login(client, "Not A Name!", "x"), 401, "unauthenticated")
    assert wrong == nobody == odd == "invalid username or password"
    assert "vf_session" not in client.cookies


async def test_five_failures_for_a_user_from_one_source_then_429(
    accounts: Accounts, platform: Platform
) -> None:
    """After 5 failures in a minute from one address that user is locked out there (429),
    even with the right password, until the window has passed."""
    await accounts.user(Role.VIEWER)
    client = accounts.anonymous(peer="10.0.0.9")
    for _ in range(5):
        assert (await login(client, "vera", "wrong")).status_code == 401
    r = await login(client, "vera", PASSWORD)
    assert "try again" in assert_error(r, 429, "rate_limited")
    platform.services.auth.limiter.clock = _later(platform, 61)
    assert (await login(client, "vera", PASSWORD)).status_code == 200


async def test_five_failures_per_address_then_429(accounts: Accounts) -> None:
    """Guessing across many usernames from one address is throttled too (unknown users alike)."""
    client = accounts.anonymous()
    for n in range(5):
        assert (await login(client, f"user{n}", "guess")).status_code == 401
    assert_error(await login(client, "someone", "guess"), 429, "rate_limited")


def _later(platform: Platform, seconds: float) -> Callable[[], float]:
    clock = platform.services.auth.limiter.clock
    return lambda: clock() + seconds


async def test_passwords_are_stored_as_argon2_hashes(
    accounts: Accounts, platform: Platform
) -> None:
    """No stored value holds a clear password; users hold an argon2id hash."""
    await accounts.cookie(Role.OPERATOR)
    found = await platform.services.auth.users.find("otto")
    assert found is not None and found[0].password_hash.startswith("$argon2id$")
    for kv in await platform.store.list("/"):
        assert PASSWORD.encode() not in kv.value, kv.key


async def test_users_change_their_own_password_knowing_the_current(
    accounts: Accounts,
) -> None:
    """Without the current password 400, with a wrong one 403; another user's password 403."""
    client = await accounts.cookie(Role.OPERATOR)
    await accounts.user(Role.VIEWER)
    url = "/1.0/users/otto/password"
    assert_error(await client.put(url, json={"password": "brand new pw"}), 400, "invalid_input")
    body = {"password": "brand new pw", "current_password": "nope"}
    assert_error(await client.put(url, json=body), 403, "forbidden")
    other = {"password": "brand new pw", "current_password": PASSWORD}
    assert_error(await client.put("/1.0/users/vera/password", json=other), 403, "forbidden")
    assert (await client.put(url, json=other)).status_code == 200
    assert (await login(accounts.anonymous(), "otto", "brand new pw")).status_code == 200
    assert (await client.get("/1.0/whoami")).status_code == 200  # the changing session lives on


async def test_admin_resets_a_password_and_ends_the_users_sessions(
    accounts: Accounts, api: httpx.AsyncClient
) -> None:
    """An admin needs no current password; the user's sessions end."""
    session = await accounts.cookie(Role.VIEWER)
    r = await api.put("/1.0/users/vera/password", json={"password": "reset by admin"})
    assert r.status_code == 200, r.text
    assert_error(await session.get("/1.0/whoami"), 401, "unauthenticated")
    assert_error(
        await api.put("/1.0/users/vera/password", json={"password": "short"}), 400, "invalid_input"
    )


async def test_user_rules(api: httpx.AsyncClient) -> None:
    """Names are checked, duplicates are 409, the last admin stays, deleting twice is fine."""
    bad = {"username": "Bad Name", "password": PASSWORD}
    assert_error(await api.post("/1.0/users", json=bad), 400, "invalid_name")
    good = {"username": "carol", "password": PASSWORD, "role": "admin"}
    assert (await api.post("/1.0/users", json=good)).status_code == 201
    assert_error(await api.post("/1.0/users", json=good), 409, "already_exists")
    assert (await api.delete("/1.0/users/admin")).json()["deleted"] is True
    assert_error(await api.delete("/1.0/users/carol"), 409, "conflict")
    assert (await api.delete("/1.0/users/ghost")).json() == {"username": "ghost", "deleted": False}
    listed = (await api.get("/1.0/users")).json()
    assert [(u["username"], u["role"]) for u in listed] == [("carol", "admin")]
    assert "password_hash" not in listed[0]


# First start.


async def test_first_start_with_a_random_password(platform: Platform, tmp_path: Path) -> None:
    """No users and no env var: ``admin`` gets a random password, in a 0600 file."""
    path = tmp_path / PASSWORD_FILE
    password = path.read_text().strip()
    assert len(password) >= 16 and os.stat(path).st_mode & 0o777 == 0o600
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as client:
        assert (await login(client, "admin", password)).status_code == 200
    for kv in await platform.store.list("/"):
        assert password.encode() not in kv.value


async def test_first_start_with_the_env_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``VIRTFLEET_ADMIN_PASSWORD`` sets the first password: nothing printed, no file."""
    monkeypatch.setenv(PASSWORD_ENV, "from the environment")
    platform, _ = make_platform(tmp_path)
    async with running(platform):
        assert not (tmp_path / PASSWORD_FILE).exists()
        transport = httpx.ASGITransport(app=platform.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as c:
            assert (await login(c, "admin", "from the environment")).status_code == 200


async def test_first_start_refuses_a_weak_env_password(tmp_path: Path) -> None:
    """A too short ``VIRTFLEET_ADMIN_PASSWORD`` stops the start, naming the variable."""
    platform, _ = make_platform(tmp_path)
    with pytest.raises(InvalidInputError, match=PASSWORD_ENV):
        await ensure_admin(platform.services.auth, tmp_path, environ={PASSWORD_ENV: "short"})
    assert await platform.services.auth.list_users() == []
