"""Helpers for tests that run real containers: the tiny rootfs and a driver on a temp dir."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

from virtfleet.drivers.oci.driver import OciDriver
from virtfleet.drivers.oci.factory import build_oci_driver
from virtfleet.storage.builders.rootfs import ROOTFS_SUFFIX, build_tiny_rootfs


async def make_oci_driver(work: Path, cache: Path) -> OciDriver:
    """An OciDriver whose image ``tiny`` is the busybox rootfs, all state under ``work``."""
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(build_tiny_rootfs, images / f"tiny{ROOTFS_SUFFIX}", cache)
    return build_oci_driver(
        work / "data",
        work / "layers",
        lambda name: images / f"{name}{ROOTFS_SUFFIX}",
        f"virtfleet-test-{os.getpid()}",
        mount_root(work),
        lambda name: images / f"{name}.oci.json",
    )


def mount_root(work: Path) -> Path:
    """The driver's rootfs mount points for a test under ``work`` (which stays 0700)."""
    return Path("/run/virtfleet-test") / work.name / "rootfs"


def unmount_under(root: Path) -> None:
    """Unmount every mount below ``root`` (a test's data dir), deepest first: what a failed
    test left must not be removed through its mount."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    targets = [Path(line.split()[4]) for line in lines]
    for target in sorted((t for t in targets if t.is_relative_to(root)), reverse=True):
        subprocess.run(["umount", "-l", str(target)], check=False)


def release(work: Path) -> None:
    """Unmount what a test driver under ``work`` left (its data and its mount points),
    then remove both trees."""
    for root in (work, mount_root(work)):
        unmount_under(root)
    shutil.rmtree(mount_root(work).parent, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
