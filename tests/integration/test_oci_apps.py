"""Containers of an imported OCI image (busybox layer + a whiteout layer + an app
layer), with runc: an application container runs the image's entrypoint under the
small init (its env, working dir, user; spec env/cmd overrides), exits with its code,
gets SIGTERM forwarded and its orphans reaped; the layers are extracted once and
shared by containers of different id ranges; a system container boots the image's
own init."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.ocilayouts import Entry, image_config, layer_tar, write_layout
from virtfleet.drivers.base import DriverEvent, LaunchContext
from virtfleet.drivers.oci.driver import OciDriver
from virtfleet.model.instance import Accel, InstanceSpec
from virtfleet.storage.images import write_oci_meta
from virtfleet.storage.oci.applier import CAP_XATTR
from virtfleet.storage.oci.source import host_arch
from virtfleet.storage.oci.store import LayerStore

from .oci import make_oci_driver, release

CACHE = Path(os.environ.get("VIRTFLEET_CACHE_DIR", "/var/cache/virtfleet"))
CTX = LaunchContext(Accel.AUTO, "container", {})
RUN_SH = b"""#!/bin/sh
echo "args:$*"
echo "mode:$MODE"
echo "cwd:$(pwd)"
echo "uid:$(id -u)"
[ -e /etc/profile ] && echo "profile:present" || echo "profile:gone"
exit "${EXIT:-3}"
"""
RUN = {"Entrypoint": ["/app/run.sh"], "Cmd": ["x"], "Env": ["MODE=image", "EXIT=3"],
       "WorkingDir": "/app", "User": "nobody"}  # fmt: skip


@pytest.fixture
async def driver() -> AsyncIterator[OciDriver]:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("container tests need root and runc")
    work = Path(tempfile.mkdtemp(prefix="vfa", dir="/tmp"))
    drv = await make_oci_driver(work, CACHE)
    try:
        _import_app_image(work)
        yield drv
    finally:
        for name in await drv.list():
            await drv.delete(name)
        await drv.close()
        drv.remove_cgroup_parent()
        release(work)


def _import_app_image(work: Path) -> None:
    """Image ``app``: the tiny busybox rootfs, a layer whiting out /etc/profile, a layer
    with /app/run.sh; imported into a layer store under ``work``."""
    images = work / "images"
    busybox = (images / "tiny.rootfs.tar").read_bytes()
    app = [Entry("app", kind=b"5", mode=0o755), Entry("app/run.sh", RUN_SH, mode=0o755)]
    layers = [busybox, layer_tar([Entry("etc/.wh.profile")]), layer_tar(app)]
    write_layout(work / "layout", layers, image_config(layers, RUN, arch=host_arch()))
    store = LayerStore(work / "layers-store")
    image = store.import_image(work / "layout")
    write_oci_meta(images / "app.oci.json", image, store)
    shell = image.model_copy(deep=True)  # image ``shell``: the same layers, no entrypoint
    shell.config.entrypoint = []
    write_oci_meta(images / "shell.oci.json", shell, store)


async def _exit_of(drv: OciDriver, name: str) -> DriverEvent:
    async def first() -> DriverEvent:
        async for event in drv.events():
            if event.name == name and event.kind in ("stopped", "crashed"):
                return event
        raise AssertionError("events ended")

    return await asyncio.wait_for(first(), 60)


def _log(drv: OciDriver, name: str) -> str:
    path = drv.console_log(name)
    return path.read_text(errors="replace") if path else ""


@pytest.mark.integration
async def test_an_app_container_runs_its_entrypoint_and_exits_with_its_code(
    driver: OciDriver,
) -> None:
    spec = InstanceSpec(name="app1", kind="container", image="app")
    await driver.start(spec, CTX)
    event = await _exit_of(driver, "app1")
    assert (event.kind, event.reason) == ("crashed", "application exited with code 3")
    assert event.exit_code == 3 and not event.requested
    log = _log(driver, "app1")
    for line in ("args:x", "mode:image", "cwd:/app", "uid:65534", "profile:gone"):
        assert line in log, log
    override = spec.model_copy(update={"env": ["MODE=spec", "EXIT=0"], "cmd": ["y", "z"]})
    await driver.start(override, CTX)
    event = await _exit_of(driver, "app1")
    assert (event.kind, event.reason) == ("stopped", "application exited with code 0")
    assert "args:y z" in _log(driver, "app1") and "mode:spec" in _log(driver, "app1")
    assert not (driver.cfg.state_root / "app1").exists()


@pytest.mark.integration
async def test_layers_are_shared_and_the_init_forwards_sigterm_and_reaps(
    driver: OciDriver,
) -> None:
    """Two containers (two id ranges) of an image sharing ``app``'s layers read the same
    extracted layers, each as its own root; SIGTERM reaches the command, an orphan is
    reaped by the init."""
    body = "trap 'echo got-term; exit 7' TERM; (sleep 0.3 &); while :; do sleep 1; done"
    names = ["a1", "a2"]
    for name in names:
        spec = InstanceSpec(name=name, kind="container", image="shell", cmd=["sh", "-c", body])
        await driver.start(spec, CTX)
    ranges = {driver.id_range(n).host_id for n in names}  # type: ignore[union-attr]
    assert len(ranges) == 2
    for name in names:
        owner = await driver.exec(name, ["stat", "-c", "%u", "/bin/busybox"])
        assert owner.stdout.strip() == "0"  # the image's root is each container's root
    assert not driver.cfg.lower_root.exists() or list(driver.cfg.lower_root.iterdir()) == []
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert not [p for p in points if "lower-view" in p]  # the idmapped views are gone
    assert not (driver.layer_dir("a1") / "lower-view").exists()
    rows: list[list[str]] = []
    for _ in range(100):  # until the orphaned sleep has ended (and been reaped)
        ps = (await driver.exec("a1", ["ps", "-o", "stat,args"])).stdout
        rows = [line.split(None, 1) for line in ps.splitlines()[1:]]
        if not [r for r in rows if r[1].startswith("sleep 0.3")]:
            break
        await asyncio.sleep(0.1)
    assert rows and not [r for r in rows if r[1].startswith("sleep 0.3") or "Z" in r[0]], rows
    await driver.stop("a1", timeout_s=30)
    assert "got-term" in _log(driver, "a1")
    assert (driver.app_dir("a1") / "exit").read_text().strip() == "7"


@pytest.mark.integration
async def test_a_system_container_boots_the_images_init(driver: OciDriver) -> None:
    spec = InstanceSpec(name="sys1", kind="container", image="app", container_mode="system")
    await driver.start(spec, CTX)
    assert (await driver.exec("sys1", ["cat", "/app/run.sh"])).stdout.startswith("#!/bin/sh")
    for _ in range(100):
        if "virtfleet-init: sys1 up" in _log(driver, "sys1"):
            break
        await asyncio.sleep(0.1)
    assert "virtfleet-init: sys1 up" in _log(driver, "sys1")
    assert (await driver.exec("sys1", ["cat", "/proc/1/cmdline"])).stdout.startswith("/bin/sh")


async def _until_logged(drv: OciDriver, name: str, text: str) -> None:
    for _ in range(300):
        if text in _log(drv, name):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} never in the console log: {_log(drv, name)!r}")


@pytest.mark.integration
async def test_the_init_forwards_every_signal_to_the_app(driver: OciDriver) -> None:
    """INT, QUIT, HUP, USR1 and USR2 sent to the container (its init) reach the command,
    which may trap them (INT and QUIT too: a background job of a shell without job
    control would have them ignored); TERM ends it with its trap's code."""
    signals = ["INT", "QUIT", "HUP", "USR1", "USR2"]
    traps = "; ".join(f"trap 'echo got-{s}' {s}" for s in signals)
    body = f"{traps}; trap 'exit 9' TERM; echo ready; while :; do sleep 0.2; done"
    spec = InstanceSpec(name="sig", kind="container", image="shell", cmd=["sh", "-c", body])
    await driver.start(spec, CTX)
    await _until_logged(driver, "sig", "ready")
    for sig in signals:
        await driver.runtime.kill("sig", sig)
        await _until_logged(driver, "sig", f"got-{sig}")
    await driver.runtime.kill("sig", "TERM")
    event = await _exit_of(driver, "sig")
    assert (event.kind, event.exit_code) == ("crashed", 9)


def _caps_image(work: Path) -> None:
    """Image ``caps``: busybox as ``/usr/bin/su`` (allowed) and ``/bin/other`` (not), both
    carrying the file capability CAP_NET_BIND_SERVICE (effective), run as nobody."""
    raw = (1 << 10).to_bytes(4, "little")  # CAP_NET_BIND_SERVICE, the low permitted word
    cap = (0x02000000 | 1).to_bytes(4, "little") + raw + bytes(12)  # vfs_cap_data v2
    busybox = Path("/bin/busybox").read_bytes()
    tool = [
        Entry(p, busybox, mode=0o755, xattrs={CAP_XATTR: cap}) for p in ("usr/bin/su", "bin/other")
    ]
    layers = [(work / "images" / "tiny.rootfs.tar").read_bytes(), layer_tar(tool)]
    config = image_config(layers, {"User": "nobody"}, arch=host_arch())
    write_layout(work / "caps-layout", layers, config)
    store = LayerStore(work / "layers-store")
    write_oci_meta(
        work / "images" / "caps.oci.json", store.import_image(work / "caps-layout"), store
    )


@pytest.mark.integration
async def test_no_file_capability_raises_privileges_in_the_container(
    driver: OciDriver,
) -> None:
    """The allowed file keeps its capability in the layer, yet run as nobody it gains
    nothing, like the other file (whose capability was stripped): containers run with
    no_new_privs, so neither file capabilities nor setuid bits act at exec."""
    work = driver.cfg.layer_root.parent
    _caps_image(work)
    meta = json.loads((work / "images" / "caps.oci.json").read_text())
    assert os.getxattr(Path(meta["lowers"][-1]) / "usr/bin/su", CAP_XATTR)
    body = "; ".join(f"(exec -a cat {p} /proc/self/status)" for p in ("/usr/bin/su", "/bin/other"))
    spec = InstanceSpec(name="cap", kind="container", image="caps", cmd=["sh", "-c", body])
    await driver.start(spec, CTX)
    await _exit_of(driver, "cap")
    rows = [line.split() for line in _log(driver, "cap").splitlines()]
    assert [r[1] for r in rows if r[:1] == ["NoNewPrivs:"]] == ["1", "1"], rows
    assert [r[1] for r in rows if r[:1] == ["CapEff:"]] == ["0000000000000000"] * 2, rows


@pytest.mark.integration
async def test_a_restart_reuses_its_bundle_until_the_image_changes(driver: OciDriver) -> None:
    """Started again after a requested stop, a container reuses its config.json (not
    rewritten) and its kept overlay; once its image's description is replaced (imported
    again), the next start runs the new one."""
    body = 'echo "mode:$MODE"; exec sleep 100'
    spec = InstanceSpec(name="re", kind="container", image="shell", cmd=["sh", "-c", body])
    config = driver.paths("re").bundle / "config.json"
    await driver.start(spec, CTX)
    await _until_logged(driver, "re", "mode:image")
    await driver.stop("re", timeout_s=30)
    written = (config.stat().st_ino, config.stat().st_mtime_ns)
    await driver.start(spec, CTX)
    assert (config.stat().st_ino, config.stat().st_mtime_ns) == written
    await driver.stop("re", timeout_s=30)
    meta = driver.cfg.layer_root.parent / "images" / "shell.oci.json"
    doc = json.loads(meta.read_text())
    doc["image"]["config"]["env"] = ["MODE=reimported"]
    (meta.parent / "new.json").write_text(json.dumps(doc))
    (meta.parent / "new.json").replace(meta)  # as an import writes it: a new file
    await driver.start(spec, CTX)
    await _until_logged(driver, "re", "mode:reimported")
    await driver.stop("re", timeout_s=30)
