"""Reading an image someone brought: an OCI image layout (a directory or a tarball of
one) or a ``docker save`` archive, as one manifest with verified blobs.

Owns finding the manifest for this host's architecture (through an image index when
there is one), checking every digest the formats define (index → manifest →
config and compressed layers; a docker archive's config name and layer files against
the config's ``diff_ids``) and opening a layer's decompressed stream (gzip, zstd or
plain, told by its magic) that checks its ``diff_id`` when read to the end. Must not
write anything: applying layers is ``applier``'s, storing them ``store``'s.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import zstandard

from virtfleet.errors import ImageError, InvalidInputError
from virtfleet.storage.oci.applier import clean_name

MAX_JSON_BYTES = 4 << 20  # a manifest, index or config: never this big
CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def host_arch() -> str:
    """This host's architecture in OCI terms (``amd64``...)."""
    machine = platform.machine()
    return _ARCH.get(machine, machine)


class BadImage(ImageError):
    """A manifest, index or config that does not parse, or a digest that does not match."""


@dataclass(frozen=True)
class Layer:
    """One layer: where its blob is, its blob digest and its uncompressed ``diff_id``."""

    blob: str  # path inside the source
    digest: str  # sha256:... of the blob as stored ("" where the format has none)
    diff_id: str  # sha256:... of the uncompressed tar
    media_type: str


@dataclass(frozen=True)
class Image:
    config: dict[str, Any]
    config_digest: str
    layers: list[Layer]
    format: str  # "oci" or "docker-archive"


class Files:
    """Files of a source by relative path: a directory or a tarball (random access)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            return
        try:
            self._tar = tarfile.open(path)  # noqa: SIM115 (kept open: closed by close())
        except (tarfile.TarError, OSError) as err:
            message = f"{path} is neither an image directory nor a tar archive: {err}"
            raise BadImage(message) from err
        for member in self._tar.getmembers():
            rel = _safe(member.name)
            if rel and (member.isreg() or member.issym()):
                self._members[rel] = member

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def exists(self, rel: str) -> bool:
        if self._tar is not None:
            return rel in self._members
        return (self.path / rel).is_file()

    def open(self, rel: str) -> IO[bytes]:
        """The file ``rel`` (a symlink inside a tarball followed once, as docker writes
        for repeated layers); ``BadImage`` if missing."""
        if self._tar is None:
            target = (self.path / rel).resolve()
            if not target.is_relative_to(self.path.resolve()) or not target.is_file():
                raise BadImage(f"image file {rel!r} is missing")
            return target.open("rb")
        member = self._members.get(rel)
        if member is not None and member.issym():
            linked = _safe(os.path.normpath(os.path.join(os.path.dirname(rel), member.linkname)))
            member = self._members.get(linked or "")
        if member is None or not member.isreg():
            raise BadImage(f"image file {rel!r} is missing")
        opened = self._tar.extractfile(member)
        assert opened is not None
        return opened

    def read_json(self, rel: str, digest: str = "") -> Any:
        with self.open(rel) as f:
            data = f.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise BadImage(f"image file {rel!r} is too large for its kind")
        if digest and _sha256(data) != digest:
            raise BadImage(f"digest of {rel!r} does not match {digest}")
        try:
            return json.loads(data)
        except ValueError as err:
            raise BadImage(f"image file {rel!r} does not parse: {err}") from err


def _safe(name: str) -> str:
    try:
        rel = clean_name(name)
    except ImageError:
        return ""
    return str(rel) if rel else ""


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(digest: Any) -> str:
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        raise BadImage(f"unsupported digest {digest!r} (sha256 only)")
    hexpart = digest.removeprefix("sha256:")
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise BadImage(f"malformed digest {digest!r}")
    return f"blobs/sha256/{hexpart}"


@contextmanager
def opened(path: Path) -> Iterator[tuple[Files, Image]]:
    """The image at ``path`` (layout directory or tarball, or docker archive)."""
    if not path.exists():
        raise InvalidInputError(f"no such file or directory: {path}")
    files = Files(path)
    try:
        if files.exists("index.json"):
            image = _read_oci(files)
        elif files.exists("manifest.json"):
            image = _read_docker(files)
        else:
            raise BadImage(f"{path} holds neither an OCI layout (index.json) nor manifest.json")
        check_platform(image.config)
        yield files, image
    finally:
        files.close()


def _field(data: Any, key: str, kind: type, where: str) -> Any:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, kind):
        raise BadImage(f"{where} has no valid {key!r}")
    return value


def _read_oci(files: Files) -> Image:
    index = files.read_json("index.json")
    manifests = _field(index, "manifests", list, "index.json")
    descriptor = _pick(files, manifests, "index.json")
    manifest = files.read_json(_blob(descriptor.get("digest")), descriptor["digest"])
    config_desc = _field(manifest, "config", dict, "manifest")
    config_digest = config_desc.get("digest")
    config = files.read_json(_blob(config_digest), config_digest)
    diff_ids = _diff_ids(config)
    layer_descs = _field(manifest, "layers", list, "manifest")
    if len(layer_descs) != len(diff_ids):
        raise BadImage("manifest and config disagree on the number of layers")
    layers = []
    for desc, diff_id in zip(layer_descs, diff_ids, strict=True):
        blob = _blob(desc.get("digest") if isinstance(desc, dict) else None)
        media = str(desc.get("mediaType", ""))
        layers.append(Layer(blob, desc["digest"], diff_id, media))
    return Image(config, config_digest, layers, "oci")


def _pick(files: Files, manifests: list[Any], where: str, depth: int = 0) -> dict[str, Any]:
    """The manifest descriptor for this host's architecture (nested indexes followed)."""
    wanted = host_arch()
    seen = []
    for desc in manifests:
        if not isinstance(desc, dict):
            raise BadImage(f"{where} has a malformed descriptor")
        arch = (desc.get("platform") or {}).get("architecture")
        if arch not in (None, wanted):
            seen.append(str(arch))
            continue
        if desc.get("mediaType") in INDEX_TYPES and depth < 2:
            nested = files.read_json(_blob(desc.get("digest")), desc.get("digest", ""))
            return _pick(files, _field(nested, "manifests", list, "index"), "index", depth + 1)
        return desc
    if seen:
        raise InvalidInputError(
            f"image is for {', '.join(seen)}, not this host's {wanted}", reason="foreign_arch"
        )
    raise BadImage(f"{where} lists no image manifest")


def _diff_ids(config: Any) -> list[str]:
    rootfs = _field(config, "rootfs", dict, "image config")
    ids = _field(rootfs, "diff_ids", list, "image config rootfs")
    for diff_id in ids:
        _blob(diff_id)  # validates the form
    return [str(i) for i in ids]


def _read_docker(files: Files) -> Image:
    entries = files.read_json("manifest.json")
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise BadImage("manifest.json must describe exactly one image")
    entry = entries[0]
    config_rel = _safe(str(_field(entry, "Config", str, "manifest.json")))
    name = config_rel.rsplit("/", 1)[-1].removesuffix(".json")
    config_digest = "sha256:" + name  # docker names the config by its own digest
    config = files.read_json(config_rel, config_digest)
    diff_ids = _diff_ids(config)
    paths = _field(entry, "Layers", list, "manifest.json")
    if len(paths) != len(diff_ids):
        raise BadImage("manifest.json and config disagree on the number of layers")
    layers = [Layer(_safe(str(p)), "", d, "") for p, d in zip(paths, diff_ids, strict=True)]
    return Image(config, config_digest, layers, "docker-archive")


class _Hashing:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        return data

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return "sha256:" + self.hash.hexdigest()


def verify_blob(files: Files, layer: Layer) -> None:
    """Check the stored blob against its manifest digest before anything reads it."""
    if not layer.digest:
        return
    with files.open(layer.blob) as f:
        got = _Hashing(f).drain()
    if got != layer.digest:
        raise BadImage(f"layer {layer.digest} does not match its digest (got {got})")


@contextmanager
def layer_stream(files: Files, layer: Layer) -> Iterator[_Hashing]:
    """The decompressed tar of ``layer``; ``finish`` it to check its ``diff_id``."""
    with files.open(layer.blob) as raw:
        head = raw.read(4)
        raw.seek(0)
        if head.startswith(GZIP_MAGIC):
            with gzip.GzipFile(fileobj=raw) as plain:
                yield _Hashing(plain)  # type: ignore[arg-type]
        elif head == ZSTD_MAGIC:
            with zstandard.ZstdDecompressor().stream_reader(raw) as plain:
                yield _Hashing(plain)
        else:
            yield _Hashing(raw)


def finish(stream: _Hashing, layer: Layer) -> None:
    """Read ``stream`` to its end and compare with the layer's ``diff_id``."""
    try:
        got = stream.drain()
    except (OSError, EOFError, zstandard.ZstdError) as err:
        raise BadImage(f"layer {layer.diff_id} does not decompress: {err}") from err
    if got != layer.diff_id:
        raise BadImage(f"layer {layer.diff_id} does not match its diff_id (got {got})")


def check_platform(config: dict[str, Any]) -> None:
    """Refuse an image for another OS or architecture, saying which."""
    os_name = config.get("os", "linux")
    arch = config.get("architecture", host_arch())
    if os_name != "linux" or arch != host_arch():
        raise InvalidInputError(
            f"image is for {os_name}/{arch}, not this host's linux/{host_arch()}",
            reason="foreign_arch",
        )
