"""The daemon lifts its soft open-files limit to the hard one (containers hold ~4 fds each)."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from virtfleet.util.limits import raise_open_files_limit


@pytest.fixture
def restore_limit() -> Iterator[tuple[int, int]]:
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield saved
    resource.setrlimit(resource.RLIMIT_NOFILE, saved)


def test_the_soft_limit_goes_up_to_the_hard_one(restore_limit: tuple[int, int]) -> None:
    _, hard = restore_limit
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"needs a finite hard limit above 1024 (is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    assert raise_open_files_limit() == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    assert raise_open_files_limit() == hard  # already there: unchanged
