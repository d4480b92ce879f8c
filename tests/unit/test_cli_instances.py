"""The top-level instance verbs (``virtfleet start|stop|...|snapshot NAME``) on a VM and a
container of one in-process daemon, their ``--json``, and the old ``vm``/``container`` spellings."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.functional.fake_containers import FakeContainerOps, with_containers
from tests.functional.platform import serve_uds
from tests.unit.test_cli_console import serial_sink
from virtfleet.app.bootstrap import Platform
from virtfleet.cli.main import app, main

runner = CliRunner()
KINDS = {"v1": "vm", "c1": "container"}


class Fleet:
    """The daemon's data dir, with a stopped VM ``v1`` and a stopped container ``c1``."""

    def __init__(self) -> None:
        self.ops = FakeContainerOps()
        self.data_dir = Path()

    def setup(self, platform: Platform) -> None:
        self.ops = with_containers(platform)

    def cli(self, *args: str) -> Result:
        return runner.invoke(app, ["--data-dir", str(self.data_dir), *args])

    def ok(self, *args: str) -> str:
        result = self.cli(*args)
        assert result.exit_code == 0, result.output
        return result.stdout

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args, "--json"))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet()
    with serve_uds(tmp_path, setup=made.setup) as data_dir:
        made.data_dir = data_dir
        made.ok("image", "build", "tiny")
        made.ok("image", "build", "ctiny", "--builder", "container-tiny")
        made.ok("vm", "create", "v1", "--image", "tiny")
        made.ok("container", "create", "c1", "--image", "ctiny")
        yield made


@pytest.mark.parametrize("name", list(KINDS))
def test_power_verbs_work_on_both_kinds(fleet: Fleet, name: str) -> None:
    """start, pause, resume, restart, stop and delete say what happened, VM or container."""
    for args, said in [
        (("start",), f"{name} is running"),
        (("pause",), f"{name} is paused"),
        (("resume",), f"{name} is running"),
        (("restart", "--force"), f"{name} is running"),
        (("stop", "--timeout", "5"), f"{name} is stopped"),
        (("delete",), f"{name} deleted"),
    ]:
        assert fleet.ok(args[0], name, *args[1:]).strip() == said
    listed = fleet.json("list")
    assert isinstance(listed, list) and [i["name"] for i in listed] == sorted(set(KINDS) - {name})


@pytest.mark.parametrize("name", list(KINDS))
def test_power_verbs_as_json_print_the_operation(fleet: Fleet, name: str) -> None:
    """``start NAME --json`` prints the finished operation on the instance."""
    op = fleet.json("start", name)
    assert isinstance(op, dict) and op["status"] == "success"
    assert op["target"].endswith(name)
    shown = fleet.json("show", name)
    assert isinstance(shown, dict) and shown["status"]["power"] == "running"


def test_list_shows_both_kinds_with_a_kind_column(fleet: Fleet) -> None:
    """The table has a KIND column; ``--kind`` keeps one kind; ``--json`` lists both."""
    lines = fleet.ok("list").splitlines()
    assert lines[0].split()[:3] == ["NAME", "KIND", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["v1"][1:4] == ["vm", "stopped", "tcg"]
    assert rows["c1"][1:4] == ["container", "stopped", "-"]
    only = fleet.ok("list", "--kind", "container").splitlines()[1:]
    assert [line.split()[0] for line in only] == ["c1"]
    listed = fleet.json("list")
    assert isinstance(listed, list)
    assert {i["name"]: i["spec"]["kind"] for i in listed} == KINDS
    assert fleet.cli("list", "--kind", "pod").exit_code == 2


def test_show_names_the_kind_and_only_its_fields(fleet: Fleet) -> None:
    """A VM shows its device model and machine; a container its kind and no QEMU rows."""
    vm, ct = fleet.ok("show", "v1"), fleet.ok("show", "c1")
    assert "vm" in _field(vm, "kind") and "machine q35" in _field(vm, "devices")
    assert _field(ct, "kind") == "container" and "devices" not in ct and "qemu" not in ct
    for name, kind in KINDS.items():
        shown = fleet.json("show", name)
        assert isinstance(shown, dict) and shown["spec"]["kind"] == kind


def _field(text: str, key: str) -> str:
    return (
        next(line for line in text.splitlines() if line.startswith(key + " "))
        .split(maxsplit=1)[1]
        .strip()
    )


@pytest.mark.parametrize("name", list(KINDS))
def test_logs_of_both_kinds(fleet: Fleet, name: str) -> None:
    """``logs NAME`` prints the console log; ``--json`` wraps it with the name."""
    fleet.ok("start", name)
    (fleet.data_dir / "console" / f"{name}.log").write_text(f"{name} booted\n")
    assert fleet.ok("logs", name) == f"{name} booted\n"
    assert fleet.json("logs", name) == {"name": name, "log": f"{name} booted\n"}


def test_exec_runs_in_a_container_and_refuses_a_vm(fleet: Fleet) -> None:
    """``exec`` passes the command and its exit code through; a VM: one invalid_input line."""
    fleet.ok("start", "c1")
    assert fleet.ok("exec", "c1", "--", "echo", "hi") == "c1: echo hi\n"
    assert fleet.cli("exec", "c1", "--", "false").exit_code == 3
    out = json.loads(fleet.cli("exec", "c1", "--json", "--", "uname", "-a").stdout)
    assert out == {"exit_code": 0, "stdout": "c1: uname -a\n", "stderr": ""}
    fleet.ok("start", "v1")
    refused = fleet.cli("exec", "v1", "--", "true")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: ") and refused.stderr.endswith("[invalid_input]\n")
    assert "not a container" in refused.stderr


def test_snapshot_dispatches_by_kind(fleet: Fleet) -> None:
    """A container's snapshot goes to its rootfs snapshots, a VM's to its disk snapshot
    tree; list, revert and delete follow the kind the same way."""
    fleet.ok("start", "v1")  # its disk is made on the first start
    fleet.ok("stop", "v1")
    fleet.ok("snapshot", "create", "c1", "s1")
    fleet.ok("snapshot", "create", "v1", "d1")
    assert fleet.ops.snaps == {"c1": ["s1"]}  # the VM's snapshot did not land here
    vm_snaps = fleet.json("vm", "snapshot", "list", "v1")
    assert isinstance(vm_snaps, list) and [s["name"] for s in vm_snaps] == ["d1"]
    assert fleet.json("snapshot", "list", "v1") == vm_snaps
    assert fleet.json("snapshot", "list", "c1") == {"name": "c1", "snapshots": ["s1"]}
    fleet.ok("snapshot", "revert", "c1", "s1")
    assert fleet.ops.restored == [("c1", "s1")]
    op = fleet.json("snapshot", "revert", "v1", "d1")
    assert isinstance(op, dict) and op["kind"].startswith("snapshot")
    fleet.ok("snapshot", "delete", "c1", "s1")
    fleet.ok("snapshot", "delete", "v1", "d1")
    assert fleet.ops.snaps == {"c1": []}
    assert fleet.json("vm", "snapshot", "list", "v1") == []


def test_snapshot_errors(fleet: Fleet) -> None:
    """--memory on a container and an unknown instance are one-line errors; nothing made."""
    refused = fleet.cli("snapshot", "create", "c1", "s1", "--memory")
    assert refused.exit_code == 2 and "--memory is for VMs" in refused.stderr
    missing = fleet.cli("snapshot", "create", "ghost", "s1", "--json")
    assert missing.exit_code == 1
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"
    assert fleet.ops.snaps == {}


def test_old_spellings_keep_working(fleet: Fleet) -> None:
    """``vm`` verbs on a container, ``vm reboot``, ``vm list`` and the ``container``
    snapshot verbs do what they did."""
    assert fleet.ok("vm", "start", "c1").strip() == "c1 is running"
    assert fleet.ok("vm", "reboot", "c1").strip() == "c1 is running"
    assert fleet.ok("vm", "stop", "c1").strip() == "c1 is stopped"
    listed = fleet.json("vm", "list")
    assert isinstance(listed, list) and len(listed) == 2
    assert "c1: snapshot s1 taken" in fleet.ok("container", "snapshot", "c1", "s1")
    assert fleet.ok("container", "snapshots", "c1") == "s1\n"
    assert "restored from s1" in fleet.ok("container", "restore", "c1", "s1")
    assert fleet.json("container", "delete-snapshot", "c1", "s1") == {
        "name": "c1",
        "deleted": "s1",
    }
    assert fleet.json("vm", "show", "c1") == fleet.json("show", "c1")


@pytest.mark.parametrize("verb", [("console",), ("vm", "console")])
def test_console_of_a_container(
    fleet: Fleet,
    verb: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``console c1`` (and the old ``vm console c1``) bridges keys to the container's console."""
    fleet.ok("start", "c1")
    received: list[bytes] = []
    sink = serial_sink(fleet.data_dir / "console" / "c1.sock", received)
    read_end, write_end = os.pipe()
    os.write(write_end, b"ls\r\x1d")
    monkeypatch.setattr(sys, "stdin", os.fdopen(read_end, "rb", buffering=0))
    main(["--data-dir", str(fleet.data_dir), *verb, "c1"])
    sink.join(5)
    os.close(write_end)
    assert b"".join(received) == b"ls\r"
    assert "detached from c1" in capsys.readouterr().err


def test_console_refuses_json_and_a_stdin_without_a_descriptor(fleet: Fleet) -> None:
    """The console is interactive: ``--json`` is invalid input (as JSON), and so is a
    stdin with no file descriptor to read keys from."""
    result = fleet.cli("console", "c1", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "invalid_input"
    fleet.ok("start", "c1")
    result = fleet.cli("console", "c1")  # CliRunner's stdin is an in-memory buffer
    assert result.exit_code == 2
    assert result.stderr == "error: console needs a terminal (or a pipe) on stdin [invalid_input]\n"
