"""cloud-init (NoCloud) settings of an instance or a template. Pure data; no I/O.

A template carries defaults that a VM overrides field by field (``merged``);
``{name}`` in ``hostname`` stands for the instance's name. The seed ISO itself is
built by ``virtfleet.storage.cloudinit``.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

_HOSTNAME_RE = re.compile(r"^(\{name\}|[A-Za-z0-9-]){1,63}(\.(\{name\}|[A-Za-z0-9-]){1,63})*$")
MAX_TEXT = 64 * 1024
Line = Annotated[str, Field(max_length=4096)]


class Strict(BaseModel):
    """Unknown fields are an error (the same rule as ``model.instance.Strict``)."""

    model_config = ConfigDict(extra="forbid")


class WriteFile(Strict):
    path: Annotated[str, Field(pattern=r"^/[^\x00]*$", max_length=4096)]
    content: Annotated[str, Field(max_length=MAX_TEXT)] = ""
    permissions: Annotated[str, Field(pattern=r"^0[0-7]{3,4}$")] = "0644"


class CloudInit(Strict):
    """NoCloud user-data, meta-data and network-config of one VM.

    ``user_data`` (raw text) replaces the generated ``#cloud-config`` entirely.
    """

    hostname: Annotated[str, Field(max_length=253)] | None = None
    users: list[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]] | None = None
    ssh_authorized_keys: list[Line] | None = None
    packages: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9.+:=~-]{1,128}$")]] | None = None
    runcmd: list[Line] | None = None
    write_files: list[WriteFile] | None = None
    user_data: Annotated[str, Field(max_length=MAX_TEXT)] | None = None
    network_config: Annotated[str, Field(max_length=MAX_TEXT)] | None = None

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is not None and not _HOSTNAME_RE.fullmatch(v):
            raise ValueError(f"invalid hostname {v[:80]!r}: letters, digits, '-', '.', {{name}}")
        return v

    def merged(self, override: CloudInit | None) -> CloudInit:
        """These defaults with every field ``override`` sets replacing them."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_unset=True, exclude_none=True))

    def for_instance(self, name: str) -> CloudInit:
        """The settings with ``{name}`` in the hostname replaced by ``name``."""
        hostname = (self.hostname or "{name}").replace("{name}", name)
        return self.model_copy(update={"hostname": hostname})
