"""Metrics recording and the admin listener, wired around a running balancer.

Recording is on only when there is somewhere to show it: an ``[admin]``
section, whose run has a metrics directory (created by the command line
before prometheus_client is imported, see :mod:`ftplb.runtime.metrics_home`).
A balancer without one pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ftplb.admin.peaks import WorkerPeaks
from ftplb.admin.server import AdminServer, start_admin
from ftplb.balancing.pool import Pool
from ftplb.config.schema import Config
from ftplb.runtime import metrics
from ftplb.runtime.defender import DefenderStore
from ftplb.runtime.logs import EventLog
from ftplb.runtime.metrics import CheckResults, Metrics, SessionCounted


class Monitoring:
    """This process's metrics recorder, and the admin listener if it hosts one."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.recorder: Metrics | None = None
        self.admin: AdminServer | None = None
        self._peaks: WorkerPeaks | None = None
        self._log: EventLog | None = None

    @classmethod
    def for_process(cls, metrics_dir: str | None) -> Monitoring | None:
        """Monitoring into this run's ``metrics_dir``; None without one (no ``[admin]``)."""
        return cls(metrics_dir) if metrics_dir is not None else None

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
            # Only reads the files of the processes that record: no enable() here.
            log = log or self._log or EventLog(config.defaults.log_format)
            self.admin = await start_admin(
                config.admin, self.directory, config, log, defender=defender
            )

    def watch_worker_peaks(self) -> None:
        """In the master of workers: record the peaks of their sums (see ftplb.admin.peaks)."""
        if self._peaks is None:
            self._peaks = WorkerPeaks(self.directory)
            self._peaks.start()

    def worker_exited(self, pid: int) -> None:
        """A worker process ended: its live gauges no longer count."""
        metrics.mark_process_dead(pid, self.directory)

    async def close(self) -> None:
        if self._peaks is not None:
            self._peaks.stop()
            self._peaks = None
        if self.recorder is not None:
            self.recorder.stop()
            self.recorder = None
        if self.admin is not None:
            await self.admin.close()
            self.admin = None
