"""One-time join tokens: what ``cluster token create`` prints and ``cluster join`` presents.

Owns the token's shape and rules. A token is ``vfjoin1.`` + base64url(JSON) carrying the
API URL to join through, the SHA-256 fingerprints of the cluster CA and of that API's
TLS certificate (the joining host pins both), and a random secret. Only the secret's
SHA-256 is stored, at ``/cluster/join-tokens/{hash}``, on a store lease of the token's
lifetime (an unused token vanishes by itself) and with its expiry in the value too.
``consume`` checks and deletes it in one compare-and-swap, so a token admits one host
even when two race. Wrong, expired and reused tokens are refused alike (``AuthError``:
nothing tells a guesser which). Must not know HTTP or etcd's member API.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import ValidationError

from virtfleet.errors import AuthError, ConflictError, InvalidInputError
from virtfleet.model.cluster import JOIN_PREFIX, ClusterIdentity, JoinToken, NewJoinToken
from virtfleet.model.event import utcnow
from virtfleet.service.credentials import sha256_hex
from virtfleet.state.keys import JOIN_TOKENS
from virtfleet.state.store import KeyValue, StateStore

DEFAULT_TTL_S = 3600.0
MAX_TTL_S = 7 * 86400.0
REFUSED = "the join token is not valid: it is wrong, expired or already used"


def decode(text: str) -> JoinToken:
    """The token's content; ``InvalidInputError`` if it is not a join token at all."""
    body = text.strip().removeprefix(JOIN_PREFIX)
    if not text.strip().startswith(JOIN_PREFIX):
        raise InvalidInputError(f"not a join token (they start with {JOIN_PREFIX})")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return JoinToken.model_validate(json.loads(raw))
    except (binascii.Error, ValueError, ValidationError):
        raise InvalidInputError("the join token is damaged (copy it whole)") from None


class JoinTokens:
    def __init__(
        self,
        store: StateStore,
        identity: Callable[[], ClusterIdentity | None],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``identity``: this cluster's API URL and fingerprints (None: no cluster CA here)."""
        self.store = store
        self.identity = identity
        self.clock = clock

    async def create(self, ttl_s: float = DEFAULT_TTL_S) -> NewJoinToken:
        if not 60 <= ttl_s <= MAX_TTL_S:
            raise InvalidInputError(f"a join token lives 60 s to {MAX_TTL_S:.0f} s, not {ttl_s:g}")
        me = self.identity()
        if me is None:
            raise ConflictError(
                "this host is not a cluster member with a cluster CA: run cluster init first"
            )
        secret = secrets.token_urlsafe(32)
        expires = self.clock() + timedelta(seconds=ttl_s)
        lease = await self.store.grant_lease(ttl_s)  # an unused token vanishes by itself
        value = json.dumps({"expires_at": expires.isoformat()}).encode()
        await self.store.put(JOIN_TOKENS + sha256_hex(secret), value, lease=lease)
        token = JoinToken(secret=secret, **me.model_dump())
        return NewJoinToken(
            token=token.encode(), expires_at=expires, api_url=me.api_url,
            ca_fingerprint=me.ca_fingerprint,
        )  # fmt: skip

    async def check(self, secret: str) -> None:
        """``AuthError`` unless ``secret`` is a live, unused token (nothing changes)."""
        await self._live(secret)

    async def consume(self, secret: str) -> None:
        """Use the token whose secret is ``secret`` up (``AuthError`` if it cannot be)."""
        key = JOIN_TOKENS + sha256_hex(secret)
        kv = await self._live(secret)
        try:
            await self.store.delete(key, expect_revision=kv.mod_revision)
        except ConflictError:
            raise AuthError(REFUSED) from None  # another host used it a moment ago

    async def _live(self, secret: str) -> KeyValue:
        kv = await self.store.get(JOIN_TOKENS + sha256_hex(secret))
        if kv is None:
            raise AuthError(REFUSED)
        expires = datetime.fromisoformat(json.loads(kv.value)["expires_at"])
        if self.clock() >= expires:
            raise AuthError(REFUSED)
        return kv
