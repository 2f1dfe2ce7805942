"""The session's link to a server while ftplb sets it up, against scripted servers.

What a server says in the setup dialogue, and right after it, decides whether
the session gets that server and what the client hears. The servers here are
scripted fakes: no packaged server sends a 421 right behind its 220, or refuses
with 421 at its greeting, on demand.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.balancer import RunningBalancer, balancer, simple_config
from tests.integration.fakes import ThreadedTcpServer
from tests.support import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
IO_TIMEOUT = 10.0


class ScriptedGreeting(ThreadedTcpServer):
    """Sends ``script`` in one write as soon as a connection arrives, then closes it."""

    def __init__(self, script: bytes) -> None:
        self.script = script
        super().__init__(HOST)

    def handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.sendall(self.script)
            # Let the balancer read it all before the close.
            time.sleep(0.2)


@contextlib.contextmanager
def in_front_of(server: ScriptedGreeting) -> Iterator[RunningBalancer]:
    port = free_port()
    text = simple_config(
        [(server.host, server.port)],
        port=port,
        health='{ type = "tcp", interval = "500ms", rise = 1, fall = 2, timeout = "1s" }',
    )
    try:
        with balancer(text, HOST, port) as lb:
            yield lb
    finally:
        server.close()


def everything_said(lb: RunningBalancer) -> bytes:
    """What the balancer says to a new client until it closes the connection."""
    received = b""
    with socket.create_connection((lb.host, lb.port), timeout=IO_TIMEOUT) as conn:
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline:
            chunk = conn.recv(4096)
            if not chunk:
                return received
            received += chunk
    raise AssertionError(f"the balancer kept the connection open after {received!r}")


def test_reply_right_after_the_greeting_reaches_the_client() -> None:
    # The server's 421 comes in the same segment as its 220: it is the
    # session's to pass on, not the setup's to drop.
    with in_front_of(ScriptedGreeting(b"220 hello\r\n421 going away now\r\n")) as lb:
        assert everything_said(lb) == b"220 ftplb ready\r\n421 going away now\r\n"


def test_a_refusing_greeting_is_logged_as_the_probes_say_it() -> None:
    with in_front_of(ScriptedGreeting(b"421 too busy\r\n")) as lb:
        said = everything_said(lb)
        assert said.startswith(b"421 "), said
        failures = [line for line in lb.log_lines("warning") if "server connect failed" in line]
        assert failures, lb.log_text()
        assert all("421 banner" in line for line in failures), failures
