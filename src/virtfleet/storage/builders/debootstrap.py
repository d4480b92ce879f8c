"""Root trees made by ``debootstrap``, cached and shared by every recipe that needs one.

A tree is keyed by everything that decides its content: suite, variant, mirror
(``VIRTFLEET_DEBIAN_MIRROR``, read at each build, default deb.debian.org) and
the extra packages. It lives at ``<cache>/debootstrap/<key>/root`` with a
``spec`` file naming what it was made from, written last (the tree is complete
when ``spec`` exists). The cached tree is read-only: a recipe that changes
files works on ``working_copy``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from virtfleet.errors import ProcessError
from virtfleet.storage.builders.files import cached_dir
from virtfleet.storage.builders.run import require_tools, run

MIRROR_ENV = "VIRTFLEET_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_TIMEOUT_S = 1800.0
SPEC_FILE = "spec"


def debian_mirror() -> str:
    """The Debian mirror debootstrap downloads from (``VIRTFLEET_DEBIAN_MIRROR``)."""
    return os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR


@dataclass(frozen=True)
class Debootstrap:
    """One debootstrap run: its arguments are its cache key."""

    suite: str
    variant: str = "minbase"
    packages: tuple[str, ...] = ()
    mirror: str = field(default_factory=debian_mirror)

    def describe(self) -> str:
        return (
            f"suite={self.suite}\nvariant={self.variant}\nmirror={self.mirror}\n"
            f"packages={','.join(sorted(self.packages))}\n"
        )

    @property
    def key(self) -> str:
        """``<suite>-<variant>-<digest of the whole spec>``: a new spec, a new tree."""
        digest = hashlib.sha256(self.describe().encode()).hexdigest()[:12]
        return f"{self.suite}-{self.variant}-{digest}"

    def argv(self, target: Path) -> list[str]:
        include = [f"--include={','.join(self.packages)}"] if self.packages else []
        return ["debootstrap", f"--variant={self.variant}", *include, self.suite,
                str(target), self.mirror]  # fmt: skip


def cached_root(spec: Debootstrap, cache_dir: Path) -> Path:
    """The root tree ``spec`` makes, from ``cache_dir/debootstrap`` or debootstrapped now."""

    def fill(staging: Path) -> None:
        require_tools(f"debootstrap {spec.suite}", ["debootstrap"])
        _debootstrap(spec, staging / "root")
        (staging / SPEC_FILE).write_text(spec.describe())  # the tree is complete

    return cached_dir(cache_dir / "debootstrap" / spec.key, SPEC_FILE, fill) / "root"


def _debootstrap(spec: Debootstrap, target: Path) -> None:
    try:
        run(spec.argv(target), timeout_s=DEBOOTSTRAP_TIMEOUT_S)
    except BaseException:
        _unmount_below(target)  # a killed debootstrap leaves /proc or /sys mounted in the target
        raise


def _unmount_below(root: Path) -> None:
    """Unmount what is mounted below ``root``, deepest first, so removing it stays inside it."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    mounts = sorted((Path(line.split()[4]) for line in lines), reverse=True)
    for mount in (m for m in mounts if m.is_relative_to(root)):
        with contextlib.suppress(ProcessError):
            run(["umount", "-l", mount])


def working_copy(root: Path, dest: Path) -> Path:
    """A copy of a cached tree to change (owners, modes, links, xattrs kept; reflinked where
    the filesystem can)."""
    run(["cp", "-a", "--reflink=auto", root, dest])
    return dest
