"""One session's data connections: listeners, connects, TLS, and the relay between them."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import ssl
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass

from ftplb.proto import actions as act
from ftplb.proto.addresses import HostPort
from ftplb.runtime.client_limits import Pace
from ftplb.runtime.connect import open_connection
from ftplb.runtime.logs import EventLog, LogWarning, TransferError
from ftplb.runtime.passive_ports import PassivePorts, PortWait, wait_once
from ftplb.runtime.pipes import PipeBudget
from ftplb.runtime.proxy_protocol import send_header
from ftplb.runtime.relay import RelayEnd, RelayMeter, RelayOutcome, relay
from ftplb.runtime.tls import BackendTls, close_notify, handshake

_ABORTIVE = struct.pack("ii", 1, 0)
"""SO_LINGER on, for 0 seconds: close() sends a reset."""


@dataclass(slots=True)
class TransferOutcome:
    error: TransferError | None
    to_client: int
    to_server: int
    spliced: bool
    error_detail: str = ""
    """Free text beside ``error`` (an errno name, a TLS reason), or empty."""


@dataclass(frozen=True, slots=True)
class DataSettings:
    timeout_data: float
    idle_timeout: float
    budget: PipeBudget


@dataclass(frozen=True, slots=True)
class Addresses:
    """Who is at each end of a session's control connections."""

    client_ip: str  # the client
    client_local_ip: str  # ours, on the client's control connection
    server_ip: str  # the server
    server_local_ip: str  # ours, on the server's control connection


@dataclass(frozen=True, slots=True)
class ClientDataTls:
    """TLS on the client's data legs, where we are the TLS server."""

    context: ssl.SSLContext
    """The session's context: a resumed TLS session must come from its cache or tickets."""
    certificate: ssl.SSLContext | None
    """The certificate the control connection got by SNI, to present again; None: no SNI."""
    reuse_required: bool
    """Refuse a data connection that does not resume a TLS session of ``context``."""


class SessionNotResumedError(Exception):
    """A client's data connection made a full TLS handshake where resumption is required."""


@dataclass(frozen=True, slots=True)
class DataTls:
    """TLS for one session's data legs, used when a transfer asks for it."""

    client: Callable[[], ClientDataTls | None]
    """The client's leg, read when it opens (AUTH TLS may come after the first PASV)."""
    server: BackendTls | None
    """The backend's TLS: we are the TLS client of the server's leg."""
    server_session: Callable[[], ssl.SSLSession | None]
    """The server control connection's TLS session, read when a data leg opens."""
    timeout: float
    """Bound of each handshake and close."""


class DataChannel:
    """Listeners and connections for the data transfers of one control session."""

    __slots__ = (
        "_addresses",
        "_client_go",
        "_client_wait",
        "_log",
        "_loop",
        "_proxy_header",
        "_server_wait",
        "_session_id",
        "_settings",
        "_tls",
        "_transfer",
    )

    def __init__(
        self,
        settings: DataSettings,
        addresses: Addresses,
        log: EventLog,
        tls: DataTls | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        session_id: str = "-",
        proxy_header: bytes = b"",
    ) -> None:
        # Kept: on Python 3.11 each asyncio.get_running_loop() is a getpid() call.
        self._loop = loop or asyncio.get_running_loop()
        self._settings = settings
        self._tls = tls
        self._addresses = addresses
        self._log = log
        self._session_id = session_id
        """The control session's id, on every line about its data connections."""
        self._proxy_header = proxy_header
        """Sent first on each data connection to the server (``send_proxy_data``), if any."""
        self._client_wait: PortWait | None = None
        self._server_wait: PortWait | None = None
        self._client_go: asyncio.Event | None = None
        self._transfer: asyncio.Task[TransferOutcome] | None = None

    def open_client_listener(
        self, ports: PassivePorts, advertised_ip: str, on_stop: Callable[[], None] | None = None
    ) -> HostPort:
        """Wait for the client's next data connection on a port of ``ports``;
        ``on_stop`` runs once the wait ends (the client connected, or it was closed)."""
        wait = ports.wait_for(
            self._addresses.client_local_ip, self._addresses.client_ip, self._session_id, on_stop
        )
        self._client_wait = wait
        return HostPort(advertised_ip, wait.address.port)

    def open_server_listener(self) -> HostPort:
        wait = wait_once(
            self._addresses.server_local_ip,
            self._addresses.server_ip,
            self._log,
            "server",
            self._session_id,
        )
        self._server_wait = wait
        return wait.address

    def start(
        self,
        start: act.StartTransfer,
        on_done: Callable[[TransferOutcome], None],
        meter: RelayMeter | None = None,
        pace: Pace | None = None,
    ) -> None:
        """Run the transfer; ``meter`` shows its bytes while it runs (the client is side a),
        ``pace`` holds the rate limits' buckets, released when the transfer ends."""
        if start.client.__class__ is act.ClientActive:
            self._client_go = asyncio.Event()
        task = self._loop.create_task(self._run(start, meter, pace))
        self._transfer = task

        def finished(done: asyncio.Task[TransferOutcome]) -> None:
            # Cancelled too: a task cancelled before its first step never runs its body.
            if pace is not None:
                pace.release()
            if not done.cancelled():
                on_done(done.result())

        task.add_done_callback(finished)

    def connect_client(self) -> None:
        if self._client_go is not None:
            self._client_go.set()

    def close(self) -> None:
        if self._transfer is not None and not self._transfer.done():
            self._transfer.cancel()
        for wait in (self._client_wait, self._server_wait):
            if wait is not None:
                wait.close()
        self._client_wait = self._server_wait = None

    async def _run(
        self, start: act.StartTransfer, meter: RelayMeter | None, pace: Pace | None
    ) -> TransferOutcome:
        client: socket.socket | None = None
        server: socket.socket | None = None
        try:
            try:
                async with asyncio.timeout(self._settings.timeout_data):
                    # One after the other: the server's leg never waits for the
                    # client's, so this costs no time and no extra tasks.
                    server = await self._server_leg(start.server)
                    client = await self._client_leg(start.client)
                    # Then TLS, the server's leg first: a server starts its
                    # handshake when it gets to the command, and a client
                    # starts its own when it reads the 150 we pass on.
                    if start.server_tls:
                        server = await self._secure_server_leg(server)
                    if start.client_tls:
                        client = await self._secure_client_leg(client)
            except TimeoutError:
                return TransferOutcome(TransferError.DATA_TIMEOUT, 0, 0, False)
            except SessionNotResumedError:
                if server is not None:
                    # A reset, not an end of file: the server must not take
                    # an empty upload for a complete one.
                    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORTIVE)
                return TransferOutcome(TransferError.TLS_SESSION_NOT_RESUMED, 0, 0, False)
            except OSError as error:
                return TransferOutcome(TransferError.DATA_CONNECT_FAILED, 0, 0, False, str(error))
            result = await relay(
                client,
                server,
                budget=self._settings.budget,
                idle_timeout=self._settings.idle_timeout,
                finish_with="a_to_b" if start.upload else "b_to_a",
                loop=self._loop,
                meter=meter,
                pace=pace.buckets if pace is not None else (),
            )
            problem, detail = transfer_error(result.outcome)
            if problem is None and isinstance(server, ssl.SSLSocket) and self._tls is not None:
                # vsftpd's strict_ssl_read_eof wants an upload to end in
                # close_notify, not a bare EOF.
                await close_notify(server, self._tls.timeout)
            if problem is None and not start.upload:
                server.close()  # ProFTPD sends its 226 only once this is closed
                server = None
            if problem is None and isinstance(client, ssl.SSLSocket) and self._tls is not None:
                # The client's EOF: TLS has no half-close, and clients such as
                # ftplib wait for it before they read the final reply.
                await close_notify(client, self._tls.timeout)
            if problem is None and not start.upload:
                problem = await _delivery_problem(self._loop, client, self._settings.idle_timeout)
            return TransferOutcome(problem, result.b_to_a, result.a_to_b, result.spliced, detail)
        finally:
            for sock in (client, server):
                if sock is not None:
                    sock.close()

    async def _secure_server_leg(self, sock: socket.socket) -> ssl.SSLSocket:
        tls = self._tls
        if tls is None or tls.server is None:
            sock.close()
            raise OSError("no TLS settings for the server's data connection")
        session = tls.server_session()
        secured = await handshake(
            sock,
            tls.server.context,
            server_side=False,
            timeout=tls.timeout,
            server_hostname=tls.server.name_for(self._addresses.server_ip),
            session=session,
        )
        if session is not None and not secured.session_reused:
            self._log.warning(
                LogWarning.TLS_NOT_RESUMED,
                session=self._session_id,
                server=self._addresses.server_ip,
            )
        return secured

    async def _secure_client_leg(self, sock: socket.socket) -> ssl.SSLSocket:
        tls = self._tls
        client = tls.client() if tls is not None else None
        if tls is None or client is None:
            sock.close()
            raise OSError("no TLS settings for the client's data connection")
        secured = await handshake(
            sock,
            client.context,
            server_side=True,
            timeout=tls.timeout,
            certificate=client.certificate,
        )
        if client.reuse_required and not secured.session_reused:
            secured.close()
            self._log.warning(
                LogWarning.TLS_REUSE_REQUIRED,
                session=self._session_id,
                client=self._addresses.client_ip,
                tls_version=secured.version() or "-",
            )
            raise SessionNotResumedError
        return secured

    async def _client_leg(self, side: act.ClientSide) -> socket.socket:
        if isinstance(side, act.ClientPassive):
            wait = self._client_wait
            if wait is None:
                raise OSError("no passive listener for the client")
            return await wait.conn
        assert self._client_go is not None
        await self._client_go.wait()
        return await open_connection(
            self._loop, side.address.host, side.address.port, self._addresses.client_local_ip
        )

    async def _server_leg(self, side: act.ServerSide) -> socket.socket:
        if isinstance(side, act.ServerPassive):
            # From the address of our control connection to this server: vsftpd
            # refuses data connections from any other ("425 Security: Bad IP").
            source = self._addresses.server_local_ip or None
            sock = await open_connection(self._loop, side.address.host, side.address.port, source)
            if self._proxy_header:
                try:
                    await send_header(self._loop, sock, self._proxy_header)
                except BaseException:
                    sock.close()
                    raise
            return sock
        wait = self._server_wait
        if wait is None:
            raise OSError("no listener for the server's data connection")
        return await wait.conn


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on ``sock`` that its peer has not acknowledged yet (Linux SIOCOUTQ)."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


async def _delivery_problem(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, idle_timeout: float
) -> TransferError | None:
    if await _delivered(loop, sock, idle_timeout):
        return None
    return TransferError.CLIENT_STOPPED_READING


_BY_SIDE = {
    (RelayEnd.RESET, "a"): TransferError.RESET_BY_CLIENT,
    (RelayEnd.RESET, "b"): TransferError.RESET_BY_SERVER,
    (RelayEnd.SOCKET_ERROR, "a"): TransferError.CLIENT_SOCKET_ERROR,
    (RelayEnd.SOCKET_ERROR, "b"): TransferError.SERVER_SOCKET_ERROR,
    (RelayEnd.TLS_ERROR, "a"): TransferError.CLIENT_TLS_ERROR,
    (RelayEnd.TLS_ERROR, "b"): TransferError.SERVER_TLS_ERROR,
}
"""The relay's side "a" is the client's data connection, "b" the server's."""


def transfer_error(outcome: RelayOutcome) -> tuple[TransferError | None, str]:
    """A data relay's outcome as a transfer's error and its detail (None after a clean end)."""
    if outcome.end is RelayEnd.CLOSED:
        return None, ""
    if outcome.end is RelayEnd.IDLE:
        return TransferError.IDLE_TIMEOUT, ""
    if outcome.end is RelayEnd.IDLE_AFTER_HALF_CLOSE:
        return TransferError.IDLE_TIMEOUT, "after half-close"
    return _BY_SIDE[(outcome.end, outcome.side)], outcome.detail


async def _delivered(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, idle_timeout: float
) -> bool:
    """Wait until the peer has acknowledged every byte sent on ``sock``.

    The relay is done once the last byte sits in our socket's send queue, but
    "226" means the data reached the client: for a slow reader that can be
    megabytes later.  False if the peer stops acknowledging for ``idle_timeout``.
    """
    delay = 0.001
    pending = _unacknowledged(sock)
    deadline = loop.time() + idle_timeout
    while pending > 0:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
        now_pending = _unacknowledged(sock)
        if now_pending < pending:
            deadline = loop.time() + idle_timeout
        pending = now_pending
    return True
