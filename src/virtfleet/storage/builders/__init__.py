"""Image builders: the recipes that make guest images and container root file systems.

Shared pieces, one module each:

- ``run``: the subprocess runner every host tool goes through (failures mapped to error codes);
- ``files``: atomic writes and the cache files and directories built through them;
- ``debs``: single Debian packages fetched with ``apt-get download`` (kernel, busybox);
- ``debootstrap``: root trees made by debootstrap, cached by (suite, variant, mirror, packages);
- ``disk``: a bootable raw disk from a boot entry and a root tree, parameterised by ``Layout``;
- ``kernel``: the tiny guest's kernel, its module selection and the initramfs that loads them.

Recipes on top: ``tiny`` (busybox VM image), ``debian`` (Debian cloud image) and ``rootfs``
(container root file system tarballs). Each recipe is an image-store builder:
``build(out, cache_dir, progress)``.
"""

from __future__ import annotations

from collections.abc import Callable

#: Progress callback: (percent, message).
Progress = Callable[[int, str], None]


def no_progress(percent: int, message: str) -> None:
    """The progress callback of a caller that does not follow progress."""
    del percent, message
