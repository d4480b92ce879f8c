"""Applying one untrusted image layer (a tar stream) to its own directory, safely.

Owns the translation of OCI whiteouts into overlayfs' own form (``.wh.NAME`` → a 0/0
character device ``NAME``; ``.wh..wh..opq`` → the ``trusted.overlay.opaque`` xattr
on its directory), so extracted layers stack as overlay lower dirs unchanged, and
every refusal of a hostile layer: names that are absolute or hold ``..``, writes
through a symlink, hard links out of the layer, device nodes (those under ``dev/``,
as tarballs of a root file system hold, are left out: the runtime mounts a fresh
``/dev``), more entries or bytes than the limits. Setuid/setgid bits outside
``SETID_ALLOWED`` are stripped (and reported); so are file capabilities (the
``security.capability`` xattr of a PAX header), which are applied only to those same
files and only in a form valid for the image's own root (any other xattr is dropped:
a layer's ``trusted.overlay.*`` would forge whiteouts). Owners are kept as numeric ids,
unshifted. Must not decompress or verify digests (the caller hands a verified
stream) and must not know where layers live.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from virtfleet.errors import UnsafeImageError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
SETID_ALLOWED = frozenset(
    {
        "bin/su",
        "usr/bin/su",
        "bin/mount",
        "bin/umount",
        "usr/bin/mount",
        "usr/bin/umount",
        "bin/ping",
        "usr/bin/ping",
        "usr/bin/passwd",
        "usr/bin/chsh",
        "usr/bin/chfn",
        "usr/bin/gpasswd",
        "usr/bin/newgrp",
        "usr/bin/sudo",
        "usr/bin/expiry",
        "usr/bin/chage",
        "usr/bin/wall",
        "sbin/unix_chkpwd",
        "usr/sbin/unix_chkpwd",
    }
)
CHUNK = 1 << 20
CAP_XATTR = "security.capability"
PAX_CAP = "SCHILY.xattr." + CAP_XATTR  # how docker, buildkit and GNU tar write it
CAP_V2, CAP_V3 = 0x02000000, 0x03000000  # vfs_cap_data revisions (linux/capability.h)
CAP_V2_SIZE, CAP_V3_SIZE = 20, 24


@dataclass(frozen=True)
class Limits:
    """What one image may hold: entries and bytes over all its layers, one file's bytes."""

    max_entries: int = 1_000_000
    max_bytes: int = 64 << 30
    max_file_bytes: int = 16 << 30


@dataclass
class Applied:
    """What applying layers counted (shared across an image's layers for the limits)."""

    entries: int = 0
    bytes: int = 0
    stripped: list[str] = field(default_factory=list)  # setuid/setgid bits removed
    stripped_caps: list[str] = field(default_factory=list)  # file capabilities not applied
    skipped_dev: list[str] = field(default_factory=list)  # device nodes under /dev, left out


def refuse(reason: str, message: str) -> UnsafeImageError:
    """A hostile-layer error: ``reason`` is the stable tag (also in ``details``)."""
    return UnsafeImageError(f"{message} ({reason})", reason=reason)


def apply_layer(
    stream: IO[bytes], dest: Path, limits: Limits, applied: Applied | None = None
) -> Applied:
    """Extract the tar ``stream`` into the empty directory ``dest``; raises
    ``UnsafeImageError`` on the first hostile entry (the caller removes ``dest``)."""
    counts = applied if applied is not None else Applied()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            dirs: list[tuple[Path, tarfile.TarInfo]] = []
            for member in archive:
                _count(member, counts, limits)
                _apply(archive, member, dest, counts, dirs)
            for path, member in reversed(dirs):  # after their contents: mtimes stick
                os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
    except tarfile.TarError as err:
        raise UnsafeImageError(
            f"layer is not a valid tar archive: {err}", reason="bad_tar"
        ) from err
    return counts


def _count(member: tarfile.TarInfo, counts: Applied, limits: Limits) -> None:
    counts.entries += 1
    if counts.entries > limits.max_entries:
        raise refuse("too_many_entries", f"image has more than {limits.max_entries} entries")
    if member.isreg():
        if member.size > limits.max_file_bytes:
            raise refuse("too_large", f"{member.name!r} is larger than {limits.max_file_bytes}")
        counts.bytes += member.size
        if counts.bytes > limits.max_bytes:
            raise refuse("too_large", f"image holds more than {limits.max_bytes} bytes")


def clean_name(name: str) -> PurePosixPath | None:
    """The entry's path relative to the root, None for the root itself; refuses absolute
    names and ``..`` (a layer's entries stay inside its root)."""
    if name.startswith("/"):
        raise refuse("path_escape", f"entry {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refuse("path_escape", f"entry {name!r} leaves the root through '..'")
    return PurePosixPath(*parts) if parts else None


def _parent_dir(dest: Path, rel: PurePosixPath) -> Path:
    """``dest/rel``'s parent, made (0755, root's) where missing; never through a symlink."""
    current = dest
    for part in rel.parent.parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            _mkdir(current)
            continue
        if stat.S_ISLNK(mode):
            raise refuse("symlink_escape", f"entry {str(rel)!r} is written through a symlink")
        if not stat.S_ISDIR(mode):
            os.unlink(current)  # a later entry's directory replaces a file
            _mkdir(current)
    return current


def _mkdir(path: Path) -> None:
    """A directory the layer did not list: 0755 whatever the daemon's umask (077 would
    hide what the overlay shows from the container's other users)."""
    os.mkdir(path, 0o755)
    os.chmod(path, 0o755)


def _apply(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    dest: Path,
    counts: Applied,
    dirs: list[tuple[Path, tarfile.TarInfo]],
) -> None:
    rel = clean_name(member.name)
    if rel is None:
        if member.isdir():
            _owner_mode(dest, member, counts, rel="")
        return
    if member.isdev() and rel.parts[0] == "dev":
        counts.skipped_dev.append(str(rel))  # the runtime mounts a fresh /dev over it
        return
    parent = _parent_dir(dest, rel)
    base = rel.name
    if base == OPAQUE:
        os.setxattr(parent, OPAQUE_XATTR, b"y")
        return
    if base.startswith(WHITEOUT):
        target = parent / base[len(WHITEOUT) :]
        _clear(target)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return
    path = parent / base
    if member.isdir():
        if not os.path.isdir(path) or os.path.islink(path):
            _clear(path)
            _mkdir(path)
        dirs.append((path, member))
        _owner_mode(path, member, counts, str(rel))
        return
    _clear(path)
    if member.isreg():
        _write(archive, member, path)
    elif member.issym():
        os.symlink(member.linkname, path)
    elif member.islnk():
        _hardlink(dest, member, path)
    elif member.isfifo():
        os.mkfifo(path, 0o600)
    elif member.isdev():
        raise refuse("device_node", f"entry {member.name!r} is a device node")
    else:
        raise refuse("bad_entry", f"entry {member.name!r} has unknown type {member.type!r}")
    _owner_mode(path, member, counts, str(rel))
    if PAX_CAP in member.pax_headers:
        _file_caps(path, member, counts, str(rel))  # after the chown, which would clear it
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def _clear(path: Path) -> None:
    """Remove what ``path`` holds (an entry the same layer repeats replaces the first)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _write(archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    source = archive.extractfile(member)
    assert source is not None  # a regular file always has a body
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
        shutil.copyfileobj(source, out, CHUNK)


def _hardlink(dest: Path, member: tarfile.TarInfo, path: Path) -> None:
    """A hard link to a file this layer already holds (never one outside ``dest``)."""
    target_rel = clean_name(member.linkname)
    if target_rel is None:
        raise refuse("path_escape", f"hard link {member.name!r} points at the root")
    target = _parent_dir(dest, target_rel) / target_rel.name
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        message = f"hard link {member.name!r} to missing {member.linkname!r}"
        raise refuse("bad_link", message) from None
    if not stat.S_ISREG(mode):
        raise refuse("bad_link", f"hard link {member.name!r} to non-file {member.linkname!r}")
    os.link(target, path, follow_symlinks=False)


def _owner_mode(path: Path, member: tarfile.TarInfo, counts: Applied, rel: str) -> None:
    """Numeric owner and mode of the entry; setuid/setgid stripped off the allow-list."""
    os.lchown(path, member.uid, member.gid)
    if member.issym():
        return  # a symlink's mode means nothing (and chmod would follow it)
    mode = member.mode & 0o7777
    if mode & (stat.S_ISUID | stat.S_ISGID) and not member.isdir() and rel not in SETID_ALLOWED:
        mode &= ~(stat.S_ISUID | stat.S_ISGID)
        counts.stripped.append(rel)
    os.chmod(path, mode)


def _file_caps(path: Path, member: tarfile.TarInfo, counts: Applied, rel: str) -> None:
    """Set the entry's file capabilities if it is an allowed file and they are valid for
    the image's root; otherwise leave them off and report it."""
    raw = member.pax_headers[PAX_CAP].encode("utf-8", "surrogateescape")
    value = _caps_for_image_root(raw)
    if value is None or not member.isreg() or rel not in SETID_ALLOWED:
        counts.stripped_caps.append(rel)
        return
    os.setxattr(path, CAP_XATTR, value, follow_symlinks=False)


def _caps_for_image_root(raw: bytes) -> bytes | None:
    """``raw`` as a revision-2 ``vfs_cap_data`` (capabilities for whoever is root where
    the file is seen), None if it is malformed or names another namespace's root."""
    if len(raw) < 4:
        return None
    revision = int.from_bytes(raw[:4], "little") & 0xFF000000
    if revision == CAP_V2 and len(raw) == CAP_V2_SIZE:
        return raw
    if revision == CAP_V3 and len(raw) == CAP_V3_SIZE and raw[20:] == bytes(4):
        flags = int.from_bytes(raw[:4], "little") & 0x00FFFFFF
        return (CAP_V2 | flags).to_bytes(4, "little") + raw[4:20]
    return None
