"""NoCloud seed ISOs: ``CloudInit`` settings -> user-data, meta-data, network-config on a
CIDATA ISO 9660 image (pycdlib, Joliet + Rock Ridge names).

Owns rendering (cloud-init's NoCloud data source: the volume label ``CIDATA`` and
the files ``user-data``, ``meta-data``, ``network-config``) and writing the image
atomically. Must not know instances or QEMU: callers pass the name and path.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pycdlib

from virtfleet.model.cloudinit import CloudInit

VOLUME_LABEL = "CIDATA"  # NoCloud looks for a filesystem with this label


def render(name: str, cloud: CloudInit, uuid: str | None = None) -> dict[str, bytes]:
    """The seed's files for instance ``name`` (whose SMBIOS UUID is ``uuid``, when it has
    one): ``user-data``, ``meta-data``, ``network-config``."""
    cloud = cloud.for_instance(name)
    hostname = cloud.hostname or name
    # instance-id is the machine's own (its UUID: a clone or copy never shares it) and
    # changes with the settings, so cloud-init re-runs when they change.
    iid = hashlib.sha256(cloud.model_dump_json().encode()).hexdigest()[:12]
    meta = f"instance-id: {uuid or name}-{iid}\nlocal-hostname: {hostname}\n"
    files = {"meta-data": meta.encode(), "user-data": _user_data(cloud, hostname).encode()}
    if cloud.network_config:
        files["network-config"] = cloud.network_config.encode()
    return files


def _user_data(cloud: CloudInit, hostname: str) -> str:
    if cloud.user_data is not None:
        return cloud.user_data
    config: dict[str, Any] = {"hostname": hostname.split(".")[0], "preserve_hostname": False}
    if "." in hostname:
        config["fqdn"] = hostname
    if cloud.users:
        config["users"] = ["default", *({"name": u, "sudo": "ALL=(ALL) NOPASSWD:ALL",
                                         "shell": "/bin/bash"} for u in cloud.users)]  # fmt: skip
    if cloud.ssh_authorized_keys:
        config["ssh_authorized_keys"] = cloud.ssh_authorized_keys
    if cloud.packages:
        config["packages"] = cloud.packages
    if cloud.runcmd:
        config["runcmd"] = cloud.runcmd
    if cloud.write_files:
        config["write_files"] = [f.model_dump() for f in cloud.write_files]
    # JSON is YAML: the #cloud-config header plus one JSON mapping needs no YAML library.
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"


def write_seed(path: Path, name: str, cloud: CloudInit, uuid: str | None = None) -> Path:
    """Write the CIDATA ISO for instance ``name`` to ``path`` (atomically); return ``path``."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    for index, (fname, data) in enumerate(sorted(render(name, cloud, uuid).items())):
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"/FILE{index}.;1",
            rr_name=fname,
            joliet_path=f"/{fname}",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cidata-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        iso.write(tmp)
        os.chmod(tmp, 0o600)  # user-data carries secrets; QEMU opens it before dropping root
        os.replace(tmp, path)
    finally:
        iso.close()
        Path(tmp).unlink(missing_ok=True)
    return path
