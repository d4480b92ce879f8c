"""Building an ``OciDriver`` for this host: runtime choice and user namespaces, probed once.

Used by the composition root and by tests, so both run the same host policy.
Must not start anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from virtfleet.drivers.oci.driver import OciConfig, OciDriver
from virtfleet.drivers.oci.idranges import IdRanges
from virtfleet.drivers.oci.runtime import choose_runtime
from virtfleet.util.cgroups import detect_layout

USERNS_SYSCTL = Path("/proc/sys/user/max_user_namespaces")


def userns_allowed(sysctl: Path = USERNS_SYSCTL) -> bool:
    """The host lets us create user namespaces (the sysctl is present and non-zero)."""
    try:
        return int(sysctl.read_text().strip()) > 0
    except (OSError, ValueError):
        return False


def build_oci_driver(
    data_root: Path,
    layer_root: Path,
    rootfs_for: Callable[[str], Path],
    cgroup_parent: str,
) -> OciDriver:
    """An ``OciDriver`` keeping its state under ``data_root/oci`` and ``layer_root/<name>``."""
    # Under <data>/oci, never <data>/run: that holds one directory per VM name (a VM
    # named "oci" must not share, or on delete remove, the containers' directories).
    config = OciConfig(
        run_root=data_root / "oci" / "run",
        layer_root=layer_root,
        lower_root=data_root / "oci" / "lower",
        state_root=data_root / "oci" / "state",
        rootfs_for=rootfs_for,
        cgroup_parent=cgroup_parent,
        userns=IdRanges() if userns_allowed() else None,
    )
    for path in (data_root, data_root / "oci", config.run_root):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(path.stat().st_mode | 0o001)  # the mapped root must traverse to its rootfs
    return OciDriver(config, choose_runtime(detect_layout()))
