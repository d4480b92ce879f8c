"""Whether the containers' mapped root can reach its rootfs mount root, and the host check
row that says so (mode bits only; the uid is never this process's)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.drivers.base import DriverInfo
from virtfleet.drivers.oci.access import blocking_dir
from virtfleet.host.containers import container_checks

UID = 100_000  # the mapped root: owns nothing here


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A 0755 directory right under /tmp (pytest's own sit under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="vfa", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_0700_parent_blocks_and_is_named(tmp_path: Path) -> None:
    parent = tmp_path / "private"
    data = parent / "data" / "oci" / "run"
    data.mkdir(parents=True)
    for made in (data, *data.relative_to(parent).parents):  # whatever this process's umask
        (parent / made).chmod(0o755)
    parent.chmod(0o700)
    assert blocking_dir(data, UID, UID) == parent
    parent.chmod(0o711)
    assert blocking_dir(data, UID, UID) is None


def test_owner_and_group_bits_count_for_their_ids(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir(mode=0o700)
    # Owned by root: the mapped root is "other" and is blocked; as its owner it may pass.
    assert blocking_dir(own, UID, UID) == own
    assert blocking_dir(own, own.stat().st_uid, UID) is None


def test_missing_parts_are_not_blocking(tmp_path: Path) -> None:
    assert blocking_dir(tmp_path / "not" / "made", UID, UID) is None


def test_host_check_row_names_the_directory_and_the_fix() -> None:
    details = {"containers": True, "runtime": "runc", "user_namespaces": "on"}
    ok = container_checks(DriverInfo("oci", True, "", {**details, "unreachable_dir": None}))
    assert all(row.name != "container data path" for row in ok)
    bad = DriverInfo("oci", True, "", {**details, "unreachable_dir": "/srv/private"})
    rows = [r for r in container_checks(bad) if r.name == "container data path"]
    assert len(rows) == 1 and rows[0].level == "warn"
    assert "chmod o+x /srv/private" in rows[0].detail
