"""``mode = "tcp"``: relay FTP control and passive data connections without reading them.

This is HAProxy's classic FTP scheme, for end-to-end FTPS (and SFTP) that the
balancer must not, or cannot, read:

* **Control.** Each connection to a frontend ``bind`` goes to a server that the
  backend's pool picks (balance, sticky = "source", limits, health), connected
  with ``timeout_connect`` and the same ``retries``/``redispatch`` rules as in
  ``mode = "ftp"``. A TCP connect counts as success: no banner is read. Then the
  two sockets are spliced together until both ends close. When no server can be
  connected the client connection is simply closed: the balancer cannot speak
  FTP on a stream that may be TLS from its first byte (implicit FTPS).
* **Passive data.** For every server of the backend, the balancer listens on
  each port of that server's ``passive_ports``, on each bind host of the
  frontend. A connection to port P of server X's range is relayed to X's own
  host on the same port P. The servers must advertise the balancer's address
  and their own range (``pasv_address``, ``MasqueradeAddress``, ``-P``): that is
  the administrator's part in this mode.

Two FTP rules still hold although no byte is read:

* **Port theft.** Every data connection reaches the server from the balancer,
  so a server's own check that data comes from its control peer is defeated.
  The balancer makes that check instead: a data connection to server X's range
  is accepted only from an address that has a control session open to X
  through this frontend. Anything else is closed and logged.
* **A control connection is idle only when its data is idle too.** During a
  long transfer the control connection carries nothing, so its idle timer is
  held while a data relay of the same client to the same server runs.

A server that health checks mark DOWN takes no new control sessions, but its
passive ports keep relaying: transfers of its existing sessions must finish.

Stopping and handing over (see docs/operations.md):

* ``stop_accepting()`` (a graceful stop) closes the control listeners at once;
  the passive listeners serve the open sessions until the last control session
  and data relay of this frontend have ended, then close too. ``stop()`` cuts
  whatever is left.
* ``take_over(old)`` makes a new generation of a frontend share the old one's
  table of open sessions, so the data connections and idle timers of the old
  sessions work across both; ``old.hand_over()`` then closes every listening
  socket of the old one while its relays run to their end. Listening sockets
  may be duplicates of another generation's: each frontend closes only its own
  socket objects.

It is over 500 lines because the control relay, the per-server passive relays
and their port-theft check all read one frontend's table of open sessions.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any

from ftplb.balancing.pool import Pool
from ftplb.balancing.state import Server
from ftplb.config.backends import Backend
from ftplb.config.fields import PortRange
from ftplb.config.frontends import Frontend
from ftplb.config.general import Defaults
from ftplb.config.limits import ClientLimits, resolve_limits
from ftplb.proto.addresses import HostPort, kernel_host, unmap_ipv4
from ftplb.proto.outcomes import EndReason
from ftplb.runtime.client_limits import ClientGate
from ftplb.runtime.defender import Defender
from ftplb.runtime.failover import FailoverPolicy, connect_with_failover, describe
from ftplb.runtime.listeners import ListenError, listening_socket, resolve_host, show_address
from ftplb.runtime.logs import EventLog, LogWarning
from ftplb.runtime.pipes import PipeBudget
from ftplb.runtime.progress import RunningTransfer, data_key
from ftplb.runtime.proxy_protocol import (
    UNTRUSTED,
    ProxyIntake,
    ProxyOutlet,
    read_data_header,
    receive_header,
    send_header,
)
from ftplb.runtime.relay import RelayEnd, RelayMeter, RelayOutcome, relay
from ftplb.runtime.session import SessionLimit
from ftplb.runtime.session_ids import next_session_id

__all__ = ["ListenError", "PassthroughFrontend", "PassthroughSettings"]

CONTROL_BACKLOG = 1024
DATA_BACKLOG = 128
ACCEPTS_PER_WAKEUP = 32
"""Connections taken per readiness callback before the loop serves the others."""

ACCEPT_PAUSE = 0.5
"""Seconds a listener rests after accept() failed for lack of descriptors or memory.

The listener stays readable while its queue holds connections, so retrying at
once would spin the event loop without freeing anything.
"""

STOP_GRACE = 5.0
"""Seconds ``stop`` waits for cancelled relays to release their sockets."""

Peer = tuple[str, int]
ConnectionHandler = Callable[[socket.socket, Peer], None]


@dataclass(frozen=True, slots=True)
class PassthroughSettings:
    """What one tcp frontend needs from the configuration, resolved."""

    name: str
    binds: tuple[tuple[str, int], ...]
    """(host, port) of each control listener; every host also gets the passive ports."""
    passive_ranges: Mapping[str, PortRange]
    """Server name -> that server's own passive port range."""
    connect_timeout: float
    idle_timeout: float
    failover: FailoverPolicy
    max_connections: int
    """Control sessions on this frontend at once; 0 = unlimited."""
    source_ip: str | None
    """Local address for connections to the servers (control and data alike)."""
    proxy_intake: ProxyIntake | None = None
    """``accept_proxy``: connections from the trusted upstream start with a PROXY header."""
    proxy_outlet: ProxyOutlet | None = None
    """``send_proxy``: a PROXY header starts each connection to a server."""
    limits: ClientLimits = field(default_factory=ClientLimits)
    """The per-client limits; only the session limits apply to a tcp frontend."""

    @classmethod
    def from_config(
        cls, frontend: Frontend, backend: Backend, defaults: Defaults
    ) -> PassthroughSettings:
        ranges: dict[str, PortRange] = {}
        for server in backend.servers:
            # A server without a range (SFTP, say) has only its control connection relayed.
            if server.passive_ports is not None:
                ranges[server.name] = server.passive_ports
        return cls(
            name=frontend.name,
            binds=tuple((resolve_host(bind.host), bind.port) for bind in frontend.bind),
            passive_ranges=ranges,
            connect_timeout=defaults.timeout_connect,
            idle_timeout=max(defaults.timeout_client, defaults.timeout_server),
            failover=FailoverPolicy(defaults.retries, defaults.redispatch),
            max_connections=frontend.max_connections,
            source_ip=backend.source,
            proxy_intake=(
                ProxyIntake.of(frontend.proxy_trusted, defaults.timeout_client)
                if frontend.accept_proxy
                else None
            ),
            proxy_outlet=ProxyOutlet.of(backend.send_proxy, backend.send_proxy_data),
            limits=resolve_limits(frontend, defaults),
        )


@dataclass(slots=True, eq=False)
class _Control:
    """One relayed control connection."""

    client: socket.socket
    client_ip: str
    client_port: int
    started: float
    last_active: float
    server: Server | None = None
    upstream: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    to_server: int = 0
    to_client: int = 0
    # Every way out of the relay sets its reason: one left unset is a defect,
    # logged as such beside the relay_failed warning.
    end: EndReason = EndReason.INTERNAL_ERROR
    detail: str = ""
    session_id: str = field(default_factory=next_session_id)
    meter: RelayMeter = field(default_factory=RelayMeter)
    reached: HostPort | None = None
    """The address the client connected to, when a PROXY header named it."""
    counted: bool = False
    """Counted against its client address's limits (so released at its end)."""

    def frontend_address(self) -> HostPort:
        """The address the client connected to: the header's, or our end of the socket."""
        if self.reached is not None:
            return self.reached
        local = self.client.getsockname()
        return HostPort(kernel_host(local[0]), local[1])

    def progress(self, to_server: int, to_client: int) -> None:
        self.to_server = to_server
        self.to_client = to_client
        self.last_active = asyncio.get_running_loop().time()


@dataclass(slots=True)
class _Listener:
    """A listening socket, what to do with its connections, and whether it is watched."""

    sock: socket.socket
    handler: ConnectionHandler
    watched: bool = False
    resume: asyncio.TimerHandle | None = None


class _Occupancy:
    """Per (server name, client IP): open control sessions (their ids) and running data relays."""

    __slots__ = ("_sessions", "_transfers")

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str], list[str]] = {}
        self._transfers: Counter[tuple[str, str]] = Counter()

    def has_session(self, server: str, client_ip: str) -> bool:
        return (server, client_ip) in self._sessions

    def session_of(self, server: str, client_ip: str) -> str:
        """The id of this client's control session to this server; ``-`` for none or several
        (bytes alone cannot tell which of a client's sessions a data connection serves)."""
        ids = self._sessions.get((server, client_ip), [])
        return ids[0] if len(ids) == 1 else "-"

    def transferring(self, server: str, client_ip: str) -> bool:
        return self._transfers[(server, client_ip)] > 0

    def session_opened(self, server: str, client_ip: str, session_id: str) -> None:
        self._sessions.setdefault((server, client_ip), []).append(session_id)

    def session_closed(self, server: str, client_ip: str, session_id: str) -> None:
        ids = self._sessions.get((server, client_ip), [])
        if session_id in ids:
            ids.remove(session_id)
        if not ids:
            # Drop keys with no session, so the table holds only live clients.
            self._sessions.pop((server, client_ip), None)

    def transfer_started(self, server: str, client_ip: str) -> None:
        self._transfers[(server, client_ip)] += 1

    def transfer_ended(self, server: str, client_ip: str) -> None:
        _decrement(self._transfers, (server, client_ip))


def _decrement(counter: Counter[tuple[str, str]], key: tuple[str, str]) -> None:
    # Drop keys at zero, so the counters hold only live clients.
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class PassthroughFrontend:
    """One ``mode = "tcp"`` frontend: its listeners, relays and counts.

    ``open()`` binds every listener (and raises ``ListenError``), ``start()``
    begins accepting, ``stop_accepting()`` begins a graceful stop,
    ``stop()`` closes the listeners and ends every relay.
    """

    def __init__(
        self,
        settings: PassthroughSettings,
        pool: Pool,
        *,
        overall: SessionLimit,
        log: EventLog,
        budget: PipeBudget,
        listen: Callable[[str, int, int], socket.socket] = listening_socket,
        defender: Defender | None = None,
    ) -> None:
        for name in settings.passive_ranges:
            pool.server(name)  # KeyError for a range of a server the pool lacks
        self.settings = settings
        self.pool = pool
        self._overall = overall
        self._log = log
        self._budget = budget
        self._defender = defender
        # How a listening socket is opened: a reload hands in one that gives
        # each generation a duplicate of one kept socket per address.
        self._listen_socket = listen
        self._control_listeners: list[_Listener] = []
        self._passive_listeners: list[_Listener] = []
        self._controls: set[_Control] = set()
        self._data_relays = 0
        self._running: dict[str, RunningTransfer] = {}
        # Strong references: the event loop keeps only weak ones to tasks.
        self._tasks: set[asyncio.Task[None]] = set()
        # Shared with the other generation of this frontend after take_over().
        self._occupancy = _Occupancy()
        self._gate = ClientGate(settings.limits)
        self._draining = False
        self._stopping = False

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def sessions(self) -> Sized:
        """Control sessions open right now (what the metrics count)."""
        return self._controls

    @property
    def transfers(self) -> int:
        """Data relays of this frontend running right now."""
        return self._data_relays

    def running_transfers(self) -> Iterable[RunningTransfer]:
        """The data relays running now (their command is unknown: "-")."""
        return self._running.values()

    def control_counts(self) -> Iterator[tuple[str, str, int, int]]:
        """(session id, server, bytes in, bytes out) of each relayed control connection."""
        for control in self._controls:
            if control.server is not None:
                meter = control.meter
                yield control.session_id, control.server.name, meter.a_to_b, meter.b_to_a

    # ------------------------------------------------------------ listeners
    def listener_count(self) -> int:
        """How many listening sockets this frontend opens."""
        ports = sum(r.count for r in self.settings.passive_ranges.values())
        return len(self.settings.binds) * (1 + ports)

    def open(self) -> None:
        """Bind every control and passive listener, or none (raises ``ListenError``)."""
        needed = self.listener_count()
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_limit != resource.RLIM_INFINITY and needed >= soft_limit:
            raise ListenError(
                f"frontend {self.name!r} needs {needed} listening sockets (its binds times "
                f"1 + the servers' passive ports), but the open-file limit is {soft_limit}"
            )
        try:
            for host, port in self.settings.binds:
                sock = self._listen_socket(host, port, CONTROL_BACKLOG)
                self._control_listeners.append(_Listener(sock, self._on_control))
            for host, _ in self.settings.binds:
                for server_name, ports in self.settings.passive_ranges.items():
                    server = self.pool.server(server_name)
                    for port in ports:
                        sock = self._listen_socket(host, port, DATA_BACKLOG)
                        handler = self._data_handler(server, port)
                        self._passive_listeners.append(_Listener(sock, handler))
        except BaseException:
            self._close_listeners()
            raise

    def start(self) -> None:
        """Accept connections on every listener opened by ``open()``."""
        for listener in (*self._control_listeners, *self._passive_listeners):
            self._watch(listener)
        for host, port in self.settings.binds:
            self._log.info(
                "listening", frontend=self.name, mode="tcp", address=show_address(host, port)
            )
        for server_name, ports in self.settings.passive_ranges.items():
            self._log.info(
                "relaying passive ports",
                frontend=self.name,
                server=server_name,
                ports=str(ports),
            )

    def _watch(self, listener: _Listener) -> None:
        listener.resume = None
        if not listener.watched and not self._stopping:
            asyncio.get_running_loop().add_reader(listener.sock.fileno(), self._accept, listener)
            listener.watched = True

    def _unwatch(self, listener: _Listener) -> None:
        if listener.watched:
            asyncio.get_running_loop().remove_reader(listener.sock.fileno())
            listener.watched = False
        if listener.resume is not None:
            listener.resume.cancel()
            listener.resume = None

    def _accept(self, listener: _Listener) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as error:
                # EMFILE, ENFILE, ENOBUFS: nothing to accept with until something closes.
                self._log.warning(
                    LogWarning.ACCEPT_FAILED,
                    frontend=self.name,
                    reason=error.strerror or str(error),
                )
                self._unwatch(listener)
                loop = asyncio.get_running_loop()
                listener.resume = loop.call_later(ACCEPT_PAUSE, self._watch, listener)
                return
            conn.setblocking(False)
            try:
                listener.handler(conn, (unmap_ipv4(peer[0]), peer[1]))
            except Exception:
                conn.close()
                raise

    def _close_listeners(self) -> None:
        self._close(self._control_listeners)
        self._close(self._passive_listeners)

    def _close(self, listeners: list[_Listener]) -> None:
        """Close these listening sockets (idempotent).

        Each one leaves the event loop before it closes: it may be a duplicate
        of a socket that another generation still watches, and epoll keeps a
        closed descriptor's registration while a duplicate holds the socket.
        """
        for listener in listeners:
            self._unwatch(listener)
            listener.sock.close()
        listeners.clear()

    # ------------------------------------------------------- control relays
    def _on_control(self, conn: socket.socket, peer: Peer) -> None:
        client_ip, client_port = peer
        self._log.notify("accept", frontend=self.name)
        refusal = self._refusal()
        if refusal is None and self.settings.proxy_intake is None:
            # Behind an upstream, the client's address is known from the header only.
            refusal = self._client_refusal(client_ip)
        if refusal is not None:
            # Closed without a word: the stream may be TLS (or SSH) from its first byte.
            conn.close()
            self._log.session(
                session=next_session_id(),
                frontend=self.name,
                mode="tcp",
                client=show_address(client_ip, client_port),
                server="-",
                duration=0.0,
                bytes_in=0,
                bytes_out=0,
                end=refusal,
            )
            return
        # Control traffic is small request/reply exchanges: Nagle's algorithm
        # would hold the second segment of a multi-segment reply for an ACK.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = asyncio.get_running_loop().time()
        control = _Control(conn, client_ip, client_port, time.monotonic(), now)
        control.counted = self.settings.proxy_intake is None
        self._controls.add(control)
        self._overall.active += 1
        control.task = self._spawn(self._serve_control(control), control.session_id)

    def _refusal(self) -> EndReason | None:
        """Why a control connection is refused whoever sends it, or None."""
        if self._stopping:
            return EndReason.SHUTDOWN
        limit = self.settings.max_connections
        if (limit and len(self._controls) >= limit) or self._overall.full():
            return EndReason.LIMIT
        return None

    def _client_refusal(self, client_ip: str) -> EndReason | None:
        """Why the client at ``client_ip`` is refused, or None: asked once its address is
        known. The defender first; then its limits, which count it when they admit it."""
        if self._defender is not None:
            refusal = self._defender.refusal(client_ip)
            if refusal is not None:
                return refusal
        return self._gate.admit(client_ip)

    async def _serve_control(self, control: _Control) -> None:
        try:
            intake = self.settings.proxy_intake
            if intake is not None:
                refusal = await self._take_header(control, intake)
                if refusal:
                    control.end, control.detail = EndReason.PROXY_REFUSED, refusal
                    return
                refused = self._client_refusal(control.client_ip)
                if refused is not None:
                    control.end = refused
                    return
                control.counted = True
            picked = await self._connect_server(control)
            if isinstance(picked, str):
                control.end, control.detail = EndReason.NO_SERVER, picked
                return
            control.server, control.upstream = picked
            self._log.notify(
                "session_open",
                session=control.session_id,
                frontend=self.name,
                server=control.server.name,
            )
            control.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._occupancy.session_opened(
                control.server.name, control.client_ip, control.session_id
            )
            control.last_active = asyncio.get_running_loop().time()
            self._arm_idle_timer(control)
            result = await relay(
                control.client,
                control.upstream,
                budget=self._budget,
                on_progress=control.progress,
                meter=control.meter,
            )
            control.to_server, control.to_client = result.a_to_b, result.b_to_a
            control.end, control.detail = _relay_end(result.outcome)
        finally:
            self._finish_control(control)

    async def _take_header(self, control: _Control, intake: ProxyIntake) -> str:
        """Read the upstream's PROXY header: its source becomes the client. Returns
        why the connection is refused, or "" when it is not."""
        if not intake.trusts(control.client_ip):
            return UNTRUSTED
        got = await receive_header(asyncio.get_running_loop(), control.client, intake.timeout)
        if isinstance(got, str):
            return got
        if got.source is not None and got.destination is not None:
            control.client_ip, control.client_port = got.source.host, got.source.port
            control.reached = got.destination
        return ""

    async def _connect_server(self, control: _Control) -> tuple[Server, socket.socket] | str:
        """A connected server socket, or the reason why no server could be connected."""

        async def connect_control(server: Server) -> socket.socket:
            sock = await self._connect(server.host, server.port)
            outlet = self.settings.proxy_outlet
            if outlet is not None:
                client = HostPort(control.client_ip, control.client_port)
                await self._send_header(sock, outlet.header(client, control.frontend_address()))
            return sock

        return await connect_with_failover(
            self.pool,
            self.settings.failover,
            control.client_ip,
            None,
            connect_control,
            self._log,
            self.name,
            session=control.session_id,
        )

    @staticmethod
    async def _send_header(sock: socket.socket, header: bytes) -> None:
        try:
            await send_header(asyncio.get_running_loop(), sock, header)
        except BaseException:
            sock.close()
            raise

    async def _connect(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if self.settings.source_ip:
                sock.bind((self.settings.source_ip, 0))
            async with asyncio.timeout(self.settings.connect_timeout):
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _arm_idle_timer(self, control: _Control) -> None:
        delay = max(0.05, self.settings.idle_timeout / 4)
        control.timer = asyncio.get_running_loop().call_later(delay, self._check_idle, control)

    def _check_idle(self, control: _Control) -> None:
        control.timer = None
        if control not in self._controls or control.server is None:
            return
        now = asyncio.get_running_loop().time()
        if self._occupancy.transferring(control.server.name, control.client_ip):
            # A transfer of this client on this server is running: the quiet
            # control connection is waiting for its end, not idle.
            control.last_active = now
        elif now - control.last_active >= self.settings.idle_timeout:
            control.end = EndReason.IDLE_TIMEOUT
            if control.task is not None:
                control.task.cancel()
            return
        self._arm_idle_timer(control)

    def _finish_control(self, control: _Control) -> None:
        if control not in self._controls:
            return
        self._controls.discard(control)
        self._overall.active -= 1
        if control.counted:
            self._gate.session_ended(control.client_ip)
        if control.timer is not None:
            control.timer.cancel()
            control.timer = None
        control.client.close()
        if control.upstream is not None:
            control.upstream.close()
        server = control.server
        if server is not None:
            self.pool.release(server)
            self._occupancy.session_closed(server.name, control.client_ip, control.session_id)
        self._log.session(
            session=control.session_id,
            frontend=self.name,
            mode="tcp",
            client=show_address(control.client_ip, control.client_port),
            server=server.name if server is not None else "-",
            duration=round(time.monotonic() - control.started, 3),
            bytes_in=control.to_server,
            bytes_out=control.to_client,
            end=control.end,
            detail=control.detail,
        )
        self._close_passive_when_drained()

    # ---------------------------------------------------------- data relays
    def _data_handler(self, server: Server, port: int) -> ConnectionHandler:
        def on_connection(conn: socket.socket, peer: Peer) -> None:
            self._on_data(conn, peer, server, port)

        return on_connection

    def _on_data(self, conn: socket.socket, peer: Peer, server: Server, port: int) -> None:
        intake = self.settings.proxy_intake
        if intake is not None and intake.trusts(peer[0]) and not self._stopping:
            self._spawn(self._data_header(conn, peer, server, port, intake), "-")
            return
        self._admit_data(conn, peer, server, port)

    async def _data_header(
        self, conn: socket.socket, peer: Peer, server: Server, port: int, intake: ProxyIntake
    ) -> None:
        """A data connection from the trusted upstream: its header names the client."""

        def refused(reason: str) -> None:
            self._log.warning(
                LogWarning.PROXY_HEADER_REFUSED,
                session="-",
                frontend=self.name,
                side="client",
                peer=peer[0],
                reason=reason,
                port=port,
            )

        client = await read_data_header(asyncio.get_running_loop(), conn, peer, intake, refused)
        if client is not None:
            self._admit_data(conn, client, server, port)

    def _admit_data(self, conn: socket.socket, peer: Peer, server: Server, port: int) -> None:
        client_ip, client_port = peer
        if self._stopping or not self._occupancy.has_session(server.name, client_ip):
            conn.close()
            if not self._stopping:
                self._log.warning(
                    LogWarning.ORPHAN_DATA_REFUSED,
                    frontend=self.name,
                    client=show_address(client_ip, client_port),
                    server=server.name,
                    port=port,
                )
            return
        self._occupancy.transfer_started(server.name, client_ip)
        self._data_relays += 1
        session_id = self._occupancy.session_of(server.name, client_ip)
        self._spawn(
            self._serve_data(conn, (client_ip, client_port), server, port, session_id), session_id
        )

    async def _serve_data(
        self, conn: socket.socket, peer: Peer, server: Server, port: int, session_id: str
    ) -> None:
        client_ip, client_port = peer
        started = time.monotonic()
        upstream: socket.socket | None = None
        end, detail = EndReason.INTERNAL_ERROR, ""
        client = show_address(client_ip, client_port)
        running = RunningTransfer(data_key(self.name, client), self.name, client, server.name)
        self._running[running.key] = running
        try:
            try:
                upstream = await self._connect(server.host, port)
                outlet = self.settings.proxy_outlet
                if outlet is not None and outlet.on_data:
                    local = conn.getsockname()
                    reached = HostPort(kernel_host(local[0]), local[1])
                    header = outlet.header(HostPort(client_ip, client_port), reached)
                    await self._send_header(upstream, header)
            except (OSError, TimeoutError) as error:
                end, detail = EndReason.NO_SERVER, describe(error)
                return
            result = await relay(
                conn,
                upstream,
                budget=self._budget,
                idle_timeout=self.settings.idle_timeout,
                meter=running.meter,
            )
            # A data connection carries one way: once that way has ended, a
            # peer that is slow to close the other is no failure.
            done = result.outcome.end is RelayEnd.IDLE_AFTER_HALF_CLOSE
            end, detail = (EndReason.CLOSED, "") if done else _relay_end(result.outcome)
        except asyncio.CancelledError:
            end = EndReason.SHUTDOWN  # only stop() cancels a data relay
            raise
        finally:
            conn.close()
            if upstream is not None:
                upstream.close()
            self._occupancy.transfer_ended(server.name, client_ip)
            self._data_relays -= 1
            # Out of the running set before the line: see RunningTransfer.
            self._running.pop(running.key, None)
            self._log.data(
                session=session_id,
                frontend=self.name,
                mode="tcp",
                client=client,
                server=server.name,
                port=port,
                duration=round(time.monotonic() - started, 3),
                bytes_to_server=running.to_server,
                bytes_to_client=running.to_client,
                end=end,
                detail=detail,
            )
            self._close_passive_when_drained()

    # ------------------------------------------------------------- lifecycle
    def _spawn(self, coroutine: Coroutine[Any, Any, None], session_id: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._task_done(done, session_id))
        return task

    def _task_done(self, task: asyncio.Task[None], session_id: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self._log.warning(
                LogWarning.RELAY_FAILED,
                session=session_id,
                frontend=self.name,
                reason=f"{type(error).__name__}: {error}",
            )

    def stop_accepting(self) -> None:
        """Begin a graceful stop: take no new control connection from now on.

        The passive listeners go on serving the open control sessions of this
        frontend (their port-theft check and idle timers unchanged), and close
        once its last control session and data relay have ended.
        """
        self._draining = True
        self._close(self._control_listeners)
        self._close_passive_when_drained()

    def _close_passive_when_drained(self) -> None:
        if self._draining and not self._controls and not self._data_relays:
            self._close(self._passive_listeners)

    def take_over(self, old: PassthroughFrontend) -> None:
        """Become the next generation of ``old``: share its table of open sessions.

        Call it before ``start()``. A data connection that reaches this
        frontend for a session that ``old`` still relays then passes the
        port-theft check, and holds that session's idle timer while it runs.
        With the same per-client limits, the counts of ``old``'s sessions go
        on too.
        """
        if old.name != self.name:
            raise ValueError(f"frontend {self.name!r} cannot take over {old.name!r}")
        self._occupancy = old._occupancy
        if old._gate.limits == self._gate.limits:
            self._gate = old._gate

    def hand_over(self) -> None:
        """Leave every port to the next generation; the running relays go on to their end.

        Closes this frontend's own listening sockets, control and passive:
        sockets shared with the next generation stay open in it.
        """
        self._draining = True
        self._close_listeners()

    async def stop(self) -> None:
        """Close the listeners and end every relay (idempotent)."""
        self._stopping = True
        self._close_listeners()
        for control in self._controls:
            control.end = EndReason.SHUTDOWN
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE)


def _relay_end(outcome: RelayOutcome) -> tuple[EndReason, str]:
    """A relay outcome ("a" is the client, "b" the server) as an end reason and its detail."""
    if outcome.end is RelayEnd.CLOSED:
        return EndReason.CLOSED, ""
    if outcome.end is RelayEnd.IDLE:
        return EndReason.IDLE_TIMEOUT, ""
    if outcome.end is RelayEnd.IDLE_AFTER_HALF_CLOSE:
        return EndReason.IDLE_TIMEOUT, "after half-close"
    # A reset, or another socket or TLS error: that side's connection broke.
    reason = EndReason.CLIENT_RESET if outcome.side == "a" else EndReason.SERVER_RESET
    if outcome.end is RelayEnd.TLS_ERROR:
        return reason, f"TLS error: {outcome.detail}"
    return reason, outcome.detail
