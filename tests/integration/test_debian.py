"""The general-purpose guest: ``image build debian-12`` (debootstrap, cached under the cache
dir), booted once under TCG with a cloud-init seed that sets the hostname, writes a file and
runs a command, verified through qemu-guest-agent (all three cloud-init stages, no error, one
ed25519 host key), plus fs-freeze/thaw; ``vm stop`` then shuts it down through the agent.
That same original, stopped, becomes a template whose one clone is a new machine. Each Debian
boot costs a minute or more of TCG on 2 cores: the module boots exactly two (original, clone).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from virtfleet.client import imaging as calls
from virtfleet.drivers.qemu.qga import GuestAgent
from virtfleet.errors import GuestAgentError
from virtfleet.host.guest import GuestAgents
from virtfleet.storage.builders.debian import cached_debian12

from .conftest import CACHE, wait_for
from .netlab import NsDaemon, daemon_on_a_lab_network

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]
PROOF = "/var/lib/virtfleet-proof.txt"
RAN = "/var/lib/virtfleet-runcmd.txt"  # runcmd's, in the final stage
RESULT = "/run/cloud-init/result.json"  # written when the final stage ends
SSH_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
# bookworm's cloud-init 22.4 has no /run/cloud-init/.instance-id yet
IID = "/var/lib/cloud/data/instance-id"


@pytest.fixture(scope="module")
def debian_cache(tiny_cache: Path) -> Path:
    """The debian-12 build warmed in the shared cache by the test itself: debootstrap needs
    the Debian mirror, which the daemon's test namespace cannot reach."""
    return cached_debian12(CACHE).parent


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


LAB = [{"mode": "network", "network": "lab"}]


def _stop(d: NsDaemon, name: str) -> None:
    """A clean stop, waited for longer than its own 180 s (``d.action`` waits 120 s)."""
    op = d.client.change_state(name, "stop", timeout_s=180)
    assert d.client.wait_operation(op.id, timeout_s=240).status == "success"


@dataclass(frozen=True)
class Original:
    """The one booted original, once cloud-init's init stage made its identity."""

    socket: Path  # its guest agent
    key: str  # SSH host key (ed25519)
    iid: str  # cloud-init instance-id


@pytest.fixture(scope="module")
def cloudy(d: NsDaemon) -> Original:
    """debian-12 built into the daemon and booted with a seed; its identity once made."""
    op = d.client.build_image("debian-12", builder="debian-12")
    assert d.client.wait_operation(op.id, timeout_s=1200).status == "success"
    cloud = {
        "hostname": "deb-{name}",
        "write_files": [{"path": PROOF, "content": "written by cloud-init\n"}],
        "runcmd": [f"echo ran by runcmd > {RAN}"],
    }
    d.create("cloudy", image="debian-12", vcpus=2, memory_mib=768, guest_agent=True,
             nics=LAB, cloud_init=cloud)  # fmt: skip
    started = time.monotonic()
    socket = d.run_dir("cloudy") / "qga.sock"
    wait_for(lambda: _read_file(socket, PROOF) is not None, 900, "cloud-init's file")
    print(f"debian-12: cloud-init file visible after {time.monotonic() - started:.0f} s")
    wait_for(lambda: _read_file(socket, SSH_KEY) is not None, 300, "the SSH host key")
    return Original(socket, _read_file(socket, SSH_KEY) or "", _read_file(socket, IID) or "")


def test_debian_boots_with_cloud_init_verified_by_guest_agent(
    d: NsDaemon, cloudy: Original
) -> None:
    """hostname, a file and a command from the NoCloud seed, every stage without error, OS
    and IPs from the agent, fs-freeze/thaw, agent shutdown."""
    started = time.monotonic()
    assert _read_file(cloudy.socket, PROOF) == "written by cloud-init\n"
    info = d.client.call(calls.guest_info("cloudy"))
    assert info.agent and info.hostname == "deb-cloudy", info
    assert "Debian" in info.os_name and "cloud" in info.kernel
    assert cloudy.key.startswith("ssh-ed25519 ") and cloudy.iid, cloudy
    # Only the key type the image asks for: RSA and the rest cost ~35 s of TCG first boot.
    assert _read_file(cloudy.socket, "/etc/ssh/ssh_host_rsa_key.pub") is None
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
    # runcmd moved to the final stage (the config stage's unit is masked): it still runs,
    # and cloud-init ends with no module error (bookworm's locale module failed every boot).
    wait_for(lambda: _read_file(cloudy.socket, RESULT) is not None, 600, "cloud-init's end")
    print(f"debian-12: cloud-init done {time.monotonic() - started:.0f} s after its file")
    assert _read_file(cloudy.socket, RAN) == "ran by runcmd\n"
    assert json.loads(_read_file(cloudy.socket, RESULT) or "")["v1"]["errors"] == []
    _stop(d, "cloudy")
    assert d.client.get_instance("cloudy").status.power == "stopped"
    log = (d.data_dir / "daemon.log").read_text(errors="replace")
    assert "cloudy: shutdown requested through the guest agent" in log
    qmp_log = (d.run_dir("cloudy") / "qmp.log").read_text(errors="replace")
    assert "guest-shutdown" in qmp_log  # the guest powered itself off
    assert "system_powerdown" not in qmp_log and '"quit"' not in qmp_log


def test_a_clone_of_a_debian_template_is_a_new_machine(d: NsDaemon, cloudy: Original) -> None:
    """cloudy (booted, stopped) becomes a template; its linked clone on the same network gets
    a lease, its own hostname, cloud-init instance-id and SSH host key. (The lease may be the
    address cloudy released at shutdown: dhclient asks for the one in the lease file the
    clone inherited. Distinct leases of clones running together: ``test_identity``.)"""
    if d.client.get_instance("cloudy").status.power != "stopped":  # run without the test before
        _stop(d, "cloudy")
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
    wait_for(lambda: _read_file(socket, SSH_KEY) is not None, 300, "dc-1's SSH host key")
    key, iid = _read_file(socket, SSH_KEY), _read_file(socket, IID) or ""
    assert key and key != cloudy.key, (key, cloudy)
    spec = d.client.get_instance("dc-1").spec
    assert iid.startswith(str(spec.uuid)) and iid != cloudy.iid, (iid, cloudy)
    assert spec.uuid != d.client.get_instance("cloudy").spec.uuid
