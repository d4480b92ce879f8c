"""Single Debian packages for the builders, fetched with the host's ``apt-get download``.

Owns the ``.deb`` cache (``<cache>/debs``), unpacking with ``dpkg-deb`` and the
static busybox binary the tiny VM and the tiny container share
(``<cache>/busybox``, with ``<cache>`` the tiny image's cache directory).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from virtfleet.errors import ImageError, ProcessError
from virtfleet.storage.builders.files import write_atomic
from virtfleet.storage.builders.run import run

BUSYBOX_PACKAGE = "busybox-static"


def fetch_deb(package: str, debs: Path) -> Path:
    """Return the cached ``.deb`` of ``package``, downloading it if absent."""
    debs.mkdir(parents=True, exist_ok=True)
    cached = sorted(debs.glob(f"{package}_*.deb"))
    if cached:
        return cached[-1]
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=debs))
    try:
        run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", package], cwd=staging)
        found = sorted(staging.glob(f"{package}_*.deb"))
        if not found:
            raise ImageError(f"apt-get download {package} produced no .deb")
        dest = debs / found[0].name
        found[0].replace(dest)
        return dest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_current(package_of: Callable[[], str], debs: Path) -> Path:
    """Fetch ``package_of()``; on failure refresh apt's lists once, re-resolve and retry.

    Stale lists can name a version the archive no longer serves (security
    updates replace the kernel), and fresh machines may have no lists at all.
    """
    try:
        return fetch_deb(package_of(), debs)
    except ProcessError:
        run(["apt-get", "update", "-qq"])
        return fetch_deb(package_of(), debs)


def depends_on(metapackage: str, prefix: str) -> str:
    """The first dependency of ``metapackage`` (in apt's lists) named ``prefix...``."""
    text = run(["apt-cache", "show", "--no-all-versions", metapackage])
    for line in text.splitlines():
        if line.startswith("Depends:"):
            for dep in line.removeprefix("Depends:").split(","):
                name = dep.split()[0] if dep.split() else ""
                if name.startswith(prefix):
                    return name
    raise ImageError(f"cannot tell which {prefix}* package {metapackage} depends on")


def extract_deb(deb: Path, dest: Path) -> None:
    run(["dpkg-deb", "-x", deb, dest])


def cached_busybox(cache: Path, work: Path) -> Path:
    """The static busybox binary from the ``busybox-static`` package, cached in ``cache``."""
    dest = cache / "busybox"
    if not dest.is_file():
        unpacked = work / "busybox-deb"
        extract_deb(fetch_current(lambda: BUSYBOX_PACKAGE, cache / "debs"), unpacked)
        write_atomic(dest, lambda tmp: shutil.copyfile(unpacked / "bin/busybox", tmp), 0o755)
    return dest


def busybox_applets(busybox: Path) -> list[str]:
    """Applet paths relative to ``/`` (``sbin/init``, ``usr/bin/awk``, ...)."""
    applets = run([busybox, "--list-full"]).split()
    return [a for a in applets if a and not a.startswith("/") and ".." not in a]
