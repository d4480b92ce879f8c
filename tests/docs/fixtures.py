"""What a marked block may ask for first (``<!-- docs-run: fixture=NAME -->``): state a
reader is told they already have, made here without going through the document."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from .runner import Run


def token(run: Run) -> None:
    """``$TOKEN``: an operator token, as ``virtfleet token create`` prints it."""
    made = run.client.create_token("operator", description="docs")
    run.env["TOKEN"] = made.token


def old_disks(run: Run) -> None:
    """``/srv/old/disk.vmdk`` and ``/srv/old/disk.qcow2``: disks from another platform."""
    old = run.tmp / "srv" / "old"
    old.mkdir(parents=True, exist_ok=True)
    for fmt in ("vmdk", "qcow2"):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", fmt, str(old / f"disk.{fmt}"), "64M"], check=True
        )


def srv_out(run: Run) -> None:
    """``/srv/out``: an empty directory for exports."""
    (run.tmp / "srv" / "out").mkdir(parents=True, exist_ok=True)


FIXTURES: dict[str, Callable[[Run], None]] = {
    "token": token,
    "old-disks": old_disks,
    "srv-out": srv_out,
}
