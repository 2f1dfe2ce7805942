"""One session's data connections: listeners, connects, and the relay between them."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass

from ftplb.proto import actions as act
from ftplb.proto.addresses import HostPort, kernel_host
from ftplb.runtime.logs import EventLog
from ftplb.runtime.pipes import PipeBudget
from ftplb.runtime.ports import PortPool
from ftplb.runtime.relay import relay


@dataclass(slots=True)
class TransferOutcome:
    error: str | None
    to_client: int
    to_server: int
    spliced: bool


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


class _Acceptor:
    """Accepts on a listener until the expected peer IP connects.

    A connection from any other address is closed and logged, and the
    listener keeps waiting: that is what stops a third party from stealing a
    transfer by racing the client to the advertised port.
    """

    __slots__ = ("_expected_ip", "_log", "_loop", "_side", "address", "conn", "listener")

    def __init__(self, listener: socket.socket, expected_ip: str, log: EventLog, side: str) -> None:
        self.listener = listener
        host, port = listener.getsockname()[:2]
        self.address = HostPort(kernel_host(host), port)
        self._expected_ip = expected_ip
        self._log = log
        self._side = side
        # A readiness callback rather than a task: one PASV per transfer makes
        # this part of every session's cost.
        self._loop = asyncio.get_running_loop()
        self.conn: asyncio.Future[socket.socket] = self._loop.create_future()
        self._loop.add_reader(listener.fileno(), self._accept)

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self._stop_listening()
                if not self.conn.done():
                    self.conn.set_exception(error)
                return
            peer_ip = kernel_host(peer[0])
            if peer_ip == self._expected_ip:
                conn.setblocking(False)
                self._stop_listening()
                if not self.conn.done():
                    self.conn.set_result(conn)
                else:
                    conn.close()
                return
            conn.close()
            self._log.warning(
                "refused a data connection from a foreign address",
                side=self._side,
                peer=peer_ip,
                expected=self._expected_ip,
                port=self.address.port,
            )

    def _stop_listening(self) -> None:
        if self.listener.fileno() >= 0:
            self._loop.remove_reader(self.listener.fileno())
            self.listener.close()

    def close(self) -> None:
        self._stop_listening()
        if self.conn.done() and not self.conn.cancelled() and self.conn.exception() is None:
            self.conn.result().close()
        else:
            self.conn.cancel()


class DataChannel:
    """Listeners and connections for the data transfers of one control session."""

    __slots__ = (
        "_addresses",
        "_client_acceptor",
        "_client_go",
        "_log",
        "_server_acceptor",
        "_settings",
        "_transfer",
    )

    def __init__(self, settings: DataSettings, addresses: Addresses, log: EventLog) -> None:
        self._settings = settings
        self._addresses = addresses
        self._log = log
        self._client_acceptor: _Acceptor | None = None
        self._server_acceptor: _Acceptor | None = None
        self._client_go: asyncio.Event | None = None
        self._transfer: asyncio.Task[TransferOutcome] | None = None

    def open_client_listener(self, ports: PortPool, advertised_ip: str) -> HostPort:
        listener = ports.listen(self._addresses.client_local_ip)
        self._client_acceptor = _Acceptor(listener, self._addresses.client_ip, self._log, "client")
        return HostPort(advertised_ip, self._client_acceptor.address.port)

    def open_server_listener(self) -> HostPort:
        listener = PortPool().listen(self._addresses.server_local_ip)
        self._server_acceptor = _Acceptor(listener, self._addresses.server_ip, self._log, "server")
        return self._server_acceptor.address

    def start(self, start: act.StartTransfer, on_done: Callable[[TransferOutcome], None]) -> None:
        if start.client.__class__ is act.ClientActive:
            self._client_go = asyncio.Event()
        task = asyncio.ensure_future(self._run(start))
        self._transfer = task

        def finished(done: asyncio.Task[TransferOutcome]) -> None:
            if not done.cancelled():
                on_done(done.result())

        task.add_done_callback(finished)

    def connect_client(self) -> None:
        if self._client_go is not None:
            self._client_go.set()

    def close(self) -> None:
        if self._transfer is not None and not self._transfer.done():
            self._transfer.cancel()
        for acceptor in (self._client_acceptor, self._server_acceptor):
            if acceptor is not None:
                acceptor.close()
        self._client_acceptor = self._server_acceptor = None

    async def _run(self, start: act.StartTransfer) -> TransferOutcome:
        client: socket.socket | None = None
        server: socket.socket | None = None
        try:
            try:
                async with asyncio.timeout(self._settings.timeout_data):
                    # One after the other: the server's leg never waits for the
                    # client's, so this costs no time and no extra tasks.
                    server = await self._server_leg(start.server)
                    client = await self._client_leg(start.client)
            except TimeoutError:
                return TransferOutcome("data connection not established in time", 0, 0, False)
            except OSError as error:
                return TransferOutcome(f"data connection failed: {error}", 0, 0, False)
            result = await relay(
                client,
                server,
                budget=self._settings.budget,
                idle_timeout=self._settings.idle_timeout,
                finish_with="a_to_b" if start.upload else "b_to_a",
            )
            problem = result.error
            if problem is None and not start.upload:
                server.close()  # ProFTPD sends its 226 only once this is closed
                server = None
                if not await _delivered(client, self._settings.idle_timeout):
                    problem = "client stopped reading"
            return TransferOutcome(problem, result.b_to_a, result.a_to_b, result.spliced)
        finally:
            for sock in (client, server):
                if sock is not None:
                    sock.close()

    async def _client_leg(self, side: act.ClientSide) -> socket.socket:
        if isinstance(side, act.ClientPassive):
            acceptor = self._client_acceptor
            if acceptor is None:
                raise OSError("no passive listener for the client")
            return await acceptor.conn
        assert self._client_go is not None
        await self._client_go.wait()
        return await _connect(side.address, self._addresses.client_local_ip)

    async def _server_leg(self, side: act.ServerSide) -> socket.socket:
        if isinstance(side, act.ServerPassive):
            # From the address of our control connection to this server: vsftpd
            # refuses data connections from any other ("425 Security: Bad IP").
            return await _connect(side.address, self._addresses.server_local_ip or None)
        acceptor = self._server_acceptor
        if acceptor is None:
            raise OSError("no listener for the server's data connection")
        return await acceptor.conn


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on ``sock`` that its peer has not acknowledged yet (Linux SIOCOUTQ)."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


async def _delivered(sock: socket.socket, idle_timeout: float) -> bool:
    """Wait until the peer has acknowledged every byte sent on ``sock``.

    The relay is done once the last byte sits in our socket's send queue, but
    "226" means the data reached the client: for a slow reader that can be
    megabytes later.  False if the peer stops acknowledging for ``idle_timeout``.
    """
    loop = asyncio.get_running_loop()
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


async def _connect(address: HostPort, source_ip: str | None) -> socket.socket:
    family = socket.AF_INET if address.family == 1 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source_ip is not None and (":" in source_ip) == (family == socket.AF_INET6):
            sock.bind((source_ip, 0))
        await asyncio.get_running_loop().sock_connect(sock, (address.host, address.port))
    except BaseException:
        sock.close()
        raise
    return sock
