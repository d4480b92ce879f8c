"""The pages beyond instances, in headless Chromium against one daemon for the module:
templates, backups and schedules, alerts, administration (users, tokens, audit, events).
Each page also passes pagecheck (labelled controls, 420 px, docs screenshot)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import Daemon

from .conftest import ADMIN_PASSWORD, Shots, admin_http, wait_op
from .pagecheck import check_page
from .test_ui import OP_MS, login

pytestmark = pytest.mark.integration


def test_templates_page_makes_lists_and_guards_a_template(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """A template made from a stopped VM on the page shows its source and defaults; a linked
    clone is listed under it; deleting it is refused with the clone named."""
    d = module_ui_daemon
    d.create("base", start=False, vcpus=2, memory_mib=192)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Templates").click()
    expect(page.locator("tbody")).to_contain_text("No templates yet.")
    page.get_by_label("From").select_option("instance:base")
    page.get_by_label("Template name").fill("base-tpl")
    page.get_by_role("button", name="Make template").click()
    row = page.locator("tr[data-template=base-tpl]")
    expect(row).to_contain_text("instance/base", timeout=OP_MS)
    expect(row.locator(".defaults")).to_contain_text("vcpus 2")
    expect(row.locator(".defaults")).to_contain_text("memory_mib 192")
    with admin_http(d) as http:
        wait_op(http, http.post("/1.0/templates/base-tpl/instances", json={"names": ["clone-1"]}))
    page.reload()
    expect(row.locator(".clones")).to_have_text("clone-1")
    check_page(page, "templates")
    row.get_by_role("button", name="Delete template base-tpl").click()
    page.locator("#dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("alert")).to_contain_text("clone-1")
    expect(row).to_be_visible()
    row.get_by_role("button", name="Deploy clones of base-tpl").click()
    expect(page.locator("dialog").get_by_label("Source")).to_have_value("base-tpl")
    expect(page.locator("dialog").get_by_label("Names or pattern")).to_be_visible()
