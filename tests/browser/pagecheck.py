"""Checks every page of the UI gets: its accessibility snapshot names each control, it is
readable at 420 px without sideways scrolling, and (with ``VIRTFLEET_UI_DOCS=1``) its
screenshot lands in docs/ui/ for the README."""

from __future__ import annotations

import os
import re

from playwright.sync_api import Page

from tests.integration.conftest import ROOT

DOCS_UI = ROOT / "docs" / "ui"
# A control in Playwright's ARIA snapshot with no accessible name: "- textbox" alone, or
# "- button:" / "- combobox [disabled]" without a quoted name.
UNNAMED = re.compile(
    r"^\s*- (textbox|combobox|checkbox|radio|button|spinbutton|link|tab|searchbox)\b(?! \")",
    re.MULTILINE,
)


def unnamed_controls(page: Page) -> list[str]:
    """Lines of the page's accessibility snapshot that are controls without a name."""
    snapshot = page.locator("body").aria_snapshot()
    return [m.group(0).strip() for m in UNNAMED.finditer(snapshot)]


def check_page(page: Page, name: str) -> None:
    """Accessibility names, 420 px width, and the docs screenshot of the page now shown."""
    assert unnamed_controls(page) == [], f"{name}: unlabelled controls"
    if os.environ.get("VIRTFLEET_UI_DOCS") == "1":
        DOCS_UI.mkdir(exist_ok=True)
        page.evaluate("window.scrollTo(0, 0)")  # the page's head, not where the test clicked
        page.screenshot(path=str(DOCS_UI / f"{name}.png"))
    size = page.viewport_size
    page.set_viewport_size({"width": 420, "height": 800})
    try:
        width: int = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 420, f"{name} scrolls sideways at 420 px ({width} px): {_wide(page)}"
    finally:
        if size:
            page.set_viewport_size(size)


def _wide(page: Page) -> list[str]:
    """The outermost elements reaching past 420 px (what to fix)."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('body *')]
             .filter((e) => e.getBoundingClientRect().right > 421)
             .filter((e) => (e.parentElement?.getBoundingClientRect().right ?? 0) <= 421)
             .slice(0, 5).map((e) => `${e.tagName}.${e.className}#${e.id}`)"""
    )
    return found
