"""Fetching a registry image into a local OCI layout through skopeo (Debian's package).

Owns the ``skopeo copy docker://REF oci:DIR:latest`` call and its errors. Must not
parse images: the layout it writes is imported like any other.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from virtfleet.errors import HostError, InvalidInputError, ProcessError

COPY_TIMEOUT_S = 3600.0


def fetch(ref: str, dest: Path, skopeo: str = "skopeo") -> Path:
    """Copy ``docker://…`` image ``ref`` into a new OCI layout ``dest``; returns it."""
    if not ref.startswith("docker://") or len(ref) <= len("docker://"):
        raise InvalidInputError(f"--from takes docker://REFERENCE, not {ref[:200]!r}")
    binary = shutil.which(skopeo)
    if binary is None:
        raise HostError("skopeo is not installed (apt-get install skopeo)")
    argv = [binary, "copy", "--quiet", ref, f"oci:{dest}:latest"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=COPY_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as err:
        raise ProcessError(f"skopeo copy {ref} timed out") from err
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ProcessError(f"skopeo copy {ref} failed: {tail[-400:]}")
    return dest
