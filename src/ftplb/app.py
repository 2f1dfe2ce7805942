"""Running one balancer process: start, reload on SIGHUP, stop on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from ftplb.admin.server import AdminError
from ftplb.balancer import Balancer, StartupError
from ftplb.config.changes import keep_restart_only
from ftplb.config.load import ConfigError
from ftplb.config.schema import Config
from ftplb.config.workers import WorkerSlot, worker_share
from ftplb.generations import Generations
from ftplb.monitoring import Monitoring
from ftplb.runtime.defender import DefenderStore, FileStore, MemoryStore
from ftplb.runtime.interpreter import tune_for_serving
from ftplb.runtime.listeners import share_listeners
from ftplb.runtime.logs import EventLog, LogWarning, capture_library_logs, event_log
from ftplb.runtime.metrics import SessionCounted
from ftplb.runtime.notify import Notifier
from ftplb.runtime.open_files import raise_open_files_limit
from ftplb.runtime.privileges import (
    Identity,
    PrivilegeError,
    drop_privileges,
    hand_over,
    privileged_binds_added,
    target_identity,
)

__all__ = ["Balancer", "ConfigSource", "StartupError", "run_event_loop", "serve"]

ConfigSource = Callable[[], tuple[Config, int | None]]
"""Reads the configuration for a reload: (config, generation number or None for the next).
Raises ConfigError when it is invalid."""


async def serve(
    config: Config,
    stop: asyncio.Event | None = None,
    *,
    worker: WorkerSlot | None = None,
    on_ready: Callable[[], None] | None = None,
    metrics_dir: str | None = None,
    reload_source: ConfigSource | None = None,
    run_dir: str | None = None,
) -> None:
    """Run until SIGTERM or SIGINT (or until ``stop`` is set); reload on SIGHUP.

    As ``worker`` of several worker processes, serve that worker's share of
    ``config`` (its passive port slices and limit shares), on frontend
    listeners shared with the other workers, with ``worker=<i>`` on every log
    line. ``on_ready`` is called once every listener is open. ``metrics_dir``
    is this run's directory for metric files (see ftplb.runtime.metrics_home):
    a worker records into its master's, and a lone process records into its
    own and serves it on its ``[admin]`` listener.
    ``reload_source`` gives the configuration on SIGHUP (without it, SIGHUP
    is ignored). ``run_dir`` is the master's run directory, where the workers
    share the login defender's record; a lone process keeps it in memory.
    """
    stop = stop or asyncio.Event()
    hurry = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: asyncio.Queue[None] = asyncio.Queue()

    def on_signal() -> None:
        # The first SIGTERM or SIGINT stops gracefully; a second one stops at once.
        (hurry if stop.is_set() else stop).set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, None)
    try:
        identity = target_identity(config.defaults)
    except PrivilegeError as error:
        raise StartupError(str(error)) from error
    log = event_log(config.defaults)
    raise_open_files_limit(log)  # a worker's master has done it already
    if worker is not None and worker.count > 1:
        config, log = _become_worker(config, worker, identity)
    release_library_logs = capture_library_logs(log)
    try:
        process = _Process(
            config, log, worker, metrics_dir, reload_source, identity=identity, run_dir=run_dir
        )
        await _run(process, stop, hurry, reloads, on_ready)
    finally:
        release_library_logs()
        log.close()


class _Process:
    """What a balancer process needs to start and to reload."""

    def __init__(
        self,
        config: Config,
        log: EventLog,
        worker: WorkerSlot | None,
        metrics_dir: str | None,
        reload_source: ConfigSource | None,
        *,
        identity: Identity | None = None,
        run_dir: str | None = None,
    ) -> None:
        self.config = config
        self.log = log
        self.worker = worker
        self.metrics_dir = metrics_dir
        self.defender_store: DefenderStore = FileStore(run_dir) if run_dir else MemoryStore()
        """The login defender's record: the master's file shared by workers, or memory."""
        self.reload_source = reload_source
        self.identity = identity
        """Whom to run as once the listeners are open (``[defaults] user``)."""
        self.dropped = False
        """True once root is given up: a reload can no longer bind below port 1024."""
        # A worker of a master finds no $NOTIFY_SOCKET: only the master notifies.
        self.notifier = Notifier.from_environment()

    def drop_privileges(self, monitoring: Monitoring | None) -> None:
        """Become ``[defaults] user``, once every listener is open (PrivilegeError if refused)."""
        identity = self.identity
        if identity is None:
            return
        if monitoring is not None and self.worker is None:
            hand_over(monitoring.directory, identity)  # a worker's belongs to its master
        if drop_privileges(identity):
            self.log.info(
                "privileges dropped", user=identity.user, uid=identity.uid, gid=identity.gid
            )
            self.dropped = identity.uid != 0

    def next_config(self) -> tuple[Config, int | None] | None:
        """The configuration to reload with, or None (refused, and logged)."""
        if self.reload_source is None:
            return None
        try:
            config, generation = self.reload_source()
        except ConfigError as error:
            self.log.warning(LogWarning.RELOAD_REFUSED, problems="; ".join(error.problems))
            return None
        if self.worker is not None and self.worker.count > 1:
            return self._unless_privileged(worker_share(config, self.worker), generation)
        config, kept = keep_restart_only(self.config, config)
        for key in kept:
            self.log.warning(LogWarning.RESTART_NEEDED, key=key)
        return self._unless_privileged(config, generation)

    def _unless_privileged(
        self, config: Config, generation: int | None
    ) -> tuple[Config, int | None] | None:
        """None (refused, and logged) if ``config`` needs root that this process gave up."""
        added = privileged_binds_added(self.config, config) if self.dropped else []
        if not added:
            return config, generation
        user = self.identity.user if self.identity is not None else "?"
        self.log.warning(
            LogWarning.RELOAD_REFUSED,
            problems=(
                f"cannot listen on {', '.join(added)}: ports below 1024 need root, "
                f"which ftplb gave up for user {user}; restart ftplb to add them"
            ),
        )
        return None


async def _run(
    process: _Process,
    stop: asyncio.Event,
    hurry: asyncio.Event,
    reloads: asyncio.Queue[None],
    on_ready: Callable[[], None] | None,
) -> None:
    config = process.config
    monitoring = Monitoring.for_process(process.metrics_dir)
    generations = Generations(process.log, monitoring, process.defender_store)
    try:
        balancer = await generations.start(config)
    except BaseException:
        if monitoring is not None:
            await monitoring.close()
        raise
    try:
        if monitoring is not None:
            frontends: list[SessionCounted] = [*balancer.frontends, *balancer.passthroughs]
            worker = process.worker.index if process.worker is not None else None
            monitoring.record(
                balancer.log, balancer.pools, config, balancer.checkers, frontends, worker=worker
            )
            if process.worker is None:  # a lone process hosts its own admin listener
                await monitoring.serve_admin(config, process.log, process.defender_store)
        process.drop_privileges(monitoring)
        if on_ready is not None:
            on_ready()
        process.notifier.ready(_status(generations))
        await _serve_until_stopped(process, generations, stop, reloads)
    except (AdminError, PrivilegeError) as error:
        raise StartupError(str(error)) from error
    finally:
        process.notifier.stopping()
        process.log.info("stopping")
        await generations.stop(process.config.defaults.timeout_shutdown, hurry)
        if monitoring is not None:
            await monitoring.close()


async def _serve_until_stopped(
    process: _Process,
    generations: Generations,
    stop: asyncio.Event,
    reloads: asyncio.Queue[None],
) -> None:
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            reload = asyncio.ensure_future(reloads.get())
            await asyncio.wait({stopped, reload}, return_when=asyncio.FIRST_COMPLETED)
            if not reload.done():
                reload.cancel()
                return
            process.notifier.reloading()
            try:
                update = process.next_config()
                if update is not None and await generations.reload(*update):
                    process.config = update[0]
            finally:
                process.notifier.ready(_status(generations))
    finally:
        stopped.cancel()


def _status(generations: Generations) -> str:
    """The service manager's one-line status of this process."""
    current = generations.current
    return f"serving (generation {current.generation})" if current is not None else "serving"


def _become_worker(
    config: Config, worker: WorkerSlot, identity: Identity | None
) -> tuple[Config, EventLog]:
    """Make this process ``worker``: its share of ``config``, its log, shared listeners."""
    log = event_log(config.defaults, fixed={"worker": worker.index})

    def unsteered(reason: str) -> None:
        log.warning(LogWarning.UNSTEERED, reason=reason)

    owner = (identity.uid, identity.gid) if identity is not None else None
    share_listeners(worker.count, unsteered, owner)
    share = worker_share(config, worker)
    for frontend in share.frontends:
        if frontend.passive_ports is not None:
            log.info(
                "passive port slice", frontend=frontend.name, ports=str(frontend.passive_ports)
            )
    return share, log


def run_event_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine on uvloop when it is installed, else on asyncio's own loop,
    in an interpreter tuned for serving."""
    tune_for_serving()
    try:
        import uvloop  # noqa: PLC0415 - an optional accelerator
    except ImportError:
        asyncio.run(main())
        return
    uvloop.run(main())
