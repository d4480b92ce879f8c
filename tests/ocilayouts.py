"""Building small OCI image layouts and docker archives by hand, for tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard


@dataclass
class Entry:
    name: str
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    mode: int = 0o644
    link: str = ""
    uid: int = 0
    gid: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)  # as PAX SCHILY.xattr records


def layer_tar(entries: list[Entry]) -> bytes:
    """An uncompressed layer tar of ``entries`` (in order, mtime 0)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type, info.mode, info.linkname = e.kind, e.mode, e.link
            info.uid, info.gid = e.uid, e.gid
            for key, value in e.xattrs.items():
                info.pax_headers[f"SCHILY.xattr.{key}"] = value.decode("utf-8", "surrogateescape")
            if e.kind == tarfile.REGTYPE:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def tar_of_dir(root: Path) -> bytes:
    """A layer tar of the directory ``root`` (owners and modes as they are there)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(root, arcname=".")
    return out.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Built:
    layers: list[bytes]  # uncompressed
    config: dict[str, Any]
    blobs: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes

    @property
    def diff_ids(self) -> list[str]:
        return [sha(layer) for layer in self.layers]


def image_config(
    layers: list[bytes], run: dict[str, Any] | None = None, arch: str = "amd64"
) -> dict[str, Any]:
    return {
        "architecture": arch,
        "os": "linux",
        "config": run or {},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]},
    }


def compress(data: bytes, how: str, gzip_level: int = 9) -> tuple[bytes, str]:
    base = "application/vnd.oci.image.layer.v1.tar"
    if how == "gzip":
        return gzip.compress(data, compresslevel=gzip_level, mtime=0), base + "+gzip"
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data), base + "+zstd"
    return data, base


def write_layout(
    root: Path,
    layers: list[bytes],
    config: dict[str, Any],
    compression: list[str] | None = None,
    index_arch: str | None = None,
    ref: str | None = None,
    gzip_level: int = 9,
) -> dict[str, Any]:
    """An OCI image layout at ``root`` (``ref``: the manifest's ref name, as umoci and
    skopeo want); returns its manifest."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = sha(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    config_bytes = json.dumps(config).encode()
    descs = []
    for i, layer in enumerate(layers):
        how = (compression or [])[i] if compression else "gzip"
        data, media = compress(layer, how, gzip_level)
        descs.append({"mediaType": media, "digest": put(data), "size": len(data)})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put(config_bytes),
            "size": len(config_bytes),
        },
        "layers": descs,
    }
    manifest_bytes = json.dumps(manifest).encode()
    desc: dict[str, Any] = {
        "mediaType": manifest["mediaType"],
        "digest": put(manifest_bytes),
        "size": len(manifest_bytes),
    }
    if index_arch:
        desc["platform"] = {"architecture": index_arch, "os": "linux"}
    if ref:
        desc["annotations"] = {"org.opencontainers.image.ref.name": ref}
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return manifest


def write_docker_archive(out: Path, layers: list[bytes], config: dict[str, Any]) -> None:
    """A ``docker save`` archive (layers uncompressed, config named by its digest)."""
    config_bytes = json.dumps(config).encode()
    config_name = sha(config_bytes).removeprefix("sha256:") + ".json"
    names = [f"{sha(layer).removeprefix('sha256:')}/layer.tar" for layer in layers]
    manifest = [{"Config": config_name, "RepoTags": ["test:latest"], "Layers": names}]
    with tarfile.open(out, "w") as tar:
        files = {config_name: config_bytes, "manifest.json": json.dumps(manifest).encode()}
        files.update(zip(names, layers, strict=True))
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def tar_layout(layout: Path, out: Path) -> None:
    with tarfile.open(out, "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout)), recursive=False)
