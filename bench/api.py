"""API read latency with 1,000 instances: GET one and GET list over a real HTTP connection.

Runs ``virtfleet serve --driver fake`` (SQLite store, a fresh data dir) as a
subprocess, creates the instances through the API (``start: false``; half one
after the other from one client, half from 8 clients: creates/s of each), then
times sequential requests on one keep-alive connection over the daemon's Unix
socket with a sync httpx client (p50/p99 and requests/s), the list with
``?fields=name,status``, the same GET one with a bare HTTP/1.1 client (what
the server itself costs), and GET one from several connections at once
(throughput). Targets for GET one:
p50 <= 5 ms, p99 <= 25 ms.
Usage: .venv/bin/python bench/api.py [INSTANCES] [GET_ONE] [GET_LIST]
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

VIRTFLEET = str(Path(sys.executable).parent / "virtfleet")
BASE = "http://virtfleet"
TARGET_P50_MS, TARGET_P99_MS = 5.0, 25.0
CREATE_CONCURRENCY = 8
PARALLEL_CLIENTS = 8


class Daemon:
    """``virtfleet serve`` on a throwaway data dir, reached through its Unix socket."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="vfapi", dir="/tmp"))
        self.socket = self.data_dir / "api.sock"
        log = open(self.data_dir / "daemon.log", "ab")  # noqa: SIM115 - owned by the child
        argv = [VIRTFLEET, "--data-dir", str(self.data_dir), "serve", "--driver", "fake"]
        self.proc = subprocess.Popen(
            [*argv, "--listen", "none"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

    def client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(transport=transport, base_url=BASE, timeout=60)

    async def ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: see {self.data_dir / 'daemon.log'}")
            if self.socket.exists():
                async with self.client() as api:
                    try:
                        if (await api.get("/1.0")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
            await asyncio.sleep(0.05)
        raise TimeoutError("daemon did not answer in time")

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


async def create_one(api: httpx.AsyncClient, name: str) -> None:
    """POST one stopped instance and wait for its operation to succeed."""
    r = await api.post("/1.0/instances", json={"name": name, "start": False})
    r.raise_for_status()
    op = await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 60})
    if op.json()["status"] != "success":
        raise RuntimeError(f"create {name}: {op.text}")


async def create_instances(daemon: Daemon, names: list[str]) -> float:
    """Create every instance (stopped) from ``CREATE_CONCURRENCY`` connections at once;
    return the seconds it took."""
    clients = [daemon.client() for _ in range(CREATE_CONCURRENCY)]

    async def worker(api: httpx.AsyncClient, mine: list[str]) -> None:
        for name in mine:
            await create_one(api, name)

    started = time.perf_counter()
    try:
        await asyncio.gather(
            *(worker(c, names[i::CREATE_CONCURRENCY]) for i, c in enumerate(clients))
        )
    finally:
        for c in clients:
            await c.aclose()
    return time.perf_counter() - started


async def create_sequential(api: httpx.AsyncClient, names: list[str]) -> float:
    """Create the instances one after the other from one client; the seconds it took."""
    started = time.perf_counter()
    for name in names:
        await create_one(api, name)
    return time.perf_counter() - started


def timed(call: Callable[[], httpx.Response], count: int) -> list[float]:
    """Latencies (seconds) of ``count`` sequential calls; each must answer 200."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        r = call()
        latencies.append(time.perf_counter() - started)
        if r.status_code != 200:
            raise RuntimeError(f"{r.request.url}: {r.status_code} {r.text[:200]}")
    return latencies


def bare_get(sock: socket.socket, path: str) -> None:
    """One HTTP/1.1 GET on a kept-alive socket, reading exactly the response (200 only)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: virtfleet\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)


def timed_bare(daemon: Daemon, paths: Callable[[], str], count: int) -> list[float]:
    """Like ``timed`` without any client library: what the server itself costs."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(daemon.socket))
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            bare_get(sock, paths())
            latencies.append(time.perf_counter() - started)
    return latencies


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def summary(label: str, latencies: list[float]) -> dict[str, float]:
    total = sum(latencies)
    stats = {
        "n": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "rps": len(latencies) / total,
    }
    print(
        f"{label:<28} n={stats['n']:<5} p50 {stats['p50_ms']:7.2f} ms   "
        f"p99 {stats['p99_ms']:7.2f} ms   mean {stats['mean_ms']:7.2f} ms   "
        f"{stats['rps']:8.1f} req/s"
    )
    return stats


async def parallel_get_one(daemon: Daemon, names: list[str], count: int) -> float:
    """Requests/s of GET one from ``PARALLEL_CLIENTS`` connections at once."""
    rng = random.Random(2)
    clients = [daemon.client() for _ in range(PARALLEL_CLIENTS)]

    async def worker(api: httpx.AsyncClient) -> None:
        for _ in range(count // PARALLEL_CLIENTS):
            (await api.get(f"/1.0/instances/{rng.choice(names)}")).raise_for_status()

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    return (count // PARALLEL_CLIENTS * PARALLEL_CLIENTS) / (time.perf_counter() - started)


async def populate(daemon: Daemon, names: list[str]) -> dict[str, float]:
    """Half the instances created sequentially from one client, half from
    ``CREATE_CONCURRENCY`` clients; creates/s of each."""
    await daemon.ready()
    half = len(names) // 2
    async with daemon.client() as api:
        seq_s = await create_sequential(api, names[:half])
    par_s = await create_instances(daemon, names[half:])
    rates = {"create_seq_per_s": half / seq_s, "create_par_per_s": (len(names) - half) / par_s}
    print(
        f"created {half} instances sequentially from one client: {rates['create_seq_per_s']:.0f}/s;"
        f" {len(names) - half} from {CREATE_CONCURRENCY} clients: {rates['create_par_per_s']:.0f}/s"
    )
    return rates


def measure(daemon: Daemon, names: list[str], get_one: int, get_list: int) -> dict[str, object]:
    rng = random.Random(1)

    def one_path() -> str:
        return f"/1.0/instances/{rng.choice(names)}"

    transport = httpx.HTTPTransport(uds=str(daemon.socket))
    with httpx.Client(transport=transport, base_url=BASE, timeout=60) as api:
        listed = api.get("/1.0/instances").json()
        assert len(listed) == len(names), f"{len(listed)} instances listed, not {len(names)}"
        timed(lambda: api.get(one_path()), 200)  # warm-up
        one = summary("GET one (httpx)", timed(lambda: api.get(one_path()), get_one))
        bare = summary("GET one (bare HTTP/1.1)", timed_bare(daemon, one_path, get_one))
        list_latencies = timed(lambda: api.get("/1.0/instances"), get_list)
        many = summary(f"GET list of {len(names)} (httpx)", list_latencies)
        some = {"fields": "name,status"}
        picked = summary(
            "GET list ?fields=name,status",
            timed(lambda: api.get("/1.0/instances", params=some), get_list),
        )
    rps = asyncio.run(parallel_get_one(daemon, names, get_one))
    print(f"GET one (httpx) from {PARALLEL_CLIENTS} connections at once: {rps:.1f} req/s")
    return {
        "instances": len(names),
        "get_one": one,
        "get_one_bare": bare,
        "get_list": many,
        "get_list_fields": picked,
        "parallel_rps": rps,
    }


def verdict(result: dict[str, object]) -> bool:
    one = result["get_one"]
    assert isinstance(one, dict)
    ok = one["p50_ms"] <= TARGET_P50_MS and one["p99_ms"] <= TARGET_P99_MS
    print(
        f"GET one targets p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms: "
        + ("met" if ok else "MISSED")
    )
    return ok


def main() -> None:
    args = [int(a) for a in sys.argv[1:4]]
    instances, get_one, get_list = [*args, *[1000, 2000, 200][len(args) :]]
    names = [f"vm-{i:04d}" for i in range(instances)]
    daemon = Daemon()
    try:
        rates = asyncio.run(populate(daemon, names))
        result = {**measure(daemon, names, get_one, get_list), **rates}
    finally:
        daemon.close()
    ok = verdict(result)
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
