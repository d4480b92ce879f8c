"""QMPSession against the scripted fake QMP server: replies, errors, events, hang-ups."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.protocol.fake_qmp import CLOSE, GARBAGE, HANG, FakeQMPServer, error, ok
from virtfleet.drivers.qemu.qmp import QMPEvent, QMPSession
from virtfleet.errors import QMPConnectionError, QMPError, TimeoutError_

pytestmark = pytest.mark.timeout(30)


@contextlib.asynccontextmanager
async def serve(
    sock_dir: Path, script: dict[str, Any] | None = None, **session_kw: Any
) -> AsyncIterator[tuple[FakeQMPServer, QMPSession]]:
    async with FakeQMPServer(sock_dir / "q.sock", script) as fake:
        session = await QMPSession.connect(fake.path, timeout_s=2.0, **session_kw)
        try:
            yield fake, session
        finally:
            await session.close()


async def collect(session: QMPSession) -> list[QMPEvent]:
    return [event async for event in session.events()]


async def test_greeting_and_negotiation(sock_dir: Path) -> None:
    """connect() reads the greeting and negotiates capabilities before returning."""
    async with serve(sock_dir) as (fake, session):
        assert session.connected
        first = fake.received[0]
        assert first["execute"] == "qmp_capabilities"
        assert first["arguments"] == {"enable": ["oob"]}


async def test_typed_replies(sock_dir: Path) -> None:
    """Each command method sends its QMP command and returns a typed value."""
    script = {"human-monitor-command": lambda a: ok(f"ran {a['command-line']}\r\n")}
    async with serve(sock_dir, script) as (fake, session):
        assert await session.query_status() == "running"
        assert await session.query_version() == "10.0.2"
        cpus = await session.query_cpus_fast()
        assert isinstance(cpus, list) and cpus[0]["cpu-index"] == 0
        assert await session.human_monitor_command("info status") == "ran info status\r\n"
        await session.stop()
        assert await session.query_status() == "paused"
        await session.cont()
        await session.system_reset()
        await session.system_powerdown()
        await session.screendump(Path("/tmp/x.png"))
        shot = await fake.wait_command("screendump")
        assert shot["arguments"] == {"filename": "/tmp/x.png", "format": "png"}
        assert fake.commands()[-4:] == ["cont", "system_reset", "system_powerdown", "screendump"]


async def test_error_reply_becomes_qmp_error(sock_dir: Path) -> None:
    """An error reply raises QMPError (not a connection error) with class/desc evidence."""
    script = {"cont": error("Resetting the Virtual Machine is required", "GenericError")}
    async with serve(sock_dir, script) as (_fake, session):
        with pytest.raises(QMPError) as info:
            await session.cont()
        err = info.value
        assert type(err) is QMPError
        assert err.message == "QMP 'cont' failed: Resetting the Virtual Machine is required"
        assert err.details["command"] == "cont"
        assert err.details["arguments"] == {}
        assert err.details["error_class"] == "GenericError"
        assert err.details["error_desc"] == "Resetting the Virtual Machine is required"
        assert err.__cause__ is not None
        assert session.connected  # an error reply does not end the session


async def test_unknown_command_keeps_arguments(sock_dir: Path) -> None:
    """The arguments of a failed command are kept in the error details."""
    async with serve(sock_dir, {"screendump": error("no console", "DeviceNotFound")}) as (_, s):
        with pytest.raises(QMPError) as info:
            await s.screendump(Path("/tmp/s.ppm"), "ppm")
        assert info.value.details["arguments"] == {"filename": "/tmp/s.ppm", "format": "ppm"}
        assert info.value.details["error_class"] == "DeviceNotFound"


async def test_events_delivered_in_order(sock_dir: Path) -> None:
    """Events arrive through events() in emission order with name, data and timestamp."""
    async with serve(sock_dir) as (fake, session):
        await fake.emit("STOP")
        await fake.emit("RESUME")
        await fake.emit("RTC_CHANGE", {"offset": 3})
        got: list[QMPEvent] = []
        async for event in session.events():
            got.append(event)
            if len(got) == 3:
                break
        assert [e.name for e in got] == ["STOP", "RESUME", "RTC_CHANGE"]
        assert got[2].data == {"offset": 3}
        assert abs(got[0].timestamp - time.time()) < 60


async def test_events_iterator_ends_on_eof(sock_dir: Path) -> None:
    """When QEMU closes the socket, events() yields what came before and then ends."""
    async with serve(sock_dir) as (fake, session):
        consumer = asyncio.create_task(collect(session))
        await fake.emit("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
        await fake.close_client()
        got = await asyncio.wait_for(consumer, 2.0)
        assert [e.name for e in got] == ["SHUTDOWN"]
        assert not session.connected
        assert await asyncio.wait_for(collect(session), 1.0) == got  # late readers end too


@pytest.mark.parametrize("hang_first", [False, True], ids=["close-instead-of-reply", "pending"])
async def test_eof_during_command(sock_dir: Path, hang_first: bool) -> None:
    """QEMU hanging up mid-command raises QMPConnectionError at once, never hangs."""
    async with serve(sock_dir, {"query-status": HANG if hang_first else CLOSE}) as (fake, s):
        call = asyncio.create_task(s.query_status())
        await fake.wait_command("query-status")
        if hang_first:
            await fake.close_client()
        started = time.monotonic()
        with pytest.raises(QMPConnectionError) as info:
            await asyncio.wait_for(call, 2.0)
        assert time.monotonic() - started < 1.0
        assert info.value.message.startswith("QMP 'query-status' failed:")
        assert info.value.details["command"] == "query-status"
        with pytest.raises(QMPConnectionError):  # and later commands fail the same way
            await s.query_status()


async def test_garbage_line_is_connection_error(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-JSON line from QEMU yields QMPConnectionError, ends events, logs no noise."""
    caplog.set_level(logging.DEBUG)
    async with serve(sock_dir, {"query-status": GARBAGE}) as (_fake, session):
        with pytest.raises(QMPConnectionError) as info:
            await asyncio.wait_for(session.query_status(), 2.0)
        assert info.value.details["command"] == "query-status"
        assert await asyncio.wait_for(collect(session), 1.0) == []
        assert not session.connected
    assert not [r for r in caplog.records if r.name.startswith("qemu.qmp")]


async def test_unsolicited_garbage_ends_session(sock_dir: Path) -> None:
    """Garbage while idle ends events() and later commands raise QMPConnectionError."""
    async with serve(sock_dir) as (fake, session):
        await fake.send_garbage()
        await asyncio.wait_for(collect(session), 2.0)
        with pytest.raises(QMPConnectionError) as info:
            await session.query_status()
        assert "DeserializationError" in info.value.message


async def test_command_timeout(sock_dir: Path) -> None:
    """A command QEMU never answers raises TimeoutError_ after command_timeout_s."""
    async with serve(sock_dir, {"stop": HANG}, command_timeout_s=0.2) as (_fake, session):
        with pytest.raises(TimeoutError_) as info:
            await session.stop()
        assert info.value.details["command"] == "stop"
        assert await session.query_status() == "running"  # the session is still usable


async def test_connect_retries_until_socket_appears(sock_dir: Path) -> None:
    """connect() keeps retrying while the socket does not exist yet."""
    fake = FakeQMPServer(sock_dir / "late.sock")

    async def start_late() -> None:
        await asyncio.sleep(0.3)
        await fake.start()

    starter = asyncio.create_task(start_late())
    try:
        session = await QMPSession.connect(fake.path, timeout_s=3.0)
        assert await session.query_status() == "running"
        await session.close()
        assert fake.connections == 1
    finally:
        await starter
        await fake.stop()


async def test_connect_timeout(sock_dir: Path) -> None:
    """connect() gives up with QMPConnectionError once timeout_s has passed."""
    started = time.monotonic()
    with pytest.raises(QMPConnectionError) as info:
        await QMPSession.connect(sock_dir / "never.sock", timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    assert info.value.details["attempts"] > 1
    assert "FileNotFoundError" in info.value.message


async def test_connect_timeout_without_greeting(sock_dir: Path) -> None:
    """A socket that accepts but never greets also times out as QMPConnectionError."""
    async with FakeQMPServer(sock_dir / "mute.sock", greet=False) as fake:
        with pytest.raises(QMPConnectionError, match="no QMP greeting"):
            await QMPSession.connect(fake.path, timeout_s=0.3)


async def test_wait_event(sock_dir: Path) -> None:
    """wait_event() sees an event sent before the reply, times out, fails on hang-up."""
    async with serve(sock_dir) as (fake, session):
        await session.stop()  # the fake emits STOP before replying, like QEMU
        stop = await session.wait_event({"STOP", "SHUTDOWN"}, 1.0)
        assert stop.name == "STOP"
        with pytest.raises(TimeoutError_):
            await session.wait_event({"STOP"}, 0.1)  # that STOP was already returned
        waiter = asyncio.create_task(session.wait_event({"SHUTDOWN"}, 5.0))
        await asyncio.sleep(0.05)
        await fake.close_client()
        with pytest.raises(QMPConnectionError):
            await asyncio.wait_for(waiter, 2.0)


@pytest.mark.parametrize("quit_reply", [None, CLOSE], ids=["reply-then-close", "close-only"])
async def test_quit_treats_hangup_as_success(sock_dir: Path, quit_reply: Any) -> None:
    """quit() succeeds whether or not QEMU replies before closing; events() then ends."""
    script = {} if quit_reply is None else {"quit": quit_reply}
    async with serve(sock_dir, script) as (_fake, session):
        consumer = asyncio.create_task(collect(session))
        await session.quit()
        got = await asyncio.wait_for(consumer, 2.0)
        assert [e.name for e in got] == ([] if quit_reply else ["SHUTDOWN"])


async def test_close_is_idempotent(sock_dir: Path) -> None:
    """close() twice is fine; afterwards commands raise and events() ends."""
    async with serve(sock_dir) as (_fake, session):
        consumer = asyncio.create_task(collect(session))
        await session.close()
        await session.close()
        assert not session.connected
        assert await asyncio.wait_for(consumer, 1.0) == []
        with pytest.raises(QMPConnectionError, match="session is closed"):
            await session.query_status()
        with pytest.raises(QMPConnectionError):
            await session.quit()


async def test_log_file_records_exchange(sock_dir: Path) -> None:
    """log_path receives one JSON line per greeting, command, reply, event, hang-up."""
    log = sock_dir / "qmp.log"
    async with serve(sock_dir, {"cont": error("nope")}, log_path=log) as (fake, session):
        await session.query_status()
        with pytest.raises(QMPError):
            await session.cont()
        await fake.emit("POWERDOWN")
        await fake.close_client()
        await asyncio.wait_for(collect(session), 2.0)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    msgs = [(line["dir"], line["msg"]) for line in lines]
    assert "QMP" in msgs[0][1] and msgs[0][0] == "recv"
    assert msgs[1][0] == "send" and msgs[1][1]["execute"] == "qmp_capabilities"
    sent = [m["execute"] for d, m in msgs if d == "send"]
    assert sent == ["qmp_capabilities", "query-status", "cont"]
    request, reply = msgs[3][1], msgs[4][1]
    assert reply["id"] == request["id"]
    assert reply["return"] == {"status": "running", "running": True, "singlestep": False}
    assert any(d == "recv" and m.get("error", {}).get("desc") == "nope" for d, m in msgs)
    assert any(d == "recv" and m.get("event") == "POWERDOWN" for d, m in msgs)
    assert msgs[-1][0] == "note" and msgs[-1][1].startswith("disconnected")
    assert all(isinstance(line["ts"], float) for line in lines)
