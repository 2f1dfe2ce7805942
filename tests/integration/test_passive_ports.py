"""Pooled passive ports on real sockets: one listener per port, shared, routed by address.

Clients connect from their own loopback addresses, so that the address a
wait expects is something the pool must really check.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from ftplb.proto.addresses import HostPort
from ftplb.proto.proxy_header import build_v1
from ftplb.runtime.logs import EventLog
from ftplb.runtime.passive_ports import PassivePorts, PortWait, wait_once
from ftplb.runtime.proxy_protocol import ProxyIntake
from tests.support import neighbouring_free_ports

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
ALICE, BOB, THIEF, UPSTREAM = "127.0.0.100", "127.0.0.101", "127.0.0.2", "127.0.0.50"
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(20):
            return await scenario()

    return asyncio.run(bounded())


class Lines:
    """An EventLog in JSON whose warnings the test reads back."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.log = EventLog("json", self.stream)

    def warnings(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [line for line in lines if line.get("event") == "warning"]


async def connect_from(source: str, port: int, first: bytes = b"") -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        await loop.sock_connect(sock, (HOST, port))
        if first:
            await loop.sock_sendall(sock, first)
    except BaseException:
        sock.close()
        raise
    return sock


async def closed_by_peer(sock: socket.socket) -> bool:
    """True once the other end has closed ``sock`` (EOF or reset) within 5 s."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(5):
            return await loop.sock_recv(sock, 1) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


async def peer_of(wait: PortWait) -> str:
    async with asyncio.timeout(5):
        conn = await wait.conn
    with conn:
        return str(conn.getpeername()[0])


def test_two_clients_share_one_port_and_each_gets_its_own_connection() -> None:
    first = neighbouring_free_ports()
    lines = Lines()
    stopped: list[str] = []

    async def scenario() -> None:
        ports = PassivePorts(first, first + 1, lines.log, "ftp")
        ports.adopt()
        alice = ports.wait_for(HOST, ALICE, "s-1", lambda: stopped.append("alice"))
        bob = ports.wait_for(HOST, BOB, "s-2", lambda: stopped.append("bob"))
        assert alice.address == bob.address == HostPort(HOST, first)
        assert ports.listening == 1

        # The thief first: two waits on the port, so no one session is named.
        assert await closed_by_peer(await connect_from(THIEF, first))
        bob_conn = await connect_from(BOB, first)
        alice_conn = await connect_from(ALICE, first)
        assert (await peer_of(bob), await peer_of(alice)) == (BOB, ALICE)
        assert stopped == ["bob", "alice"]
        for conn in (alice_conn, bob_conn):
            conn.close()
        # The port stays open for the next transfers, and now nobody waits there.
        assert ports.listening == 1
        assert await closed_by_peer(await connect_from(ALICE, first))
        ports.leave()
        assert ports.listening == 0

    run(scenario)
    refused = [(w["warning"], w["session"], w["frontend"], w["peer"], w["expected"], w["port"])
               for w in lines.warnings()]  # fmt: skip
    assert refused == [
        ("foreign_data_refused", "-", "ftp", THIEF, "-", first),
        ("foreign_data_refused", "-", "ftp", ALICE, "-", first),
    ]


def test_a_thief_is_refused_and_the_wait_goes_on() -> None:
    first = neighbouring_free_ports()
    lines = Lines()

    async def scenario() -> None:
        ports = PassivePorts(first, first, lines.log, "ftp")
        ports.adopt()
        alice = ports.wait_for(HOST, ALICE, "s-1")
        assert await closed_by_peer(await connect_from(THIEF, first))
        assert not alice.conn.done()
        conn = await connect_from(ALICE, first)
        assert await peer_of(alice) == ALICE
        conn.close()
        ports.leave()

    run(scenario)
    (warning,) = lines.warnings()
    assert {
        k: warning[k] for k in ("warning", "session", "frontend", "side", "peer", "expected")
    } == {
        "warning": "foreign_data_refused",
        "session": "s-1",
        "frontend": "ftp",
        "side": "client",
        "peer": THIEF,
        "expected": ALICE,
    }


def test_one_address_gets_a_port_per_pending_transfer_up_to_the_range() -> None:
    first = neighbouring_free_ports()
    lines = Lines()

    async def scenario() -> None:
        ports = PassivePorts(first, first + 1, lines.log, "ftp")
        ports.adopt()
        one = ports.wait_for(HOST, ALICE, "s-1")
        two = ports.wait_for(HOST, ALICE, "s-2")
        assert (one.address.port, two.address.port) == (first, first + 1)
        with pytest.raises(OSError) as raised:
            ports.wait_for(HOST, ALICE, "s-3")
        assert raised.value.errno == errno.EADDRINUSE
        assert str(first) in str(raised.value) and ALICE in str(raised.value)
        # Another address is not concerned: it shares the first port.
        assert ports.wait_for(HOST, BOB, "s-4").address.port == first
        # A wait that ends frees its (port, address) pair at once.
        one.close()
        assert one.conn.cancelled()
        assert ports.wait_for(HOST, ALICE, "s-5").address.port == first
        ports.leave()

    run(scenario)


def test_a_port_bound_elsewhere_is_skipped() -> None:
    first = neighbouring_free_ports()

    async def scenario() -> None:
        ports = PassivePorts(first, first + 1, Lines().log, "ftp")
        ports.adopt()
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind((HOST, first))
            other.listen(1)
            assert ports.wait_for(HOST, ALICE, "s-1").address.port == first + 1
        ports.leave()

    run(scenario)


def test_the_last_generation_to_leave_closes_the_ports_and_fails_their_waits() -> None:
    first = neighbouring_free_ports()

    async def scenario() -> None:
        ports = PassivePorts(first, first, Lines().log, "ftp")
        ports.adopt()
        ports.adopt()  # a reload carried them over
        wait = ports.wait_for(HOST, ALICE, "s-1")
        ports.leave()
        assert ports.listening == 1 and not wait.conn.done()
        ports.leave()
        assert ports.listening == 0
        with pytest.raises(OSError):
            await wait.conn
        with pytest.raises(ConnectionRefusedError):
            await connect_from(ALICE, first)

    run(scenario)


def test_without_a_range_each_wait_has_its_own_listener_that_closes_with_it() -> None:
    lines = Lines()

    async def scenario() -> None:
        ports = PassivePorts(None, None, lines.log, "ftp")
        ports.adopt()
        alice = ports.wait_for(HOST, ALICE, "s-1")
        bob = ports.wait_for(HOST, BOB, "s-2")
        assert alice.address.port != bob.address.port
        assert await closed_by_peer(await connect_from(THIEF, alice.address.port))
        conn = await connect_from(ALICE, alice.address.port)
        assert await peer_of(alice) == ALICE
        conn.close()
        with pytest.raises(ConnectionRefusedError):
            await connect_from(ALICE, alice.address.port)
        bob.close()
        with pytest.raises(ConnectionRefusedError):
            await connect_from(BOB, bob.address.port)
        ports.leave()

    run(scenario)
    (warning,) = lines.warnings()
    assert (warning["session"], warning["expected"], "frontend" in warning) == ("s-1", ALICE, False)


def test_the_server_side_wait_takes_only_the_server() -> None:
    lines = Lines()

    async def scenario() -> None:
        wait = wait_once(HOST, BOB, lines.log, "server", "s-1")
        assert await closed_by_peer(await connect_from(THIEF, wait.address.port))
        conn = await connect_from(BOB, wait.address.port)
        assert await peer_of(wait) == BOB
        conn.close()

    run(scenario)
    (warning,) = lines.warnings()
    assert (warning["side"], warning["peer"], warning["expected"]) == ("server", THIEF, BOB)


def test_behind_an_upstream_the_header_names_the_client_that_is_routed() -> None:
    first = neighbouring_free_ports()
    lines = Lines()
    intake = ProxyIntake.of([f"{UPSTREAM}/32"], 5.0)

    def header(client: str) -> bytes:
        return build_v1(HostPort(client, 40000), HostPort(HOST, first))

    async def scenario() -> None:
        ports = PassivePorts(first, first, lines.log, "ftp", intake)
        ports.adopt()
        alice = ports.wait_for(HOST, ALICE, "s-1")
        bob = ports.wait_for(HOST, BOB, "s-2")
        # The upstream speaks for the thief: refused like the thief itself.
        assert await closed_by_peer(await connect_from(UPSTREAM, first, header(THIEF)))
        # No header from the upstream: refused, and logged as such.
        assert await closed_by_peer(await connect_from(UPSTREAM, first, b"GET / HTTP/1.0\r\n\r\n"))
        upload = await connect_from(UPSTREAM, first, header(BOB) + b"first bytes")
        async with asyncio.timeout(5):
            conn = await bob.conn
        with conn:
            # The header is gone; what followed it is left for the transfer.
            assert await asyncio.get_running_loop().sock_recv(conn, 100) == b"first bytes"
        upload.close()
        # Alice reaches the port directly, without the upstream.
        direct = await connect_from(ALICE, first)
        assert await peer_of(alice) == ALICE
        direct.close()
        ports.leave()

    run(scenario)
    kinds = [(w["warning"], w["peer"]) for w in lines.warnings()]
    assert kinds == [("foreign_data_refused", THIEF), ("proxy_header_refused", UPSTREAM)]
