"""The I/O driver of one FTP client session: it feeds the core and carries out its actions.

It is over 500 lines because it is one connection's whole driver: the client
protocol, its server link and the handler of each core action read the same
session state, and split apart they would pass it back and forth.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import cast

from ftplb.balancing.client_limits import TokenBucket
from ftplb.balancing.pool import Pool
from ftplb.balancing.state import Server
from ftplb.proto import actions as act
from ftplb.proto.addresses import HostPort, kernel_host
from ftplb.proto.control import ControlSession, SessionPolicy
from ftplb.proto.errors import ProtocolError
from ftplb.proto.outcomes import EndReason, LoginStatus
from ftplb.proto.proxy_header import (
    Malformed,
    NeedMore,
    ProxyHeader,
    TlsFacts,
    parse_proxy_header,
)
from ftplb.proto.replies import format_reply
from ftplb.proto.upstream import (
    DialogueAction,
    DialogueFailed,
    DialogueReady,
    DialogueSettings,
    DialogueState,
    SendToServer,
    ServerDialogue,
    StartServerTls,
)
from ftplb.runtime.client_limits import ClientGate
from ftplb.runtime.connect import open_connection
from ftplb.runtime.data import (
    Addresses,
    ClientDataTls,
    DataChannel,
    DataSettings,
    DataTls,
    TransferOutcome,
)
from ftplb.runtime.defender import Defender
from ftplb.runtime.failover import FailoverPolicy, connect_with_failover, describe
from ftplb.runtime.logs import EventLog, LogWarning, TransferError
from ftplb.runtime.passive_ports import PassivePorts
from ftplb.runtime.progress import RunningTransfer, cut_short_detail
from ftplb.runtime.proxy_protocol import (
    CLOSED_BEFORE_HEADER,
    NO_HEADER_IN_TIME,
    UNTRUSTED,
    ProxyIntake,
    ProxyOutlet,
    send_header,
    tls_facts,
)
from ftplb.runtime.session_ids import next_session_id
from ftplb.runtime.tls import BackendTls, FrontendTls, TlsSetupError, session_of

_MAX_BACKLOG = 64
"""Pipelined client commands held before reading from the client pauses."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    client: float
    server: float
    data: float


@dataclass(slots=True, eq=False)
class SessionLimit:
    """The balancer-wide session count and its limit (0 = unlimited), shared by frontends."""

    limit: int = 0
    active: int = 0

    def full(self) -> bool:
        return self.limit > 0 and self.active >= self.limit


@dataclass(slots=True, eq=False)
class FrontendContext:
    """Everything a session needs to know about the frontend it arrived on."""

    name: str
    pool: Pool
    policy: SessionPolicy
    ports: PassivePorts
    passive_address: str | None
    timeouts: Timeouts
    failover: FailoverPolicy
    max_connections: int
    source_ip: str | None
    log: EventLog
    data: DataSettings
    overall: SessionLimit = field(default_factory=SessionLimit)
    gate: ClientGate = field(default_factory=ClientGate)
    """The per-client limits (sessions, passive listeners, transfer rates)."""
    sessions: set[Session] = field(default_factory=set)
    running: dict[str, RunningTransfer] = field(default_factory=dict)
    """The transfers running now, by session id: counted while they run."""
    client_tls: FrontendTls | None = None
    """The frontend's TLS towards clients (AUTH TLS, implicit, and PROT P data)."""
    backend_tls: BackendTls | None = None
    """TLS towards the servers; None offloads (plain FTP to them)."""
    proxy_intake: ProxyIntake | None = None
    """``accept_proxy``: each connection starts with a PROXY header from a trusted upstream."""
    proxy_outlet: ProxyOutlet | None = None
    """``send_proxy``: a PROXY header starts each connection to a server."""
    defender: Defender | None = None
    """The login defender (``[defender]``); None without one."""

    def running_transfers(self) -> Iterable[RunningTransfer]:
        return self.running.values()

    def control_counts(self) -> Iterator[tuple[str, str, int, int]]:
        """(session id, server, bytes in, bytes out) of each session on a server."""
        for session in self.sessions:
            server = session.server_name
            if server != "-":
                yield session.session_id, server, session.bytes_in, session.bytes_out


class _ServerLink(asyncio.Protocol):
    """The control connection to a server: carries out its setup dialogue (the
    greeting and, with TLS, AUTH, PBSZ and PROT), then feeds the session."""

    __slots__ = (
        "_dialogue",
        "_loop",
        "_pending",
        "_unread",
        "_waiter",
        "attached",
        "lost_early",
        "session",
        "transport",
    )

    def __init__(
        self, session: Session, loop: asyncio.AbstractEventLoop, dialogue: ServerDialogue
    ) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self._loop = loop
        self._dialogue = dialogue
        # What the dialogue asks of set_up(), in order: a TLS handshake, or its end.
        self._pending: list[StartServerTls | DialogueReady | DialogueFailed] = []
        self._waiter: asyncio.Future[None] | None = None
        # The server's bytes after its last setup reply, kept for the session.
        self._unread = bytearray()
        self.attached = False
        # Closed by the server after its setup replies, before the session took over.
        self.lost_early = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Open, and with implicit TLS handshaken: the greeting may come at once.
        self.transport = cast(asyncio.Transport, transport)
        self._carry_out(self._dialogue.start())

    async def set_up(self, tls: BackendTls | None, host: str) -> None:
        """Run the dialogue to its end; raises ProtocolError with its detail if it fails."""
        while True:
            step = await self._next()
            if isinstance(step, DialogueReady):
                self._unread += step.unread
                return
            if isinstance(step, DialogueFailed):
                raise ProtocolError(421, step.detail)
            assert tls is not None and self.transport is not None
            try:
                upgraded = await self._loop.start_tls(
                    self.transport, self, tls.context, server_hostname=tls.name_for(host)
                )
            except OSError as error:  # ssl.SSLError included
                self._carry_out(self._dialogue.tls_failed(describe(error)))
                continue
            if upgraded is None:
                self._carry_out(self._dialogue.tls_failed("the connection closed"))
                continue
            self.transport = upgraded
            self._carry_out(self._dialogue.tls_started())

    async def _next(self) -> StartServerTls | DialogueReady | DialogueFailed:
        while not self._pending:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._pending.pop(0)

    def _carry_out(self, actions: list[DialogueAction]) -> None:
        for action in actions:
            if isinstance(action, SendToServer):
                if self.transport is not None:
                    self.transport.write(action.data)
                continue
            self._pending.append(action)
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def attach(self) -> None:
        """From now on, everything the server says goes to the session: first what it
        said after its setup replies, then its close if it already closed."""
        self.attached = True
        if self._unread:
            unread, self._unread = bytes(self._unread), bytearray()
            self.session.on_server_data(unread)
        if self.lost_early:
            self.session.on_server_lost()

    def data_received(self, data: bytes) -> None:
        if self.attached:
            self.session.on_server_data(data)
        elif self._dialogue.state is DialogueState.READY:
            self._unread += data
        else:
            self._carry_out(self._dialogue.server_data(data))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.attached:
            self.session.on_server_lost()
            return
        self.lost_early = True
        self._carry_out(self._dialogue.server_closed())


class Session(asyncio.Protocol):
    """One client control connection, driven as an asyncio protocol."""

    __slots__ = (
        "_bytes_in",
        "_bytes_out",
        "_client_context",
        "_closed",
        "_connect_task",
        "_counted",
        "_ctx",
        "_data",
        "_header",
        "_last_client",
        "_last_server",
        "_link",
        "_loop",
        "_paused",
        "_proxied",
        "_rate",
        "_running",
        "_server",
        "_start",
        "_started",
        "_timer",
        "_tls_task",
        "_transfer_detail",
        "_transfer_error",
        "_transfer_started",
        "client",
        "core",
        "frontend_address",
        "local_ip",
        "session_id",
        "transport",
    )

    def __init__(self, ctx: FrontendContext) -> None:
        self._ctx = ctx
        self.session_id = next_session_id()
        # Cached: asyncio.get_running_loop() costs a getpid() system call each time.
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._counted = False
        """Admitted by the client limits: its end is counted off them."""
        self._rate: TokenBucket | None = None
        """``transfer_rate_per_session``: the bucket all its transfers share."""
        self._paused = False
        self._server: Server | None = None
        self._link: _ServerLink | None = None
        self._data: DataChannel | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._tls_task: asyncio.Task[None] | None = None
        self._client_context: ssl.SSLContext | None = None
        """This session's TLS context after AUTH TLS (its own, when reuse is required)."""
        self._timer: asyncio.TimerHandle | None = None
        self._bytes_in = 0
        self._bytes_out = 0
        self._started = time.monotonic()
        self._transfer_started = 0.0
        self._transfer_error: str | None = None
        self._running: RunningTransfer | None = None
        self._start: act.StartTransfer | None = None
        self._transfer_detail = ""
        self._last_client = self._last_server = 0.0
        self.transport: asyncio.Transport | None = None
        self.client = HostPort("0.0.0.0", 0)
        """The client's address: the socket's peer, or a trusted PROXY header's source."""
        self.frontend_address = HostPort("0.0.0.0", 0)
        """The address the client connected to: ours, or the header's destination."""
        self.local_ip = ""
        # The bytes of a PROXY header read so far, while one is awaited.
        self._header: bytearray | None = None
        # A header read off the socket before its TLS handshake (runtime/proxied_tls.py).
        self._proxied: ProxyHeader | None = None

    @property
    def server_name(self) -> str:
        return self._server.name if self._server is not None else "-"

    @property
    def bytes_in(self) -> int:
        """Control bytes from the client so far."""
        return self._bytes_in

    @property
    def bytes_out(self) -> int:
        return self._bytes_out

    # ------------------------------------------------------ client protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.client = HostPort(kernel_host(peer[0]), peer[1])
        self.local_ip = kernel_host(local[0])
        self.frontend_address = HostPort(self.local_ip, local[1])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Clients send ABOR behind a Telnet "urgent" mark; keep that byte in
            # the stream instead of losing the line's last byte to OOB data.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        proxied = self._proxied
        if proxied is not None:
            # Accepted, and its header read, before the handshake that just ended.
            if proxied.source is not None and proxied.destination is not None:
                self.client, self.frontend_address = proxied.source, proxied.destination
            self._admit()
            return
        self._ctx.log.notify("accept", frontend=self._ctx.name)
        intake = self._ctx.proxy_intake
        if intake is None:
            self._admit()
        elif not intake.trusts(self.client.host):
            self._refuse(EndReason.PROXY_REFUSED, UNTRUSTED)
        else:
            self._header = bytearray()
            self._timer = self._loop.call_later(intake.timeout, self._header_late)

    def proxied_by(self, header: ProxyHeader) -> None:
        """Implicit TLS behind an upstream: ``header`` came before the handshake, and
        names the client once the connection is made."""
        self._proxied = header

    def refuse_unproxied(self, peer: HostPort, detail: str) -> None:
        """Implicit TLS behind an upstream: ``peer`` sent no valid PROXY header (``detail``
        says why), so no TLS and no session start; log the refusal."""
        self.client = peer
        self._refuse(EndReason.PROXY_REFUSED, detail)

    def _admit(self) -> None:
        """The client's address is known (the socket's, or its PROXY header's): take
        the session, or refuse it over a limit."""
        ctx = self._ctx
        refusal = self.refusal()
        if refusal is not None:
            self._refuse(refusal)
            return
        if not self._admit_client():
            return
        ctx.sessions.add(self)
        ctx.overall.active += 1
        advertised = ctx.passive_address or self.local_ip
        self.core = ControlSession(ctx.policy, self.client.host, 2 if ":" in advertised else 1)
        self._last_client = self._last_server = self._loop.time()
        self._arm_timer()
        self._do(self.core.start())

    def refusal(self) -> EndReason | None:
        """Why this client may not start a session, or None: asked once its address is known."""
        ctx = self._ctx
        if ctx.defender is not None:
            refusal = ctx.defender.refusal(self.client.host)
            if refusal is not None:
                return refusal
        if (ctx.max_connections and len(ctx.sessions) >= ctx.max_connections) or ctx.overall.full():
            return EndReason.LIMIT
        return None

    def _admit_client(self) -> bool:
        """The per-client checks at connect, once the client's address is known:
        count the session against its address's limits, or refuse it."""
        refusal = self._ctx.gate.admit(self.client.host)
        if refusal is not None:
            self._refuse(refusal)
            return False
        self._counted = True
        self._rate = self._ctx.gate.session_bucket()
        return True

    def _refuse(self, reason: EndReason, detail: str = "") -> None:
        """Close a connection that never became a session, with its one log line: with
        a 421 over a limit, without a reply when it is no client of ours (PROXY)."""
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            reply = _REFUSALS.get(reason)
            if reply is not None:
                self.transport.write(reply)
            self.transport.close()
        self._closed = True
        self._ctx.log.session(
            session=self.session_id,
            frontend=self._ctx.name,
            client=f"{self.client.host}:{self.client.port}",
            server="-",
            user="-",
            login=LoginStatus.NONE,
            login_failures=0,
            duration=0.0,
            bytes_in=0,
            bytes_out=0,
            end=reason,
            detail=detail,
        )

    # ---------------------------------------------------- PROXY header intake
    def _header_data(self, header: bytearray, data: bytes) -> None:
        header += data
        parsed = parse_proxy_header(bytes(header))
        if isinstance(parsed, NeedMore):
            return  # the parser bounds the header's length
        if isinstance(parsed, Malformed):
            self._refuse(EndReason.PROXY_REFUSED, parsed.problem.value)
            return
        self._header = None
        if self._timer is not None:
            self._timer.cancel()
        # A header that names no client (LOCAL, UNKNOWN) leaves the socket's addresses.
        if parsed.source is not None and parsed.destination is not None:
            self.client, self.frontend_address = parsed.source, parsed.destination
        self._admit()
        rest = bytes(header[parsed.length :])
        if rest and not self._closed:
            self.data_received(rest)  # the client's first bytes, in the same segment

    def _header_late(self) -> None:
        if self._header is not None and not self._closed:
            self._refuse(EndReason.PROXY_REFUSED, NO_HEADER_IN_TIME)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._header is not None:
            self._header_data(self._header, data)
            return
        self._bytes_in += len(data)
        self._last_client = self._loop.time()
        self._do(self.core.client_data(data))
        if self.core.backlog > _MAX_BACKLOG and self.transport is not None:
            # A client that pipelines without reading our replies must not
            # make us queue its commands without end: let TCP push back.
            self.transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header is not None and not self._closed:
            self._refuse(EndReason.PROXY_REFUSED, CLOSED_BEFORE_HEADER)
        elif not self._closed:
            self._do(self.core.client_closed())

    # ------------------------------------------------------- server events
    def on_server_data(self, data: bytes) -> None:
        if self._closed:
            return
        self._last_server = self._loop.time()
        self._do(self.core.server_data(data))

    def on_server_lost(self) -> None:
        if not self._closed:
            self._do(self.core.server_closed())

    # --------------------------------------------------------------- actions
    def _do(self, actions: list[act.Action]) -> None:
        for action in actions:
            if self._closed:
                return
            self._carry_out(action)
        if self._paused and self.core.backlog <= _MAX_BACKLOG // 4 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _carry_out(self, action: act.Action) -> None:
        if isinstance(action, act.SendToClient):
            if action.data and self.transport is not None:
                self._bytes_out += len(action.data)
                self.transport.write(action.data)
        elif isinstance(action, act.SendToServer):
            if self._link is not None and self._link.transport is not None:
                self._last_server = self._loop.time()
                self._link.transport.write(action.data)
        elif isinstance(action, act.ConnectServer):
            self._connect_task = self._loop.create_task(self._connect_server(action.user))
        elif isinstance(action, act.OpenClientListener):
            self._open_client_listener()
        elif isinstance(action, act.OpenServerListener):
            self._open_server_listener()
        elif isinstance(action, act.StartTransfer):
            self._start_transfer(action)
        elif isinstance(action, act.StartTls):
            self._start_client_tls()
        elif isinstance(action, act.ConnectClient):
            self._channel().connect_client()
        elif isinstance(action, act.CloseData):
            if self._data is not None:
                self._data.close()
                self._data = None
        elif isinstance(action, act.TransferDone):
            self._log_transfer(action)
        elif isinstance(action, act.LoginResult):
            self._ctx.log.notify(
                "login",
                frontend=self._ctx.name,
                server=self.server_name,
                result="ok" if action.ok else "failed",
            )
            if not action.ok:
                self._login_failed()
        elif isinstance(action, act.CommandSeen):
            self._ctx.log.write(
                "command",
                session=self.session_id,
                frontend=self._ctx.name,
                client=self.client.host,
                command=action.text,
            )
        elif isinstance(action, act.Close):
            self._close(action.reason, action.detail)

    def _login_failed(self) -> None:
        """Count the failure; the one that earns a ban (or follows it) ends the session."""
        defender = self._ctx.defender
        if defender is not None and defender.failed_login(
            self.client.host, frontend=self._ctx.name, session=self.session_id
        ):
            if self.transport is not None:
                self.transport.write(_REFUSALS[EndReason.BANNED])
            self._close(EndReason.BANNED)

    # ------------------------------------------------------------ client TLS
    def _start_client_tls(self) -> None:
        transport = self.transport
        tls = self._ctx.client_tls
        if transport is None or tls is None:
            self._do(self.core.client_tls_failed("TLS is not configured"))
            return
        try:
            context = tls.session_context()
        except TlsSetupError as error:
            self._client_tls_failed(str(error))
            return
        self._client_context = context
        # Not one more plaintext byte may reach the core: what follows the
        # AUTH line on the wire is the client's handshake, for TLS to read.
        transport.pause_reading()
        self._tls_task = self._loop.create_task(self._upgrade_client(transport, context))

    async def _upgrade_client(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        try:
            upgraded = await self._loop.start_tls(
                transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._ctx.timeouts.data,
            )
        except (OSError, TimeoutError, ConnectionError, ssl.SSLError) as error:
            self._client_tls_failed(describe(error))
            return
        if upgraded is None or self._closed:
            if upgraded is not None:
                upgraded.close()
            return
        if self._ctx.client_tls is not None and self._ctx.client_tls.reuse_required:
            FrontendTls.control_started(context)
        self.transport = upgraded
        self._last_client = self._loop.time()
        self._do(self.core.client_tls_started())

    def _client_tls_failed(self, reason: str) -> None:
        self._ctx.log.warning(
            LogWarning.CLIENT_TLS_FAILED,
            session=self.session_id,
            frontend=self._ctx.name,
            client=self.client.host,
            reason=reason,
        )
        self._do(self.core.client_tls_failed(reason))

    # ------------------------------------------------------- server connect
    async def _connect_server(self, user: bytes | None) -> None:
        ctx = self._ctx
        picked = await connect_with_failover(
            ctx.pool,
            ctx.failover,
            self.client.host,
            user,
            self._open_link,
            ctx.log,
            ctx.name,
            session=self.session_id,
        )
        if isinstance(picked, str):
            self._do(self.core.server_unavailable(picked))
            return
        server, link = picked
        if self._closed:
            ctx.pool.release(server)
            if link.transport is not None:
                link.transport.close()
            return
        self._server = server
        self._link = link
        self._last_server = self._loop.time()
        ctx.log.notify(
            "session_open", session=self.session_id, frontend=ctx.name, server=server.name
        )
        family = 2 if ":" in server.host else 1
        self._do(self.core.server_connected(server.host, family))
        link.attach()

    async def _open_link(self, server: Server) -> _ServerLink:
        loop = self._loop
        tls = self._ctx.backend_tls
        link = _ServerLink(self, loop, ServerDialogue(_dialogue_settings(tls)))
        try:
            async with asyncio.timeout(self._ctx.timeouts.connect):
                sock = await open_connection(loop, server.host, server.port, self._ctx.source_ip)
                try:
                    if self._ctx.proxy_outlet is not None:
                        await send_header(loop, sock, self._proxy_header(tls_facts(self.transport)))
                    if tls is not None and tls.mode == "implicit":
                        await loop.create_connection(
                            lambda: link,
                            sock=sock,
                            ssl=tls.context,
                            server_hostname=tls.name_for(server.host),
                        )
                    else:
                        await loop.create_connection(lambda: link, sock=sock)
                except BaseException:
                    sock.close()
                    raise
                await link.set_up(tls, server.host)
        except BaseException:
            if link.transport is not None:
                link.transport.close()
            raise
        return link

    def _proxy_header(self, tls: TlsFacts | None = None) -> bytes:
        """The PROXY header for a connection to a server: this session's client and the
        address it reached, and the TLS facts of its control connection when it had TLS."""
        outlet = self._ctx.proxy_outlet
        return b"" if outlet is None else outlet.header(self.client, self.frontend_address, tls)

    def _data_proxy_header(self) -> bytes:
        outlet = self._ctx.proxy_outlet
        if outlet is None or not outlet.on_data:
            return b""
        return self._proxy_header(tls_facts(self.transport))

    # ----------------------------------------------------------- data legs
    def _channel(self) -> DataChannel:
        if self._data is None:
            server_ip = self._server.host if self._server is not None else ""
            server_local_ip = ""
            link = self._link
            if link is not None and link.transport is not None:
                server_local_ip = kernel_host(link.transport.get_extra_info("sockname")[0])
            addresses = Addresses(self.client.host, self.local_ip, server_ip, server_local_ip)
            self._data = DataChannel(
                self._ctx.data,
                addresses,
                self._ctx.log,
                self._data_tls(),
                self._loop,
                session_id=self.session_id,
                proxy_header=self._data_proxy_header(),
            )
        return self._data

    def _data_tls(self) -> DataTls | None:
        ctx = self._ctx
        if ctx.client_tls is None and ctx.backend_tls is None:
            return None

        def server_session() -> ssl.SSLSession | None:
            # Read at each data connection: a TLS 1.3 ticket arrives after the handshake.
            link = self._link
            return session_of(link.transport if link is not None else None)

        # Read at each data connection too: AUTH TLS may come after the first PASV.
        return DataTls(self._client_data_tls, ctx.backend_tls, server_session, ctx.timeouts.data)

    def _client_data_tls(self) -> ClientDataTls | None:
        """The TLS of the client's data legs: this session's context, and the certificate
        and TLS session its control connection got."""
        tls = self._ctx.client_tls
        if tls is None:
            return None
        context = self._client_context or tls.context  # implicit: the listener's
        transport = self.transport
        control = transport.get_extra_info("ssl_object") if transport is not None else None
        chosen = control.context if isinstance(control, ssl.SSLObject) else None
        return ClientDataTls(context, tls.pinned(chosen), tls.reuse_required)

    def _open_client_listener(self) -> None:
        ctx, client_ip = self._ctx, self.client.host
        if not ctx.gate.open_passive(client_ip):
            ctx.log.warning(
                LogWarning.PASSIVE_PER_IP,
                session=self.session_id,
                frontend=ctx.name,
                client=client_ip,
                limit=ctx.gate.limits.max_passive_per_ip,
            )
            self._do(self.core.client_listener_refused())
            return
        advertised = ctx.passive_address or self.local_ip

        def stopped_waiting() -> None:
            ctx.gate.close_passive(client_ip)

        try:
            address = self._channel().open_client_listener(ctx.ports, advertised, stopped_waiting)
        except OSError as error:
            stopped_waiting()
            self._ctx.log.warning(
                LogWarning.PASSIVE_LISTENER_FAILED,
                session=self.session_id,
                frontend=self._ctx.name,
                reason=describe(error),
            )
            self._do(self.core.client_listener_failed(describe(error)))
            return
        self._ctx.log.notify("passive", frontend=self._ctx.name)
        self._do(self.core.client_listener_ready(address))

    def _open_server_listener(self) -> None:
        try:
            address = self._channel().open_server_listener()
        except OSError as error:
            self._do(self.core.server_listener_failed(describe(error)))
            return
        self._do(self.core.server_listener_ready(address))

    def _start_transfer(self, start: act.StartTransfer) -> None:
        self._transfer_started = time.monotonic()
        verb, path = self.core.transfer_command or ("-", None)
        running = RunningTransfer(
            key=self.session_id,
            frontend=self._ctx.name,
            client=self.client.host,
            server=self.server_name,
            user=_text(self.core.user),
            command=verb,
            path=_text(path),
        )
        self._running = running
        self._start = start
        self._ctx.running[self.session_id] = running
        pace = self._ctx.gate.pace(self.client.host, self.core.user, self._rate)
        self._channel().start(start, self._on_transfer_outcome, running.meter, pace)

    def _on_transfer_outcome(self, outcome: TransferOutcome) -> None:
        if self._closed:
            return
        self._last_client = self._last_server = self._loop.time()
        self._transfer_error = outcome.error
        self._transfer_detail = outcome.error_detail
        self._do(self.core.data_done(outcome.error))

    def _log_transfer(self, done: act.TransferDone) -> None:
        self._write_transfer(
            done.verb,
            done.path,
            (done.client_mode, done.server_mode),
            done.code,
            error=self._transfer_error,
            detail=self._transfer_detail,
        )

    def _write_transfer(
        self,
        verb: str,
        path: bytes | None,
        modes: tuple[str, str],
        result: int | str,
        *,
        error: str | None,
        detail: str,
    ) -> None:
        running, self._running, self._start = self._running, None, None
        to_client = to_server = 0
        if running is not None:
            # Out of the running set before the line: the metrics count the
            # line's bytes minus what they already counted while it ran.
            self._ctx.running.pop(running.key, None)
            to_client, to_server = running.to_client, running.to_server
        details = {"error_detail": detail} if detail else {}
        self._ctx.log.transfer(
            session=self.session_id,
            frontend=self._ctx.name,
            client=self.client.host,
            server=self.server_name,
            user=_text(self.core.user),
            command=verb,
            path=_text(path),
            bytes_to_client=to_client,
            bytes_to_server=to_server,
            duration=round(time.monotonic() - self._transfer_started, 3),
            client_mode=modes[0],
            server_mode=modes[1],
            result=result,
            error=error or "-",
            **details,
        )
        self._transfer_error = None
        self._transfer_detail = ""

    def _log_cut_short(self, reason: EndReason) -> None:
        """The session ends while a transfer runs: its line, with the bytes it moved."""
        running, start = self._running, self._start
        if running is None or start is None:
            return
        verb, path = self.core.transfer_command or (running.command, None)
        self._write_transfer(
            verb,
            path,
            (start.client.mode, start.server.mode),
            "-",
            error=TransferError.SESSION_ENDED,
            detail=cut_short_detail(reason.value, self._transfer_error),
        )

    # ---------------------------------------------------------------- timers
    def _arm_timer(self) -> None:
        t = self._ctx.timeouts
        delay = max(0.05, min(t.client, t.server) / 4)
        self._timer = self._loop.call_later(delay, self._check_timers)

    def _check_timers(self) -> None:
        if self._closed:
            return
        now = self._loop.time()
        t = self._ctx.timeouts
        core = self.core
        if core.idle and not core.transfer_running and now - self._last_client >= t.client:
            self._do(core.timed_out("client"))
        elif core.awaiting_server and now - self._last_server >= t.server:
            self._do(core.timed_out("server"))
        if not self._closed:
            self._arm_timer()

    # ----------------------------------------------------------------- close
    def _close(self, reason: EndReason, detail: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        ctx = self._ctx
        ctx.sessions.discard(self)
        ctx.overall.active -= 1
        if self._counted:
            ctx.gate.session_ended(self.client.host)
        if self._timer is not None:
            self._timer.cancel()
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        if self._tls_task is not None and not self._tls_task.done():
            self._tls_task.cancel()
        if self._data is not None:
            self._data.close()
            self._data = None
        if self.transport is not None:
            self.transport.close()
        if self._link is not None and self._link.transport is not None:
            self._link.transport.close()
        if self._server is not None:
            ctx.pool.release(self._server)
        self._log_cut_short(reason)
        ctx.log.session(
            session=self.session_id,
            frontend=ctx.name,
            client=f"{self.client.host}:{self.client.port}",
            server=self.server_name,
            user=_text(self.core.user),
            login=self.core.login_status,
            login_failures=self.core.login_failures,
            duration=round(time.monotonic() - self._started, 3),
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            end=reason,
            detail=detail,
        )

    def stop_gracefully(self) -> None:
        """The balancer stops: end the session at its next turn (what runs finishes)."""
        if not self._closed:
            self._do(self.core.stop_gracefully())

    def stop_now(self) -> None:
        """The graceful stop is over: end the session, and a running transfer with 426."""
        if not self._closed:
            self._do(self.core.stop_now())


_REFUSALS = {
    EndReason.LIMIT: format_reply(421, "Too many connections, try again later."),
    EndReason.SESSIONS_PER_IP: format_reply(421, "Too many connections from your address."),
    EndReason.SESSION_RATE: format_reply(
        421, "Too many new connections from your address, try again later."
    ),
    EndReason.BANNED: format_reply(
        421, "Too many failed logins from your address, try again later."
    ),
    EndReason.DENIED: format_reply(421, "Access denied."),
}
"""ftplb's 421 to a client it turns away at connect, by the limit that refused it."""


def _dialogue_settings(tls: BackendTls | None) -> DialogueSettings:
    """A session's setup: with TLS to the server, its data legs are protected too
    (PBSZ 0, PROT P); the client's own USER is replayed later, by the session."""
    if tls is None:
        return DialogueSettings()
    return DialogueSettings(tls=tls.mode, protect_data=True)


def _text(value: bytes | None) -> str:
    return "-" if value is None else value.decode("utf-8", "backslashreplace")
