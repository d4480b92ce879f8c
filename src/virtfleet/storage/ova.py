"""OVA/OVF packages (DMTF DSP0243): read one safely, write one.

Owns the package format: tar member checks (no absolute or ``..`` names, regular
files only, every referenced disk present and nothing unreferenced), the optional
manifest's digests, parsing the OVF envelope (name, CPUs, memory, disks, NICs,
firmware) and writing an envelope plus manifest for export. Must not create
images or instances: ``service.ova`` does, from the ``OvfSystem`` returned here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from virtfleet.errors import ImageError, InvalidInputError

NS = {
    "ovf": "http://schemas.dmtf.org/ovf/envelope/1",
    "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
    "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData",
    "vmw": "http://www.vmware.com/schema/ovf",
}
MAX_OVF_BYTES = 1 << 20
RT_CPU, RT_MEMORY, RT_NIC = "3", "4", "10"
_UNITS = re.compile(r"^byte\s*\*\s*2\^(\d+)$")
_MAC = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")


@dataclass
class OvfDisk:
    file: str  # member name in the package
    capacity_bytes: int = 0


@dataclass
class OvfSystem:
    """What the envelope says about its (first) virtual system."""

    name: str
    vcpus: int = 1
    memory_mib: int = 256
    disks: list[OvfDisk] = field(default_factory=list)
    nics: list[str] = field(default_factory=list)  # NIC models (ResourceSubType), e.g. E1000
    macs: list[str | None] = field(default_factory=list)  # each NIC's MAC (rasd:Address)
    firmware: str = "bios"


def _q(prefix: str, tag: str) -> str:
    return f"{{{NS[prefix]}}}{tag}"


def check_member(member: tarfile.TarInfo) -> str:
    """The member's safe name; ``InvalidInputError`` for absolute/``..`` names or non-files."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or "\\" in name or not parts:
        raise InvalidInputError(f"OVA member name {name[:120]!r} is unsafe (absolute or '..')")
    if not member.isfile():
        raise InvalidInputError(f"OVA member {name[:120]!r} is not a regular file")
    return name


def read_package(
    source: Path | BinaryIO, extract_to: Path | None = None, name: str = ""
) -> OvfSystem:
    """Check the OVA at ``source`` (a path or an open file, shown as ``name``) and parse its
    OVF; extract its disks into ``extract_to`` as new files ``disk0``, ``disk1``...

    ``InvalidInputError`` for unsafe members, ``ImageError`` for everything else wrong.
    """
    name = name or (source.name if isinstance(source, Path) else "the OVA")
    try:
        with _open_tar(source) as tar:
            members = {check_member(m): m for m in tar.getmembers()}
            ovf_name = _the_ovf(members)
            system = parse_ovf(_read(tar, members[ovf_name], MAX_OVF_BYTES))
            _check_disks(system, members, ovf_name)
            digests = _manifest(tar, members)
            for i, disk in enumerate(system.disks):
                if extract_to is not None:  # as disk0, disk1...: member names may collide
                    _extract(tar, members[disk.file], extract_to / f"disk{i}", digests)
    except tarfile.TarError as err:
        raise ImageError(f"{name} is not a readable OVA (tar) package: {err}") from err
    return system


def _open_tar(source: Path | BinaryIO) -> tarfile.TarFile:
    if isinstance(source, Path):
        return tarfile.open(source, "r:")
    return tarfile.open(fileobj=source, mode="r:")


def _the_ovf(members: dict[str, tarfile.TarInfo]) -> str:
    ovfs = [n for n in members if n.lower().endswith(".ovf")]
    if len(ovfs) != 1:
        raise ImageError(f"an OVA holds exactly one .ovf descriptor, this one {len(ovfs)}")
    return ovfs[0]


def _check_disks(system: OvfSystem, members: dict[str, tarfile.TarInfo], ovf: str) -> None:
    wanted = {d.file for d in system.disks}
    missing = sorted(wanted - set(members))
    if missing:
        raise ImageError(f"OVA is missing disk file(s) its OVF names: {', '.join(missing)}")
    extra = sorted(set(members) - wanted - {ovf} - {n for n in members if n.endswith(".mf")})
    if extra:
        raise ImageError(f"OVA holds file(s) its OVF does not name: {', '.join(extra)}")
    if not system.disks:
        raise ImageError("the OVF describes no disk")


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise ImageError(f"{member.name} is too large ({member.size} bytes)")
    f = tar.extractfile(member)
    assert f is not None  # a regular file (checked)
    return f.read()


def _manifest(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]
) -> dict[str, tuple[str, str]]:
    """``SHA256(disk.vmdk)= hex`` lines of the optional .mf: name -> (algorithm, digest)."""
    digests: dict[str, tuple[str, str]] = {}
    for name in (n for n in members if n.endswith(".mf")):
        for line in _read(tar, members[name], MAX_OVF_BYTES).decode(errors="replace").splitlines():
            m = re.match(r"^(SHA1|SHA256|SHA512)\((.+)\)\s*=\s*([0-9a-fA-F]+)$", line.strip())
            if m:
                digests[m.group(2)] = (m.group(1).lower(), m.group(3).lower())
    return digests


def _extract(
    tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, digests: dict[str, tuple[str, str]]
) -> None:
    algo, expected = digests.get(member.name, ("sha256", ""))
    digest = hashlib.new(algo)
    src = tar.extractfile(member)
    assert src is not None
    # A new file only (the directory is the daemon's private work directory anyway).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with src, os.fdopen(os.open(dest, flags, 0o600), "wb") as out:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if expected and digest.hexdigest() != expected:
        raise ImageError(f"{member.name} does not match the manifest's {algo.upper()} digest")


def parse_ovf(data: bytes) -> OvfSystem:
    """The first virtual system of an OVF envelope; ``ImageError`` if it is not one."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ImageError("OVF descriptors must not declare a DOCTYPE or entities")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise ImageError(f"the OVF is not well-formed XML: {err}") from err
    files = {
        f.get(_q("ovf", "id")): f.get(_q("ovf", "href")) or "" for f in root.iter(_q("ovf", "File"))
    }
    vs = root.find(".//ovf:VirtualSystem", NS)
    if vs is None:
        raise ImageError("the OVF has no VirtualSystem")
    name = (vs.findtext("ovf:Name", namespaces=NS) or vs.get(_q("ovf", "id")) or "imported").strip()
    system = OvfSystem(name=name)
    for disk in root.iter(_q("ovf", "Disk")):
        ref = disk.get(_q("ovf", "fileRef"))
        if ref not in files:
            raise ImageError(f"OVF disk {disk.get(_q('ovf', 'diskId'))!r} names no File")
        system.disks.append(OvfDisk(files[ref], _capacity(disk)))
    _hardware(vs, system)
    return system


def _capacity(disk: ET.Element) -> int:
    value = int(disk.get(_q("ovf", "capacity"), "0") or 0)
    units = _UNITS.match(disk.get(_q("ovf", "capacityAllocationUnits"), "byte") or "byte")
    return value << int(units.group(1)) if units else value


def _hardware(vs: ET.Element, system: OvfSystem) -> None:
    for item in vs.iter(_q("ovf", "Item")):
        kind = item.findtext("rasd:ResourceType", namespaces=NS)
        quantity = item.findtext("rasd:VirtualQuantity", default="0", namespaces=NS)
        if kind == RT_CPU:
            system.vcpus = max(1, int(quantity))
        elif kind == RT_MEMORY:
            units = item.findtext("rasd:AllocationUnits", default="byte * 2^20", namespaces=NS)
            m = _UNITS.match(units.strip())
            shift = int(m.group(1)) if m else 20
            system.memory_mib = max(1, (int(quantity) << shift) >> 20)
        elif kind == RT_NIC:
            system.nics.append(item.findtext("rasd:ResourceSubType", default="", namespaces=NS))
            system.macs.append(_mac(item.findtext("rasd:Address", default="", namespaces=NS)))
    for config in vs.iter(_q("vmw", "Config")):
        if config.get(_q("vmw", "key")) == "firmware":
            system.firmware = config.get(_q("vmw", "value"), "bios") or "bios"


def _mac(text: str) -> str | None:
    """A unicast MAC in QEMU's form, or None for anything else (an untrusted field)."""
    mac = text.strip().lower().replace("-", ":")
    ok = _MAC.fullmatch(mac) is not None and not int(mac[:2], 16) & 1
    return mac if ok else None


def write_package(dest: Path, system: OvfSystem, disk_files: list[Path]) -> None:
    """Write an OVA at ``dest``: the OVF first (the spec's order), the disks, a SHA256 manifest."""
    names = [f"{system.name}-disk{i}.vmdk" for i in range(len(disk_files))]
    ovf = _envelope(system, names, disk_files).encode()
    ovf_path = dest.with_name(f".{dest.name}.ovf")
    ovf_path.write_bytes(ovf)
    mf = "".join(
        f"SHA256({n})= {_sha256(p)}\n"
        for n, p in [(f"{system.name}.ovf", ovf_path), *zip(names, disk_files, strict=True)]
    )
    mf_path = dest.with_name(f".{dest.name}.mf")
    mf_path.write_text(mf)
    try:
        with tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as tar:
            tar.add(ovf_path, f"{system.name}.ovf")
            for name, path in zip(names, disk_files, strict=True):
                tar.add(path, name)
            tar.add(mf_path, f"{system.name}.mf")
    finally:
        ovf_path.unlink(missing_ok=True)
        mf_path.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        shutil.copyfileobj(f, _Hasher(digest))
    return digest.hexdigest()


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class _Hasher:
    def __init__(self, digest: _Digest) -> None:
        self.digest = digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def _envelope(system: OvfSystem, names: list[str], disks: list[Path]) -> str:
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)
    env = ET.Element(_q("ovf", "Envelope"))
    refs = ET.SubElement(env, _q("ovf", "References"))
    section = ET.SubElement(env, _q("ovf", "DiskSection"))
    ET.SubElement(section, _q("ovf", "Info")).text = "Virtual disks"
    for i, (name, path) in enumerate(zip(names, disks, strict=True)):
        file_attrs = {"id": f"file{i}", "href": name, "size": str(path.stat().st_size)}
        ET.SubElement(refs, _q("ovf", "File"), {_q("ovf", k): v for k, v in file_attrs.items()})
        ET.SubElement(section, _q("ovf", "Disk"), {
            _q("ovf", "diskId"): f"vmdisk{i}", _q("ovf", "fileRef"): f"file{i}",
            _q("ovf", "capacity"): str(system.disks[i].capacity_bytes),
            _q("ovf", "format"): "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized",
        })  # fmt: skip
    vs = ET.SubElement(env, _q("ovf", "VirtualSystem"), {_q("ovf", "id"): system.name})
    ET.SubElement(vs, _q("ovf", "Info")).text = "A virtual machine exported by virtfleet"
    ET.SubElement(vs, _q("ovf", "Name")).text = system.name
    hw = ET.SubElement(vs, _q("ovf", "VirtualHardwareSection"))
    ET.SubElement(hw, _q("ovf", "Info")).text = "Virtual hardware"
    items = [
        (RT_CPU, str(system.vcpus), {}),
        (RT_MEMORY, str(system.memory_mib), {"AllocationUnits": "byte * 2^20"}),
    ]
    macs = system.macs + [None] * (len(system.nics) - len(system.macs))
    items += [
        (RT_NIC, "", {"ResourceSubType": model, **({"Address": mac} if mac else {})})
        for model, mac in zip(system.nics, macs, strict=True)
    ]
    items += [("17", "", {"HostResource": f"ovf:/disk/vmdisk{i}"}) for i in range(len(disks))]
    for n, (kind, quantity, extra) in enumerate(items, start=1):
        item = ET.SubElement(hw, _q("ovf", "Item"))
        fields = {"InstanceID": str(n), "ResourceType": kind, **extra}
        if quantity:
            fields["VirtualQuantity"] = quantity
        for tag, text in sorted(fields.items()):
            ET.SubElement(item, _q("rasd", tag)).text = text
    # VMware's extension, which other hypervisors read too: how the guest boots.
    config = {_q("ovf", "required"): "false", _q("vmw", "key"): "firmware"}
    ET.SubElement(hw, _q("vmw", "Config"), {**config, _q("vmw", "value"): system.firmware})
    return ET.tostring(env, encoding="unicode", xml_declaration=True)
