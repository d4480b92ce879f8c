"""Container id ranges: each container its own, kept with its layer, leased host-wide."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from virtfleet.drivers.oci.idranges import IdRanges
from virtfleet.errors import HostError


def _ranges(tmp_path: Path, count: int = 3) -> IdRanges:
    return IdRanges(first=100_000, size=65_536, count=count, lease_dir=tmp_path / "leases")


def test_containers_get_disjoint_ranges_across_daemons(tmp_path: Path) -> None:
    """Two daemons (two IdRanges over one lease dir) never hand out overlapping ranges."""
    one, two = _ranges(tmp_path), _ranges(tmp_path)
    maps = [
        one.acquire(tmp_path / "d1/a/id-range"),
        two.acquire(tmp_path / "d2/a/id-range"),
        one.acquire(tmp_path / "d1/b/id-range"),
    ]
    spans = sorted((m.host_id, m.host_id + m.size) for m in maps)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
    assert {m.size for m in maps} == {65_536}
    with pytest.raises(HostError, match="id ranges"):
        two.acquire(tmp_path / "d2/c/id-range")


def test_a_container_keeps_its_range_and_a_removed_layer_frees_it(tmp_path: Path) -> None:
    """The same container gets its range back (its files are owned by it), also after the
    lease directory was lost; once its layer is gone the range goes to another."""
    ranges = _ranges(tmp_path, count=2)
    owner = tmp_path / "layers/a/id-range"
    first = ranges.acquire(owner)
    other = ranges.acquire(tmp_path / "layers/b/id-range")
    assert ranges.acquire(owner) == first
    for lease in (tmp_path / "leases").iterdir():
        lease.unlink()
    assert ranges.acquire(owner) == first
    owner.unlink()  # the layer was removed with the container
    assert ranges.acquire(tmp_path / "layers/c/id-range") == first
    ranges.release(tmp_path / "layers/b/id-range")
    assert ranges.acquire(tmp_path / "layers/d/id-range") == other


def test_a_layer_from_the_shared_range_keeps_it_or_moves(tmp_path: Path) -> None:
    """Layers made when all containers shared range 100000: the first keeps it, the next
    one's files move to its own range (ids outside the range and setuid bits stay)."""
    ranges = _ranges(tmp_path)
    layers = []
    for name in ("a", "b"):
        layer = tmp_path / name / "rootfs-layer"
        (layer / "upper" / "bin").mkdir(parents=True)
        tool = layer / "upper" / "bin" / "tool"
        tool.write_text("x")
        for path in (layer, layer / "upper", layer / "upper" / "bin", tool):
            os.chown(path, 100_000, 100_000)
        os.chown(tool, 100_000 + 1000, 5)  # a user inside, group outside the range
        tool.chmod(0o4755)
        (layer / "upper" / "link").symlink_to("bin/tool")
        os.lchown(layer / "upper" / "link", 100_000 + 7, 100_000 + 7)
        layers.append(layer)
    first = ranges.acquire(tmp_path / "a" / "id-range", layers[0])
    second = ranges.acquire(tmp_path / "b" / "id-range", layers[1])
    assert first.host_id == 100_000 and second.host_id == 165_536
    tool = layers[1] / "upper" / "bin" / "tool"
    assert (tool.stat().st_uid, tool.stat().st_gid) == (165_536 + 1000, 5)
    assert tool.stat().st_mode & 0o7777 == 0o4755
    assert (layers[1] / "upper").stat().st_uid == 165_536
    assert os.lstat(layers[1] / "upper" / "link").st_uid == 165_536 + 7
    assert (layers[0] / "upper" / "bin" / "tool").stat().st_uid == 100_000 + 1000


def test_a_range_already_held_is_acquired_again_without_writing(tmp_path: Path) -> None:
    """A container started again finds its range recorded and leased: nothing is rewritten
    (each replace of an existing file costs a start ms on ext4); a lost lease is."""
    ranges = _ranges(tmp_path)
    owner = tmp_path / "layers/a/id-range"
    first = ranges.acquire(owner)
    lease = tmp_path / "leases" / str(first.host_id)

    def stamps() -> list[tuple[int, int]]:
        return [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (owner, lease)]

    before = stamps()
    assert ranges.acquire(owner) == first
    assert stamps() == before
    lease.unlink()
    assert ranges.acquire(owner) == first
    assert lease.read_text() == str(owner)
