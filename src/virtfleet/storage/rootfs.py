"""Container root file system images: ``tiny`` (busybox) and ``debian-12`` (debootstrap).

Owns building them as tarballs (``<images>/<name>.rootfs.tar``) through the
image store's builder interface, and the init every container image gets as
``/sbin/init``: a POSIX shell script that keeps a shell on the console, reaps
orphans, ends every process on SIGTERM (the graceful stop) and runs DHCP
(busybox ``udhcpc``) on each ``ethN`` the platform moved into its network
namespace. The busybox binary is the one the tiny VM builder caches
(storage/tiny.py). Must not know
about instances or runtimes: extracting and mounting a rootfs is the driver's.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from virtfleet.errors import ImageError, ProcessError

Progress = Callable[[int, str], None]
ROOTFS_SUFFIX = ".rootfs.tar"
DEBIAN_SUITE = "bookworm"
DEBIAN_VERSION = "1"  # bump when the cached debian-12 tarball must be rebuilt
DEBOOTSTRAP_TIMEOUT_S = 1800

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
TINY_DIRS = [  # every directory explicit: an implicit one is extracted 0700 under umask 077
    "bin",
    "sbin",
    "usr",
    "usr/bin",
    "usr/sbin",
    "etc",
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "root",
    "usr/share",
    "usr/share/udhcpc",
]


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
    applets = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    with tarfile.open(out, "w") as tar:
        for directory in TINY_DIRS:
            _tar_entry(tar, directory, tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755)
        _tar_file(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        for applet in sorted(set(applets) - {"bin/busybox", "sbin/init", "linuxrc"}):
            target = os.path.relpath("bin/busybox", os.path.dirname(applet))
            _tar_entry(tar, applet, tarfile.SYMTYPE, 0o777, target)
        for name, text in ETC_FILES.items():
            _tar_file(tar, name, text.encode(), 0o644)
        _tar_file(tar, "sbin/init", INIT_SCRIPT.encode(), 0o755)
        # The tiny VM's lease script: sets the address and route, logs the lease on the console.
        script = resources.files("virtfleet.storage").joinpath("guest", "udhcpc").read_bytes()
        _tar_file(tar, "usr/share/udhcpc/default.script", script, 0o755)


def build_tiny_rootfs(out: Path, cache_dir: Path, progress: Progress | None = None) -> None:
    """Image builder ``container-tiny``: busybox (cached by the tiny VM builder) + init."""
    from virtfleet.storage import tiny

    report = progress or (lambda pct, msg: None)
    report(10, "fetching busybox")
    with tempfile.TemporaryDirectory(prefix=".rootfs-", dir=cache_dir) as work:
        busybox = tiny._cached_busybox(cache_dir / "tiny", Path(work))
    _atomic(out, lambda tmp: write_tiny_tar(tmp, busybox))
    report(100, "tiny container rootfs ready")


def build_debian_rootfs(out: Path, cache_dir: Path, progress: Progress | None = None) -> None:
    """Image builder ``container-debian-12``: debootstrap minbase, cached as a tarball."""
    report = progress or (lambda pct, msg: None)
    cached = cache_dir / "oci" / f"debian-12-minbase-{DEBIAN_VERSION}.tar"
    if not cached.is_file():
        if shutil.which("debootstrap") is None:
            raise ImageError("building debian-12 needs debootstrap; run scripts/bootstrap.sh")
        report(5, "debootstrap --variant=minbase bookworm (minutes)")
        cached.parent.mkdir(parents=True, exist_ok=True)
        _atomic(cached, _debootstrap_tar)
    report(90, "copying the cached debian-12 rootfs")
    _atomic(out, lambda tmp: _copy(cached, tmp))
    report(100, "debian-12 container rootfs ready")


def _debootstrap_tar(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=".debootstrap-", dir=out.parent) as work:
        root = Path(work) / "root"
        _run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(root)])
        (root / "sbin/init").unlink(missing_ok=True)
        (root / "sbin/init").write_text(INIT_SCRIPT)
        (root / "sbin/init").chmod(0o755)
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        with tarfile.open(out, "w") as tar:
            for entry in sorted(root.iterdir()):
                tar.add(entry, arcname=entry.name)


def _copy(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)


def _run(argv: list[str]) -> None:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ProcessError(f"{argv[0]} failed: {err}") from err
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ProcessError(f"{argv[0]} failed (exit {proc.returncode}): {tail}")


def _atomic(dest: Path, write: Callable[[Path], None]) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
