"""A three-host cluster on one machine: the harness behind ``make lab`` and tests/cluster.

Owns the lab's parts and their removal. Each host is a network namespace
(``<prefix>1``..``<prefix>3``) with one veth (``eth0``, ``10.251.0.1N/24``) into a hub
namespace (``<prefix>-hub``) whose bridge joins them, so nothing of the lab is in the root
namespace unless ``make lab`` asks for a link there (``root_link``: ``10.251.0.1`` on a
veth into the hub, gone with the hub). Each host runs one ``virtfleet serve`` (real QEMU
driver) inside its namespace on its own data directory, listening with TLS on its address;
the daemon's own supervised etcd member listens there too. Host 1 runs ``cluster init``
and makes a join token for each of the others, which ``cluster join`` it in turn.

Node death (``LabHost.kill``) is the issue's: SIGKILL of the host's daemon, its etcd
member and its QEMUs; ``LabHost.restart`` brings the daemon back, which starts its member.

``down`` finds everything from the names and the data directories alone (daemons by
their command line, etcd members by their pid files, QEMUs by their data directory), so
it is idempotent and works from a fresh process (``make lab-down``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.integration.conftest import CACHE, VIRTFLEET, Daemon, _listening, wait_for
from tests.integration.netlab import sh
from tests.integration.reaping import kill_qemus, reap
from virtfleet.client.errors import ApiError
from virtfleet.errors import ProcessError
from virtfleet.host.clusterca import ClusterFiles
from virtfleet.host.etcdmember import EtcdMember, load_config
from virtfleet.model.operation import Operation

SUBNET = "10.251.0"  # private; only the hub and the lab's namespaces see it
ROOT_ADDRESS = f"{SUBNET}.1"  # the root namespace's end of root_link
API_PORT = 8006
SIZE = 3
START_TIMEOUT_S = 90.0  # a daemon's imports alone take 10 s on a loaded 2-core machine
LEASE_S = 5.0  # the hosts' liveness lease: a cut-off host shows offline within seconds
LEADER_TTL_S = 5.0  # the singletons' leader lease: a dead leader is replaced within seconds
SCHEDULE_TICK_S = 1.0  # the leader looks for due backup schedules every second


@dataclass
class LabHost:
    """One member: its namespace, address, data directory and daemon."""

    lab: Lab
    index: int
    daemon: LabDaemon = field(init=False)

    def __post_init__(self) -> None:
        self.daemon = LabDaemon(self.data_dir, self.ns)
        self.daemon.serve_args = ["--listen", f"{self.address}:{API_PORT}"]
        self.daemon.env = {
            "VIRTFLEET_HOST_NAME": self.name,
            "VIRTFLEET_HOST_LEASE_S": str(LEASE_S),
            "VIRTFLEET_LEADER_TTL_S": str(LEADER_TTL_S),
            "VIRTFLEET_SCHEDULE_TICK_S": str(SCHEDULE_TICK_S),
        }
        self.daemon.url = self.url

    @property
    def name(self) -> str:
        return f"{self.lab.prefix}{self.index}"

    @property
    def ns(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def url(self) -> str:
        return f"https://{self.address}:{API_PORT}"

    @property
    def data_dir(self) -> Path:
        return self.lab.root / f"h{self.index}"

    def cli(self, *args: str) -> list[str]:
        """The CLI invocation that manages the cluster through this member (local admin)."""
        return [VIRTFLEET, "--data-dir", str(self.data_dir), *args]

    def on_etcd(self) -> bool:
        with contextlib.suppress(ApiError, OSError):
            return self.daemon.client.cluster_status().store == "etcd"
        return False

    def link(self, up: bool) -> None:
        """Cut this host off from the others (``False``) or heal it (``True``)."""
        sh("ip", "link", "set", "eth0", "up" if up else "down", ns=self.ns)

    def kill(self) -> None:
        """Node death: SIGKILL this host's daemon, its etcd member and its QEMUs (both
        outlive a daemon by design, so killing the daemon alone is not a dead host)."""
        _end_daemons([self.data_dir], signal.SIGKILL)
        etcd_dir = str(self.data_dir / "etcd")
        members = [
            p for p in psutil.process_iter(["cmdline"]) if etcd_dir in (p.info["cmdline"] or [])
        ]
        for proc in members:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        assert _all_gone(members, 10), f"{self.name}'s etcd member outlived SIGKILL"
        kill_qemus(self.data_dir)

    def restart(self) -> None:
        """Bring a killed host back: its daemon starts its etcd member again and rejoins."""
        self.daemon.start()
        wait_for(self.on_etcd, 60, f"{self.name} back on etcd")

    def etcd_prefix(self, prefix: str) -> list[tuple[str, str, int]]:
        """(key, value, create revision) under ``prefix``, read from this host's member
        with ``etcdctl`` inside its namespace (the cluster's client certificate)."""
        config = load_config(self.data_dir / "cluster")
        assert config is not None, f"{self.name} has no etcd member"
        files = ClusterFiles(self.data_dir / "cluster")
        out = sh(
            "etcdctl", f"--endpoints={config.client_url}", f"--cacert={files.ca_cert}",
            f"--cert={files.cert}", f"--key={files.key}", "--insecure-skip-tls-verify",
            "get", "--prefix", prefix, "-w", "json", ns=self.ns,
        )  # fmt: skip
        return [
            (_b64(kv["key"]), _b64(kv.get("value", "")), int(kv["create_revision"]))
            for kv in json.loads(out).get("kvs", [])
        ]


class LabDaemon(Daemon):
    """``virtfleet serve`` inside the namespace ``ns``, started in two steps so a lab's
    daemons start together."""

    def __init__(self, data_dir: Path, ns: str) -> None:
        super().__init__(data_dir)
        self.ns = ns

    def start(self) -> None:
        self.launch()
        self.wait_listening()

    def launch(self) -> None:
        (self.data_dir / "api.sock").unlink(missing_ok=True)
        env = {**os.environ, "VIRTFLEET_CACHE_DIR": str(CACHE), **self.env}
        args = [VIRTFLEET, "--data-dir", str(self.data_dir), "serve", *self.serve_args]
        with open(self.data_dir / "daemon.log", "ab") as out:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.ns}", *args], env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip

    def wait_listening(self) -> None:
        sock = self.data_dir / "api.sock"
        wait_for(lambda: _listening(sock), START_TIMEOUT_S, f"{self.ns}'s daemon socket")


class Lab:
    """``SIZE`` hosts named ``<prefix>N`` with data under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, prefix: str = "vf-lab", root_link: bool = False) -> None:
        self.root = root
        self.prefix = prefix
        self.root_link = root_link
        self.hosts = [LabHost(self, i) for i in range(1, SIZE + 1)]

    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    def host(self, index: int) -> LabHost:
        return self.hosts[index - 1]

    def up(self, images_on: tuple[int, ...] = (1, 2, 3)) -> None:
        """Namespaces, daemons, the ``tiny`` image on ``images_on``, then the cluster.
        Daemons start together and each join overlaps the previous joiner's restart
        (a daemon start is seconds of imports on a loaded machine)."""
        self._wire()
        for h in self.hosts:
            h.data_dir.mkdir(parents=True, exist_ok=True)
            h.daemon.launch()
        for h in self.hosts:
            h.daemon.wait_listening()
        ops = [(h, h.daemon.client.build_image("tiny")) for h in self.hosts if h.index in images_on]
        first = self.host(1)
        _wait_built([(h, op) for h, op in ops if h is first])  # its API pauses for init
        first.daemon.client.cluster_init()
        _wait_built([(h, op) for h, op in ops if h is not first])  # while host 1 restarts
        wait_for(first.on_etcd, 60, f"{first.name} on etcd")
        for h in self.hosts[1:]:
            token = first.daemon.client.cluster_token_create(600).token
            h.daemon.client.cluster_join(url=first.url, token=token)
        for h in self.hosts[1:]:
            wait_for(h.on_etcd, 60, f"{h.name} on etcd")

    def _wire(self) -> None:
        _add_ns(self.hub)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.hub)
        sh("ip", "link", "set", "br0", "up", ns=self.hub)
        for h in self.hosts:
            _add_ns(h.ns)
            self._veth(f"h{h.index}", h.ns, f"{h.address}/24")
        if self.root_link:
            self._veth("root", None, f"{ROOT_ADDRESS}/24")

    def _veth(self, tag: str, ns: str | None, address: str) -> None:
        """A veth from ``ns`` (None: the root namespace) onto the hub's bridge."""
        outer, inner = f"{self.prefix}-{tag}", f"{self.prefix}-{tag}p"
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", outer, "netns", self.hub)
        sh("ip", "link", "set", outer, "master", "br0", "up", ns=self.hub)
        if ns is not None:
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "link", "set", inner, "name", "eth0", ns=ns)
            inner = "eth0"
        sh("ip", "addr", "add", address, "dev", inner, ns=ns)
        sh("ip", "link", "set", inner, "up", ns=ns)

    def down(self) -> None:
        """Remove every part of the lab that exists; nothing else (idempotent)."""
        _end_daemons([h.data_dir for h in self.hosts], signal.SIGTERM)
        failed: list[str] = []
        for h in self.hosts:
            try:  # one host's failure must not keep the rest of the lab alive
                stop_member(h.data_dir)
                if h.data_dir.exists():
                    reap(h.data_dir)
            except (AssertionError, OSError, ProcessError) as err:
                failed.append(f"{h.name}: {err}")
        for ns in [h.ns for h in self.hosts] + [self.hub]:
            sh("ip", "netns", "delete", ns, check=False)  # its veths and bridge go with it
        shutil.rmtree(self.root, ignore_errors=True)
        assert not failed, "; ".join(failed)

    def leftovers(self) -> list[str]:
        """What of the lab still exists (empty after ``down``): namespaces, processes
        naming its data, its directory."""
        names = {h.ns for h in self.hosts} | {self.hub}
        found = [f"namespace {n}" for n in sh("ip", "netns", "list").split() if n in names]
        for proc in psutil.process_iter(["cmdline", "status"]):
            argv = " ".join(proc.info["cmdline"] or [])
            if str(self.root) in argv and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"process {proc.pid}: {argv[:120]}")
        return found + ([str(self.root)] if self.root.exists() else [])


def _b64(text: str) -> str:
    return base64.b64decode(text).decode()


def _wait_built(ops: list[tuple[LabHost, Operation]]) -> None:
    for h, op in ops:
        done = h.daemon.client.wait_operation(op.id, timeout_s=300)
        assert done.status == "success", f"tiny on {h.name}: {done}"


def _add_ns(name: str) -> None:
    sh("ip", "netns", "add", name)
    sh("ip", "link", "set", "lo", "up", ns=name)


def stop_member(data_dir: Path) -> None:
    """End the etcd member of ``data_dir`` if it runs (it outlives its daemon by design)."""
    config = load_config(data_dir / "cluster")
    if config is not None:
        asyncio.run(EtcdMember(data_dir, config).stop())


def _end_daemons(data_dirs: list[Path], sig: signal.Signals) -> None:
    """Signal the ``virtfleet serve`` on each of ``data_dirs``; wait until they exited."""
    mine = [[str(d), "serve"] for d in data_dirs]
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if "--data-dir" in argv and argv[argv.index("--data-dir") + 1 :][:2] in mine:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
                found.append(proc)
    if not _all_gone(found, 15):
        for proc in found:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        _all_gone(found, 5)


def _all_gone(procs: list[psutil.Process], timeout_s: float) -> bool:
    """Wait until ``procs`` exited; a zombie counts as gone (PID 1 here may not reap it)."""

    def gone(proc: psutil.Process) -> bool:
        with contextlib.suppress(ChildProcessError, psutil.TimeoutExpired):
            proc.wait(0)  # reaps it when it is our child
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    try:
        wait_for(lambda: all(gone(p) for p in procs), timeout_s, "the daemons to exit")
    except AssertionError:
        return False
    return True


def lab_dir() -> Path:
    return Path(os.environ.get("VIRTFLEET_LAB_DIR", "/var/lib/virtfleet-lab"))


def _describe(lab: Lab, token: str) -> str:
    lines = [f"virtfleet lab: {SIZE} hosts in one cluster (data under {lab.root})", ""]
    for h in lab.hosts:
        lines += [
            f"{h.name}  {h.url}",
            f"  CLI:   {' '.join(h.cli('host', 'list'))}",
            f"  shell: ip netns exec {h.ns} bash",
        ]
    url = lab.host(1).url
    reach = f"a browser here can open {url}" if lab.root_link else "inside a namespace"
    lines += ["", f"admin token (web UI and remote add, {reach}): {token}"]
    lines += ["remove it all: make lab-down"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``up`` (``make lab``) or ``down`` (``make lab-down``) the lab under ``lab_dir()``."""
    lab = Lab(lab_dir(), root_link=True)
    if argv[:1] == ["down"]:
        lab.down()
        left = lab.leftovers()
        print("virtfleet lab removed" if not left else f"still there: {'; '.join(left)}")
        return 1 if left else 0
    if argv[:1] != ["up"] or len(argv) != 1:
        print("usage: lab.py up|down", file=sys.stderr)
        return 2
    if lab.root.exists() or Path(f"/run/netns/{lab.hub}").exists():
        print("a lab is already up (make lab-down removes it)", file=sys.stderr)
        return 1
    try:
        lab.up()
        token = lab.host(1).daemon.client.create_token("admin", description="make lab").token
    except BaseException:
        lab.down()  # nothing half-made stays behind
        raise
    print(_describe(lab, token))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
