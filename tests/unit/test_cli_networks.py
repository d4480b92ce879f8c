"""``virtfleet network ...`` and ``vm create --network`` against the in-process daemon (fake
driver, in-memory network host) on its Unix socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.functional.platform import serve_uds
from virtfleet.cli.main import app

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    with serve_uds(tmp_path) as d:
        yield d


def cli(data_dir: Path, *args: str) -> Result:
    # A fixed width: Rich wraps table cells at the terminal's width (80 without one).
    return runner.invoke(app, ["--data-dir", str(data_dir), *args], env={"COLUMNS": "200"})


def cli_json(data_dir: Path, *args: str) -> object:
    result = cli(data_dir, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_network_commands_and_a_vm_on_the_network(data_dir: Path) -> None:
    """create/list/show/delete with --json and as text; `vm create --network` gives the VM a
    network NIC only (no user-mode NIC) with a MAC, and `vm show` lists it."""
    net = cli_json(data_dir, "network", "create", "lan0", "--subnet", "10.5.0.0/24")
    assert isinstance(net, dict) and net["spec"]["dhcp_end"] == "10.5.0.254"
    assert "lan0" in cli(data_dir, "network", "list").stdout
    shown_net = cli(data_dir, "network", "show", "lan0").stdout
    assert "10.5.0.128 - 10.5.0.254" in shown_net
    # a nat network is this host's, and this host's agent reported it made it
    assert net["scope"] == "host" and [(h["host"], h["ok"]) for h in net["hosts"]] == [
        (net["host"], True)
    ]
    rows = [line.split() for line in shown_net.splitlines()]
    assert ["host", net["host_name"]] in rows and ["on", net["host_name"], "ok"] in rows
    elsewhere = cli(
        data_dir, "network", "create", "lan1", "--subnet", "10.6.0.0/24", "--host", "nope"
    )
    assert elsewhere.exit_code != 0 and "[unknown_host]" in elsewhere.output
    assert cli(data_dir, "image", "build", "tiny").exit_code == 0
    assert (
        cli(data_dir, "vm", "create", "web", "--image", "tiny", "--network", "lan0").exit_code == 0
    )
    vm = cli_json(data_dir, "vm", "show", "web")
    assert isinstance(vm, dict)
    [nic] = vm["spec"]["nics"]
    assert (nic["mode"], nic["network"]) == ("network", "lan0") and nic["mac"]
    shown = " ".join(cli(data_dir, "vm", "show", "web").stdout.split())  # wrapped or not
    assert f"network lan0 {nic['mac']}" in shown
    busy = cli(data_dir, "network", "delete", "lan0")
    assert busy.exit_code != 0 and "[in_use]" in busy.output
    assert cli(data_dir, "vm", "delete", "web").exit_code == 0
    assert cli_json(data_dir, "network", "delete", "lan0") == {"name": "lan0", "deleted": True}
    assert cli_json(data_dir, "network", "list") == []


def test_bad_network_input_is_one_line_with_a_code(data_dir: Path) -> None:
    """A VLAN out of range and an invalid CIDR: one error line with its code, non-zero exit."""
    bad = cli(
        data_dir,
        "network",
        "create",
        "v1",
        "--mode",
        "bridged",
        "--parent",
        "br0",
        "--vlan",
        "5000",
    )
    assert bad.exit_code != 0 and "[invalid_input]" in bad.output
    cidr = cli(data_dir, "network", "create", "n1", "--subnet", "10.0.0.0/33")
    assert cidr.exit_code != 0 and "[invalid_input]" in cidr.output
    assert len(cidr.output.strip().splitlines()) == 1
