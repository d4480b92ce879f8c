"""Async wrappers around ``qemu-img``: info, check, convert (with progress), compare.

Owns running qemu-img and translating its failures into the error tree
(``ImageError`` with qemu-img's own last line). Must not decide policy (which
formats are allowed, where files go): imports.py and clones.py do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from virtfleet.errors import ImageError, ProcessError

QEMU_IMG = "qemu-img"
INFO_TIMEOUT_S = 60.0
Progress = Callable[[int, str], Awaitable[None]]  # e.g. an operation's ``ctx.progress``
_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
# qemu-img check: 0 clean, 2 corruptions, 3 leaked clusters only, 63 check unsupported.
CHECK_OK = (0, 3, 63)


async def run(args: list[str], timeout_s: float = INFO_TIMEOUT_S) -> tuple[int, bytes, str]:
    """Run ``qemu-img ARGS``; (exit code, stdout, last stderr line)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            QEMU_IMG, *args, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:
        raise ProcessError(f"cannot run {QEMU_IMG}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out, _last_line(err)


def _last_line(err: bytes) -> str:
    lines = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


async def info(path: Path, fmt: str | None = None, chain: bool = False) -> list[dict[str, Any]]:
    """``qemu-img info`` of ``path`` (and its backing chain with ``chain``), one dict per layer."""
    args = ["info", "--output=json", *(["-f", fmt] if fmt else [])]
    args += ["--backing-chain"] if chain else []
    code, out, err = await run([*args, str(path)])
    if code != 0:
        raise ImageError(f"cannot read image {path.name}: {_strip(err)}", stderr=err)
    data = json.loads(out)
    return cast(list[dict[str, Any]], data if isinstance(data, list) else [data])


async def check(path: Path, fmt: str) -> None:
    """Raise ``ImageError`` if ``qemu-img check`` finds corruption in ``path``."""
    code, _, err = await run(["check", "-q", "-f", fmt, str(path)], timeout_s=600.0)
    if code not in CHECK_OK:
        raise ImageError(f"image {path.name} is corrupt: {_strip(err) or f'check exit {code}'}")


async def convert(
    src: Path, src_fmt: str, dest: Path, dest_fmt: str, progress: Progress | None = None,
    options: str = "",
) -> None:  # fmt: skip
    """``qemu-img convert -p`` reporting percent done to ``progress``; ``ImageError`` on failure.

    ``dest`` is left for the caller to remove on failure (it may be partly written).
    """
    args = [QEMU_IMG, "convert", "-p", "-f", src_fmt, "-O", dest_fmt]
    args += ["-o", options] if options else []
    proc = await asyncio.create_subprocess_exec(
        *args, str(src), str(dest), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        err_task = asyncio.create_task(proc.stderr.read())  # type: ignore[union-attr]
        await _follow_progress(proc.stdout, progress)  # type: ignore[arg-type]
        code = await proc.wait()
        err = _last_line(await err_task)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if code != 0:
        raise ImageError(f"converting {src.name} failed: {_strip(err)}", stderr=err)


async def _follow_progress(stream: asyncio.StreamReader, progress: Progress | None) -> None:
    """Parse ``(12.34/100%)`` updates, which qemu-img separates with carriage returns."""
    last = -1
    while chunk := await stream.read(256):
        for match in _PERCENT.finditer(chunk):
            pct = int(float(match.group(1)))
            if progress is not None and pct != last:
                last = pct
                await progress(pct, f"converted {pct}%")


async def compare(a: Path, b: Path) -> bool:
    """Whether the guest-visible contents of ``a`` and ``b`` are identical."""
    code, _, err = await run(["compare", "-q", str(a), str(b)], timeout_s=600.0)
    if code > 1:
        raise ImageError(f"cannot compare {a.name} and {b.name}: {_strip(err)}")
    return code == 0


def _strip(err: str) -> str:
    """qemu-img's message without its ``qemu-img: <path>:`` prefix noise."""
    return re.sub(r"^qemu-img:\s*", "", err)[:300]
