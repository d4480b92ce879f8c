"""Virtual networks: network create/delete latency through the API, and guest-to-guest TCP
throughput on one bridge (busybox nc, timed in the receiving guest) for virtio-net vs an
emulated NIC.

Everything runs in a network namespace this script makes (the daemon is started
with ``nsenter --net``), so no link or rule is made on the machine itself. The
emulated NIC is vmxnet3: the tiny guest's Debian cloud kernel has no e1000 driver.
Usage: .venv/bin/python bench/network.py [CREATE_RUNS] [MIB_PER_TRANSFER] [TRANSFERS]
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _daemon import VIRTFLEET, wait_for

from virtfleet.client import Client

LEASE_RE = re.compile(rb"VIRTFLEET-LEASE iface=eth0 ip=([0-9.]+)")


class NsBench:
    def __init__(self) -> None:
        self.ns = f"vf8b-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.data_dir = Path(tempfile.mkdtemp(prefix="vfn", dir="/tmp"))
        self.client = Client(uds_path=self.data_dir / "api.sock")
        with open(self.data_dir / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{self.ns}",
                    VIRTFLEET,
                    "--data-dir",
                    str(self.data_dir),
                    "serve",
                    "--listen",
                    "none",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_for(self._answers, 60, poll_s=0.1)
            op = self.client.build_image("tiny")
            assert self.client.wait_operation(op.id, timeout_s=300).status == "success"
        except BaseException:
            self.close()
            raise

    def _answers(self) -> bool:
        try:
            self.client.list_networks()
        except Exception:  # not up yet, whatever the reason
            return False
        return True

    def serial(self, name: str) -> bytes:
        path = self.data_dir / "run" / name / "serial.log"
        return path.read_bytes() if path.exists() else b""

    def type_line(self, name: str, line: str) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.data_dir / "run" / name / "serial.sock"))
            s.sendall(line.encode() + b"\n")
            time.sleep(0.3)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the namespace goes anyway
            for inst in self.client.list_instances():
                op = self.client.delete_instance(inst.name, force=True, disks=True)
                self.client.wait_operation(op.id, timeout_s=60)
            for net in self.client.list_networks():
                self.client.delete_network(net.name)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        for pidfile in self.data_dir.glob("networks/*/dnsmasq.pid"):  # left if a delete failed
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
        subprocess.run(["ip", "netns", "delete", self.ns], check=False)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def create_delete(b: NsBench, runs: int) -> tuple[list[float], list[float]]:
    creates, deletes = [], []
    for i in range(runs):
        t0 = time.perf_counter()
        b.client.create_network({"name": f"bn{i}", "subnet": f"10.{100 + i}.0.0/24"})
        t1 = time.perf_counter()
        b.client.delete_network(f"bn{i}")
        creates.append(t1 - t0)
        deletes.append(time.perf_counter() - t1)
    return creates, deletes


def boot_pair(b: NsBench, model: str) -> tuple[str, str]:
    """Two guests with one ``model`` NIC each on network ``tp``; the receiver's IP."""
    names = (f"rx-{model}", f"tx-{model}")
    nic = {"mode": "network", "network": "tp", "model": model}
    for name in names:
        spec = {"name": name, "image": "tiny", "memory_mib": 192, "nics": [nic]}
        op = b.client.create_instance(spec, start=True)
        assert b.client.wait_operation(op.id, timeout_s=180).status == "success"
    for name in names:
        wait_for(lambda n=name: LEASE_RE.search(b.serial(n)) is not None, 180, poll_s=0.2)
    match = LEASE_RE.search(b.serial(names[0]))
    assert match is not None
    return names[0], match.group(1).decode()


def transfer(b: NsBench, model: str, rx_ip: str, mib: int) -> float:
    """MiB/s of one ``mib`` MiB TCP stream from tx to rx, timed in the receiver from its
    first byte to end of stream by its uptime clock (busybox dd prints no timing)."""
    rx, tx = f"rx-{model}", f"tx-{model}"
    tag = secrets.token_hex(3)
    before = len(b.serial(rx))
    up = "$(cut -d' ' -f1 /proc/uptime)"
    b.type_line(
        rx,
        f"nc -l -p 5001 | (head -c 1 >/dev/null; a={up}; cat >/dev/null; z={up};"
        f" echo T{tag}$((1+1)) $a $z)",
    )
    time.sleep(1.0)
    # -w 2: busybox nc lingers after its input ends; the receiver's clock is what counts.
    b.type_line(tx, f"dd if=/dev/zero bs=64k count={mib * 16} 2>/dev/null | nc -w 2 {rx_ip} 5001")
    pattern = re.compile(rf"T{tag}2 ([0-9.]+) ([0-9.]+)".encode())
    found: list[re.Match[bytes]] = []

    def done() -> bool:
        m = pattern.search(b.serial(rx)[before:])
        if m:
            found.append(m)
        return m is not None

    wait_for(done, 900, poll_s=0.5)
    secs = float(found[0].group(2)) - float(found[0].group(1))
    time.sleep(3.0)  # the sender's nc exits (-w 2) before the next round
    return mib / secs


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    transfers = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    os.environ.setdefault("VIRTFLEET_CACHE_DIR", "/var/cache/virtfleet")
    b = NsBench()
    try:
        creates, deletes = create_delete(b, runs)
        for what, xs in (("create", creates), ("delete", deletes)):
            print(
                f"network {what}: median {statistics.median(xs) * 1000:.0f} ms, "
                f"max {max(xs) * 1000:.0f} ms (n={len(xs)})"
            )
        b.client.create_network({"name": "tp", "subnet": "10.99.0.0/24"})
        for model in ("virtio", "vmxnet3"):
            _, rx_ip = boot_pair(b, model)
            rates = [transfer(b, model, rx_ip, mib) for _ in range(transfers)]
            print(
                f"TCP {model}: median {statistics.median(rates):.1f} MiB/s "
                f"(runs {', '.join(f'{r:.1f}' for r in rates)}; {mib} MiB each)"
            )
            for name in (f"rx-{model}", f"tx-{model}"):
                op = b.client.delete_instance(name, force=True, disks=True)
                b.client.wait_operation(op.id, timeout_s=60)
    finally:
        b.close()


if __name__ == "__main__":
    main()
