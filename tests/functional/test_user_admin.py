"""Admins change a user's role and disable or enable it (``PATCH /1.0/users/{name}``): the
new role applies to the user's live session and tokens at once; a disabled user cannot log
in and its session and tokens are refused until it is enabled again; the last enabled
admin can be neither demoted nor disabled, and nobody disables themselves."""

from __future__ import annotations

from tests.functional.accounts import PASSWORD, Accounts
from virtfleet.model.auth import Role


async def test_role_change_applies_to_the_live_session_and_tokens(accounts: Accounts) -> None:
    admin = await accounts.cookie(Role.ADMIN)
    session = await accounts.cookie(Role.VIEWER, "rita")
    token = accounts.bearer((await accounts.mint(Role.VIEWER, "rita"))["token"])
    assert (await session.get("/1.0/whoami")).json()["role"] == "viewer"
    r = await admin.patch("/1.0/users/rita", json={"role": "operator"})
    assert r.status_code == 200 and r.json()["role"] == "operator", r.text
    assert (await session.get("/1.0/whoami")).json()["role"] == "operator"
    assert (await token.get("/1.0/whoami")).json()["role"] == "viewer"  # a viewer token stays one


async def test_disabled_user_cannot_log_in_and_its_session_and_tokens_stop(
    accounts: Accounts,
) -> None:
    admin = await accounts.cookie(Role.ADMIN)
    session = await accounts.cookie(Role.OPERATOR, "dave")
    token = accounts.bearer((await accounts.mint(Role.OPERATOR, "dave"))["token"])
    r = await admin.patch("/1.0/users/dave", json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True, r.text
    assert (await session.get("/1.0/whoami")).status_code == 401
    assert (await token.get("/1.0/instances")).status_code == 401
    login = await accounts.anonymous().post(
        "/1.0/login", json={"username": "dave", "password": PASSWORD}
    )
    assert login.status_code == 401 and "disabled" in login.json()["error"]["message"]
    listed = {u["username"]: u["disabled"] for u in (await admin.get("/1.0/users")).json()}
    assert listed["dave"] is True
    assert (await admin.patch("/1.0/users/dave", json={"disabled": False})).status_code == 200
    assert (await token.get("/1.0/instances")).status_code == 200  # tokens were kept, not revoked


async def test_last_admin_and_self_are_protected(accounts: Accounts) -> None:
    admin = await accounts.cookie(Role.ADMIN)
    me = (await admin.get("/1.0/whoami")).json()["username"]
    r = await admin.patch(f"/1.0/users/{me}", json={"disabled": True})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
    others = [u["username"] for u in (await admin.get("/1.0/users")).json() if u["username"] != me]
    for other in others:  # the first-run admin: demoted while two admins remain
        assert (
            await admin.patch(f"/1.0/users/{other}", json={"role": "viewer"})
        ).status_code == 200
    r = await admin.patch(f"/1.0/users/{me}", json={"role": "viewer"})
    assert r.status_code == 409 and "last enabled admin" in r.json()["error"]["message"]
    await accounts.user(Role.ADMIN, "second")
    r = await admin.patch("/1.0/users/second", json={"disabled": True})
    assert r.status_code == 200, r.text
    r = await admin.patch(f"/1.0/users/{me}", json={"role": "viewer"})  # 'second' is disabled
    assert r.status_code == 409, r.text
    viewer = await accounts.cookie(Role.VIEWER, "vic")
    r = await viewer.patch("/1.0/users/vic", json={"role": "admin"})
    assert r.status_code == 403, r.text
    assert (await admin.get("/1.0/users/vic")).json()["role"] == "viewer"
