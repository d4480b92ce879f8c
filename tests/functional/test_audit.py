"""The audit log: every change request, allowed or not, with actor, source and status; no
secrets in it; only admins read it; a failing audit write never fails the request."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform
from virtfleet.model.audit import AuditEntry, AuditQuery
from virtfleet.model.auth import Role
from virtfleet.model.event import utcnow
from virtfleet.state import audit as audit_state
from virtfleet.state.audit import AuditLog
from virtfleet.state.memory import MemoryStore

from .accounts import BASE_URL, PASSWORD, Accounts
from .helpers import assert_error, wait_op
from .platform import make_platform, running


async def entries(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await api.get("/1.0/audit", params=params)
    assert r.status_code == 200, r.text
    return list(r.json())


async def test_success_and_refusal_are_recorded(
    accounts: Accounts, api: httpx.AsyncClient, image: str
) -> None:
    """An operator's create (202) and a viewer's refused create (403) both leave an entry."""
    operator = await accounts.token(Role.OPERATOR)
    viewer = await accounts.token(Role.VIEWER)
    body = {"name": "web", "image": "tiny"}
    await wait_op(api, await operator.post("/1.0/instances", json=body))
    assert (await viewer.post("/1.0/instances", json={**body, "name": "nope"})).status_code == 403
    [refused, done] = await entries(api, path="/1.0/instances", method="POST", limit=2)
    assert (done["actor"], done["role"], done["via"], done["status"]) == (
        "otto",
        "operator",
        "token",
        202,
    )
    assert (refused["actor"], refused["status"]) == ("vera", 403)
    assert done["source"] == "127.0.0.1" and done["summary"]["body"]["name"] == "web"
    assert done["time"] <= refused["time"] and done["duration_ms"] >= 0


async def test_local_root_and_reads(api: httpx.AsyncClient, image: str) -> None:
    """The local socket acts as root@local from ``unix``; reads (GET) are not audited."""
    await api.get("/1.0/instances")
    mine = await entries(api, actor="root@local")
    assert [(e["method"], e["path"], e["source"]) for e in mine] == [
        ("POST", "/1.0/images", "unix")
    ]


async def test_failed_login_is_recorded_without_the_password(
    accounts: Accounts, api: httpx.AsyncClient
) -> None:
    """A failed login is an anonymous 401 entry naming the user tried; no password anywhere."""
    await accounts.user(Role.VIEWER)
    anon = accounts.anonymous()
    guess = "hunter2-guess"
    await anon.post("/1.0/login", json={"username": "vera", "password": guess})
    await anon.post("/1.0/login", json={"username": "vera", "password": PASSWORD})
    [ok, failed] = await entries(api, path="/1.0/login")
    assert (failed["actor"], failed["status"]) == ("anonymous", 401)
    assert failed["summary"]["body"] == {"username": "vera", "password": "***"}
    assert (ok["actor"], ok["status"]) == ("vera", 200)
    everything = json.dumps(await entries(api, limit=1000))
    assert guess not in everything and PASSWORD not in everything


async def test_secrets_never_reach_the_log(accounts: Accounts, api: httpx.AsyncClient) -> None:
    """New passwords, minted tokens, Authorization headers and cookies are not recorded."""
    token = (await accounts.mint(Role.OPERATOR))["token"]
    client = accounts.bearer(token)
    await client.post("/1.0/tokens?secret=s3cr3t", json={"role": "viewer", "description": "ci"})
    await api.put("/1.0/users/otto/password", json={"password": "another passw0rd"})
    logged = await entries(api, limit=1000)
    text = json.dumps(logged)
    for secret in (token, token.split(".", 1)[1], "another passw0rd", "s3cr3t", PASSWORD):
        assert secret not in text
    minted = next(
        e
        for e in logged
        if e["path"] == "/1.0/tokens" and e["actor"] == "otto" and e["via"] == "token"
    )
    assert minted["summary"] == {
        "query": {"secret": "***"},
        "body": {"role": "viewer", "description": "ci"},
    }


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER])
async def test_audit_is_admin_only(accounts: Accounts, anon: httpx.AsyncClient, role: Role) -> None:
    """Operators and viewers get 403, anonymous callers 401; an admin token reads it."""
    assert_error(await (await accounts.token(role)).get("/1.0/audit"), 403, "forbidden")
    assert_error(await anon.get("/1.0/audit"), 401, "unauthenticated")
    assert (await (await accounts.token(Role.ADMIN)).get("/1.0/audit")).status_code == 200


async def test_filters(accounts: Accounts, api: httpx.AsyncClient) -> None:
    """actor, method, path prefix, status, since/until and limit narrow the answer."""
    viewer = await accounts.token(Role.VIEWER)
    await viewer.delete("/1.0/images/tiny")  # 403
    await viewer.post("/1.0/tokens", json={"role": "viewer"})  # 201
    assert [e["status"] for e in await entries(api, actor="vera", path="/1.0/")] == [
        201,
        403,
        201,
        200,
    ]
    assert [e["path"] for e in await entries(api, actor="vera", status=403)] == ["/1.0/images/tiny"]
    assert [e["method"] for e in await entries(api, actor="vera", method="delete")] == ["DELETE"]
    assert len(await entries(api, limit=1)) == 1
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert await entries(api, since=future) == []
    assert len(await entries(api, until=future, actor="vera")) == 4
    past = (utcnow() - timedelta(hours=1)).replace(tzinfo=None).isoformat()  # naive: UTC
    assert len(await entries(api, since=past, actor="vera")) == 4
    assert_error(await api.get("/1.0/audit", params={"limit": 0}), 400, "invalid_input")


async def test_a_failing_audit_write_never_breaks_the_request(
    api: httpx.AsyncClient, platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """With the audit store gone the change still succeeds; the failure is logged."""

    async def broken(entry: object) -> object:
        raise OSError("disk full")

    platform.services.audit.record = broken  # type: ignore[method-assign]
    r = await api.post("/1.0/images", json={"name": "tiny"})
    assert r.status_code == 202
    assert (await wait_op(api, r))["status"] == "success"
    assert "audit write failed for POST /1.0/images" in caplog.text


async def test_the_daemon_keeps_the_log_in_its_store(tmp_path: Path) -> None:
    """Wired as the daemon is, entries live in the one store: an anonymous request's under
    /audit-anonymous/, a user's under /audit/."""
    platform, _ = make_platform(tmp_path, separate_audit=False)
    async with running(platform):
        transport = httpx.ASGITransport(app=platform.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as c:
            await c.post("/1.0/login", json={"username": "admin", "password": "wrong"})
            await c.post("/1.0/login", json={"username": "admin", "password": "wrong"})
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=local_admin(platform.app)), base_url=BASE_URL
        ) as local:
            await local.post("/1.0/logout")
        [anonymous, _] = await platform.store.list("/audit-anonymous/")
        assert json.loads(anonymous.value)["path"] == "/1.0/login"
        [kv] = await platform.store.list("/audit/")
        assert json.loads(kv.value)["actor"] == "root@local"


async def test_retention_keeps_the_newest() -> None:
    """Beyond its bound the log drops its oldest entries."""
    log = AuditLog(MemoryStore(), max_entries=3)
    for n in range(5):
        await log.append(
            AuditEntry(actor=f"u{n}", source="unix", method="POST", path="/", status=200)
        )
    assert await log.prune() == 2
    assert [e.actor for e in await log.query(AuditQuery(limit=10))] == ["u4", "u3", "u2"]


async def test_an_anonymous_flood_cannot_push_out_real_entries(
    accounts: Accounts, api: httpx.AsyncClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of unauthenticated requests fill only their own bounded bucket: every
    entry of a real actor stays, and the anonymous bucket keeps to its bound."""
    monkeypatch.setattr(audit_state, "PRUNE_EVERY", 10)
    log = AuditLog(MemoryStore(), max_entries=50, max_anonymous=20)
    platform.services.audit.log = log
    for n in range(5):
        r = await api.post("/1.0/users", json={"username": f"real{n}", "password": PASSWORD})
        assert r.status_code == 201, r.text
    flood = accounts.anonymous(peer="203.0.113.9")
    for n in range(200):
        await flood.post("/1.0/instances", json={"name": f"x{n}", "image": "tiny"})
    listed = await entries(api, limit=1000)
    real = [e for e in listed if e["actor"] == "root@local"]
    assert len(real) == 5
    assert len([e for e in listed if e["actor"] == "anonymous"]) <= 20 + 10
    assert await log.store.count("/audit-anonymous/") <= 30
    times = [e["time"] for e in listed]
    assert times == sorted(times, reverse=True)  # the two buckets merged, newest first


class PageCounter(MemoryStore):
    """A store that remembers the most keys one ``list`` call returned."""

    most = 0

    async def list(self, prefix: str, **page: Any) -> list[Any]:
        found = await super().list(prefix, **page)
        self.most = max(self.most, len(found))
        return found


async def test_prune_and_query_read_bounded_pages() -> None:
    """With thousands of entries, pruning and a query that matches nothing never read
    more than a page (or a prune batch) at a time."""
    store = PageCounter()
    log = AuditLog(store, max_entries=3000)
    for n in range(3100):
        entry = AuditEntry(actor=f"u{n}", source="unix", method="POST", path="/", status=200)
        await log._put_new("/audit/", entry)
    assert await log.prune() == 100
    assert await log.query(AuditQuery(actor="nobody", limit=10)) == []
    assert store.most <= audit_state.PAGE
    newest = await log.query(AuditQuery(limit=2))
    assert [e.actor for e in newest] == ["u3099", "u3098"]


async def test_one_anonymous_source_gets_sixty_entries_a_minute(
    accounts: Accounts, api: httpx.AsyncClient, platform: Platform
) -> None:
    """Past 60 entries a minute a source without credentials is counted, not recorded (the
    61st entry says so); its next entry after the minute says how many were left out.
    Other sources are recorded as before."""
    flood, other = accounts.anonymous(peer="203.0.113.7"), accounts.anonymous(peer="192.0.2.8")
    for n in range(100):
        await flood.post("/1.0/instances", json={"name": f"x{n}", "image": "tiny"})
    for _ in range(3):
        await other.post("/1.0/login", json={"username": "ada", "password": "guess"})
    recorded = await entries(api, actor="anonymous", limit=1000)
    from_flood = [e for e in recorded if e["source"] == "203.0.113.7"]
    assert len(from_flood) == 61 and from_flood[0]["summary"]["throttled"] is True
    assert len([e for e in recorded if e["source"] == "192.0.2.8"]) == 3
    throttle = platform.services.audit.throttle
    clock = throttle.clock
    throttle.clock = lambda: clock() + 61
    await flood.post("/1.0/instances", json={"name": "late", "image": "tiny"})
    [latest] = await entries(api, actor="anonymous", limit=1)
    assert latest["summary"]["suppressed"] == 39
