"""No module reaches into another module's underscore names (issue 21: one public door).

An AST scan of src/virtfleet: ``x._name`` is allowed only on ``self``/``cls``/``super()``
or where the module itself defines ``_name`` (its own private helpers), and
``from m import _name`` not at all. The few third-party exceptions are listed with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "virtfleet"
pytestmark = pytest.mark.meta

# (file under src/virtfleet, expression) -> why it is allowed
ALLOWED = {
    ("host/sampling.py", "times._asdict"): "namedtuple's public API is underscored",
    ("cli/coercion.py", "self._typer[0]._coerce_value"): "Typer's adapter has no public coerce",
    ("cli/lazy.py", "typer._completion_classes"): "Typer completion: no public hook",
    ("cli/lazy.py", "typer._completion_classes._sanitize_help_text"): "same (plain help)",
}


def _own_names(tree: ast.Module) -> set[str]:
    """Underscore names the module defines itself: functions, classes, attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_")}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_own_object(value: ast.expr) -> bool:
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return isinstance(value, ast.Call) and ast.unparse(value.func) == "super"


def foreign_private_uses(source: str) -> list[tuple[int, str]]:
    """(line, expression) of every use of another module's underscore name in ``source``."""
    tree = ast.parse(source)
    own = _own_names(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if not _is_own_object(node.value) and node.attr not in own:
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, f"import {a.name}") for a in node.names if _private(a.name)]
    return sorted(found)


def test_the_scan_finds_remote_control_of_another_object() -> None:
    """The scanner flags what issue 21 removed (an agent's ``_start``, a manager's lock)."""
    source = (
        "from virtfleet.storage.backup.chunks import _translate\n"
        "class S:\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    async def f(self):\n"
        "        await self.agent._start(rec)\n"
        "        async with self.manager._lock: pass\n"
        "        return self._mine, super()._x, other._mine\n"
    )
    assert foreign_private_uses(source) == [
        (1, "import _translate"),
        (6, "self.agent._start"),
        (7, "self.manager._lock"),
    ]


def test_no_module_uses_another_modules_private_names() -> None:
    """Across src/virtfleet, only the listed third-party exceptions remain."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for line, expr in foreign_private_uses(path.read_text()):
            if (rel, expr) not in ALLOWED:
                bad.append(f"{rel}:{line}: {expr}")
    assert not bad, "\n".join(bad)
