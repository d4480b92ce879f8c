"""One real etcd member for the tests: started by the tests themselves (Debian's
``etcd-server``), data on tmpfs, fast elections so one-second leases expire on time.

Every test that uses it works under its own key prefix, so one member serves a whole
test session (``EtcdStore(namespace=...)``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
READY_S = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EtcdMember:
    """One etcd member on loopback ports of its own that tests may stop and start again
    (same data, same URL): an etcd outage and its return."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        client, self.peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{client}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer}"
        args = [
            ETCD, "--name", "t", "--data-dir", str(self.scratch / "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"t={peer}",
            # 25 ms heartbeats: etcd's minimum lease TTL (1.5 election timeouts) stays under 1 s
            "--heartbeat-interval", "25", "--election-timeout", "250", "--pre-vote=true",
        ]  # fmt: skip
        with (self.scratch / "etcd.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _wait_healthy(self.url, self.proc, self.scratch / "etcd.log")

    def stop(self) -> None:
        """Stop the member (its data stays for ``start``)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextmanager
def etcd_lab(start: bool = True) -> Iterator[EtcdMember]:
    """An ``EtcdMember`` (started unless ``start`` is False), all of it removed after."""
    member = EtcdMember(Path(tempfile.mkdtemp(prefix="vf-etcd-", dir="/dev/shm")))
    try:
        if start:
            member.start()
        yield member
    finally:
        member.stop()
        shutil.rmtree(member.scratch, ignore_errors=True)


@contextmanager
def etcd_member() -> Iterator[str]:
    """A one-member etcd on loopback; yields its client URL and removes it all after."""
    with etcd_lab() as member:
        yield member.url


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).json().get("health") == "true":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"etcd not healthy after {READY_S} s: {log.read_text()[-2000:]}")
