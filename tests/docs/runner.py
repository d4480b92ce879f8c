"""Runs documented commands against a real ``virtfleet serve`` process (fake driver).

One daemon (own data directory, loopback HTTPS listener on a free port) serves every
document; each document starts from an empty daemon (``Reset``) and its own scratch
directory, and runs its blocks in order, as a reader would. ``virtfleet`` commands run in this
process through the CLI's own command tree (a Python start per command would cost more than
the daemon's work); anything else (``curl``) runs in bash with the daemon's environment.

The few things a document names that a test machine cannot have are substituted, the same
for every document: see ``SUBSTITUTIONS`` and ``Run.placeholders``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import typer.main
from typer.testing import CliRunner

from virtfleet.cli.main import app as cli_app
from virtfleet.cli.main import main as cli_main
from virtfleet.client import Client
from virtfleet.client.backups import list_backups
from virtfleet.client.errors import DaemonUnavailableError

from .blocks import PROGRAMS, Command
from .usage import cli_command

VIRTFLEET = str(Path(sys.executable).parent / "virtfleet")
CACHE = os.environ.get("VIRTFLEET_CACHE_DIR", "/var/cache/virtfleet")
# Host paths and addresses the documents use -> the test's own ({tmp}, {data}, {port}).
SUBSTITUTIONS = {
    "/var/lib/virtfleet": "{data}",
    "/srv/": "{tmp}/srv/",
    "10.0.0.5:8006": "127.0.0.1:{port}",
    "127.0.0.1:8006": "127.0.0.1:{port}",
}


def plain_pipeline(text: str) -> list[str] | None:
    """The segments of ``a | b | c`` when a single ``|`` is the only shell syntax outside
    quotes; None for anything else (redirections, ``;``, ``&&``, ``$(...)``...)."""
    segments, current, quote = [], "", ""
    for i, ch in enumerate(text):
        substitution = ch == "`" or text[i : i + 2] == "$("
        if quote:
            if quote == '"' and substitution:
                return None  # expanded inside double quotes too
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "|" and "|" not in (text[i - 1 : i], text[i + 1 : i + 2]):
            segments.append(current.strip())
            current = ""
            continue
        elif ch in ";&<>()|" or substitution:
            return None
        current += ch
    return [*segments, current.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DocsDaemon:
    """``virtfleet serve --driver fake`` on its own data directory and loopback port."""

    def __init__(self, tmp: Path) -> None:
        self.data_dir = tmp / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        listen = f"127.0.0.1:{self.port}"
        args = ["serve", "--driver", "fake", "--listen", listen, "--tls", "--metrics-interval", "1"]
        log = open(self.data_dir.parent / "daemon.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [VIRTFLEET, "--data-dir", str(self.data_dir), *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env={**os.environ, "VIRTFLEET_CACHE_DIR": CACHE},
        )  # fmt: skip
        log.close()
        self._wait_serving()

    def _wait_serving(self, timeout_s: float = 60) -> None:
        assert self.proc is not None
        client = Client(uds_path=self.data_dir / "api.sock")
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}"
            with contextlib.suppress(DaemonUnavailableError):
                client.list_instances()
                return
            assert time.monotonic() < deadline, "the daemon did not start serving"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Reset:
    """Takes a daemon back to empty between documents through its REST API (one daemon
    for all documents: a ``serve`` start costs seconds here, a reset a fraction of one)."""

    # (list path, item key, delete path); in order: clones before templates, users before tokens
    KINDS = [
        ("/1.0/backup-schedules", "name", "/1.0/backup-schedules/{}"),
        ("/1.0/backups", "id", "/1.0/backups/{}"),
        ("/1.0/templates", "name", "/1.0/templates/{}"),
        ("/1.0/images", "name", "/1.0/images/{}"),
        ("/1.0/networks", "name", "/1.0/networks/{}"),
        ("/1.0/disks", "name", "/1.0/disks/{}"),
        ("/1.0/users", "username", "/1.0/users/{}"),
        ("/1.0/tokens", "id", "/1.0/tokens/{}"),
    ]

    def __init__(self, data_dir: Path, keep_images: set[str]) -> None:
        self.keep_images = keep_images  # built once, kept for the next documents
        transport = httpx.HTTPTransport(uds=str(data_dir / "api.sock"))
        self.http = httpx.Client(transport=transport, base_url="http://virtfleet", timeout=60)

    def __call__(self) -> None:
        with self.http:
            self._reset()

    def _reset(self) -> None:
        names = [i["name"] for i in self._get("/1.0/instances")]
        self._wait([self._delete(f"/1.0/instances/{n}", force="true", disks="true") for n in names])
        for rule in self._get("/1.0/alerts/rules"):
            if not rule.get("builtin", True):
                self._delete(f"/1.0/alerts/rules/{rule['name']}")
        for listing, key, path in self.KINDS:
            keep = {"admin", *self.keep_images}  # the first admin; images built once
            items = [i for i in self._get(listing) if i.get(key) not in keep]
            self._wait([self._delete(path.format(i[key])) for i in items])

    def _get(self, path: str) -> list[dict[str, Any]]:
        r = self.http.get(path)
        r.raise_for_status()
        return list(r.json())

    def _delete(self, path: str, **params: str) -> dict[str, Any]:
        r = self.http.delete(path, params=params)
        assert r.status_code < 300 or r.status_code == 404, f"DELETE {path}: {r.text}"
        return dict(r.json()) if r.status_code == 202 else {}

    def _wait(self, ops: list[dict[str, Any]]) -> None:
        for op in ops:
            if "id" in op:
                r = self.http.get(f"/1.0/operations/{op['id']}/wait", params={"timeout_s": 60})
                assert r.json()["status"] == "success", r.text


class Run:
    """One document's run: its daemon, environment (``$TOKEN``...) and scratch space."""

    def __init__(self, tmp: Path, daemon: DocsDaemon) -> None:
        self.tmp = tmp
        self.daemon = daemon
        self.client = Client(uds_path=daemon.data_dir / "api.sock")
        self.env = {
            "VIRTFLEET_DATA_DIR": str(daemon.data_dir),
            "VIRTFLEET_CONFIG_DIR": str(tmp / "config"),
            "VIRTFLEET_REMOTE": "",
            "COLUMNS": "200",  # long tmp paths: no wrapping in the middle of a shown line
            "PATH": f"{Path(VIRTFLEET).parent}:{os.environ['PATH']}",
        }

    def substitute(self, text: str) -> str:
        for old, new in SUBSTITUTIONS.items():
            text = text.replace(
                old, new.format(tmp=self.tmp, data=self.daemon.data_dir, port=self.daemon.port)
            )
        for name, value in self.placeholders(text).items():
            text = text.replace(name, value)
        return text

    def placeholders(self, text: str) -> dict[str, str]:
        """Upper-case names a document writes for ids it cannot know in advance."""
        found = {}
        if "BACKUP_ID" in text:
            backups = self.client.call(list_backups())
            found["BACKUP_ID"] = max(backups, key=lambda b: b.created_at).id  # the newest
        return found

    def run(self, command: Command) -> tuple[int, str]:
        """Exit status and output (stdout and stderr) of one documented command. A
        ``virtfleet`` call runs in process, also at the head of a pipeline (the rest runs in
        bash on its output) or fed by ``echo WORDS |``; anything else runs in bash."""
        text = self.substitute(command.text)
        segments = plain_pipeline(text)
        stdin = ""
        if segments and len(segments) > 1 and segments[0].startswith("echo "):
            stdin = " ".join(shlex.split(segments[0])[1:]) + "\n"
            segments = segments[1:]
        if not segments or shlex.split(segments[0])[0] not in PROGRAMS:
            return self._bash(text)
        code, out = self._in_process(segments[0], stdin)
        if code != 0 or len(segments) == 1:
            return code, out
        return self._bash(" | ".join(segments[1:]), out)

    def _bash(self, text: str, stdin: str | None = None) -> tuple[int, str]:
        proc = subprocess.run(
            ["bash", "-c", text], capture_output=True, text=True, timeout=60, cwd=self.tmp,
            env={**os.environ, **self.env}, input=stdin,
        )  # fmt: skip
        return proc.returncode, proc.stdout + proc.stderr

    def _in_process(self, text: str, stdin: str = "") -> tuple[int, str]:
        """``virtfleet``'s own entry point, as ``CliRunner.invoke`` runs a command."""
        expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), m.group(0)), text)
        args = shlex.split(expanded)[1:]
        with CliRunner().isolation(input=stdin, env=self.env) as (_, _, output), _built_once():
            try:
                cli_main(args)
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            return code, output.getvalue().decode(errors="replace")


@contextlib.contextmanager
def _built_once() -> Iterator[None]:
    """Typer builds the click command tree anew on every call (0.4 s here): reuse one."""
    original, built = typer.main.get_command, cli_command()
    typer.main.get_command = lambda app: built if app is cli_app else original(app)
    try:
        yield
    finally:
        typer.main.get_command = original
