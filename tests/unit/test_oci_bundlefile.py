"""A container's config.json and /.virtfleet are written again exactly when what they are
made of changed: the spec, the id range, the image's description, the image user's
/etc/passwd; a start with nothing changed writes nothing but removes the last exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from virtfleet.drivers.oci.appimage import BUSYBOX, EXIT_FILE, INIT_SCRIPT, OciImageRun
from virtfleet.drivers.oci.bundle import IdMap
from virtfleet.drivers.oci.bundlefile import BundleWriter, ImageRef, stamp
from virtfleet.model.instance import InstanceSpec

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(BUSYBOX).is_file(),
    reason="/.virtfleet is chowned to the command's user and binds the host's busybox",
)
RANGE = IdMap(300_000)
SPEC = InstanceSpec(name="a1", kind="container", image="img")


def _image(stamp: str = "1:1:1", **config: Any) -> ImageRef:
    run = {"entrypoint": ["/bin/sleep"], "cmd": ["9"], **config}
    return ImageRef(OciImageRun([], run), stamp)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("web:x:33:44::/:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("")
    (tmp_path / "bundle").mkdir()
    return tmp_path / "bundle"


def _write(w: BundleWriter, bundle: Path, spec: InstanceSpec, image: ImageRef | None,
           userns: IdMap | None = RANGE) -> dict[str, Any]:  # fmt: skip
    w.write(spec, bundle, bundle.parent / "rootfs", userns, image)
    config: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    return config


def test_an_unchanged_start_writes_nothing_but_clears_the_exit_code(bundle: Path) -> None:
    w = BundleWriter("vf-test")
    config = _write(w, bundle, SPEC, _image())
    assert config["process"]["args"][-2:] == ["/bin/sleep", "9"]
    files = [bundle / "config.json", bundle / "app" / "init", bundle / "app" / "busybox"]
    before = [stamp(f) for f in files]
    (bundle / "app" / EXIT_FILE).write_text("3\n")  # the last run's code
    assert _write(w, bundle, SPEC, _image()) == config
    assert [stamp(f) for f in files] == before
    assert not (bundle / "app" / EXIT_FILE).exists()
    w.forget(SPEC.name)
    _write(w, bundle, SPEC, _image())
    assert stamp(bundle / "config.json") != before[0]


@pytest.mark.parametrize(
    ("spec", "image", "userns", "path", "expected"),
    [
        (SPEC.model_copy(update={"env": ["X=1"]}), _image(), RANGE, "env", "X=1"),
        (SPEC, _image("2:2:2", env=["X=2"]), RANGE, "env", "X=2"),
        (SPEC, _image(entrypoint=["/bin/true"]), RANGE, "args", "/bin/sleep"),
        (SPEC, _image(), IdMap(365_536), "uid", 365_536),
        (SPEC.model_copy(update={"vcpus": 2}), _image(), RANGE, "quota", 200_000),
    ],
    ids=["spec", "image-stamp", "same-stamp-is-same-image", "id-range", "limits"],
)
def test_a_changed_input_writes_a_new_config(
    bundle: Path,
    spec: InstanceSpec,
    image: ImageRef,
    userns: IdMap,
    path: str,
    expected: object,
) -> None:
    w = BundleWriter("vf-test")
    _write(w, bundle, SPEC, _image())
    config = _write(w, bundle, spec, image, userns)
    found = {
        "env": config["process"]["env"],
        "args": config["process"]["args"],
        "uid": config["linux"]["uidMappings"][0]["hostID"],
        "quota": config["linux"]["resources"]["cpu"]["quota"],
    }[path]
    assert expected in found if isinstance(found, list) else found == expected


def test_the_image_users_passwd_is_looked_up_again_when_it_changed(bundle: Path) -> None:
    w = BundleWriter("vf-test")
    image = _image(user="web")
    assert _write(w, bundle, SPEC, image)["process"]["user"] == {"uid": 33, "gid": 44}
    (bundle.parent / "rootfs" / "etc" / "passwd").write_text("web:x:1000:1001::/:/bin/sh\n")
    assert _write(w, bundle, SPEC, image)["process"]["user"] == {"uid": 1000, "gid": 1001}
    assert (bundle / "app").stat().st_uid == RANGE.host_id + 1000


def test_a_config_json_changed_by_someone_else_is_written_again(bundle: Path) -> None:
    w = BundleWriter("vf-test")
    config = _write(w, bundle, SPEC, _image())
    (bundle / "config.json").write_text("{}")
    assert _write(w, bundle, SPEC, _image()) == config


def test_an_init_the_command_replaced_is_written_again_never_through_a_link(
    bundle: Path, tmp_path: Path
) -> None:
    """The command owns /.virtfleet: an init it replaced (here by a symlink to a host file)
    is made again as a new file; the host file is untouched."""
    w = BundleWriter("vf-test")
    _write(w, bundle, SPEC, _image())
    host_file = tmp_path / "host-file"
    host_file.write_text("host\n")
    for name in ("init", "busybox"):
        (bundle / "app" / name).unlink()
        (bundle / "app" / name).symlink_to(host_file)
    _write(w, bundle, SPEC, _image())
    assert host_file.read_text() == "host\n"
    assert (bundle / "app" / "init").read_text() == INIT_SCRIPT
    assert not (bundle / "app" / "busybox").is_symlink()
