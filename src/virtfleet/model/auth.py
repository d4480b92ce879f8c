"""Who may do what: roles, users, API tokens, sessions and the principal of a request. Pure data.

Owns the role order (viewer < operator < admin) and the records the store keeps
(``UserRecord``, ``TokenRecord``, ``SessionRecord`` carry only hashes, never a
secret) plus the views the API answers with (``UserInfo``, ``TokenInfo``,
``NewToken``, ``LoginResult``). Must not hash, check or store anything.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from virtfleet.model.event import utcnow

LOCAL_ROOT = "root@local"  # the user of requests over the daemon's Unix socket
ANONYMOUS = "anonymous"  # the actor of requests without valid credentials (audit)
Via = Literal["local", "session", "token", "forwarded"]  # forwarded: by a cluster member


class Role(StrEnum):
    """``admin`` does everything; ``operator`` manages instances and images; ``viewer`` reads."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, required: Role) -> bool:
        """Whether this role may do what ``required`` may."""
        return self.rank >= required.rank

    def at_most(self, other: Role) -> Role:
        """The lesser of the two roles."""
        return self if self.rank <= other.rank else other


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class Principal(BaseModel):
    """The authenticated actor of one request and how it proved who it is."""

    username: str
    role: Role
    via: Via
    token_id: str | None = None
    expires_at: datetime | None = None  # of the token or session, if it expires
    session_id: str | None = Field(default=None, exclude=True)  # never sent: it finds a session

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class UserRecord(BaseModel):
    """A local user as stored: the argon2 hash of the password, never the password."""

    username: str
    role: Role
    password_hash: str
    created_at: datetime = Field(default_factory=utcnow)
    password_changed_at: datetime = Field(default_factory=utcnow)
    disabled: bool = False  # no login, sessions or tokens until enabled again

    def info(self) -> UserInfo:
        return UserInfo(
            username=self.username,
            role=self.role,
            created_at=self.created_at,
            disabled=self.disabled,
        )


class UserInfo(BaseModel):
    username: str
    role: Role
    created_at: datetime
    disabled: bool = False


class TokenInfo(BaseModel):
    """An API token as listed: everything but its secret."""

    id: str
    owner: str
    role: Role
    description: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class TokenRecord(TokenInfo):
    """An API token as stored: the SHA-256 of its secret part."""

    secret_sha256: str

    def info(self) -> TokenInfo:
        return TokenInfo.model_validate(self.model_dump(exclude={"secret_sha256"}))


class NewToken(TokenInfo):
    """A token just minted: ``token`` is shown this once and never again."""

    token: str


class SessionRecord(BaseModel):
    """A browser login as stored: hashes of the session secret and of its CSRF token."""

    id: str
    username: str
    secret_sha256: str
    csrf_sha256: str
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class LoginResult(BaseModel):
    """What ``POST /1.0/login`` answers; the session itself travels in a cookie."""

    username: str
    role: Role
    csrf_token: str
    expires_at: datetime
