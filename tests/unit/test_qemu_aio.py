"""drivers/qemu/aio.py: io_uring only where the kernel allows it and QEMU links liburing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from virtfleet.drivers.qemu import aio


@pytest.fixture
def qemu_bins(tmp_path: Path) -> dict[str, str]:
    """Two fake QEMU binaries, one naming liburing among its libraries."""
    with_uring = tmp_path / "qemu-uring"
    with_uring.write_bytes(b"\x7fELF...libc.so.6\x00liburing.so.2\x00libz.so.1\x00")
    without = tmp_path / "qemu-plain"
    without.write_bytes(b"\x7fELF...libc.so.6\x00libz.so.1\x00")
    for path in (with_uring, without):
        os.chmod(path, 0o755)
    return {"uring": str(with_uring), "plain": str(without)}


@pytest.mark.parametrize(
    ("setting", "binary", "engine"),
    [
        ("0", "uring", "io_uring"),
        ("0", "plain", "threads"),  # QEMU built without liburing refuses aio=io_uring
        ("1", "uring", "threads"),  # io_uring for privileged processes only; QEMU is not
        ("2", "uring", "threads"),  # io_uring off
    ],
)
def test_choose(
    tmp_path: Path, qemu_bins: dict[str, str], setting: str, binary: str, engine: str
) -> None:
    sysctl = tmp_path / "io_uring_disabled"
    sysctl.write_text(setting + "\n")
    assert aio.choose(qemu_bins[binary], sysctl) == engine


def test_choose_without_the_sysctl_or_the_binary(tmp_path: Path, qemu_bins: dict[str, str]) -> None:
    """A kernel before 6.6 has no switch (io_uring on); a missing or empty binary: threads."""
    assert aio.choose(qemu_bins["uring"], tmp_path / "absent") == "io_uring"
    sysctl = tmp_path / "io_uring_disabled"
    sysctl.write_text("0")
    assert aio.choose(str(tmp_path / "no-such-qemu"), sysctl) == "threads"
    empty = tmp_path / "qemu-empty"
    empty.touch(mode=0o755)
    assert aio.choose(str(empty), sysctl) == "threads"
