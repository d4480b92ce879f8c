"""The image store: base disk images as ``root/<name>.qcow2`` files plus their metadata.

Owns the image files under ``root``, the ``ImageRecord`` metadata under
``/projects/default/images/{name}`` in the state store and the registry of image builders
(``tiny`` = ``virtfleet.storage.builders.tiny.build_tiny``). Must not know about
instances or operations: who uses an image is the caller's business
(``delete`` is told the users), progress goes to a plain callback.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import importlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from virtfleet.errors import (
    AlreadyExistsError,
    ImageError,
    InUseError,
    InvalidInputError,
    NotFoundError,
)
from virtfleet.model.event import utcnow
from virtfleet.model.names import validate_name
from virtfleet.model.template import TemplateDefaults
from virtfleet.state.keys import IMAGES
from virtfleet.state.repos import ModelRepo
from virtfleet.state.store import StateStore
from virtfleet.storage import qemuimg
from virtfleet.storage.imagefiles import LOCAL, ImageFiles, file_stamp
from virtfleet.storage.oci.store import LayerStore, OciImage

Progress = Callable[[int, str], None]
Builder = Callable[[Path, Path, Progress | None], None]


class ImageRecord(BaseModel):
    """Metadata of one base image, as stored under ``/projects/default/images/{name}``."""

    name: str
    path: str
    format: str = "qcow2"
    virtual_size_bytes: int = 0
    actual_size_bytes: int = 0
    sha256: str = ""
    # The file as its sha256 was taken (size:mtime_ns:inode): while the file still has it, a
    # start layers a VM on it without ``qemu-img check`` (it is the file that was verified).
    sha256_stamp: str = ""
    builder: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    kind: Literal["image", "template"] = "image"
    source: str = ""  # where it came from: an imported file, a VM made into a template
    defaults: TemplateDefaults | None = None  # templates: what their clones get
    generalised: list[str] = Field(default_factory=list)  # per-machine identity it dropped
    oci: OciImage | None = None  # imported OCI/Docker images: config and layers

    @field_validator("defaults", mode="before")
    @classmethod
    def _unset_legacy(cls, v: Any, info: ValidationInfo) -> Any:
        # Records written before template fields could be unset stored all six at their
        # defaults; from an image, those defaults meant "not set" (no NIC was the bug).
        legacy = isinstance(v, dict) and "max_vcpus" not in v
        if legacy and str(info.data.get("source", "")).startswith("image/"):
            return {k: x for k, x in v.items() if _LEGACY_DEFAULTS.get(k, ...) != x}
        return v


_LEGACY_DEFAULTS: dict[str, Any] = {
    "vcpus": 1, "memory_mib": 256, "device_model": "virtio", "nics": [], "guest_agent": False,
    "cloud_init": None,
}  # fmt: skip


def _tiny_builder() -> Builder:
    # Imported lazily: the tiny builder pulls in guest tooling the API never needs.
    module = importlib.import_module("virtfleet.storage.builders.tiny")
    return cast(Builder, module.build_tiny)


def _tiny_efi_builder() -> Builder:
    module = importlib.import_module("virtfleet.storage.builders.tiny")
    return cast(Builder, module.build_tiny_efi)


def _rootfs_builder(function: str) -> Callable[[], Builder]:
    def load() -> Builder:
        module = importlib.import_module("virtfleet.storage.builders.rootfs")
        return cast(Builder, getattr(module, function))

    return load


ROOTFS_FORMAT = "rootfs-tar"  # container images: a root file system tarball, not a disk
OCI_FORMAT = "oci"  # imported OCI/Docker images: shared layers (``oci_for`` has them)
ROOTFS_BUILDERS = {
    "container-tiny": _rootfs_builder("build_tiny_rootfs"),
    "container-debian-12": _rootfs_builder("build_debian_rootfs"),
}


def _debian12_builder() -> Builder:
    module = importlib.import_module("virtfleet.storage.builders.debian")
    return cast(Builder, module.build_debian12)


def default_builders() -> dict[str, Callable[[], Builder]]:
    """Builder name -> loader of the builder function."""
    return {
        "tiny": _tiny_builder,
        "tiny-efi": _tiny_efi_builder,
        "debian-12": _debian12_builder,
        **ROOTFS_BUILDERS,
    }


class ImageStore:
    """Image files and metadata; ``builders`` maps names to loaders (tests inject fakes)."""

    def __init__(
        self,
        root: Path,
        store: StateStore,
        cache_dir: Path,
        builders: Mapping[str, Callable[[], Builder]] | None = None,
        host_id: str = LOCAL,
    ) -> None:
        self.root = root
        self.files = ImageFiles(store, root, host_id)  # which hosts hold which files
        self.cache_dir = cache_dir
        self._repo = ModelRepo(store, IMAGES, ImageRecord)
        self._builders = dict(builders) if builders is not None else default_builders()
        self.layers = LayerStore(root / "layers")
        self._layers_lock = asyncio.Lock()  # an import never reuses a layer a delete removes

    @property
    def builders(self) -> builtins.list[str]:
        return sorted(self._builders)

    def add_builder(self, name: str, loader: Callable[[], Builder]) -> None:
        """Register (or replace) builder ``name``; ``loader`` returns the builder function."""
        self._builders[name] = loader

    async def list(self) -> builtins.list[ImageRecord]:
        """Every image record, sorted by name."""
        records = [r for r in await self._repo.values() if isinstance(r, ImageRecord)]
        return sorted(records, key=lambda r: r.name)

    async def find(self, name: str) -> ImageRecord | None:
        found = await self._repo.get_raw(validate_name(name, "image name"))
        return cast(ImageRecord, found[0]) if found else None

    async def get(self, name: str) -> ImageRecord:
        """The record of image ``name``; ``NotFoundError`` naming it if there is none."""
        record = await self.find(name)
        if record is None:
            raise NotFoundError(f"image {name!r} not found")
        return record

    async def path(self, name: str) -> Path:
        return Path((await self.get(name)).path)

    def file_for(self, name: str) -> Path:
        return self.root / f"{validate_name(name, 'image name')}.qcow2"

    def rootfs_for(self, name: str) -> Path:
        """Where container image ``name`` keeps its root file system tarball."""
        return self.root / f"{validate_name(name, 'image name')}.rootfs.tar"

    def oci_for(self, name: str) -> Path:
        """Where imported OCI image ``name`` keeps its description (config, layer dirs)."""
        return self.root / f"{validate_name(name, 'image name')}.oci.json"

    async def import_oci(self, name: str, src: Path, shown: str) -> ImageRecord:
        """Import the OCI layout or docker archive at ``src`` as image ``name`` (replacing
        it: the caller checked); a failure leaves no layer no other image uses."""
        async with self._layers_lock:
            image = await asyncio.to_thread(self.layers.import_image, src)
            meta = self.oci_for(name)
            try:
                await asyncio.to_thread(write_oci_meta, meta, image, self.layers)
                size = sum(layer.size_bytes for layer in image.layers)
                record = ImageRecord(
                    name=name, path=str(meta), format=OCI_FORMAT, virtual_size_bytes=size,
                    actual_size_bytes=size, sha256=image.config_digest.removeprefix("sha256:"),
                    source=f"oci:{shown} ({image.format})", oci=image,
                )  # fmt: skip
                await self._put(record)
            except BaseException:
                await self._collect_layers()
                raise
            await self._collect_layers()  # those an image it replaced used alone
        return record

    async def _collect_layers(self) -> None:
        keep = {x.diff_id for r in await self.list() if r.oci for x in r.oci.layers}
        await asyncio.to_thread(self.layers.collect, keep)

    async def check_build(self, name: str, builder: str, force: bool = False) -> None:
        """Raise what ``build`` would raise before doing any work (fail fast)."""
        validate_name(name, "image name")
        if builder not in self._builders:
            known = ", ".join(self.builders) or "none"
            raise InvalidInputError(f"unknown image builder {builder!r}; known: {known}")
        if not force and await self.find(name) is not None:
            raise AlreadyExistsError(f"image {name!r} already exists (use force to rebuild)")

    async def build(
        self,
        name: str,
        progress: Progress | None = None,
        builder: str = "tiny",
        force: bool = False,
    ) -> ImageRecord:
        """Build image ``name`` with ``builder`` and record it (replacing it if ``force``).

        The builder writes its file atomically, so a failed build leaves the old image.
        """
        await self.check_build(name, builder, force)
        build = self._builders[builder]()
        rootfs = builder in ROOTFS_BUILDERS
        out = self.rootfs_for(name) if rootfs else self.file_for(name)
        await asyncio.to_thread(self._run_builder, build, out, progress)
        record = await (self._inspect_rootfs if rootfs else self.inspect)(name, out, builder)
        await self._put(record)
        return record

    def _run_builder(self, build: Builder, out: Path, progress: Progress | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        build(out, self.cache_dir, progress)
        if not out.is_file():
            raise ImageError(f"image builder wrote no file at {out}")

    async def inspect(self, name: str, path: Path, builder: str = "") -> ImageRecord:
        """A fresh record for the image file at ``path`` (format, sizes, sha256)."""
        info = (await qemuimg.info(path))[0]
        digest, stamp = await asyncio.to_thread(_sha256, path)
        return ImageRecord(
            name=name,
            path=str(path),
            format=str(info.get("format", "raw")),
            virtual_size_bytes=int(info.get("virtual-size", 0)),
            actual_size_bytes=int(info.get("actual-size", 0)),
            sha256=digest,
            sha256_stamp=stamp,
            builder=builder,
        )

    async def _inspect_rootfs(self, name: str, path: Path, builder: str = "") -> ImageRecord:
        size = path.stat().st_size
        digest, stamp = await asyncio.to_thread(_sha256, path)
        return ImageRecord(
            name=name,
            path=str(path),
            format=ROOTFS_FORMAT,
            virtual_size_bytes=size,
            actual_size_bytes=size,
            sha256=digest,
            sha256_stamp=stamp,
            builder=builder,
        )

    async def verified(self, name: str, path: Path) -> bool:
        """Whether ``path`` is image ``name``'s qcow2 file, unchanged since its sha256 was
        taken (at import or build): then it need not be checked again before each use."""
        record = await self.find(name)
        if record is None or record.format != "qcow2":
            return False
        copy = await self.files.here(name, record.sha256)  # fetched: verified on arrival
        if copy is not None and copy.path == str(path):
            stamp = copy.stamp
        elif record.path == str(path):
            stamp = record.sha256_stamp
        else:
            return False
        try:
            return bool(stamp) and stamp == file_stamp(path.stat())
        except OSError:
            return False

    async def record(self, record: ImageRecord) -> None:
        """Store ``record`` (its file is already in place)."""
        await self._put(record)

    async def _put(self, record: ImageRecord) -> None:
        """Store ``record`` made on this host, and that this host holds its file."""
        await self._repo.put(record.name, record)
        stamp = record.sha256_stamp or await asyncio.to_thread(_stamp_of, Path(record.path))
        await self.files.mark(record.name, Path(record.path), record.sha256, stamp)

    async def held_here(self, name: str) -> bool:
        """Whether this host holds image ``name``'s file (made here or fetched), or it
        was made on this host before hosts recorded their copies (then it is recorded)."""
        record = await self.get(name)
        if await self.files.here(name, record.sha256) is not None:
            return True
        legacy = Path(record.path)
        try:  # the very file that was hashed (its inode and mtime), not one of the same name
            stamp = _stamp_of(legacy)
            same = record.sha256_stamp == stamp or (
                record.format == OCI_FORMAT and not record.sha256_stamp
            )
        except OSError:
            same = False
        if legacy.parent != self.root or not same:
            return False
        await self.files.mark(name, legacy, record.sha256, record.sha256_stamp or stamp)
        return True

    async def check_new(self, name: str, force: bool = False) -> Path:
        """The file a new image ``name`` would get; ``AlreadyExistsError`` if taken."""
        if not force and await self.find(name) is not None:
            raise AlreadyExistsError(f"image {name!r} already exists")
        return self.file_for(name)

    async def delete(self, name: str, users: builtins.list[str]) -> bool:
        """Remove image ``name`` (file and record); return whether it existed.

        Refuses with ``InUseError`` naming the users. Deleting a missing image is success.
        """
        record = await self.find(name)
        if record is None:
            return False
        if users:
            raise InUseError(f"image {name!r} is used by: {', '.join(sorted(users))}")
        await asyncio.to_thread(self.drop_copy, self.root / Path(record.path).name)
        await self._repo.delete(name)
        await self.files.forget(name)
        if record.oci is not None:
            async with self._layers_lock:
                await self._collect_layers()  # keeps the layers other images use
        return True

    def drop_copy(self, path: Path) -> None:
        """Remove this host's copy of an image file and what lives beside it."""
        path.unlink(missing_ok=True)
        for store in path.parent.glob(f"{path.name}.*.vars.fd"):
            store.unlink(missing_ok=True)  # an older template's UEFI variables
        # A template's machine state (UEFI variables, TPM: host/disks.py template_state).
        shutil.rmtree(path.with_name(f"{path.name}.machine"), True)

    async def drop_here(self, name: str) -> bool:
        """Remove this host's copy of image ``name`` (the record was deleted elsewhere);
        whether there was one."""
        copies = [x for x in await self.files.locations(name) if x.host == self.files.host_id]
        for copy in copies:
            await asyncio.to_thread(self.drop_copy, self.root / Path(copy.path).name)
            await self.files.forget(name)
        return bool(copies)


def write_oci_meta(meta: Path, image: OciImage, layers: LayerStore) -> None:
    """The image's description for the container driver: config and lower dirs."""
    meta.parent.mkdir(parents=True, exist_ok=True)
    doc = {"image": image.model_dump(mode="json"),
           "lowers": [str(layers.path(x.diff_id)) for x in image.layers]}  # fmt: skip
    tmp = meta.with_name(f".{meta.name}.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, meta)


def _stamp_of(path: Path) -> str:
    return file_stamp(path.stat())


def _sha256(path: Path) -> tuple[str, str]:
    """The file's sha256 and its ``file_stamp`` (taken on the open file, before reading)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        stamp = file_stamp(os.fstat(f.fileno()))
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest(), stamp
