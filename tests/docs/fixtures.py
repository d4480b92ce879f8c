"""What a marked block may ask for first (``<!-- docs-run: fixture=NAME -->``): state a
reader is told they already have, made here without going through the document."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from .blocks import Command
from .runner import Run


def tiny(run: Run) -> None:
    """The ``tiny`` image (``virtfleet image build tiny``): built by the first document that
    needs it, kept for the others (a build costs over a second here)."""
    if "tiny" not in {i.name for i in run.client.list_images()}:
        code, out = run.run(Command("virtfleet image build tiny", 0))
        assert code == 0, out


def token(run: Run) -> None:
    """``$TOKEN``: an operator token, as ``virtfleet token create`` prints it."""
    made = run.client.create_token("operator", description="docs")
    run.env["TOKEN"] = made.token


def old_disks(run: Run) -> None:
    """In ``/srv/old``: ``disk.vmdk`` from another platform, ``backed.qcow2`` that names
    it as its backing file, and a cloud-init ``user-data.yaml``."""
    old = run.tmp / "srv" / "old"
    old.mkdir(parents=True, exist_ok=True)
    disk = old / "disk.vmdk"
    _qemu_img("create", "-q", "-f", "vmdk", str(disk), "64M")
    _qemu_img(
        "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "vmdk", str(old / "backed.qcow2")
    )
    (old / "user-data.yaml").write_text("#cloud-config\nruncmd: [echo hello]\n")


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True)


def srv_out(run: Run) -> None:
    """``/srv/out``: an empty directory for exports."""
    (run.tmp / "srv" / "out").mkdir(parents=True, exist_ok=True)


FIXTURES: dict[str, Callable[[Run], None]] = {
    "tiny": tiny,
    "token": token,
    "old-disks": old_disks,
    "srv-out": srv_out,
}
