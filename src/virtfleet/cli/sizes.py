"""Memory sizes as users type them: ``512M``, ``2G``, ``1.5GiB``; a plain number is MiB.

Owns parsing to and formatting from whole MiB. Pure.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?)?", re.IGNORECASE)
_FACTOR = {"": 1.0, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0 * 1024}


def parse_size_mib(text: str) -> int:
    """Whole MiB in ``text``; ``ValueError`` with a one-line reason if it is not a size."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"invalid size {text!r}: use e.g. 512M, 2G or a number of MiB")
    mib = float(m[1]) * _FACTOR[(m[2] or "").lower()]
    if mib <= 0 or mib != int(mib):
        raise ValueError(f"invalid size {text!r}: must be a positive whole number of MiB")
    return int(mib)


def format_mib(mib: int) -> str:
    """``512 MiB``, ``2 GiB``, ``1.5 GiB``."""
    if mib >= 1024 and mib % 256 == 0:
        return f"{mib / 1024:g} GiB"
    return f"{mib} MiB"


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def parse_disk(text: str) -> dict[str, object]:
    """``NAME[:SIZE][@POOL]`` (``root:20G@fast``) as a disk of the API: name, ``size_gib``
    and ``pool`` when given; ``ValueError`` with a one-line reason."""
    rest, at, pool = text.partition("@")
    name, colon, size = rest.partition(":")
    if not name or (at and not pool) or (colon and not size):
        raise ValueError(f"invalid disk {text!r}: use NAME[:SIZE][@POOL], e.g. root:20G@fast")
    disk: dict[str, object] = {"name": name}
    if size:
        disk["size_gib"] = parse_size_mib(size) / 1024
    if pool:
        disk["pool"] = pool
    return disk
