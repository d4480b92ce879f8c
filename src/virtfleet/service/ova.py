"""OVA use cases: import a package as images plus a ready VM (the legacy-migration path),
export a stopped VM as an OVA.

Owns the mapping between an OVF system and an ``InstanceSpec`` and the
all-or-nothing rule: a failed import removes every image it made and its
scratch files. Must not parse packages (``storage.ova``) or run QEMU.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from virtfleet.errors import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
)
from virtfleet.host.disks import DiskManager
from virtfleet.model.instance import DeviceModel, DiskSpec, InstanceSpec, NicSpec, PowerState
from virtfleet.model.names import validate_name
from virtfleet.model.operation import Operation
from virtfleet.service.disks import refuse_kept
from virtfleet.service.images import EXPORT_FORMATS, _absolute, _new_file, export_disk
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage import imports, ova, qemuimg
from virtfleet.storage.images import ImageStore

WAIT_S = 300.0


def vm_name(ovf_name: str) -> str:
    """A valid instance name from an OVF system name ("Web Server 01" -> "web-server-01")."""
    name = re.sub(r"[^a-z0-9-]+", "-", ovf_name.lower()).strip("-")[:50].strip("-")
    return name or "imported"


class OvaService:
    def __init__(
        self, images: ImageStore, store: StateStore, instances: InstanceService,
        runner: OperationRunner, disks_root: Path,
    ) -> None:  # fmt: skip
        self._images = images
        self._repo = InstanceRepo(store)
        self._instances = instances
        self._runner = runner
        self._disks = DiskManager(disks_root, images.file_for)

    async def import_ova(
        self, path: str, name: str | None = None, start: bool = False
    ) -> Operation:
        """Import the OVA at host ``path`` as images ``NAME-diskN`` and a VM ``NAME``.

        Checks the package and names now; converts, records and creates in an operation.
        """
        src = _absolute(path)
        if not src.is_file():
            raise InvalidInputError(f"no OVA file at {src}")
        system = await asyncio.to_thread(ova.read_package, src)
        name = validate_name(name or vm_name(system.name), "instance name")
        if await self._repo.find(name) is not None:
            raise AlreadyExistsError(f"instance {name!r} already exists")
        refuse_kept(self._disks, name)  # its disks come from the package, never kept ones
        disk_images = [f"{name}-disk{i}" for i in range(len(system.disks))]
        for image in disk_images:
            await self._images.check_new(image)
        spec = _spec(name, system, disk_images)

        async def run(ctx: OpContext) -> dict[str, Any]:
            made: list[str] = []
            try:
                await self._import_disks(src, system, disk_images, made, ctx)
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
        self, src: Path, system: ova.OvfSystem, names: list[str], made: list[str], ctx: OpContext
    ) -> None:
        with tempfile.TemporaryDirectory(prefix=".ova-", dir=self._images.root) as tmp:
            await ctx.progress(5, "unpacking the OVA")
            await asyncio.to_thread(ova.read_package, src, Path(tmp))
            for i, (disk, image) in enumerate(zip(system.disks, names, strict=True)):
                file = Path(tmp) / f"disk{i}"
                head = await imports.probe(file, self._images.root)
                await imports.convert_into(file, str(head["format"]), self._images.file_for(image))
                made.append(image)
                record = await self._images.inspect(image, self._images.file_for(image))
                await self._images.record(record.model_copy(update={"source": f"ova:{src}"}))
                await ctx.progress(10 + 80 * (i + 1) // len(names), f"imported {disk.file}")

    async def export_ova(self, instance: str, path: str) -> Operation:
        """Write stopped VM ``instance`` as an OVA (OVF + streamOptimized VMDKs + manifest).

        Runs on the instance's operation queue: a start asked for meanwhile waits for it.
        """
        rec = await self._repo.get(validate_name(instance, "instance name"))
        if rec.status.power not in (PowerState.STOPPED, PowerState.CRASHED):
            raise InvalidStateError(rec.status.power.value, "stopped")
        dest = _new_file(path)
        spec = rec.spec.normalized()
        sources = [self._disk_source(spec, d) for d in spec.disks]

        async def run(ctx: OpContext) -> dict[str, Any]:
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            try:
                await _write_ova(spec, sources, tmp, dest, ctx)
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return {"instance": instance, "path": str(dest)}

        return await self._runner.submit("ova.export", f"instance/{instance}", run)

    async def export_disk(
        self, instance: str, disk: str, path: str, fmt: str = "qcow2"
    ) -> Operation:
        """Write one disk of stopped VM ``instance`` (flattened) to a new host file."""
        if fmt not in EXPORT_FORMATS:
            raise InvalidInputError(f"cannot export as {fmt!r}; use {', '.join(EXPORT_FORMATS)}")
        rec = await self._repo.get(validate_name(instance, "instance name"))
        if rec.status.power not in (PowerState.STOPPED, PowerState.CRASHED):
            raise InvalidStateError(rec.status.power.value, "stopped")
        spec = rec.spec.normalized()
        found = next((d for d in spec.disks if d.name == disk), None)
        if found is None:
            raise NotFoundError(f"instance {instance!r} has no disk {disk!r}")
        src, dest = self._disk_source(spec, found), _new_file(path)

        async def run(ctx: OpContext) -> dict[str, Any]:
            await export_disk(src, dest, fmt, ctx.progress)
            return {"instance": instance, "disk": disk, "path": str(dest), "format": fmt}

        return await self._runner.submit("disk.export", f"instance/{instance}", run)

    def _disk_source(self, spec: InstanceSpec, disk: DiskSpec) -> Path:
        path = self._disks.path(spec.name, disk.name)
        if path.exists():
            return path
        if disk.image:
            return self._images.file_for(disk.image)
        raise InvalidInputError(f"disk {disk.name!r} of {spec.name!r} has no file yet")


async def _write_ova(
    spec: InstanceSpec, sources: list[Path], tmp: Path, dest: Path, ctx: OpContext
) -> None:
    vmdks = []
    for i, src in enumerate(sources):
        vmdks.append(tmp / f"disk{i}.vmdk")
        await qemuimg.convert(src, "qcow2", vmdks[-1], "vmdk", None, "subformat=streamOptimized")
        await ctx.progress(90 * (i + 1) // len(sources), f"converted disk {i}")
    sizes = [int((await qemuimg.info(s, "qcow2"))[0]["virtual-size"]) for s in sources]
    nic = "VirtIO" if spec.device_model is DeviceModel.VIRTIO else "E1000"
    system = ova.OvfSystem(
        name=spec.name,
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        disks=[ova.OvfDisk(f"disk{i}", size) for i, size in enumerate(sizes)],
        nics=[nic] * len(spec.nics),
    )
    await asyncio.to_thread(ova.write_package, dest, system, vmdks)


def _spec(name: str, system: ova.OvfSystem, images: list[str]) -> InstanceSpec:
    virtio = bool(system.nics) and all("virtio" in n.lower() for n in system.nics)
    return InstanceSpec(
        name=name,
        vcpus=system.vcpus,
        memory_mib=max(system.memory_mib, 64),
        disks=[DiskSpec(name=f"disk{i}", image=img, boot=i == 0) for i, img in enumerate(images)],
        nics=[NicSpec() for _ in system.nics],
        # Legacy guests from other hypervisors get IDE + e1000 unless the OVF says virtio.
        device_model=DeviceModel.VIRTIO if virtio else DeviceModel.EMULATED,
    )


def _firmware_note(firmware: str) -> str:
    if firmware.lower() == "efi":
        return "the OVF asks for EFI firmware; this VM boots with BIOS (SeaBIOS)"
    return ""
