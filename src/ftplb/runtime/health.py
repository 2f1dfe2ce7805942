"""Health checking of one pool: a probe loop per server, feeding rise/fall machines.

Every server is checked on its own loop, so a server that makes its probe
wait for the full timeout never delays the checks of the others. A server's
``healthy`` flag only changes when its rise/fall machine flips, and each flip
is written to the EventLog as one ``health`` line and reported through ``on_change``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ftplb.balancing.pool import Pool
from ftplb.balancing.state import AdminState, Server
from ftplb.health.state import HealthState
from ftplb.runtime.logs import EventLog, LogWarning
from ftplb.runtime.probes import PROBE_KINDS, ProbeResult, probe
from ftplb.runtime.proxy_protocol import ProxyOutlet
from ftplb.runtime.tls import BackendTls

CHECK_KINDS = ("none", *PROBE_KINDS)

ChangeCallback = Callable[[Server, bool, ProbeResult], None]


class HealthChecker:
    """Checks every server of ``pool`` every ``interval`` seconds."""

    def __init__(  # noqa: PLR0917 - positional order is part of the published API
        self,
        pool: Pool,
        kind: str,
        interval: float,
        rise: int,
        fall: int,
        timeout: float,
        user: str | None = None,
        password: str | None = None,
        on_change: ChangeCallback | None = None,
        *,
        tls: BackendTls | None = None,
        log: EventLog | None = None,
        proxy: ProxyOutlet | None = None,
    ) -> None:
        if kind not in CHECK_KINDS:
            raise ValueError(f"unknown health check {kind!r}; expected one of {CHECK_KINDS}")
        if interval <= 0 or timeout <= 0:
            raise ValueError("health check interval and timeout must be positive")
        self.pool = pool
        self.kind = kind
        self.interval = interval
        self.timeout = timeout
        self._user = user
        self._password = password
        self._on_change = on_change
        self._tls = tls
        self._proxy = proxy
        self._log = log or EventLog()
        # Each machine starts from the server's current flag: servers start
        # healthy, and a checker rebuilt on reload must not resurrect a DOWN one.
        self._health = {
            server.name: HealthState(rise, fall, up=server.healthy) for server in pool.servers
        }
        self._results: dict[str, ProbeResult] = {}
        self._stopping = asyncio.Event()
        # Strong references: the event loop only keeps weak ones to tasks.
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        """Check until ``stop()``; returns at once for kind "none"."""
        if self.kind == "none" or self._stopping.is_set():
            return
        self._tasks = [
            asyncio.create_task(self._check_forever(server), name=f"health:{server.name}")
            for server in self.pool.servers
        ]
        try:
            # A loop that was cancelled by stop() counts as finished.
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            for task in self._tasks:
                task.cancel()

    def stop(self) -> None:
        """End the checks, including probes that are in flight."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()

    def result(self, server_name: str) -> ProbeResult | None:
        """The last probe result for ``server_name``, None before its first check."""
        return self._results.get(server_name)

    def health(self, server_name: str) -> HealthState:
        """The rise/fall machine of ``server_name``; KeyError if unknown."""
        return self._health[server_name]

    async def _check_forever(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            if server.admin is AdminState.MAINT:
                # An operator took the server out, often to work on it: no probe
                # may touch it. Its last verdict stands until it comes back.
                await self._pause(self.interval)
                continue
            result = await probe(
                self.kind,
                server.host,
                server.port,
                self.timeout,
                user=self._user,
                password=self._password,
                tls=self._tls,
                proxy=self._proxy,
            )
            self._record(server, result)
            # Pace from the start of the check, so the interval is the period
            # between checks whatever each probe took.
            await self._pause(max(0.0, started + self.interval - loop.time()))

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less when the checks stop meanwhile."""
        try:
            async with asyncio.timeout(delay):
                await self._stopping.wait()
        except TimeoutError:
            pass

    def _record(self, server: Server, result: ProbeResult) -> None:
        self._results[server.name] = result
        health = self._health[server.name]
        if not health.record(result.ok, result.detail):
            return
        server.healthy = health.up
        self._log.write(
            "health",
            backend=self.pool.name,
            server=server.name,
            state="UP" if health.up else "DOWN",
            check=self.kind,
            layer=result.layer,
            detail=result.detail,
            duration=round(result.duration, 3),
        )
        if self._on_change is not None:
            try:
                self._on_change(server, health.up, result)
            except Exception as error:
                # A faulty listener must not stop the checks of this server.
                self._log.warning(
                    LogWarning.HEALTH_CALLBACK_FAILED,
                    backend=self.pool.name,
                    server=server.name,
                    reason=f"{type(error).__name__}: {error}",
                )
