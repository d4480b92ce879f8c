"""What the guest agent (qemu-guest-agent) reports about a running VM. Pure data."""

from __future__ import annotations

from pydantic import BaseModel, Field


class GuestInterface(BaseModel):
    name: str
    mac: str = ""
    addresses: list[str] = Field(default_factory=list)  # "10.0.2.15/24", "fe80::1/64"


class GuestInfo(BaseModel):
    """``agent`` is False (with ``error``) when the VM has no agent channel or no answer."""

    agent: bool = False
    error: str = ""
    os_name: str = ""
    os_version: str = ""
    kernel: str = ""
    hostname: str = ""
    interfaces: list[GuestInterface] = Field(default_factory=list)
