"""The OCI runtime runner: crun or runc, chosen per host, driven through its CLI.

Owns choosing the runtime (crun unless it cannot work here, then runc; see
``choose_runtime``) and one method per runtime command (``create``, ``start``,
``kill``, ``delete``, ``state``, ``pause``, ``resume``, ``update``, ``exec``),
with errors translated once into ``ProcessError``. Every runtime's state lives
under our own ``--root`` so other users of crun/runc on the host are never
touched. Must not know about instances, bundles or consoles beyond paths.

The runtime's stdout/stderr always go to a file (a memfd; ``exec``'s on disk):
``create``/``exec`` hand them to the container's processes, and a pipe we read would
never reach EOF. A command
is waited for through its pidfd on the event loop (no waiter thread per process,
as asyncio's subprocesses need on Python 3.11).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from virtfleet.errors import ProcessError
from virtfleet.util.cgroups import CgroupLayout

COMMAND_TIMEOUT_S = 30.0
PID_FILE = "init.pid"  # in the bundle
MAX_EXEC_OUTPUT = 1024 * 1024
_MISSING = ("does not exist", "No such file or directory")  # runc, crun: unknown container


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime to use (empty if none) and, per candidate, why it can or cannot run."""

    binary: str
    reasons: dict[str, str]


def crun_blocker(layout: CgroupLayout, unified_controllers: str) -> str:
    """Why crun 1.x refuses this host, or "" (pure): hybrid mode with v2 controllers."""
    if layout.mode == "hybrid" and unified_controllers.split():
        held = ", ".join(unified_controllers.split())
        return (
            f"cgroups in hybrid mode with controllers on the cgroup2 mount ({held}); "
            "crun refuses this (mount those controllers as v1 hierarchies to use crun)"
        )
    return ""


def choose_runtime(layout: CgroupLayout, which: Any = shutil.which) -> RuntimeChoice:
    """crun by default, runc when crun is missing or cannot run on this host."""
    controllers = ""
    if layout.unified is not None:
        try:
            controllers = (layout.unified / "cgroup.controllers").read_text()
        except OSError:
            controllers = ""
    reasons: dict[str, str] = {}
    chosen = ""
    for name in ("crun", "runc"):
        path = which(name)
        blocker = "" if path is None or name != "crun" else crun_blocker(layout, controllers)
        if path is None:
            reasons[name] = f"{name} not installed"
        elif blocker:
            reasons[name] = blocker
        else:
            reasons[name] = "usable" + ("" if not chosen else f" (not used: {chosen} preferred)")
            chosen = chosen or path
    return RuntimeChoice(chosen, reasons)


@dataclass
class Command:
    """A runtime command running in the background, its output going to ``out``."""

    what: str  # e.g. "runc run": the prefix of its errors
    proc: subprocess.Popen[bytes]
    out: IO[bytes]
    pid_file: Path | None = None  # where a create was asked to write the init's pid

    async def output(self, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """Wait for the exit (killed on timeout or cancellation); the output, or
        ``ProcessError`` if it failed."""
        try:
            code = await _exit_code(self.proc, timeout_s)
        except TimeoutError as err:
            raise ProcessError(f"{self.what} timed out after {timeout_s:g}s") from err
        finally:
            self.out.seek(0)
            text = self.out.read().decode(errors="replace")
            self.out.close()
        if code != 0:
            # runc prefixes its own "runc run failed: ": said once.
            reason = _last_error(text).removeprefix(f"{self.what} failed: ")
            raise ProcessError(f"{self.what} failed: {reason}", output=text)
        return text

    def abandon(self) -> None:
        """Kill and reap it if it still runs (for one ``output`` was never awaited on)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
        self.out.close()


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


class Runtime:
    """One runtime binary with its state directory ``root``."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root

    @property
    def name(self) -> str:
        return Path(self.binary).name

    async def _run(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """Run ``<runtime> --root ROOT args``: its output (through a file, never a pipe),
        or ``ProcessError`` if it failed or timed out."""
        return await self._spawn(*args).output(timeout_s)

    def _spawn(self, *args: str) -> Command:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        out = _capture(args[0])
        try:
            proc = _popen([self.binary, "--root", str(self.root), *args], out, out)
        except BaseException:
            out.close()
            raise
        return Command(f"{self.name} {args[0]}", proc, out)

    @property
    def console_from_init(self) -> bool:
        """Whether the container's init itself sends the console: runc makes the pty in
        the init, which sends the master, so the sender's pid is the init's."""
        return self.name == "runc"

    def create(
        self, cid: str, bundle: Path, console_socket: Path | None, *, run: bool = False
    ) -> Command:
        """Spawn ``create`` (init waiting for ``start``; with ``run`` the init runs: ``run
        --detach``) now, not when a task gets to it; ``init_pid`` after it ended.

        No ``--pid-file`` when the console's sender is the init: runc writes that file
        with O_SYNC, a journal commit (~1.5 ms of a start here) for a pid we get anyway."""
        command = ["run", "--detach"] if run else ["create"]
        args = [*command, "--bundle", str(bundle)]
        pid_file = None
        if console_socket is None or not self.console_from_init:
            pid_file = bundle / PID_FILE
            args += ["--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        spawned = self._spawn(*args, cid)
        spawned.pid_file = pid_file
        return spawned

    async def init_pid(self, cid: str, created: Command, console_sender: int | None) -> int:
        """The init's host pid once ``created`` ended: the console's sender if that is a
        pid namespace's init (checked, not assumed), else the pid file it was asked to
        write (never one an earlier start left), else the runtime's state."""
        if console_sender is not None and self.console_from_init:
            if is_namespace_init(console_sender):
                return console_sender
        elif created.pid_file is not None:
            with contextlib.suppress(OSError, ValueError):
                return int(created.pid_file.read_text().strip())
        state = await self.state(cid)
        pid = state.get("pid") if state else None
        if not isinstance(pid, int) or pid <= 0:
            raise ProcessError(f"{self.name} create left no running init for {cid}")
        return pid

    async def start(self, cid: str) -> None:
        await self._run("start", cid)

    async def kill(self, cid: str, signal: str) -> None:
        await self._run("kill", cid, signal)

    async def delete(self, cid: str, force: bool = False) -> None:
        """Remove the container's runtime state (and cgroup); a missing one is success."""
        if await self.state(cid) is not None:
            await self._run("delete", *(["--force"] if force else []), cid)
        self._forget(cid)

    def _forget(self, cid: str) -> None:
        """Remove a state directory the runtime no longer knows: a create killed before it
        saved its state leaves one, and the runtime then refuses the id for good
        ("container with given ID already exists")."""
        path = self.root / cid
        if path.parent == self.root and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)

    async def state(self, cid: str) -> dict[str, Any] | None:
        """The runtime's state document, or None if it does not know ``cid``."""
        try:
            text = await self._run("state", cid)
        except ProcessError as err:
            if any(m in err.message for m in _MISSING):
                return None
            raise
        data: dict[str, Any] = json.loads(text)
        return data

    async def pause(self, cid: str) -> None:
        await self._run("pause", cid)

    async def resume(self, cid: str) -> None:
        await self._run("resume", cid)

    async def update(self, cid: str, resources: dict[str, Any]) -> None:
        """Change cgroup limits of a live container (``linux.resources`` syntax)."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=self.root) as spec:
            json.dump(resources, spec)
            spec.flush()
            await self._run("update", "--resources", spec.name, cid)

    async def exec(self, cid: str, argv: list[str], timeout_s: float) -> ExecResult:
        """Run ``argv`` in the container and wait; output captured through files."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        cmd = [self.binary, "--root", str(self.root), "exec", cid, *argv]
        with (  # on disk: what runs in the container may write without end
            tempfile.TemporaryFile(dir=self.root) as out,
            tempfile.TemporaryFile(dir=self.root) as err,
        ):
            proc = _popen(cmd, out, err)
            try:
                code = await _exit_code(proc, timeout_s)
            except TimeoutError as exc:
                raise ProcessError(f"exec {argv[0]!r} timed out after {timeout_s:g}s") from exc
            return ExecResult(code, _capped(out), _capped(err))


def is_namespace_init(pid: int) -> bool:
    """Whether ``pid`` is pid 1 of a pid namespace below ours (``NSpid`` in its status)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"NSpid:"):
                    ids = line.split()[1:]
                    return len(ids) > 1 and ids[-1] == b"1"
    except OSError:
        pass
    return False


def _capture(name: str) -> IO[bytes]:
    """An anonymous in-memory file for a runtime command's own output (a file, never a
    pipe; no disk write: an O_TMPFILE on the data disk cost ~0.13 ms per start). Only the
    runtime writes there: a container's init runs on its pty (``terminal``)."""
    return os.fdopen(os.memfd_create(name, os.MFD_CLOEXEC), "w+b")


def _popen(argv: list[str], out: IO[bytes], err: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
    )


async def _exit_code(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Wait up to ``timeout_s`` for ``proc`` to exit (its pidfd turns readable) and reap it.
    On timeout or cancellation the process is killed and reaped before the error goes on."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    pidfd = os.pidfd_open(proc.pid)
    loop.add_reader(pidfd, _resolve, exited)
    try:
        async with asyncio.timeout(timeout_s):
            await exited
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if proc.returncode is None:
            proc.wait()  # exited or killed: returns at once
    return proc.returncode


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _capped(f: IO[bytes]) -> str:
    """The first ``MAX_EXEC_OUTPUT`` bytes of an exec's output file (an API answer, not a log)."""
    size = f.seek(0, 2)
    f.seek(0)
    text = f.read(MAX_EXEC_OUTPUT).decode(errors="replace")
    cut = size - MAX_EXEC_OUTPUT
    return text + (f"\n[{cut} more bytes cut]\n" if cut > 0 else "")


def _last_error(text: str) -> str:
    """The runtime's last meaningful line (runc logs JSON-ish ``level=error msg=...``)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "(no output)"
    last = lines[-1]
    if 'msg="' in last:
        last = last.split('msg="', 1)[1].rsplit('"', 1)[0]
    return last[-400:]
