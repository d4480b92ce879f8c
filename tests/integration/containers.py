"""Fixtures for real-container tests: one daemon per module with the ``ctiny`` rootfs image,
and a check for anything a container could leave behind (runtime state, mount, cgroup)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtfleet.app.settings import Settings
from virtfleet.client import ApiError
from virtfleet.drivers.oci.driver import cgroup_mounts
from virtfleet.model.container import ExecOutput
from virtfleet.util.cgroups import detect_layout

from .conftest import VIRTFLEET, Daemon
from .reaping import reap

IMAGE = "ctiny"


class Containers:
    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.client = d.client
        settings = Settings(data_dir=d.data_dir)
        self.parent = f"virtfleet-{settings.instance_id}"
        self.mounts = settings.runtime_path / "rootfs"  # the containers' rootfs mount points

    def create(self, name: str, start: bool = True, **fields: Any) -> None:
        spec = {"name": name, "kind": "container", "image": IMAGE, **fields}
        op = self.client.create_instance(spec, start=start)
        done = self.client.wait_operation(op.id, timeout_s=120)
        assert done.status == "success", done

    def action(self, name: str, action: str, **kw: Any) -> None:
        op = self.client.change_state(name, action, **kw)  # type: ignore[arg-type]
        done = self.client.wait_operation(op.id, timeout_s=120)
        assert done.status == "success", done

    def delete(self, name: str) -> None:
        op = self.client.delete_instance(name, force=True, disks=True)
        assert self.client.wait_operation(op.id, timeout_s=120).status == "success"

    def exec(self, name: str, *argv: str, timeout_s: float = 60) -> ExecOutput:
        from virtfleet.client import container_calls

        return self.client.call(container_calls.exec_in(name, list(argv), timeout_s))

    def sh(self, name: str, script: str) -> str:
        out = self.exec(name, "sh", "-c", script)
        assert out.exit_code == 0, out
        return out.stdout

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [VIRTFLEET, "--data-dir", str(self.d.data_dir), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=check)

    def cgroup(self, controller: str, name: str) -> Path:
        return detect_layout().v1[controller] / self.parent / name

    def leftovers(self, name: str) -> list[str]:
        """Everything of container ``name`` still on the host (empty = nothing left)."""
        found: list[str] = []
        state = self.d.data_dir / "oci" / "state" / name
        if state.exists():
            found.append(f"runtime state {state}")
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        for rootfs in (str(self.mounts / name), str(self.d.data_dir / "oci" / "run" / name)):
            if any(rootfs in line for line in mountinfo):
                found.append(f"mount {rootfs}")
        for mount in cgroup_mounts():
            if (mount / self.parent / name).exists():
                found.append(f"cgroup {mount / self.parent / name}")
        return found


def api_error(fn: Any, *args: Any, **kw: Any) -> ApiError:
    try:
        fn(*args, **kw)
    except ApiError as err:
        return err
    raise AssertionError("expected an API error")


def running_containers() -> Iterator[Containers]:
    """A daemon with the container-tiny image ``ctiny``; its containers are removed after."""
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("container tests need root and runc")
    # The module's containers (1 vCPU limit each) outnumber 2 CPUs x the default ratio 4;
    # for every start of its daemon (the adoption test restarts it).
    with _environ(VIRTFLEET_CPU_OVERCOMMIT="32"):
        yield from _containers_daemon(Path(tempfile.mkdtemp(prefix="vfc", dir="/tmp")))


def _containers_daemon(data_dir: Path) -> Iterator[Containers]:
    d = Daemon(data_dir)
    d.start()
    c = Containers(d)
    try:
        op = d.client.build_image(IMAGE, builder="container-tiny")
        assert d.client.wait_operation(op.id, timeout_s=300).status == "success"
        yield c
    finally:
        for inst in _safe_list(d):
            with contextlib.suppress(ApiError, AssertionError):
                c.delete(inst.name)
        d.stop()
        reap(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """``values`` in the environment (of the daemon started meanwhile) only inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _safe_list(d: Daemon) -> list[Any]:
    try:
        return list(d.client.list_instances())
    except ApiError:
        return []
