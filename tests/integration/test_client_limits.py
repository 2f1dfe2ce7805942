"""Per-client limits of a real ftplb in front of real pyftpdlib servers.

Each limit refuses at exactly its count, with its reply and its log line, while
a client from another address is unaffected. Clients connect from addresses of
their own (127.0.0.100, 127.0.0.101), never the balancer's.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import os
import signal
import socket
from collections.abc import Iterator

import pytest

from tests.integration import farms
from tests.integration.balancer import RunningBalancer, balancer, log_fields
from tests.integration.conftest import require_server
from tests.integration.servers import FtpServer
from tests.support import free_port, passive_range, wait_until

pytestmark = pytest.mark.integration

CLIENT = "127.0.0.100"
OTHER = "127.0.0.101"
CONTENT = os.urandom(256 * 1024)
TIMEOUT = 10.0


def knock(lb: RunningBalancer, source: str) -> tuple[socket.socket, bytes]:
    """A control connection from ``source`` and the first reply line it got
    (b"" when the balancer closed it without a word)."""
    sock = socket.create_connection((lb.host, lb.port), timeout=TIMEOUT, source_address=(source, 0))
    received = b""
    while not received.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        received += chunk
    return sock, received


@contextlib.contextmanager
def knocks(lb: RunningBalancer, source: str, count: int) -> Iterator[list[bytes]]:
    """``count`` connections from ``source``, one after the other, held open; their greetings."""
    held: list[socket.socket] = []
    greetings: list[bytes] = []
    try:
        for _ in range(count):
            sock, greeting = knock(lb, source)
            held.append(sock)
            greetings.append(greeting)
        yield greetings
    finally:
        for sock in held:
            sock.close()


def sessions_of(lb: RunningBalancer, source: str) -> list[dict[str, str]]:
    """The session lines of the connections from ``source``, refused ones included."""
    lines = map(log_fields, lb.log_lines("session"))
    return [fields for fields in lines if fields["client"].startswith(f"{source}:")]


def refusals(lb: RunningBalancer, end: str) -> list[dict[str, str]]:
    return [f for line in lb.log_lines("session") if (f := log_fields(line))["end"] == end]


def session(farm: farms.Farm, source: str) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=TIMEOUT, source_address=(source, 0))
    ftp.connect(farm.lb.host, farm.lb.port, timeout=TIMEOUT)
    ftp.login(farm.user, farm.password)
    return ftp


def reply_to(ftp: ftplib.FTP, command: str) -> str:
    try:
        return ftp.sendcmd(command)
    except ftplib.Error as error:
        return str(error)


def test_sessions_per_ip_refuses_the_next_one_with_421_and_no_server() -> None:
    # The frontend's own value wins over the default.
    with farms.farm(
        hosts=["127.0.0.11"],
        defaults="max_sessions_per_ip = 10",
        frontend="max_sessions_per_ip = 2",
    ) as farm:
        lb = farm.lb
        with knocks(lb, CLIENT, 3) as greetings:
            assert [g[:4] for g in greetings[:2]] == [b"220 ", b"220 "]
            assert greetings[2] == b"421 Too many connections from your address.\r\n"
            with knocks(lb, OTHER, 2) as others:
                assert [g[:4] for g in others] == [b"220 ", b"220 "]
        # Both of the client's sessions are over: it may come back.
        wait_until(lambda: len(sessions_of(lb, CLIENT)) == 3, TIMEOUT, "the sessions to end")
        with knocks(lb, CLIENT, 1) as again:
            assert again[0][:4] == b"220 "
        [refused] = refusals(lb, "sessions_per_ip")
        assert refused["client"].startswith(f"{CLIENT}:")
        assert refused["server"] == "-"  # no server connection was made for it


def test_session_rate_refuses_past_the_count_within_a_second() -> None:
    with farms.farm(hosts=["127.0.0.11"], frontend="sessions_per_second_per_ip = 3") as farm:
        lb = farm.lb
        with knocks(lb, CLIENT, 4) as greetings:
            assert [g[:4] for g in greetings[:3]] == [b"220 "] * 3
            assert greetings[3] == (
                b"421 Too many new connections from your address, try again later.\r\n"
            )
        with knocks(lb, OTHER, 3) as others:
            assert [g[:4] for g in others] == [b"220 "] * 3

        def let_in_again() -> bool:
            sock, greeting = knock(lb, CLIENT)
            sock.close()
            return greeting.startswith(b"220 ")

        # The window slides: a second after the first three, the client is let in.
        wait_until(let_in_again, 5, "the window to let the client in again")
        [refused, *_] = refusals(lb, "session_rate")
        assert refused["client"].startswith(f"{CLIENT}:") and refused["server"] == "-"


def test_passive_listeners_per_ip_refuse_a_pasv_flood_with_425() -> None:
    with farms.farm(
        hosts=["127.0.0.11"], files={"data.bin": CONTENT}, frontend="max_passive_per_ip = 2"
    ) as farm:
        first, second, third = (session(farm, CLIENT) for _ in range(3))
        other = session(farm, OTHER)
        try:
            assert reply_to(first, "PASV").startswith("227 ")
            # A repeated PASV replaces the session's listener: it still holds one.
            assert reply_to(first, "PASV").startswith("227 ")
            assert reply_to(second, "EPSV").startswith("229 ")
            assert reply_to(third, "PASV") == "425 Too many passive connections from your address."
            assert reply_to(third, "EPSV") == "425 Too many passive connections from your address."
            assert reply_to(other, "PASV").startswith("227 ")
            # The session goes on, and once the first one's listener is gone, so does PASV.
            assert reply_to(third, "NOOP").startswith("200 ")
            first.quit()
            wait_until(
                lambda: reply_to(third, "PASV").startswith("227 "),
                TIMEOUT,
                "a passive listener to be free for the client",
            )
            # A real transfer in that session (its own PASV replaces its listener).
            chunks: list[bytes] = []
            third.retrbinary("RETR data.bin", chunks.append)
            assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(CONTENT).digest()
        finally:
            for ftp in (second, third, other):
                with contextlib.suppress(OSError, EOFError, ftplib.Error):
                    ftp.quit()
                ftp.close()
        warnings = [log_fields(line) for line in farm.lb.log_lines("warning")]
        refused = [w for w in warnings if w["warning"] == "passive_per_ip"]
        assert [(w["client"], w["limit"]) for w in refused] == [(CLIENT, "2"), (CLIENT, "2")]


@contextlib.contextmanager
def tcp_frontend(server: FtpServer, limits: str) -> Iterator[RunningBalancer]:
    port = free_port()
    text = f"""
[[frontends]]
name = "sftp"
mode = "tcp"
bind = ["127.0.0.1:{port}"]
backend = "pool"
{limits}

[[backends]]
name = "pool"
health = {{ type = "none" }}

[[backends.servers]]
name = "s1"
address = "{server.host}:{server.port}"
passive_ports = "{passive_range(2, bindable=True)}"
"""
    with balancer(text, "127.0.0.1", port) as lb:
        yield lb


def test_tcp_mode_closes_a_session_over_the_per_ip_limits_without_a_word() -> None:
    require_server("pyftpdlib")
    with (
        farms.started_servers("pyftpdlib", ["127.0.0.11"]) as [server],
        tcp_frontend(server, "max_sessions_per_ip = 1\nsessions_per_second_per_ip = 1") as lb,
    ):
        with knocks(lb, CLIENT, 2) as greetings:
            assert greetings[0].startswith(b"220")  # the server's own banner, relayed
            assert greetings[1] == b""
            with knocks(lb, OTHER, 1) as other:
                assert other[0].startswith(b"220")
        wait_until(lambda: len(sessions_of(lb, CLIENT)) == 2, TIMEOUT, "the sessions to end")
        # The first session has ended, but it opened within the second: over the rate.
        with knocks(lb, CLIENT, 1) as third:
            assert third[0] == b""
        wait_until(lambda: len(sessions_of(lb, CLIENT)) == 3, TIMEOUT, "the refusal's line")
        ends = [fields["end"] for fields in sessions_of(lb, CLIENT)]
        assert sorted(ends) == ["closed", "session_rate", "sessions_per_ip"]
        assert [fields["end"] for fields in sessions_of(lb, OTHER)] == ["closed"]


def test_a_reload_keeps_counting_the_sessions_of_the_old_generation() -> None:
    with farms.farm(hosts=["127.0.0.11"], frontend="max_sessions_per_ip = 1") as farm:
        lb = farm.lb
        with knocks(lb, CLIENT, 1) as [greeting]:
            assert greeting[:4] == b"220 "
            lb.process.send_signal(signal.SIGHUP)  # the same file: the same limits
            wait_until(lambda: "reloaded" in lb.log_text(), TIMEOUT, "the reload")
            # The session held in the old generation still counts in the new one.
            with knocks(lb, CLIENT, 1) as [again]:
                assert again == b"421 Too many connections from your address.\r\n"
        wait_until(lambda: len(sessions_of(lb, CLIENT)) == 2, TIMEOUT, "the session to end")
        with knocks(lb, CLIENT, 1) as [last]:
            assert last[:4] == b"220 "
