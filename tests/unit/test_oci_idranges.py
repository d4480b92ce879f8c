"""Container id ranges: each container its own, kept with its layer, leased host-wide."""

from __future__ import annotations

import itertools
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
