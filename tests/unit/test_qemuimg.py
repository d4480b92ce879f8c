"""``storage/qemuimg``, the one qemu-img wrapper, on the daemon's own files (real qemu-img):
new overlays, a rebase, bitmaps, resize and map do what they say; a failure is one
``ProcessError`` line naming the qemu-img verb; a run over its time is killed and reported
as ``ProcessError``, never as a bare ``TimeoutError``."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from virtfleet.errors import ImageError, ProcessError
from virtfleet.storage import qemuimg

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

MIB = 1 << 20


async def test_an_overlay_sits_on_its_backing_and_a_rebase_moves_it(tmp_path: Path) -> None:
    base, top, later = tmp_path / "base.qcow2", tmp_path / "top.qcow2", tmp_path / "later.qcow2"
    await qemuimg.create(base, 4 * MIB)
    await qemuimg.overlay(top, later, 4 * MIB)  # the backing is not there yet
    head = (await qemuimg.info(top, "qcow2", shared=True))[0]
    assert head["full-backing-filename"] == str(later)
    await qemuimg.create(later, 4 * MIB)
    await qemuimg.rebase(top, "")  # nothing below: the overlay stands alone
    assert "full-backing-filename" not in (await qemuimg.info(top, "qcow2"))[0]
    await qemuimg.rebase(top, str(base))
    assert (await qemuimg.info(top, "qcow2"))[0]["full-backing-filename"] == str(base)


async def test_resize_bitmaps_and_map(tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    await qemuimg.create(disk, MIB)
    await qemuimg.resize(disk, 3 * MIB)
    assert await qemuimg.virtual_size(disk, "qcow2") == 3 * MIB
    await qemuimg.bitmap(disk, "add", "b0")
    head = (await qemuimg.info(disk, "qcow2"))[0]
    assert [b["name"] for b in head["format-specific"]["data"]["bitmaps"]] == ["b0"]
    await qemuimg.bitmap(disk, "remove", "b0")
    assert "bitmaps" not in (await qemuimg.info(disk, "qcow2"))[0]["format-specific"]["data"]
    extents = await asyncio.to_thread(qemuimg.map_extents, ["-f", "qcow2", str(disk)], "d")
    assert sum(e["length"] for e in extents) == 3 * MIB


async def test_a_failure_is_one_line_naming_the_verb(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match=r"^qemu-img rebase failed: .*missing\.qcow2") as err:
        await qemuimg.rebase(tmp_path / "missing.qcow2", "")
    assert "\n" not in err.value.message
    with pytest.raises(ProcessError, match="qemu-img map of d failed"):
        qemuimg.map_extents([str(tmp_path / "missing.qcow2")], "d")
    with pytest.raises(ImageError, match=r"cannot read image missing\.qcow2"):
        await qemuimg.virtual_size(tmp_path / "missing.qcow2")


async def test_a_run_over_its_time_is_killed_and_reported(tmp_path: Path) -> None:
    fifo = tmp_path / "never"
    os.mkfifo(fifo)  # qemu-img blocks opening it: no writer ever comes
    with pytest.raises(ProcessError, match=r"qemu-img info did not finish within 0\.5s"):
        await qemuimg.run(["info", "-f", "raw", str(fifo)], timeout_s=0.5)
