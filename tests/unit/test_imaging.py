"""Pure and file-level pieces of images and clones: the in-process qcow2 overlay equals
``qemu-img create``'s, bulk names expand like bash, cloud-init renders NoCloud files,
the QEMU sections for the seed CD-ROM and the guest agent, OVF parsing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pycdlib
import pytest

from virtfleet.drivers.base import LaunchContext
from virtfleet.drivers.qemu.config import QemuOptions, RunPaths, build_argv
from virtfleet.errors import ImageError, InvalidInputError
from virtfleet.model.cloudinit import CloudInit
from virtfleet.model.instance import Accel, InstanceSpec
from virtfleet.model.template import expand_names
from virtfleet.storage import ova
from virtfleet.storage.cloudinit import render, write_seed
from virtfleet.storage.qcow2 import write_overlay

QEMU_IMG = "qemu-img"


def _info(path: Path) -> dict[str, object]:
    out = subprocess.run([QEMU_IMG, "info", "--output=json", str(path)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    data = json.loads(out)
    for key in ("filename", "actual-size", "children"):
        data.pop(key, None)
    data.get("format-specific", {}).get("data", {}).pop("corrupt", None)
    return dict(data)


@pytest.mark.parametrize("size", [1 << 20, 256 << 20, 3 << 30, 600 << 30])
def test_overlay_matches_qemu_img_create(tmp_path: Path, size: int) -> None:
    """Same qemu-img info, clean check, same content as the overlay qemu-img writes."""
    base = tmp_path / "base.qcow2"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(base), str(size)], check=True)
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    write_overlay(ours, base, size)
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2",
                    str(theirs)], check=True)  # fmt: skip
    assert _info(ours) == _info(theirs)
    assert subprocess.run([QEMU_IMG, "check", "-q", str(ours)]).returncode == 0
    assert subprocess.run([QEMU_IMG, "compare", "-q", str(ours), str(theirs)]).returncode == 0
    with pytest.raises(FileExistsError):
        write_overlay(ours, base, size)  # never overwrites


def test_overlay_refuses_relative_backing(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        write_overlay(tmp_path / "o.qcow2", Path("base.qcow2"), 1 << 20)
    assert not (tmp_path / "o.qcow2").exists()


def test_expand_names() -> None:
    assert expand_names(["web-{1..3}"]) == ["web-1", "web-2", "web-3"]
    assert expand_names(["db-{08..10}", "x"]) == ["db-08", "db-09", "db-10", "x"]
    assert expand_names(["web"], count=2) == ["web-1", "web-2"]
    for bad, count in ((["a", "a"], None), (["n-{1..500}"], None), (["a", "b"], 2), ([], None)):
        with pytest.raises(InvalidInputError):
            expand_names(bad, count)


def test_cloud_init_render_and_seed(tmp_path: Path) -> None:
    """meta-data names the host; user-data is #cloud-config; the ISO is labelled CIDATA."""
    cloud = CloudInit(hostname="ci-{name}.lab", runcmd=["echo hi"], packages=["nginx"])
    files = render("web-1", cloud)
    assert "local-hostname: ci-web-1.lab\n" in files["meta-data"].decode()
    user = files["user-data"].decode()
    assert user.startswith("#cloud-config\n")
    config = json.loads(user.split("\n", 1)[1])
    assert config["hostname"] == "ci-web-1" and config["fqdn"] == "ci-web-1.lab"
    assert config["runcmd"] == ["echo hi"] and config["packages"] == ["nginx"]
    iso_path = write_seed(tmp_path / "seed.iso", "web-1", cloud)
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "CIDATA"
        for name, data in files.items():
            with iso.open_file_from_iso(rr_path=f"/{name}") as f:
                assert f.read() == data
            with iso.open_file_from_iso(joliet_path=f"/{name}") as f:
                assert f.read() == data
    finally:
        iso.close()


def test_template_cloud_init_is_overridden_field_by_field() -> None:
    base = CloudInit(hostname="t-{name}", packages=["a"])
    merged = base.merged(CloudInit(packages=["b"]))
    assert merged.hostname == "t-{name}" and merged.packages == ["b"]
    with pytest.raises(ValueError):
        CloudInit(hostname="bad host!")


def _argv(tmp_path: Path, **spec: object) -> list[str]:
    s = InstanceSpec.model_validate({"name": "v", "disks": [{"size_gib": 1}], **spec}).normalized()
    ctx = LaunchContext(Accel.TCG, "", {"root": tmp_path / "r.qcow2"}, cidata=tmp_path / "s.iso")
    return build_argv(s, ctx, RunPaths(tmp_path), QemuOptions())


def test_seed_cdrom_and_agent_channel_sections(tmp_path: Path) -> None:
    """virtio: scsi-cd on virtio-scsi; emulated: ide-cd; the agent port has QGA's name."""
    virtio = " ".join(_argv(tmp_path, guest_agent=True))
    assert "virtio-scsi-pci,id=scsi0" in virtio and "scsi-cd,bus=scsi0.0,drive=cidata" in virtio
    assert "name=org.qemu.guest_agent.0" in virtio and str(tmp_path / "qga.sock") in virtio
    emulated = " ".join(_argv(tmp_path, device_model="emulated"))
    assert "ide-cd,bus=ide.1,unit=1,drive=cidata" in emulated and "scsi" not in emulated
    assert "guest_agent" not in emulated


def test_ovf_parse_and_unsafe_members() -> None:
    xml = (Path(__file__).parents[1] / "integration" / "test_ova.py").read_text()
    template = xml.split('OVF = """', 1)[1].split('"""', 1)[0]
    system = ova.parse_ovf(template.format(disk="d.vmdk").encode())
    assert (system.name, system.vcpus, system.memory_mib, system.nics) == (
        "Legacy Web", 2, 320, ["E1000"])  # fmt: skip
    assert system.disks[0].file == "d.vmdk" and system.disks[0].capacity_bytes == 256 << 20
    with pytest.raises(ImageError):
        ova.parse_ovf(b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')
    import tarfile

    for name in ("../x.vmdk", "/etc/x.vmdk", "a/../../x"):
        with pytest.raises(InvalidInputError):
            ova.check_member(tarfile.TarInfo(name))
