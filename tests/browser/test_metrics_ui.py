"""The Metrics tab of the instance page and the dashboard's host metrics, in headless
Chromium against a real daemon (sampling every second) running the real ``tiny`` guest."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

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
    expect(host_card.locator("figure[data-metrics~=memory_available_pct] canvas")).to_have_count(1)
    page.goto(d.url + "/#/instances/chart-1/metrics")
    expect(page.get_by_role("tab", name="Metrics")).to_have_attribute("aria-selected", "true")
    cpu = page.locator("figure[data-metrics~=cpu_pct]")
    expect(cpu.locator("canvas")).to_have_count(1, timeout=30_000)  # refreshes until samples exist
    expect(page.locator("figure[data-metrics~=memory_rss_bytes] canvas")).to_have_count(1)
    expect(cpu).to_have_attribute("aria-label", re.compile(r"latest cpu_pct \d+\.\d %"))
    _hover_and_zoom(page, cpu)
    expect(page.locator(".unavailable")).to_contain_text("user-mode NICs")
    shots.step("metrics-tab")
    page.get_by_role("button", name="15 min").click()
    expect(page.get_by_role("button", name="15 min")).to_have_attribute("aria-pressed", "true")
    expect(page.locator(".metrics")).to_contain_text("every 10 s")

    page.get_by_role("link", name="Dashboard").click()
    util = page.locator("#card-utilization-section")
    page.get_by_label("Window").select_option("1h")
    expect(util.locator("figure[data-chart=utilization] canvas")).to_have_count(1)
    expect(util.locator("figure[data-chart=utilization]")).to_have_attribute(
        "aria-label", re.compile(r"chart-1 \d+\.\d %")
    )
    expect(util).to_contain_text("1 allocated")


def _hover_and_zoom(page: Page, figure: Locator) -> None:
    """uPlot's hover shows the value under the cursor in the legend; dragging zooms x."""
    over = figure.locator(".u-over")
    expect(over).to_be_visible()
    box = over.bounding_box()
    assert box is not None
    page.wait_for_timeout(1500)  # a few more one-second samples to zoom into
    page.mouse.move(box["x"] + box["width"] - 3, box["y"] + box["height"] / 2)
    value = figure.locator(".u-legend .u-series").nth(1).locator(".u-value")
    expect(value).to_have_text(re.compile(r"^\d+\.\d %$"))
    span = "(u) => u.scales.x.max - u.scales.x.min"
    before = page.evaluate(f"() => ({span})(document.querySelector('.chart-box .uplot')._plot)")
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + 10, steps=5)
    page.mouse.up()
    after = page.evaluate(f"() => ({span})(document.querySelector('.chart-box .uplot')._plot)")
    assert 0 < after < before * 0.8, (before, after)
