"""This host's etcd member, supervised: started, watched, restarted, re-adopted.

Owns the member's process: ``<data-dir>/etcd`` holds its data, ``<data-dir>/cluster/``
its settings (``member.json``), pid file (``etcd.pid``: pid and start time) and log
(``etcd.log``). The member runs with ``--pre-vote``, periodic auto-compaction, and peer
and client TLS (client certificates required) from the cluster CA (``host.clusterca``),
listening on the host's address. Like QEMU it outlives the daemon: ``start`` re-adopts
a running member when the pid file's process is still that etcd (same start time, same
data dir), else launches it; ``detach`` (daemon stop) leaves it running; ``stop``
ends it (``cluster leave``, tests). While supervised, a member that exits is started
again after a back-off. Must not touch the store's keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from virtfleet.drivers.qemu.process import wait_exit
from virtfleet.errors import ProcessError
from virtfleet.host.clusterca import MEMBER_NAME, ClusterFiles, write_private
from virtfleet.state.etcd import EtcdTLS

log = logging.getLogger(__name__)

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
READY_TIMEOUT_S = 30.0
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
STOP_TIMEOUT_S = 10.0
COMPACTION_RETENTION = "1h"  # periodic: keeps an hour of history for watches to resume


@dataclass(frozen=True)
class MemberConfig:
    """How this host's member runs (kept in ``member.json`` for the next start)."""

    name: str
    host: str  # the address it listens on and advertises
    client_port: int = 2379
    peer_port: int = 2380
    initial_cluster: str = ""  # NAME=PEER_URL,...; "" = this member alone
    state: str = "new"  # "new" (forming) or "existing" (joining)
    heartbeat_ms: int = 100
    election_ms: int = 1000

    @property
    def client_url(self) -> str:
        return f"https://{_bracket(self.host)}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{_bracket(self.host)}:{self.peer_port}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class EtcdMember:
    """The supervised etcd member of the host whose data directory is ``data_dir``."""

    def __init__(self, data_dir: Path, config: MemberConfig, binary: str = ETCD) -> None:
        self.data_dir = data_dir
        self.config = config
        self.binary = binary
        self.files = ClusterFiles(data_dir / "cluster")
        self.pid: int | None = None
        self.adopted = False  # found running at start (a daemon restart)
        self._child: subprocess.Popen[bytes] | None = None
        self._task: asyncio.Task[None] | None = None
        self._retry: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set once it runs and answers (start or a retry)

    # -- paths ----------------------------------------------------------------

    @property
    def etcd_dir(self) -> Path:
        return self.data_dir / "etcd"

    @property
    def pidfile(self) -> Path:
        return self.files.root / "etcd.pid"

    @property
    def logfile(self) -> Path:
        return self.files.root / "etcd.log"

    def tls(self) -> EtcdTLS:
        """The client TLS the daemon's store uses to reach this member."""
        f = self.files
        return EtcdTLS(ca=f.ca_cert, cert=f.cert, key=f.key, server_name=MEMBER_NAME)

    # -- life -----------------------------------------------------------------

    async def start(self) -> None:
        """Re-adopt the running member or launch it; return once it answers health checks.
        A member that does not come up is ended again (nothing half-started is left)."""
        save_config(self.files.root, self.config)
        pid = self._running_pid()
        self.adopted = pid is not None
        if pid is None:
            pid = self._launch()
        self.pid = pid
        try:
            await self.wait_ready()
        except ProcessError:
            if not self.adopted:
                await self._end(pid)
            raise
        if self.adopted:
            log.info("re-adopted etcd member %s (pid %d)", self.config.name, pid)
        self._task = asyncio.create_task(self._supervise(), name="etcd-member")
        self.ready.set()

    def retry_in_background(self) -> None:
        """Keep trying ``start`` with back-off (a first start failed: a port still taken,
        a full disk); the daemon meanwhile waits for its store and says why."""
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._keep_trying(), name="etcd-member-start")

    async def _keep_trying(self) -> None:
        for attempt in itertools.count():
            await asyncio.sleep(RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)])
            try:
                await self.start()
                return
            except ProcessError as err:
                log.warning("etcd member %s still not up: %s", self.config.name, err.message)

    async def detach(self) -> None:
        """Stop supervising; the member keeps running (the daemon stops, etcd does not)."""
        for task in (self._retry, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._retry = None

    async def stop(self) -> None:
        """End the member (its data stays) and forget its pid file."""
        await self.detach()
        pid = self.pid if self.pid is not None else self._running_pid()
        if pid is not None:
            await self._end(pid)
        self.pid = None
        self.pidfile.unlink(missing_ok=True)

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until the member says it is healthy; ``ProcessError`` if it exits or never does."""
        context = ssl.create_default_context(cafile=str(self.files.ca_cert))
        context.load_cert_chain(str(self.files.cert), str(self.files.key))
        url = f"{self.config.client_url}/health"
        try:
            async with (
                httpx.AsyncClient(verify=context, timeout=1.0) as http,
                asyncio.timeout(timeout_s),
            ):
                while not await _healthy(http, url):
                    if self.pid is None or not _alive(self.pid):
                        raise ProcessError(f"etcd exited: {_tail(self.logfile)}")
                    await asyncio.sleep(0.1)  # poll: etcd has no readiness notification
        except TimeoutError:
            raise ProcessError(
                f"etcd not healthy after {timeout_s:.0f} s: {_tail(self.logfile)}"
            ) from None

    # -- internals ------------------------------------------------------------

    def argv(self) -> list[str]:
        c, f = self.config, self.files
        return [
            self.binary, "--name", c.name, "--data-dir", str(self.etcd_dir),
            "--listen-client-urls", c.client_url, "--advertise-client-urls", c.client_url,
            "--listen-peer-urls", c.peer_url, "--initial-advertise-peer-urls", c.peer_url,
            "--initial-cluster", c.initial_cluster or f"{c.name}={c.peer_url}",
            "--initial-cluster-state", c.state,
            "--pre-vote=true",
            "--auto-compaction-mode", "periodic",
            "--auto-compaction-retention", COMPACTION_RETENTION,
            "--heartbeat-interval", str(c.heartbeat_ms),
            "--election-timeout", str(c.election_ms),
            "--cert-file", str(f.cert), "--key-file", str(f.key),
            "--trusted-ca-file", str(f.ca_cert), "--client-cert-auth=true",
            "--peer-cert-file", str(f.cert), "--peer-key-file", str(f.key),
            "--peer-trusted-ca-file", str(f.ca_cert), "--peer-client-cert-auth=true",
        ]  # fmt: skip

    def _launch(self) -> int:
        self.etcd_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.logfile.open("ab") as out:
            # Its own session: a signal to the daemon's process group does not reach it.
            self._child = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        pid = self._child.pid
        record = {"pid": pid, "create_time": psutil.Process(pid).create_time()}
        write_private(self.pidfile, json.dumps(record).encode())
        log.info(
            "started etcd member %s (pid %d) at %s", self.config.name, pid, self.config.client_url
        )
        return pid

    def _running_pid(self) -> int | None:
        """The pid file's process if it is still this member's etcd, else None."""
        try:
            record = json.loads(self.pidfile.read_text())
            pid, started = int(record["pid"]), float(record["create_time"])
            proc = psutil.Process(pid)
            same = abs(proc.create_time() - started) < 0.5 and _data_dir_of(proc) == str(
                self.etcd_dir
            )
            return pid if same and proc.status() != psutil.STATUS_ZOMBIE else None
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return None

    async def _supervise(self) -> None:
        """Start the member again whenever it exits, backing off while it keeps failing."""
        failures = 0
        while True:
            assert self.pid is not None
            await wait_exit(self.pid)
            self._reap()
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            log.warning("etcd member exited: %s; restarting in %.1f s", _tail(self.logfile), delay)
            await asyncio.sleep(delay)  # back-off timer
            self.pid = self._launch()
            try:
                await self.wait_ready()
                failures = 0
            except ProcessError as err:
                failures += 1
                log.warning("etcd member did not come back: %s", err.message)

    def _reap(self) -> None:
        if self._child is not None and self._child.poll() is not None:
            self._child = None

    async def _end(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(wait_exit(pid), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await wait_exit(pid)
        self._reap()


def save_config(root: Path, config: MemberConfig) -> None:
    write_private(root / "member.json", json.dumps(asdict(config), indent=1).encode())


def load_config(root: Path) -> MemberConfig | None:
    """The saved member settings, or None when this host has no member."""
    try:
        return MemberConfig(**json.loads((root / "member.json").read_text()))
    except FileNotFoundError:
        return None


def _data_dir_of(proc: psutil.Process) -> str | None:
    argv = proc.cmdline()
    for i, arg in enumerate(argv[:-1]):
        if arg == "--data-dir":
            return argv[i + 1]
    return None


async def _healthy(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return bool((await http.get(url)).json().get("health") == "true")
    except (httpx.HTTPError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _tail(path: Path, lines: int = 4) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip()[:300] for line in text[-lines:] if line.strip())
