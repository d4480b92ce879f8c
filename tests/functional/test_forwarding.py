"""Any member serves the whole cluster: two daemons on one real etcd, each on a real
loopback HTTPS listener. Requests that need the owning host, sent to the other member,
are proxied to the owner (pinned to the certificate in its host record, signed with the
member credential) and answered with the owner's data; the owner's audit shows the user
and the forwarding host; an owner that is down or does not answer is 503
``owner_unreachable`` and nothing changes; a bad member credential is 401; a forwarded
request is never forwarded again."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from pathlib import Path

import httpx
import websockets
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from tests.functional.cluster import Member, pair
from tests.functional.helpers import assert_error, wait_op
from virtfleet.model.auth import Principal, Role
from virtfleet.service.membercred import DATE, SIGNATURE, SharedSecretCredentials
from virtfleet.util.pinning import pinned_context

MARKER = b"owner-a boot marker\r\n"


async def operator_token(m: Member) -> str:
    """A bearer token of the operator ``alice`` (users and tokens are in the shared store)."""
    await m.platform.services.auth.create_user("alice", "correct horse battery", Role.OPERATOR)
    owner = Principal(username="alice", role=Role.OPERATOR, via="token")
    return (await m.platform.services.tokens.create(owner, Role.OPERATOR)).token


async def test_owner_bound_requests_through_a_non_owner_reach_the_owner(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        (tmp_path / "host-a" / "console" / "web.log").write_bytes(b"hello from A\n" + MARKER)
        snap = await wait_op(
            b.api, await b.api.post("/1.0/instances/web/snapshots", json={"name": "s1"})
        )
        listed_b = await b.api.get("/1.0/instances/web/snapshots")
        listed_a = await a.api.get("/1.0/instances/web/snapshots")
        shot_b = await b.api.get("/1.0/instances/web/screenshot")
        shot_a = await a.api.get("/1.0/instances/web/screenshot")
        log_b = await b.api.get("/1.0/instances/web/log")
        audit_a = (await a.api.get("/1.0/audit")).json()
        audit_b = (await b.api.get("/1.0/audit")).json()
        b_touched = [call for call in b.driver.calls if call[1] == "web"]
        # B closes its idle connection to A: A's shutdown is not held for asyncio's 30 s
        # TLS close wait (the forwarder's idle time is 2 s).
        await asyncio.wait_for(a.stop_listener(), 10)
    assert snap["status"] == "success", snap
    assert [s["name"] for s in listed_b.json()] == [s["name"] for s in listed_a.json()] == ["s1"]
    assert listed_b.headers["x-virtfleet-served-by"] == "host-a"
    assert "x-virtfleet-served-by" not in listed_a.headers  # A answered it itself
    assert shot_b.status_code == 200 and shot_b.headers["content-type"] == "image/png"
    assert shot_b.content == shot_a.content and shot_b.content.startswith(b"\x89PNG")
    assert log_b.status_code == 200 and log_b.json()["log"].endswith(MARKER.decode())
    assert not b_touched  # B's driver never saw the instance
    entries = audit_a["entries"] if isinstance(audit_a, dict) else audit_a
    (forwarded,) = [e for e in entries if e["path"] == "/1.0/instances/web/snapshots"]
    assert (forwarded["actor"], forwarded["via"]) == ("root@local", "forwarded")
    assert forwarded["source"] == "127.0.0.1 (forwarded by host host-b)"
    assert forwarded["status"] == 202
    entries_b = audit_b["entries"] if isinstance(audit_b, dict) else audit_b
    (received,) = [e for e in entries_b if e["path"] == "/1.0/instances/web/snapshots"]
    assert (received["actor"], received["via"], received["status"]) == ("root@local", "local", 202)


async def _serial_socket(path: Path) -> asyncio.Server:
    """A stand-in for QEMU's serial chardev: sends the boot marker, then echoes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(MARKER)
        await writer.drain()
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(serve, path=str(path))


async def test_console_websocket_through_a_non_owner_shows_the_owner(tmp_path: Path) -> None:
    async with pair(tmp_path) as (_, b):
        token = await operator_token(b)
        serial = await _serial_socket(tmp_path / "host-a" / "console" / "web.sock")
        url = b.url.replace("https", "wss") + "/1.0/instances/web/console"
        async with (
            serial,
            connect(
                url, ssl=pinned_context(b.fingerprint),
                additional_headers={"Authorization": f"Bearer {token}"},
            ) as ws,
        ):  # fmt: skip
            first = await asyncio.wait_for(ws.recv(), 10)
            await ws.send(b"ls\r\n")
            echoed = await asyncio.wait_for(ws.recv(), 10)
        # VNC: the ticket is issued by the owner (forwarded), and the websocket that
        # carries only the ticket is forwarded too: the owner redeems it and answers.
        ticket = await b.api.post("/1.0/instances/web/console/vnc-ticket")
        vnc_url = b.url.replace("https", "wss") + "/1.0/instances/web/vnc"
        async with connect(
            f"{vnc_url}?ticket={ticket.json()['ticket']}", ssl=pinned_context(b.fingerprint),
            subprotocols=[Subprotocol("binary")],
        ) as vnc:  # fmt: skip
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait_for(vnc.recv(), 10)
        async with connect(f"{vnc_url}?ticket=made-up", ssl=pinned_context(b.fingerprint)) as bad:
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait_for(bad.recv(), 10)
    assert first == MARKER and echoed == b"ls\r\n"
    assert ticket.headers["x-virtfleet-served-by"] == "host-a"
    assert vnc.subprotocol == "binary"
    assert (vnc.close_code, vnc.close_reason) == (
        4409,
        "instance 'web' has no VNC server (is it running?)",
    )  # A's answer: the fake driver has no VNC server
    assert bad.close_code == 4403  # B relays A's refusal of a ticket A never issued


async def test_owner_down_or_silent_is_503_and_nothing_changes(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        await a.stop_listener()  # A's record still says online; its API does not answer
        silent = await b.api.post("/1.0/instances/web/snapshots", json={"name": "s1"})
        silent_ws = await _console_close(b)
        assert a.platform.presence is not None
        await a.platform.presence.stop()  # A's lease revoked: offline
        offline = await b.api.get("/1.0/instances/web/screenshot")
        ops = (await b.api.get("/1.0/operations")).json()
        snaps = a.platform.host.snapshots.snapshots("web")
    message = assert_error(silent, 503, "owner_unreachable")
    assert message.startswith(f"the owning host host-a ({a.host_id}) at {a.url} does not answer")
    assert "\n" not in message
    assert message.endswith("does not answer: Connection refused")
    assert silent_ws == (4503, message[:123])
    assert assert_error(offline, 503, "owner_unreachable") == (
        f"instance 'web' is owned by host host-a ({a.host_id}), which cannot be reached: "
        "it is offline"
    )
    assert snaps == []  # nothing was taken anywhere
    assert not [op for op in _items(ops) if op.get("kind", "").startswith("snapshot")]


def _items(found: object) -> list[dict[str, object]]:
    if isinstance(found, dict):
        return list(found.get("items") or found.get("operations") or [])
    return list(found) if isinstance(found, list) else []


async def _console_close(b: Member) -> tuple[int | None, str]:
    """Open the console through B with a fresh token; the close code and reason it gets."""
    token = await operator_token(b)
    url = b.url.replace("https", "wss") + "/1.0/instances/web/console"
    async with connect(
        url, ssl=pinned_context(b.fingerprint),
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as ws:  # fmt: skip
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code, ws.close_reason or ""


async def test_member_credential_must_verify_and_is_never_forwarded_again(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path) as (a, b):
        creds = SharedSecretCredentials(b.platform.store, b.host_id)
        root = Principal(username="root@local", role=Role.ADMIN, via="local")
        target = "/1.0/instances/web/screenshot"
        signed = await creds.sign("GET", target, b"", root)
        async with httpx.AsyncClient(verify=_pinned(a)) as http:
            good = await http.get(a.url + target, headers=signed)
            forged = await http.get(a.url + target, headers=signed | {SIGNATURE: "0" * 64})
            other_path = await http.get(a.url + "/1.0/instances/web/log", headers=signed)
            stale = await creds.sign("GET", target, b"", root)
            stale[DATE] = str(int(time.time()) - 600)
            expired = await http.get(a.url + target, headers=stale)
        async with httpx.AsyncClient(verify=_pinned(b)) as http:
            to_b = await creds.sign("GET", target, b"", root)
            looped = await http.get(b.url + target, headers=to_b)  # B does not own web
    assert good.status_code == 200 and good.content.startswith(b"\x89PNG")
    assert assert_error(forged, 401, "member_auth_failed").endswith("does not verify")
    assert assert_error(other_path, 401, "member_auth_failed").endswith("does not verify")
    assert "expired" in assert_error(expired, 401, "member_auth_failed")
    # B served it itself (a forwarded request is never forwarded): its door refuses.
    assert assert_error(looped, 409, "owned_elsewhere").startswith("instance 'web' is owned")
    assert "x-virtfleet-served-by" not in looped.headers


async def test_a_changed_certificate_or_a_wildcard_address_is_refused(tmp_path: Path) -> None:
    """The owner's certificate must be the one its host record names (the store is trusted),
    and its address one another host can reach."""
    async with pair(tmp_path) as (a, b):
        presence = a.platform.presence
        assert presence is not None and presence.lease is not None
        presence.fingerprint = "AA:" * 31 + "AA"
        await presence.repo.register(presence.record(), presence.lease)
        r = await b.api.get("/1.0/instances/web/screenshot")
        # A wildcard listen address is no address for another host (it would reach B itself).
        presence.api_url = a.url.replace("127.0.0.1", "0.0.0.0")
        await presence.repo.register(presence.record(), presence.lease)
        wildcard = await b.api.get("/1.0/instances/web/screenshot")
    message = assert_error(r, 503, "owner_unreachable")
    assert message.endswith("its certificate is not the one in its host record")
    assert assert_error(wildcard, 503, "owner_unreachable").endswith(
        f"it listens on {presence.api_url}, an address other hosts cannot use"
    )


def _pinned(m: Member) -> ssl.SSLContext:
    return pinned_context(m.fingerprint)
