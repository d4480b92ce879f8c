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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def etcd_member() -> Iterator[str]:
    """A one-member etcd on loopback; yields its client URL and removes it all after."""
    scratch = Path(tempfile.mkdtemp(prefix="vf-etcd-", dir="/dev/shm"))
    client, peer = _free_port(), _free_port()
    url = f"http://127.0.0.1:{client}"
    args = [
        ETCD, "--name", "t", "--data-dir", str(scratch / "data"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"t=http://127.0.0.1:{peer}",
        # 25 ms heartbeats: etcd's minimum lease TTL (1.5 election timeouts) stays under 1 s
        "--heartbeat-interval", "25", "--election-timeout", "250", "--pre-vote=true",
    ]  # fmt: skip
    with (scratch / "etcd.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, proc, scratch / "etcd.log")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)


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
