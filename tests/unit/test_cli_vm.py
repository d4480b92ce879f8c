"""``virtfleet vm ...`` against the in-process daemon on its Unix socket (``--data-dir``)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.functional.platform import serve_uds
from virtfleet.cli.main import app
from virtfleet.client import Client
from virtfleet.client.models import Instance

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    with serve_uds(tmp_path) as d:
        yield d


def cli(data_dir: Path, *args: str) -> Result:
    return runner.invoke(app, ["--data-dir", str(data_dir), *args])


def cli_json(data_dir: Path, *args: str) -> object:
    result = cli(data_dir, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def image(data_dir: Path) -> str:
    assert cli(data_dir, "image", "build", "tiny").exit_code == 0
    return "tiny"


def test_create_start_and_list_as_json(data_dir: Path, image: str) -> None:
    """``vm create --start --json`` prints the finished operation; ``vm list --json`` the VM."""
    op = cli_json(
        data_dir,
        "vm",
        "create",
        "demo",
        "--image",
        image,
        "--memory",
        "1G",
        "--vcpus",
        "2",
        "--start",
    )
    assert isinstance(op, dict) and op["status"] == "success"
    listed = cli_json(data_dir, "vm", "list")
    assert isinstance(listed, list) and len(listed) == 1
    vm = listed[0]
    assert (vm["name"], vm["mode"], vm["spec"]["memory_mib"]) == ("demo", "tcg", 1024)
    assert vm["status"]["power"] == "running"


def test_list_table_shows_mode_and_devices(data_dir: Path, image: str) -> None:
    """The table has NAME, STATE, MODE, VCPUS, MEMORY, DEVICES and IMAGE columns."""
    cli(
        data_dir,
        "vm",
        "create",
        "demo",
        "--image",
        image,
        "--memory",
        "512M",
        "--device-model",
        "emulated",
        "--start",
    )
    out = cli(data_dir, "vm", "list").stdout
    for header in ("NAME", "STATE", "MODE", "VCPUS", "MEMORY", "DEVICES", "IMAGE"):
        assert header in out
    row = next(line for line in out.splitlines() if line.startswith("demo"))
    assert row.split() == ["demo", "vm", "running", "tcg", "1", "512", "MiB", "emulated", "tiny"]


def test_list_table_asks_only_for_the_fields_it_shows(
    data_dir: Path, image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table's request names its fields (the answer is smaller and faster); --json
    asks for whole instances."""
    cli(data_dir, "vm", "create", "demo", "--image", image)
    asked: list[object] = []
    listing = Client.list_instances

    def spy(self: Client, fields: Sequence[str] | None = None) -> list[Instance]:
        asked.append(fields)
        return listing(self, fields)

    monkeypatch.setattr(Client, "list_instances", spy)
    assert "demo" in cli(data_dir, "vm", "list").stdout
    assert cli_json(data_dir, "vm", "list")[0]["desired"]["generation"] == 1  # type: ignore[index]
    assert asked == [("name", "spec", "status", "mode"), None]


def test_power_commands(data_dir: Path, image: str) -> None:
    """start, pause, resume, reboot, stop and delete work and say what happened."""
    cli(data_dir, "vm", "create", "demo", "--image", image)
    for args, said in [
        (("start",), "demo is running"),
        (("pause",), "demo is paused"),
        (("resume",), "demo is running"),
        (("reboot", "--force"), "demo is running"),
        (("stop", "--timeout", "5"), "demo is stopped"),
        (("delete",), "demo deleted"),
    ]:
        result = cli(data_dir, "vm", args[0], "demo", *args[1:])
        assert (result.exit_code, result.stdout.strip()) == (0, said), result.output


def test_wrong_state_exits_1_with_one_error_line(data_dir: Path, image: str) -> None:
    """A refused action prints ``error: <message> [invalid_state]`` on stderr and exits 1."""
    cli(data_dir, "vm", "create", "demo", "--image", image)
    result = cli(data_dir, "vm", "pause", "demo")
    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: instance is stopped") and line.endswith("[invalid_state]")


def test_errors_as_json(data_dir: Path) -> None:
    """With --json an error prints the API's error shape on stdout."""
    result = cli(data_dir, "vm", "show", "ghost", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "args",
    [
        ("vm", "show", "D\u0435mo"),
        ("vm", "start", ".."),
        ("vm", "create", "demo", "--image", "tiny", "--memory", "12X"),
        ("vm", "create", "demo", "--image", "tiny", "--vcpus", "0"),
    ],
)
def test_invalid_input_exits_2(data_dir: Path, args: tuple[str, ...]) -> None:
    """Bad names, sizes and values exit 2 with an invalid_* code."""
    result = cli(data_dir, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and "[invalid_" in result.stderr


def test_no_wait_prints_the_operation_id(data_dir: Path, image: str) -> None:
    """``--no-wait`` returns at once with the operation id, which ``operation wait`` accepts."""
    result = cli(data_dir, "vm", "create", "demo", "--image", image, "--start", "--no-wait")
    op_id = result.stdout.strip()
    assert result.exit_code == 0 and len(op_id) == 32
    op = cli_json(data_dir, "operation", "wait", op_id)
    assert isinstance(op, dict) and op["status"] == "success"


def test_show_and_logs(data_dir: Path, image: str) -> None:
    """``vm show`` prints the details; ``vm logs`` the serial log."""
    cli(data_dir, "vm", "create", "demo", "--image", image, "--start")
    (data_dir / "console" / "demo.log").write_text("Linux version 6.1\n")
    shown = cli(data_dir, "vm", "show", "demo").stdout
    assert "running" in shown and "virtio (machine q35)" in shown
    log = "Linux version 6.1\n"
    assert cli(data_dir, "vm", "logs", "demo").stdout == log
    assert cli_json(data_dir, "vm", "logs", "demo") == {"name": "demo", "log": log}


def test_firmware_on_create_show_and_set(data_dir: Path, image: str) -> None:
    """``--firmware`` on ``vm create`` and ``vm set``; ``vm show`` names the firmware;
    uefi-secure on the emulated model exits 2 naming q35."""
    cli(data_dir, "vm", "create", "sb", "--image", image, "--firmware", "uefi-secure")
    assert (
        "uefi-secure (OVMF, Secure Boot, Microsoft keys)"
        in cli(data_dir, "vm", "show", "sb").stdout
    )
    cli(data_dir, "vm", "create", "plain", "--image", image)
    assert "bios (SeaBIOS)" in cli(data_dir, "vm", "show", "plain").stdout
    op = cli_json(data_dir, "vm", "set", "plain", "--firmware", "uefi")
    assert isinstance(op, dict) and op["status"] == "success"
    shown = cli_json(data_dir, "vm", "show", "plain")
    assert isinstance(shown, dict) and shown["spec"]["firmware"] == "uefi"
    cli(data_dir, "vm", "create", "win", "--image", image, "--firmware", "uefi-secure", "--tpm")
    assert "TPM 2.0 (swtpm)" in cli(data_dir, "vm", "show", "win").stdout
    cli(data_dir, "vm", "create", "w11", "--image", image, "--os", "windows")
    shown_w11 = cli_json(data_dir, "vm", "show", "w11")
    assert isinstance(shown_w11, dict)
    assert (shown_w11["spec"]["firmware"], shown_w11["spec"]["tpm"]) == ("uefi-secure", True)
    args = ("--image", image, "--device-model", "emulated", "--firmware", "uefi-secure")
    result = cli(data_dir, "vm", "create", "old", *args)
    assert result.exit_code == 2 and "q35" in result.stderr and "[invalid_input]" in result.stderr


def test_vm_set_os_on_a_stopped_vm(data_dir: Path, image: str) -> None:
    """``vm set --os windows`` changes a stopped VM's OS (``vm show`` says it); ``--os``
    takes only the known families."""
    cli(data_dir, "vm", "create", "box", "--image", image)
    op = cli_json(data_dir, "vm", "set", "box", "--os", "windows")
    assert isinstance(op, dict) and op["status"] == "success"
    shown = cli_json(data_dir, "vm", "show", "box")
    assert isinstance(shown, dict) and shown["spec"]["os"] == "windows"
    assert cli(data_dir, "vm", "set", "box", "--os", "dos").exit_code == 2


def test_vm_create_driver_iso_sends_an_absolute_path(
    data_dir: Path, image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--driver-iso`` (relative to the shell's directory) reaches the daemon absolute;
    ``vm show`` names it."""
    (data_dir / "virtio-win.iso").write_bytes(b"CD001")
    monkeypatch.chdir(data_dir)
    args = ("--image", image, "--os", "windows", "--driver-iso", "virtio-win.iso")
    assert cli(data_dir, "vm", "create", "w", *args).exit_code == 0
    shown = cli_json(data_dir, "vm", "show", "w")
    assert isinstance(shown, dict)
    assert shown["spec"]["driver_iso"] == str(data_dir / "virtio-win.iso")
    assert "driver iso" in cli(data_dir, "vm", "show", "w").stdout  # the path may be cut
