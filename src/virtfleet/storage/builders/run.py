"""The builders' subprocess runner: every host tool a recipe needs runs through ``run``.

Failures map to the project's error codes: a tool that is not installed is
``HostError`` (``host_unsupported``, naming its Debian package and the bootstrap
script); a non-zero exit is ``ProcessError`` (``process_failed``) with the tail of
its output; a run past its timeout has its whole process group killed and is
``TimeoutError_`` (``timeout``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from virtfleet.errors import HostError, ProcessError, TimeoutError_

DEFAULT_TIMEOUT_S = 600.0

#: Host tools the builders run, with the Debian package that ships each.
PACKAGES = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "cp": "coreutils",
    "debootstrap": "debootstrap",
    "depmod": "kmod",
    "dpkg-deb": "dpkg",
    "mcopy": "mtools",
    "mke2fs": "e2fsprogs",
    "mkfs.fat": "dosfstools",
    "qemu-img": "qemu-utils",
    "sfdisk": "fdisk",
    "syslinux": "syslinux",
}


def run(
    cmd: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Run a host tool in its own process group and return its stdout."""
    args = [str(arg) for arg in cmd]
    env = {**os.environ, "LC_ALL": "C", "MTOOLS_SKIP_CHECK": "1"}
    try:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, text=True, errors="replace", start_new_session=True,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
    except OSError as err:
        if shutil.which(args[0]) is None:
            raise _missing([args[0]]) from err
        raise ProcessError(f"cannot run {args[0]}: {err.strerror}", command=args) from err
    out, err_text = _communicate(proc, stdin, timeout_s, args)
    if proc.returncode != 0:
        tail = output_tail(err_text or out)
        raise ProcessError(
            f"{args[0]} failed (exit {proc.returncode}): {tail}",
            command=args, returncode=proc.returncode, stderr=tail,
        )  # fmt: skip
    return out


def _communicate(
    proc: subprocess.Popen[str], stdin: str | None, timeout_s: float, args: list[str]
) -> tuple[str, str]:
    try:
        return proc.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise TimeoutError_(
            f"{args[0]} did not finish within {timeout_s:g} s", command=args
        ) from None
    except BaseException:
        _kill_group(proc)  # interrupted: leave no helper (or its children) running
        raise


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def output_tail(text: str, lines: int = 3, limit: int = 400) -> str:
    """The last non-blank lines of a tool's output, joined on one line."""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-limit:] or "(no output)"


def require_tools(what: str, tools: Iterable[str], files: Mapping[Path, str] | None = None) -> None:
    """Fail with ``HostError`` naming every missing tool (and data file: its package)."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    absent = {path: pkg for path, pkg in (files or {}).items() if not path.is_file()}
    if missing or absent:
        raise _missing(missing, absent, what)


def _missing(
    tools: list[str], files: Mapping[Path, str] | None = None, what: str = ""
) -> HostError:
    names = [f"{tool} ({PACKAGES.get(tool, 'not packaged')})" for tool in tools]
    names += [f"{path} ({pkg})" for path, pkg in (files or {}).items()]
    needs = f"{what} needs" if what else "needs"
    return HostError(f"{needs} {', '.join(names)}; run scripts/bootstrap.sh")
