"""The API over TCP + TLS on loopback: a remote with a pinned certificate and a token.

A real daemon serves HTTPS (its self-signed certificate) on a free 127.0.0.1
port besides its Unix socket. An operator token is minted over the Unix socket
with ``virtfleet token create --role operator --json`` (the authentication
work's command); every other step goes through ``virtfleet --remote NAME``
or the typed client built from the remotes file. Loopback addresses only.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from virtfleet.client import remotes
from virtfleet.client.remotes import Remote
from virtfleet.client.tls import pinned_context
from virtfleet.util.fingerprint import fingerprint_pem

from .conftest import BOOT_TIMEOUT_S, VIRTFLEET, Daemon, in_pty, read_until

pytestmark = pytest.mark.integration
WRONG_PIN = ":".join(["AB"] * 32)


def vf(daemon: Daemon, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI with this test's own remotes file (never the user's)."""
    env = {**os.environ, remotes.CONFIG_DIR_ENV: str(config_dir(daemon))}
    env.pop("VIRTFLEET_DATA_DIR", None)
    proc = subprocess.run([VIRTFLEET, *args], capture_output=True, text=True, timeout=180, env=env)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.stdout}{proc.stderr}"
    return proc


def config_dir(daemon: Daemon) -> Path:
    return daemon.data_dir / "client-config"


def served_fingerprint(daemon: Daemon) -> str:
    return fingerprint_pem((daemon.data_dir / "tls" / "server.crt").read_text())


def operator_token(daemon: Daemon) -> str:
    """A new operator token, minted as local root over the Unix socket with the
    authentication work's ``virtfleet token create --role operator --json``."""
    mint = ("token", "create", "--role", "operator", "--json")
    proc = vf(daemon, "--data-dir", str(daemon.data_dir), *mint)
    return str(json.loads(proc.stdout)["token"])


@pytest.fixture
def remote(tls_daemon: Daemon) -> Remote:
    """The remote ``t``: the daemon's HTTPS listener, its pinned certificate, a token."""
    token = operator_token(tls_daemon)
    pin = served_fingerprint(tls_daemon)
    vf(
        tls_daemon,
        "remote",
        "add",
        "t",
        tls_daemon.url,
        "--token",
        token,
        "--accept-fingerprint",
        pin,
    )
    saved = remotes.load(config_dir(tls_daemon) / "remotes.json").remotes["t"]
    assert saved.fingerprint == pin
    return saved


async def read_console_until(remote: Remote, name: str, needle: bytes) -> bytes:
    """Attach to ``name``'s console websocket (pinned TLS + token), retrying while the VM
    is still starting, and read until ``needle``."""
    target = remotes.client_for(remote).websocket(f"/1.0/instances/{name}/console")
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    seen = b""
    while time.monotonic() < deadline:
        try:
            async with target.connect() as ws:
                while needle not in seen:
                    message = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
                    seen += message if isinstance(message, bytes) else message.encode()
                return seen
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4409, closed  # not yet up
            await asyncio.sleep(0.2)
    raise AssertionError(f"no {needle!r} on the console of {name}; saw {seen[-500:]!r}")


def test_vm_lifecycle_and_console_over_a_remote(tls_daemon: Daemon, remote: Remote) -> None:
    """Over TCP + TLS with an operator token: create and start a tiny VM, see its boot
    marker through the console websocket, use `vm console`, then stop and delete it."""
    on = ("--remote", "t")
    vf(tls_daemon, *on, "vm", "create", "rv", "--image", "tiny")
    vf(tls_daemon, *on, "vm", "start", "rv", "--no-wait")
    seen = asyncio.run(read_console_until(remote, "rv", b"VIRTFLEET-READY hostname=rv"))
    assert b"VIRTFLEET-READY hostname=rv" in seen
    shown = json.loads(vf(tls_daemon, *on, "vm", "show", "rv", "--json").stdout)
    assert shown["status"]["power"] == "running"
    interactive_console(tls_daemon, "rv")
    vf(tls_daemon, *on, "vm", "stop", "rv", "--force")
    vf(tls_daemon, *on, "vm", "delete", "rv", "--disks")
    assert json.loads(vf(tls_daemon, *on, "vm", "list", "--json").stdout) == []


def interactive_console(daemon: Daemon, name: str) -> None:
    """`virtfleet --remote t vm console` in a pty runs a command in the guest; Ctrl-] ends it."""
    env = {**os.environ, remotes.CONFIG_DIR_ENV: str(config_dir(daemon))}
    proc, leader = in_pty([VIRTFLEET, "--remote", "t", "vm", "console", name], env)
    try:
        assert b"detach with Ctrl-]" in read_until(leader, b"Ctrl-]", 20)
        wait_for_prompt(leader, f"{name}:~# ".encode())
        os.write(leader, b"echo remote-$((6*7))\r")
        assert b"remote-42" in read_until(leader, b"remote-42", 20)
        os.write(leader, b"\x1d")
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        os.close(leader)


def wait_for_prompt(fd: int, prompt: bytes, timeout_s: float = 30.0) -> None:
    """Press Enter until the guest's shell prompts: init starts it only after the boot
    marker, and a line typed before that is lost."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        os.write(fd, b"\r")
        if prompt in read_until(fd, prompt, 2):
            return
    raise AssertionError(f"no shell prompt {prompt!r} within {timeout_s:.0f} s")


def test_request_without_token_is_401(tls_daemon: Daemon) -> None:
    """Over TCP nothing is local root: no token (or a bad one) is 401 unauthenticated."""
    ctx = pinned_context(served_fingerprint(tls_daemon))
    with httpx.Client(base_url=tls_daemon.url, verify=ctx) as api:
        bare = api.get("/1.0/instances")
        bad = api.get("/1.0/instances", headers={"Authorization": "Bearer vf_nope.nope"})
    for answer in (bare, bad):
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthenticated"


def test_wrong_pinned_fingerprint_is_certificate_mismatch(tls_daemon: Daemon) -> None:
    """A fingerprint that is not the server's certificate is refused at `remote add` and,
    once pinned, on every command: certificate_mismatch, the token never sent."""
    token = operator_token(tls_daemon)
    add = ("remote", "add", "bad", tls_daemon.url, "--token", token)
    added = vf(tls_daemon, *add, "--accept-fingerprint", WRONG_PIN, "--json", check=False)
    assert added.returncode == 1
    assert json.loads(added.stdout)["error"]["code"] == "certificate_mismatch"
    config = remotes.RemoteConfig()
    config.remotes["bad"] = Remote(url=tls_daemon.url, token=token, fingerprint=WRONG_PIN)
    remotes.save(config, config_dir(tls_daemon) / "remotes.json")
    used = vf(tls_daemon, "--remote", "bad", "vm", "list", "--json", check=False)
    assert used.returncode == 1
    error = json.loads(used.stdout)["error"]
    assert error["code"] == "certificate_mismatch"
    assert served_fingerprint(tls_daemon) in error["message"]
