"""Small async wrappers around ``qemu-img`` and the modes of new image files.

Owns running ``qemu-img`` (create overlays, info, rebase, convert, compare) with
errors translated to ``ProcessError``, and keeping new image files root's alone:
QEMU (its own uid per VM, chrooted) never opens them by path, it gets descriptors.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from virtfleet.errors import ProcessError


async def run(args: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        raise ProcessError(f"{args[0]} {args[1]} failed: {' | '.join(detail[-3:])}")
    return out.decode(errors="replace")


async def info(qemu_img: str, path: Path) -> dict[str, Any]:
    """``qemu-img info`` (shared lock: the image may be open by a running QEMU)."""
    out = await run([qemu_img, "info", "-U", "--output=json", str(path)])
    data: dict[str, Any] = json.loads(out)
    return data


async def overlay(qemu_img: str, path: Path, backing: Path, size: int) -> None:
    """A new qcow2 over ``backing`` (not opened: it may not exist under that name yet)."""
    args = [qemu_img, "create", "-q", "-f", "qcow2", "-u", "-b", str(backing), "-F", "qcow2"]
    await run([*args, str(path), str(size)])


def private(path: Path) -> None:
    """Only root may open ``path``; a running QEMU gets it as a descriptor (``add-fd``)."""
    os.chmod(path, 0o600)
