"""Idmapped mounts: a shared, host-owned tree seen through one container's id range.

Owns making a user namespace with a given mapping (a short-lived child that unshares,
whose maps we write), and mounting a directory idmapped into that range
(``open_tree`` + ``mount_setattr(MOUNT_ATTR_IDMAP)`` + ``move_mount``, Linux >= 5.12;
overlayfs accepts such mounts as lower layers from 5.19). Layers extracted once with
their image's own owners are then shared by containers with different ranges: each
overlay gets its lower dirs through its own idmapped view, which may be unmounted as
soon as the overlay is mounted (overlayfs keeps private clones of its layers). Must
not know about images or containers.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
from pathlib import Path

from virtfleet.errors import HostError

SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442  # x86_64 and arm64 alike
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 4
MOUNT_ATTR_IDMAP = 0x100000
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _fail(what: str) -> HostError:
    return HostError(f"idmapped mount: {what} failed: {os.strerror(ctypes.get_errno())}")


def userns_fd(host_id: int, size: int) -> int:
    """A descriptor of a new user namespace mapping ids 0..size-1 to ``host_id``...; the
    process that made it is gone when this returns (the descriptor keeps the namespace).
    util-linux ``unshare`` makes it (no fork of this threaded process)."""
    argv = ["unshare", "--user", "sh", "-c", "echo ready; exec sleep 600"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline() != b"ready\n":
            raise HostError("idmapped mount: cannot create a user namespace")
        for kind in ("uid_map", "gid_map"):
            Path(f"/proc/{proc.pid}/{kind}").write_text(f"0 {host_id} {size}\n")
        return os.open(f"/proc/{proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def mount_idmapped(source: Path, target: Path, host_id: int, size: int) -> None:
    """Bind ``source`` at ``target`` (an existing directory) with ids shifted by
    ``host_id`` (file owner 0 appears as ``host_id``)."""
    ns = userns_fd(host_id, size)
    tree = -1
    try:
        tree = _libc.syscall(
            SYS_OPEN_TREE, AT_FDCWD, bytes(source), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
        )
        if tree < 0:
            raise _fail(f"open_tree {source}")
        attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, ns)
        size_of = ctypes.sizeof(attr)
        if _libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr), size_of):
            raise _fail(f"mount_setattr {source}")
        flags = MOVE_MOUNT_F_EMPTY_PATH
        if _libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, bytes(target), flags) != 0:
            raise _fail(f"move_mount to {target}")
    finally:
        os.close(ns)
        if tree >= 0:
            os.close(tree)


def detach(target: Path) -> None:
    """Lazily unmount ``target`` if it is a mount point (``os.path.ismount`` cannot tell a
    bind mount of the same file system: umount2 is asked and "not a mount" accepted)."""
    if _libc.umount2(bytes(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise HostError(f"unmounting {target} failed: {os.strerror(err)}")
