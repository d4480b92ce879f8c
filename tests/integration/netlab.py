"""Network namespaces for the network tests: the daemon runs inside one (``nsenter --net``),
the "outside" world of NAT is another, joined by a veth pair. Nothing reaches the
machine's own interfaces; every namespace is named ``vf8-<random>`` and deleted after.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .conftest import CACHE, VIRTFLEET, Daemon, _listening, wait_for
from .reaping import reap

UPLINK_HOST = "10.250.0.1/24"  # the daemon's namespace end of the veth to "outside"
OUTSIDE_IP = "10.250.0.2"


def sh(*args: str, ns: str | None = None, check: bool = True) -> str:
    prefix = ["nsenter", f"--net=/run/netns/{ns}"] if ns else []
    proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args}: {proc.stderr.strip()}")
    return proc.stdout


class Namespace:
    def __init__(self, tag: str) -> None:
        self.name = f"vf8-{tag}-{secrets.token_hex(3)}"
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "set", "lo", "up", ns=self.name)

    def run(self, *args: str, check: bool = True) -> str:
        return sh(*args, ns=self.name, check=check)

    def popen(
        self, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.name}", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def delete(self) -> None:
        sh("ip", "netns", "delete", self.name, check=False)

    def snapshot(self) -> tuple[Any, Any]:
        """Links and nftables rules as JSON, to compare before and after a refused request."""
        links = json.loads(self.run("ip", "-j", "link"))
        rules = json.loads(self.run("nft", "-j", "list", "ruleset"))
        return links, rules


class NsDaemon(Daemon):
    """``virtfleet serve`` inside ``ns``: every bridge, tap, dnsmasq and rule lives there."""

    def __init__(self, data_dir: Path, ns: Namespace) -> None:
        super().__init__(data_dir)
        self.ns = ns

    def start(self) -> None:
        sock = self.data_dir / "api.sock"
        sock.unlink(missing_ok=True)
        env = {**os.environ, "VIRTFLEET_CACHE_DIR": str(CACHE), **self.env}
        args = [VIRTFLEET, "--data-dir", str(self.data_dir), "serve", *self.serve_args]
        self.proc = self.ns.popen(args, self.data_dir / "daemon.log", env)
        wait_for(lambda: _listening(sock), 30, "daemon socket")

    def console_has(self, name: str, pattern: str, timeout_s: float = 60) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = re.search(pattern, self.serial_log(name))
            if match:
                found.append(match)
            return match is not None

        wait_for(seen, timeout_s, f"{pattern!r} on the console of {name}")
        return found[0]

    def run_in_guest(self, name: str, command: str, timeout_s: float = 60) -> str:
        """Run ``command`` in the guest's shell; its output (up to the end marker)."""
        tag = secrets.token_hex(4)
        before = len(self.serial_log(name))
        # The marker is computed by the shell, so the echoed command line never matches it.
        self.type_line(name, f"{command}; echo END-{tag}-$((1+1))")
        end = f"END-{tag}-2"
        wait_for(lambda: end in self.serial_log(name)[before:], timeout_s, f"{command!r} in {name}")
        out = self.serial_log(name)[before:]
        return out[: out.index(end)]


def ping_ok(d: NsDaemon, guest: str, ip: str) -> bool:
    out = d.run_in_guest(guest, f"ping -c 2 -W 2 {ip} >/dev/null && echo PING=$((6*7))")
    return "PING=42" in out


def daemon_on_a_lab_network(
    tag: str, subnet: str, env: dict[str, str] | None = None, tiny: bool = True
) -> Iterator[NsDaemon]:
    """A daemon alone in a new namespace with one isolated network ``lab`` on ``subnet``
    (and the ``tiny`` image); everything it started is gone after."""
    root = Path(tempfile.mkdtemp(prefix=f"vf{tag}", dir="/tmp"))
    ns = Namespace(tag)
    daemon = NsDaemon(root / "data", ns)
    daemon.env = env or {}
    try:
        daemon.data_dir.mkdir()
        daemon.start()
        if tiny:
            op = daemon.client.build_image("tiny")
            assert daemon.client.wait_operation(op.id, timeout_s=300).status == "success"
        daemon.client.create_network({"name": "lab", "mode": "isolated", "subnet": subnet})
        yield daemon
    finally:
        daemon.stop()
        reap(daemon.data_dir)
        ns.delete()
        shutil.rmtree(root, ignore_errors=True)
