"""``virtfleet template ...`` and ``vm create NAME... --from`` against the in-process daemon."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_cli_vm import cli, cli_json, data_dir

__all__ = ["data_dir"]  # the fixture, shared with test_cli_vm


def test_cli_vm_create_from_template(data_dir: Path) -> None:
    """``vm create 'web-{1..2}' --from tpl --full --json`` prints the finished operation."""
    assert cli(data_dir, "image", "build", "tiny").exit_code == 0
    made = cli(data_dir, "template", "create", "tpl", "--from-image", "tiny")
    assert made.exit_code == 0, made.output
    op = cli_json(data_dir, "vm", "create", "web-{1..2}", "--from", "tpl", "--full")
    assert isinstance(op, dict) and op["result"]["instances"] == ["web-1", "web-2"]
    assert "tpl" in cli(data_dir, "template", "list").stdout
    listed = cli_json(data_dir, "image", "list")
    assert isinstance(listed, list) and {i["kind"] for i in listed} == {"image", "template"}
    wrong = cli(data_dir, "vm", "create", "a", "b", "--image", "tiny")
    assert wrong.exit_code != 0 and "--from" in wrong.output


def test_cli_clone_gets_the_image_defaults_and_given_options(data_dir: Path) -> None:
    """x1 --from t1 (from the image) gets the user-mode NIC x2 --image gets; options given
    with --from reach the clones; template show marks template vs default settings."""
    assert cli(data_dir, "image", "build", "tiny").exit_code == 0
    assert cli(data_dir, "template", "create", "t1", "--from-image", "tiny").exit_code == 0
    assert cli(data_dir, "vm", "create", "x2", "--image", "tiny").exit_code == 0
    made = cli(data_dir, "vm", "create", "x1", "--from", "t1", "--vcpus", "2", "--agent",
               "--tpm", "--os", "windows", "--firmware", "uefi")  # fmt: skip
    assert made.exit_code == 0, made.output
    x1, x2 = cli_json(data_dir, "vm", "show", "x1"), cli_json(data_dir, "vm", "show", "x2")
    assert isinstance(x1, dict) and isinstance(x2, dict)
    assert [n["mode"] for n in x1["spec"]["nics"]] == [n["mode"] for n in x2["spec"]["nics"]]
    assert x1["spec"]["nics"] and x1["spec"]["nics"][0]["mac"] != x2["spec"]["nics"][0]["mac"]
    assert (x1["spec"]["vcpus"], x1["spec"]["guest_agent"]) == (2, True)
    assert (x1["spec"]["tpm"], x1["spec"]["os"]) == (True, "windows")
    iso = data_dir / "drivers.iso"
    iso.write_bytes(b"iso")
    wrong = cli(data_dir, "vm", "create", "x4", "--from", "t1", "--driver-iso", str(iso))
    assert wrong.exit_code != 0 and "--driver-iso is for --image" in wrong.output
    none = cli_json(data_dir, "vm", "create", "x3", "--image", "tiny", "--nic", "none")
    assert isinstance(none, dict)
    x3 = cli_json(data_dir, "vm", "show", "x3")
    assert isinstance(x3, dict) and x3["spec"]["nics"] == []
    shown = cli(data_dir, "template", "show", "t1")
    assert shown.exit_code == 0 and "default" in shown.stdout and "SETTING" in shown.stdout


def test_cli_keep_tpm_reaches_the_clone_request_and_only_goes_with_from(data_dir: Path) -> None:
    """``--keep-tpm`` is accepted with --from (the daemon keeps the template's TPM, if it has
    one) and refused with --image, where there is no TPM to keep."""
    assert cli(data_dir, "image", "build", "tiny").exit_code == 0
    assert cli(data_dir, "template", "create", "t1", "--from-image", "tiny").exit_code == 0
    op = cli_json(data_dir, "vm", "create", "k1", "--from", "t1", "--keep-tpm")
    assert isinstance(op, dict) and op["result"]["instances"] == ["k1"]
    wrong = cli(data_dir, "vm", "create", "k2", "--image", "tiny", "--keep-tpm")
    assert wrong.exit_code != 0 and "--keep-tpm is for --from" in wrong.output
