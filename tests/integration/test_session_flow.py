"""Control-session flows through ftplb, against real FTP servers.

Each test drives one RFC 959 / RFC 2428 behaviour that ftplb must get right
between a client and a server: restarts (REST, APPE), ABOR and QUIT during a
transfer, repeated PASV, EPSV ALL, pass-through of unknown commands, multi-line
replies and non-UTF-8 paths, the order of a transfer's final reply against its
last data byte, the client, data and server timeouts, and pipelined commands.

Where the order of bytes on the wire is the point, the client is a raw socket
(:class:`RawControl`) rather than ftplib, which reads a reply only when asked.
Every socket operation and every loop is bounded in time.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import os
import re
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.integration import clients
from tests.integration.balancer import RunningBalancer, balancer, simple_config
from tests.integration.fakes import ThreadedTcpServer
from tests.integration.farms import Farm, farm, started_servers
from tests.support import free_port

pytestmark = pytest.mark.integration

KiB = 1024
MiB = 1024 * KiB
IO_TIMEOUT = 10.0
"""Bound on any single socket wait in this module."""

# One address per server kind; each farm here has a single server, so that a
# session and the files it touches always meet on the same disk.
SERVER_HOST = {
    "pyftpdlib": "127.0.0.11",
    "vsftpd": "127.0.0.21",
    "proftpd": "127.0.0.31",
    "pureftpd": "127.0.0.41",
}
SILENT_SERVER_HOST = "127.0.0.13"
QUIRK_SERVER_HOST = "127.0.0.14"
SERVER_KINDS = tuple(SERVER_HOST)


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class Payloads:
    small: bytes
    one: bytes
    five: bytes
    ten: bytes
    twenty: bytes
    big: bytes

    def files(self, *names: str) -> dict[str, bytes]:
        return {f"{name}.bin": getattr(self, name) for name in names}


@pytest.fixture(scope="module")
def payloads() -> Payloads:
    return Payloads(
        small=b"a small file, line after line\n" * 50,
        one=os.urandom(1 * MiB),
        five=os.urandom(5 * MiB),
        ten=os.urandom(10 * MiB),
        twenty=os.urandom(20 * MiB),
        big=os.urandom(50 * MiB),
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- farms


@pytest.fixture(scope="module")
def farm_of(payloads: Payloads) -> Iterator[Callable[[str], Farm]]:
    """``farm_of(kind)``: one server of ``kind`` behind ftplb, started on first use.

    Farms live for the whole module, so the tests that share a server kind
    share its start-up cost.
    """
    started: dict[str, Farm] = {}
    with contextlib.ExitStack() as stack:

        def get(kind: str) -> Farm:
            if kind not in started:
                extra = ("ten", "twenty") if kind == "pyftpdlib" else ()
                files = payloads.files("small", "one", "big", *extra)
                started[kind] = stack.enter_context(
                    farm(kind, hosts=[SERVER_HOST[kind]], files=files)
                )
            return started[kind]

        yield get


@pytest.fixture(scope="module")
def py_farm(farm_of: Callable[[str], Farm]) -> Farm:
    return farm_of("pyftpdlib")


@pytest.fixture(scope="module")
def client_timeout_farm(payloads: Payloads) -> Iterator[Farm]:
    with farm(
        "pyftpdlib",
        hosts=[SERVER_HOST["pyftpdlib"]],
        files=payloads.files("small", "five"),
        defaults='timeout_client = "1s"',
    ) as running:
        yield running


@pytest.fixture(scope="module")
def data_timeout_farm(payloads: Payloads) -> Iterator[Farm]:
    # simple_config already sets timeout_data, and TOML forbids a second key.
    with started_servers("pyftpdlib", [SERVER_HOST["pyftpdlib"]], payloads.files("small")) as group:
        port = free_port()
        text = simple_config([(s.host, s.port) for s in group], port=port)
        text = text.replace('timeout_data = "10s"', 'timeout_data = "1s"')
        assert 'timeout_data = "1s"' in text
        with balancer(text, "127.0.0.1", port) as lb:
            yield Farm(group, lb)


def session(
    running: Farm, mode: clients.DataMode = "pasv", encoding: str = "utf-8"
) -> clients.FtplibClient:
    """A logged-in ftplib session through the balancer, every wait bounded."""
    if encoding == "utf-8":
        client = clients.ftplib_session(
            running.lb.host, running.lb.port, running.user, running.password, mode
        )
    else:
        # ftplib fixes the reply decoder when it connects, so set it before.
        ftp = clients._ModeFTP(mode, None)
        ftp.encoding = encoding
        try:
            ftp.connect(running.lb.host, running.lb.port, timeout=IO_TIMEOUT)
            ftp.login(running.user, running.password)
        except BaseException:
            ftp.close()
            raise
        client = clients.FtplibClient(ftp)
    client.ftp.timeout = IO_TIMEOUT  # data connections
    control_socket(client).settimeout(IO_TIMEOUT)
    return client


def control_socket(client: clients.FtplibClient) -> socket.socket:
    sock = client.ftp.sock
    assert sock is not None
    return sock


def recv_all(conn: socket.socket, limit: int = 200 * MiB) -> bytes:
    """Everything up to EOF (each recv bounded by the socket's timeout)."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = conn.recv(MiB)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- raw client


class RawControl:
    """A bare FTP control connection: bytes out, whole replies (as bytes) in."""

    def __init__(self, host: str, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def take_line(self) -> bytes | None:
        """A complete line from the buffer, if one is there."""
        end = self.buffer.find(b"\n")
        if end < 0:
            return None
        line, self.buffer = self.buffer[: end + 1], self.buffer[end + 1 :]
        return line

    def read_line(self) -> bytes:
        while (line := self.take_line()) is None:
            chunk = self.sock.recv(64 * KiB)
            if not chunk:
                raise EOFError(f"control connection closed; pending {self.buffer!r}")
            self.buffer += chunk
        return line

    def read_reply(self) -> bytes:
        """One whole reply, multi-line ones included, exactly as received."""
        first = self.read_line()
        reply = first
        if first[3:4] == b"-":
            end_prefix = first[:3] + b" "
            for _ in range(10_000):
                line = self.read_line()
                reply += line
                if line.startswith(end_prefix):
                    break
            else:
                raise AssertionError(f"unterminated multi-line reply: {reply[:300]!r}")
        return reply

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.read_reply()

    def login(self, user: str, password: str) -> None:
        assert self.read_reply().startswith(b"220")
        assert self.command(b"USER " + user.encode()).startswith(b"331")
        assert self.command(b"PASS " + password.encode()).startswith(b"230")

    def at_eof(self, wait: float) -> bool:
        """True if the peer closes within ``wait`` seconds with nothing more to say."""
        self.sock.settimeout(wait)
        try:
            return not self.buffer and self.sock.recv(4096) == b""
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(IO_TIMEOUT)


def code_of(reply: bytes | str) -> int:
    return int(reply[:3])


def raw_session(running: Farm) -> RawControl:
    control = RawControl(running.lb.host, running.lb.port)
    try:
        control.login(running.user, running.password)
    except BaseException:
        control.close()
        raise
    return control


# --------------------------------------------------------------------------- 1-2 restarts


def test_rest_retr_returns_the_tail(py_farm: Farm, payloads: Payloads) -> None:
    offset = 333_333
    with session(py_farm) as client:
        chunks: list[bytes] = []
        final = client.ftp.retrbinary("RETR one.bin", chunks.append, rest=offset)
        assert final.startswith("226"), final
    assert b"".join(chunks) == payloads.one[offset:]


@pytest.mark.parametrize("resume", ["rest-stor", "appe"])
def test_resumed_upload_completes_the_file(py_farm: Farm, resume: str) -> None:
    whole = os.urandom(3 * MiB + 12345)
    half = len(whole) // 2
    name = f"resume-{resume}.bin"
    with session(py_farm) as client:
        assert client.stor(name, whole[:half]).startswith("226")
        ftp = client.ftp
        rest = io.BytesIO(whole[half:])
        if resume == "appe":
            final = ftp.storbinary(f"APPE {name}", rest, blocksize=MiB)
        else:
            final = ftp.storbinary(f"STOR {name}", rest, blocksize=MiB, rest=half)
        assert final.startswith("226"), final
        assert ftp.size(name) == len(whole)
    on_disk = (py_farm.servers[0].root / name).read_bytes()
    assert sha256(on_disk) == sha256(whole)


# --------------------------------------------------------------------------- 3 ABOR

ABOR_PAUSES = (0.0, 0.1, 0.0, 0.1)
"""One session per entry: how long the client stops reading before its ABOR.

Servers race ABOR against the close of the data connection differently; a
pause lets the server block on a full data connection first (with Pure-FTPd,
that makes its odd reply sequence certain instead of occasional)."""


def _abort_retr(ftp: ftplib.FTP, pause: float = 0.0) -> tuple[str, str]:
    """Start RETR big.bin, read 1 MiB, wait ``pause`` s, ABOR; the two replies that follow."""
    conn = ftp.transfercmd("RETR big.bin")
    try:
        conn.settimeout(IO_TIMEOUT)
        received = 0
        while received < MiB:
            chunk = conn.recv(256 * KiB)
            if not chunk:
                break
            received += len(chunk)
        assert received >= MiB, "the transfer ended before ABOR could interrupt it"
        time.sleep(pause)
        first = ftp.abort()
    finally:
        conn.close()
    try:
        second = ftp.getmultiline()
    except TimeoutError:
        second = "(no reply)"
    return first, second


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_abor_during_retr(farm_of: Callable[[str], Farm], kind: str, payloads: Payloads) -> None:
    running = farm_of(kind)
    for attempt, pause in enumerate(ABOR_PAUSES):
        with session(running) as client:
            ftp = client.ftp
            ftp.voidcmd("TYPE I")
            # The 226 follows the 426 at once, or never: wait briefly for it.
            control_socket(client).settimeout(3.0)
            first, second = _abort_retr(ftp, pause)
            assert first.startswith("426"), (attempt, first)
            assert second.startswith("226"), (attempt, second)
            control_socket(client).settimeout(IO_TIMEOUT)
            assert ftp.sendcmd("NOOP").startswith("200"), attempt
            assert client.retr("small.bin") == payloads.small, attempt


def test_abor_when_the_server_ends_retr_with_150() -> None:
    """Pure-FTPd's reply sequence, on demand: 150 <stats> for the RETR, then 226 for ABOR."""
    server = AborQuirkServer(QUIRK_SERVER_HOST)
    try:
        with (
            fake_server_balancer(server) as lb,
            clients.ftplib_session(lb.host, lb.port, "anyone", "secret", "pasv") as client,
        ):
            ftp = client.ftp
            ftp.voidcmd("TYPE I")
            control_socket(client).settimeout(3.0)
            first, second = _abort_retr(ftp, 0.1)
            assert any(line.startswith(b"ABOR") for line in server.received)
            assert first.startswith("426"), first
            assert second.startswith("226"), second
            assert ftp.sendcmd("NOOP").startswith("200")
    finally:
        server.close()


# --------------------------------------------------------------------------- 4 QUIT


def test_quit_during_retr_finishes_the_transfer_first(py_farm: Farm, payloads: Payloads) -> None:
    with session(py_farm) as client:
        ftp = client.ftp
        ftp.voidcmd("TYPE I")
        conn = ftp.transfercmd("RETR twenty.bin")
        with conn:
            conn.settimeout(IO_TIMEOUT)
            head = conn.recv(64 * KiB)
            control_socket(client).sendall(b"QUIT\r\n")
            data = head + recv_all(conn)
        assert len(data) == len(payloads.twenty)
        assert sha256(data) == sha256(payloads.twenty)
        final = ftp.getmultiline()
        assert final.startswith("226"), final
        goodbye = ftp.getmultiline()
        assert goodbye.startswith("221"), goodbye
        assert ftp.file is not None
        assert ftp.file.readline() == "", "the control connection stayed open after 221"


# --------------------------------------------------------------------------- 5 PASV twice


def test_second_pasv_replaces_the_first(py_farm: Farm) -> None:
    with session(py_farm) as client:
        ftp = client.ftp
        ftp.voidcmd("TYPE A")
        first = ftplib.parse227(ftp.sendcmd("PASV"))
        second = ftplib.parse227(ftp.sendcmd("PASV"))
        # A port waits for one transfer per client address: had the first wait
        # stayed, the second would have needed another port of the range.
        assert first == second, "the first PASV's wait was not dropped"

        with socket.create_connection(second, timeout=IO_TIMEOUT) as conn:
            conn.settimeout(IO_TIMEOUT)
            ftp.putcmd("LIST")
            preliminary = ftp.getmultiline()
            assert preliminary[:3] in ("125", "150"), preliminary
            listing = recv_all(conn)
        assert ftp.voidresp().startswith("226")
    assert b"small.bin" in listing


# --------------------------------------------------------------------------- 6 EPSV ALL


def test_epsv_all_refuses_other_data_setups(py_farm: Farm, payloads: Payloads) -> None:
    with session(py_farm, "epsv") as client:
        assert client.quote("EPSV ALL").startswith("200")
        for command in ("PASV", "PORT 127,0,0,1,200,10", "EPRT |1|127.0.0.1|51210|"):
            reply = client.quote(command)
            assert reply.startswith("503"), (command, reply)
            assert "EPSV ALL" in reply, (command, reply)
        assert client.retr("small.bin") == payloads.small
        # EPSV ALL, the three refused setups, then the EPSV of the transfer.
        assert client.data_setup_verbs == ("EPSV", "PASV", "PORT", "EPRT", "EPSV")


# --------------------------------------------------------------------------- 7-8 pass-through


def test_unknown_command_gets_the_servers_reply(py_farm: Farm) -> None:
    server = py_farm.servers[0]
    with RawControl(server.host, server.port) as direct:
        direct.login(server.user, server.password)
        expected = direct.command(b"XYZZY")
    with raw_session(py_farm) as control:
        got = control.command(b"XYZZY")
    assert got == expected
    assert got.startswith(b'500 Command "XYZZY" not understood'), got


def test_multi_line_help_passes_through_whole(py_farm: Farm) -> None:
    server = py_farm.servers[0]
    with RawControl(server.host, server.port) as direct:
        direct.login(server.user, server.password)
        expected = direct.command(b"HELP")
    with raw_session(py_farm) as control:
        got = control.command(b"HELP")
        # Nothing may trail the reply: the next command gets its own answer.
        assert control.command(b"NOOP").startswith(b"200")
    assert expected.startswith(b"214-")
    assert expected.count(b"\r\n") > 3
    assert got == expected


# --------------------------------------------------------------------------- 9 byte paths


def test_non_utf8_path_stays_bytes(farm_of: Callable[[str], Farm]) -> None:
    running = farm_of("vsftpd")
    name = "caf\xe9 \xff.txt"
    raw_name = name.encode("latin-1")
    content = b"bytes in, bytes out\n" * 100
    with session(running, encoding="latin-1") as client:
        assert client.stor(name, content).startswith("226")
        names = client.ftp.nlst()
        listing = client.list()
        assert client.retr(name) == content
    assert raw_name in os.listdir(bytes(running.servers[0].root))
    assert name in names, names
    assert raw_name in listing, listing


# --------------------------------------------------------------------------- 10 final reply order


def test_final_reply_after_the_last_byte_ftplib(py_farm: Farm, payloads: Payloads) -> None:
    with session(py_farm) as client:
        ftp = client.ftp
        ftp.voidcmd("TYPE I")
        with ftp.transfercmd("RETR ten.bin") as conn:
            conn.settimeout(IO_TIMEOUT)
            data = recv_all(conn)
        # Only now, after EOF on the data connection, read the control reply.
        final = ftp.voidresp()
    assert final.startswith("226"), final
    assert sha256(data) == sha256(payloads.ten)


@dataclass
class OrderObservation:
    """What one RETR looked like from a client that reads both connections at once."""

    size: int
    received: int = 0
    data_eof: bool = False
    final: bytes | None = None
    final_complete: bool = False
    complete_at_final: bool | None = None
    events: list[str] = field(default_factory=list)


def _drain_now(conn: socket.socket, seen: OrderObservation) -> None:
    """Read whatever the kernel already holds for ``conn``, without waiting."""
    for _ in range(100_000):
        try:
            chunk = conn.recv(MiB, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if not chunk:
            seen.data_eof = True
            seen.events.append("data-eof")
            return
        seen.received += len(chunk)


def _watch_retr_order(control: RawControl, name: bytes, size: int) -> OrderObservation:
    """RETR ``name`` reading control and data at once; note where the final reply fell.

    Like ftplib and curl, the client closes its end of the data connection as
    soon as it reads EOF there (ProFTPD, for one, sends its 226 only then).
    """
    host, port = ftplib.parse227(control.command(b"PASV").decode())
    seen = OrderObservation(size)
    data = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(data.close)
        preliminary = control.command(b"RETR " + name)
        assert preliminary[:3] in (b"125", b"150"), preliminary
        data.setblocking(False)

        def check_control() -> None:
            while not seen.final_complete and (line := control.take_line()) is not None:
                if seen.final is None:
                    # The first line of the final reply: judge the order now.
                    # Bytes that ftplb relayed before its reply are in our
                    # socket already: take them before judging.
                    seen.events.append("final")
                    if not seen.data_eof:
                        _drain_now(data, seen)
                    seen.complete_at_final = seen.data_eof and seen.received == size
                    seen.final = line
                else:
                    seen.final += line
                # Pure-FTPd's 226 is a multi-line reply.
                seen.final_complete = line[3:4] == b" " and line[:3] == seen.final[:3]

        selector = cleanup.enter_context(selectors.DefaultSelector())
        cleanup.callback(control.sock.settimeout, IO_TIMEOUT)
        # The final reply may have come in the same segment as the 150.
        check_control()
        control.sock.setblocking(False)
        selector.register(data, selectors.EVENT_READ, "data")
        selector.register(control.sock, selectors.EVENT_READ, "control")
        watching = {"data", "control"}
        deadline = time.monotonic() + IO_TIMEOUT
        while watching:
            if seen.data_eof and "data" in watching:
                watching.discard("data")
                selector.unregister(data)
                data.close()
            if seen.final_complete and "control" in watching:
                watching.discard("control")
                selector.unregister(control.sock)
            if not watching:
                break
            assert time.monotonic() < deadline, f"RETR did not finish: {seen}"
            for key, _ in selector.select(timeout=0.5):
                if key.data == "data" and not seen.data_eof:
                    _drain_now(data, seen)
                elif key.data == "control" and not seen.final_complete:
                    chunk = control.sock.recv(4096)
                    assert chunk, "control connection closed during RETR"
                    control.buffer += chunk
                    check_control()
    return seen


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_final_reply_never_overtakes_data(
    farm_of: Callable[[str], Farm], kind: str, payloads: Payloads
) -> None:
    size = len(payloads.one)
    with raw_session(farm_of(kind)) as control:
        assert control.command(b"TYPE I").startswith(b"200")
        for attempt in range(20):
            seen = _watch_retr_order(control, b"one.bin", size)
            assert seen.final is not None and seen.final.startswith(b"226"), (attempt, seen)
            assert seen.complete_at_final, (
                f"attempt {attempt}: 226 arrived with {seen.received} of {size} bytes "
                f"(eof={seen.data_eof}); events {seen.events}"
            )
            assert seen.received == size


# --------------------------------------------------------------------------- 11 timeouts


def test_idle_client_gets_421_and_is_closed(client_timeout_farm: Farm) -> None:
    with raw_session(client_timeout_farm) as control:
        started = time.monotonic()
        control.sock.settimeout(6.0)
        reply = control.read_reply()
        elapsed = time.monotonic() - started
        assert reply.startswith(b"421"), reply
        assert 0.5 <= elapsed <= 5.0, elapsed
        assert control.at_eof(3.0), "the connection stayed open after the 421"


def _transfer_duration(running: Farm, name: str) -> float:
    for line in reversed(running.lb.log_lines("transfer")):
        if f"path={name}" in line:
            found = re.search(r"\bduration=([0-9.]+)", line)
            assert found, line
            return float(found.group(1))
    raise AssertionError(f"no transfer line for {name}:\n{running.lb.log_text()[-2000:]}")


def test_slow_transfer_outlives_client_timeout(
    client_timeout_farm: Farm, payloads: Payloads
) -> None:
    expected = payloads.five
    with session(client_timeout_farm) as client:
        ftp = client.ftp
        ftp.voidcmd("TYPE I")
        address = ftplib.parse227(ftp.sendcmd("PASV"))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
            # A small receive window keeps the transfer running inside ftplb
            # for as long as we read slowly, instead of in kernel buffers.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KiB)
            conn.settimeout(IO_TIMEOUT)
            conn.connect(address)
            ftp.putcmd("RETR five.bin")
            preliminary = ftp.getmultiline()
            assert preliminary[:3] in ("125", "150"), preliminary
            chunks: list[bytes] = []
            received = 0
            started = time.monotonic()
            for _ in range(10_000):
                chunk = conn.recv(64 * KiB)
                if not chunk:
                    break
                chunks.append(chunk)
                received += len(chunk)
                # Pace the reads so that the whole file takes about 3 s.
                lag = started + 3.0 * received / len(expected) - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
            elapsed = time.monotonic() - started
        final = ftp.voidresp()
        assert final.startswith("226"), final
        assert ftp.sendcmd("NOOP").startswith("200")
    assert sha256(b"".join(chunks)) == sha256(expected)
    assert elapsed >= 2.5
    # The precondition of the test: ftplb itself saw a transfer longer than 1 s.
    assert _transfer_duration(client_timeout_farm, "five.bin") > 1.5


def test_data_connect_timeout(data_timeout_farm: Farm) -> None:
    with session(data_timeout_farm) as client:
        ftp = client.ftp
        ftp.voidcmd("TYPE I")
        ftp.sendcmd("PASV")  # and never connect to the port it names
        started = time.monotonic()
        ftp.putcmd("RETR small.bin")
        replies = []
        for _ in range(5):
            reply = ftp.getmultiline()
            replies.append(reply)
            if not reply.startswith("1"):
                break
        elapsed = time.monotonic() - started
        assert replies[-1][:3] in ("425", "426"), replies
        assert 0.5 <= elapsed <= 6.0, elapsed
        assert ftp.sendcmd("NOOP").startswith("200")


class FakeLink:
    """The control connection of one fake-server session (blocking, bounded waits)."""

    def __init__(self, conn: socket.socket, stop: threading.Event) -> None:
        self.conn = conn
        self.stop = stop
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def next_line(self, wait: float) -> bytes | None:
        """The next command line within ``wait`` seconds, else None; EOFError at the end."""
        deadline = time.monotonic() + wait
        while b"\n" not in self.buffer:
            if self.stop.is_set():
                raise EOFError("server stopping")
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self.conn], [], [], min(max(left, 0.0), 0.2))
            if readable:
                chunk = self.conn.recv(4096)
                if not chunk:
                    raise EOFError("client closed")
                self.buffer += chunk
            elif left <= 0:
                return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r")


class FakeFtpServer(ThreadedTcpServer):
    """A scripted FTP server on threads, for server behaviours no real server shows on demand.

    It greets with 220 and accepts any login; subclasses answer the other
    commands in :meth:`answer`. Every line received is kept in ``received``.
    """

    def __init__(self, host: str) -> None:
        self.received: list[bytes] = []
        super().__init__(host)

    def handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, EOFError):
            link = FakeLink(conn, self._stop)
            link.send(b"220 fake\r\n")
            while True:
                line = link.next_line(1.0)
                if line is None:
                    continue
                self.received.append(line)
                verb, _, arg = line.partition(b" ")
                verb = verb.upper()
                if verb == b"USER":
                    link.send(b"331 password please\r\n")
                elif verb == b"PASS":
                    link.send(b"230 logged in\r\n")
                elif verb == b"QUIT":
                    link.send(b"221 bye\r\n")
                    return
                else:
                    self.answer(link, verb, arg)

    def answer(self, link: FakeLink, verb: bytes, arg: bytes) -> None:
        """Answer a command after login; the base class never answers."""


class SilentServer(FakeFtpServer):
    """Greets and logs in, then never answers again."""


class AborQuirkServer(FakeFtpServer):
    """Answers an ABOR during RETR the way Pure-FTPd 1.0.50 does when its data write fails.

    Seen on Debian 12, whenever the client's side of the data connection closes
    before Pure-FTPd reads the ABOR (which is what ftplb does): the RETR gets no
    final reply, only a stray "150 <statistics>" line, and the ABOR then gets
    "226 Since you see this ABOR must've succeeded".
    """

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self._passive: socket.socket | None = None

    def answer(self, link: FakeLink, verb: bytes, arg: bytes) -> None:
        if verb in (b"TYPE", b"NOOP"):
            link.send(b"200 OK\r\n")
        elif verb == b"PASV":
            if self._passive is not None:
                self._passive.close()
            self._passive = socket.create_server((self.host, 0))
            self._passive.settimeout(IO_TIMEOUT)
            port = self._passive.getsockname()[1]
            numbers = self.host.replace(".", ",") + f",{port >> 8},{port & 0xFF}"
            link.send(f"227 Entering Passive Mode ({numbers})\r\n".encode())
        elif verb == b"RETR" and self._passive is not None:
            listener, self._passive = self._passive, None
            with listener:
                data, _ = listener.accept()
            with data:
                self._stream_until_abor(link, data)
        else:
            link.send(b"502 not here\r\n")

    def _stream_until_abor(self, link: FakeLink, data: socket.socket) -> None:
        link.send(b"150-Accepted data connection\r\n150 51200.0 kbytes to download\r\n")
        data.settimeout(0.05)
        chunk = os.urandom(64 * KiB)
        writable = True
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            if writable:
                try:
                    data.send(chunk)
                except TimeoutError:
                    pass
                except OSError:
                    writable = False
            line = link.next_line(0.0 if writable else 0.1)
            if line is None:
                continue
            self.received.append(line)
            if line.upper().startswith(b"ABOR"):
                data.close()
                link.send(b"150 0.002 seconds (measured here), 1500.00 Mbytes per second\r\n")
                link.send(b"226 Since you see this ABOR must've succeeded\r\n")
                return
        link.send(b"226 File successfully transferred\r\n")


@contextlib.contextmanager
def fake_server_balancer(server: FakeFtpServer, defaults: str = "") -> Iterator[RunningBalancer]:
    """ftplb in front of one fake server, with a TCP health check (no FTP probe)."""
    port = free_port()
    text = simple_config(
        [(server.host, server.port)],
        port=port,
        defaults=defaults,
        health='{ type = "tcp", interval = "500ms", rise = 1, fall = 2, timeout = "1s" }',
    )
    with balancer(text, "127.0.0.1", port) as lb:
        yield lb


@dataclass
class SilentFarm:
    server: SilentServer
    lb: RunningBalancer


@pytest.fixture(scope="module")
def silent_farm() -> Iterator[SilentFarm]:
    server = SilentServer(SILENT_SERVER_HOST)
    try:
        with fake_server_balancer(server, defaults='timeout_server = "1s"') as lb:
            yield SilentFarm(server, lb)
    finally:
        server.close()


def test_silent_server_times_out_with_421(silent_farm: SilentFarm) -> None:
    with RawControl(silent_farm.lb.host, silent_farm.lb.port) as control:
        control.login("anyone", "secret")
        assert b"PASS secret" in silent_farm.server.received
        started = time.monotonic()
        control.sock.settimeout(6.0)
        reply = control.command(b"NOOP")
        elapsed = time.monotonic() - started
        assert reply.startswith(b"421"), reply
        assert 0.5 <= elapsed <= 5.0, elapsed
        assert control.at_eof(3.0), "the connection stayed open after the 421"
    # The fake server did get the NOOP: it was its silence that ftplb timed out.
    assert b"NOOP" in silent_farm.server.received


# --------------------------------------------------------------------------- 12 pipelining


def test_pipelined_commands_answered_in_order(py_farm: Farm) -> None:
    with raw_session(py_farm) as control:
        control.send(b"TYPE I\r\nNOOP\r\nPWD\r\n")
        replies = [control.read_reply() for _ in range(3)]
        assert [code_of(r) for r in replies] == [200, 200, 257], replies
        assert b"binary" in replies[0].lower() or b"type" in replies[0].lower(), replies[0]
        # One reply per command: nothing else follows.
        control.sock.settimeout(0.5)
        try:
            extra: bytes | None = control.buffer + control.sock.recv(4096)
        except TimeoutError:
            extra = control.buffer or None
        assert extra is None, f"unexpected bytes after the third reply: {extra!r}"


@pytest.mark.parametrize("kind", ["pyftpdlib", "proftpd"])
def test_client_waiting_for_226_before_closing_its_data_socket(kind: str) -> None:
    """A download ends when the last byte is delivered, not when the client closes.

    Some clients keep the data connection open until the 226 arrives, and
    ProFTPD withholds its 226 until its own data connection is closed: waiting
    for the client would deadlock until an idle timeout.
    """
    content = os.urandom(3 * 1024 * 1024)
    hosts = ["127.0.0.73"] if kind == "pyftpdlib" else ["127.0.0.74"]
    defaults = 'timeout_client = "30s"\ntimeout_server = "30s"'
    with farm(kind, hosts, {"f.bin": content}, defaults=defaults) as running:
        lb = running.lb
        with clients.ftplib_session(lb.host, lb.port, running.user, running.password, "epsv") as c:
            ftp = c.ftp
            ftp.voidcmd("TYPE I")
            with ftp.transfercmd("RETR f.bin") as conn:
                conn.settimeout(10)
                received = bytearray()
                while chunk := conn.recv(1 << 20):
                    received += chunk
                assert bytes(received) == content
                assert ftp.sock is not None
                ftp.sock.settimeout(5)
                assert ftp.voidresp().startswith("226")  # while conn is still open


def test_a_flood_of_pipelined_commands_is_answered_in_order() -> None:
    """Far more pipelined commands than ftplb queues: reading pauses, nothing is lost."""
    count = 3000
    with farm(files={"f.txt": b"x"}) as running:
        lb = running.lb
        with socket.create_connection((lb.host, lb.port), timeout=30) as sock:
            replies = sock.makefile("rb")
            assert replies.readline().startswith(b"220")
            sock.sendall(f"USER {running.user}\r\nPASS {running.password}\r\n".encode())
            assert replies.readline().startswith(b"331")
            assert replies.readline().startswith(b"230")
            sock.sendall(b"".join(f"MDTM nope{i}\r\n".encode() for i in range(count)))
            for i in range(count):
                line = replies.readline()
                assert line.startswith(b"550"), (i, line)
                assert f"nope{i}".encode() in line or b"nope" not in line, (i, line)
            sock.sendall(b"NOOP\r\n")
            assert replies.readline().startswith(b"200")
