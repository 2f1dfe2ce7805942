"""The PROXY protocol at the edges of the runtime: headers received from an
upstream balancer, and headers sent to servers.

The header itself (its forms and its checks) is the core's
(:mod:`ftplb.proto.proxy_header`); this module decides whom to trust, reads a
header from a raw socket without taking a byte past it, and writes one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from ftplb.proto.addresses import HostPort
from ftplb.proto.proxy_header import (
    Malformed,
    NeedMore,
    ProxyHeader,
    TlsFacts,
    build_v1,
    build_v2,
    parse_proxy_header,
)

HEADER_TIMEOUT_CAP: Final = 10.0
"""The longest wait for a header: an upstream sends it with its first packet."""

UNTRUSTED: Final = "untrusted_source"
"""The refusal's detail when the connection came from outside ``proxy_trusted``."""
NO_HEADER_IN_TIME: Final = "no_header_in_time"
CLOSED_BEFORE_HEADER: Final = "closed_before_header"

_IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ProxyIntake:
    """A frontend's ``accept_proxy``: who may send a header, and how long it may take."""

    trusted: tuple[_IpNetwork, ...]
    timeout: float

    @classmethod
    def of(cls, networks: list[str], timeout_client: float) -> ProxyIntake:
        return cls(
            tuple(ipaddress.ip_network(text) for text in networks),
            min(timeout_client, HEADER_TIMEOUT_CAP),
        )

    def trusts(self, host: str) -> bool:
        """Whether ``host`` (canonical text) is an upstream allowed to send a header."""
        address = ipaddress.ip_address(host)
        return any(address in network for network in self.trusted)


@dataclass(frozen=True, slots=True)
class ProxyOutlet:
    """A backend's ``send_proxy``: the header's version, and whether data connections get one."""

    version: Literal["v1", "v2"]
    on_data: bool

    @classmethod
    def of(cls, send_proxy: str, send_proxy_data: bool) -> ProxyOutlet | None:
        if send_proxy == "v1":
            return cls("v1", send_proxy_data)
        if send_proxy == "v2":
            return cls("v2", send_proxy_data)
        return None

    def header(
        self, source: HostPort | None, destination: HostPort | None, tls: TlsFacts | None = None
    ) -> bytes:
        """The header naming ``source`` (the client) and ``destination`` (the address it reached).

        Version 1 has no room for TLS facts, so ``tls`` goes only into version 2.
        """
        if self.version == "v1":
            return build_v1(source, destination)
        return build_v2(source, destination, tls)


def tls_facts(transport: asyncio.BaseTransport | None) -> TlsFacts | None:
    """What the client's TLS on this transport was, if it is TLS: for a version 2 header."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    cipher = ssl_object.cipher()
    name = getattr(ssl_object, _SNI_ATTRIBUTE, None)
    return TlsFacts(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        server_name=name if isinstance(name, str) else None,
    )


_SNI_ATTRIBUTE: Final = "ftplb_server_name"


def remember_server_names(context: ssl.SSLContext) -> None:
    """Keep the SNI each client sends on its TLS connection, for :func:`tls_facts`.

    A server-side ``SSLObject`` does not tell the name a client asked for;
    only the context's SNI callback sees it. Any callback already set (one
    that picks a certificate by name, say) still runs, after this one.
    """
    previous = context.sni_callback

    def remember(connection: ssl.SSLObject, name: str, chosen: ssl.SSLContext) -> int | None:
        # None when the client sent no SNI, whatever the stubs say.
        if isinstance(name, str):
            setattr(connection, _SNI_ATTRIBUTE, name)
        return None if previous is None else previous(connection, name, chosen)

    context.sni_callback = remember


async def receive_header(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float
) -> ProxyHeader | str:
    """Read a PROXY header from the start of ``sock`` and not one byte more.

    What follows it (an upload's first bytes, a TLS ClientHello) stays in the
    socket for whoever reads it next, so the header is read by peeking: the
    bytes seen are taken only once they are known to be part of the header.
    Returns the header, or the reason there is none (a problem's value, or
    :data:`NO_HEADER_IN_TIME`, :data:`CLOSED_BEFORE_HEADER`).
    """
    taken = b""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await _readable(loop, sock)
                seen = sock.recv(65536 + 16, socket.MSG_PEEK)
                if not seen:
                    return CLOSED_BEFORE_HEADER
                parsed = parse_proxy_header(taken + seen)
                if isinstance(parsed, Malformed):
                    return parsed.problem.value
                if isinstance(parsed, NeedMore):
                    # Every byte seen belongs to the header: take them, and wait
                    # for the rest (peeking again would find the same bytes).
                    taken += sock.recv(len(seen))
                    continue
                _take(sock, parsed.length - len(taken))
                return parsed
    except TimeoutError:
        return NO_HEADER_IN_TIME
    except OSError:
        return CLOSED_BEFORE_HEADER


async def read_data_header(
    loop: asyncio.AbstractEventLoop,
    conn: socket.socket,
    upstream: tuple[str, int],
    intake: ProxyIntake,
    refused: Callable[[str], None],
) -> tuple[str, int] | None:
    """The client of a data connection from the trusted ``upstream``, named by its header.

    Without a valid header, ``conn`` is closed, ``refused`` gets the reason,
    and the answer is None. A header that names no client (LOCAL) leaves the
    upstream as the peer.
    """
    try:
        got = await receive_header(loop, conn, intake.timeout)
    except BaseException:
        conn.close()
        raise
    if isinstance(got, str):
        conn.close()
        refused(got)
        return None
    if got.source is None:
        return upstream
    return (got.source.host, got.source.port)


def _take(sock: socket.socket, count: int) -> None:
    # The peeked bytes are in the socket's buffer already: one recv takes them.
    while count > 0:
        chunk = sock.recv(count)
        if not chunk:
            raise ConnectionResetError("the connection closed inside its PROXY header")
        count -= len(chunk)


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def send_header(loop: asyncio.AbstractEventLoop, sock: socket.socket, header: bytes) -> None:
    """Write ``header`` first on a freshly connected socket."""
    await loop.sock_sendall(sock, header)
