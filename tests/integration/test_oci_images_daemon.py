"""An imported OCI image run by the daemon, as a user would: ``image import-oci`` from the
CLI, an application container created and started from it with a restart policy, its
output in ``logs``, restarted while it fails and left stopped once it exits 0; the image
kept while the container uses it, its layers removed with it."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.ocilayouts import Entry, image_config, layer_tar, write_layout
from virtfleet.app.settings import Settings
from virtfleet.storage.oci.source import host_arch

from .containers import Containers, running_containers

# Fails twice (exit 5), then succeeds: the run count lives in the container's own layer.
RUN_SH = b"""#!/bin/sh
n=$(cat /tmp/count 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > /tmp/count
echo "run $n as $GREETING"
[ "$n" -ge 3 ] && exit 0
exit 5
"""


@pytest.fixture(scope="module")
def containers() -> Iterator[Containers]:
    yield from running_containers()


def _layout(c: Containers, dest: Path) -> None:
    rootfs = Settings(data_dir=c.d.data_dir).images_dir / "ctiny.rootfs.tar"
    app = [Entry("app", kind=b"5", mode=0o755), Entry("app/run.sh", RUN_SH, mode=0o755)]
    layers = [rootfs.read_bytes(), layer_tar(app)]
    run = {"Entrypoint": ["/app/run.sh"], "Env": ["GREETING=image"]}
    write_layout(dest, layers, image_config(layers, run, arch=host_arch()))


def _wait_for(c: Containers, name: str, done: object, timeout_s: float = 120) -> dict[str, object]:
    """The instance's status once ``done(status)`` holds (polled: the restarts take seconds)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = c.client.get_instance(name).status.model_dump(mode="json")
        if done(status) or time.monotonic() > deadline:  # type: ignore[operator]
            return status
        time.sleep(0.2)


@pytest.mark.integration
def test_an_imported_image_runs_as_an_app_container_with_a_restart_policy(
    containers: Containers, tmp_path: Path
) -> None:
    c = containers
    _layout(c, tmp_path / "layout")
    out = json.loads(c.cli("image", "import-oci", "app", str(tmp_path / "layout"), "--json").stdout)
    assert out["status"] == "success", out
    c.cli("container", "create", "a1", "--image", "app", "--env", "GREETING=spec",
          "--restart-policy", "on-failure", "--start")  # fmt: skip
    status = _wait_for(c, "a1", lambda s: s["power"] == "stopped" and s["restarts"] >= 2)
    events = [(e.kind, e.message) for e in c.client.list_events() if e.target.endswith("a1")]
    assert status["power"] == "stopped" and status["restarts"] == 2, json.dumps([status, events])
    assert status["reason"] == "application exited with code 0", status
    log = c.cli("logs", "a1").stdout
    assert "run 1 as spec" in log and "run 3 as spec" in log, log
    used = c.cli("image", "delete", "app", check=False)
    assert used.returncode != 0 and "[in_use]" in used.stdout + used.stderr
    c.delete("a1")
    store = Settings(data_dir=c.d.data_dir).images_dir / "layers" / "sha256"
    assert len([p for p in store.iterdir() if p.is_dir()]) == 2
    c.cli("image", "delete", "app")
    assert [p for p in store.iterdir()] == []


# Exits with $EXIT (3 unless told); EXIT=once: the first run exits 0, later ones wait for
# SIGTERM and exit 7 (the run count lives in the container's own layer); EXIT=term: waits
# for SIGTERM and exits $TERMCODE.
EXIT_SH = b"""#!/bin/sh
echo "out:$EXIT"; echo "err:$EXIT" >&2
if [ "$EXIT" = once ]; then
  [ -e /tmp/ran ] || { touch /tmp/ran; exit 0; }
  trap 'exit 7' TERM
  echo trapping
  while :; do sleep 1; done
fi
if [ "$EXIT" = term ]; then
  trap 'exit $TERMCODE' TERM
  echo trapping
  while :; do sleep 1; done
fi
exit "${EXIT:-3}"
"""


@pytest.mark.integration
def test_an_app_containers_exit_code_is_in_its_status_and_drives_its_restart_policy(
    containers: Containers, tmp_path: Path
) -> None:
    """Entrypoint exiting 3 under policy 'no': crashed, exit_code 3 in the API and in
    ``show``, stdout and stderr in its log; exiting 0 under 'always': started again (the
    new run has no code); a stop we asked for records the code the command exited with
    (its SIGTERM trap's 7)."""
    c = containers
    rootfs = Settings(data_dir=c.d.data_dir).images_dir / "ctiny.rootfs.tar"
    app = [Entry("app", kind=b"5", mode=0o755), Entry("app/exit.sh", EXIT_SH, mode=0o755)]
    layers = [rootfs.read_bytes(), layer_tar(app)]
    config = image_config(layers, {"Entrypoint": ["/app/exit.sh"]}, arch=host_arch())
    write_layout(tmp_path / "layout", layers, config)
    c.cli("image", "import-oci", "exits", str(tmp_path / "layout"))
    c.cli("container", "create", "x3", "--image", "exits", "--start")
    status = _wait_for(c, "x3", lambda s: s["power"] == "crashed")
    assert (status["exit_code"], status["restarts"]) == (3, 0), status
    shown = json.loads(c.cli("show", "x3", "--json").stdout)["status"]
    assert shown["exit_code"] == 3
    shown_text = c.cli("show", "x3").stdout.splitlines()
    assert ["exit", "code", "3"] in [line.split() for line in shown_text], shown_text
    log = c.cli("logs", "x3").stdout
    assert "out:" in log and "err:" in log, log
    c.cli("container", "create", "x0", "--image", "exits", "--env", "EXIT=once",
          "--restart-policy", "always", "--start")  # fmt: skip
    status = _wait_for(c, "x0", lambda s: s["power"] == "running" and s["restarts"] == 1)
    assert (status["power"], status["restarts"], status["exit_code"]) == ("running", 1, None)
    deadline = time.monotonic() + 30
    while "trapping" not in c.cli("logs", "x0").stdout and time.monotonic() < deadline:
        time.sleep(0.1)  # its SIGTERM trap is set
    c.action("x0", "stop")
    status = _wait_for(c, "x0", lambda s: s["exit_code"] is not None, timeout_s=30)
    assert (status["power"], status["exit_code"]) == ("stopped", 7), status
    _exits_while_the_daemon_is_down(c)
    for name in ("x3", "x0", "dn", "da"):
        c.delete(name)
    c.cli("image", "delete", "exits")


def _logged(c: Containers, name: str, text: str) -> None:
    deadline = time.monotonic() + 30
    while text not in c.cli("logs", name).stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert text in c.cli("logs", name).stdout


def _exits_while_the_daemon_is_down(c: Containers) -> None:
    """Apps that exit while no daemon runs: the next one reads their codes on adoption;
    a non-zero code under 'no' stays crashed, a zero code under 'always' is restarted."""
    for name, code, policy in (("dn", 6, "no"), ("da", 0, "always")):
        c.cli("container", "create", name, "--image", "exits", "--env", "EXIT=term",
              "--env", f"TERMCODE={code}", "--restart-policy", policy, "--start")  # fmt: skip
        _logged(c, name, "trapping")
    pids = [c.client.get_instance(name).status.pid for name in ("dn", "da")]
    c.d.kill9()
    for pid in pids:
        assert pid is not None
        os.kill(pid, signal.SIGTERM)  # to each init, which forwards it to its app
    for pid in pids:
        _gone(pid)
    c.d.start()
    status = _wait_for(c, "dn", lambda s: s["exit_code"] is not None, timeout_s=60)
    assert (status["power"], status["exit_code"]) == ("crashed", 6), status
    assert status["reason"] == "application exited with code 6 while the agent was down"
    status = _wait_for(c, "da", lambda s: s["restarts"] >= 1 and s["power"] == "running")
    assert (status["power"], status["restarts"]) == ("running", 1), status


def _gone(pid: int) -> None:
    """Until ``pid`` has exited (a zombie counts: nothing here reaps the orphaned init)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"container init {pid} still runs")


@pytest.mark.integration
def test_a_debian_image_runs_as_a_system_container(containers: Containers, tmp_path: Path) -> None:
    """The debian-12 rootfs (debootstrap, cached) as one big OCI layer plus a small one:
    imported, then run in system mode, its own /sbin/init as PID 1; a graceful stop."""
    c = containers
    op = c.client.build_image("debian12", builder="container-debian-12")
    assert c.client.wait_operation(op.id, timeout_s=1500).status == "success"
    rootfs = Settings(data_dir=c.d.data_dir).images_dir / "debian12.rootfs.tar"
    layers = [rootfs.read_bytes(), layer_tar([Entry("etc/motd", b"from an OCI layer\n")])]
    config = image_config(layers, {"Cmd": ["bash"]}, arch=host_arch())
    write_layout(tmp_path / "deb", layers, config, compression=["none", "gzip"])
    del layers
    imported = c.cli("image", "import-oci", "deboci", str(tmp_path / "deb"), check=False)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    c.cli("container", "create", "deb", "--image", "deboci", "--mode", "system", "--start")
    assert c.sh("deb", "cat /etc/debian_version").startswith("12.")
    assert c.sh("deb", "cat /etc/motd") == "from an OCI layer\n"
    assert c.sh("deb", "tr '\\0' ' ' < /proc/1/cmdline").startswith("/bin/sh /sbin/init")
    c.action("deb", "stop")  # the init's SIGTERM handler: a graceful stop
    c.delete("deb")
    assert c.leftovers("deb") == []
