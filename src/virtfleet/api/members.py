"""Requests this daemon makes to another cluster member on its own behalf (image fetches).

Owns ``HttpMemberPeers``, the HTTP side of ``service.imagefetch.MemberPeers``: each
request goes to the member's API URL, pinned to the certificate in its host record, and
is signed with the member credential (``service.membercred``) for the host's own
principal (``host:NAME``, an operator), as forwarded requests are. An error answer is
raised as the same error here (its code and message); a member that does not answer is
``OwnerUnreachableError``; a download that is refused or breaks off is
``ImageTransferError``. Must not decide what to ask for.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from virtfleet.errors import ImageTransferError, OwnerUnreachableError, VirtfleetError
from virtfleet.model.auth import Principal, Role
from virtfleet.service.errcodes import error_from_code
from virtfleet.service.forwarding import ForwardingService, OwnerTarget
from virtfleet.util.pinning import pinned_context

TIMEOUT = httpx.Timeout(60.0, connect=5.0)  # per read: a stalled sender, not a long file
CHUNK = 1 << 20


class HttpMemberPeers:
    def __init__(self, forwarding: ForwardingService) -> None:
        self.forwarding = forwarding

    @contextlib.asynccontextmanager
    async def _client(self, host: OwnerTarget) -> AsyncIterator[httpx.AsyncClient]:
        verify = pinned_context(host.fingerprint) if host.fingerprint else True
        async with httpx.AsyncClient(verify=verify, timeout=TIMEOUT) as client:
            yield client

    async def _signed(self, method: str, path: str) -> dict[str, str]:
        name = await self.forwarding.host_name(self.forwarding.host_id)
        me = Principal(username=f"host:{name}", role=Role.OPERATOR, via="forwarded")
        return await self.forwarding.credentials.sign(method, path, b"", me)

    async def call(self, host: OwnerTarget, method: str, path: str) -> dict[str, Any]:
        headers = await self._signed(method, path)
        try:
            async with self._client(host) as client:
                r = await client.request(method, host.api_url + path, headers=headers)
        except httpx.TransportError as err:
            raise _away(host, err) from None
        if r.status_code >= 400:
            raise _error_of(r)
        answer = r.json()
        return answer if isinstance(answer, dict) else {"items": answer}

    @contextlib.asynccontextmanager
    async def download(self, host: OwnerTarget, path: str) -> AsyncIterator[AsyncIterator[bytes]]:
        headers = await self._signed("GET", path)
        async with self._client(host) as client:
            try:
                async with client.stream("GET", host.api_url + path, headers=headers) as r:
                    if r.status_code != 200:
                        await r.aread()
                        err = _error_of(r)
                        raise ImageTransferError(f"host {host.host_name} refused: {err.message}")
                    yield _chunks(r, host)
            except httpx.TransportError as err:
                raise _away(host, err) from None


async def _chunks(r: httpx.Response, host: OwnerTarget) -> AsyncIterator[bytes]:
    try:
        async for chunk in r.aiter_raw(CHUNK):
            yield chunk
    except httpx.TransportError as err:
        raise ImageTransferError(
            f"the transfer from host {host.host_name} broke off: {err}"
        ) from None


def _away(host: OwnerTarget, err: BaseException) -> OwnerUnreachableError:
    why = " ".join(str(err).split()) or type(err).__name__
    return OwnerUnreachableError(
        f"host {host.label} at {host.api_url} does not answer: {why}", host=host.host_id
    )


def _error_of(r: httpx.Response) -> VirtfleetError:
    """The member's one-line error, with its code, as ours."""
    try:
        error = r.json()["error"]
        return error_from_code(str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return VirtfleetError(f"the member answered {r.status_code}")
