"""What a viewer may not read: cloud-init contents are masked in answers to role ``viewer``.

Owns the rule that ``user_data``, ``network_config``, ``runcmd`` and the contents of
``write_files`` (where passwords, tokens and keys usually travel into a guest) are
``***`` for viewers wherever a ``cloud_init`` appears in an answer (instances,
templates and images, backup manifests), at any depth; operators and admins, who
may set them, see them. Field names, paths, hostnames and public SSH keys stay
visible. Must not decide roles (``api.auth`` does) nor change what is stored.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from virtfleet.model.auth import Principal, Role

MASK = "***"
CLOUD_INIT = "cloud_init"
_MASKED_TEXT = ("user_data", "network_config")
_MASKED_LINES = ("runcmd",)

M = TypeVar("M", bound=BaseModel)


def for_principal(principal: Principal, value: M) -> M:
    """``value`` as ``principal`` may see it (a copy with secrets masked for viewers)."""
    if principal.role.allows(Role.OPERATOR):
        return value
    masked = mask_cloud_init(value.model_dump(mode="json"))
    return type(value).model_validate(masked)


def all_for_principal(principal: Principal, values: list[M]) -> list[M]:
    return [for_principal(principal, v) for v in values]


def mask_cloud_init(data: Any) -> Any:
    """``data`` (JSON-like) with the secrets masked anywhere below a ``cloud_init`` key
    (the settings themselves, or wrapped, as in a template's ``{"value": ..., "set_by": ...}``)."""
    if isinstance(data, list):
        return [mask_cloud_init(v) for v in data]
    if not isinstance(data, dict):
        return data
    return {k: _masked(v) if k == CLOUD_INIT else mask_cloud_init(v) for k, v in data.items()}


def _masked(tree: Any) -> Any:
    """``tree`` (a cloud-init subtree) with every secret-bearing field masked, at any depth."""
    if isinstance(tree, list):
        return [_masked(v) for v in tree]
    if not isinstance(tree, dict):
        return tree
    out = {k: _masked(v) for k, v in tree.items()}
    for name in _MASKED_TEXT:
        if isinstance(out.get(name), str):
            out[name] = MASK
    for name in _MASKED_LINES:
        if isinstance(out.get(name), list) and out[name]:
            out[name] = [MASK]
    if isinstance(out.get("write_files"), list):
        out["write_files"] = [
            {**f, "content": MASK} if isinstance(f, dict) else f for f in out["write_files"]
        ]
    return out
