"""OVA packages: one built here (VMware-style OVF + streamOptimized VMDK of the tiny
guest) imports as images plus a VM that boots; bad packages fail cleanly; a VM exported
as an OVA imports back with the same disk content."""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.client import ApiError
from virtfleet.client import imaging as calls

from .conftest import Daemon, module_daemon

pytestmark = pytest.mark.integration
SECRET = b"ROOT-ONLY-HOST-SECRET-" + b"y" * 42

OVF = """<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:id="file1" ovf:href="{disk}"/></References>
  <DiskSection><Info>Virtual disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="256"
          ovf:capacityAllocationUnits="byte * 2^20"/>
  </DiskSection>
  <VirtualSystem ovf:id="Legacy Web">
    <Info>A VM from another hypervisor</Info><Name>Legacy Web</Name>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>320</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="bios"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


@pytest.fixture(scope="module")
def d(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Daemon]:
    yield from module_daemon(request)


@pytest.fixture(scope="module")
def vmdk(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ova") / "tiny.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized",
         str(tiny_cache), str(out)], check=True,
    )  # fmt: skip
    return out


def _ova(path: Path, members: list[tuple[str, bytes | Path]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, Path):
                info.size = data.stat().st_size
                with data.open("rb") as f:
                    tar.addfile(info, f)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _wait(d: Daemon, op_id: str) -> dict[str, object]:
    done = d.client.wait_operation(op_id, timeout_s=300)
    if done.status != "success":
        raise ApiError(done.error_code or "", done.error_message or "", 0)
    return done.result


def test_ova_imports_as_a_vm_that_boots(d: Daemon, vmdk: Path, tmp_path: Path) -> None:
    """Name, CPUs, memory, NIC model and disk come from the OVF; the VM boots the disk."""
    ova = _ova(tmp_path / "legacy.ova", [("legacy.ovf", OVF.format(disk="disk1.vmdk").encode()),
                                         ("disk1.vmdk", vmdk)])  # fmt: skip
    result = _wait(d, d.client.call(calls.import_ova(str(ova), start=True)).id)
    assert result["instance"] == "legacy-web" and result["images"] == ["legacy-web-disk0"]
    inst = d.client.get_instance("legacy-web")
    assert (inst.spec.vcpus, inst.spec.memory_mib, inst.spec.device_model) == (2, 320, "emulated")
    assert len(inst.spec.nics) == 1
    assert "VIRTFLEET-READY hostname=legacy-web cpus=2" in d.wait_marker("legacy-web")
    with pytest.raises(ApiError) as err:  # running: not consistent enough to export
        d.client.call(calls.export_ova("legacy-web", str(tmp_path / "out.ova")))
    assert err.value.code == "invalid_state"


@pytest.mark.parametrize(
    ("case", "code"),
    [("missing", "image_error"), ("extra", "image_error"), ("dotdot", "invalid_input"),
     ("absolute", "invalid_input"), ("not-a-tar", "image_error"),
     ("data-file", "unsafe_image"), ("extent", "unsafe_image")],
)  # fmt: skip
def test_bad_ova_leaves_nothing(
    d: Daemon, vmdk: Path, tmp_path: Path, case: str, code: str
) -> None:
    """A disk missing or extra, a member named with '..' or an absolute path, no tar at
    all, a disk naming a root-only host file (qcow2 data-file, VMDK extent): refused with a
    stable code; no image, VM or scratch file is left, and the host file was read nowhere."""
    ovf = OVF.format(disk="disk1.vmdk").encode()
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET * 4096)
    secret.chmod(0o600)
    hostile = _hostile_disk(tmp_path, case, secret) if case in ("data-file", "extent") else vmdk
    members: dict[str, list[tuple[str, bytes | Path]]] = {
        "missing": [("x.ovf", ovf)],
        "extra": [("x.ovf", ovf), ("disk1.vmdk", vmdk), ("disk2.vmdk", vmdk)],
        "dotdot": [("x.ovf", OVF.format(disk="../disk1.vmdk").encode()), ("../disk1.vmdk", vmdk)],
        "absolute": [("x.ovf", OVF.format(disk="/tmp/d.vmdk").encode()), ("/tmp/d.vmdk", vmdk)],
        "data-file": [("x.ovf", ovf), ("disk1.vmdk", hostile)],
        "extent": [("x.ovf", ovf), ("disk1.vmdk", hostile)],
    }
    path = tmp_path / f"{case}.ova"
    if case == "not-a-tar":
        path.write_bytes(b"definitely not a tar archive" * 100)
    else:
        _ova(path, members[case])
    images, files = d.client.list_images(), sorted((d.data_dir / "images").iterdir())
    with pytest.raises(ApiError) as err:
        _wait(d, d.client.call(calls.import_ova(str(path), name=f"bad-{case}")).id)
    assert err.value.code == code, err.value
    assert d.client.list_images() == images
    assert sorted((d.data_dir / "images").iterdir()) == files
    assert f"bad-{case}" not in [i.name for i in d.client.list_instances()]
    assert list((d.data_dir / "work").iterdir()) == []
    for file in (p for p in d.data_dir.rglob("*") if p.is_file() and p.suffix != ".log"):
        assert SECRET not in file.read_bytes(), file


def _hostile_disk(tmp: Path, case: str, secret: Path) -> Path:
    """A disk whose metadata names ``secret``: a qcow2 data file or a VMDK extent."""
    path = tmp / f"{case}.disk"
    if case == "data-file":
        opts = f"data_file={secret},data_file_raw=on"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, str(path), "1M"],
                       check=True)  # fmt: skip
    else:
        path.write_text(f'# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\n'
                        f'RW 2048 FLAT "{secret}" 0\n')  # fmt: skip
    return path


def test_export_ova_round_trip(d: Daemon, tiny_cache: Path, tmp_path: Path) -> None:
    """A stopped VM exported as an OVA imports back with the same disk content."""
    d.create("plain", start=False, vcpus=1, memory_mib=192)
    out = tmp_path / "plain.ova"
    _wait(d, d.client.call(calls.export_ova("plain", str(out))).id)
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert names[0] == "plain.ovf" and names[-1] == "plain.mf"
    _wait(d, d.client.call(calls.import_ova(str(out), name="plain-copy")).id)
    inst = d.client.get_instance("plain-copy")
    assert inst.spec.memory_mib == 192
    copy = d.client.get_image("plain-copy-disk0").path
    same = subprocess.run(["qemu-img", "compare", str(tiny_cache), copy], capture_output=True)
    assert same.returncode == 0, same.stdout


def test_export_one_vm_disk(d: Daemon, tiny_cache: Path, tmp_path: Path) -> None:
    """One disk of a stopped VM exported as raw and vmdk has the image's content."""
    d.create("diskful", start=False)
    for fmt in ("raw", "vmdk"):
        out = tmp_path / f"root.{fmt}"
        _wait(d, d.client.call(calls.export_disk("diskful", "root", str(out), fmt)).id)
        same = subprocess.run(["qemu-img", "compare", str(tiny_cache), str(out)])
        assert same.returncode == 0
    with pytest.raises(ApiError) as err:
        d.client.call(calls.export_disk("diskful", "nope", str(tmp_path / "x.raw"), "raw"))
    assert err.value.code == "not_found"
