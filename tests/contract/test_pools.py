"""The ``StoragePool`` contract, run against every back-end (dir, shared-dir, fake).

A new back-end joins by adding one entry to ``BACKENDS``. Tests after the contract
cover what only the file back-ends do: path rules, the marker and the lock probe.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

import pytest

import virtfleet.storage.pools.fake  # noqa: F401  (registers the fake back-end)
from virtfleet.errors import AlreadyExistsError, InUseError, InvalidInputError, PathNotAllowedError
from virtfleet.model.pools import PoolRecord
from virtfleet.storage import qcow2, qemuimg
from virtfleet.storage.pools import PoolContext, StoragePool, open_pool, probe, types
from virtfleet.storage.pools.files import check_path

GIB = 1 << 30
BACKENDS = ("dir", "shared-dir", "fake")


def make(kind: str, root: Path, name: str = "p1") -> StoragePool:
    root.mkdir(exist_ok=True)
    ctx = PoolContext(default_root=root.parent / "default", private=(root.parent / "data",))
    record = PoolRecord(name=name, type=kind, path=str(root))
    pool = open_pool(record, ctx)
    pool.validate()
    pool.record.marker = pool.prepare()
    return pool


@pytest.fixture(params=BACKENDS)
def pool(request: pytest.FixtureRequest, tmp_path: Path) -> StoragePool:
    return make(request.param, tmp_path / "pool")


def test_backends_are_registered() -> None:
    assert set(BACKENDS) <= set(types())


def test_probe_on_the_creating_host_passes(pool: StoragePool) -> None:
    check = pool.probe("host-a")
    assert (check.reachable, check.marker_ok, check.lock_ok) == (True, True, True), check


async def test_volume_lifecycle(pool: StoragePool) -> None:
    assert pool.volumes() == []
    path = await pool.create_volume("vm1", "root", 2 * GIB)
    assert path == pool.volume_path("vm1", "root")
    [vol] = pool.volumes()
    assert (vol.instance, vol.disk, vol.size_bytes) == ("vm1", "root", 2 * GIB)
    with pytest.raises(AlreadyExistsError):
        await pool.create_volume("vm1", "root", GIB)
    await pool.grow_volume("vm1", "root", 3 * GIB)
    await pool.grow_volume("vm1", "root", GIB)  # never shrinks
    assert pool.volumes()[0].size_bytes == 3 * GIB
    pool.delete_volume("vm1", "root")
    pool.delete_volume("vm1", "root")  # idempotent
    assert pool.volumes() == []


async def test_volumes_sorted_by_instance_then_disk(pool: StoragePool) -> None:
    for inst, disk in (("b", "data"), ("a", "root"), ("b", "aaa")):
        await pool.create_volume(inst, disk, GIB)
    assert [(v.instance, v.disk) for v in pool.volumes()] == [
        ("a", "root"),
        ("b", "aaa"),
        ("b", "data"),
    ]


async def test_space_is_positive_and_capabilities_consistent(pool: StoragePool) -> None:
    space = pool.space()
    assert 0 <= space.free_bytes <= space.total_bytes and space.total_bytes > 0
    caps = pool.capabilities
    assert not caps.live_migrate_without_copy or caps.shared  # moving needs the same volume


async def test_clone_where_thin_clone_is_linked(pool: StoragePool, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    await qemuimg.create(base, GIB, None)
    path = await pool.create_volume("vm2", "root", 2 * GIB, backing=base)
    assert [v.size_bytes for v in pool.volumes()] == [2 * GIB]
    if pool.record.type != "fake" and pool.capabilities.thin_clone:
        head = (await qemuimg.info(path, "qcow2"))[0]
        assert head["backing-filename"] == str(base)
        assert qcow2.virtual_size(path) == 2 * GIB


# --- file back-ends only ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("relative/dir", InvalidInputError),
        ("/tmp/../etc", InvalidInputError),
        ("/tmp/./x", InvalidInputError),
        ("/nonexistent-pool-dir", InvalidInputError),
    ],
)
def test_hostile_paths_refused(path: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_path(path, ())


def test_path_must_be_a_real_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path)
    for name in ("file", "link"):
        with pytest.raises(InvalidInputError, match="not a directory"):
            check_path(str(tmp_path / name), ())


def test_path_inside_or_around_the_data_dir_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "disks").mkdir(parents=True)
    for path in (data, data / "disks", tmp_path):
        with pytest.raises(PathNotAllowedError):
            check_path(str(path), (data,))
    (tmp_path / "elsewhere").mkdir()
    assert check_path(str(tmp_path / "elsewhere"), (data,)) == tmp_path / "elsewhere"


def test_shared_dir_probe_fails_where_the_marker_is_not_the_pools(tmp_path: Path) -> None:
    pool = make("shared-dir", tmp_path / "shared")
    # Another host mounted something else at that path: its own copy, no marker there.
    other = open_pool(
        pool.record.model_copy(update={"path": str(tmp_path / "other")}), PoolContext(tmp_path)
    )
    (tmp_path / "other").mkdir()
    check = other.probe("host-b")
    assert check.reachable and check.lock_ok and not check.marker_ok
    assert "no marker" in check.message
    probe.write_marker(tmp_path / "other", "p1")  # same pool name, another token
    assert not other.probe("host-b").marker_ok


def test_shared_dir_refuses_another_pools_marker_and_destroy_removes_its_own(
    tmp_path: Path,
) -> None:
    pool = make("shared-dir", tmp_path / "shared")
    with pytest.raises(InUseError, match="p1"):
        make("shared-dir", tmp_path / "shared", name="p2")
    pool.destroy()
    assert probe.read_marker(tmp_path / "shared") is None


def test_lock_probe_sees_a_lock_held_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert probe.locks_work(tmp_path, "h") == (True, "")
    # A filesystem whose locks do not exclude (each opener "gets" the lock) is refused.
    real = fcntl.fcntl

    def lenient(fd: int, cmd: int, arg: bytes | int = 0) -> bytes | int:
        if cmd == fcntl.F_OFD_SETLK:
            return arg
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", lenient)
    ok, why = probe.locks_work(tmp_path, "h")
    assert not ok and "second writer" in why
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".virtfleet-lock")]


def test_flock_layout_matches_the_kernel_struct() -> None:
    assert struct.calcsize("hhqqi4x") == 32  # sizeof(struct flock) on 64-bit Linux
