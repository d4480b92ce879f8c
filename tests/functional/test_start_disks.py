"""A start layers the VM's disk on its image in-process; a verified image is not re-checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.storage import qemuimg

from .helpers import create

pytestmark = pytest.mark.usefixtures("image")


@pytest.fixture
def qemu_img_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The daemon's qemu-img, logging each call's arguments (one line each) to the file."""
    log, wrapper = tmp_path / "qemu-img.calls", tmp_path / "qemu-img"
    real = shutil.which("qemu-img")
    assert real is not None
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    log.touch()
    monkeypatch.setattr(qemuimg, "QEMU_IMG", str(wrapper))
    return log


def _info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return dict(json.loads(out))


async def test_first_start_on_a_verified_image_runs_no_qemu_img(
    api: httpx.AsyncClient, platform: Platform, qemu_img_calls: Path
) -> None:
    """The overlay is written in-process and the image, unchanged since it was hashed, is
    not checked: no qemu-img at all; the overlay is one qemu-img reads as usual."""
    await create(api, name="a", start=True)
    assert qemu_img_calls.read_text() == ""
    base = platform.services.images.store.file_for("tiny")
    info = _info(platform.agent.disks.path("a", "root"))
    assert (info["format"], info["backing-filename"]) == ("qcow2", str(base))
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == _info(base)["virtual-size"]


async def test_an_image_changed_since_it_was_hashed_is_checked(
    api: httpx.AsyncClient, platform: Platform, qemu_img_calls: Path
) -> None:
    """A rewritten image file (its stamp moved) is checked again before a VM uses it."""
    base = platform.services.images.store.file_for("tiny")
    stat = base.stat()
    os.utime(base, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    await create(api, name="b", start=True)
    calls = qemu_img_calls.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["check"]
    assert calls[0].endswith(str(base))
