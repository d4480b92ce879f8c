"""Container start with a NIC on a virtual network vs without one, and time to a DHCP lease.

A stopped tiny container without NICs and one with a NIC on NAT network ``lan`` are
started through the API in turn (operation done = init running; for the NIC one the
veth was moved into its netns before ``runc start``) and stopped again (not timed).
For the NIC one, the time from the start request to the lease line its udhcpc script
writes on the console is measured too. Everything runs in a network namespace this
script makes (``network.NsBench``).
Usage: .venv/bin/python bench/container_net.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import time

from _daemon import wait_for
from network import NsBench

IMAGE = "ctiny"


def start_s(b: NsBench, name: str) -> float:
    t0 = time.perf_counter()
    op = b.client.change_state(name, "start", force=False, timeout_s=30)
    assert b.client.wait_operation(op.id, timeout_s=60).status == "success"
    return time.perf_counter() - t0


def stop(b: NsBench, name: str) -> None:
    op = b.client.change_state(name, "stop", force=True, timeout_s=30)
    assert b.client.wait_operation(op.id, timeout_s=60).status == "success"


def leases(b: NsBench, name: str) -> int:
    path = b.data_dir / "oci" / "run" / name / "console.log"
    return path.read_bytes().count(b"VIRTFLEET-LEASE") if path.exists() else 0


def main(runs: int) -> None:
    b = NsBench()
    try:
        op = b.client.build_image(IMAGE, builder="container-tiny")
        assert b.client.wait_operation(op.id, timeout_s=300).status == "success"
        b.client.create_network({"name": "lan", "subnet": "10.86.0.0/24"})
        nic = [{"mode": "network", "network": "lan"}]
        for name, nics in (("plain", []), ("net", nic)):
            spec = {"name": name, "kind": "container", "image": IMAGE, "nics": nics}
            op = b.client.create_instance(spec, start=False)
            assert b.client.wait_operation(op.id, timeout_s=60).status == "success"
        plain, net, lease = [], [], []
        for i in range(runs):
            order = ("plain", "net") if i % 2 == 0 else ("net", "plain")
            for name in order:
                seen = leases(b, name)
                t0 = time.perf_counter()
                (plain if name == "plain" else net).append(start_s(b, name))
                if name == "net":
                    at = wait_for(lambda n=name, s=seen: leases(b, n) > s, 60, poll_s=0.01)
                    lease.append(at - t0)
                stop(b, name)
        for label, xs in (("start, no NIC", plain), ("start, 1 NIC", net), ("lease", lease)):
            print(f"{label}: median {statistics.median(xs) * 1000:.0f} ms (n={len(xs)})")
        print(
            f"ratio start 1 NIC / no NIC: {statistics.median(net) / statistics.median(plain):.2f}x"
        )
    finally:
        b.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
