"""The CLI starts fast: ``virtfleet`` commands import no server code and none of the heavy
libraries they do not need, and send one request where one does.

Each command runs in a fresh interpreter (a probe records ``sys.modules`` and the HTTP
requests at exit). How long ``--help`` takes is measured by ``bench/cli.py`` (a timed
test on a shared 2-core machine flakes with the load; the imports that make it slow are
what this module checks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.fake_containers import with_containers
from tests.functional.platform import serve_uds
from virtfleet.client import Client, api_socket

pytestmark = pytest.mark.meta
BIN = Path(sys.executable).parent
SERVER_SIDE = ("api", "service", "state", "host", "drivers", "app", "network", "storage")
HEAVY = ("pydantic", "httpx", "rich", "fastapi", "uvicorn", "starlette", "websockets")
PROBE = """
import atexit, http.client, json, os, sys
sent = []
send = http.client.HTTPConnection.request
def request(self, method, url, *args, **kwargs):
    sent.append(f"{method} {url.split('?')[0]}")
    return send(self, method, url, *args, **kwargs)
http.client.HTTPConnection.request = request
def report():
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump({"modules": sorted(sys.modules), "requests": sent}, out)
atexit.register(report)
sys.argv = ["virtfleet", *sys.argv[1:]]
from virtfleet.cli.main import main
main()
"""


def _probe(
    tmp_path: Path, *args: str, **env_vars: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, list[str]]]:
    out = tmp_path / "probe.json"
    env = {**os.environ, "PROBE_OUT": str(out), "COLUMNS": "100", **env_vars}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=60
    )
    return proc, json.loads(out.read_text())


def _unwanted(modules: list[str]) -> list[str]:
    server = tuple(f"virtfleet.{p}" for p in SERVER_SIDE)
    return [
        m
        for m in modules
        if (m.startswith(server) and m.split(".")[1] in SERVER_SIDE) or m.split(".")[0] in HEAVY
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        [],
        ["vm", "--help"],
        ["vm", "start", "--help"],
        ["exec", "--help"],
        ["--data-dir", "/nonexistent", "vm", "start", "c1"],
        ["--data-dir", "/nonexistent", "exec", "c1", "--", "true"],
    ],
)
def test_commands_import_no_server_code_nor_heavy_libraries(
    tmp_path: Path, args: list[str]
) -> None:
    """Help, a power verb and exec (here without a daemon) load only the CLI's own path."""
    proc, seen = _probe(tmp_path, *args)
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert _unwanted(seen["modules"]) == []
    if "--help" in args or not args:
        assert "Usage: virtfleet" in proc.stdout + proc.stderr  # no arguments: usage error


def test_shell_completion_reads_only_the_listed_help(tmp_path: Path) -> None:
    """Completing ``virtfleet vm st`` offers the vm group's commands with their help and
    builds neither (nor imports anything heavy)."""
    args = {"_VIRTFLEET_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "virtfleet vm st"}
    proc, seen = _probe(tmp_path, **args)
    assert proc.returncode == 0, proc.stderr
    assert '"start":"Start a stopped instance."' in proc.stdout and '"stop":' in proc.stdout
    assert _unwanted(seen["modules"]) == []


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Path]:
    """A daemon (fake driver, in-process container ops) with a stopped container c1."""
    with serve_uds(tmp_path, setup=with_containers) as data_dir:
        with Client(uds_path=api_socket(data_dir)) as client:
            client.wait_operation(client.build_image("ctiny", builder="container-tiny").id)
            spec = {"name": "c1", "kind": "container", "image": "ctiny"}
            made = client.create_instance(spec, start=False)
            assert client.wait_operation(made.id).status.value == "success"
        yield data_dir


def test_a_power_verb_is_one_request_without_models(tmp_path: Path, daemon: Path) -> None:
    """`virtfleet start c1` sends one PUT that answers once the container runs, and prints
    the state it reached; no model is parsed, so pydantic is not even imported."""
    proc, seen = _probe(tmp_path, "--data-dir", str(daemon), "start", "c1")
    assert (proc.returncode, proc.stdout) == (0, "c1 is running\n"), proc.stderr
    assert seen["requests"] == ["PUT /1.0/instances/c1/state"]
    assert _unwanted(seen["modules"]) == []
    proc, seen = _probe(tmp_path, "--data-dir", str(daemon), "vm", "stop", "c1", "--json")
    assert json.loads(proc.stdout)["status"] == "success"
    assert seen["requests"] == ["PUT /1.0/instances/c1/state"]


def test_exec_is_one_request_without_models(tmp_path: Path, daemon: Path) -> None:
    """`virtfleet exec c1 -- cmd` is one POST whose answer carries the output and exit code."""
    with Client(uds_path=api_socket(daemon)) as client:
        client.change_state("c1", "start", wait_s=10)
    proc, seen = _probe(tmp_path, "--data-dir", str(daemon), "exec", "c1", "--", "echo", "hi")
    assert (proc.returncode, proc.stdout) == (0, "c1: echo hi\n"), proc.stderr
    assert seen["requests"] == ["POST /1.0/instances/c1/exec"]
    assert _unwanted(seen["modules"]) == []
    proc, _ = _probe(tmp_path, "--data-dir", str(daemon), "exec", "c1", "--", "false")
    assert proc.returncode == 3
