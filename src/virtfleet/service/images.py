"""Image use cases: list, show, build (an operation with progress) and delete base images.

Owns the rules that span images and instances (an image in use by an instance
spec cannot be deleted), which host paths a caller may import from or export to
(``trusted``: the local root over the Unix socket may name any path; everyone
else only files in the import/export directories) and the image events. Must
not touch image files or builders itself: that is ``virtfleet.storage``'s job.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from virtfleet.errors import (
    ConflictError,
    InUseError,
    InvalidInputError,
    NotFoundError,
    UnknownHostError,
    VirtfleetError,
)
from virtfleet.model.event import Event
from virtfleet.model.instance import InstanceSpec
from virtfleet.model.names import validate_name
from virtfleet.model.operation import Operation
from virtfleet.service.imagefetch import ImageFetcher
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.state.hosts import HostRepo
from virtfleet.state.repos import EventLog, InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage import imports, qemuimg
from virtfleet.storage.hostpaths import HostPaths, Target
from virtfleet.storage.images import ImageRecord, ImageStore, Progress
from virtfleet.storage.oci import skopeo

__all__ = ["ImageRecord", "ImageService", "image_users"]


def image_users(specs: builtins.list[InstanceSpec], image: str) -> builtins.list[str]:
    """Names of the instances whose spec refers to ``image`` (as base image or disk image)."""
    return sorted(
        s.name for s in specs if s.image == image or any(d.image == image for d in s.disks)
    )


class ImageService:
    def __init__(
        self, images: ImageStore, store: StateStore, runner: OperationRunner, events: EventLog,
        paths: HostPaths, fetcher: ImageFetcher | None = None,
    ) -> None:  # fmt: skip
        self.store = images
        self.fetcher = fetcher  # brings image files from other members (clusters)
        self._hosts = HostRepo(store)
        self.paths = paths
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

    async def host_file(self, path: str, trusted: bool) -> str:
        """The absolute path of a host file a VM is given to read (a driver ISO), checked as
        an import's source: in the import directory unless ``trusted``, no symbolic link,
        a regular file (``PathNotAllowedError``, ``NotFoundError``, ``InvalidInputError``)."""
        fd, shown = await asyncio.to_thread(self.paths.open_source, path, trusted)
        os.close(fd)
        return shown

    async def import_file(
        self, name: str, path: str, fmt: str | None = None, force: bool = False,
        trusted: bool = False,
    ) -> Operation:  # fmt: skip
        """Import the host file ``path`` (raw/qcow2/vmdk/vhdx/vpc/vdi) as qcow2 image ``name``.

        ``path``: in (or relative to) the import directory, anywhere if ``trusted``.
        Validates now (name free, path allowed, format, self-contained, not corrupt);
        converts in an ``image.import`` operation. A failure leaves no file and no record.
        """
        dest = await self.store.check_new(validate_name(name, "image name"), force)
        await self._refuse_if_used(name)
        fd, shown = await asyncio.to_thread(self.paths.open_source, path, trusted)
        try:
            src, copy = await asyncio.to_thread(imports.readable, fd, self.paths)
        except BaseException:
            os.close(fd)
            raise
        if src != fd:  # the jail reads a private copy
            os.close(fd)
        try:
            head = await imports.probe(src, Path(shown).name, self.paths.jail, fmt)
        except BaseException:
            _close(src, copy)
            raise

        async def run(ctx: OpContext) -> dict[str, Any]:
            try:
                fmt = str(head["format"])
                await imports.convert_into(
                    src, Path(shown).name, fmt, dest, self.paths, ctx.progress
                )
            finally:
                _close(src, copy)
            record = await self.store.inspect(name, dest)
            record = record.model_copy(update={"source": f"import:{shown} ({head['format']})"})
            await self.store.record(record)
            await self._emit(
                "image.imported", name, f"image {name} imported from {Path(shown).name}"
            )
            return {"image": record.model_dump(mode="json")}

        return await self._runner.submit("image.import", f"image/{name}", run)

    async def import_oci(
        self, name: str, path: str = "", from_ref: str = "", force: bool = False,
        trusted: bool = False,
    ) -> Operation:  # fmt: skip
        """Import an OCI image layout (directory or tarball) or ``docker save`` archive at
        host ``path``, or (``from_ref``, ``docker://…``) one skopeo fetches, as container
        image ``name``. ``path``: as for ``import_file``. A failure leaves no layer and
        no record."""
        await self.store.check_new(validate_name(name, "image name"), force)
        await self._refuse_if_used(name)
        if bool(path) == bool(from_ref):
            raise InvalidInputError("give either a path or --from docker://REFERENCE")
        fd, shown = -1, from_ref
        if path:
            fd, shown = await asyncio.to_thread(self.paths.open_source, path, trusted, True)

        async def run(ctx: OpContext) -> dict[str, Any]:
            fetched = self.paths.work_subdir("oci-") if from_ref else None
            try:
                if fetched is not None:
                    await ctx.progress(5, f"fetching {from_ref}")
                    await asyncio.to_thread(skopeo.fetch, from_ref, fetched / "layout")
                src = fetched / "layout" if fetched else Path(f"/proc/self/fd/{fd}")
                await ctx.progress(30, "verifying and applying layers")
                record = await self.store.import_oci(name, src, shown)
            finally:
                if fd >= 0:
                    os.close(fd)
                if fetched is not None:
                    await asyncio.to_thread(shutil.rmtree, fetched, True)
            await self._emit("image.imported", name, f"image {name} imported from {shown}")
            return {"image": record.model_dump(mode="json")}

        return await self._runner.submit("image.import", f"image/{name}", run)

    async def export(
        self, name: str, path: str, fmt: str = "qcow2", trusted: bool = False
    ) -> Operation:
        """Write image ``name`` to the new host file ``path`` as qcow2, raw or vmdk
        (in the export directory, anywhere if ``trusted``); never overwrites."""
        if fmt not in EXPORT_FORMATS:
            raise InvalidInputError(
                f"cannot export as {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}"
            )
        record = await self.store.get(name)
        target = await asyncio.to_thread(self.paths.target, path, trusted)

        async def run(ctx: OpContext) -> dict[str, Any]:
            try:
                await export_disk(Path(record.path), target, fmt, ctx.progress, self.paths)
            finally:
                target.close()
            return {"image": name, "path": target.shown, "format": fmt}

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
        existed, _ = await self.delete_everywhere(name)
        return existed

    async def delete_everywhere(self, name: str) -> tuple[bool, builtins.list[str]]:
        """Delete the image (as ``delete``) and every other host's copy of its file: whether
        it existed, and the hosts that could not be reached to drop theirs (they keep a
        file no record names; a new image of that name never uses it: its sha256 differs
        or it is fetched again)."""
        validate_name(name, "image name")
        specs = [r.spec for r in await self._instances.list()]
        copies = await self.store.files.locations(name)
        existed = await self.store.delete(name, image_users(specs, name))
        if existed:
            await self._events.append(
                Event(kind="image.deleted", target=f"image/{name}", message=f"image {name} deleted")
            )
        kept = []
        for copy in copies:
            if copy.host != self.store.files.host_id and not await self._drop_on(name, copy.host):
                kept.append(copy.host)
        return existed, kept

    async def _drop_on(self, name: str, host: str) -> bool:
        """Have member ``host`` remove its copy of deleted image ``name``; whether it did."""
        fetcher = self.fetcher
        if fetcher is None or fetcher.forwarding is None or fetcher.peers is None:
            return False
        try:
            target = await fetcher.forwarding.reach(host, f"image {name!r} has a copy on")
            await fetcher.peers.call(target, "DELETE", f"/1.0/images/{name}/file")
        except VirtfleetError:
            return False
        await self.store.files.forget(name, host)  # it is gone there: say so even if it lags
        return True

    async def drop_copy(self, name: str) -> bool:
        """Remove this host's copy of image ``name`` once the image itself is deleted
        (asked by the member that deleted it); ``ConflictError`` while the image exists."""
        if await self.store.find(validate_name(name, "image name")) is not None:
            raise ConflictError(f"image {name!r} exists: delete the image, not one copy")
        return await self.store.drop_here(name)

    async def claim_local(self) -> int:
        """Record the copies this host holds of images made here before hosts recorded
        their copies (daemon start): other members can then fetch them. How many."""
        held = 0
        for record in await self.store.list():
            with contextlib.suppress(VirtfleetError, OSError):
                held += await self.store.held_here(record.name)
        return held

    async def local_file(self, name: str) -> Path:
        """This host's verified copy of image ``name`` (what a member fetching it gets);
        ``NotFoundError`` if this host holds none."""
        record = await self.store.get(validate_name(name, "image name"))
        if await self.store.held_here(name):
            copy = await self.store.files.here(name, record.sha256)
            if copy is not None:
                return Path(copy.path)
        raise NotFoundError(f"image {name!r} has no file on this host")

    async def fetch(self, name: str, host: str | None = None) -> Operation:
        """Have ``host`` (a member's id or name; default this host) hold image ``name``'s
        file, streamed from a member that has it and checked by its sha256: an
        ``image.fetch`` operation run by that host (its progress counts bytes)."""
        await self.store.get(validate_name(name, "image name"))
        fetcher = self.fetcher
        if fetcher is None:
            raise InvalidInputError("this server does not fetch images from other hosts")
        where = fetcher.here if host is None else await self._host_id(host)
        if where != fetcher.here:
            return await fetcher.ask(name, where)

        async def run(ctx: OpContext) -> dict[str, Any]:
            copy = await fetcher.fetch_here(name, ctx.progress)
            return {"image": name, **copy.model_dump(mode="json")}

        return await self._runner.submit("image.fetch", f"image/{name}", run)

    async def _host_id(self, host: str) -> str:
        try:
            return (await self._hosts.get(host)).id
        except NotFoundError as err:
            names = ", ".join(h.name for h in await self._hosts.list()) or "none"
            raise UnknownHostError(f"unknown host {host!r}; the members are: {names}") from err


EXPORT_FORMATS = ("qcow2", "raw", "vmdk")


def _close(fd: int, copy: Path | None) -> None:
    """Close an import's source and remove its private copy, if one was made."""
    with contextlib.suppress(OSError):
        os.close(fd)
    if copy is not None:
        copy.unlink(missing_ok=True)


async def export_disk(
    src: Path, target: Target, fmt: str, progress: qemuimg.Progress, paths: HostPaths
) -> None:
    """Convert the daemon's own ``src`` (through its backing chain) into a work file, then
    publish it as ``target``; no partial file on failure. qemu-img runs with the jail's
    limits but as the daemon (the chain is the daemon's own) and writes only through
    the descriptor of the work file."""
    options = "subformat=streamOptimized" if fmt == "vmdk" else ""
    out, tmp = paths.work_file(".exporting", mode=0o644)
    try:
        await qemuimg.convert(
            src, "qcow2", qemuimg.fd_path(out), fmt, progress, options,
            jail=paths.jail.trusted(), fds=[out],
        )  # fmt: skip
        await asyncio.to_thread(paths.publish, tmp, target)
    finally:
        os.close(out)
        tmp.unlink(missing_ok=True)


def _threadsafe(ctx: OpContext) -> Progress:
    """A plain progress callback, callable from the builder's thread, that reports into ``ctx``."""
    loop = asyncio.get_running_loop()

    def report(pct: int, message: str) -> None:
        asyncio.run_coroutine_threadsafe(ctx.progress(pct, message), loop)

    return report
