"""Suite-wide pytest hooks: in CI, integration tests must run, not skip."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

_skipped_integration: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "integration" in report.keywords and report.when in ("setup", "call"):
        _skipped_integration.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A skip must not hide a regression: CI has root and QEMU, so nothing may skip there.
    if os.environ.get("CI") and _skipped_integration:
        names = "\n  ".join(_skipped_integration)
        print(f"\nintegration tests skipped in CI (not allowed):\n  {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _umask_kept() -> Iterator[None]:
    """A test that changes the process umask (the daemon's ``serve`` sets 077) must put
    it back: the next test on that xdist worker would make its files 0600 unawares."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    after = os.umask(before)
    assert after == before, f"the test left the umask {after:o} (was {before:o})"


#: Run first: the longest modules, so two workers do not end on one of them alone.
LONGEST_FIRST = ("tests/integration/test_debian.py", "tests/integration/test_identity.py")
#: Then layer by layer, slow to fast: the fast tests fill in at the end.
LAYERS = ("cluster", "integration", "browser", "functional", "unit")


def _rank(item: pytest.Item) -> tuple[int, int]:
    path = item.nodeid.split("::", 1)[0]
    if path in LONGEST_FIRST:
        return (0, LONGEST_FIRST.index(path))
    layer = path.split("/")[1] if path.count("/") >= 2 else ""
    return (1 + (LAYERS.index(layer) if layer in LAYERS else len(LAYERS)), 0)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Under `-n N --dist loadgroup` a module's tests stay on one worker, so a module's
    # daemon and booted guests are made once; a module may name a shared group instead.
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    items.sort(key=_rank)  # stable: a module's tests keep their order
