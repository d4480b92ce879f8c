"""The cluster CA and this host's supervised etcd member: a real etcd on loopback with
peer and client TLS from the CA, re-adopted by a new supervisor (a daemon restart),
restarted when it dies, refused to clients without a certificate signed by the CA."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.etcdlab import free_port
from virtfleet.errors import InvalidInputError, ProcessError, StoreUnavailableError
from virtfleet.host.clusterca import (
    ClusterFiles,
    ensure_ca,
    ensure_member_cert,
    make_csr,
    sign_member,
)
from virtfleet.host.etcdmember import EtcdMember, MemberConfig, load_config
from virtfleet.state.etcd import EtcdStore, EtcdTLS


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vf-member-", dir="/dev/shm"))  # tmpfs: fast fsyncs
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def member_of(data_dir: Path, name: str = "m1") -> EtcdMember:
    files = ClusterFiles(data_dir / "cluster")
    ensure_ca(files, name)
    ensure_member_cert(files, name, ["127.0.0.1"])
    config = MemberConfig(
        name=name, host="127.0.0.1", client_port=free_port(), peer_port=free_port(),
        heartbeat_ms=25, election_ms=250,
    )  # fmt: skip
    return EtcdMember(data_dir, config)


def test_the_ca_signs_member_certificates_for_both_ends_of_tls(tmp_path: Path) -> None:
    files = ClusterFiles(tmp_path / "cluster")
    assert ensure_ca(files, "h1") is True
    first = files.fingerprint()
    assert ensure_ca(files, "h1") is False and files.fingerprint() == first  # made once
    ensure_member_cert(files, "h1", ["10.0.0.5", "h1.example"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u.dotted_string for u in usages} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.0.0.5",
    }
    assert "h1.example" in names.get_values_for_type(x509.DNSName)
    for key in (files.ca_key, files.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.root.stat().st_mode) == 0o700
    with pytest.raises(InvalidInputError, match="not a PEM certificate request"):
        sign_member(files, b"junk", [])
    other = sign_member(files, make_csr(ec.generate_private_key(ec.SECP256R1()), "h2"), [])
    x509.load_pem_x509_certificate(other).verify_directly_issued_by(ca)


async def test_member_runs_with_tls_is_readopted_restarted_and_stopped(data_dir: Path) -> None:
    member = member_of(data_dir)
    await member.start()
    try:
        first = member.pid
        assert first is not None and member.adopted is False
        argv = psutil.Process(first).cmdline()
        assert "--pre-vote=true" in argv and "--client-cert-auth=true" in argv
        assert argv[argv.index("--data-dir") + 1] == str(data_dir / "etcd")
        assert argv[argv.index("--auto-compaction-mode") + 1] == "periodic"
        store = EtcdStore([member.config.client_url], tls=member.tls())
        await store.put("/k", b"v")
        await store.close()
        # Without a client certificate signed by the CA, etcd refuses the client.
        bare = EtcdStore([member.config.client_url], tls=EtcdTLS(ca=member.files.ca_cert))
        with pytest.raises(StoreUnavailableError):
            await bare.get("/k")
        await bare.close()

        await member.detach()  # the daemon stops: etcd keeps running
        assert psutil.pid_exists(first)
        again = EtcdMember(data_dir, load_config(data_dir / "cluster") or member.config)
        await again.start()  # the daemon's next start
        assert (again.adopted, again.pid) == (True, first)
        member = again

        os.kill(first, signal.SIGKILL)  # the supervisor starts it again
        async with asyncio.timeout(30):
            while member.pid == first:
                await asyncio.sleep(0.05)
            await member.wait_ready()
        store = EtcdStore([member.config.client_url], tls=member.tls())
        assert (await store.get("/k")) is not None  # same data dir, same data
        await store.close()
    finally:
        pid = member.pid
        await member.stop()
    assert pid is not None and (not psutil.pid_exists(pid) or _zombie(pid))
    assert not member.pidfile.exists()


async def test_a_stale_pid_file_is_not_adopted(data_dir: Path) -> None:
    """A pid file naming another process (a reused pid) launches a new member."""
    member = member_of(data_dir)
    member.files.root.mkdir(parents=True, exist_ok=True)
    member.pidfile.write_text(json.dumps({"pid": os.getpid(), "create_time": 1.0}))
    await member.start()
    try:
        assert member.adopted is False and member.pid != os.getpid()
    finally:
        await member.stop()


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


async def test_a_member_that_cannot_start_is_retried_until_it_runs(data_dir: Path) -> None:
    """Its client port taken: start fails with etcd's reason and leaves no process; the
    background retry brings it up once the port is free (the daemon's start does this)."""
    member = member_of(data_dir)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", member.config.client_port))
        taken.listen()
        with pytest.raises(ProcessError, match="etcd exited"):
            await member.start()
        failed = member.pid
        assert failed is not None and not _alive_etcd(failed)
        member.retry_in_background()
    try:
        async with asyncio.timeout(30):
            await member.ready.wait()
        assert member.pid != failed and member.pid is not None and _alive_etcd(member.pid)
    finally:
        await member.stop()


def _alive_etcd(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
