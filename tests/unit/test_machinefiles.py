"""Machine-state files (host/machinefiles.py): one naming for UEFI stores and TPM state,
names from a backup manifest never place a file elsewhere, and a TPM directory is
replaced as a whole; swtpm's start gives restored files to its uid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from virtfleet.drivers.qemu import swtpm
from virtfleet.host import machinefiles


def test_listing_names_stores_and_tpm_files_but_no_lock_or_partial_file(tmp_path: Path) -> None:
    (tmp_path / "uefi.vars.fd").write_bytes(b"vars")
    (tmp_path / ".uefi.vars.fd.part").write_bytes(b"half")
    (tmp_path / "root.qcow2").write_bytes(b"disk")
    (tmp_path / "tpm").mkdir()
    (tmp_path / "tpm" / "tpm2-00.permall").write_bytes(b"perm")
    (tmp_path / "tpm" / ".lock").write_bytes(b"")
    assert machinefiles.read(tmp_path) == {"tpm/tpm2-00.permall": b"perm", "uefi.vars.fd": b"vars"}


def test_write_skips_names_that_would_leave_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "vm"
    root.mkdir()
    bad = ["../x.vars.fd", "tpm/../../x", "tpm/a/b", "tpm/.lock", "tpm/", "other/file", "x.qcow2"]
    written = machinefiles.write(root, dict.fromkeys(bad, b"evil"))
    assert written == [] and list(tmp_path.rglob("*")) == [root]


def test_tpm_state_is_replaced_as_a_whole(tmp_path: Path) -> None:
    """Files of the old state that the new one lacks go; without TPM files, none is touched."""
    tpm = tmp_path / "tpm"
    tpm.mkdir()
    (tpm / "tpm2-00.volatilestate").write_bytes(b"stale")
    machinefiles.write(tmp_path, {"tpm/tpm2-00.permall": b"new"})
    assert sorted(p.name for p in tpm.iterdir()) == ["tpm2-00.permall"]
    assert (tpm / "tpm2-00.permall").stat().st_mode & 0o777 == 0o600
    machinefiles.write(tmp_path, {"uefi.vars.fd": b"vars"})
    assert (tpm / "tpm2-00.permall").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tpm", "uefi.vars.fd"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_swtpm_start_gives_the_state_files_to_its_uid(tmp_path: Path) -> None:
    """A revert writes the state as root's: preparing swtpm's start hands it to its uid."""
    machinefiles.write(tmp_path, {"tpm/tpm2-00.permall": b"perm"})
    swtpm.prepare_state(tmp_path / "tpm", 4242)
    for path in (tmp_path / "tpm", tmp_path / "tpm" / "tpm2-00.permall"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4242, 4242)
