"""Image use cases: list, show, build (an operation with progress) and delete base images.

Owns the rules that span images and instances (an image in use by an instance
spec cannot be deleted) and the image events. Must not touch image files or
builders itself: that is ``virtfleet.storage.images.ImageStore``'s job.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from pathlib import Path
from typing import Any

from virtfleet.errors import AlreadyExistsError, InUseError, InvalidInputError
from virtfleet.model.event import Event
from virtfleet.model.instance import InstanceSpec
from virtfleet.model.names import validate_name
from virtfleet.model.operation import Operation
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.state.repos import EventLog, InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage import imports, qemuimg
from virtfleet.storage.images import ImageRecord, ImageStore, Progress

__all__ = ["ImageRecord", "ImageService", "image_users"]


def image_users(specs: builtins.list[InstanceSpec], image: str) -> builtins.list[str]:
    """Names of the instances whose spec refers to ``image`` (as base image or disk image)."""
    return sorted(
        s.name for s in specs if s.image == image or any(d.image == image for d in s.disks)
    )


class ImageService:
    def __init__(
        self, images: ImageStore, store: StateStore, runner: OperationRunner, events: EventLog
    ) -> None:
        self.store = images
        self._instances = InstanceRepo(store)
        self._runner = runner
        self._events = events

    @property
    def builders(self) -> builtins.list[str]:
        return self.store.builders

    async def list(self) -> builtins.list[ImageRecord]:
        return await self.store.list()

    async def get(self, name: str) -> ImageRecord:
        """The image record; ``NotFoundError`` if there is none."""
        return await self.store.get(name)

    async def build(self, name: str, builder: str = "tiny", force: bool = False) -> Operation:
        """Validate now (name, builder, existence), then build in an ``image.build`` operation.

        Cancelling the operation stops waiting, not the builder thread: it finishes its
        atomic write in the background, and the image is then not recorded.
        ``InUseError`` (naming them) if ``force`` would rebuild an image instances use.
        """
        await self.store.check_build(name, builder, force)
        if force:
            await self._refuse_if_used(name)

        async def run(ctx: OpContext) -> dict[str, Any]:
            if force:
                await self._refuse_if_used(name)  # again: a create may have come meanwhile
            record = await self.store.build(name, _threadsafe(ctx), builder, force)
            await self._events.append(
                Event(
                    kind="image.built",
                    target=f"image/{name}",
                    message=f"image {name} built",
                    data={"builder": builder, "sha256": record.sha256},
                )
            )
            return {"image": record.model_dump(mode="json")}

        return await self._runner.submit("image.build", f"image/{name}", run)

    async def import_file(
        self, name: str, path: str, fmt: str | None = None, force: bool = False
    ) -> Operation:
        """Import the host file ``path`` (raw/qcow2/vmdk/vhdx/vpc/vdi) as qcow2 image ``name``.

        Validates now (name free, file readable, format, backing chain, corruption);
        converts in an ``image.import`` operation. A failure leaves no file and no record.
        """
        dest = await self.store.check_new(validate_name(name, "image name"), force)
        await self._refuse_if_used(name)
        src = _absolute(path)
        head = await imports.probe(src, self.store.root, fmt)

        async def run(ctx: OpContext) -> dict[str, Any]:
            await imports.convert_into(src, str(head["format"]), dest, ctx.progress)
            record = await self.store.inspect(name, dest)
            record = record.model_copy(update={"source": f"import:{src} ({head['format']})"})
            await self.store.record(record)
            await self._emit("image.imported", name, f"image {name} imported from {src.name}")
            return {"image": record.model_dump(mode="json")}

        return await self._runner.submit("image.import", f"image/{name}", run)

    async def export(self, name: str, path: str, fmt: str = "qcow2") -> Operation:
        """Write image ``name`` to the new host file ``path`` as qcow2, raw or vmdk."""
        if fmt not in EXPORT_FORMATS:
            raise InvalidInputError(
                f"cannot export as {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}"
            )
        record = await self.store.get(name)
        dest = _new_file(path)

        async def run(ctx: OpContext) -> dict[str, Any]:
            await export_disk(Path(record.path), dest, fmt, ctx.progress)
            return {"image": name, "path": str(dest), "format": fmt}

        return await self._runner.submit("image.export", f"image/{name}", run)

    async def _refuse_if_used(self, name: str) -> None:
        """``InUseError`` naming the instances using ``name``: replacing its file would
        pull it from under their overlays."""
        users = image_users([r.spec for r in await self._instances.list(shared=True)], name)
        if users:
            raise InUseError(f"image {name!r} is used by: {', '.join(users)}")

    async def _emit(self, kind: str, name: str, message: str) -> None:
        await self._events.append(Event(kind=kind, target=f"image/{name}", message=message))

    async def delete(self, name: str) -> bool:
        """Delete the image unless an instance uses it (``InUseError``); missing is success."""
        validate_name(name, "image name")
        specs = [r.spec for r in await self._instances.list()]
        existed = await self.store.delete(name, image_users(specs, name))
        if existed:
            await self._events.append(
                Event(kind="image.deleted", target=f"image/{name}", message=f"image {name} deleted")
            )
        return existed


EXPORT_FORMATS = ("qcow2", "raw", "vmdk")


def _absolute(path: str) -> Path:
    if not path or not os.path.isabs(path) or "\0" in path:
        raise InvalidInputError(f"give an absolute host path, not {path[:200]!r}")
    return Path(os.path.normpath(path))


def _new_file(path: str) -> Path:
    """An absolute path to create; ``AlreadyExistsError`` rather than overwrite a file."""
    dest = _absolute(path)
    if dest.exists() or dest.is_symlink():
        raise AlreadyExistsError(f"{dest} already exists; exports never overwrite")
    if not dest.parent.is_dir():
        raise InvalidInputError(f"directory {dest.parent} does not exist")
    return dest


async def export_disk(src: Path, dest: Path, fmt: str, progress: qemuimg.Progress) -> None:
    """Convert ``src`` (through its backing chain) to ``dest``; no partial file on failure."""
    tmp = dest.with_name(f".{dest.name}.exporting")
    options = "subformat=streamOptimized" if fmt == "vmdk" else ""
    try:
        await qemuimg.convert(src, "qcow2", tmp, fmt, progress, options)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _threadsafe(ctx: OpContext) -> Progress:
    """A plain progress callback, callable from the builder's thread, that reports into ``ctx``."""
    loop = asyncio.get_running_loop()

    def report(pct: int, message: str) -> None:
        asyncio.run_coroutine_threadsafe(ctx.progress(pct, message), loop)

    return report
