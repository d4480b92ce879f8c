"""dnsmasq, one per nat/isolated network: its config, start, liveness and leases.

dnsmasq daemonizes with a pid file, so it outlives the agent (guest DHCP/DNS
keeps working across agent restarts); the manager checks the pid file and
restarts it when it died. Only this module writes the config and reads the
lease file (``dhcp-leasefile`` format: expiry, MAC, IP, hostname, client id).
Must not create links or rules.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from virtfleet.errors import ProcessError
from virtfleet.model.network import Lease, NetworkMode, NetworkSpec

DNSMASQ = "/usr/sbin/dnsmasq"
LEASE_TIME = "1h"
DOMAIN_SUFFIX = "vf"  # guests resolve each other as <hostname>.<network>.vf


@dataclass(frozen=True)
class DnsmasqFiles:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "dnsmasq.conf"

    @property
    def pidfile(self) -> Path:
        return self.root / "dnsmasq.pid"

    @property
    def leases(self) -> Path:
        return self.root / "leases"

    @property
    def log(self) -> Path:
        return self.root / "dnsmasq.log"


def config(spec: NetworkSpec, files: DnsmasqFiles) -> str:
    """The dnsmasq configuration of ``spec`` (DHCP + DNS on its bridge only)."""
    gateway = spec.gateway
    net = spec.ipv4
    assert gateway is not None and net is not None, "bridged networks have no dnsmasq"
    domain = f"{spec.name}.{DOMAIN_SUFFIX}"
    lines = [
        f"interface={spec.name}",
        "except-interface=lo",
        "bind-interfaces",  # never answer on the host's other interfaces
        f"listen-address={gateway.ip}",
        f"pid-file={files.pidfile}",
        f"dhcp-leasefile={files.leases}",
        f"log-facility={files.log}",
        f"dhcp-range={spec.dhcp_start},{spec.dhcp_end},{net.netmask},{LEASE_TIME}",
        "dhcp-authoritative",
        # Leases by MAC, which the platform keeps unique: systemd-networkd's client id comes
        # from /etc/machine-id, which a clone of a VM that ran inherits, so dnsmasq would
        # otherwise see a running clone and its running original as one client.
        "dhcp-ignore-clid",
        "dhcp-no-override",
        "no-resolv",  # no upstream: guests' names only (the host's resolvers are its own)
        "no-hosts",
        f"domain={domain}",
        f"local=/{domain}/",
        "expand-hosts",
    ]
    if spec.mode is NetworkMode.ISOLATED:
        lines.append("dhcp-option=option:router")  # an empty router option: no default route
    if spec.ipv6_subnet:
        lines += ["enable-ra", f"dhcp-range=::,constructor:{spec.name},ra-stateless"]
    return "\n".join(lines) + "\n"


def running_pid(files: DnsmasqFiles) -> int | None:
    """The pid of this network's dnsmasq if it runs (pid file + process name match)."""
    try:
        pid = int(files.pidfile.read_text().strip())
        proc = psutil.Process(pid)
        if proc.name() == "dnsmasq" and str(files.conf) in " ".join(proc.cmdline()):
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def start(spec: NetworkSpec, files: DnsmasqFiles) -> int:
    """Write the config and start dnsmasq (it daemonizes); restart it if the config changed."""
    files.root.mkdir(parents=True, exist_ok=True, mode=0o755)
    text = config(spec, files)
    pid = running_pid(files)
    if pid is not None and files.conf.exists() and files.conf.read_text() == text:
        return pid
    stop(files)
    files.conf.write_text(text)
    files.leases.touch()
    proc = subprocess.run(
        [DNSMASQ, f"--conf-file={files.conf}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    pid = running_pid(files)
    if proc.returncode != 0 or pid is None:
        why = " ".join((proc.stderr or proc.stdout).split())[:300]
        raise ProcessError(f"dnsmasq for network {spec.name} failed to start: {why}")
    return pid


def stop(files: DnsmasqFiles) -> None:
    """Stop this network's dnsmasq if it runs (idempotent)."""
    pid = running_pid(files)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    _wait_gone(pid, 5.0)
    files.pidfile.unlink(missing_ok=True)


def _wait_gone(pid: int, timeout_s: float) -> None:
    """Until ``pid`` has exited (a zombie counts: dnsmasq's parent is init, not us)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.Error:
            return
        time.sleep(0.01)


def leases(files: DnsmasqFiles) -> list[Lease]:
    """The current leases (a missing or half-written file gives what can be parsed)."""
    try:
        text = files.leases.read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and ":" in parts[1]:
            with contextlib.suppress(ValueError):
                name = "" if parts[3] == "*" else parts[3]
                out.append(
                    Lease(mac=parts[1], ip=parts[2], hostname=name, expires_at=int(parts[0]))
                )
    return out
