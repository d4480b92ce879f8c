"""``NetworkManager.attach_netns``: how containers (another issue) join a network. A process
in its own network namespace gets a veth on the network's bridge and a DHCP lease from the
network's dnsmasq; ``detach_netns`` removes it. Runs in a namespace the test makes."""

from __future__ import annotations

import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from .netlab import Namespace

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import asyncio, subprocess, sys
    from pathlib import Path
    from virtfleet.model.network import NetworkSpec
    from virtfleet.network.manager import NetworkManager

    async def main() -> None:
        m = NetworkManager(Path(sys.argv[1]), "attach")
        net = NetworkSpec(name="ctrnet", subnet="10.83.0.0/24").with_defaults()
        await m.create(net, [])
        box = subprocess.Popen(["unshare", "--net", "sleep", "60"])
        try:
            await asyncio.sleep(0.5)
            host_end = await m.attach_netns("box", 0, net, box.pid)
            print("USERS", (await m.state(net)).users)
            enter = ["nsenter", "--net", "-t", str(box.pid)]
            subprocess.run([*enter, "ip", "link", "set", "eth0", "up"], check=True)
            lease = subprocess.run(
                [*enter, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "10",
                 "-s", "/bin/true"], capture_output=True, text=True, timeout=60)
            print("UDHCPC", lease.stdout + lease.stderr)
            await m.detach_netns("box", 0)
            links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
            print("GONE", host_end not in links)
        finally:
            box.kill()
            await m.remove(net, [])

    asyncio.run(main())
    """
)


def test_a_netns_joins_a_network_and_gets_a_lease() -> None:
    """A process in its own netns (standing in for a container) attached with a veth is
    listed as a user of the network and gets a lease in its subnet; detaching removes it."""
    if shutil.which("busybox") is None:
        pytest.skip("busybox is not installed (scripts/bootstrap.sh installs busybox-static)")
    ns = Namespace("a")
    root = Path(tempfile.mkdtemp(prefix="vf8a", dir="/tmp"))
    try:
        out = ns.run(sys.executable, "-c", SCRIPT, str(root))
    finally:
        ns.delete()
        shutil.rmtree(root, ignore_errors=True)
    assert "USERS ['box']" in out
    assert "lease of 10.83.0." in out, out
    assert "GONE True" in out
