"""Health probes and the HealthChecker against real sockets on loopback.

Fixtures: a pyftpdlib server running in a thread (user "u", password "p"), a
raw server that accepts but never greets, small scripted FTP servers for odd
greetings, and a closed port.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from ftplb.balancing.pool import Pool
from ftplb.balancing.state import Server, ServerState
from ftplb.runtime.health import HealthChecker
from ftplb.runtime.logs import EventLog
from ftplb.runtime.probes import ProbeResult, probe

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
# Slack for scheduling on a loaded 2-core machine, on top of the probe timeout.
SLACK = 0.5


class ThreadedPyftpdlib:
    """A pyftpdlib FTPServer on its own IOLoop in a thread; stop() and start() again."""

    def __init__(self, home: Path, port: int = 0, banner: str = "pyftpdlib ready") -> None:
        authorizer = DummyAuthorizer()
        authorizer.add_user("u", "p", str(home), perm="elr")
        # A subclass per server, because pyftpdlib configures handlers through class attributes.
        self._handler = type(
            "ProbeTestHandler",
            (FTPHandler,),
            {"authorizer": authorizer, "banner": banner, "auth_failed_timeout": 0.01},
        )
        self.port = port
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        # A fresh IOLoop, not the process-wide IOLoop.instance() singleton.
        server = FTPServer((HOST, self.port), self._handler, ioloop=IOLoop())
        self.port = server.address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, args=(server,), daemon=True)
        self._thread.start()

    def _serve(self, server: FTPServer) -> None:
        deadline = time.monotonic() + 300  # a bound in case a test forgets to stop it
        try:
            while not self._stopping.is_set() and time.monotonic() < deadline:
                # One poll at a time, so the stop flag is seen within 20 ms.
                server.ioloop.loop(timeout=0.02, blocking=False)
        finally:
            server.close_all()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            assert not self._thread.is_alive(), "pyftpdlib thread did not stop"
            self._thread = None


@pytest.fixture(scope="module", autouse=True)
def quiet_pyftpdlib() -> None:
    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)


@pytest.fixture
def ftp_server(tmp_path: Path) -> Iterator[ThreadedPyftpdlib]:
    server = ThreadedPyftpdlib(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def closed_port() -> int:
    # Bound and released without listening: nothing accepts there.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


ScriptedHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def scripted_server(handler: ScriptedHandler) -> AsyncIterator[int]:
    """An asyncio server on loopback running ``handler`` per connection; yields its port."""
    connections: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in connections:
            writer.transport.abort()
        await server.wait_closed()


async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Accept, then say nothing until the client goes away (bounded for safety).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await reader.read()


def greeting(*chunks: bytes, then_wait: bool = True) -> ScriptedHandler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.01)  # separate segments: exercise reassembly
        if then_wait:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await reader.readline()  # the QUIT

    return handler


# --- probe(): tcp -------------------------------------------------------------


async def test_tcp_probe_ok(ftp_server: ThreadedPyftpdlib) -> None:
    result = await probe("tcp", HOST, ftp_server.port, timeout=2)
    assert result == ProbeResult(True, "L4", "connected", result.duration)
    assert 0 <= result.duration < 2


async def test_tcp_probe_refused(closed_port: int) -> None:
    result = await probe("tcp", HOST, closed_port, timeout=2)
    assert not result.ok
    assert result.layer == "L4"
    assert result.detail == "connect refused"


async def test_tcp_probe_ok_on_silent_server() -> None:
    async with scripted_server(never_greet) as port:
        result = await probe("tcp", HOST, port, timeout=1)
    assert result.ok and result.layer == "L4"


# --- probe(): ftp --------------------------------------------------------------


async def test_ftp_probe_ok(ftp_server: ThreadedPyftpdlib) -> None:
    result = await probe("ftp", HOST, ftp_server.port, timeout=2)
    assert result.ok, result
    assert result.layer == "L7"
    assert result.detail == "220 banner"


async def test_ftp_probe_multiline_banner(tmp_path: Path) -> None:
    # pyftpdlib sends banners longer than 75 characters as a multi-line 220.
    server = ThreadedPyftpdlib(tmp_path, banner="welcome\n" + "x" * 80 + "\nenjoy")
    server.start()
    try:
        result = await probe("ftp", HOST, server.port, timeout=2)
    finally:
        server.stop()
    assert result.ok, result
    assert result.detail == "220 banner"


async def test_ftp_probe_multiline_banner_in_pieces() -> None:
    handler = greeting(b"220-first line\r\n220-sec", b"ond line\r\n  indented\r\n", b"220 done\r\n")
    async with scripted_server(handler) as port:
        result = await probe("ftp", HOST, port, timeout=2)
    assert result.ok, result
    assert result.detail == "220 banner"


async def test_ftp_probe_accepts_120_then_220() -> None:
    handler = greeting(b"120 ready in 1 minute\r\n", b"220 ready now\r\n")
    async with scripted_server(handler) as port:
        result = await probe("ftp", HOST, port, timeout=2)
    assert result.ok, result


async def test_ftp_probe_timeout_reading_banner() -> None:
    async with scripted_server(never_greet) as port:
        started = time.monotonic()
        result = await probe("ftp", HOST, port, timeout=0.3)
        elapsed = time.monotonic() - started
    assert not result.ok
    assert result.layer == "L7"
    assert result.detail == "timeout reading banner"
    assert 0.3 <= elapsed < 0.3 + SLACK
    assert 0.25 <= result.duration < 0.3 + SLACK


async def test_ftp_probe_refused(closed_port: int) -> None:
    result = await probe("ftp", HOST, closed_port, timeout=2)
    assert (result.ok, result.layer, result.detail) == (False, "L4", "connect refused")


async def test_ftp_probe_rejects_non_220_banner() -> None:
    async with scripted_server(greeting(b"421 too many users\r\n")) as port:
        result = await probe("ftp", HOST, port, timeout=2)
    assert (result.ok, result.layer, result.detail) == (False, "L7", "421 banner")


async def test_ftp_probe_garbage_banner() -> None:
    async with scripted_server(greeting(b"SSH-2.0-OpenSSH_9.2\r\n")) as port:
        result = await probe("ftp", HOST, port, timeout=2)
    assert not result.ok
    assert result.detail.startswith("bad reply reading banner")


async def test_ftp_probe_connection_closed_before_banner() -> None:
    async with scripted_server(greeting(then_wait=False)) as port:
        result = await probe("ftp", HOST, port, timeout=2)
    assert not result.ok
    assert result.detail in ("connection closed reading banner", "connection lost reading banner")


async def test_ftp_probe_bounded_when_banner_never_ends() -> None:
    # A multi-line greeting that never closes must still end at the timeout.
    async with scripted_server(greeting(b"220-hello\r\n", b"220-still here\r\n")) as port:
        result = await probe("ftp", HOST, port, timeout=0.3)
    assert (result.ok, result.detail) == (False, "timeout reading banner")
    assert result.duration < 0.3 + SLACK


async def test_ftp_probe_sends_quit() -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            received.append(await reader.readline())

    async with scripted_server(handler) as port:
        result = await probe("ftp", HOST, port, timeout=2)
        async with asyncio.timeout(5):
            while not received:
                await asyncio.sleep(0.01)
    assert result.ok
    assert received == [b"QUIT\r\n"]


# --- probe(): login ------------------------------------------------------------


async def test_login_probe_ok(ftp_server: ThreadedPyftpdlib) -> None:
    result = await probe("login", HOST, ftp_server.port, timeout=3, user="u", password="p")
    assert result.ok, result
    assert (result.layer, result.detail) == ("L7", "230 logged in")


async def test_login_probe_wrong_password(ftp_server: ThreadedPyftpdlib) -> None:
    result = await probe("login", HOST, ftp_server.port, timeout=3, user="u", password="wrong")
    assert not result.ok
    assert (result.layer, result.detail) == ("L7", "530 login failed")


async def test_login_probe_unknown_user(ftp_server: ThreadedPyftpdlib) -> None:
    result = await probe("login", HOST, ftp_server.port, timeout=3, user="nobody", password="p")
    assert not result.ok
    assert result.detail == "530 login failed"


async def test_login_probe_230_after_user() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        async with asyncio.timeout(5):
            assert await reader.readline() == b"USER anonymous\r\n"
            writer.write(b"230 no password needed\r\n")
            await reader.readline()

    async with scripted_server(handler) as port:
        result = await probe("login", HOST, port, timeout=2, user="anonymous")
    assert result.ok, result
    assert result.detail == "230 logged in"


async def test_login_probe_timeout_waiting_for_pass_reply() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        async with asyncio.timeout(5):
            await reader.readline()
            writer.write(b"331 password please\r\n")
            await reader.readline()
            await reader.read()  # and never answer PASS

    async with scripted_server(handler) as port:
        result = await probe("login", HOST, port, timeout=0.4, user="u", password="p")
    assert (result.ok, result.detail) == (False, "timeout waiting for PASS reply")


async def test_login_probe_needs_user_and_clean_credentials(ftp_server: ThreadedPyftpdlib) -> None:
    result = await probe("login", HOST, ftp_server.port, timeout=2)
    assert (result.ok, result.detail) == (False, "login probe needs a user")
    result = await probe(
        "login", HOST, ftp_server.port, timeout=2, user="u", password="p\r\nDELE x"
    )
    assert not result.ok
    assert "CR or LF" in result.detail


async def test_unknown_kind_does_not_raise() -> None:
    result = await probe("smtp", HOST, 1, timeout=1)
    assert not result.ok
    assert "unknown probe kind" in result.detail


# --- HealthChecker ---------------------------------------------------------------


class Toggle:
    """A scripted FTP server whose greeting switches between 220 and 421."""

    def __init__(self) -> None:
        self.healthy = True
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 ok\r\n" if self.healthy else b"421 not now\r\n")
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await reader.readline()


class Changes:
    """Collects on_change calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, ProbeResult]] = []
        self._event = asyncio.Event()

    def __call__(self, server: Server, up: bool, result: ProbeResult) -> None:
        self.calls.append((server.name, up, result))
        self._event.set()

    async def wait(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self.calls) < count:
                self._event.clear()
                await self._event.wait()


@contextlib.asynccontextmanager
async def running(checker: HealthChecker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(checker.run())
    try:
        yield task
    finally:
        checker.stop()
        async with asyncio.timeout(5):
            await task


async def test_checker_marks_down_after_fall_and_up_after_rise() -> None:
    toggle = Toggle()
    changes = Changes()
    async with scripted_server(toggle) as port:
        server = Server("s1", HOST, port)
        pool = Pool("p", [server])
        stream = io.StringIO()
        checker = HealthChecker(
            pool,
            "ftp",
            interval=0.1,
            rise=2,
            fall=3,
            timeout=1,
            on_change=changes,
            log=EventLog("json", stream),
        )
        async with running(checker):
            async with asyncio.timeout(5):
                while toggle.connections < 2:
                    await asyncio.sleep(0.01)
            assert server.healthy
            first = checker.result("s1")
            assert first is not None and first.ok
            toggle.healthy = False
            before = toggle.connections
            await changes.wait(1, timeout=5)
            assert changes.calls[0][:2] == ("s1", False)
            assert changes.calls[0][2].detail == "421 banner"
            assert not server.healthy
            assert server.state is ServerState.DOWN
            assert pool.pick("10.0.0.1", None) is None
            # The flip came exactly at the third consecutive failure.
            assert checker.health("s1").consecutive_failed == 3
            assert toggle.connections - before in (3, 4)  # one check may have been in flight
            toggle.healthy = True
            await changes.wait(2, timeout=5)
            assert changes.calls[1][:2] == ("s1", True)
            assert server.healthy
            assert checker.health("s1").consecutive_ok == 2
            assert pool.pick("10.0.0.1", None) is server
    # Each flip is one line of the EventLog, and nothing else is written.
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    durations = [line.pop("duration") for line in lines]
    assert all(isinstance(d, float) and 0 <= d < 1 for d in durations), durations
    assert [{k: v for k, v in line.items() if k != "time"} for line in lines] == [
        {"event": "health", "backend": "p", "server": "s1", "state": state, "check": "ftp",
         "layer": "L7", "detail": detail}
        for state, detail in (("DOWN", "421 banner"), ("UP", "220 banner"))
    ]  # fmt: skip


async def test_checker_with_real_server_stopped_and_restarted(tmp_path: Path) -> None:
    ftp = ThreadedPyftpdlib(tmp_path)
    ftp.start()
    changes = Changes()
    try:
        server = Server("py", HOST, ftp.port)
        checker = HealthChecker(
            Pool("p", [server]),
            "login",
            interval=0.1,
            rise=2,
            fall=2,
            timeout=2,
            user="u",
            password="p",
            on_change=changes,
        )
        async with running(checker):
            async with asyncio.timeout(5):
                while checker.result("py") is None:
                    await asyncio.sleep(0.01)
            assert checker.result("py") == ProbeResult(
                True,
                "L7",
                "230 logged in",
                checker.result("py").duration,  # type: ignore[union-attr]
            )
            ftp.stop()
            started = time.monotonic()
            await changes.wait(1, timeout=5)
            assert changes.calls[0][1] is False
            assert changes.calls[0][2].detail == "connect refused"
            assert changes.calls[0][2].layer == "L4"
            assert time.monotonic() - started < 2  # two checks 0.1 s apart, plus slack
            ftp.start()  # same port again
            await changes.wait(2, timeout=5)
            assert changes.calls[1][1] is True
            assert server.state is ServerState.UP
    finally:
        ftp.stop()


async def test_checker_checks_servers_in_parallel(closed_port: int) -> None:
    changes = Changes()
    async with scripted_server(never_greet) as silent_port:
        silent = Server("silent", HOST, silent_port)
        closed = Server("closed", HOST, closed_port)
        checker = HealthChecker(
            Pool("p", [silent, closed]),
            "ftp",
            interval=0.1,
            rise=1,
            fall=3,
            timeout=3,
            on_change=changes,
        )
        started = time.monotonic()
        async with running(checker):
            await changes.wait(1, timeout=5)
            # The silent server's 3 s probes did not hold up the closed one.
            assert time.monotonic() - started < 2
            assert changes.calls[0][0] == "closed"
            assert not closed.healthy
            assert silent.healthy
            assert checker.result("silent") is None  # its first probe is still waiting


async def test_checker_stop_interrupts_probe_in_flight() -> None:
    async with scripted_server(never_greet) as port:
        checker = HealthChecker(
            Pool("p", [Server("s", HOST, port)]), "ftp", interval=0.1, rise=1, fall=1, timeout=30
        )
        task = asyncio.create_task(checker.run())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        checker.stop()
        async with asyncio.timeout(5):
            await task
        assert time.monotonic() - started < 1


async def test_checker_kind_none_returns_at_once() -> None:
    checker = HealthChecker(
        Pool("p", [Server("s", HOST, 1)]), "none", interval=1, rise=1, fall=1, timeout=1
    )
    async with asyncio.timeout(1):
        await checker.run()
    assert checker.result("s") is None
    assert checker.health("s").up


async def test_checker_survives_failing_callback(closed_port: int) -> None:
    calls: list[bool] = []

    def explode(server: Server, up: bool, result: ProbeResult) -> None:
        calls.append(up)
        raise RuntimeError("listener bug")

    dead = Server("d", HOST, closed_port)
    stream = io.StringIO()
    checker = HealthChecker(
        Pool("p", [dead]),
        "tcp",
        interval=0.05,
        rise=1,
        fall=1,
        timeout=1,
        on_change=explode,
        log=EventLog("text", stream),
    )
    async with running(checker):
        async with asyncio.timeout(5):
            while not calls:
                await asyncio.sleep(0.01)
        assert not dead.healthy
        # The loop went on after the callback raised: failures keep being counted.
        async with asyncio.timeout(5):
            while checker.health("d").consecutive_failed < 4:
                await asyncio.sleep(0.01)
    assert calls == [False]
    flip, warning = stream.getvalue().splitlines()
    assert " health backend=p server=d state=DOWN check=tcp layer=L4 " in flip, flip
    assert warning.split(" ", 1)[1] == (
        'warning warning=health_callback_failed message="health change callback failed" '
        'backend=p server=d reason="RuntimeError: listener bug"'
    )


def test_checker_rejects_bad_settings() -> None:
    pool = Pool("p", [Server("s", HOST, 1)])
    with pytest.raises(ValueError):
        HealthChecker(pool, "icmp", interval=1, rise=1, fall=1, timeout=1)
    with pytest.raises(ValueError):
        HealthChecker(pool, "tcp", interval=0, rise=1, fall=1, timeout=1)


def test_checker_starts_from_current_health() -> None:
    down = Server("down", HOST, 1, healthy=False)
    checker = HealthChecker(Pool("p", [down]), "tcp", interval=1, rise=2, fall=2, timeout=1)
    assert not checker.health("down").up
