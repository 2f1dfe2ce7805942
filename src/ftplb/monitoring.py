"""Metrics recording and the admin listener, wired around a running balancer.

Recording is on only when there is somewhere to show it: an ``[admin]``
section in this process, or a master's metrics directory in a worker. A
balancer without either pays nothing for it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Mapping

from ftplb.admin.server import AdminServer, start_admin
from ftplb.balancing.pool import Pool
from ftplb.config.schema import Config
from ftplb.runtime import metrics
from ftplb.runtime.defender import DefenderStore
from ftplb.runtime.logs import EventLog
from ftplb.runtime.metrics import CheckResults, Metrics, SessionCounted


class Monitoring:
    """This process's metrics recorder, and the admin listener if it hosts one."""

    def __init__(self, directory: str, *, owns_directory: bool) -> None:
        self.directory = directory
        self._owns_directory = owns_directory
        self.recorder: Metrics | None = None
        self.admin: AdminServer | None = None
        self._log: EventLog | None = None

    @classmethod
    def for_process(cls, config: Config, master_directory: str | None) -> Monitoring | None:
        """Monitoring for a worker of a master (``master_directory``) or a lone process."""
        if master_directory is not None:
            return cls(master_directory, owns_directory=False)
        if config.admin is not None:
            return cls(tempfile.mkdtemp(prefix="ftplb-metrics-"), owns_directory=True)
        return None

    def record(
        self,
        log: EventLog,
        pools: Mapping[str, Pool],
        config: Config,
        checkers: Mapping[str, CheckResults],
        frontends: Iterable[SessionCounted],
        *,
        worker: int | None = None,
    ) -> None:
        """Start counting a started balancer's events (its ``log``) and state.

        ``worker`` is this process's worker index (None for a lone process).
        """
        self._log = log
        metrics.enable(self.directory)
        recorder = Metrics(worker=worker)
        recorder.attach(log, pools, config, checkers=checkers, frontends=frontends)
        recorder.start()
        self.recorder = recorder
        self._log = log

    async def serve_admin(
        self,
        config: Config,
        log: EventLog | None = None,
        defender: DefenderStore | None = None,
    ) -> None:
        """Open the admin listener of ``config`` (AdminError if it cannot listen).

        Its warnings and the admin actions go to ``log``; by default the log
        this process records from, or a new one in the configured format.
        ``defender`` is the login defender's record, whose bans it shows and lifts.
        """
        if config.admin is not None:
            metrics.enable(self.directory)
            log = log or self._log or EventLog(config.defaults.log_format)
            self.admin = await start_admin(
                config.admin, self.directory, config, log, defender=defender
            )

    def worker_exited(self, pid: int) -> None:
        """A worker process ended: its live gauges no longer count."""
        metrics.mark_process_dead(pid, self.directory)

    async def close(self) -> None:
        if self.recorder is not None:
            self.recorder.stop()
            self.recorder = None
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
