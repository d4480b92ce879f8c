"""Store keys are built in one module, ``state/keys.py`` (issue 21: keys with a project
segment must be changeable in one place).

An AST scan of src/virtfleet: no string literal (nor the literal head of an f-string)
outside ``state/keys.py`` starts with one of the store's top-level key segments. The
HTTP layers (``api``, ``cli``, ``client``) are skipped: their ``/instances/...`` are URL
paths, not keys. ``state/migrations.py`` is skipped: it reads the layouts of older
schema versions, which no longer exist anywhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from virtfleet.state import keys

SRC = Path(__file__).resolve().parents[2] / "src" / "virtfleet"
pytestmark = pytest.mark.meta
SKIPPED = ("api/", "cli/", "client/", "web/", "state/keys.py", "state/migrations.py")
# the old top-level segments too: a key spelled the old way is as wrong as a new one
OLD = {"instances", "images", "networks", "backup-schedules"}


def _segments() -> set[str]:
    """The first segment of every key and prefix ``state/keys.py`` defines."""
    values = [v for v in vars(keys).values() if isinstance(v, str) and v.startswith("/")]
    return {v.split("/")[1] for v in values} | OLD


def key_literals(source: str, segments: set[str]) -> list[tuple[int, str]]:
    """(line, text) of every string literal in ``source`` that spells a store key."""
    found = set()  # an f-string's head is also walked as a constant of its own
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr) and node.values:
            node = node.values[0]  # an f-string: its literal head
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            parts = node.value.split("/")
            if len(parts) > 2 and parts[0] == "" and parts[1] in segments:
                found.add((node.lineno, node.value))
    return sorted(found)


def test_the_scan_finds_keys_spelled_outside_the_layout() -> None:
    source = (
        'A = "/instances/"\n'
        'b = f"/projects/{p}/x"\n'
        'c = f"/hosts/{h}/alive"\n'
        'ok = ("/", "/dev/kvm", "instances/", "/1.0/instances/x")\n'
    )
    assert key_literals(source, _segments()) == [
        (1, "/instances/"),
        (2, "/projects/"),
        (3, "/hosts/"),
    ]


def test_no_module_outside_the_layout_spells_a_key() -> None:
    segments = _segments()
    assert {"projects", "hosts", "events", "macs"} <= segments
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(SKIPPED):
            continue
        bad += [f"{rel}:{line}: {text}" for line, text in key_literals(path.read_text(), segments)]
    assert not bad, "\n".join(bad)
