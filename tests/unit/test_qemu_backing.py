"""Reading a qcow2 backing chain from the headers (what a hot-added disk must bring along)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from virtfleet.drivers.qemu.backing import chain
from virtfleet.errors import ImageError

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


def _img(path: Path, backing: str | None = None, fmt: str = "qcow2") -> Path:
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        args += ["-u", "-b", backing, "-F", fmt]
    subprocess.run([*args, str(path), "16M"], check=True)
    return path


def test_chain_nearest_first_with_formats_and_relative_names(tmp_path: Path) -> None:
    """Absolute and relative (to the image's directory) names, each with its format."""
    raw = tmp_path / "base.raw"
    raw.write_bytes(b"\0" * 4096)
    mid = _img(tmp_path / "mid.qcow2", str(raw), fmt="raw")
    top = _img(tmp_path / "top.qcow2", "mid.qcow2")
    assert chain(top) == [(mid, "qcow2"), (raw, "raw")]
    assert chain(_img(tmp_path / "alone.qcow2")) == []


def test_loop_and_non_qcow2_refused(tmp_path: Path) -> None:
    _img(tmp_path / "a.qcow2", "b.qcow2")
    _img(tmp_path / "b.qcow2", "a.qcow2")
    with pytest.raises(ImageError, match="loops"):
        chain(tmp_path / "a.qcow2")
    (tmp_path / "x.qcow2").write_bytes(b"not an image" * 10)
    with pytest.raises(ImageError, match="not a qcow2"):
        chain(tmp_path / "x.qcow2")
