"""Browser fixtures: a real daemon serving the web UI over plain HTTP on a free loopback
port, and headless Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright.

Every test gets a fresh browser profile. ``shots.step(name)`` keeps a screenshot of each
step; when a test fails they are copied to artifacts/browser/<test>/ with the daemon log,
the serial logs and the browser console.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from tests.integration.conftest import ROOT, Daemon, _running_daemon, tiny_cache

__all__ = ["tiny_cache"]

CHROMIUM = Path("/usr/bin/chromium")
ADMIN_PASSWORD = "browser-test-admin-pw"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def module_ui_daemon(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Daemon]:
    """Like ``ui_daemon``, shared by a whole test module (fewer daemons on a slow machine)."""
    port = _free_port()
    env = {"VIRTFLEET_ADMIN_PASSWORD": ADMIN_PASSWORD}
    args = ("--listen", f"127.0.0.1:{port}", "--metrics-interval", "2")  # alerts fire soon
    for d in _running_daemon(request, args, env):
        d.url = f"http://127.0.0.1:{port}"
        yield d


@pytest.fixture
def ui_daemon(
    request: pytest.FixtureRequest, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Daemon]:
    """A daemon with the ``tiny`` image, the UI on ``d.url`` (HTTP) and admin's password set."""
    monkeypatch.setenv("VIRTFLEET_ADMIN_PASSWORD", ADMIN_PASSWORD)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for d in _running_daemon(request, ("--listen", f"127.0.0.1:{port}")):
        d.url = f"http://127.0.0.1:{port}"
        yield d


def fake_ui_daemon(prefix: str, viewer: tuple[str, str]) -> Iterator[Daemon]:
    """A ``--driver fake`` daemon (no guest boots) serving the UI on a loopback port, with
    admin's password set and the viewer account ``viewer`` (username, password) made."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    port = _free_port()
    d = Daemon(data_dir, ["--driver", "fake", "--listen", f"127.0.0.1:{port}"])
    d.env = {"VIRTFLEET_ADMIN_PASSWORD": ADMIN_PASSWORD}
    d.url = f"http://127.0.0.1:{port}"
    d.start()
    try:
        with admin_http(d) as http:
            user = {"username": viewer[0], "password": viewer[1], "role": "viewer"}
            assert http.post("/1.0/users", json=user).status_code in (200, 201)
        yield d
    finally:
        d.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


class Shots:
    """Numbered screenshots of a test's steps, plus the browser console's messages."""

    def __init__(self, page: Page, directory: Path) -> None:
        self.page = page
        self.dir = directory
        self.count = 0
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def step(self, name: str) -> Path:
        """Screenshot the page now as step ``name``."""
        self.count += 1
        path = self.dir / f"{self.count:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        return path


@pytest.fixture
def page(request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh headless Chromium profile at 1280x800."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/bootstrap.sh installs it)")
    profile = Path(tempfile.mkdtemp(prefix="vf-chromium-"))
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(15_000)
        blocked: list[str] = []  # what the Content-Security-Policy refused (Chromium logs it)
        context.on("console", lambda m: _note_csp(blocked, m.text))
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
        assert blocked == [], "the UI violates its Content-Security-Policy"


def _note_csp(blocked: list[str], text: str) -> None:
    if "Content Security Policy" in text:
        blocked.append(text)


@pytest.fixture
def shots(request: pytest.FixtureRequest, page: Page) -> Iterator[Shots]:
    """Step screenshots, kept under artifacts/browser/<test>/ if the test fails."""
    work = Path(tempfile.mkdtemp(prefix="vf-shots-"))
    taken = Shots(page, work)
    yield taken
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        dest = ROOT / "artifacts" / "browser" / request.node.name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(work, dest)
        with contextlib.suppress(Exception):  # the page may be gone
            taken.step("at-failure")
            shutil.copy(work / f"{taken.count:02d}-at-failure.png", dest)
        (dest / "browser-console.txt").write_text("\n".join(taken.console))
    shutil.rmtree(work, ignore_errors=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item: fixtures look at ``rep_call`` to keep artifacts."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@contextlib.contextmanager
def admin_http(
    d: Daemon, user: str = "admin", password: str = ADMIN_PASSWORD
) -> Iterator[httpx.Client]:
    """An httpx client logged in on ``d.url``, sending the CSRF header on changes."""
    with httpx.Client(base_url=d.url, timeout=60) as client:
        r = client.post("/1.0/login", json={"username": user, "password": password})
        assert r.status_code == 200, r.text
        client.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        yield client


def wait_op(client: httpx.Client, response: httpx.Response, timeout_s: float = 300) -> Any:
    """The finished operation a 202 ``response`` started (asserting it succeeded)."""
    assert response.status_code == 202, response.text
    op = response.json()
    deadline = time.monotonic() + timeout_s
    while op["status"] in ("pending", "running") and time.monotonic() < deadline:
        r = client.get(f"/1.0/operations/{op['id']}/wait", params={"timeout_s": 30}, timeout=60)
        assert r.status_code == 200, r.text
        op = r.json()
    assert op["status"] == "success", op
    return op


# -- a fake-driver daemon with a small VM image (browser tests that boot no guest) --------

PATTERN = bytes(range(256)) * 4096  # 1 MiB the exported disks must carry back


def raw_disk(path: Path) -> Path:
    """A 4 MiB raw disk starting with ``PATTERN``."""
    with path.open("wb") as f:
        f.write(PATTERN)
        f.truncate(4 * 2**20)
    return path


@pytest.fixture(scope="module")
def pattern_image(fake_daemon: Daemon) -> str:
    """The VM image ``small`` (a qcow2 of the pattern disk) on the module's ``fake_daemon``."""
    raw = raw_disk(fake_daemon.data_dir / "import" / "small.raw")
    disk = raw.with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(disk)], check=True)
    with admin_http(fake_daemon) as http:
        wait_op(http, http.post("/1.0/images/import", json={"name": "small", "path": disk.name}))
    return "small"


def started_vm(d: Daemon, name: str, image: str, *, stop: bool = True, **fields: Any) -> None:
    """VM ``name``, started once (the fake driver makes its disk at the first start)."""
    op = d.client.create_instance({"name": name, "image": image, **fields}, start=True)
    assert d.client.wait_operation(op.id, timeout_s=60).status == "success"
    if stop:
        op = d.client.change_state(name, "stop", force=True)
        assert d.client.wait_operation(op.id, timeout_s=60).status == "success"
