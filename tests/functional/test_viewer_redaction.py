"""Viewers read instances, templates and operations without the cloud-init secrets in them
(``user_data``, ``write_files`` contents, ``runcmd``, ``network_config``); operators,
who set them, still see them."""

from __future__ import annotations

from typing import Any

import httpx

from virtfleet.model.auth import Role

from .accounts import Accounts
from .helpers import wait_op

SECRET = "hunter2-very-secret"
CLOUD_INIT = {
    "hostname": "web",
    "ssh_authorized_keys": ["ssh-ed25519 AAAAC3Nza public-key"],
    "user_data": f"#cloud-config\npassword: {SECRET}\n",
    "write_files": [{"path": "/etc/app/token", "content": SECRET, "permissions": "0600"}],
    "runcmd": [f"echo {SECRET} > /root/pw"],
    "network_config": f"# psk {SECRET}\n",
}


async def _reads(client: httpx.AsyncClient, op_id: str) -> list[str]:
    paths = (
        "/1.0/instances",
        "/1.0/instances/web",
        "/1.0/templates",
        "/1.0/templates/tpl",
        "/1.0/images",
        "/1.0/operations",
        f"/1.0/operations/{op_id}",
        f"/1.0/operations/{op_id}/wait",
    )
    answers = []
    for path in paths:
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text)
        answers.append(r.text)
    return answers


async def test_viewers_do_not_see_cloud_init_secrets(
    accounts: Accounts, api: httpx.AsyncClient, image: str
) -> None:
    """Every read a viewer makes masks the secrets; the public parts stay; operators see all."""
    body: dict[str, Any] = {"name": "web", "image": image, "cloud_init": CLOUD_INIT}
    assert (await wait_op(api, await api.post("/1.0/instances", json=body)))["status"] == "success"
    tpl = {"name": "tpl", "image": image, "defaults": {"cloud_init": CLOUD_INIT}}
    op = await wait_op(api, await api.post("/1.0/templates", json=tpl))
    assert op["status"] == "success", op
    viewer = await accounts.token(Role.VIEWER)
    for text in await _reads(viewer, op["id"]):
        assert SECRET not in text
    shown = (await viewer.get("/1.0/instances/web")).json()["spec"]["cloud_init"]
    assert shown["user_data"] == "***" and shown["runcmd"] == ["***"]
    masked_file = {"path": "/etc/app/token", "content": "***", "permissions": "0600"}
    assert shown["write_files"] == [masked_file]
    assert shown["hostname"] == "web"
    assert shown["ssh_authorized_keys"] == CLOUD_INIT["ssh_authorized_keys"]
    operator = await accounts.token(Role.OPERATOR)
    assert all(SECRET in text for text in (await _reads(operator, op["id"]))[:4])
