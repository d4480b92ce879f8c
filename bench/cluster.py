"""The cluster store (issue 22): etcd against SQLite with 1,000 instances, in one run.

Three daemons with the fake driver, each on a throwaway data dir under /tmp, reached
through their Unix sockets: S on the embedded SQLite store, A and B on one etcd member
started here (loopback ports of its own, data under /tmp too: the same filesystem as
SQLite's file). Everything compared is interleaved (batches taking turns), so a change
in machine load touches both sides alike.

1. creates/s, one client, sequential: INSTANCES on S and on A, in turns of 25;
2. GET one instance, p50/p99: REQUESTS on each, in turns of 100;
3. desired-state write -> the owning agent sees it, p50/p99: a desired-state write
   (``InstanceRepo.put_desired``) on one store connection and the agent's watch
   (``state.follow``, what the agent reads) on another; on SQLite one store object
   carries both, as in the single-host daemon (etcd under a key prefix of its own);
4. forwarded request's added latency, p50: B joins A's etcd, then GET
   ``/1.0/instances/NAME/snapshots`` (owner-bound) through A, which owns the
   instances (served locally), and through B (forwarded to A over loopback HTTP);
5. ``cluster init`` of S with its INSTANCES (time from the request until S answers on
   etcd with them all listed).

Targets (issue 22): GET one on etcd p50 <= 5 ms, p99 <= 25 ms; creates on etcd >= 50 %
of SQLite's; desired-state write -> agent p50 <= 10 ms; forwarding adds <= 3 ms at p50;
cluster init with 1,000 instances <= 10 s. Exit status 0 when every target was met.

Usage: .venv/bin/python bench/cluster.py [INSTANCES] [REQUESTS]   (1000 2000)
       .venv/bin/python bench/cluster.py --quick                   (20 100: a smoke run)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from api import BASE, create_sequential, percentile, summary, timed

from virtfleet.client import Client
from virtfleet.host.etcdmember import EtcdMember, load_config
from virtfleet.model.instance import DesiredPower, DesiredState, InstanceSpec
from virtfleet.state.etcd import EtcdStore
from virtfleet.state.follow import follow
from virtfleet.state.keys import INSTANCES
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.store import StateStore

VIRTFLEET = str(Path(sys.executable).parent / "virtfleet")
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
SERVED_BY = "x-virtfleet-served-by"  # set by a forwarding member (api/forward.py)
CREATE_TURN, GET_TURN, WATCH_TURN = 25, 100, 25
T_GET_P50_MS, T_GET_P99_MS, T_CREATE_RATIO = 5.0, 25.0, 0.5
T_WATCH_P50_MS, T_FORWARD_MS, T_INIT_S = 10.0, 3.0, 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Etcd:
    """One etcd member on loopback ports of its own, data under /tmp."""

    def __init__(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="vfcetcd", dir="/tmp"))
        self.url = f"http://127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        args = [
            ETCD, "--name", "bench", "--data-dir", str(self.scratch / "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"bench={peer}", "--pre-vote=true",
        ]  # fmt: skip
        with (self.scratch / "etcd.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.healthy, 30, "etcd healthy")

    def healthy(self) -> bool:
        try:
            return bool(httpx.get(f"{self.url}/health", timeout=1).json()["health"] == "true")
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.scratch, ignore_errors=True)


class Daemon:
    """``virtfleet serve --driver fake`` on a throwaway data dir (``store``: its --store;
    ``port``: a plain-HTTP loopback listener other members forward to)."""

    def __init__(self, name: str, store: str = "sqlite", port: int | None = None) -> None:
        self.name = name
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"vfc{name}", dir="/tmp"))
        self.socket = self.data_dir / "api.sock"
        self.client = Client(uds_path=self.socket)
        listen = f"127.0.0.1:{port}" if port else "none"
        argv = [VIRTFLEET, "--data-dir", str(self.data_dir), "serve", "--driver", "fake"]
        env = {**os.environ, "VIRTFLEET_HOST_NAME": name}
        with (self.data_dir / "daemon.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*argv, "--store", store, "--listen", listen], env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        wait_until(self.answers, 90, f"daemon {name}")

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon {self.name} exited: see {self.data_dir / 'daemon.log'}")
        try:
            self.client.list_instances(fields=["name"])
        except Exception:  # not up yet, whatever the reason
            return False
        return True

    def http(self) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        return httpx.Client(transport=transport, base_url=BASE, timeout=60)

    def async_http(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(transport=transport, base_url=BASE, timeout=60)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        config = load_config(self.data_dir / "cluster")
        if config is not None:  # cluster init made a member: it outlives the daemon
            asyncio.run(EtcdMember(self.data_dir, config).stop())
        shutil.rmtree(self.data_dir, ignore_errors=True)


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not within {timeout_s:g} s")


def ms(values: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    return percentile(values, 50) * 1000, percentile(values, 99) * 1000


async def create_turns(sides: dict[str, Daemon], names: list[str]) -> dict[str, float]:
    """Create ``names`` (stopped) on every side, ``CREATE_TURN`` at a time in turns;
    creates/s of each."""
    spent = dict.fromkeys(sides, 0.0)
    clients = {label: d.async_http() for label, d in sides.items()}
    try:
        for start in range(0, len(names), CREATE_TURN):
            for label, api in clients.items():
                spent[label] += await create_sequential(api, names[start : start + CREATE_TURN])
    finally:
        for api in clients.values():
            await api.aclose()
    return {label: len(names) / s for label, s in spent.items()}


def get_turns(
    paths: dict[str, tuple[Daemon, Callable[[], str]]], count: int
) -> dict[str, list[float]]:
    """``count`` GETs per side in turns of ``GET_TURN``, each side on one keep-alive
    connection (after a warm-up); the latencies of each."""
    found: dict[str, list[float]] = {label: [] for label in paths}
    clients = {label: d.http() for label, (d, _) in paths.items()}

    def turn(label: str, n: int) -> list[float]:
        api, path = clients[label], paths[label][1]
        return timed(lambda: api.get(path()), n)

    try:
        for label in clients:
            turn(label, 50)  # warm-up: connections, caches
        for _ in range(max(1, count // GET_TURN)):
            for label in clients:
                found[label] += turn(label, GET_TURN)
    finally:
        for api in clients.values():
            api.close()
    return found


class Watched:
    """The agent's side: ``follow`` on INSTANCES, the arrival time of each revision."""

    def __init__(self, store: StateStore, after: int) -> None:
        self.seen: dict[int, float] = {}
        self.arrived = asyncio.Event()
        self.task = asyncio.create_task(self.run(store, after))

    async def run(self, store: StateStore, after: int) -> None:
        async for change in follow(store, INSTANCES, after, "bench"):
            self.seen[change.revision] = time.perf_counter()
            self.arrived.set()

    async def until(self, revision: int) -> float:
        while revision not in self.seen:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)
        return self.seen[revision]


async def desired_to_agent(etcd_url: str, db: Path, writes: int) -> dict[str, list[float]]:
    """Latency from a desired-state write to its arrival on the agent's watch, on etcd
    (writer and agent on two connections) and on SQLite (one store), in turns."""
    prefix = f"/bench-{secrets.token_hex(4)}"
    writer = EtcdStore([etcd_url], namespace=prefix)
    agent_side = EtcdStore([etcd_url], namespace=prefix)
    lite = SQLiteStore(db)
    stores: dict[str, tuple[StateStore, StateStore]] = {
        "etcd": (writer, agent_side), "sqlite": (lite, lite),
    }  # fmt: skip
    found: dict[str, list[float]] = {"etcd": [], "sqlite": []}
    try:
        watchers = {}
        for label, (w, a) in stores.items():
            await InstanceRepo(w).create(InstanceSpec(name="w1", image="tiny"), DesiredState())
            watchers[label] = Watched(a, await a.revision())
        for turn in range(max(1, writes // WATCH_TURN)):
            for label, (w, _) in stores.items():
                repo = InstanceRepo(w)
                for i in range(WATCH_TURN):
                    power = DesiredPower.RUNNING if i % 2 else DesiredPower.STOPPED
                    desired = DesiredState(power=power, generation=turn * WATCH_TURN + i + 1)
                    started = time.perf_counter()
                    revision = await repo.put_desired("w1", desired)
                    found[label].append(await watchers[label].until(revision) - started)
        for w in watchers.values():
            w.task.cancel()
    finally:
        for store in (writer, agent_side, lite):
            await store.close()
    return found


def served_by(owner: Daemon, other: Daemon, path: str) -> None:
    """Check the comparison is what it says: ``owner`` serves ``path`` itself, ``other``
    forwards it to ``owner`` (the forwarder names the answering host)."""
    with owner.http() as local, other.http() as remote:
        here, there = local.get(path), remote.get(path)
    if SERVED_BY in here.headers or there.headers.get(SERVED_BY) != owner.name:
        raise RuntimeError(f"{path}: not served by {owner.name} through {other.name}")


def cluster_init(daemon: Daemon, instances: int) -> float:
    """Seconds from ``cluster init`` until the daemon answers on etcd listing them all."""
    started = time.perf_counter()
    daemon.client.cluster_init(client_port=free_port(), peer_port=free_port())

    def on_etcd() -> bool:
        try:
            if daemon.client.cluster_status().store != "etcd":
                return False
            return len(daemon.client.list_instances(fields=["name"])) == instances
        except Exception:  # restarting: not answering yet
            return False

    wait_until(on_etcd, 300, "the daemon on etcd after cluster init")
    return time.perf_counter() - started


def line(what: str, value: str, target: str, met: bool) -> bool:
    print(f"  {what:<44} {value:<44} target {target:<20} {'met' if met else 'MISSED'}")
    return met


def run(instances: int, requests: int) -> bool:
    names = [f"vm-{i:04d}" for i in range(instances)]
    rng = random.Random(1)
    etcd = Etcd()
    port_a, port_b = free_port(), free_port()
    made: list[Daemon] = []
    try:
        lite = Daemon("s")
        made.append(lite)
        a = Daemon("a", f"etcd+{etcd.url}", port_a)
        made.append(a)
        rates = asyncio.run(create_turns({"sqlite": lite, "etcd": a}, names))
        print(f"creates/s, one client: sqlite {rates['sqlite']:.1f}, etcd {rates['etcd']:.1f}")

        def one() -> str:
            return f"/1.0/instances/{rng.choice(names)}"

        gets = get_turns({"sqlite": (lite, one), "etcd": (a, one)}, requests)
        for label, values in gets.items():
            summary(f"GET one ({label})", values)
        db = Path(tempfile.mkdtemp(prefix="vfcwatch", dir="/tmp")) / "watch.db"
        try:
            seen = asyncio.run(desired_to_agent(etcd.url, db, requests // 4))
        finally:
            shutil.rmtree(db.parent, ignore_errors=True)
        for label, values in seen.items():
            summary(f"desired -> agent ({label})", values)
        b = Daemon("b", f"etcd+{etcd.url}", port_b)
        made.append(b)

        def snaps() -> str:
            return f"/1.0/instances/{rng.choice(names)}/snapshots"

        served_by(a, b, snaps())
        fwd = get_turns({"local": (a, snaps), "forwarded": (b, snaps)}, requests)
        for label, values in fwd.items():
            summary(f"GET snapshots ({label})", values)
        init_s = cluster_init(lite, instances)
        print(f"cluster init with {instances} instances: {init_s:.2f} s")
    finally:
        for d in made:
            d.close()
        etcd.close()
    return verdict(instances, rates, gets, seen, fwd, init_s)


def verdict(
    n: int,
    rates: dict[str, float],
    gets: dict[str, list[float]],
    seen: dict[str, list[float]],
    fwd: dict[str, list[float]],
    init_s: float,
) -> bool:
    """Each figure beside its target (printed, then the figures as one JSON line)."""
    (g50, g99), (s50, s99) = ms(gets["etcd"]), ms(gets["sqlite"])
    (w50, w99), (l50, _) = ms(seen["etcd"]), ms(seen["sqlite"])
    local, forwarded = ms(fwd["local"])[0], ms(fwd["forwarded"])[0]
    ratio = rates["etcd"] / rates["sqlite"]
    added = forwarded - local
    print(f"\nissue 22 targets ({n} instances; medians of interleaved turns):")
    oks = [
        line(
            "GET one on etcd, p50 / p99",
            f"{g50:.2f} / {g99:.2f} ms (sqlite {s50:.2f} / {s99:.2f}; {g50 / s50:.2f}x)",
            f"<= {T_GET_P50_MS:g} / {T_GET_P99_MS:g} ms",
            g50 <= T_GET_P50_MS and g99 <= T_GET_P99_MS,
        ),
        line(
            "creates/s, sequential: etcd / sqlite",
            f"{rates['etcd']:.1f} / {rates['sqlite']:.1f} = {ratio:.2f}x",
            f">= {T_CREATE_RATIO:g}x",
            ratio >= T_CREATE_RATIO,
        ),
        line(
            "desired write -> agent sees it, p50 (p99)",
            f"etcd {w50:.2f} ({w99:.2f}) ms; sqlite {l50:.2f} ms",
            f"etcd p50 <= {T_WATCH_P50_MS:g} ms",
            w50 <= T_WATCH_P50_MS,
        ),
        line(
            "forwarded request adds, p50",
            f"{added:+.2f} ms ({forwarded:.2f} vs {local:.2f} ms; {forwarded / local:.2f}x)",
            f"<= {T_FORWARD_MS:g} ms",
            added <= T_FORWARD_MS,
        ),
        line(
            f"cluster init with {n} instances",
            f"{init_s:.2f} s",
            f"<= {T_INIT_S:g} s",
            init_s <= T_INIT_S,
        ),
    ]
    result: dict[str, Any] = {
        "instances": n,
        "creates_per_s": rates,
        "create_ratio": ratio,
        "get_one_p50_p99_ms": {"etcd": [g50, g99], "sqlite": [s50, s99]},
        "desired_to_agent_p50_p99_ms": {k: list(ms(v)) for k, v in seen.items()},
        "forward_p50_ms": {"local": local, "forwarded": forwarded},
        "cluster_init_s": init_s,
    }
    print(json.dumps(result))
    return all(oks)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--quick"]:
        instances, requests = 20, 100
    else:
        given = [int(a) for a in argv[:2]]
        instances, requests = [*given, *[1000, 2000][len(given) :]]
    return 0 if run(instances, requests) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
