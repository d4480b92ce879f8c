"""``virtfleet image import/export`` paths: a local file name is sent absolute to the local
daemon (trusted: any host path), but as given to a remote (relative to its import/export
directory, the only place a TCP caller may use)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.test_cli_vm import cli, cli_json, data_dir
from virtfleet.cli import images

__all__ = ["data_dir"]  # the fixture, shared with test_cli_vm


def test_local_paths_are_sent_absolute_remote_paths_as_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(images, "selected_remote", lambda: None)
    assert images.host_path("disk.vmdk") == str(tmp_path / "disk.vmdk")
    monkeypatch.setattr(images, "selected_remote", lambda: object())
    assert images.host_path("disk.vmdk") == "disk.vmdk"
    assert images.host_path("sub/disk.vmdk") == "sub/disk.vmdk"


def test_cli_imports_and_exports_a_file_named_relative_to_the_cwd(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the local daemon, ``image import NAME disk.raw`` reads ./disk.raw, wherever
    that is, and ``image export`` writes ./out.raw (real qemu-img, jailed)."""
    work = tmp_path / "cwd"
    work.mkdir()
    (work / "disk.raw").write_bytes(os.urandom(1 << 20))
    monkeypatch.chdir(work)
    op = cli_json(data_dir, "image", "import", "rel", "disk.raw")
    assert isinstance(op, dict) and op["status"] == "success", op
    done = cli(data_dir, "image", "export", "rel", "out.raw", "--format", "raw")
    assert done.exit_code == 0, done.output
    assert (work / "out.raw").read_bytes() == (work / "disk.raw").read_bytes()
    again = cli(data_dir, "image", "export", "rel", "out.raw", "--format", "raw")
    assert again.exit_code != 0 and "[already_exists]" in again.output


def test_serve_takes_import_and_export_dirs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``serve --import-dir/--export-dir`` reach the daemon's settings."""
    from typer.testing import CliRunner

    from virtfleet.app import bootstrap
    from virtfleet.app.settings import Settings
    from virtfleet.cli.main import app

    seen: list[Settings] = []
    monkeypatch.setattr(bootstrap, "serve", seen.append)
    args = [
        "--data-dir",
        str(tmp_path),
        "serve",
        "--import-dir",
        "/srv/in",
        "--export-dir",
        "/srv/out",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (seen[0].import_path, seen[0].export_path) == (Path("/srv/in"), Path("/srv/out"))
