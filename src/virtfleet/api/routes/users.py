"""Routes of ``/1.0/users``: local users (admin only) and password changes (also one's own).

Handlers only parse, guard and call ``AuthService``. Must not hash or check passwords.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from virtfleet.api.auth import ADMIN, Viewer
from virtfleet.api.deps import ServicesDep
from virtfleet.api.schemas import ChangePassword, CreateUser, UpdateUser
from virtfleet.model.auth import UserInfo

router = APIRouter(prefix="/1.0/users", tags=["users"])


@router.get("", dependencies=[ADMIN])
async def list_users(services: ServicesDep) -> list[UserInfo]:
    return await services.auth.list_users()


@router.post("", status_code=201, dependencies=[ADMIN])
async def create_user(body: CreateUser, services: ServicesDep) -> UserInfo:
    return await services.auth.create_user(body.username, body.password, body.role)


@router.get("/{name}", dependencies=[ADMIN])
async def get_user(name: str, services: ServicesDep) -> UserInfo:
    return await services.auth.get_user(name)


@router.delete("/{name}", dependencies=[ADMIN])
async def delete_user(name: str, services: ServicesDep) -> dict[str, Any]:
    """Delete a user, its sessions and its tokens (a missing user is not an error)."""
    return {"username": name, "deleted": await services.auth.delete_user(name)}


@router.patch("/{name}", dependencies=[ADMIN])
async def update_user(
    name: str, body: UpdateUser, principal: Viewer, services: ServicesDep
) -> UserInfo:
    """Change a user's role, or disable/enable it (a disabled user cannot log in, its
    sessions end and its tokens are refused until it is enabled again)."""
    return await services.auth.update_user(principal, name, body.role, body.disabled)


@router.put("/{name}/password")
async def change_password(
    name: str, body: ChangePassword, principal: Viewer, services: ServicesDep
) -> UserInfo:
    """Admins set anyone's password; users their own, giving ``current_password``."""
    return await services.auth.change_password(
        principal, name, body.password, body.current_password
    )
