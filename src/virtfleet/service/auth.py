"""Local users, logins and browser sessions.

Owns the account rules: user names, the password policy and argon2 hashing
(the clear password is never stored), who may change whose password (admins
anyone's; a user their own, proving the current one), that the last admin
cannot be deleted, throttled logins whose failures never tell whether the
user exists, sessions that end by themselves
(a store lease of their TTL) and the first admin of an empty store.
Logins are limited per (user, source network) and per source network, never per
user alone (a guesser elsewhere cannot lock the admin out); an attempt is counted
before its argon2 verify, and verifies are bounded (``credentials.Passwords``). A
password change revokes the user's API tokens and ends its other sessions. Must not
know HTTP: cookies and headers are the API's; this module only checks the
CSRF token it is handed against the one bound to the session.
"""

from __future__ import annotations

import builtins
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from virtfleet.errors import (
    AlreadyExistsError,
    AuthError,
    ConflictError,
    CsrfError,
    ForbiddenError,
    InvalidInputError,
    InvalidNameError,
    NotFoundError,
)
from virtfleet.model.auth import ANONYMOUS, Principal, Role, SessionRecord, UserInfo, UserRecord
from virtfleet.model.event import utcnow
from virtfleet.service.credentials import (
    LoginLimiter,
    Passwords,
    check_password,
    new_secret,
    random_password,
    same_hash,
    sha256_hex,
    source_net,
    split_secret,
)
from virtfleet.service.tokens import TokenService
from virtfleet.state.accounts import SessionRepo, UserRepo
from virtfleet.state.store import StateStore

FIRST_ADMIN = "admin"
SESSION_TTL_S = 12 * 3600.0
_USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_RESERVED = frozenset({ANONYMOUS})
BAD_LOGIN = "invalid username or password"


def validate_username(name: str) -> str:
    """``name`` if it may name a user, else ``InvalidNameError``."""
    if not _USERNAME.fullmatch(name) or name in _RESERVED:
        raise InvalidNameError(
            f"invalid username {name[:40]!r}: use 1-32 lowercase letters, digits, '_', '.' "
            "or '-', starting with a letter or '_'"
        )
    return name


@dataclass(frozen=True)
class NewSession:
    """A session just opened: ``cookie`` (``<id>.<secret>``) and ``csrf_token`` go to the
    client; the store holds only their hashes."""

    record: SessionRecord
    cookie: str
    csrf_token: str
    role: Role


@dataclass(frozen=True)
class FirstAdmin:
    username: str
    password: str
    generated: bool


class AuthService:
    def __init__(
        self,
        store: StateStore,
        tokens: TokenService,
        passwords: Passwords | None = None,
        limiter: LoginLimiter | None = None,
        session_ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.users = UserRepo(store)
        self.sessions = SessionRepo(store)
        self.tokens = tokens
        self.passwords = passwords or Passwords()
        self.limiter = limiter or LoginLimiter()
        self.session_ttl_s = session_ttl_s
        self.clock = clock

    async def ensure_admin(self, password: str | None) -> FirstAdmin | None:
        """On an empty user table create ``admin`` with ``password`` (or a random one).

        Returns what was created, or None when users exist already. A given password
        must meet the policy (``InvalidInputError``); there is never a default one.
        """
        if await self.users.any():
            return None
        chosen = random_password() if password is None else check_password(password)
        user = UserRecord(
            username=FIRST_ADMIN, role=Role.ADMIN, password_hash=await self.passwords.hash(chosen)
        )
        try:
            await self.users.create(user)
        except AlreadyExistsError:  # another cluster member was first
            return None
        return FirstAdmin(FIRST_ADMIN, chosen, generated=password is None)

    async def list_users(self) -> builtins.list[UserInfo]:
        return [u.info() for u in await self.users.list()]

    async def get_user(self, username: str) -> UserInfo:
        return (await self._user(username))[0].info()

    async def create_user(self, username: str, password: str, role: Role) -> UserInfo:
        """A new user; ``AlreadyExistsError`` if the name is taken."""
        validate_username(username)
        check_password(password)
        user = UserRecord(
            username=username, role=role, password_hash=await self.passwords.hash(password)
        )
        await self.users.create(user)
        return user.info()

    async def delete_user(self, username: str) -> bool:
        """Delete a user, end its sessions and revoke its tokens; False if it did not exist.

        ``ConflictError`` for the last admin (the local root could still act, no one else).
        """
        found = await self.users.find(validate_username(username))
        if found is None:
            return False
        if found[0].role is Role.ADMIN and await self._admin_count() <= 1:
            raise ConflictError(f"cannot delete {username!r}: it is the last admin")
        await self.users.delete(username)
        await self.sessions.delete_for(username)
        await self.tokens.revoke_owned(username)
        return True

    async def update_user(
        self, actor: Principal, username: str, role: Role | None, disabled: bool | None
    ) -> UserInfo:
        """Change a user's role and/or disable (or enable) it. Disabling ends its sessions;
        its tokens are refused while it stays disabled. ``ConflictError`` for changes that
        would leave no enabled admin, or that disable the actor."""
        user, revision = await self._user(username)
        changed = user.model_copy(
            update={
                "role": user.role if role is None else role,
                "disabled": user.disabled if disabled is None else disabled,
            }
        )
        if changed.disabled and username == actor.username:
            raise ConflictError("you cannot disable your own account")
        was_admin = user.role is Role.ADMIN and not user.disabled
        is_admin = changed.role is Role.ADMIN and not changed.disabled
        if was_admin and not is_admin and await self._admin_count() <= 1:
            raise ConflictError(f"{username!r} is the last enabled admin")
        await self.users.put(changed, expect_revision=revision)
        if changed.disabled:
            await self.sessions.delete_for(username)
        return changed.info()

    async def change_password(
        self, actor: Principal, username: str, new: str, current: str | None = None
    ) -> UserInfo:
        """Set ``username``'s password: admins any user's, others their own given ``current``.

        Ends the user's other sessions and revokes every API token the user owns
        (a token minted with the old password must not outlive it).
        """
        if actor.username != username and not actor.is_admin:
            raise ForbiddenError("only an admin may change another user's password")
        user, revision = await self._user(username)
        if not actor.is_admin:
            await self._check_current(user, current)
        check_password(new)
        changed = user.model_copy(
            update={
                "password_hash": await self.passwords.hash(new),
                "password_changed_at": utcnow(),
            }
        )
        await self.users.put(changed, expect_revision=revision)
        await self.sessions.delete_for(username, keep=actor.session_id)
        await self.tokens.revoke_owned(username)
        return changed.info()

    async def _check_current(self, user: UserRecord, current: str | None) -> None:
        if not current:
            raise InvalidInputError("current_password: needed to change your own password")
        key = f"current:{user.username}"
        stamp = self.limiter.attempt(key)
        if not await self.passwords.verify(user.password_hash, current):
            raise ForbiddenError("the current password is wrong")
        self.limiter.forgive(stamp, key)

    async def login(self, username: str, password: str, source: str) -> NewSession:
        """Open a session; ``AuthError`` (the same for unknown users and wrong passwords) or
        ``RateLimitedError`` after too many attempts for this user from this source
        network, or from this source network at all (counted before the verify)."""
        net = source_net(source)
        keys = (f"user:{username[:64]}@{net}", f"addr:{net}")
        stamp = self.limiter.attempt(*keys)
        found = await self.users.find(username) if _USERNAME.fullmatch(username) else None
        user = found[0] if found else None
        ok = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not ok:
            raise AuthError(BAD_LOGIN)
        if user.disabled:  # said only to whoever knows the password
            raise AuthError(f"the account {username!r} is disabled")
        self.limiter.succeeded(keys[0])
        self.limiter.forgive(stamp, keys[1])
        await self._rehash_if_stale(user, password)
        return await self._open_session(user)

    async def _rehash_if_stale(self, user: UserRecord, password: str) -> None:
        if self.passwords.needs_rehash(user.password_hash):
            fresh = user.model_copy(update={"password_hash": await self.passwords.hash(password)})
            await self.users.put(fresh)

    async def _open_session(self, user: UserRecord) -> NewSession:
        session_id, secret = new_secret()
        csrf = secrets.token_urlsafe(32)
        record = SessionRecord(
            id=session_id,
            username=user.username,
            secret_sha256=sha256_hex(secret),
            csrf_sha256=sha256_hex(csrf),
            expires_at=self.clock() + timedelta(seconds=self.session_ttl_s),
        )
        await self.sessions.create(record, self.session_ttl_s)
        return NewSession(record, f"{session_id}.{secret}", csrf, user.role)

    async def logout(self, session_id: str) -> None:
        """End a session; an unknown or ended one is fine."""
        await self.sessions.delete(session_id)

    async def authenticate_session(self, cookie: str, csrf_token: str | None = None) -> Principal:
        """The principal of a session cookie; ``AuthError`` if it is unknown or over. A
        ``csrf_token`` given (the API gives one for every change) must be the session's,
        else ``CsrfError``."""
        parts = split_secret(cookie)
        record = await self.sessions.get(parts[0]) if parts else None
        if record is None or parts is None or not same_hash(record.secret_sha256, parts[1]):
            raise AuthError("session expired or unknown; log in again")
        if record.expires_at <= self.clock():
            raise AuthError("session expired; log in again")
        found = await self.users.find(record.username)
        if found is None:
            raise AuthError("the user of this session no longer exists")
        if found[0].disabled:
            raise AuthError("this account is disabled")
        if csrf_token is not None and not same_hash(record.csrf_sha256, csrf_token):
            raise CsrfError("the CSRF token does not belong to this session")
        return Principal(
            username=record.username,
            role=found[0].role,
            via="session",
            expires_at=record.expires_at,
            session_id=record.id,
        )

    async def _user(self, username: str) -> tuple[UserRecord, int]:
        found = await self.users.find(validate_username(username))
        if found is None:
            raise NotFoundError(f"user {username!r} not found")
        return found

    async def _admin_count(self) -> int:
        return sum(1 for u in await self.users.list() if u.role is Role.ADMIN and not u.disabled)
