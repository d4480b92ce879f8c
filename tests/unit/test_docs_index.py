"""``docs/index.md`` stays a true map: it names every file under ``docs/``, and each README
section it links to exists (a renamed heading breaks the link and this test)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INDEX = (ROOT / "docs" / "index.md").read_text()


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, '-' for ' '."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_docs_file_is_in_the_index() -> None:
    docs = ROOT / "docs"
    files = {str(p.relative_to(docs)) for p in docs.rglob("*") if p.is_file()} - {"index.md"}
    assert "guide/instances.md" in files, "docs/ is empty?"
    assert {f for f in files if f"]({f})" not in INDEX} == set()


def test_readme_links_point_at_real_sections() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    anchors = {_anchor(line.lstrip("#")) for line in readme if line.startswith(("## ", "### "))}
    linked = re.findall(r"\(\.\./README\.md#([\w-]+)\)", INDEX)
    assert len(linked) >= 5
    assert [a for a in linked if a not in anchors] == []
    missing = {a for a in anchors if a not in linked}
    assert missing == set(), f"README sections missing from docs/index.md: {missing}"
