"""Installing virtfleet as a system service, and removing it again.

Owns the files a host install puts down under a root directory (``/`` or, for
tests and staging, any other): a wheel built from the source tree installed into
its own virtual environment (``/opt/virtfleet/venv``; never pip into the system
Python), ``/usr/local/bin/virtfleet``, the systemd unit, the logrotate rules and
the data directory (0700), plus ``/opt/virtfleet/installed.json`` listing what was
put down so ``uninstall`` removes exactly that. The data directory stays unless
``purge``. systemd is only told (``systemctl --root`` for a staged root; ``enable
--now`` only when systemd runs this host).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import InvalidInputError, VirtfleetError

UNIT_NAME = "virtfleet.service"
PREFIX = Path("/opt/virtfleet")
DATA_DIR = Path("/var/lib/virtfleet")
STOP_TIMEOUT_S = 900  # shutdown-guests: every guest's ACPI timeout, one group after another


@dataclass(frozen=True)
class Layout:
    """Where each installed file lives, as the running host sees it (``root`` = /)."""

    root: Path
    prefix: Path = PREFIX
    data_dir: Path = DATA_DIR

    def at(self, path: Path) -> Path:
        """``path`` under the install root."""
        return self.root / path.relative_to("/")

    @property
    def venv(self) -> Path:
        return self.prefix / "venv"

    @property
    def program(self) -> Path:
        return self.venv / "bin" / "virtfleet"

    @property
    def unit(self) -> Path:
        return Path("/etc/systemd/system") / UNIT_NAME

    @property
    def logrotate(self) -> Path:
        return Path("/etc/logrotate.d/virtfleet")

    @property
    def link(self) -> Path:
        return Path("/usr/local/bin/virtfleet")

    @property
    def manifest(self) -> Path:
        return self.prefix / "installed.json"


def unit_text(layout: Layout) -> str:
    """The systemd unit. Guests outlive a daemon restart (KillMode=process); guests are
    shut down only when the system goes down (the ExecStop command checks for it)."""
    vf = f"{layout.program} --data-dir {layout.data_dir}"
    return f"""[Unit]
Description=virtfleet virtualization daemon (QEMU VMs and OCI containers)
Documentation=https://github.com/virtfleet/virtfleet/blob/main/docs/host-service.md
Wants=network-online.target
After=network-online.target local-fs.target
RequiresMountsFor={layout.data_dir}

[Service]
Type=simple
ExecStart={vf} serve
# Only when the system is shutting down: stop guests in reverse boot order (or suspend).
ExecStop={vf} host shutdown-guests --only-at-system-shutdown
TimeoutStopSec={STOP_TIMEOUT_S}
# Stop only the daemon: QEMU and container processes keep running across a restart.
KillMode=process
Restart=on-failure
RestartSec=2
# The daemon makes its own cgroups for guests.
Delegate=yes
TasksMax=infinity
LimitNOFILE=1048576
UMask=0077
# Hardening that QEMU (TCG needs W+X memory, /dev/kvm, taps) and runc (namespaces,
# mounts, cgroups) survive: no MemoryDenyWriteExecute, PrivateDevices or ProtectSystem,
# and no ProtectClock (it implies a DeviceAllow= list, which shuts /dev/kvm and tun out).
ProtectKernelLogs=yes
ProtectHome=read-only
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
KeyringMode=private

[Install]
WantedBy=multi-user.target
"""


def logrotate_text(layout: Layout) -> str:
    """Rotation of the daemon log and the guests' serial logs (QEMU keeps them open:
    copytruncate)."""
    return f"""{layout.data_dir}/virtfleet.log {layout.data_dir}/run/*/serial.log {{
    weekly
    maxsize 20M
    rotate 4
    compress
    delaycompress
    missingok
    notifempty
    copytruncate
}}
"""


def install(layout: Layout, source: Path, deps: bool = True) -> list[Path]:
    """Install from the source tree ``source``; the paths put down (host view).
    ``deps=False`` installs only the wheel (its dependencies must be reachable already)."""
    if not (source / "pyproject.toml").is_file():
        raise InvalidInputError(f"{source} is not a virtfleet source tree (no pyproject.toml)")
    wheel_dir = Path(tempfile.mkdtemp(prefix="virtfleet-wheel-"))
    try:
        wheel = _build_wheel(source, wheel_dir)
        _venv(layout, wheel, deps)
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)
    _write(layout.at(layout.unit), unit_text(layout), 0o644)
    _write(layout.at(layout.logrotate), logrotate_text(layout), 0o644)
    link = layout.at(layout.link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(layout.program)
    data = layout.at(layout.data_dir)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    data.chmod(0o700)  # guests' disks and the store: root only
    placed = [layout.unit, layout.logrotate, layout.link, layout.prefix]
    _write(layout.at(layout.manifest), json.dumps([str(p) for p in placed], indent=1), 0o644)
    _systemctl(layout, "enable")
    return placed


def uninstall(layout: Layout, purge: bool = False) -> list[Path]:
    """Remove what ``install`` put down (and the data directory only with ``purge``);
    the paths removed. Idempotent: nothing installed is nothing to do."""
    manifest = layout.at(layout.manifest)
    if manifest.exists():
        _systemctl(layout, "disable")
    placed = [Path(p) for p in json.loads(manifest.read_text())] if manifest.exists() else []
    if purge:
        placed.append(layout.data_dir)
    removed = []
    for path in placed:
        target = layout.at(path)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        else:
            continue
        removed.append(path)
    return removed


def _build_wheel(source: Path, out: Path) -> Path:
    """The wheel, built from a clean copy of the package (a checkout's stale ``build/``
    would put modules deleted since into the wheel)."""
    tree = out / "src-copy"
    tree.mkdir()
    shutil.copy2(source / "pyproject.toml", tree)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(source / "src", tree / "src", ignore=skip)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
          "-w", str(out), str(tree)])  # fmt: skip
    wheels = sorted(out.glob("virtfleet-*.whl"))
    if not wheels:
        raise VirtfleetError(f"building the wheel from {source} produced none")
    return wheels[0]


def _venv(layout: Layout, wheel: Path, deps: bool) -> None:
    venv = layout.at(layout.venv)
    _run([sys.executable, "-m", "venv", "--clear", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, *([] if deps else ["--no-deps"]), str(wheel)])


def _systemctl(layout: Layout, verb: str) -> None:
    """Enable/disable the unit: offline under a staged root, live (``--now``) when systemd
    runs this host, not at all without systemctl."""
    if shutil.which("systemctl") is None:
        return
    if layout.root != Path("/"):
        _run(["systemctl", f"--root={layout.root}", "--quiet", verb, UNIT_NAME])
    elif Path("/run/systemd/system").is_dir():  # systemd is PID 1 (sd_booted)
        _run(["systemctl", "daemon-reload"])
        _run(["systemctl", "--quiet", verb, "--now", UNIT_NAME])


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise VirtfleetError(f"{' '.join(argv[:4])} ... failed: {tail[0]}")
