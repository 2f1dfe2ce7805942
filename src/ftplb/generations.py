"""Reload and stop across generations of one balancer process.

A reload builds a new :class:`~ftplb.balancer.Balancer` from the new
configuration on the same listening sockets, lets it take over from the
running one, and retires the old one: it stops accepting, and its sessions
finish on their servers with their old settings, within ``timeout_shutdown``.
Only then are they cut. A new generation that cannot start (a new bind that
is taken, a certificate that OpenSSL refuses) is dropped, and the running one
stays in force.

A stop ends every generation at once: listeners close, idle sessions get 421,
and running transfers get ``timeout_shutdown`` to finish.
"""

from __future__ import annotations

import asyncio

from ftplb.admin.overrides_store import OverridesStore
from ftplb.balancer import Balancer, StartupError
from ftplb.balancing.carry import restore, save_settings
from ftplb.config.changes import server_changes
from ftplb.config.schema import Config
from ftplb.monitoring import Monitoring
from ftplb.runtime.defender import DefenderStore, MemoryStore
from ftplb.runtime.listeners import KeptListeners
from ftplb.runtime.logs import EventLog, LogWarning
from ftplb.runtime.metrics import SessionCounted

__all__ = ["Generations"]


class Generations:
    """The running generation of this process, and the retiring ones."""

    def __init__(
        self,
        log: EventLog,
        monitoring: Monitoring | None = None,
        defender_store: DefenderStore | None = None,
    ) -> None:
        self.log = log
        self.monitoring = monitoring
        self.defender_store = defender_store or MemoryStore()
        """The login defender's record: one for every generation, so bans survive a reload."""
        self.listeners = KeptListeners()
        self.current: Balancer | None = None
        self._retiring: dict[Balancer, asyncio.Task[None]] = {}
        self._hurry = asyncio.Event()
        self._lock = asyncio.Lock()

    async def start(self, config: Config) -> Balancer:
        """Start the first generation; StartupError if it cannot."""
        balancer = Balancer(
            config, self.log, listeners=self.listeners, defender_store=self.defender_store
        )
        try:
            await balancer.start()
        except BaseException:
            self.listeners.close()
            raise
        self.current = balancer
        self._watch(balancer)
        return balancer

    async def reload(self, config: Config, generation: int | None = None) -> bool:
        """Replace the running generation by one of ``config``; False if it cannot start.

        ``generation`` numbers the new one (a worker takes its master's number);
        by default the next number.
        """
        async with self._lock:
            old = self.current
            assert old is not None, "reload before start"
            number = generation if generation is not None else old.generation + 1
            balancer = Balancer(
                config,
                self.log,
                listeners=self.listeners,
                previous=old,
                generation=number,
                defender_store=self.defender_store,
            )
            saved = save_settings(old.pools.values())
            try:
                await balancer.start()
            except StartupError as error:
                await balancer.stop()
                restore(saved)
                self.log.warning(LogWarning.RELOAD_FAILED, generation=number, reason=str(error))
                return False
            self.current = balancer
            self.listeners.keep_only(balancer.listening_addresses)
            self._retire(old, config.defaults.timeout_shutdown, balancer)
            self._watch(balancer)
            changes = server_changes(old.config, config)
            self.log.info(
                "reloaded",
                generation=number,
                added=",".join(changes.added),
                removed=",".join(changes.removed),
                changed=",".join(changes.changed),
                retiring_sessions=old.sessions_left(),
            )
            return True

    async def stop(self, grace: float, hurry: asyncio.Event) -> None:
        """Stop accepting at once; let every generation's sessions finish within ``grace``."""
        async with self._lock:
            current, self.current = self.current, None
            self.listeners.close()
            if hurry.is_set():
                self._hurry.set()
            hurry_task = asyncio.ensure_future(self._pass_on(hurry))
            try:
                for balancer in self._retiring:
                    balancer.ask_sessions_to_stop()
                stopping = [*self._retiring.values()]
                if current is not None:
                    stopping.append(asyncio.ensure_future(current.stop(grace, self._hurry)))
                await asyncio.gather(*stopping, return_exceptions=True)
            finally:
                hurry_task.cancel()

    async def _pass_on(self, hurry: asyncio.Event) -> None:
        await hurry.wait()
        self._hurry.set()

    # ------------------------------------------------------------ internals
    def _retire(self, balancer: Balancer, grace: float, successor: Balancer) -> None:
        task = asyncio.ensure_future(balancer.retire(grace, self._hurry, successor))
        self._retiring[balancer] = task

        def retired(_: asyncio.Task[None]) -> None:
            self._retiring.pop(balancer, None)
            self._observe()

        task.add_done_callback(retired)

    def _watch(self, balancer: Balancer) -> None:
        """Hook monitoring to the running generation: metrics, admin names, the record."""
        monitoring = self.monitoring
        if monitoring is None:
            return
        balancer.follow_overrides(OverridesStore(monitoring.directory))
        if monitoring.admin is not None:
            monitoring.admin.update_config(balancer.config, balancer.generation)
        self._observe()

    def _observe(self) -> None:
        monitoring = self.monitoring
        current = self.current
        if monitoring is None or monitoring.recorder is None or current is None:
            return
        frontends: list[SessionCounted] = []
        for balancer in (current, *self._retiring):
            frontends += [*balancer.frontends, *balancer.passthroughs]
        monitoring.recorder.attach(
            self.log,
            current.pools,
            current.config,
            checkers=current.checkers,
            frontends=frontends,
        )
