"""Building an ``OciDriver`` for this host: runtime choice and user namespaces, probed once.

Used by the composition root and by tests, so both run the same host policy.
Must not start anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from virtfleet.drivers.oci import layers
from virtfleet.drivers.oci.driver import OciConfig, OciDriver
from virtfleet.drivers.oci.idranges import IdRanges
from virtfleet.drivers.oci.runtime import choose_runtime
from virtfleet.util.cgroups import detect_layout

log = logging.getLogger(__name__)

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
    mount_root: Path,
    oci_for: Callable[[str], Path] | None = None,
) -> OciDriver:
    """An ``OciDriver`` keeping its state under ``data_root/oci`` and ``layer_root/<name>``,
    mounting each rootfs at ``mount_root/<name>`` (outside the private data directory:
    the containers' mapped root must traverse every directory down to it)."""
    # Under <data>/oci, never <data>/run: that holds one directory per VM name (a VM
    # named "oci" must not share, or on delete remove, the containers' directories).
    config = OciConfig(
        run_root=data_root / "oci" / "run",
        layer_root=layer_root,
        lower_root=data_root / "oci" / "lower",
        state_root=data_root / "oci" / "state",
        rootfs_for=rootfs_for,
        cgroup_parent=cgroup_parent,
        mount_root=mount_root,
        userns=IdRanges() if userns_allowed() else None,
        oci_for=oci_for,
    )
    config.run_root.mkdir(parents=True, exist_ok=True)
    try:
        layers.make_traversable(mount_root)
    except OSError as err:  # e.g. a daemon not run as root: /run/virtfleet is not ours
        log.warning("containers cannot be mounted: rootfs mount root %s: %s", mount_root, err)
    return OciDriver(config, choose_runtime(detect_layout()))
