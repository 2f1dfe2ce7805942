"""Passive ports: listeners that wait for data connections, routed by the peer's address.

With a ``passive_ports`` range, each port of a frontend's range (of each
worker's slice of it) is opened once, the first time it is needed, and kept
open: every session shares it. A PASV or EPSV does not bind a socket; it
*reserves* a (port, client address) pair, a :class:`PortWait`. A connection
accepted on the port goes to the wait of its source address there, so one
port serves one pending transfer per client address at a time, and ten ports
serve thousands of clients. A connection that no session expects is closed
and logged: a thief from another address never gets a transfer.

Several clients behind one NAT address look like one address. Each pending
transfer from that address gets a port of its own, the first open one that
no transfer from that address waits on; there can be as many at once as the
range has ports. ``tls_session_reuse = "required"`` then also tells the
clients behind that address apart.

Without a range, and for the server's data connections in active mode,
each wait gets a listener of its own on a port the kernel picks: there is no
range to run short of, and it closes when its wait ends.

Behind an upstream balancer (``intake``), a connection from a trusted
upstream must start with a PROXY header, and the header's source is the
address that is routed. Any other connection is routed by its own address,
so a client may also reach the passive ports directly.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

from ftplb.proto.addresses import HostPort, kernel_host
from ftplb.runtime.logs import EventLog, LogWarning
from ftplb.runtime.proxy_protocol import ProxyIntake, read_data_header

__all__ = ["PassivePorts", "PortWait", "wait_once"]

SHARED_BACKLOG = 4096
"""A shared port may see a burst of every waiting client connecting at once;
the kernel caps this at its somaxconn."""


class PortWait:
    """One session's wait for one data connection from ``expected_ip`` on a port.

    ``conn`` resolves with the connected socket. ``on_stop`` runs once, when
    the wait ends: the connection came, the listener failed, or :meth:`close`.
    """

    __slots__ = ("_on_stop", "_port", "address", "conn", "expected_ip", "session_id")

    def __init__(
        self,
        port: _Port,
        expected_ip: str,
        session_id: str,
        on_stop: Callable[[], None] | None,
    ) -> None:
        self._port: _Port | None = port
        self.address = port.address
        self.expected_ip = expected_ip
        self.session_id = session_id
        self._on_stop = on_stop
        self.conn: asyncio.Future[socket.socket] = port.loop.create_future()

    def deliver(self, conn: socket.socket) -> None:
        self._stop()
        if self.conn.done():
            conn.close()
        else:
            self.conn.set_result(conn)

    def fail(self, error: OSError) -> None:
        self._stop()
        if not self.conn.done():
            self.conn.set_exception(error)
            # A wait nobody awaits (no transfer command came) must not log
            # "exception was never retrieved" when it is collected.
            self.conn.exception()

    def _stop(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.forget(self)
        on_stop, self._on_stop = self._on_stop, None
        if on_stop is not None:
            on_stop()

    def close(self) -> None:
        """Stop waiting; a connection that came and was not taken is closed."""
        self._stop()
        if self.conn.done() and not self.conn.cancelled() and self.conn.exception() is None:
            self.conn.result().close()
        else:
            self.conn.cancel()


class _Port:
    """One listening socket and the waits on it, one per expected peer address."""

    __slots__ = (
        "_log",
        "_reading",
        "address",
        "dedicated",
        "frontend",
        "intake",
        "loop",
        "side",
        "sock",
        "waits",
    )

    def __init__(  # noqa: PLR0917 - two private call sites
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        log: EventLog,
        side: str,
        frontend: str,
        intake: ProxyIntake | None,
        *,
        dedicated: bool,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self._log = log
        self.side = side
        self.frontend = frontend
        self.intake = intake
        self.dedicated = dedicated
        """One wait only, and the listener closes when it ends (no range)."""
        host, port = sock.getsockname()[:2]
        self.address = HostPort(kernel_host(host), port)
        self.waits: dict[str, PortWait] = {}
        # Connections from the upstream whose PROXY header is being read.
        self._reading: set[asyncio.Task[None]] = set()
        # A readiness callback rather than a task: one wait per transfer makes
        # this part of every session's cost.
        loop.add_reader(sock.fileno(), self._accept)

    def wait(
        self, expected_ip: str, session_id: str, on_stop: Callable[[], None] | None
    ) -> PortWait:
        wait = PortWait(self, expected_ip, session_id, on_stop)
        self.waits[expected_ip] = wait
        return wait

    def forget(self, wait: PortWait) -> None:
        if self.waits.get(wait.expected_ip) is wait:
            del self.waits[wait.expected_ip]
        if self.dedicated and not self.waits:
            self.close()

    @property
    def open(self) -> bool:
        return self.sock.fileno() >= 0

    def _accept(self) -> None:
        while self.open:
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.fail_all(error)
                return
            conn.setblocking(False)
            peer_ip = kernel_host(peer[0])
            intake = self.intake
            if intake is not None and intake.trusts(peer_ip):
                task = self.loop.create_task(self._read_header(conn, (peer_ip, peer[1]), intake))
                self._reading.add(task)
                task.add_done_callback(self._reading.discard)
                continue
            self._route(conn, peer_ip)

    async def _read_header(
        self, conn: socket.socket, upstream: tuple[str, int], intake: ProxyIntake
    ) -> None:
        def refused(reason: str) -> None:
            self._log.warning(
                LogWarning.PROXY_HEADER_REFUSED,
                **self._whom(),
                side=self.side,
                peer=upstream[0],
                reason=reason,
                port=self.address.port,
            )

        client = await read_data_header(self.loop, conn, upstream, intake, refused)
        if client is not None:
            self._route(conn, client[0])

    def _route(self, conn: socket.socket, peer_ip: str) -> None:
        """Hand ``conn`` to the wait of ``peer_ip``; without one, close and log it."""
        wait = self.waits.get(peer_ip)
        if wait is not None:
            wait.deliver(conn)
            return
        conn.close()
        sole = self._sole_wait()
        self._log.warning(
            LogWarning.FOREIGN_DATA_REFUSED,
            **self._whom(),
            side=self.side,
            peer=peer_ip,
            expected=sole.expected_ip if sole is not None else "-",
            port=self.address.port,
        )

    def _whom(self) -> dict[str, str]:
        """The session (and frontend) a refused connection concerns, as log fields."""
        sole = self._sole_wait()
        whom = {"session": sole.session_id if sole is not None else "-"}
        if not self.dedicated:
            whom["frontend"] = self.frontend
        return whom

    def _sole_wait(self) -> PortWait | None:
        """The one wait on this port, if there is exactly one: whom a refusal concerns."""
        if len(self.waits) != 1:
            return None
        return next(iter(self.waits.values()))

    def fail_all(self, error: OSError) -> None:
        self.close()
        for wait in list(self.waits.values()):
            wait.fail(error)

    def close(self) -> None:
        if self.open:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        for task in self._reading:
            task.cancel()


class PassivePorts:
    """A frontend's passive ports ``first..last`` (or kernel-picked ports without a range).

    The same object goes on across a reload when the range stays, so that
    the listeners stay open and the waits of the old generation's sessions
    are still served.
    """

    __slots__ = ("_first", "_last", "_log", "_open", "_users", "frontend", "intake")

    def __init__(
        self,
        first: int | None,
        last: int | None,
        log: EventLog,
        frontend: str,
        intake: ProxyIntake | None = None,
    ) -> None:
        if (first is None) != (last is None):
            raise ValueError("give both ends of the port range, or neither")
        self._first = first
        self._last = last
        self._log = log
        self.frontend = frontend
        self._open: dict[str, dict[int, _Port]] = {}
        """Open shared ports by local host, then by port number."""
        self.intake = intake
        self._users = 0
        """Generations that use these ports: the last to leave closes them."""

    @property
    def range(self) -> tuple[int | None, int | None]:
        """(first, last) as configured; (None, None) for kernel-picked ports."""
        return (self._first, self._last)

    def set_intake(self, intake: ProxyIntake | None) -> None:
        """A reload's ``accept_proxy`` settings, for every port from now on."""
        self.intake = intake
        for ports in self._open.values():
            for port in ports.values():
                port.intake = intake

    def wait_for(
        self,
        host: str,
        client_ip: str,
        session_id: str,
        on_stop: Callable[[], None] | None = None,
    ) -> PortWait:
        """Wait on ``host`` for a data connection from ``client_ip``.

        OSError when no port of the range can take one more wait from that
        address (each has one already, or the free ones are bound elsewhere).
        """
        loop = asyncio.get_running_loop()
        if self._first is None or self._last is None:
            sock = _listen_on(host, 0, backlog=4)
            port = _Port(
                loop, sock, self._log, "client", self.frontend, self.intake, dedicated=True
            )
            return port.wait(client_ip, session_id, on_stop)
        ports = self._open.setdefault(host, {})
        for port in ports.values():
            if client_ip not in port.waits and port.open:
                return port.wait(client_ip, session_id, on_stop)
        for number in range(self._first, self._last + 1):
            if number in ports and ports[number].open:
                continue
            try:
                sock = _listen_on(host, number, SHARED_BACKLOG)
            except OSError as error:
                if error.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                continue  # bound by another program, or a previous range's listener
            port = _Port(
                loop, sock, self._log, "client", self.frontend, self.intake, dedicated=False
            )
            ports[number] = port
            return port.wait(client_ip, session_id, on_stop)
        raise OSError(
            errno.EADDRINUSE,
            f"every port of {self._first}-{self._last} already waits for {client_ip}",
        )

    @property
    def listening(self) -> int:
        """Shared ports open now."""
        return sum(port.open for ports in self._open.values() for port in ports.values())

    def adopt(self) -> None:
        """A generation starts to use these ports."""
        self._users += 1

    def leave(self) -> None:
        """A generation has ended: the last one closes the ports."""
        self._users -= 1
        if self._users <= 0:
            self.close()

    def close(self) -> None:
        """Close every shared port; their waits fail."""
        for ports in self._open.values():
            for port in ports.values():
                port.fail_all(OSError(errno.ECONNABORTED, "the passive ports closed"))
        self._open.clear()


def wait_once(host: str, expected_ip: str, log: EventLog, side: str, session_id: str) -> PortWait:
    """A listener of its own, on a port the kernel picks, for one connection from
    ``expected_ip`` (the server's data connection in active mode)."""
    sock = _listen_on(host, 0, backlog=4)
    port = _Port(asyncio.get_running_loop(), sock, log, side, "-", None, dedicated=True)
    return port.wait(expected_ip, session_id, None)


def _listen_on(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Lets a port whose last transfer is in TIME_WAIT serve again; Linux
        # still refuses two listeners on one port, so ranges cannot collide.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
