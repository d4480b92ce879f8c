"""The command blocks of README.md and docs/: how they are found, marked and checked.

A fenced block whose info string is ``sh`` or ``console`` is a command block:

- ``sh``: one command a line (``a ; b`` is two), ``  # ...`` comments dropped.
- ``console``: ``$ command`` lines, each followed by the output it shows. Shown output is a
  checked transcript: every shown line must appear, in order, in what the command really
  prints (whitespace folded; ``...`` in a shown line stands for any text; a line of only
  ``...`` marks lines left out). A command whose shown output has a line starting
  ``error:`` (a ``virtfleet`` one: or ``{"error"``) must fail with an error code; every
  other command must succeed.

An HTML comment on the line just before the fence marks the block:

- ``<!-- docs-run: fixture=NAME -->``: prepare NAME first (``tests/docs/fixtures.py``).
- ``<!-- docs-run: skip covered-by=tests/PATH.py::test_name -->``: not run here because it
  needs a real guest; the named test(s) (comma-separated) run the same commands.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LANGS = {"sh", "console"}
DIRECTIVE = re.compile(r"^<!--\s*docs-run:(?P<body>.*?)-->\s*$")
PROGRAMS = {"virtfleet", ".venv/bin/virtfleet"}


@dataclass
class Command:
    """One command of a block and the output the document shows for it."""

    text: str
    line: int
    shown: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def is_virtfleet(self) -> bool:
        return self.argv[0] in PROGRAMS

    @property
    def virtfleet_argvs(self) -> list[list[str]]:
        """Every ``virtfleet`` call in the line, pipelines included (for the usage check)."""
        parts = re.split(r"\|\||&&|[|;]", re.sub(r"\$\([^)]*\)", "X", self.text))
        argvs = [shlex.split(p) for p in parts if p.strip()]
        return [a[1:] for a in argvs if a[0] in PROGRAMS]

    @property
    def must_fail(self) -> bool:
        """The document shows an error: ``error: ... [code]`` (or under ``--json``,
        ``{"error": ...}``; curl's exit status says nothing of HTTP errors)."""
        marks = ("error:", '{"error"') if self.is_virtfleet else ("error:",)
        return any(line.startswith(marks) for line in self.shown)


@dataclass
class Block:
    """A command block: where it is, how it is marked, its commands."""

    path: Path
    line: int
    lang: str
    marks: dict[str, str]
    commands: list[Command]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def skipped(self) -> bool:
        return "skip" in self.marks

    @property
    def covered_by(self) -> list[str]:
        return [t for t in self.marks.get("covered-by", "").split(",") if t]


def documents() -> list[Path]:
    """README.md and every Markdown file under docs/, in a stable order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def parse_marks(comment: str) -> dict[str, str]:
    """``skip covered-by=a,b fixture=x`` -> {"skip": "", "covered-by": "a,b", "fixture": "x"}."""
    m = DIRECTIVE.match(comment.strip())
    if not m:
        return {}
    marks = {}
    for word in shlex.split(m.group("body")):
        key, _, value = word.partition("=")
        marks[key] = value
    return marks


def blocks(path: Path) -> list[Block]:
    """The command blocks of one Markdown file."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w+)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence.group(1) in LANGS:
            marks = parse_marks(lines[i - 1]) if i else {}
            body = list(enumerate(lines[i + 1 : end], start=i + 2))
            parse = _console if fence.group(1) == "console" else _sh
            found.append(Block(path, i + 1, fence.group(1), marks, parse(body)))
        i = end + 1
    return found


def _sh(body: list[tuple[int, str]]) -> list[Command]:
    commands = []
    for number, raw in body:
        text = raw.split("  #")[0].strip()
        if text and not text.startswith("#"):
            commands += [Command(part.strip(), number) for part in text.split(" ; ")]
    return commands


def _console(body: list[tuple[int, str]]) -> list[Command]:
    commands: list[Command] = []
    for number, raw in body:
        if raw.startswith("$ "):
            commands.append(Command(raw[2:].strip(), number))
        elif commands and raw.strip():
            commands[-1].shown.append(raw.rstrip())
    return commands


def fold(text: str) -> str:
    return " ".join(text.split())


def transcript_mismatch(shown: list[str], actual: str) -> str | None:
    """None when every shown line appears, in order, in ``actual``; else the first that
    does not (whitespace folded, ``...`` matching any text)."""
    lines = [fold(line) for line in actual.splitlines()]
    at = 0
    for want in shown:
        if fold(want) == "...":
            continue  # a line of its own: "more here", which in-order matching allows anyway
        pattern = re.compile(".*".join(re.escape(p) for p in fold(want).split("...")))
        while at < len(lines) and not pattern.fullmatch(lines[at]):
            at += 1
        if at == len(lines):
            return want
        at += 1
    return None
