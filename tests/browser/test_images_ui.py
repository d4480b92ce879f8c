"""The Images page in headless Chromium: make a template from the tiny image, deploy two
linked clones from it as one operation, see them boot, and the in-use guard on delete."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import Daemon

from .conftest import ADMIN_PASSWORD
from .test_ui import OP_MS, login

pytestmark = pytest.mark.integration


def test_deploy_linked_clones_from_a_template(page: Page, ui_daemon: Daemon) -> None:
    """Image -> template -> 'web-{1..2}' deployed and started; the template refuses deletion."""
    login(page, ui_daemon.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Images").click()
    page.locator("[data-templatize=tiny]").click()
    expect(page.locator("tr[data-image=tiny-tpl]")).to_contain_text("template", timeout=OP_MS)
    page.locator("[data-deploy=tiny-tpl]").click()
    page.get_by_label("Names (web-{1..10} expands)").fill("web-{1..2}")
    page.get_by_role("button", name="Deploy", exact=True).last.click()
    expect(page.get_by_role("status").filter(has_text="Created")).to_contain_text(
        "web-1, web-2", timeout=OP_MS
    )
    for name in ("web-1", "web-2"):
        ui_daemon.wait_marker(name)
    page.locator("[data-delete=tiny-tpl]").click()
    page.locator("#dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("alert")).to_contain_text("web-1", timeout=OP_MS)
