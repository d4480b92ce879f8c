"""The Metrics tab of the instance page and the dashboard's host metrics, in headless
Chromium against a real daemon (sampling every second) running the real ``tiny`` guest."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import Daemon, _running_daemon

from .conftest import ADMIN_PASSWORD, Shots
from .test_ui import login

pytestmark = pytest.mark.integration


@pytest.fixture
def metrics_daemon(
    request: pytest.FixtureRequest, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Daemon]:
    monkeypatch.setenv("VIRTFLEET_ADMIN_PASSWORD", ADMIN_PASSWORD)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ("--listen", f"127.0.0.1:{port}", "--metrics-interval", "1")
    for d in _running_daemon(request, args):
        d.url = f"http://127.0.0.1:{port}"
        yield d


def test_metrics_tab_charts_a_running_vm(metrics_daemon: Daemon, page: Page, shots: Shots) -> None:
    """A running VM's Metrics tab draws CPU and memory charts from the history API and
    says what is not measured; the range picker re-queries; the dashboard charts the host."""
    d = metrics_daemon
    d.create("chart-1", vcpus=1, memory_mib=256, nics=[{"mode": "user"}])
    login(page, d.url, "admin", ADMIN_PASSWORD)
    host_card = page.locator("#card-host-metrics-section")
    expect(host_card.locator("path[data-metric=memory_available_pct]")).to_have_count(1)
    page.goto(d.url + "/#/instances/chart-1/metrics")
    expect(page.get_by_role("tab", name="Metrics")).to_have_attribute("aria-selected", "true")
    cpu = page.locator("path[data-metric=cpu_pct]")
    expect(cpu).to_have_count(1, timeout=30_000)  # refreshes every 10 s until samples exist
    expect(page.locator("path[data-metric=memory_rss_bytes]")).to_have_count(1)
    expect(page.locator(".unavailable")).to_contain_text("user-mode NICs")
    shots.step("metrics-tab")
    page.get_by_role("button", name="15 min").click()
    expect(page.get_by_role("button", name="15 min")).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".metrics")).to_contain_text("every 10 s")
