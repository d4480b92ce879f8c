"""A directory of instance disk files as users see it (``virtfleet disk list``). Pure data."""

from __future__ import annotations

from pydantic import BaseModel


class DiskDir(BaseModel):
    """``<data-dir>/disks/<name>/``: its files, their allocated size, and whether an
    instance of that name owns it (``orphaned``: kept by ``vm delete`` without ``--disks``)."""

    name: str
    path: str
    files: list[str]  # disk files and layers; the regenerated cloud-init seed is left out
    size_bytes: int  # allocated on the host (sparse files count what they use)
    orphaned: bool
