"""The general-purpose guest: ``image build debian-12`` (debootstrap, cached under the cache
dir), booted under TCG with a cloud-init seed that sets the hostname and writes a file,
both verified through qemu-guest-agent, plus fs-freeze/thaw; ``vm stop`` then shuts it
down through the agent. The stopped VM becomes a template whose clone is a new machine.
One clone, compared with the VM it came from, shows that as well as two clones would: each
Debian boot costs minutes of TCG on 2 cores."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.client import imaging as calls
from virtfleet.drivers.qemu.qga import GuestAgent
from virtfleet.errors import GuestAgentError
from virtfleet.host.guest import GuestAgents
from virtfleet.storage.builders.debian import build_debian12

from .conftest import CACHE, wait_for
from .netlab import NsDaemon, daemon_on_a_lab_network

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]
PROOF = "/var/lib/virtfleet-proof.txt"
SSH_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
# bookworm's cloud-init 22.4 has no /run/cloud-init/.instance-id yet
IID = "/var/lib/cloud/data/instance-id"


@pytest.fixture(scope="module")
def debian_cache(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The debian-12 build warmed in the shared cache by the test itself: debootstrap needs
    the Debian mirror, which the daemon's test namespace cannot reach."""
    build_debian12(tmp_path_factory.mktemp("debian") / "debian-12.qcow2", CACHE)
    return CACHE / "debian-12"


@pytest.fixture(scope="module")
def d(debian_cache: Path) -> Iterator[NsDaemon]:
    """A daemon in a test network namespace (its clones get leases on an isolated network)."""
    yield from daemon_on_a_lab_network("deb", "10.93.0.0/24", None, tiny=False)


def _read_file(socket: Path, path: str) -> str | None:
    """The guest file's text through guest-file-open/read/close, None if it is not there."""

    async def read() -> str | None:
        qga = GuestAgent(socket, timeout_s=10)
        try:
            handle = await qga.execute("guest-file-open", {"path": path, "mode": "r"})
        except GuestAgentError:
            return None
        try:
            data = await qga.execute("guest-file-read", {"handle": handle, "count": 4096})
        finally:
            await qga.execute("guest-file-close", {"handle": handle})
        return base64.b64decode(data["buf-b64"]).decode()

    return asyncio.run(read())


async def _freeze_thaw(run_root: Path, name: str) -> tuple[str, str]:
    """fs-freeze/thaw through the interface snapshots and backups use (host.guest)."""
    agents = GuestAgents(run_root, timeout_s=30)
    async with agents.frozen(name) as count:
        assert count >= 1
        inside = await agents.agent(name).fsfreeze_status()
    return inside, await agents.agent(name).fsfreeze_status()


@pytest.fixture(scope="module")
def cloudy() -> dict[str, str]:
    """What the booted original showed (SSH host key, instance-id), for its clone."""
    return {}


LAB = [{"mode": "network", "network": "lab"}]


def test_debian_boots_with_cloud_init_verified_by_guest_agent(
    d: NsDaemon, cloudy: dict[str, str]
) -> None:
    """hostname and a file from the NoCloud seed, OS and IPs from the agent, agent shutdown."""
    op = d.client.build_image("debian-12", builder="debian-12")
    assert d.client.wait_operation(op.id, timeout_s=1200).status == "success"
    cloud = {
        "hostname": "deb-{name}",
        "write_files": [{"path": PROOF, "content": "written by cloud-init\n"}],
    }
    d.create("cloudy", image="debian-12", vcpus=2, memory_mib=768, guest_agent=True,
             nics=LAB, cloud_init=cloud)  # fmt: skip
    started = time.monotonic()
    socket = d.run_dir("cloudy") / "qga.sock"
    wait_for(lambda: _read_file(socket, PROOF) is not None, 900, "cloud-init's file")
    print(f"debian-12: cloud-init file visible after {time.monotonic() - started:.0f} s")
    assert _read_file(socket, PROOF) == "written by cloud-init\n"
    info = d.client.call(calls.guest_info("cloudy"))
    assert info.agent and info.hostname == "deb-cloudy", info
    assert "Debian" in info.os_name and "cloud" in info.kernel
    wait_for(
        lambda: any(
            a.startswith("10.93.0.")
            for n in d.client.call(calls.guest_info("cloudy")).interfaces
            for a in n.addresses
        ),
        300,
        "a DHCP address reported by the agent",
    )
    assert asyncio.run(_freeze_thaw(d.data_dir / "run", "cloudy")) == ("frozen", "thawed")
    cloudy["key"] = _read_file(socket, SSH_KEY) or ""
    cloudy["iid"] = _read_file(socket, IID) or ""
    assert cloudy["key"] and cloudy["iid"], cloudy
    d.action("cloudy", "stop", timeout_s=180)
    assert d.client.get_instance("cloudy").status.power == "stopped"
    log = (d.data_dir / "daemon.log").read_text(errors="replace")
    assert "cloudy: shutdown requested through the guest agent" in log
    qmp_log = (d.run_dir("cloudy") / "qmp.log").read_text(errors="replace")
    assert "guest-shutdown" in qmp_log  # the guest powered itself off
    assert "system_powerdown" not in qmp_log and '"quit"' not in qmp_log


def test_a_clone_of_a_debian_template_is_a_new_machine(d: NsDaemon, cloudy: dict[str, str]) -> None:
    """cloudy (booted, stopped) becomes a template; its linked clone on the same network gets
    a lease, its own hostname, cloud-init instance-id and SSH host key. (The lease may be the
    address cloudy released at shutdown: dhclient asks for the one in the lease file the
    clone inherited. Distinct leases of clones running together: ``test_identity``.)"""
    assert cloudy, "needs the booted original of the test before"
    op = d.client.call(calls.create_template("deb-tpl", instance="cloudy"))
    assert d.client.wait_operation(op.id, timeout_s=600).status == "success"
    op = d.client.call(calls.clone_template("deb-tpl", ["dc-1"], start=True, nics=LAB))
    assert d.client.wait_operation(op.id, timeout_s=600).status == "success"
    wait_for(lambda: bool(d.client.get_instance("dc-1").addresses), 900, "dc-1's lease")
    wait_for(
        lambda: d.client.call(calls.guest_info("dc-1")).hostname == "deb-dc-1",
        600, "dc-1's cloud-init hostname",
    )  # fmt: skip
    lease = d.client.get_instance("dc-1").addresses[0].ip
    assert lease.startswith("10.93.0."), lease
    # Not regenerated, the clone would still have cloudy's SSH host key and instance-id.
    socket = d.run_dir("dc-1") / "qga.sock"
    key, iid = _read_file(socket, SSH_KEY), _read_file(socket, IID) or ""
    assert key and key != cloudy["key"], (key, cloudy)
    spec = d.client.get_instance("dc-1").spec
    assert iid.startswith(str(spec.uuid)) and iid != cloudy["iid"], (iid, cloudy)
    assert spec.uuid != d.client.get_instance("cloudy").spec.uuid
