"""OVA use cases: import a package as images plus a ready VM (the legacy-migration path),
export a stopped VM as an OVA.

Owns the mapping between an OVF system and an ``InstanceSpec`` and the
all-or-nothing rule: a failed import removes every image it made and its
scratch files. Must not parse packages (``storage.ova``) or run QEMU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

from virtfleet.errors import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
)
from virtfleet.hostops import DiskOps
from virtfleet.model.instance import (
    DeviceModel,
    DiskSpec,
    Firmware,
    InstanceSpec,
    NicSpec,
    PowerState,
)
from virtfleet.model.names import validate_name
from virtfleet.model.operation import Operation
from virtfleet.service.disks import refuse_kept
from virtfleet.service.images import EXPORT_FORMATS, export_disk
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage import imports, ova, qemuimg
from virtfleet.storage.hostpaths import HostPaths, Target
from virtfleet.storage.images import ImageStore

WAIT_S = 300.0


def vm_name(ovf_name: str) -> str:
    """A valid instance name from an OVF system name ("Web Server 01" -> "web-server-01")."""
    name = re.sub(r"[^a-z0-9-]+", "-", ovf_name.lower()).strip("-")[:50].strip("-")
    return name or "imported"


class OvaService:
    def __init__(
        self, images: ImageStore, store: StateStore, instances: InstanceService,
        runner: OperationRunner, disks: DiskOps, paths: HostPaths,
    ) -> None:  # fmt: skip
        self._images = images
        self._paths = paths
        self._repo = InstanceRepo(store)
        self._instances = instances
        self._runner = runner
        self._disks = disks

    async def import_ova(
        self,
        path: str,
        name: str | None = None,
        start: bool = False,
        keep_macs: bool = False,
        trusted: bool = False,
    ) -> Operation:
        """Import the OVA at host ``path`` as images ``NAME-diskN`` and a VM ``NAME``.

        ``path``: in the import directory, anywhere if ``trusted``. Checks the package
        and names now; unpacks, checks each disk, converts, records and creates in an
        operation.
        """
        fd, shown = await asyncio.to_thread(self._paths.open_source, path, trusted)
        try:
            system = await asyncio.to_thread(_read, fd, shown, None)
            name = validate_name(name or vm_name(system.name), "instance name")
            if await self._repo.find(name) is not None:
                raise AlreadyExistsError(f"instance {name!r} already exists")
            refuse_kept(self._disks, name)  # its disks come from the package, never kept ones
            disk_images = [f"{name}-disk{i}" for i in range(len(system.disks))]
            for image in disk_images:
                await self._images.check_new(image)
        except BaseException:
            os.close(fd)
            raise
        spec = _spec(name, system, disk_images, keep_macs)

        async def run(ctx: OpContext) -> dict[str, Any]:
            made: list[str] = []
            try:
                await self._import_disks((fd, shown), system, disk_images, made, ctx)
                op = await self._instances.create(spec, start=start)
                done = await self._runner.wait(op.id, WAIT_S)
                if done.status != "success":
                    raise InvalidStateError(done.status, "success", what=f"creating {name}")
            except BaseException:
                for image in made:
                    with contextlib.suppress(Exception):
                        await self._images.delete(image, [])
                raise
            return {"instance": name, "images": made, "firmware": system.firmware,
                    "note": _firmware_note(system.firmware)}  # fmt: skip

        # Not "instance/NAME": the instance.create it submits would queue behind this operation.
        return await self._runner.submit("ova.import", f"ova/{name}", run)

    async def _import_disks(
        self, src: tuple[int, str], system: ova.OvfSystem, names: list[str], made: list[str],
        ctx: OpContext,
    ) -> None:  # fmt: skip
        """Unpack into a private work directory, then check and convert each disk in the jail."""
        fd, shown = src
        tmp = self._paths.work_subdir(".ova-")
        try:
            await ctx.progress(5, "unpacking the OVA")
            await asyncio.to_thread(_read, fd, shown, tmp)
            for i, (disk, image) in enumerate(zip(system.disks, names, strict=True)):
                await self._import_disk(tmp / f"disk{i}", disk.file, image, shown)
                made.append(image)
                await ctx.progress(10 + 80 * (i + 1) // len(names), f"imported {disk.file}")
        finally:
            os.close(fd)
            shutil.rmtree(tmp, ignore_errors=True)

    async def _import_disk(self, file: Path, member: str, image: str, shown: str) -> None:
        disk = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(disk, 0o644)  # the jail may read it (by descriptor only), not change it
            head = await imports.probe(disk, member, self._paths.jail)
            dest = self._images.file_for(image)
            await imports.convert_into(disk, member, str(head["format"]), dest, self._paths)
        finally:
            os.close(disk)
        record = await self._images.inspect(image, self._images.file_for(image))
        await self._images.record(record.model_copy(update={"source": f"ova:{shown}"}))

    async def export_ova(self, instance: str, path: str, trusted: bool = False) -> Operation:
        """Write stopped VM ``instance`` as an OVA (OVF + streamOptimized VMDKs + manifest)
        at the new file ``path`` (in the export directory, anywhere if ``trusted``).

        Runs on the instance's operation queue: a start asked for meanwhile waits for it.
        """
        rec = await self._repo.get(validate_name(instance, "instance name"))
        if rec.status.power not in (PowerState.STOPPED, PowerState.CRASHED):
            raise InvalidStateError(rec.status.power.value, "stopped")
        spec = rec.spec.normalized()
        sources = [self._disk_source(spec, d) for d in spec.disks]
        target = await asyncio.to_thread(self._paths.target, path, trusted)

        async def run(ctx: OpContext) -> dict[str, Any]:
            tmp = self._paths.work_subdir(".ova-export-")
            try:
                package = await _write_ova(spec, sources, tmp, ctx, self._paths)
                await asyncio.to_thread(self._paths.publish, package, target)
            finally:
                target.close()
                shutil.rmtree(tmp, ignore_errors=True)
            return {"instance": instance, "path": target.shown}

        return await self._runner.submit("ova.export", f"instance/{instance}", run)

    async def export_disk(
        self, instance: str, disk: str, path: str, fmt: str = "qcow2", trusted: bool = False
    ) -> Operation:
        """Write one disk of stopped VM ``instance`` (flattened) to a new host file
        (in the export directory, anywhere if ``trusted``)."""
        if fmt not in EXPORT_FORMATS:
            raise InvalidInputError(f"cannot export as {fmt!r}; use {', '.join(EXPORT_FORMATS)}")
        rec = await self._repo.get(validate_name(instance, "instance name"))
        if rec.status.power not in (PowerState.STOPPED, PowerState.CRASHED):
            raise InvalidStateError(rec.status.power.value, "stopped")
        spec = rec.spec.normalized()
        found = next((d for d in spec.disks if d.name == disk), None)
        if found is None:
            raise NotFoundError(f"instance {instance!r} has no disk {disk!r}")
        src = self._disk_source(spec, found)
        target: Target = await asyncio.to_thread(self._paths.target, path, trusted)

        async def run(ctx: OpContext) -> dict[str, Any]:
            try:
                await export_disk(src, target, fmt, ctx.progress, self._paths)
            finally:
                target.close()
            return {"instance": instance, "disk": disk, "path": target.shown, "format": fmt}

        return await self._runner.submit("disk.export", f"instance/{instance}", run)

    def _disk_source(self, spec: InstanceSpec, disk: DiskSpec) -> Path:
        path = self._disks.disk_path(spec.name, disk.name)
        if path.exists():
            return path
        if disk.image:
            return self._images.file_for(disk.image)
        raise InvalidInputError(f"disk {disk.name!r} of {spec.name!r} has no file yet")


async def _write_ova(
    spec: InstanceSpec, sources: list[Path], tmp: Path, ctx: OpContext, paths: HostPaths
) -> Path:
    """Build the package in the private directory ``tmp``; return its path there."""
    jail = paths.jail.trusted()  # the daemon's own disks, with the jail's limits
    vmdks = []
    for i, src in enumerate(sources):
        vmdks.append(tmp / f"disk{i}.vmdk")
        options = "subformat=streamOptimized"
        await qemuimg.convert(src, "qcow2", vmdks[-1], "vmdk", None, options, jail=jail)
        await ctx.progress(90 * (i + 1) // len(sources), f"converted disk {i}")
    sizes = [int((await qemuimg.info(s, "qcow2", jail=jail))[0]["virtual-size"]) for s in sources]
    nic = "VirtIO" if spec.device_model is DeviceModel.VIRTIO else "E1000"
    system = ova.OvfSystem(
        name=spec.name,
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        disks=[ova.OvfDisk(f"disk{i}", size) for i, size in enumerate(sizes)],
        nics=[nic] * len(spec.nics),
        macs=[n.mac for n in spec.nics],
        firmware="bios" if spec.firmware is Firmware.BIOS else "efi",
    )
    package = tmp / "package.ova"
    await asyncio.to_thread(ova.write_package, package, system, vmdks)
    return package


def _read(fd: int, shown: str, extract_to: Path | None) -> ova.OvfSystem:
    """Parse (and with ``extract_to`` unpack) the OVA open at ``fd`` from its start."""
    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        return ova.read_package(f, extract_to, Path(shown).name)


def _spec(
    name: str, system: ova.OvfSystem, images: list[str], keep_macs: bool = False
) -> InstanceSpec:
    virtio = bool(system.nics) and all("virtio" in n.lower() for n in system.nics)
    # A new machine gets new MACs (prepare_nics); the OVF's only when asked (a move, not a copy).
    macs = system.macs if keep_macs else []
    macs = macs + [None] * (len(system.nics) - len(macs))
    return InstanceSpec(
        name=name,
        vcpus=system.vcpus,
        memory_mib=max(system.memory_mib, 64),
        disks=[DiskSpec(name=f"disk{i}", image=img, boot=i == 0) for i, img in enumerate(images)],
        nics=[NicSpec(mac=mac) for mac in macs],
        # Legacy guests from other hypervisors get IDE + e1000 unless the OVF says virtio.
        device_model=DeviceModel.VIRTIO if virtio else DeviceModel.EMULATED,
        # It boots as on its old hypervisor: EFI guests get OVMF (a fresh variable store).
        firmware=Firmware.UEFI if system.firmware.lower() == "efi" else Firmware.BIOS,
    )


def _firmware_note(firmware: str) -> str:
    if firmware.lower() == "efi":
        return "the OVF asks for EFI firmware: this VM boots with UEFI (OVMF)"
    return ""
