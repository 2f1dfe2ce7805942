"""One generation of a running balancer: pools, health checks and listeners from one config.

A reload starts a new generation beside the running one (:mod:`ftplb.generations`):
it takes over the listening sockets, the pools' runtime state and the passive
port pools of its predecessor, which then stops accepting and lets its own
sessions end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from ftplb.admin.overrides_store import OverridesStore, watch_overrides
from ftplb.balancing.carry import carry_servers, carry_stickiness
from ftplb.balancing.overrides import Override, ServerKey, apply_overrides
from ftplb.balancing.pool import Pool
from ftplb.balancing.state import Server
from ftplb.config.backends import Backend
from ftplb.config.fields import Endpoint
from ftplb.config.frontends import Frontend
from ftplb.config.limits import resolve_limits
from ftplb.config.schema import Config
from ftplb.proto.control import SessionPolicy
from ftplb.runtime.client_limits import ClientGate
from ftplb.runtime.data import DataSettings
from ftplb.runtime.defender import Defender, DefenderStore, MemoryStore
from ftplb.runtime.failover import FailoverPolicy
from ftplb.runtime.health import HealthChecker
from ftplb.runtime.listeners import KeptListeners, ListenError, resolve_host
from ftplb.runtime.logs import EventLog, LogWarning
from ftplb.runtime.passive_ports import PassivePorts
from ftplb.runtime.passthrough import PassthroughFrontend, PassthroughSettings
from ftplb.runtime.pipes import PipeBudget
from ftplb.runtime.proxied_tls import ProxiedTlsListener
from ftplb.runtime.proxy_protocol import ProxyIntake, ProxyOutlet
from ftplb.runtime.session import FrontendContext, Session, SessionLimit, Timeouts
from ftplb.runtime.tls import TlsSetupError, backend_tls, frontend_tls

__all__ = ["Balancer", "StartupError"]


class StartupError(Exception):
    """The balancer cannot start (a bind failed, say); the message says why."""


CONTROL_BACKLOG = 1024


class Balancer:
    """A running balancer for one configuration: one generation.

    ``listeners`` keeps the listening sockets across generations (a lone
    balancer gets its own). ``previous`` is the generation this one replaces
    on a reload: its pools' runtime state and passive port pools carry over.
    ``defender_store`` holds the login defender's failures and bans for the
    whole process (a file shared with the other workers): every generation
    reads and adds to the same one.
    """

    def __init__(
        self,
        config: Config,
        log: EventLog | None = None,
        *,
        listeners: KeptListeners | None = None,
        previous: Balancer | None = None,
        generation: int = 1,
        defender_store: DefenderStore | None = None,
    ) -> None:
        self.config = config
        self.log = log or EventLog(config.defaults.log_format)
        self.generation = generation
        self.listeners = listeners or KeptListeners()
        self._owns_listeners = listeners is None
        self._previous = previous
        self.listening_addresses: list[tuple[str, int]] = []
        """Every (host, port) this generation listens on, through ``listeners``."""
        self.pools: dict[str, Pool] = {}
        self.checkers: dict[str, HealthChecker] = {}
        self.frontends: list[FrontendContext] = []
        self.passthroughs: list[PassthroughFrontend] = []
        self._servers: list[_Serving] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._budget = PipeBudget()
        self._overall = SessionLimit(config.defaults.max_connections)
        self.defender: Defender | None = None
        """The login defender of this generation, over the process's store; None without one."""
        if config.defender is not None:
            self.defender = Defender(
                config.defender.policy(), defender_store or MemoryStore(), self.log
            )

    # --------------------------------------------------------------- build
    def _pool(self, backend: Backend) -> Pool:
        configured = [
            Server(
                name=s.name,
                host=resolve_host(s.address.host),
                port=s.address.port,
                weight=s.weight,
                max_connections=s.max_connections,
            )
            for s in backend.servers
        ]
        previous = self._previous.pools.get(backend.name) if self._previous else None
        pool = Pool(
            backend.name,
            carry_servers(previous, configured),
            balance=backend.balance,
            sticky=backend.sticky,
            sticky_timeout=backend.sticky_timeout,
            user_map=backend.user_map,
        )
        carry_stickiness(previous, pool, backend.sticky_timeout)
        return pool

    def _checker(self, backend: Backend, pool: Pool) -> HealthChecker:
        health = backend.health
        try:
            tls = backend_tls(backend)
        except TlsSetupError as error:
            where = f"backends[{self.config.backends.index(backend)}]"
            raise StartupError(f"{where}.{error}") from error
        return HealthChecker(
            pool,
            health.type,
            health.interval,
            health.rise,
            health.fall,
            health.timeout,
            user=health.user,
            password=health.password,
            tls=tls,
            log=self.log,
            proxy=ProxyOutlet.of(backend.send_proxy, backend.send_proxy_data),
        )

    def _frontend(self, frontend: Frontend) -> FrontendContext:
        defaults = self.config.defaults
        backend = self.config.backend(frontend.backend)
        pool = self.pools[backend.name]
        # A certificate or key that OpenSSL refuses stops the start, naming the key.
        try:
            where = f"frontends[{self.config.frontends.index(frontend)}]"
            client_tls = frontend_tls(frontend)
            where = f"backends[{self.config.backends.index(backend)}]"
            server_tls = backend_tls(backend)
        except TlsSetupError as error:
            raise StartupError(f"{where}.{error}") from error
        outlet = ProxyOutlet.of(backend.send_proxy, backend.send_proxy_data)
        if client_tls is not None and outlet is not None:
            client_tls.remember_server_names()  # for the SNI of a version 2 header
        intake = (
            ProxyIntake.of(frontend.proxy_trusted, defaults.timeout_client)
            if frontend.accept_proxy
            else None
        )
        ports = self._port_pool(frontend, intake)
        policy = SessionPolicy(
            server_data_mode=backend.data_mode,
            route_on_user=pool.needs_user,
            banner=frontend.banner,
            max_line_length=defaults.max_line_length,
            log_commands=defaults.log_commands,
            client_tls=frontend.tls,
            tls_required=frontend.tls_required,
            server_tls=server_tls is not None,
        )
        timeouts = Timeouts(
            connect=defaults.timeout_connect,
            client=defaults.timeout_client,
            server=defaults.timeout_server,
            data=defaults.timeout_data,
        )
        return FrontendContext(
            name=frontend.name,
            pool=pool,
            policy=policy,
            ports=ports,
            passive_address=frontend.passive_address,
            timeouts=timeouts,
            failover=FailoverPolicy(defaults.retries, defaults.redispatch),
            max_connections=frontend.max_connections,
            source_ip=backend.source,
            overall=self._overall,
            gate=self._client_gate(frontend),
            log=self.log,
            data=DataSettings(
                timeout_data=defaults.timeout_data,
                idle_timeout=max(defaults.timeout_client, defaults.timeout_server),
                budget=self._budget,
            ),
            client_tls=client_tls,
            backend_tls=server_tls,
            proxy_intake=intake,
            proxy_outlet=outlet,
            defender=self.defender,
        )

    def _client_gate(self, frontend: Frontend) -> ClientGate:
        # With the same limits, the old generation's gate goes on: its sessions
        # still count against their addresses until they end.
        limits = resolve_limits(frontend, self.config.defaults)
        if self._previous is not None:
            for ctx in self._previous.frontends:
                if ctx.name == frontend.name and ctx.gate.limits == limits:
                    return ctx.gate
        return ClientGate(limits)

    def _port_pool(self, frontend: Frontend, intake: ProxyIntake | None) -> PassivePorts:
        first, last = (
            (frontend.passive_ports.first, frontend.passive_ports.last)
            if frontend.passive_ports is not None
            else (None, None)
        )
        # The same ports go on across a reload: their listeners stay open, and
        # the old generation's sessions still get the connections they wait for.
        if self._previous is not None:
            for ctx in self._previous.frontends:
                if ctx.name == frontend.name and ctx.ports.range == (first, last):
                    ctx.ports.set_intake(intake)
                    ctx.ports.adopt()
                    return ctx.ports
        ports = PassivePorts(first, last, self.log, frontend.name, intake)
        ports.adopt()
        return ports

    def _keep_listening(
        self, host: str, port: int, backlog: int, *, steered: bool = True
    ) -> socket.socket:
        """A listening socket that outlives this generation (ListenError if it cannot)."""
        sock = self.listeners.open(host, port, backlog, steered=steered)
        self.listening_addresses.append((host, port))
        return sock

    def _open_listener(self, endpoint: Endpoint, *, steered: bool) -> socket.socket:
        try:
            return self._keep_listening(
                resolve_host(endpoint.host), endpoint.port, CONTROL_BACKLOG, steered=steered
            )
        except ListenError as error:
            raise StartupError(str(error)) from error

    # ----------------------------------------------------------------- run
    async def start(self) -> None:
        for backend in self.config.backends:
            pool = self._pool(backend)
            self.pools[backend.name] = pool
            checker = self._checker(backend, pool)
            self.checkers[backend.name] = checker
            self._spawn(checker.run())
        loop = asyncio.get_running_loop()
        sockets: list[tuple[FrontendContext, socket.socket]] = []
        try:
            for frontend in self.config.frontends:
                if frontend.mode == "tcp":
                    self._open_passthrough(frontend)
                    continue
                ctx = self._frontend(frontend)
                self.frontends.append(ctx)
                # Behind an upstream, every connection comes from its address:
                # steering by source would give them all to one worker.
                steered = not frontend.accept_proxy
                sockets += [
                    (ctx, self._open_listener(bind, steered=steered)) for bind in frontend.bind
                ]
        except BaseException:
            for _, sock in sockets:
                sock.close()
            await self.stop()
            raise
        for ctx, sock in sockets:
            # Implicit FTPS: the listener handshakes before a session (and its 220) starts.
            implicit = ctx.policy.client_tls == "implicit"
            tls = ctx.client_tls.context if implicit and ctx.client_tls else None
            server: _Serving
            if tls is not None and ctx.proxy_intake is not None:
                # Behind an upstream, its PROXY header comes before the handshake.
                server = ProxiedTlsListener(ctx, sock, ctx.proxy_intake, tls, _session_factory(ctx))
            else:
                server = await loop.create_server(
                    _session_factory(ctx),
                    sock=sock,
                    ssl=tls,
                    ssl_handshake_timeout=ctx.timeouts.data if implicit else None,
                )
            self._servers.append(server)
            if self._previous is None:
                address = sock.getsockname()
                self.log.info("listening", frontend=ctx.name, address=f"{address[0]}:{address[1]}")
        for passthrough in self.passthroughs:
            passthrough.start()

    def _open_passthrough(self, frontend: Frontend) -> None:
        backend = self.config.backend(frontend.backend)
        settings = PassthroughSettings.from_config(frontend, backend, self.config.defaults)
        passthrough = PassthroughFrontend(
            settings,
            self.pools[backend.name],
            overall=self._overall,
            log=self.log,
            budget=self._budget,
            listen=self._keep_listening,
            defender=self.defender,
        )
        if self._previous is not None:
            for old in self._previous.passthroughs:
                if old.name == passthrough.name:
                    passthrough.take_over(old)
        self.passthroughs.append(passthrough)
        try:
            passthrough.open()
        except ListenError as error:
            raise StartupError(str(error)) from error

    def follow_overrides(self, store: OverridesStore) -> None:
        """Keep the pools' admin states and weights as the shared record says, from now on."""

        def apply(overrides: Mapping[ServerKey, Override]) -> None:
            apply_overrides(self.pools, overrides)

        def unreadable(reason: str) -> None:
            self.log.warning(LogWarning.OVERRIDES_UNREADABLE, reason=reason)

        self._spawn(watch_overrides(store, apply, unreadable))

    def stop_accepting(self, successor: Balancer | None = None) -> None:
        """Take no new session from now on, and stop the health checks and the
        record watch (a next generation has its own); running sessions go on.

        A tcp-mode frontend that ``successor`` took over leaves all its ports
        to it; one without a successor keeps its passive ports for its own
        sessions until they end.
        """
        for server in self._servers:
            server.close()
        successors = {p.name for p in successor.passthroughs} if successor else set()
        for passthrough in self.passthroughs:
            if passthrough.name in successors:
                passthrough.hand_over()
            else:
                passthrough.stop_accepting()
        for checker in self.checkers.values():
            checker.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._owns_listeners:
            self.listeners.close()
        self._previous = None  # the old generation may now be collected

    async def stop(self, grace: float = 0.0, hurry: asyncio.Event | None = None) -> None:
        """Stop accepting at once; give running sessions up to ``grace`` seconds (or until
        ``hurry`` is set) to finish, then end what is left."""
        self.stop_accepting()
        if grace > 0:
            await self._drain(grace, hurry or asyncio.Event())
        await self._end_the_rest()

    async def retire(self, grace: float, hurry: asyncio.Event, successor: Balancer) -> None:
        """After a reload to ``successor``: let the sessions of this generation end
        on their own, within ``grace`` seconds (or until ``hurry``), then end what is left."""
        self.stop_accepting(successor)
        await self._wait_for_sessions(grace, hurry)
        await self._end_the_rest()

    async def _end_the_rest(self) -> None:
        for ctx in self.frontends:
            for session in list(ctx.sessions):
                session.stop_now()
        for task in list(self._tasks):
            task.cancel()
        for passthrough in self.passthroughs:
            await passthrough.stop()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        for ctx in self.frontends:
            ctx.ports.leave()  # the last generation to use them closes them

    def ask_sessions_to_stop(self) -> None:
        """Idle sessions end with 421 now; the others after their running command."""
        sessions = [session for ctx in self.frontends for session in list(ctx.sessions)]
        for session in sessions:
            session.stop_gracefully()

    async def _drain(self, grace: float, hurry: asyncio.Event) -> None:
        self.ask_sessions_to_stop()
        if not self.sessions_left():
            return
        self.log.info("draining", sessions=self.sessions_left(), timeout=grace)
        await self._wait_for_sessions(grace, hurry)

    async def _wait_for_sessions(self, grace: float, hurry: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # A bounded poll: sessions end on their own events, and this only
        # watches the count, so no session needs to know that a stop waits.
        while self.sessions_left() and not hurry.is_set():
            left = deadline - loop.time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hurry.wait(), min(0.1, left))

    def sessions_left(self) -> int:
        """Sessions still open; in ``mode = "tcp"``, also data relays still running
        (one may outlive its control connection)."""
        ftp = sum(len(ctx.sessions) for ctx in self.frontends)
        return ftp + sum(len(p.sessions) + p.transfers for p in self.passthroughs)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Serving(Protocol):
    """What serves a frontend's listening socket: an asyncio.Server, or a ProxiedTlsListener."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


def _session_factory(ctx: FrontendContext) -> Callable[[], Session]:
    return lambda: Session(ctx)
