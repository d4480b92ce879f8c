"""The daemon's runtime directory (container rootfs mount points): one per data directory
under /run/virtfleet, overridable, and made traversable without touching existing parents."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from virtfleet.app.settings import Settings
from virtfleet.drivers.oci.factory import build_oci_driver
from virtfleet.drivers.oci.layers import make_traversable


def test_each_data_directory_gets_its_own_runtime_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIRTFLEET_RUNTIME_DIR", raising=False)
    one, two = Settings(data_dir=tmp_path / "a"), Settings(data_dir=tmp_path / "b")
    assert one.runtime_path == Path("/run/virtfleet") / one.instance_id
    assert two.runtime_path == Path("/run/virtfleet") / two.instance_id != one.runtime_path
    assert not one.runtime_path.is_relative_to(one.data_dir)
    monkeypatch.setenv("VIRTFLEET_RUNTIME_DIR", str(tmp_path / "rt"))
    assert Settings(data_dir=tmp_path / "a").runtime_path == tmp_path / "rt"


def test_make_traversable_opens_what_it_creates_only(tmp_path: Path) -> None:
    """Under the daemon's umask 077 new parents would be 0700 and block the mapped root;
    an existing parent is the operator's and keeps its mode."""
    tmp_path.chmod(0o700)
    target = tmp_path / "run" / "id" / "rootfs"
    old = os.umask(0o077)
    try:
        make_traversable(target)
    finally:
        os.umask(old)
    for path in (tmp_path / "run", tmp_path / "run" / "id", target):
        assert stat.S_IMODE(path.stat().st_mode) == 0o711
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    target.chmod(0o700)
    make_traversable(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o711


def test_an_unusable_runtime_directory_does_not_stop_the_daemon(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon that cannot make its runtime directory (not root: /run is not its own)
    still starts (VMs need no rootfs mounts); the log says why containers cannot run."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    driver = build_oci_driver(
        tmp_path / "data", tmp_path / "layers", lambda n: tmp_path / n, "t", blocker / "rootfs"
    )
    assert driver.cfg.mount_root == blocker / "rootfs"
    assert "containers cannot be mounted" in caplog.text and str(blocker) in caplog.text
