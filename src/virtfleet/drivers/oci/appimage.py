"""Containers of imported OCI images: their root file system and their process.

Owns reading an imported image's description (``<images>/<name>.oci.json``: lower
dirs and run config), mounting its shared layers under one container's id range
(through an idmapped view of the layer store, unmounted once the overlay holds the
layers), and what an application container runs: the image's entrypoint + cmd (or
``spec.cmd``) with its env (plus ``spec.env``), working dir and user, under
``INIT_SCRIPT`` — the host's static busybox running a small PID 1 that forwards
signals, reaps orphans and records the command's exit code in ``/.virtfleet/exit``.
Must not run the runtime.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtfleet.drivers.oci import idmap, layers
from virtfleet.drivers.oci.bundle import PATH_ENV, IdMap
from virtfleet.errors import HostError, ImageError, InvalidInputError
from virtfleet.model.instance import InstanceSpec

APP_DIR = "/.virtfleet"  # in the container: the init, busybox and the exit code
EXIT_FILE = "exit"
BUSYBOX = "/bin/busybox"  # Debian's busybox-static: runs in any image, no libc needed
Binds = tuple[tuple[str, str, bool], ...]  # (destination, host source, read-only)
SIGNALS = "TERM INT HUP QUIT USR1 USR2 WINCH"
INIT_SCRIPT = f"""# virtfleet application init (PID 1): runs the image's command as its child,
# forwards signals to it, reaps orphans (ash's wait reaps every child) and records
# the command's exit code, then exits with it. Job control on (the console is our
# controlling tty): without it a background job starts with SIGINT and SIGQUIT ignored,
# and its command could never act on them. Its stdin stays /dev/null, as before: a
# background process group reading the tty would be stopped.
B={APP_DIR}/busybox
G={APP_DIR}/gate
$B rm -f $G && $B mkfifo -m 600 $G
set -m 2>/dev/null
( read -r _ <$G; exec "$@" ) </dev/null &
child=$!
# Job control off again before the command may end (it waits at the gate): with it on,
# ash reports a finished job ("Done(3)") and forgets it, so its code was lost.
set +m 2>/dev/null
: >$G
$B rm -f $G
for s in {SIGNALS}; do trap "$B kill -$s $child 2>/dev/null" "$s"; done
code=0
while $B kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
wait "$child" 2>/dev/null && code=0 || {{ c=$?; [ "$c" -ne 127 ] && code=$c; }}
echo "$code" > {APP_DIR}/{EXIT_FILE}.tmp && $B mv {APP_DIR}/{EXIT_FILE}.tmp {APP_DIR}/{EXIT_FILE}
exit "$code"
"""


@dataclass(frozen=True)
class OciImageRun:
    lowers: list[Path]  # lowest first
    config: dict[str, Any] = field(default_factory=dict)


def load(meta: Path) -> OciImageRun:
    """The imported image described at ``meta``."""
    try:
        doc = json.loads(meta.read_text())
        return OciImageRun([Path(p) for p in doc["lowers"]], doc["image"]["config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ImageError(f"imported image description {meta} is unreadable: {err}") from err


def mode(spec: InstanceSpec, is_oci: bool) -> str:
    """``app`` or ``system``: as the spec says; by default app for imported images."""
    return spec.container_mode or ("app" if is_oci else "system")


def mount_rootfs(image: OciImageRun, layer: Path, target: Path, userns: IdMap | None) -> None:
    """The overlay of the image's layers (seen through ``userns``' range) and the
    container's own ``upper``/``work`` in ``layer``, mounted at ``target``."""
    shift = userns.host_id if userns else 0
    upper, work = layers.prepare_layer(layer, shift)
    missing = [p for p in image.lowers if not p.is_dir()]
    if missing:
        raise ImageError(f"image layer {missing[0]} is missing: import the image again")
    if userns is None:
        layers.mount_overlay_lowers(image.lowers, upper, work, target)
        return
    store = image.lowers[0].parent  # every layer lives in the store's sha256/ directory
    view = layer / "lower-view"
    view.mkdir(mode=0o700, exist_ok=True)
    idmap.detach(view)  # one a crash left
    idmap.mount_idmapped(store, view, userns.host_id, userns.size)
    try:
        lowers = [view / p.name for p in image.lowers]
        layers.mount_overlay_lowers(lowers, upper, work, target)
    finally:
        idmap.detach(view)  # the overlay keeps its own clones of the layers
        view.rmdir()  # fails if still mounted: nothing may ever remove files through it


def app_args(spec: InstanceSpec, config: dict[str, Any]) -> list[str]:
    """The command an application container runs: entrypoint + (``spec.cmd`` or cmd)."""
    argv = [
        *config.get("entrypoint", []),
        *(spec.cmd if spec.cmd is not None else config.get("cmd", [])),
    ]
    if not argv:
        raise InvalidInputError(
            f"image {spec.image!r} has no entrypoint or cmd: give the container a cmd"
        )
    return argv


def app_env(spec: InstanceSpec, config: dict[str, Any]) -> list[str]:
    """The image's environment with ``spec.env`` on top (same key: the spec's wins)."""
    env: dict[str, str] = {"PATH": PATH_ENV.removeprefix("PATH="), "HOSTNAME": spec.name}
    for item in [*config.get("env", []), *spec.env]:
        key, _, value = item.partition("=")
        env[key] = value
    return [f"{k}={v}" for k, v in env.items()]


def app_user(user: str, rootfs: Path) -> tuple[int, int]:
    """``user`` (``uid[:gid]`` or names, as the image says) as numbers, names looked up
    in the container's /etc/passwd and /etc/group (never through its symlinks)."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    uid, gid = _lookup(rootfs, "passwd", name)
    if group:
        gid = _lookup(rootfs, "group", group)[0]
    return uid, gid


def _lookup(rootfs: Path, table: str, name: str) -> tuple[int, int]:
    if name.isdigit():
        return int(name), int(name) if table == "group" else 0
    for line in _read_in_root(rootfs, f"etc/{table}").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == name and fields[2].isdigit():
            second = fields[3] if table == "passwd" else fields[2]
            return int(fields[2]), int(second) if second.isdigit() else 0
    raise InvalidInputError(f"user or group {name!r} is not in the image's /etc/{table}")


def user_stamp(user: str, rootfs: Path) -> str:
    """What ``app_user(user, rootfs)`` depends on beyond ``user``: the stamps of the
    container's /etc/passwd and /etc/group when a name is looked up, else ""."""
    if all(part.isdigit() for part in user.split(":") if part):
        return ""  # numbers (or no user): nothing is looked up
    return "|".join(_stamp_in_root(rootfs, f"etc/{table}") for table in ("passwd", "group"))


def _stamp_in_root(rootfs: Path, rel: str) -> str:
    fd = _open_in_root(rootfs, rel)
    if fd is None:
        return ""
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return f"{st.st_mode}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _open_in_root(rootfs: Path, rel: str) -> int | None:
    """A file of the container's tree opened read-only, every component without following
    a symlink (the image's /etc/passwd may point at the host's); None if that fails."""
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        parts = rel.split("/")
        for part in parts[:-1]:
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = below
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_in_root(rootfs: Path, rel: str) -> str:
    """A small regular file of the container's tree (see ``_open_in_root``), "" if none."""
    leaf = _open_in_root(rootfs, rel)
    if leaf is None:
        return ""
    with os.fdopen(leaf, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return ""
        return f.read(1 << 20).decode(errors="replace")


@dataclass(frozen=True)
class AppDirState:
    """A prepared ``/.virtfleet`` as the host sees it: what the command could change."""

    owner: tuple[int, int]
    mode: int
    init: str  # the init script's mode, size, mtime and inode
    busybox: str  # the bind mount point's mode and inode


def app_dir_state(app_dir: Path) -> AppDirState | None:
    """``app_dir`` as it is now, None if part of it is missing."""
    try:
        top, init, box = (os.lstat(p) for p in (app_dir, app_dir / "init", app_dir / "busybox"))
    except OSError:
        return None
    return AppDirState(
        (top.st_uid, top.st_gid),
        top.st_mode,
        f"{init.st_mode}:{init.st_size}:{init.st_mtime_ns}:{init.st_ino}",
        f"{box.st_mode}:{box.st_ino}",
    )


def prepare_app_dir(app_dir: Path, owner: tuple[int, int]) -> tuple[Binds, AppDirState]:
    """The container's ``/.virtfleet`` (init script, busybox mount point; ``owner``, the
    command's host uid/gid, may write the exit code there), the bind mounts for it and
    its state once prepared (see ``reset_app_dir``)."""
    _need_busybox()
    app_dir.mkdir(mode=0o755, exist_ok=True)
    (app_dir / EXIT_FILE).unlink(missing_ok=True)
    init = app_dir / "init"
    init.unlink(missing_ok=True)  # a new file: the command may have made it a symlink
    init.write_text(INIT_SCRIPT)
    init.chmod(0o644)  # read by the container's (mapped) root: the daemon's umask is 077
    _regular_file(app_dir / "busybox")
    os.chown(app_dir, *owner)
    os.chmod(app_dir, 0o755)
    state = app_dir_state(app_dir)
    if state is None:
        raise HostError(f"{app_dir} changed while it was prepared")
    return _binds(app_dir), state


def reset_app_dir(app_dir: Path, prepared: AppDirState) -> bool:
    """Make a ``/.virtfleet`` prepared earlier (``prepared``) ready for another start (its
    last exit code removed); False, and nothing done, if it changed since."""
    _need_busybox()
    if app_dir_state(app_dir) != prepared:
        return False
    (app_dir / EXIT_FILE).unlink(missing_ok=True)
    return True


def _binds(app_dir: Path) -> Binds:
    return ((APP_DIR, str(app_dir), False), (f"{APP_DIR}/busybox", BUSYBOX, True))


def _regular_file(path: Path) -> None:
    """An (empty) regular file at ``path``, never written through a symlink there."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(os.lstat(path).st_mode):
            path.unlink()
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))


def _need_busybox() -> None:
    if not Path(BUSYBOX).is_file():
        raise HostError("application containers need Debian's busybox-static package")


def exit_code(app_dir: Path) -> int | None:
    """The exit code the application's init recorded, None if it recorded none."""
    with contextlib.suppress(OSError, ValueError):
        return int((app_dir / EXIT_FILE).read_text().strip())
    return None
