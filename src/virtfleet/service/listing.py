"""Instance listings as JSON, fast: cached serialised views, field selection, pages.

Owns three things of ``GET /1.0/instances``: the JSON of each instance view,
kept per record revision (a record the store has not changed since the last
listing is neither re-validated nor re-serialised: 1,000 instances took ~58 ms
through pydantic on every request); which top-level fields of a view a caller
may select; and the opaque continue token of a page (HMAC-signed with a key of
this process, so an edited or foreign token is refused, never misread). Pages
are in name order: a continue token names the last instance of its page.
Must not decide who may see what (callers pass a ``mask`` for viewers) nor
read the store itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from virtfleet.errors import InvalidContinueError, UnknownFieldError
from virtfleet.model.names import validate_name

Mask = Callable[[Any], Any]  # JSON-like view -> what a viewer may see of it
MAX_CACHED = 20_000  # serialised views kept (cleared beyond: names of deleted instances)
_TOKEN_VERSION = 1


@dataclass(frozen=True)
class Page:
    """One page of a listing: the JSON array and, if more follow, the next page's token."""

    body: bytes
    next_token: str | None


class ViewCache:
    """Serialised views by name, each valid for the key (record revisions and whatever
    else the view derives from) it was made at; one per masking."""

    def __init__(self, fields: Iterable[str]) -> None:
        self.fields = tuple(fields)
        self._cache: dict[tuple[str, bool], tuple[Hashable, _Views]] = {}

    def json(
        self,
        name: str,
        key: Hashable,
        view: Callable[[], BaseModel],
        mask: Mask | None,
        fields: tuple[str, ...],
    ) -> bytes:
        """The JSON object of ``fields`` of ``name``'s view at ``key`` (``view`` makes the
        view on a miss)."""
        slot = (name, mask is not None)
        hit = self._cache.get(slot)
        if hit is None or hit[0] != key:
            data = view().model_dump(mode="json")
            hit = (key, _Views(mask(data) if mask is not None else data))
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[slot] = hit
        return hit[1].object(fields)

    def check_fields(self, fields: str | None) -> tuple[str, ...]:
        """The selected fields (all when ``fields`` is None); ``UnknownFieldError`` naming
        any a view does not have."""
        if fields is None:
            return self.fields
        chosen = tuple(dict.fromkeys(f.strip() for f in fields.split(",")))
        unknown = [f for f in chosen if f not in self.fields]
        if unknown or not chosen:
            raise UnknownFieldError(
                f"unknown field(s) {', '.join(map(repr, unknown)) or repr('')}: "
                f"choose from {', '.join(self.fields)}"
            )
        return chosen


class _Views:
    """One view's fields as JSON text, and the objects rendered from them by field set."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.fragments = {k: json.dumps(v, separators=(",", ":")).encode() for k, v in data.items()}
        self._objects: dict[tuple[str, ...], bytes] = {}

    def object(self, fields: tuple[str, ...]) -> bytes:
        made = self._objects.get(fields)
        if made is None:
            parts = (b'"' + f.encode() + b'":' + self.fragments[f] for f in fields)
            made = self._objects[fields] = b"{" + b",".join(parts) + b"}"
        return made


def render(objects: Iterable[bytes]) -> bytes:
    """A JSON array of the JSON ``objects``."""
    return b"[" + b",".join(objects) + b"]"


class Tokens:
    """Continue tokens: ``base64url(payload).base64url(hmac)``, valid in this process."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def make(self, after: str) -> str:
        payload = _b64(json.dumps({"v": _TOKEN_VERSION, "after": after}).encode())
        return f"{payload}.{self._sign(payload)}"

    def after(self, token: str) -> str:
        """The name the page of ``token`` starts after; ``InvalidContinueError`` if the
        token was not made here (edited, truncated, or from before a daemon restart)."""
        payload, _, signature = token.partition(".")
        expected = self._sign(payload).encode()
        if not signature or not hmac.compare_digest(signature.encode(), expected):
            raise InvalidContinueError(
                "invalid continue token (changed, or from before a daemon restart): "
                "list again from the first page"
            )
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return validate_name(data["after"], "continue token's instance name")

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:18])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
