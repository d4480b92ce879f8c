"""A container's ``config.json`` (and an app container's ``/.virtfleet``), written once.

Owns deciding whether the bundle a container was last started from still holds: each
written config.json is remembered with the key it was made of — the spec, the id range,
the imported image's description (its file stamp: an import writes a new file) and, when
the image's user is a name, the stamps of the container's ``/etc/passwd`` and
``/etc/group`` (the uid is looked up there) — and with its own stamp. A start whose key
and file are unchanged writes nothing: rewriting an existing file on ext4 flushes it
(``auto_da_alloc``), several ms of a start. An app container's ``/.virtfleet`` is checked
the same way (owner, mode, the init script's stamp; the command may write there) and only
its exit code removed. Must not mount or run anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from virtfleet.drivers.oci import appimage
from virtfleet.drivers.oci.bundle import BundleOptions, IdMap, build_config
from virtfleet.model.instance import InstanceSpec

CONFIG = "config.json"
INIT_ARGS = (f"{appimage.APP_DIR}/busybox", "sh", f"{appimage.APP_DIR}/init")


@dataclass(frozen=True)
class ImageRef:
    """An imported image as loaded for one start: its content and its description's stamp."""

    image: appimage.OciImageRun
    stamp: str


@dataclass(frozen=True)
class _Written:
    key: tuple[object, ...]
    config: str  # config.json's stamp once written
    app: appimage.AppDirState | None  # the prepared /.virtfleet (app containers)


def stamp(path: Path) -> str:
    """Size, modification time and inode of ``path`` (a rewrite or replacement changes
    it); "" if it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


class BundleWriter:
    """Writes each container's config.json under ``/<cgroup_parent>/<name>`` cgroups."""

    def __init__(self, cgroup_parent: str) -> None:
        self.cgroup_parent = cgroup_parent
        self._written: dict[str, _Written] = {}

    def forget(self, name: str) -> None:
        """Write ``name``'s bundle again at its next start (it was deleted or changed)."""
        self._written.pop(name, None)

    def write(
        self,
        spec: InstanceSpec,
        bundle: Path,
        rootfs: Path,
        userns: IdMap | None,
        image: ImageRef | None,
    ) -> None:
        """``bundle/config.json`` for ``spec`` (and ``bundle/app`` for an application
        container), unless the one there was written from the same inputs."""
        app = image is not None and appimage.mode(spec, True) == "app"
        user = image.image.config.get("user", "") if image is not None and app else ""
        key = (spec, userns, image.stamp if image else None, appimage.user_stamp(user, rootfs))
        path, app_dir = bundle / CONFIG, bundle / "app"
        done = self._written.get(spec.name)
        self._written.pop(spec.name, None)  # until both are known good again
        if done is not None and done.key == key and done.config == stamp(path):
            state = done.app
            if state is None or appimage.reset_app_dir(app_dir, state):
                self._written[spec.name] = done
                return
        opts = BundleOptions(
            rootfs=rootfs, cgroups_path=f"/{self.cgroup_parent}/{spec.name}", userns=userns
        )
        state = None
        if image is not None and app:
            opts, state = _app_options(spec, opts, image.image, userns, app_dir)
        # Compact: json's C encoder only runs without indent (~1 ms less per start).
        path.write_text(json.dumps(build_config(spec, opts), separators=(",", ":")))
        self._written[spec.name] = _Written(key, stamp(path), state)


def _app_options(
    spec: InstanceSpec,
    opts: BundleOptions,
    image: appimage.OciImageRun,
    userns: IdMap | None,
    app_dir: Path,
) -> tuple[BundleOptions, appimage.AppDirState]:
    """An application container's process: the image's command under the small init."""
    config = image.config
    argv = appimage.app_args(spec, config)
    uid, gid = appimage.app_user(config.get("user", ""), opts.rootfs)
    shift = userns.host_id if userns else 0
    binds, state = appimage.prepare_app_dir(app_dir, (shift + uid, shift + gid))
    options = replace(
        opts,
        args=(*INIT_ARGS, *argv),
        env=tuple(appimage.app_env(spec, config)),
        cwd=config.get("working_dir") or "/",
        user=(uid, gid),
        binds=binds,
    )
    return options, state
