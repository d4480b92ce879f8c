"""The host-wide QEMU uid pool: distinct uids, leases across daemons, stale leases reused."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.drivers.qemu.uids import UidPool, parse_pool
from virtfleet.errors import HostError, InvalidInputError

FIRST = 3_900_000_000  # far from any account or running process


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[tuple[UidPool, UidPool]]:
    """Two pools over one lease directory: two daemons on one host."""
    yield UidPool(FIRST, 3, tmp_path / "leases"), UidPool(FIRST, 3, tmp_path / "leases")


def test_every_reservation_gets_its_own_uid_across_daemons(pools: tuple[UidPool, UidPool]) -> None:
    """Reservations of two daemons never share a uid; a full pool is a HostError."""
    one, two = pools
    got = [one.reserve("a"), two.reserve("a"), one.reserve("b")]
    assert sorted(got) == [FIRST, FIRST + 1, FIRST + 2]
    with pytest.raises(HostError, match="no free QEMU uid"):
        two.reserve("c")


def test_lease_follows_qemu_and_frees_when_it_exits(pools: tuple[UidPool, UidPool]) -> None:
    """Held by the QEMU process, a uid stays taken while it runs and is free once it exits;
    a release by anyone but the holder changes nothing."""
    one, two = pools
    uid = one.reserve("a")
    qemu = subprocess.Popen(["sleep", "30"])
    try:
        one.hold(uid, qemu.pid, "a")
        one.release(uid, os.getpid())  # not the holder any more
        assert two.holder(uid) == qemu.pid
        assert two.reserve("b") != uid
    finally:
        qemu.kill()
        qemu.wait()
    assert two.holder(uid) is None
    assert uid in {two.reserve("c"), two.reserve("d")}


def test_uid_someone_runs_as_is_skipped(tmp_path: Path) -> None:
    """A uid a process runs as (without any lease) is never handed out."""
    squatter = subprocess.Popen(["sleep", "30"], user=FIRST, group=FIRST, extra_groups=[])
    try:
        assert UidPool(FIRST, 2, tmp_path).reserve("a") == FIRST + 1
    finally:
        squatter.kill()
        squatter.wait()


def test_release_frees_at_once(pools: tuple[UidPool, UidPool]) -> None:
    one, _ = pools
    uid = one.reserve("a")
    one.release(uid, os.getpid())
    assert one.holder(uid) is None and one.reserve("b") == uid


def test_pool_setting_parsed_or_refused() -> None:
    """VIRTFLEET_QEMU_UIDS: "" the default, "off" none, FIRST:COUNT; bad values are
    invalid input with one clear message (uid 0 is never a VM's)."""
    assert parse_pool("") == UidPool()
    assert parse_pool("off") is None
    assert parse_pool("95000:10") == UidPool(95_000, 10)
    for bad in ("x", "0:5", "90000:0", "90000:-1"):
        with pytest.raises(InvalidInputError, match="FIRST:COUNT"):
            parse_pool(bad)
