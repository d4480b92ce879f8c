"""Recipes ``container-tiny`` and ``container-debian-12``: container root file system tarballs.

Owns the tarballs' content (``<images>/<name>.rootfs.tar``, written through the
image store's builder interface) and the init every container image gets as
``/sbin/init``: a POSIX shell script that keeps a shell on the console, reaps
orphans, ends every process on SIGTERM (the graceful stop) and runs DHCP
(busybox ``udhcpc``) on each ``ethN`` the platform moved into its network
namespace. ``container-tiny`` is the busybox the tiny VM recipe caches;
``container-debian-12`` is the shared cached debootstrap (minbase). Must not
know about instances or runtimes: extracting and mounting a rootfs is the driver's.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

from virtfleet.errors import ImageError
from virtfleet.storage.builders import Progress, no_progress
from virtfleet.storage.builders.debootstrap import Debootstrap, cached_root
from virtfleet.storage.builders.debs import busybox_applets, cached_busybox
from virtfleet.storage.builders.files import write_atomic
from virtfleet.storage.builders.kernel import guest_file

ROOTFS_SUFFIX = ".rootfs.tar"
DEBIAN_SUITE = "bookworm"
#: Left out of the debian-12 tarball: downloaded packages (debootstrap keeps them).
DEBIAN_SKIPPED = frozenset({"var/cache/apt/archives"})

INIT_SCRIPT = """#!/bin/sh
# virtfleet container init (PID 1): a shell on the console, orphans reaped,
# every process ended on SIGTERM (PID 1 has no default signal handlers).
trap '' HUP
stop() {
    echo "virtfleet-init: stopping"
    kill -TERM -1 2>/dev/null; sleep 1; kill -KILL -1 2>/dev/null
    exit 0
}
trap stop TERM INT
DHCP_SCRIPT=/usr/share/udhcpc/default.script
HOSTNAME=$(cat /proc/sys/kernel/hostname)
console() {
    while :; do setsid -c /bin/sh -l </dev/console >/dev/console 2>&1; sleep 1; done
}
# Network NICs (veths the platform moved in as eth0, eth1...): up, DHCP in the background.
for ifc in $(sed -n 's/^ *\\(eth[0-9]*\\):.*/\\1/p' /proc/net/dev); do
    ip link set "$ifc" up 2>/dev/null
    command -v udhcpc >/dev/null || continue
    udhcpc -f -i "$ifc" -s "$DHCP_SCRIPT" -x "hostname:$HOSTNAME" >/dev/null 2>&1 &
done
[ -x /etc/rc.local ] && /etc/rc.local
echo "virtfleet-init: $HOSTNAME up"
if [ -t 0 ]; then console & fi
while :; do sleep 2147483647 & wait; done
"""

ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    "etc/profile": 'export PS1="\\h:\\w# "\n',
}
TINY_DIRS = (  # every directory explicit: an implicit one is extracted 0700 under umask 077
    "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "tmp",
    "root", "usr/share", "usr/share/udhcpc",
)  # fmt: skip


def _tar_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _tar_entry(tar: tarfile.TarFile, name: str, kind: bytes, mode: int, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    tar.addfile(info)


def write_tiny_tar(out: Path, busybox: Path) -> None:
    """The busybox rootfs as a tar (root-owned, mtime 0): applet links, /etc, the init."""
    with tarfile.open(out, "w") as tar:
        for directory in TINY_DIRS:
            _tar_entry(tar, directory, tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755)
        _tar_file(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        own = {"bin/busybox", "sbin/init", "linuxrc"}  # the binary itself, and our init
        for applet in sorted(set(busybox_applets(busybox)) - own):
            target = os.path.relpath("bin/busybox", os.path.dirname(applet))
            _tar_entry(tar, applet, tarfile.SYMTYPE, 0o777, target)
        for name, text in ETC_FILES.items():
            _tar_file(tar, name, text.encode(), 0o644)
        _tar_file(tar, "sbin/init", INIT_SCRIPT.encode(), 0o755)
        # The tiny VM's lease script: sets the address and route, logs the lease on the console.
        _tar_file(tar, "usr/share/udhcpc/default.script", guest_file("udhcpc"), 0o755)


def build_tiny_rootfs(out: Path, cache_dir: Path, progress: Progress | None = None) -> None:
    """Image builder ``container-tiny``: busybox (cached by the tiny VM recipe) + init."""
    report = progress or no_progress
    report(10, "fetching busybox")
    with tempfile.TemporaryDirectory(prefix=".rootfs-", dir=cache_dir) as work:
        busybox = cached_busybox(cache_dir / "tiny", Path(work))
    write_atomic(out, lambda tmp: write_tiny_tar(tmp, busybox), mode=0o600)
    report(100, "tiny container rootfs ready")


def build_debian_rootfs(out: Path, cache_dir: Path, progress: Progress | None = None) -> None:
    """Image builder ``container-debian-12``: the cached debootstrap minbase tree + init."""
    report = progress or no_progress
    spec = Debootstrap(DEBIAN_SUITE)
    report(5, f"debootstrap --variant=minbase {DEBIAN_SUITE} from {spec.mirror} (cached; minutes)")
    root = cached_root(spec, cache_dir)
    report(80, "writing the debian-12 rootfs tarball")
    write_atomic(out, lambda tmp: write_tree_tar(tmp, root), mode=0o600)
    report(100, "debian-12 container rootfs ready")


def write_tree_tar(out: Path, root: Path) -> None:
    """``root`` as a tar, without ``DEBIAN_SKIPPED`` and with the init at ``/sbin/init``."""
    init = f"{_inside(root, 'sbin')}/init"

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if info.name in DEBIAN_SKIPPED or info.name == init else info

    with tarfile.open(out, "w") as tar:
        for entry in sorted(root.iterdir()):
            tar.add(entry, arcname=entry.name, filter=keep)
        _tar_file(tar, init, INIT_SCRIPT.encode(), 0o755)


def _inside(root: Path, path: str) -> str:
    """Directory ``path`` in the tree, its symlinks resolved (merged-/usr: ``sbin`` is
    ``usr/sbin``), relative to the tree."""
    real = Path(os.path.realpath(root / path))
    if not real.is_relative_to(root.resolve()):
        raise ImageError(f"/{path} in {root} leads out of the tree")
    return str(real.relative_to(root.resolve()))
