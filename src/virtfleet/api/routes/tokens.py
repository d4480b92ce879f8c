"""Routes of ``/1.0/tokens``: API tokens for automation; the new token is answered once.

Handlers only parse, guard and call ``TokenService`` (which scopes everything to
the caller's own tokens unless the caller is an admin). Must not store secrets.
"""

from __future__ import annotations

from fastapi import APIRouter

from virtfleet.api.auth import Viewer
from virtfleet.api.deps import ServicesDep
from virtfleet.api.schemas import CreateToken
from virtfleet.model.auth import NewToken, TokenInfo

router = APIRouter(prefix="/1.0/tokens", tags=["tokens"])


@router.get("")
async def list_tokens(principal: Viewer, services: ServicesDep) -> list[TokenInfo]:
    """The caller's tokens (an admin: everyone's), never their secrets."""
    return await services.tokens.list(principal)


@router.post("", status_code=201)
async def create_token(body: CreateToken, principal: Viewer, services: ServicesDep) -> NewToken:
    """Mint a token of at most the caller's role; ``token`` is in this answer only.
    It expires after 90 days unless ``expires_in_s`` or ``never_expires`` says otherwise."""
    return await services.tokens.create(
        principal, body.role, body.expires_in_s, body.description, body.never_expires
    )


@router.delete("/{token_id}")
async def revoke_token(token_id: str, principal: Viewer, services: ServicesDep) -> TokenInfo:
    return await services.tokens.revoke(principal, token_id)
