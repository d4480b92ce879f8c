"""``virtfleet image import-oci`` and ``container create --mode/--env/--cmd`` against a
local daemon (fake driver): the import's layers and config in ``image show``, the
container spec carrying the overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.ocilayouts import Entry, image_config, layer_tar, write_docker_archive, write_layout
from tests.unit.test_cli_vm import cli, cli_json, data_dir
from virtfleet.storage.oci.source import host_arch

__all__ = ["data_dir"]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="layers keep owners: needs root")


def test_import_oci_show_and_create_an_app_container(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers = [layer_tar([Entry("bin/app", b"#!/bin/sh\n", mode=0o755)])]
    run = {"Entrypoint": ["/bin/app"], "Cmd": ["--x"], "ExposedPorts": {"8080/tcp": {}}}
    write_layout(tmp_path / "layout", layers, image_config(layers, run, arch=host_arch()))
    write_docker_archive(tmp_path / "saved.tar", layers, image_config(layers, run, host_arch()))
    monkeypatch.chdir(tmp_path)
    op = cli_json(data_dir, "image", "import-oci", "web", "layout")
    assert isinstance(op, dict) and op["status"] == "success", op
    assert cli(data_dir, "image", "import-oci", "web2", "saved.tar").exit_code == 0
    shown = cli(data_dir, "image", "show", "web")
    assert shown.exit_code == 0, shown.output
    for text in ("/bin/app", "--x", "8080/tcp", "oci", "sha256:"):
        assert text in shown.output, shown.output
    record = cli_json(data_dir, "image", "show", "web2", "--json")
    assert isinstance(record, dict) and record["oci"]["format"] == "docker-archive"
    made = cli(
        data_dir, "container", "create", "c1", "--image", "web", "--mode", "app",
        "--env", "A=1", "--env", "B=2", "--cmd", "serve --port '80 80'",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    spec = cli_json(data_dir, "show", "c1")
    assert isinstance(spec, dict)
    assert spec["spec"]["env"] == ["A=1", "B=2"] and spec["spec"]["container_mode"] == "app"
    assert spec["spec"]["cmd"] == ["serve", "--port", "80 80"]


def test_import_oci_of_a_missing_path_fails_with_a_code(data_dir: Path, tmp_path: Path) -> None:
    result = cli(data_dir, "image", "import-oci", "x", str(tmp_path / "nothing"))
    assert result.exit_code != 0 and "[not_found]" in result.output, result.output
