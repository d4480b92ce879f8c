"""The layer store: every imported layer extracted once, by its ``diff_id``, shared.

Owns ``<root>/sha256/<hex>/`` (a layer's files, an overlay lower dir as it is: OCI
whiteouts already turned into overlayfs' own) with ``<hex>.json`` beside it (its size
and entry count), importing an image into it (every blob verified before any is
applied, limits over the whole image) and removing layers no image keeps. An import
that fails removes the layers it made and keeps the ones other images share. Must not
know about image names or records: the image service keeps which image uses which.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from virtfleet.storage.oci import source
from virtfleet.storage.oci.applier import Applied, Limits, apply_layer

log = logging.getLogger(__name__)


class LayerInfo(BaseModel):
    diff_id: str
    digest: str = ""  # the compressed blob's, where the format has one
    size_bytes: int = 0
    entries: int = 0
    stripped_setid: list[str] = Field(default_factory=list)  # setuid/setgid bits removed
    stripped_caps: list[str] = Field(default_factory=list)  # file capabilities not applied


class OciConfig(BaseModel):
    """What an image says about running it (the OCI image config's ``config``)."""

    entrypoint: list[str] = Field(default_factory=list)
    cmd: list[str] = Field(default_factory=list)
    env: list[str] = Field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    exposed_ports: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    stop_signal: str = ""
    architecture: str = ""
    os: str = "linux"


class OciImage(BaseModel):
    """An imported image: its config, its layers (lowest first) and what was stripped."""

    format: str
    config_digest: str
    config: OciConfig
    layers: list[LayerInfo]
    stripped_setid: list[str] = Field(default_factory=list)
    stripped_caps: list[str] = Field(default_factory=list)


def parse_config(config: dict[str, Any]) -> OciConfig:
    run = config.get("config") or {}
    if not isinstance(run, dict):
        raise source.BadImage("image config's 'config' is not an object")

    def strings(key: str) -> list[str]:
        value = run.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise source.BadImage(f"image config's {key!r} is not a list of strings")
        return list(value)

    labels = run.get("Labels") or {}
    ports = run.get("ExposedPorts") or {}
    if not isinstance(labels, dict) or not isinstance(ports, dict):
        raise source.BadImage("image config's 'Labels' or 'ExposedPorts' is not an object")
    return OciConfig(
        entrypoint=strings("Entrypoint"),
        cmd=strings("Cmd"),
        env=strings("Env"),
        working_dir=str(run.get("WorkingDir") or ""),
        user=str(run.get("User") or ""),
        exposed_ports=sorted(str(p) for p in ports),
        labels={str(k): str(v) for k, v in labels.items()},
        stop_signal=str(run.get("StopSignal") or ""),
        architecture=str(config.get("architecture", "")),
        os=str(config.get("os", "linux")),
    )


class LayerStore:
    def __init__(self, root: Path, limits: Limits | None = None) -> None:
        self.root = root
        self.limits = limits or Limits()

    def path(self, diff_id: str) -> Path:
        return self.root / "sha256" / diff_id.removeprefix("sha256:")

    def _meta(self, diff_id: str) -> Path:
        return self.path(diff_id).with_suffix(".json")

    def import_image(self, path: Path) -> OciImage:
        """Verify and apply the image at ``path``; layers already here are reused."""
        made: list[str] = []
        try:
            with source.opened(path) as (files, image):
                config = parse_config(image.config)
                for layer in image.layers:
                    source.verify_blob(files, layer)  # all of them before any is applied
                applied = Applied()
                infos = [self._ensure(files, layer, applied, made) for layer in image.layers]
        except BaseException:
            for diff_id in made:
                self._remove(diff_id)
            raise
        for rel in applied.stripped:
            log.warning("image %s: setuid/setgid bits stripped from %s", path, rel)
        for rel in applied.stripped_caps:
            log.warning("image %s: file capabilities of %s not applied", path, rel)
        if applied.skipped_dev:
            log.info(
                "image %s: %d device nodes under /dev left out", path, len(applied.skipped_dev)
            )
        return OciImage(
            format=image.format,
            config_digest=image.config_digest,
            config=config,
            layers=infos,
            stripped_setid=sorted({rel for x in infos for rel in x.stripped_setid}),
            stripped_caps=sorted({rel for x in infos for rel in x.stripped_caps}),
        )

    def _ensure(
        self, files: source.Files, layer: source.Layer, applied: Applied, made: list[str]
    ) -> LayerInfo:
        dest = self.path(layer.diff_id)
        if dest.is_dir() and self._meta(layer.diff_id).is_file():
            info = LayerInfo.model_validate_json(self._meta(layer.diff_id).read_text())
            return info.model_copy(update={"digest": layer.digest or info.digest})
        shutil.rmtree(dest, ignore_errors=True)  # one an interrupted import left unrecorded
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        dest.parent.chmod(0o711)  # containers' mapped roots traverse to their lower dirs
        staging = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o755)
        staging.chmod(0o755)  # the layer's "/" (the daemon's umask is 077)
        try:
            before = (
                applied.entries,
                applied.bytes,
                len(applied.stripped),
                len(applied.stripped_caps),
            )
            with source.layer_stream(files, layer) as stream:
                apply_layer(stream, staging, self.limits, applied)  # type: ignore[arg-type]
                source.finish(stream, layer)
            info = LayerInfo(
                diff_id=layer.diff_id,
                digest=layer.digest,
                size_bytes=applied.bytes - before[1],
                entries=applied.entries - before[0],
                stripped_setid=applied.stripped[before[2] :],
                stripped_caps=applied.stripped_caps[before[3] :],
            )
            self._meta(layer.diff_id).write_text(info.model_dump_json())
            os.rename(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        made.append(layer.diff_id)
        return info

    def _remove(self, diff_id: str) -> None:
        shutil.rmtree(self.path(diff_id), ignore_errors=True)
        self._meta(diff_id).unlink(missing_ok=True)

    def layers(self) -> list[str]:
        """Every layer stored here (``sha256:...``)."""
        found = self.root / "sha256"
        if not found.is_dir():
            return []
        return sorted(
            f"sha256:{p.name}" for p in found.iterdir() if p.is_dir() and p.name[0] != "."
        )

    def collect(self, keep: set[str]) -> list[str]:
        """Remove every layer not in ``keep`` (the ones images still use); the removed."""
        gone = [d for d in self.layers() if d not in keep]
        for diff_id in gone:
            self._remove(diff_id)
        return gone
