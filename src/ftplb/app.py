"""Lifecycle: build pools, health checks and listeners from a config; run; stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from ftplb.admin.overrides_store import OverridesStore, watch_overrides
from ftplb.admin.server import AdminError
from ftplb.balancing.overrides import Override, ServerKey, apply_overrides
from ftplb.balancing.pool import Pool
from ftplb.balancing.state import Server
from ftplb.config.backends import Backend
from ftplb.config.fields import Endpoint
from ftplb.config.frontends import Frontend
from ftplb.config.schema import Config
from ftplb.config.workers import WorkerSlot, worker_share
from ftplb.monitoring import Monitoring
from ftplb.proto.control import SessionPolicy
from ftplb.runtime.data import DataSettings
from ftplb.runtime.failover import FailoverPolicy
from ftplb.runtime.health import HealthChecker
from ftplb.runtime.listeners import (
    ListenError,
    listening_socket,
    resolve_host,
    share_listeners,
)
from ftplb.runtime.logs import EventLog, LogWarning, capture_library_logs
from ftplb.runtime.metrics import SessionCounted
from ftplb.runtime.passthrough import PassthroughFrontend, PassthroughSettings
from ftplb.runtime.pipes import PipeBudget
from ftplb.runtime.ports import PortPool
from ftplb.runtime.session import FrontendContext, Session, SessionLimit, Timeouts
from ftplb.runtime.tls import TlsSetupError, backend_tls, frontend_tls


class StartupError(Exception):
    """The balancer cannot start (a bind failed, say); the message says why."""


def _listening_socket(endpoint: Endpoint) -> socket.socket:
    try:
        return listening_socket(resolve_host(endpoint.host), endpoint.port, 1024)
    except ListenError as error:
        raise StartupError(str(error)) from error


class Balancer:
    """A running balancer for one configuration."""

    def __init__(self, config: Config, log: EventLog | None = None) -> None:
        self.config = config
        self.log = log or EventLog(config.defaults.log_format)
        self.pools: dict[str, Pool] = {}
        self.checkers: dict[str, HealthChecker] = {}
        self.frontends: list[FrontendContext] = []
        self.passthroughs: list[PassthroughFrontend] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._budget = PipeBudget()
        self._overall = SessionLimit(config.defaults.max_connections)

    # --------------------------------------------------------------- build
    def _pool(self, backend: Backend) -> Pool:
        servers = [
            Server(
                name=s.name,
                host=resolve_host(s.address.host),
                port=s.address.port,
                weight=s.weight,
                max_connections=s.max_connections,
            )
            for s in backend.servers
        ]
        return Pool(
            backend.name,
            servers,
            balance=backend.balance,
            sticky=backend.sticky,
            sticky_timeout=backend.sticky_timeout,
            user_map=backend.user_map,
        )

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
        ports = (
            PortPool(frontend.passive_ports.first, frontend.passive_ports.last)
            if frontend.passive_ports is not None
            else PortPool()
        )
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
            log=self.log,
            data=DataSettings(
                timeout_data=defaults.timeout_data,
                idle_timeout=max(defaults.timeout_client, defaults.timeout_server),
                budget=self._budget,
            ),
            client_tls=client_tls,
            backend_tls=server_tls,
        )

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
                sockets += [(ctx, _listening_socket(bind)) for bind in frontend.bind]
        except BaseException:
            for _, sock in sockets:
                sock.close()
            await self.stop()
            raise
        for ctx, sock in sockets:
            # Implicit FTPS: the listener handshakes before a session (and its 220) starts.
            implicit = ctx.policy.client_tls == "implicit"
            server = await loop.create_server(
                _session_factory(ctx),
                sock=sock,
                ssl=ctx.client_tls if implicit else None,
                ssl_handshake_timeout=ctx.timeouts.data if implicit else None,
            )
            self._servers.append(server)
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
        )
        self.passthroughs.append(passthrough)
        try:
            passthrough.open()
        except ListenError as error:
            raise StartupError(str(error)) from error

    async def stop(self, grace: float = 0.0, hurry: asyncio.Event | None = None) -> None:
        """Stop accepting at once; give running sessions up to ``grace`` seconds (or until
        ``hurry`` is set) to finish, then end what is left."""
        for server in self._servers:
            server.close()
        for passthrough in self.passthroughs:
            passthrough.stop_accepting()
        if grace > 0:
            await self._drain(grace, hurry or asyncio.Event())
        for checker in self.checkers.values():
            checker.stop()
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

    async def _drain(self, grace: float, hurry: asyncio.Event) -> None:
        sessions = [session for ctx in self.frontends for session in list(ctx.sessions)]
        for session in sessions:
            session.stop_gracefully()
        if not self._sessions_left():
            return
        self.log.info("draining", sessions=self._sessions_left(), timeout=grace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # A bounded poll: sessions end on their own events, and this only
        # watches the count, so no session needs to know that a stop waits.
        while self._sessions_left() and not hurry.is_set():
            left = deadline - loop.time()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hurry.wait(), min(0.1, left))

    def follow_overrides(self, store: OverridesStore) -> None:
        """Keep the pools' admin states and weights as the shared record says, from now on."""

        def apply(overrides: Mapping[ServerKey, Override]) -> None:
            apply_overrides(self.pools, overrides)

        def unreadable(reason: str) -> None:
            self.log.warning(LogWarning.OVERRIDES_UNREADABLE, reason=reason)

        self._spawn(watch_overrides(store, apply, unreadable))

    def _sessions_left(self) -> int:
        """Sessions still open; in ``mode = "tcp"``, also data relays still running
        (one may outlive its control connection)."""
        ftp = sum(len(ctx.sessions) for ctx in self.frontends)
        return ftp + sum(len(p.sessions) + p.transfers for p in self.passthroughs)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _session_factory(ctx: FrontendContext) -> Callable[[], Session]:
    return lambda: Session(ctx)


async def serve(
    config: Config,
    stop: asyncio.Event | None = None,
    *,
    worker: WorkerSlot | None = None,
    on_ready: Callable[[], None] | None = None,
    metrics_dir: str | None = None,
) -> None:
    """Run until SIGTERM or SIGINT (or until ``stop`` is set).

    As ``worker`` of several worker processes, serve that worker's share of
    ``config`` (its passive port slices and limit shares), on frontend
    listeners shared with the other workers, with ``worker=<i>`` on every log
    line. ``on_ready`` is called once every listener is open. ``metrics_dir``
    is the master's directory for this worker's metric files; a lone process
    with an ``[admin]`` section records into one of its own and serves it.
    """
    stop = stop or asyncio.Event()
    hurry = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        # The first SIGTERM or SIGINT stops gracefully; a second one stops at once.
        (hurry if stop.is_set() else stop).set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal)
    log: EventLog | None = None
    if worker is not None and worker.count > 1:
        config, log = _become_worker(config, worker)
    balancer = Balancer(config, log)
    release_library_logs = capture_library_logs(balancer.log)
    try:
        await _run(balancer, stop, hurry, metrics_dir, on_ready)
    finally:
        release_library_logs()


async def _run(
    balancer: Balancer,
    stop: asyncio.Event,
    hurry: asyncio.Event,
    metrics_dir: str | None,
    on_ready: Callable[[], None] | None,
) -> None:
    config = balancer.config
    monitoring = Monitoring.for_process(config, metrics_dir)
    await balancer.start()
    try:
        if monitoring is not None:
            frontends: list[SessionCounted] = [*balancer.frontends, *balancer.passthroughs]
            monitoring.record(balancer.log, balancer.pools, config, balancer.checkers, frontends)
            balancer.follow_overrides(OverridesStore(monitoring.directory))
            if metrics_dir is None:  # a lone process hosts its own admin listener
                await monitoring.serve_admin(config)
        if on_ready is not None:
            on_ready()
        await stop.wait()
    except AdminError as error:
        raise StartupError(str(error)) from error
    finally:
        balancer.log.info("stopping")
        await balancer.stop(config.defaults.timeout_shutdown, hurry)
        if monitoring is not None:
            await monitoring.close()


def _become_worker(config: Config, worker: WorkerSlot) -> tuple[Config, EventLog]:
    """Make this process ``worker``: its share of ``config``, its log, shared listeners."""
    log = EventLog(config.defaults.log_format, fixed={"worker": worker.index})

    def unsteered(reason: str) -> None:
        log.warning(LogWarning.UNSTEERED, reason=reason)

    share_listeners(worker.count, unsteered)
    share = worker_share(config, worker)
    for frontend in share.frontends:
        if frontend.passive_ports is not None:
            log.info(
                "passive port slice", frontend=frontend.name, ports=str(frontend.passive_ports)
            )
    return share, log


def run_event_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop  # noqa: PLC0415 - an optional accelerator
    except ImportError:
        asyncio.run(main())
        return
    uvloop.run(main())
