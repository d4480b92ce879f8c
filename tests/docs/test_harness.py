"""The docs-run machinery catches what it is there to catch: a stale transcript, a flag or
subcommand the CLI does not know, a block's marks."""

from __future__ import annotations

from pathlib import Path

from .blocks import blocks, transcript_mismatch
from .usage import usage_error

DOC = """\
Intro.

<!-- docs-run: skip covered-by=tests/a.py::test_x,tests/b.py::test_y -->
```sh
virtfleet list --kind vm              # a comment
virtfleet pause a ; virtfleet resume a
```

```json
{"not": "commands"}
```

```console
$ virtfleet show nope
error: instance 'nope' not found [not_found]
$ virtfleet list
NAME ... STATE
```
"""


def test_blocks_commands_marks_and_shown_output(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    sh, console = blocks(doc)
    assert sh.marks == {"skip": "", "covered-by": "tests/a.py::test_x,tests/b.py::test_y"}
    assert sh.covered_by == ["tests/a.py::test_x", "tests/b.py::test_y"]
    assert [c.text for c in sh.commands] == [
        "virtfleet list --kind vm", "virtfleet pause a", "virtfleet resume a",
    ]  # fmt: skip
    assert [c.line for c in sh.commands] == [5, 6, 6]
    assert console.marks == {} and not console.skipped
    show, listing = console.commands
    assert show.must_fail and not listing.must_fail
    assert listing.shown == ["NAME ... STATE"]


def test_every_virtfleet_call_of_a_pipeline_is_seen(tmp_path: Path) -> None:
    from .blocks import Command

    line = "echo pw | virtfleet user create u --password-stdin && virtfleet list --json | jq ."
    assert Command(line, 1).virtfleet_argvs == [
        ["user", "create", "u", "--password-stdin"], ["list", "--json"],
    ]  # fmt: skip
    assert Command("curl -s http://x | jq .", 1).virtfleet_argvs == []


def test_a_transcript_must_match_in_order() -> None:
    out = "NAME   KIND  STATE\nweb-1  vm    running\n"
    assert transcript_mismatch(["NAME KIND STATE", "web-1 ... running"], out) is None
    assert transcript_mismatch(["web-1 vm running", "NAME KIND STATE"], out) == "NAME KIND STATE"
    assert transcript_mismatch(["web-1 vm stopped"], out) == "web-1 vm stopped"
    assert transcript_mismatch(["web-1"], out) == "web-1"  # whole lines, not a prefix


def test_usage_errors_name_what_the_cli_does_not_know() -> None:
    assert usage_error(["vm", "create", "a", "--image", "tiny", "--start"]) is None
    assert usage_error(["exec", "c1", "--", "ps", "-ef"]) is None
    assert "--colour" in str(usage_error(["list", "--colour"]))
    assert "frobnicate" in str(usage_error(["vm", "frobnicate", "a"]))
    assert "Missing argument" in str(usage_error(["backup", "restore"]))
    assert usage_error(["backup"]) is not None  # a group alone prints help: not a command
    assert usage_error(["backup", "schedule", "--help"]) is None
    assert "backupp" in str(usage_error(["backupp", "--help"]))
