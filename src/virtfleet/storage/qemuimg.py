"""The one place ``qemu-img`` runs: info, check, convert (with progress), compare, create,
rebase, resize, bitmaps and map, on untrusted files (jailed) and the daemon's own.

Owns running qemu-img and translating its failures into the error tree (``ImageError``
with qemu-img's own last line for images read; ``ProcessError`` for what the daemon
does to its own files), the mode of new image files (``private``), and the ``Jail``
untrusted files are handled in: an unprivileged user, no supplementary groups, no new
privileges, ``prlimit`` bounds on address space and CPU time, files passed as inherited
descriptors (``/dev/fd/N``). Must not decide policy (which formats are allowed, where
files go): imports.py, clones.py and the host's disk, snapshot and backup code do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from virtfleet.errors import ImageError, ProcessError

QEMU_IMG = "qemu-img"
INFO_TIMEOUT_S = 60.0
Progress = Callable[[int, str], Awaitable[None]]  # e.g. an operation's ``ctx.progress``
_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
# qemu-img check: 0 clean, 2 corruptions, 3 leaked clusters only, 63 check unsupported.
CHECK_OK = (0, 3, 63)


@dataclass(frozen=True)
class Jail:
    """How qemu-img runs on untrusted files: as ``user`` (None: as the daemon itself)
    with at most ``memory_bytes`` of address space and ``cpu_s`` seconds of CPU."""

    user: str | None = None
    memory_bytes: int = 1 << 30  # 128 MiB converts a disk; headroom for big qcow2 caches
    cpu_s: int = 3600

    def trusted(self) -> Jail:
        """The same limits, run as the daemon (for the daemon's own images)."""
        return Jail(None, self.memory_bytes, self.cpu_s)

    def argv(self, args: Sequence[str], cpu_s: int | None = None) -> list[str]:
        """``qemu-img ARGS`` wrapped in setpriv (user) and prlimit (limits)."""
        cpu = cpu_s or self.cpu_s  # soft limit: SIGXCPU (reported as such); hard: SIGKILL
        limits = ["prlimit", f"--as={self.memory_bytes}", f"--cpu={cpu}:{cpu + 5}"]
        argv = [*limits, "--core=0", "--", QEMU_IMG, *args]
        if self.user is None or os.geteuid() != 0:
            return argv
        entry = pwd.getpwnam(self.user)
        ids = [f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
        return ["setpriv", *ids, "--no-new-privs", "--", *argv]

    @property
    def ids(self) -> tuple[int, int] | None:
        """(uid, gid) the jailed qemu-img runs as; None: the daemon's own."""
        if self.user is None or os.geteuid() != 0:
            return None
        entry = pwd.getpwnam(self.user)
        return entry.pw_uid, entry.pw_gid

    @property
    def uid(self) -> int | None:
        return None if self.ids is None else self.ids[0]

    def lend(self, fd: int) -> None:
        """Let the jailed user open (through /dev/fd) the daemon's work file ``fd``."""
        if self.ids is not None:
            os.fchown(fd, *self.ids)

    def reclaim(self, fd: int) -> None:
        """Take a lent work file back (the jailed user can no longer reach it)."""
        if self.ids is not None:
            os.fchown(fd, os.geteuid(), os.getegid())

    def can_read(self, fd: int) -> bool:
        """Whether the jailed user may reopen the file at ``fd`` (inode permissions)."""
        if self.ids is None:
            return True
        st = os.fstat(fd)
        uid, gid = self.ids
        if st.st_uid == uid:
            return bool(st.st_mode & 0o400)
        return bool(st.st_mode & (0o040 if st.st_gid == gid else 0o004))


#: Few malloc arenas: qemu-img's threads would otherwise reserve 64 MiB each.
JAIL_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "MALLOC_ARENA_MAX": "2"}


def fd_path(fd: int) -> str:
    """The name qemu-img opens an inherited descriptor by."""
    return f"/dev/fd/{fd}"


async def _spawn(
    args: Sequence[str], jail: Jail | None, fds: Sequence[int], cpu_s: int | None = None
) -> asyncio.subprocess.Process:
    argv = jail.argv(args, cpu_s) if jail is not None else [QEMU_IMG, *args]
    try:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=tuple(fds), cwd="/",
            env=JAIL_ENV if jail is not None else None,
        )  # fmt: skip
    except OSError as exc:
        raise ProcessError(f"cannot run {argv[0]}: {exc}") from exc


def _killed(code: int) -> str:
    """Why a jailed qemu-img died of a signal (its limits), else ''."""
    if code >= 0:
        return ""
    if -code == signal.SIGXCPU:
        return "qemu-img exceeded its CPU time limit"
    return f"qemu-img was killed by signal {-code} (memory limit or a hostile image)"


async def run(
    args: list[str], timeout_s: float = INFO_TIMEOUT_S, jail: Jail | None = None,
    fds: Sequence[int] = (),
) -> tuple[int, bytes, str]:  # fmt: skip
    """Run ``qemu-img ARGS`` (in ``jail``, with ``fds`` inherited); (exit code, stdout,
    last stderr line)."""
    code, out, err = await _communicate(args, timeout_s, jail, fds)
    return code, out, _killed(code) or _last_line(err)


async def _communicate(
    args: Sequence[str], timeout_s: float | None, jail: Jail | None = None, fds: Sequence[int] = ()
) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr); the process is killed if cancelled or out of time."""
    cpu_s = int(timeout_s) if jail is not None and timeout_s is not None else None
    proc = await _spawn(args, jail, fds, cpu_s=cpu_s)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise ProcessError(f"qemu-img {args[0]} did not finish within {timeout_s:g}s") from exc
        raise
    return proc.returncode or 0, out, err


async def tool(args: Sequence[str]) -> bytes:
    """``qemu-img ARGS`` on the daemon's own files (no jail, no time limit: a rebase of a big
    disk takes what it takes); its stdout, or ``ProcessError`` with stderr's last lines."""
    code, out, err = await _communicate(args, None)
    if code != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        raise ProcessError(f"qemu-img {args[0]} failed: {' | '.join(detail[-3:])}")
    return out


def _last_line(err: bytes) -> str:
    lines = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


async def info(
    path: Path | str, fmt: str | None = None, chain: bool = False,
    jail: Jail | None = None, fds: Sequence[int] = (), label: str = "", shared: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """``qemu-img info`` of ``path`` (and its backing chain with ``chain``), one dict per layer;
    ``shared``: without taking the image lock (a running QEMU may hold the file)."""
    args = ["info", "--output=json", *(["-f", fmt] if fmt else [])]
    args += ["--backing-chain"] if chain else []
    args += ["-U"] if shared else []
    code, out, err = await run([*args, str(path)], jail=jail, fds=fds)
    if code != 0:
        name = label or Path(path).name
        raise ImageError(f"cannot read image {name}: {_strip(err)}", stderr=err)
    data = json.loads(out)
    return cast(list[dict[str, Any]], data if isinstance(data, list) else [data])


async def check(
    path: Path | str, fmt: str, jail: Jail | None = None, fds: Sequence[int] = (), label: str = ""
) -> None:
    """Raise ``ImageError`` if ``qemu-img check`` finds corruption in ``path``."""
    code, _, err = await run(["check", "-q", "-f", fmt, str(path)], 600.0, jail, fds)
    if code not in CHECK_OK:
        name = label or Path(path).name
        raise ImageError(f"image {name} is corrupt: {_strip(err) or f'check exit {code}'}")


async def convert(
    src: Path | str, src_fmt: str, dest: Path | str, dest_fmt: str,
    progress: Progress | None = None, options: str = "",
    jail: Jail | None = None, fds: Sequence[int] = (), label: str = "",
) -> None:  # fmt: skip
    """``qemu-img convert -p`` reporting percent done to ``progress``; ``ImageError`` on failure.

    ``dest`` is left for the caller to remove on failure (it may be partly written).
    """
    args = ["convert", "-p", "-f", src_fmt, "-O", dest_fmt]
    args += ["-o", options] if options else []
    proc = await _spawn([*args, str(src), str(dest)], jail, fds)
    try:
        err_task = asyncio.create_task(proc.stderr.read())  # type: ignore[union-attr]
        await _follow_progress(proc.stdout, progress)  # type: ignore[arg-type]
        code = await proc.wait()
        err = _killed(code) or _last_line(await err_task)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if code != 0:
        name = label or Path(src).name
        raise ImageError(f"converting {name} failed: {_strip(err)}", stderr=err)


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


async def virtual_size(path: Path, fmt: str | None = None) -> int:
    """The guest-visible size of one of the daemon's images (it may be in use)."""
    return int((await info(path, fmt, shared=True))[0]["virtual-size"])


async def create(
    path: Path, size: int | None = None, backing: Path | None = None, unsafe: bool = False
) -> None:
    """A new qcow2 (``size`` bytes; None: the backing file's size) over the qcow2 ``backing``,
    named by absolute path with its format given: never probed (a raw image could lie).
    ``unsafe``: ``backing`` is not opened (it may not exist under that name yet)."""
    args = ["create", "-q", "-f", "qcow2", *(["-u"] if unsafe else [])]
    args += ["-b", str(backing), "-F", "qcow2"] if backing is not None else []
    await tool([*args, str(path), *([str(size)] if size is not None else [])])


async def overlay(path: Path, backing: Path, size: int) -> None:
    """A new qcow2 over ``backing`` (not opened: it may not exist under that name yet)."""
    await create(path, size, backing, unsafe=True)


async def rebase(path: Path, backing: str) -> None:
    """Make ``backing`` (a qcow2; "": none) the backing file of ``path``, copying what differs."""
    fmt = ["-F", "qcow2"] if backing else []
    await tool(["rebase", "-q", "-f", "qcow2", "-b", backing, *fmt, str(path)])


async def resize(path: Path, size: int) -> None:
    await tool(["resize", "-q", "-f", "qcow2", str(path), str(size)])


async def bitmap(path: Path, action: Literal["add", "remove"], name: str) -> None:
    """Add or remove the persistent dirty bitmap ``name`` of the qcow2 ``path`` (offline)."""
    await tool(["bitmap", f"--{action}", str(path), name])


def map_extents(source: Sequence[str], what: str) -> list[dict[str, Any]]:
    """``qemu-img map --output=json SOURCE`` (blocking: for worker threads); ``what`` names
    the source in the ``ProcessError`` on failure."""
    argv = [QEMU_IMG, "map", "--output=json", *source]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProcessError(f"qemu-img map of {what} failed: {proc.stderr.strip()[-300:]}")
    return cast(list[dict[str, Any]], json.loads(proc.stdout))


def private(path: Path) -> None:
    """Only root may open ``path``; a running QEMU gets it as a descriptor (``add-fd``)."""
    os.chmod(path, 0o600)


def _strip(err: str) -> str:
    """qemu-img's message without its ``qemu-img: <path>:`` prefix noise."""
    return re.sub(r"^qemu-img:\s*", "", err)[:300]
