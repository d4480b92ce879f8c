"""A VM's machine-state files besides its disks: UEFI variable stores and its TPM's state.

One layout wherever these files are kept: a VM's disk directory, a snapshot's directory
and a template's state directory all hold ``<mode>.vars.fd`` (one UEFI variable store per
firmware mode used) and ``tpm/<file>`` (swtpm's state). Owns naming them (relative names,
also the keys of a backup manifest's ``files``), reading them, and writing a set of them
into such a directory: each store replaced at once, the TPM directory replaced as a whole
(a file the set does not have must not outlive the state it belonged to).

Consistency: swtpm writes each state file to a temporary name and renames it over the old
one, so a copy taken while it runs is a state swtpm wrote (crash-consistent, like the
disks). Must not decide when files are taken (snapshots.py, backups.py, ops.py do).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TPM_DIR = "tpm"  # a TPM's state directory, beside the disks
VARS_SUFFIX = ".vars.fd"  # "<firmware mode>.vars.fd": a UEFI VM's variable store
_TPM_NEW, _TPM_OLD = ".tpm.new", ".tpm.old"  # a TPM directory being swapped in


def is_vars(name: str) -> bool:
    return name.endswith(VARS_SUFFIX) and "/" not in name and not name.startswith(".")


def is_tpm(name: str) -> bool:
    head, _, file = name.partition("/")
    return head == TPM_DIR and bool(file) and "/" not in file and not file.startswith(".")


def listing(root: Path) -> dict[str, Path]:
    """The machine-state files under ``root`` by relative name, sorted (swtpm's lock file
    and anything half-written, all dot files, left out)."""
    found = {p.name: p for p in root.glob(f"*{VARS_SUFFIX}") if is_vars(p.name)}
    tpm = root / TPM_DIR
    if tpm.is_dir():
        found |= {f"{TPM_DIR}/{p.name}": p for p in tpm.iterdir() if p.is_file()}
    return {name: found[name] for name in sorted(found) if is_vars(name) or is_tpm(name)}


def read(root: Path) -> dict[str, bytes]:
    """The contents of ``listing(root)`` (a few KiB of TPM state, ~0.5 MiB per store)."""
    return {name: path.read_bytes() for name, path in listing(root).items()}


def write(root: Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` (relative names) into ``root``: each variable store replaced at once;
    if ``files`` has TPM state, the TPM directory becomes exactly that. A name that is
    neither is skipped: a manifest never places files elsewhere. The files written."""
    written: list[Path] = []
    for name, data in files.items():
        if is_vars(name):
            _put(root / name, data)
            written.append(root / name)
    tpm = {name.partition("/")[2]: data for name, data in files.items() if is_tpm(name)}
    if tpm:
        written += _replace_tpm(root, tpm)
    return written


def copy(source: Path, dest: Path) -> list[Path]:
    """Copy the machine-state files of ``source`` into ``dest`` (made if needed)."""
    files = read(source)
    if files:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    return write(dest, files)


def discard_tpm(root: Path) -> None:
    """Remove the TPM state under ``root``: the next start manufactures a new TPM."""
    shutil.rmtree(root / TPM_DIR, ignore_errors=True)


def _put(path: Path, data: bytes) -> None:
    """Write ``path`` (0600, root's) without ever leaving it half-written."""
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    partial.chmod(0o600)
    os.replace(partial, path)


def _replace_tpm(root: Path, files: dict[str, bytes]) -> list[Path]:
    """Build the new TPM directory beside the old one, then swap them. Files are root's
    (0600): the driver gives the directory to swtpm's uid at its next start."""
    new, old = root / _TPM_NEW, root / _TPM_OLD
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    new.mkdir(mode=0o700)
    for name, data in files.items():
        _put(new / name, data)
    if (root / TPM_DIR).exists():
        os.rename(root / TPM_DIR, old)
    os.rename(new, root / TPM_DIR)
    shutil.rmtree(old, ignore_errors=True)
    return [root / TPM_DIR / name for name in files]
