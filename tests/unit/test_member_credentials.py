"""The member credential: what it signs, who may verify it, and for how long; and which
request paths need the owning host."""

from __future__ import annotations

import pytest

from virtfleet.api.forward import owner_bound
from virtfleet.errors import MemberAuthError
from virtfleet.model.auth import Principal, Role
from virtfleet.service.membercred import BY, DATE, USER, SharedSecretCredentials
from virtfleet.state.memory import MemoryStore

ALICE = Principal(username="alice", role=Role.OPERATOR, via="token")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_member_verifies_what_another_signed_with_the_one_cluster_secret() -> None:
    store, clock = MemoryStore(), Clock()
    a, b = SharedSecretCredentials(store, "a", clock), SharedSecretCredentials(store, "b", clock)
    headers = await b.sign("post", "/1.0/instances/web/snapshots?x=1", b'{"name":"s"}', ALICE)
    found = await a.verify(headers, "POST", "/1.0/instances/web/snapshots?x=1", b'{"name":"s"}')
    assert (found.host_id, found.principal.username, found.principal.role) == (
        "b",
        "alice",
        Role.OPERATOR,
    )
    assert found.principal.via == "forwarded"
    assert await a.secret() == await b.secret()  # made once, by the first to need it


@pytest.mark.parametrize(
    ("method", "target", "body", "change"),
    [
        ("POST", "/1.0/instances/web/snapshots", b'{"name":"t"}', {}),  # another body
        ("DELETE", "/1.0/instances/web/snapshots", b'{"name":"s"}', {}),  # another method
        ("POST", "/1.0/instances/db/snapshots", b'{"name":"s"}', {}),  # another target
        ("POST", "/1.0/instances/web/snapshots", b'{"name":"s"}', {BY: "c"}),  # another member
        ("POST", "/1.0/instances/web/snapshots", b'{"name":"s"}', {USER: "e30="}),  # user
    ],
)
async def test_any_change_to_a_signed_request_fails(
    method: str, target: str, body: bytes, change: dict[str, str]
) -> None:
    store = MemoryStore()
    creds = SharedSecretCredentials(store, "b")
    headers = await creds.sign("POST", "/1.0/instances/web/snapshots", b'{"name":"s"}', ALICE)
    with pytest.raises(MemberAuthError, match="does not verify"):
        await creds.verify(headers | change, method, target, body)


async def test_another_clusters_secret_and_old_signatures_are_refused() -> None:
    clock, store = Clock(), MemoryStore()
    ours = SharedSecretCredentials(store, "a", clock)
    theirs = SharedSecretCredentials(MemoryStore(), "a", clock)
    headers = await theirs.sign("GET", "/1.0/instances/web/log", b"", ALICE)
    with pytest.raises(MemberAuthError, match="no member has signed"):
        await ours.verify(headers, "GET", "/1.0/instances/web/log", b"")
    assert await store.revision() == 0  # a request to verify writes nothing
    mine = await ours.sign("GET", "/1.0/instances/web/log", b"", ALICE)  # our secret now
    with pytest.raises(MemberAuthError, match="does not verify"):
        await ours.verify(headers, "GET", "/1.0/instances/web/log", b"")
    clock.now += 31
    with pytest.raises(MemberAuthError, match="expired"):
        await ours.verify(mine, "GET", "/1.0/instances/web/log", b"")
    with pytest.raises(MemberAuthError, match="complete"):
        await ours.verify({DATE: mine[DATE]}, "GET", "/1.0/instances/web/log", b"")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/1.0/instances/web/snapshots", "web"),
        ("/1.0/instances/web/snapshots/s1/revert", "web"),
        ("/1.0/instances/web/console", "web"),
        ("/1.0/instances/web/vnc", "web"),
        ("/1.0/instances/web/console/vnc-ticket", "web"),
        ("/1.0/instances/web/screenshot", "web"),
        ("/1.0/instances/web/log", "web"),
        ("/1.0/instances/web/guest", "web"),
        ("/1.0/instances/web/resources", "web"),
        ("/1.0/instances/web/exec", "web"),
        ("/1.0/instances/web/rootfs-snapshots/r1/restore", "web"),
        ("/1.0/instances/web/disks/root/export", "web"),
        ("/1.0/instances/web", None),  # the record: any member
        ("/1.0/instances/web/state", None),  # power: desired state, the owner's agent acts
        ("/1.0/instances", None),
        ("/1.0/images/tiny", None),
    ],
)
def test_owner_bound_paths(path: str, name: str | None) -> None:
    assert owner_bound(path) == name
