"""Implicit FTPS behind an upstream balancer: the PROXY header comes before the TLS handshake.

asyncio's TLS server would take the header's bytes for the start of a
handshake, and a plain transport reads the client's first TLS record together
with the header, past where a handshake could still begin. So for an
``accept_proxy`` frontend with ``tls = "implicit"``, this listener accepts the
sockets itself, reads each header by peeking (the TLS bytes after it stay in
the socket), and only then hands the socket to the event loop with TLS, bound
to a session that already knows its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from ftplb.proto.addresses import HostPort, kernel_host
from ftplb.proto.proxy_header import ProxyHeader
from ftplb.runtime.failover import describe
from ftplb.runtime.logs import LogWarning
from ftplb.runtime.proxy_protocol import UNTRUSTED, ProxyIntake, receive_header
from ftplb.runtime.session import FrontendContext, Session

__all__ = ["ProxiedTlsListener"]


class ProxiedTlsListener:
    """Accepts on ``sock`` for ``ctx``: PROXY header first, then the TLS handshake.

    Served like an ``asyncio.Server``: :meth:`close`, then :meth:`wait_closed`.
    """

    __slots__ = ("_ctx", "_intake", "_loop", "_make_session", "_pending", "_sock", "_tls")

    def __init__(
        self,
        ctx: FrontendContext,
        sock: socket.socket,
        intake: ProxyIntake,
        tls: ssl.SSLContext,
        make_session: Callable[[], Session],
    ) -> None:
        self._ctx = ctx
        self._sock = sock
        self._intake = intake
        self._tls = tls
        self._make_session = make_session
        self._loop = asyncio.get_running_loop()
        # Connections whose header or handshake is under way: held, so none is collected.
        self._pending: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors, say: the next readiness tries again
            conn.setblocking(False)
            self._ctx.log.notify("accept", frontend=self._ctx.name)
            client = HostPort(kernel_host(peer[0]), peer[1])
            task = self._loop.create_task(self._take(conn, client))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _take(self, conn: socket.socket, peer: HostPort) -> None:
        session = self._make_session()
        try:
            got: ProxyHeader | str = UNTRUSTED
            if self._intake.trusts(peer.host):
                got = await receive_header(self._loop, conn, self._intake.timeout)
            if isinstance(got, str):
                conn.close()
                session.refuse_unproxied(peer, got)
                return
            session.proxied_by(got)
            await self._loop.connect_accepted_socket(
                lambda: session,
                conn,
                ssl=self._tls,
                ssl_handshake_timeout=self._ctx.timeouts.data,
            )
        except (OSError, ssl.SSLError, TimeoutError) as error:
            conn.close()
            self._ctx.log.warning(
                LogWarning.CLIENT_TLS_FAILED,
                session=session.session_id,
                frontend=self._ctx.name,
                client=session.client.host,
                reason=describe(error),
            )
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        """Accept no more; headers still being read are given up."""
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        for task in self._pending:
            task.cancel()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._pending, return_exceptions=True)
