"""Suite-wide pytest hooks: in CI, integration tests must run, not skip."""

from __future__ import annotations

import os

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
