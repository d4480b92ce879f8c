"""Every command in README.md and docs/ runs: the documents cannot go stale.

Static (all blocks, run or not): each ``virtfleet`` command parses with the CLI's own
command tree (what ``--help`` knows: subcommands, options, values, arguments); each block
is either run here or marked ``skip`` naming existing tests that run it with a real guest.
Run: each document's blocks in order against its own ``virtfleet serve --driver fake``
process, console transcripts checked line by line (see ``blocks.py`` for the marks).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .blocks import ROOT, Block, blocks, documents, transcript_mismatch
from .fixtures import FIXTURES
from .runner import DocsDaemon, Reset, Run
from .usage import usage_error

ALL = [b for doc in documents() for b in blocks(doc)]
BUILD = ["virtfleet", "image", "build"]
RUN_DOCS = [d for d in documents() if any(not b.skipped for b in blocks(d))]


def test_the_documents_have_command_blocks() -> None:
    """The extraction sees the guides (a broken parser would make every check vacuous)."""
    assert len(ALL) >= 40 and sum(len(b.commands) for b in ALL) >= 150
    assert sum(1 for b in ALL if b.lang == "console") >= 20


def test_every_documented_virtfleet_command_parses() -> None:
    # What a document shows failing (a usage error among them) is checked by running it.
    calls = [
        (b, c, argv)
        for b in ALL
        for c in b.commands
        if not c.must_fail
        for argv in c.virtfleet_argvs
    ]
    assert len(calls) >= 150
    wrong = [f"{b.where}: {c.text}: {err}" for b, c, argv in calls if (err := usage_error(argv))]
    assert wrong == []


def test_every_block_runs_or_names_its_coverage() -> None:
    """A skipped block names the tests (file::function, which must exist) that run it."""
    bad = []
    for b in ALL:
        unknown = set(b.marks) - {"skip", "covered-by", "fixture"}
        if unknown:
            bad.append(f"{b.where}: unknown marks {unknown}")
        if b.skipped and not b.covered_by:
            bad.append(f"{b.where}: skip without covered-by")
        bad += [f"{b.where}: no test {t}" for t in b.covered_by if not _test_exists(t)]
        for name in b.marks.get("fixture", "").split(","):
            if name and name not in FIXTURES:
                bad.append(f"{b.where}: no fixture {name}")
    assert bad == []


def _test_exists(ref: str) -> bool:
    path, _, name = ref.partition("::")
    file = ROOT / path
    return bool(name) and file.is_file() and f"def {name}(" in file.read_text()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsDaemon]:
    started = DocsDaemon(tmp_path_factory.mktemp("daemon"))
    started.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.parametrize("doc", RUN_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_document_runs_as_written(doc: Path, daemon: DocsDaemon, tmp_path: Path) -> None:
    """From an empty daemon (but for the ``tiny`` image, unless the document builds it)."""
    to_run = [b for b in blocks(doc) if not b.skipped]
    built = {
        c.argv[3] for b in to_run for c in b.commands if c.argv[:3] == BUILD and len(c.argv) > 3
    }
    Reset(daemon.data_dir, keep_images={"tiny"} - built)()
    run = Run(tmp_path, daemon)
    for block in to_run:
        _run_block(block, run)


def _run_block(block: Block, run: Run) -> None:
    for name in filter(None, block.marks.get("fixture", "").split(",")):
        FIXTURES[name](run)
    for command in block.commands:
        code, out = run.run(command)
        where = f"{block.path.relative_to(ROOT)}:{command.line}: {command.text}"
        if command.must_fail:
            assert code != 0, f"{where}\nshould fail, but:\n{out}"
            coded = re.search(r"\[\w+\]$|\"code\": \"\w+\"", out.strip())
            assert coded, f"{where}\nno error code:\n{out}"
        else:
            assert code == 0, f"{where}\nexit {code}:\n{out}"
        missing = transcript_mismatch(command.shown, out)
        assert missing is None, f"{where}\nshows {missing!r}, but printed:\n{out}"
