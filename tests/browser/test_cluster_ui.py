"""The cluster in the web UI, in headless Chromium: two fake-driver daemons (host-a and
host-b, no guest boots) on one real etcd, the UI served by host-a. The dashboard's cluster
summary, the Hosts page (state, lease age, capacity bars, instance counts, etcd), the
instance list's host column and filter, and the owning host on an instance's page."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.etcdlab import etcd_lab, free_port
from tests.integration.conftest import Daemon

from .conftest import ADMIN_PASSWORD, admin_http, wait_op
from .pagecheck import check_page
from .test_ui import login

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Daemon, Daemon]]:
    """Daemons host-a and host-b on one etcd; host-a serves the UI. Instances (made through
    host-a): on-a running on host-a, on-b running and b-off stopped on host-b."""
    with etcd_lab() as etcd:
        daemons: list[Daemon] = []
        try:
            for name in ("host-a", "host-b"):
                data_dir = Path(tempfile.mkdtemp(prefix=f"vf{name}", dir="/tmp"))
                port = free_port()
                args = ["--driver", "fake", "--listen", f"127.0.0.1:{port}",
                        "--store", f"etcd+{etcd.url}", "--host-name", name]  # fmt: skip
                d = Daemon(data_dir, args)
                d.env = {"VIRTFLEET_ADMIN_PASSWORD": ADMIN_PASSWORD}
                d.url = f"http://127.0.0.1:{port}"
                daemons.append(d)
                d.start()
            a, b = daemons
            disk = [{"name": "root", "size_gib": 1}]  # no image: nothing to fetch between hosts
            with admin_http(a) as http:
                for name, host, start, vcpus in [("on-a", "host-a", True, 2),
                                                 ("on-b", "host-b", True, 1),
                                                 ("b-off", "host-b", False, 1)]:  # fmt: skip
                    body = {"name": name, "disks": disk, "host": host, "start": start,
                            "vcpus": vcpus, "memory_mib": 256 * vcpus}  # fmt: skip
                    wait_op(http, http.post("/1.0/instances", json=body), timeout_s=120)
            yield a, b
        finally:
            for d in daemons:
                d.stop()
                shutil.rmtree(d.data_dir, ignore_errors=True)


def test_hosts_page_host_column_filter_and_owner(
    cluster: tuple[Daemon, Daemon], page: Page
) -> None:
    a, _ = cluster
    with admin_http(a) as http:
        status = http.get("/1.0/cluster").json()
    b_status = next(h for h in status["hosts"] if h["name"] == "host-b")
    login(page, a.url, "admin", ADMIN_PASSWORD)

    dash = page.locator("#card-cluster-section")
    expect(dash).to_contain_text("etcd cluster of 1 member (1 answering)")
    expect(dash.locator("#cluster-hosts-online")).to_have_text("2 of 2 hosts online · 3 instances")
    expect(dash.locator("li[data-host=host-b]")).to_contain_text("2 instances (1 running)")

    page.get_by_role("link", name="Hosts", exact=True).click()
    card = page.locator(".host-card[data-host=host-b]")
    expect(card.locator("[data-host-state]")).to_have_text("online")
    expect(card.locator(".host-instances")).to_have_text("2 instances · 1 running")
    vcpus = card.locator("[data-meter='vCPUs allocated']")
    expect(vcpus).to_contain_text(f"1 of {b_status['capacity']['vcpus_limit']}")
    expect(vcpus.locator("meter")).to_have_attribute("value", "1")
    expect(card.locator("[data-meter='Memory allocated']")).to_contain_text("256 MiB of")
    expect(card.locator("[data-fact='Lease age']")).to_have_text(re.compile(r"^\d+ s$"))
    expect(card.locator("[data-fact=etcd]")).to_contain_text("etcd runs elsewhere")
    expect(page.locator(".host-card[data-host=host-a]")).to_contain_text("(this host)")
    expect(page.locator("#etcd-members-table tr[data-member=t]")).to_contain_text("leader")
    check_page(page, "hosts")

    card.get_by_role("link", name="Instances on host-b").click()
    rows = page.locator("table.instances tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#host-filter")).to_have_value("host-b")
    expect(page.locator("tr[data-name=on-b] td[data-host]")).to_have_text("host-b")
    page.locator("#host-filter").select_option("host-a")
    expect(rows).to_have_count(1)
    expect(page.locator("tr[data-name=on-a] td[data-host]")).to_have_text("host-a")
    assert page.evaluate("location.hash") == "#/instances?host=host-a"
    page.locator("#host-filter").select_option("all")
    expect(rows).to_have_count(3)
    page.get_by_label("Search").fill("host-b")  # the search matches the host too
    expect(rows).to_have_count(2)
    page.get_by_label("Search").fill("")

    page.get_by_role("link", name="on-b", exact=True).click()
    expect(page.locator("#instance-host")).to_have_text("host-b")
    expect(page.locator("dd:has(#instance-host) [data-host-state]")).to_have_text("online")
