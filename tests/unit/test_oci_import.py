"""Importing OCI layouts and docker archives into the layer store: layers applied once by
diff_id with overlayfs whiteouts, digests verified, config kept, hostile layers refused
with nothing left behind (no container runtime involved)."""

from __future__ import annotations

import ctypes
import os
import stat
import tarfile
from pathlib import Path

import pytest

from tests.ocilayouts import (
    Entry,
    image_config,
    layer_tar,
    sha,
    tar_layout,
    write_docker_archive,
    write_layout,
)
from virtfleet.errors import ImageError, InvalidInputError, UnsafeImageError
from virtfleet.storage.oci.applier import CAP_XATTR, OPAQUE_XATTR, Limits
from virtfleet.storage.oci.source import host_arch
from virtfleet.storage.oci.store import LayerStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="layers keep owners: needs root")
D, L, S = tarfile.DIRTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE

BASE = [
    Entry("bin", kind=D, mode=0o755),
    Entry("bin/tool", b"#!/bin/sh\necho hi\n", mode=0o755),
    Entry("bin/evil", b"x", mode=0o4755),
    Entry("usr/bin/passwd", b"p", mode=0o4755),
    Entry("etc/keep", b"keep\n"),
    Entry("etc/gone", b"gone\n"),
    Entry("home/app/owned", b"o", uid=1000, gid=1000),
    Entry("d", kind=D, mode=0o755),
    Entry("d/old", b"old"),
    Entry("bin/tool2", kind=L, link="bin/tool"),
    Entry("bin/sh", kind=S, link="tool"),
]
WHITEOUTS = [Entry("etc/.wh.gone"), Entry("d/.wh..wh..opq"), Entry("d/new", b"new")]
APP = [Entry("app/run.sh", b"#!/bin/sh\nexit 3\n", mode=0o755)]
RUN = {"Entrypoint": ["/app/run.sh"], "Cmd": ["a"], "Env": ["A=1"], "WorkingDir": "/app",
       "User": "1000:1000", "ExposedPorts": {"80/tcp": {}}, "Labels": {"k": "v"}}  # fmt: skip


def _image() -> tuple[list[bytes], dict[str, object]]:
    layers = [layer_tar(BASE), layer_tar(WHITEOUTS), layer_tar(APP)]
    return layers, image_config(layers, RUN, arch=host_arch())


LIBC = ctypes.CDLL(None, use_errno=True)


def _mount_ro(lowers: list[Path], target: Path) -> None:
    """An overlay of ``lowers`` (lowest first) at ``target``, read-only."""
    libc = LIBC
    target.mkdir()
    opts = "lowerdir=" + ":".join(str(p) for p in reversed(lowers))
    assert libc.mount(b"overlay", bytes(target), b"overlay", 1, opts.encode()) == 0, os.strerror(
        ctypes.get_errno()
    )


def test_layers_apply_once_by_diff_id_and_stack_as_an_overlay(tmp_path: Path) -> None:
    layers, config = _image()
    write_layout(tmp_path / "img", layers, config, compression=["gzip", "zstd", "none"])
    store = LayerStore(tmp_path / "store")
    image = store.import_image(tmp_path / "img")
    assert [layer.diff_id for layer in image.layers] == [sha(x) for x in layers]
    assert image.config.entrypoint == ["/app/run.sh"] and image.config.cmd == ["a"]
    assert image.config.env == ["A=1"] and image.config.working_dir == "/app"
    assert image.config.user == "1000:1000" and image.config.exposed_ports == ["80/tcp"]
    assert image.config.labels == {"k": "v"} and image.config.architecture == host_arch()
    assert image.stripped_setid == ["bin/evil"]
    assert image.layers[0].entries == len(BASE) and image.layers[0].size_bytes > 0
    base, whiteouts = (store.path(x.diff_id) for x in image.layers[:2])
    assert not os.stat(base / "bin/evil").st_mode & stat.S_ISUID
    assert os.stat(base / "usr/bin/passwd").st_mode & stat.S_ISUID
    assert os.stat(base / "home/app/owned").st_uid == 1000
    assert os.stat(base / "bin/tool2").st_ino == os.stat(base / "bin/tool").st_ino
    gone = os.lstat(whiteouts / "etc/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(whiteouts / "d", OPAQUE_XATTR) == b"y"
    merged = tmp_path / "merged"
    _mount_ro([store.path(x.diff_id) for x in image.layers], merged)
    try:
        assert sorted(os.listdir(merged / "etc")) == ["keep"]
        assert os.listdir(merged / "d") == ["new"]
        assert (merged / "app/run.sh").read_bytes().startswith(b"#!/bin/sh")
        assert os.readlink(merged / "bin/sh") == "tool"
    finally:
        LIBC.umount2(bytes(merged), 2)


def test_a_docker_archive_of_the_same_image_shares_its_layers(tmp_path: Path) -> None:
    layers, config = _image()
    write_layout(tmp_path / "img", layers, config)
    store = LayerStore(tmp_path / "store")
    first = store.import_image(tmp_path / "img")
    inodes = [store.path(x.diff_id).stat().st_ino for x in first.layers]
    write_docker_archive(tmp_path / "saved.tar", layers, config)
    second = store.import_image(tmp_path / "saved.tar")
    assert second.format == "docker-archive" and first.format == "oci"
    assert [x.diff_id for x in second.layers] == [x.diff_id for x in first.layers]
    assert [store.path(x.diff_id).stat().st_ino for x in second.layers] == inodes  # reused
    assert second.config == first.config and len(store.layers()) == 3
    assert second.stripped_setid == first.stripped_setid == ["bin/evil"]  # kept per layer


def _caps(revision: int, permitted: int, rootid: int | None = None) -> bytes:
    """A ``vfs_cap_data`` (linux/capability.h): effective flag set, ``permitted`` low word."""
    words = [revision | 1, permitted, 0, 0, 0] + ([rootid] if rootid is not None else [])
    return b"".join(w.to_bytes(4, "little") for w in words)


def test_file_capabilities_apply_only_to_allowed_files_and_the_images_root(
    tmp_path: Path,
) -> None:
    """``security.capability`` from a layer's PAX header is set on the allowed files (a
    v3 value for the image's own root as v2), and left off (reported) on any other file
    or when it names another user namespace's root."""
    raw = 1 << 13  # CAP_NET_RAW
    v2, v3 = 0x02000000, 0x03000000
    entries = [
        Entry("usr/bin/ping", b"p", mode=0o755, xattrs={CAP_XATTR: _caps(v2, raw)}),
        Entry("bin/ping", b"p", mode=0o755, xattrs={CAP_XATTR: _caps(v3, raw, rootid=0)}),
        Entry("usr/bin/su", b"s", mode=0o755, xattrs={CAP_XATTR: _caps(v3, raw, rootid=1000)}),
        Entry("bin/evil", b"e", mode=0o755, xattrs={CAP_XATTR: _caps(v2, 1 << 21)}),
        Entry("bin/junk", b"j", mode=0o755, xattrs={CAP_XATTR: b"\x01\x02"}),
    ]
    layers = [layer_tar(entries)]
    write_layout(tmp_path / "img", layers, image_config(layers, arch=host_arch()))
    store = LayerStore(tmp_path / "store")
    image = store.import_image(tmp_path / "img")
    root = store.path(image.layers[0].diff_id)
    assert os.getxattr(root / "usr/bin/ping", CAP_XATTR) == _caps(v2, raw)
    assert os.getxattr(root / "bin/ping", CAP_XATTR) == _caps(v2, raw)
    assert image.stripped_caps == ["bin/evil", "bin/junk", "usr/bin/su"]
    for rel in image.stripped_caps:
        assert CAP_XATTR not in os.listxattr(root / rel)


def test_a_tarball_of_a_layout_imports(tmp_path: Path) -> None:
    layers, config = _image()
    write_layout(tmp_path / "img", layers, config)
    tar_layout(tmp_path / "img", tmp_path / "img.tar")
    image = LayerStore(tmp_path / "store").import_image(tmp_path / "img.tar")
    assert image.format == "oci" and len(image.layers) == 3


def test_collect_keeps_layers_other_images_use(tmp_path: Path) -> None:
    layers, config = _image()
    write_layout(tmp_path / "a", layers, config)
    write_layout(tmp_path / "b", layers[:1], image_config(layers[:1], arch=host_arch()))
    store = LayerStore(tmp_path / "store")
    store.import_image(tmp_path / "a")
    b = store.import_image(tmp_path / "b")
    gone = store.collect({x.diff_id for x in b.layers})  # image a deleted
    assert sorted(gone) == sorted(sha(x) for x in layers[1:])
    assert store.layers() == [sha(layers[0])] and store.path(sha(layers[0])).is_dir()


def _leftovers(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*")) if store.exists() else []


def test_a_layer_whose_digest_does_not_match_is_refused(tmp_path: Path) -> None:
    layers, config = _image()
    manifest = write_layout(tmp_path / "img", layers, config, compression=["none"] * 3)
    blob = tmp_path / "img/blobs/sha256" / manifest["layers"][1]["digest"].split(":")[1]
    blob.write_bytes(blob.read_bytes().replace(b"new", b"bad"))
    store = tmp_path / "store"
    with pytest.raises(ImageError, match="does not match its digest") as err:
        LayerStore(store).import_image(tmp_path / "img")
    assert err.value.code == "image_error"
    assert [p for p in _leftovers(store) if p != "sha256"] == []  # not even the good layer


def test_a_layer_whose_diff_id_does_not_match_is_refused(tmp_path: Path) -> None:
    layers, config = _image()
    config["rootfs"]["diff_ids"][2] = sha(b"other")  # type: ignore[index]
    write_layout(tmp_path / "img", layers, config)
    store = tmp_path / "store"
    with pytest.raises(ImageError, match="does not match its diff_id"):
        LayerStore(store).import_image(tmp_path / "img")
    assert [p for p in _leftovers(store) if p != "sha256"] == []


@pytest.mark.parametrize("where", ["config", "index"])
def test_a_foreign_architecture_is_refused(tmp_path: Path, where: str) -> None:
    layers, config = _image()
    other = "s390x"
    if where == "config":
        config["architecture"] = other
    write_layout(tmp_path / "img", layers, config, index_arch=other if where == "index" else None)
    with pytest.raises(InvalidInputError, match=f"image is for .*{other}.*not this host") as err:
        LayerStore(tmp_path / "store").import_image(tmp_path / "img")
    assert err.value.details["reason"] == "foreign_arch"
    assert _leftovers(tmp_path / "store") == []


HOSTILE = {
    "dotdot": ([Entry("../escaped", b"x")], "path_escape"),
    "absolute": ([Entry("/escaped", b"x")], "path_escape"),
    "symlink_write_through": (
        [Entry("link", kind=S, link="TARGET"), Entry("link/escaped", b"x")],
        "symlink_escape",
    ),
    "hardlink_out": ([Entry("h", kind=L, link="../../etc/passwd")], "path_escape"),
    "device": ([Entry("tmp/sda", kind=tarfile.BLKTYPE)], "device_node"),
    "many_entries": ([Entry(f"f{i}", b"") for i in range(20)], "too_many_entries"),
    "too_large": ([Entry("big", b"x" * 5000)], "too_large"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_are_refused_with_nothing_left(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    entries, reason = HOSTILE[case]
    entries = [Entry(e.name, e.data, e.kind, e.mode, e.link.replace("TARGET", str(outside)))
               for e in entries]  # fmt: skip
    good = layer_tar(BASE)
    layers = [good, layer_tar(entries)]
    store = LayerStore(tmp_path / "store", Limits(max_entries=15, max_bytes=4096))
    write_layout(tmp_path / "shared", [good], image_config([good], arch=host_arch()))
    store.import_image(tmp_path / "shared")  # another image holds the good layer
    write_layout(tmp_path / "img", layers, image_config(layers, arch=host_arch()))
    with pytest.raises(UnsafeImageError) as err:
        store.import_image(tmp_path / "img")
    assert err.value.code == "unsafe_image" and err.value.details["reason"] == reason
    assert f"({reason})" in err.value.message and "\n" not in err.value.message
    assert store.layers() == [sha(good)]  # the shared layer kept, nothing else
    assert [p for p in _leftovers(tmp_path / "store") if ".tmp-" in p] == []
    assert list(outside.iterdir()) == [] and not (tmp_path / "escaped").exists()


@pytest.mark.parametrize(
    "index", ["{not json", '{"manifests": 3}', '{"manifests": [{"digest": "md5:00"}]}']
)
def test_an_unparsable_index_is_refused(tmp_path: Path, index: str) -> None:
    layers, config = _image()
    write_layout(tmp_path / "img", layers, config)
    (tmp_path / "img/index.json").write_text(index)
    with pytest.raises(ImageError) as err:
        LayerStore(tmp_path / "store").import_image(tmp_path / "img")
    assert err.value.code == "image_error" and "\n" not in err.value.message
    assert _leftovers(tmp_path / "store") == []


def test_a_config_without_layers_is_refused(tmp_path: Path) -> None:
    layers, config = _image()
    del config["rootfs"]
    write_layout(tmp_path / "img", layers, config)
    with pytest.raises(ImageError, match="no valid 'rootfs'"):
        LayerStore(tmp_path / "store").import_image(tmp_path / "img")


def test_directories_a_layer_does_not_list_are_0755_under_the_daemons_umask(
    tmp_path: Path,
) -> None:
    """The daemon runs with umask 077: a parent made for ``usr/local/bin/x`` and the
    layer's root must still be 0755, or the container's other users cannot enter them."""
    layers = [layer_tar([Entry("usr/local/bin/x", b"x", mode=0o755)])]
    write_layout(tmp_path / "img", layers, image_config(layers, arch=host_arch()))
    old = os.umask(0o077)
    try:
        image = LayerStore(tmp_path / "store").import_image(tmp_path / "img")
    finally:
        os.umask(old)
    root = LayerStore(tmp_path / "store").path(image.layers[0].diff_id)
    for path in (root, root / "usr", root / "usr/local", root / "usr/local/bin"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755, path


def test_a_symlink_in_one_layer_is_not_written_through_by_the_next(tmp_path: Path) -> None:
    """Layer 1: ``etc -> OUTSIDE``; layer 2: ``etc/passwd``. Each layer is applied in its
    own directory, so layer 2 makes a real ``etc``: nothing reaches OUTSIDE, and the
    stacked view shows layer 2's directory over layer 1's link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    layers = [
        layer_tar([Entry("etc", kind=S, link=str(outside))]),
        layer_tar([Entry("etc/passwd", b"root:x:0:0::/:/bin/sh\n")]),
    ]
    write_layout(tmp_path / "img", layers, image_config(layers, arch=host_arch()))
    store = LayerStore(tmp_path / "store")
    image = store.import_image(tmp_path / "img")
    assert list(outside.iterdir()) == []
    merged = tmp_path / "merged"
    _mount_ro([store.path(x.diff_id) for x in image.layers], merged)
    try:
        assert (merged / "etc").is_dir() and not (merged / "etc").is_symlink()
        assert (merged / "etc/passwd").read_text().startswith("root:")
    finally:
        LIBC.umount2(bytes(merged), 2)


def test_device_nodes_under_dev_are_left_out(tmp_path: Path) -> None:
    """A root file system tarball's /dev nodes (debootstrap makes them) are skipped, not
    refused: the runtime mounts a fresh /dev there."""
    console = Entry("dev/console", kind=tarfile.CHRTYPE)
    layers = [layer_tar([Entry("dev", kind=D, mode=0o755), console, Entry("etc/x", b"x")])]
    write_layout(tmp_path / "img", layers, image_config(layers, arch=host_arch()))
    store = LayerStore(tmp_path / "store")
    root = store.path(store.import_image(tmp_path / "img").layers[0].diff_id)
    assert (root / "dev").is_dir() and list((root / "dev").iterdir()) == []
    assert (root / "etc/x").read_bytes() == b"x"
