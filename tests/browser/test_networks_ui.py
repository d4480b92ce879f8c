"""The Networks page and the instance page's Networks tab in headless Chromium.

The daemon runs with the fake driver, whose network host lives in memory: a browser
test never creates bridges or rules on the machine it runs on (the real ones are
proven in tests/integration/test_networks.py, inside test-made namespaces).
"""

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
def fake_daemon(
    request: pytest.FixtureRequest, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Daemon]:
    monkeypatch.setenv("VIRTFLEET_ADMIN_PASSWORD", ADMIN_PASSWORD)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ("--listen", f"127.0.0.1:{port}", "--driver", "fake")
    for d in _running_daemon(request, args):
        d.url = f"http://127.0.0.1:{port}"
        yield d


def test_admin_creates_uses_and_deletes_a_network(
    fake_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """An admin creates a network in the form, sees a refused overlap as an alert, sees the
    VM on it with its MAC in the instance's Networks tab, and deletes the network."""
    d = fake_daemon
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Networks").click()
    page.get_by_label("Name").fill("lan0")
    page.get_by_label("IPv4 subnet").fill("10.60.0.0/24")
    page.get_by_role("button", name="Create network").click()
    row = page.locator("tr[data-name=lan0]")
    expect(row).to_contain_text("10.60.0.0/24")
    expect(row).to_contain_text("nat")
    page.get_by_label("Name").fill("lan1")
    page.get_by_label("IPv4 subnet").fill("10.60.0.0/16")
    page.get_by_role("button", name="Create network").click()
    expect(page.get_by_role("alert")).to_contain_text("overlaps network lan0")
    shots.step("networks")

    nic = {"mode": "network", "network": "lan0"}
    op = d.client.create_instance({"name": "web", "image": "tiny", "nics": [nic]}, start=False)
    assert d.client.wait_operation(op.id, timeout_s=60).status == "success"
    mac = d.client.get_instance("web").spec.nics[0].mac
    assert mac
    page.goto(d.url + "/#/instances/web/networks")
    expect(page.locator("table.nics")).to_contain_text(mac)
    expect(page.locator("table.nics")).to_contain_text("lan0")
    shots.step("instance-networks")

    op = d.client.delete_instance("web")
    assert d.client.wait_operation(op.id, timeout_s=60).status == "success"
    # The open instance page reloads on the deletion event; let it settle before leaving.
    expect(page.get_by_text("Instance web no longer exists.")).to_be_visible()
    page.get_by_role("link", name="Networks").click()
    page.locator("[data-delete-network=lan0]").click()
    page.locator("#dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("tr[data-name=lan0]")).to_have_count(0)
