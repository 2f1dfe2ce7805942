"""Counters and gauges of the balancer, recorded so that they sum over worker processes.

prometheus_client's multiprocess mode is used whatever the number of
processes, so there is one code path: every process writes its own files
(``<type>_<pid>.db``, memory-mapped) into one shared directory, and the admin
server reads them all with a ``MultiProcessCollector``, which sums counters and
combines gauges by their ``multiprocess_mode``.

prometheus_client picks the class that stores every value *when
prometheus_client is first imported*, from the ``PROMETHEUS_MULTIPROC_DIR``
environment variable (its documented multiprocess mode). The command line
sets it before that import (:mod:`ftplb.runtime.metrics_home`), and worker
processes inherit it from their master; :func:`enable` only checks that it
names the directory. Every instrument here is created lazily, after
:func:`enable`.

Recording costs a dictionary update per event: the runtime reports sessions,
transfers and warnings to its :class:`EventLog`, :class:`Metrics` observes
those records, adds to pending sums, and writes them to the files on a short
timer (and on :meth:`Metrics.flush`). State that is not an event (sessions
per server, server state, the last health check) is sampled from the pools on
the same timer.

Call order in each process that serves sessions::

    enable(directory)                 # before any Metrics exists
    metrics = Metrics()
    metrics.attach(balancer.log, balancer.pools, balancer.config,
                   checkers=balancer.checkers, frontends=balancer.frontends)
    metrics.start()                   # on the running loop: the 1 s timer
    ...
    metrics.stop()                    # flushes, zeroes this process's gauges

and in the supervisor, when a worker has exited: ``mark_process_dead(pid, directory)``.

It is over 500 lines because every metric, its bounded label values and the
observer that feeds it belong together, so that no label drifts from its counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram, multiprocess, values

from ftplb.balancing.pool import Pool
from ftplb.balancing.state import Server, ServerState
from ftplb.config.schema import Config
from ftplb.proto.outcomes import EndReason
from ftplb.proto.rules import rule_for
from ftplb.runtime.logs import EventLog, LogWarning
from ftplb.runtime.metrics_home import ENV_VAR
from ftplb.runtime.probes import ProbeResult
from ftplb.runtime.process_report import ProcessReport, remove_report, write_report
from ftplb.runtime.progress import RunningTransfer, data_key

__all__ = [
    "ENV_VAR",
    "CheckResults",
    "Metrics",
    "SessionCounted",
    "clear_directory",
    "enable",
    "enabled_directory",
    "mark_process_dead",
    "peak_gauges",
]

SAMPLE_INTERVAL = 1.0
"""Seconds between two samples of the pools (and writes of pending counts)."""

RATE_SAMPLES = 5
"""Samples over which session rates are averaged (about 5 s)."""

SESSION_SECONDS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
TRANSFER_SECONDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
TRANSFER_BYTES = tuple(
    float(2**power) for power in (10, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34)
)
"""1 KiB to 16 GiB, by factors of 4."""

# --------------------------------------------------------------------------
# Enabling multiprocess mode
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Mode:
    directory: str | None = None
    generation: int = 0  # bumped by each enable() that changes the storage
    instruments: _Instruments | None = None
    process_id: Callable[[], int] = os.getpid


_mode = _Mode()


def enable(directory: str) -> None:
    """Record every metric of this process into ``directory`` (created if missing).

    Call it before any :class:`Metrics` exists; calling it again with the same
    directory does nothing. RuntimeError unless prometheus_client stores its
    values in files under ``directory``, which it decides when it is imported.
    """
    path = str(Path(directory).resolve())
    Path(path).mkdir(parents=True, exist_ok=True)
    if _mode.directory == path:
        return
    chosen = os.environ.get(ENV_VAR)
    if (
        values.ValueClass is values.MutexValue
        or chosen is None
        or Path(chosen).resolve() != Path(path)
    ):
        raise RuntimeError(f"{ENV_VAR} must name {path} before prometheus_client is imported")
    _mode.directory = path
    _mode.generation += 1
    _mode.instruments = None


def enabled_directory() -> str | None:
    """The directory given to :func:`enable` in this process, or None."""
    return _mode.directory


def peak_gauges() -> dict[str, Gauge]:
    """The gauge (mode max) that keeps the peak of each livesum gauge, by the livesum's name.

    For the master of workers, which records the peaks of their sums; call
    :func:`enable` first.
    """
    ins = _instruments()
    return {
        "ftplb_frontend_current_sessions": ins.frontend_peak,
        "ftplb_server_current_sessions": ins.server_peak,
        "ftplb_frontend_session_rate": ins.frontend_rate_max,
        "ftplb_server_session_rate": ins.server_rate_max,
    }


def clear_directory(directory: str) -> None:
    """Remove the files of an earlier run; the supervisor calls it once, before any worker."""
    for pattern in ("*.db", "process_*.json"):
        for path in Path(directory).glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def mark_process_dead(pid: int, directory: str) -> None:
    """Forget the gauges and the report of an exited process ``pid``; its counters keep
    counting in sums."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    remove_report(directory, pid)


# --------------------------------------------------------------------------
# The instruments
# --------------------------------------------------------------------------

_FBS = ("frontend", "backend", "server")
_BS = ("backend", "server")
_FB = ("frontend", "backend")


@dataclass(frozen=True, slots=True)
class _Instruments:
    accepted: Counter
    sessions: Counter
    session_ends: Counter
    control_bytes: Counter
    transfers: Counter
    transfer_bytes: Counter
    connect_failures: Counter
    refusals: Counter
    passive_listeners: Counter
    data_refused: Counter
    health_checks: Counter
    state_changes: Counter
    server_sessions: Gauge
    server_state: Gauge
    check_ok: Gauge
    check_duration: Gauge
    frontend_sessions: Gauge
    workers: Gauge
    logins: Counter
    warnings: Counter
    log_lines_dropped: Counter
    retries: Counter
    redispatches: Counter
    session_duration: Histogram
    transfer_duration: Histogram
    transfer_size: Histogram
    server_rate: Gauge
    frontend_rate: Gauge
    server_rate_max: Gauge
    frontend_rate_max: Gauge
    server_peak: Gauge
    frontend_peak: Gauge
    state_changed: Gauge
    downtime: Gauge
    defender_failures: Counter
    defender_bans: Counter


def _instruments() -> _Instruments:
    if _mode.directory is None:
        raise RuntimeError("metrics.enable(directory) must be called before recording metrics")
    if _mode.instruments is None:
        # registry=None: the admin server collects from the files, never from
        # a registry, and a second generation must not clash with the first.
        def counter(name: str, text: str, labels: Iterable[str]) -> Counter:
            return Counter(name, text, labelnames=tuple(labels), registry=None)

        def gauge(name: str, text: str, labels: Iterable[str], mode: Any) -> Gauge:
            return Gauge(
                name, text, labelnames=tuple(labels), registry=None, multiprocess_mode=mode
            )

        def histogram(name: str, text: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, text, labelnames=_FB, registry=None, buckets=buckets)

        _mode.instruments = _Instruments(
            accepted=counter(
                "ftplb_frontend_sessions",
                "Client sessions a frontend accepted, counted when they start.",
                ("frontend",),
            ),
            sessions=counter(
                "ftplb_sessions",
                "Client sessions, when a server takes them (server '-': when one that "
                "never reached a server ends).",
                _FBS,
            ),
            session_ends=counter(
                "ftplb_session_ends", "Client sessions ended, by reason.", (*_FBS, "reason")
            ),
            control_bytes=counter(
                "ftplb_control_bytes",
                "Control connection bytes from (in) and to (out) clients, at session end.",
                (*_FBS, "direction"),
            ),
            transfers=counter(
                "ftplb_transfers",
                "Data transfers, by command and result.",
                (*_FBS, "command", "result"),
            ),
            transfer_bytes=counter(
                "ftplb_transfer_bytes",
                "Data connection bytes from (in) and to (out) clients.",
                (*_FBS, "direction"),
            ),
            connect_failures=counter(
                "ftplb_server_connect_failures", "Failed connects to a server.", _FBS
            ),
            refusals=counter(
                "ftplb_refusals",
                "Clients refused "
                "(reason: limit, sessions_per_ip, session_rate, no_server, proxy_refused).",
                ("frontend", "backend", "reason"),
            ),
            passive_listeners=counter(
                "ftplb_passive_listeners",
                "Passive data listeners for clients (result: opened, failed, refused).",
                ("frontend", "result"),
            ),
            data_refused=counter(
                "ftplb_data_connections_refused",
                "Data connections refused: the peer was not the session's own.",
                ("frontend",),
            ),
            health_checks=counter(
                "ftplb_health_checks",
                "Health checks, by result and layer.",
                (*_BS, "result", "layer"),
            ),
            state_changes=counter(
                "ftplb_server_state_changes",
                "Health verdict changes of a server.",
                (*_BS, "state"),
            ),
            server_sessions=gauge(
                "ftplb_server_current_sessions", "Sessions on a server now.", _BS, "livesum"
            ),
            server_state=gauge(
                "ftplb_server_state",
                "1 when some live process sees the server in this state.",
                (*_BS, "state"),
                "livemax",
            ),
            check_ok=gauge(
                "ftplb_server_check_ok",
                "1 when the last health check passed in every live process.",
                _BS,
                "livemin",
            ),
            check_duration=gauge(
                "ftplb_server_check_duration_seconds",
                "Duration of the last health check (the slowest over live processes).",
                _BS,
                "livemax",
            ),
            frontend_sessions=gauge(
                "ftplb_frontend_current_sessions",
                "Sessions on a frontend now.",
                ("frontend",),
                "livesum",
            ),
            workers=gauge(
                "ftplb_worker_processes", "Live processes recording metrics.", (), "livesum"
            ),
            logins=counter(
                "ftplb_logins",
                "Logins the servers answered (result: ok, failed).",
                (*_FBS, "result"),
            ),
            warnings=counter(
                "ftplb_warnings",
                "Warnings logged, by warning id.",
                (*_FBS, "warning"),
            ),
            log_lines_dropped=counter(
                "ftplb_log_lines_dropped",
                "Log lines dropped because the syslog receiver's buffer was full.",
                (),
            ),
            retries=counter(
                "ftplb_server_retries", "Connects retried after this server failed.", _FBS
            ),
            redispatches=counter(
                "ftplb_server_redispatches",
                "Sessions sent on to another server after this one failed.",
                _FBS,
            ),
            session_duration=histogram(
                "ftplb_session_duration_seconds", "Durations of ended sessions.", SESSION_SECONDS
            ),
            transfer_duration=histogram(
                "ftplb_transfer_duration_seconds",
                "Durations of ended transfers.",
                TRANSFER_SECONDS,
            ),
            transfer_size=histogram(
                "ftplb_transfer_size_bytes",
                "Bytes of ended transfers, both directions.",
                TRANSFER_BYTES,
            ),
            server_rate=gauge(
                "ftplb_server_session_rate",
                "New sessions per second on a server, over the last ~5 s.",
                _BS,
                "livesum",
            ),
            frontend_rate=gauge(
                "ftplb_frontend_session_rate",
                "New sessions per second on a frontend, over the last ~5 s.",
                ("frontend",),
                "livesum",
            ),
            server_rate_max=gauge(
                "ftplb_server_session_rate_max",
                "The highest session rate seen on a server (with workers: of their sum).",
                _BS,
                "max",
            ),
            frontend_rate_max=gauge(
                "ftplb_frontend_session_rate_max",
                "The highest session rate seen on a frontend (with workers: of their sum).",
                ("frontend",),
                "max",
            ),
            server_peak=gauge(
                "ftplb_server_max_sessions",
                "The most sessions a server had at once (with workers: of their sum).",
                _BS,
                "max",
            ),
            frontend_peak=gauge(
                "ftplb_frontend_max_sessions",
                "The most sessions a frontend had at once (with workers: of their sum).",
                ("frontend",),
                "max",
            ),
            state_changed=gauge(
                "ftplb_server_state_change_timestamp_seconds",
                "When the server's state last changed (Unix time; process start if never).",
                _BS,
                "livemax",
            ),
            downtime=gauge(
                "ftplb_server_downtime_seconds",
                "Seconds the server has been DOWN since the process started.",
                _BS,
                "livemax",
            ),
            defender_failures=counter(
                "ftplb_defender_failures",
                "Failed logins the login defender counted (allowed and denied addresses aside).",
                ("frontend",),
            ),
            # Not "ftplb_defender_bans": that gauge (the bans in force) is read
            # from the defender's record by the admin listener.
            defender_bans=counter(
                "ftplb_defender_bans_made",
                "Bans the login defender made.",
                ("frontend",),
            ),
        )
    return _mode.instruments


# --------------------------------------------------------------------------
# Bounded label values
# --------------------------------------------------------------------------


def _end(value: object) -> EndReason | None:
    """The record's end reason, or None for a value outside the vocabulary.

    The label set stays bounded whatever a record carries: only members of
    :class:`EndReason` (or their values) become labels.
    """
    if isinstance(value, EndReason):
        return value
    if not isinstance(value, str):
        return None
    try:
        return EndReason(value)
    except ValueError:
        return None


def _command_label(verb: str) -> str:
    # Only the verbs that open a data connection: a client must not be able
    # to mint label values.
    if verb.isascii() and rule_for(verb.encode("ascii")).transfer is not None:
        return verb.upper()
    return "other"


def _result_class(code: object) -> str:
    if isinstance(code, int) and 100 <= code <= 599:
        return f"{code // 100}xx"
    if code == "-":
        return "cut"  # the session ended before the transfer's final reply
    return "other"


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


# --------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------


class SessionCounted(Protocol):
    """A frontend whose sessions and running transfers can be counted (a FrontendContext)."""

    @property
    def name(self) -> str: ...

    @property
    def sessions(self) -> Sized: ...

    def running_transfers(self) -> Iterable[RunningTransfer]: ...

    def control_counts(self) -> Iterable[tuple[str, str, int, int]]:
        """(session id, server, bytes in, bytes out) of each session on a server."""
        ...


class CheckResults(Protocol):
    """Where the last health check of each server is found (a HealthChecker)."""

    def result(self, server_name: str) -> ProbeResult | None: ...


_Pending = dict[tuple[Counter, tuple[str, ...]], float]

_Counted = dict[tuple[str, str], tuple[int, int]]
"""Bytes (in, out) already counted of what still runs, by ("control"|"data", key)."""


@dataclass(slots=True)
class _StateTrack:
    """A server's effective state as this process sampled it, since when, and its downtime."""

    state: ServerState
    since: float  # wall clock
    down: float = 0.0  # seconds DOWN before ``since``


class Metrics:
    """Derives this process's metrics from its EventLog and its pools."""

    def __init__(self, sample_interval: float = SAMPLE_INTERVAL, worker: int | None = None) -> None:
        self._instruments = _instruments()
        self._generation = _mode.generation
        self._interval = sample_interval
        self._worker = worker
        self._pid = _mode.process_id()
        self._process_started = time.time()
        self._pending: _Pending = {}
        self._counted: _Counted = {}
        self._opened: set[str] = set()
        self._dropped_lines = 0  # the attached log's count at the last sample
        self._last_live = time.monotonic()
        self._reported = False
        # New sessions since the last sample: per frontend (accepted) and per server.
        self._new_sessions: dict[tuple[Gauge, tuple[str, ...]], int] = {}
        self._rate_window: deque[dict[tuple[Gauge, tuple[str, ...]], int]] = deque(
            maxlen=RATE_SAMPLES
        )
        self._rated: set[tuple[Gauge, tuple[str, ...]]] = set()
        self._highest: dict[tuple[Gauge, tuple[str, ...]], float] = {}
        self._states: dict[tuple[str, str], _StateTrack] = {}
        self._check_reports: list[dict[str, Any]] = []
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._log: EventLog | None = None
        self._pools: Mapping[str, Pool] = {}
        self._checkers: Mapping[str, CheckResults] = {}
        self._frontends: list[SessionCounted] = []
        self._backend_of: dict[str, str] = {}
        self._last_checks: dict[tuple[str, str], object] = {}
        self._sampled_servers: set[tuple[str, str]] = set()
        self._sampled_frontends: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "session": self._on_session,
            "session_open": self._on_session_open,
            "accept": self._on_accept,
            "transfer": self._on_transfer,
            "data": self._on_data,
            "warning": self._on_warning,
            "health": self._on_health,
            "passive": self._on_passive,
            "login": self._on_login,
            "retry": self._on_retry,
            "defender_failure": self._on_defender_failure,
        }

    # ---------------------------------------------------------- lifecycle
    def attach(
        self,
        log: EventLog,
        pools: Mapping[str, Pool],
        config: Config,
        *,
        checkers: Mapping[str, CheckResults] | None = None,
        frontends: Iterable[SessionCounted] = (),
    ) -> None:
        """Observe ``log`` and sample ``pools``; again after a reload, with the new ones.

        ``config`` names each frontend's backend. ``checkers`` (per backend)
        give the last health check; ``frontends`` their current sessions.
        """
        if self._log is not None:
            self._log.remove_observer(self._observe)
        if log is not self._log:
            self._count_dropped_lines()  # the rest of the old log's, then the new one's from 0
            self._dropped_lines = 0
        self._backend_of = {f.name: f.backend for f in config.frontends}
        self._pools = pools
        self._checkers = checkers or {}
        self._frontends = list(frontends)
        self._log = log
        log.add_observer(self._observe)
        self.sample()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Sample and write every ``sample_interval`` seconds on ``loop`` (the running one)."""
        if not self._running:
            self._running = True
            self._loop = loop or asyncio.get_running_loop()
            self._timer = self._loop.call_later(self._interval, self._tick)

    def stop(self) -> None:
        """Stop observing and sampling, write what is pending, and zero this process's gauges."""
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._log is not None:
            self._count_dropped_lines()
            self._log.remove_observer(self._observe)
            self._log = None
        self._dropped_lines = 0
        self._pools, self._checkers, self._frontends = {}, {}, []
        self.sample()  # with nothing attached: every gauge of this process goes to 0
        directory = _mode.directory
        if self._reported and directory is not None:
            remove_report(directory, self._pid)
            self._reported = False

    def _tick(self) -> None:
        self._timer = None
        try:
            self.sample()
        finally:
            if self._running and self._loop is not None:
                self._timer = self._loop.call_later(self._interval, self._tick)

    # ----------------------------------------------------------- writing
    def _follow_enable(self) -> None:
        if self._generation != _mode.generation:
            # enable() started a new set of files: follow it, and drop the
            # counts that were meant for the files it closed.
            self._instruments = _instruments()
            self._generation = _mode.generation
            self._children.clear()
            self._pending.clear()
            self._last_checks.clear()
            self._rated.clear()
            self._highest.clear()
            self._new_sessions.clear()
            self._rate_window.clear()

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels) if labels else metric
        return child

    def flush(self) -> None:
        """Write the pending counts to this process's files."""
        self._follow_enable()
        pending, self._pending = self._pending, {}
        for (metric, labels), amount in pending.items():
            self._child(metric, labels).inc(amount)

    def _add(self, metric: Counter, labels: tuple[str, ...], amount: float = 1.0) -> None:
        key = (metric, labels)
        pending = self._pending
        pending[key] = pending.get(key, 0.0) + amount

    # ---------------------------------------------------------- sampling
    def sample(self) -> None:
        """Write the state of the attached pools, checkers and frontends, and pending counts."""
        self._follow_enable()
        ins = self._instruments
        self._child(ins.workers, ()).set(1 if self._log is not None else 0)
        self._count_dropped_lines()
        self._check_reports = []
        seen: set[tuple[str, str]] = set()
        for backend, pool in self._pools.items():
            checker = self._checkers.get(backend)
            for server in pool.servers:
                labels = (backend, server.name)
                seen.add(labels)
                self._sample_server(labels, server, checker)
        for labels in self._sampled_servers - seen:
            self._zero_server(labels)
        self._sampled_servers = seen
        names: set[str] = set()
        current: dict[str, int] = {}
        for frontend in self._frontends:
            names.add(frontend.name)
            current[frontend.name] = current.get(frontend.name, 0) + len(frontend.sessions)
        for name, count in current.items():
            self._child(ins.frontend_sessions, (name,)).set(count)
            self._raise(ins.frontend_peak, (name,), count)
        for name in self._sampled_frontends - names:
            self._child(ins.frontend_sessions, (name,)).set(0)
        self._sampled_frontends = names
        self._sample_rates()
        self._count_live()
        self.flush()  # last: sampling counts health checks

    def _sample_server(
        self, labels: tuple[str, str], server: Server, checker: CheckResults | None
    ) -> None:
        ins = self._instruments
        self._child(ins.server_sessions, labels).set(server.active)
        self._raise(ins.server_peak, labels, server.active)
        state = server.state
        for candidate in ServerState:
            self._child(ins.server_state, (*labels, candidate.value)).set(
                1 if candidate is state else 0
            )
        self._track_state(labels, state)
        result = checker.result(server.name) if checker is not None else None
        if result is not None:
            self._check_reports.append(
                {
                    "backend": labels[0],
                    "server": labels[1],
                    "ok": result.ok,
                    "layer": result.layer,
                    "detail": result.detail,
                }
            )
        if result is None or self._last_checks.get(labels) is result:
            return
        # Checks are counted when sampled: one faster than the sampling
        # period would be missed, and health intervals are longer than that.
        self._last_checks[labels] = result
        self._add(ins.health_checks, (*labels, "ok" if result.ok else "fail", result.layer))
        self._child(ins.check_ok, labels).set(1 if result.ok else 0)
        self._child(ins.check_duration, labels).set(result.duration)

    def _track_state(self, labels: tuple[str, str], state: ServerState) -> None:
        ins = self._instruments
        now = time.time()
        track = self._states.get(labels)
        if track is None:
            track = self._states[labels] = _StateTrack(state, self._process_started)
        elif track.state is not state:
            if track.state is ServerState.DOWN:
                track.down += now - track.since
            track.state, track.since = state, now
        down = track.down + (now - track.since if state is ServerState.DOWN else 0.0)
        self._child(ins.state_changed, labels).set(track.since)
        self._child(ins.downtime, labels).set(round(down, 3))

    def _raise(self, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        """Set a peak gauge (mode max) when ``value`` beats this process's highest."""
        key = (gauge, labels)
        if value > self._highest.get(key, 0.0):
            self._highest[key] = value
            self._child(gauge, labels).set(value)

    def _sample_rates(self) -> None:
        """New sessions per second over the last samples, per server and per frontend."""
        ins = self._instruments
        self._rate_window.append(self._new_sessions)
        self._new_sessions = {}
        seconds = len(self._rate_window) * self._interval
        sums: dict[tuple[Gauge, tuple[str, ...]], float] = {}
        for counts in self._rate_window:
            for key, count in counts.items():
                sums[key] = sums.get(key, 0.0) + count
        for key in self._rated - sums.keys():
            self._child(*key).set(0)
        for (gauge, labels), total in sums.items():
            rate = round(total / seconds, 3)
            self._child(gauge, labels).set(rate)
            peak = ins.frontend_rate_max if gauge is ins.frontend_rate else ins.server_rate_max
            self._raise(peak, labels, rate)
        self._rated = set(sums)

    def _count_dropped_lines(self) -> None:
        """Add the log lines the syslog target dropped since the last sample."""
        dropped = self._log.syslog_dropped if self._log is not None else 0
        if dropped > self._dropped_lines:
            self._add(self._instruments.log_lines_dropped, (), dropped - self._dropped_lines)
        self._dropped_lines = dropped

    def _new_session(self, gauge: Gauge, labels: tuple[str, ...]) -> None:
        key = (gauge, labels)
        self._new_sessions[key] = self._new_sessions.get(key, 0) + 1

    def _zero_server(self, labels: tuple[str, str]) -> None:
        ins = self._instruments
        self._child(ins.server_sessions, labels).set(0)
        for candidate in ServerState:
            self._child(ins.server_state, (*labels, candidate.value)).set(0)
        if self._last_checks.pop(labels, None) is not None:
            # livemin/livemax: neutral values, so a gone server never decides.
            self._child(ins.check_ok, labels).set(1)
            self._child(ins.check_duration, labels).set(0)

    # ------------------------------------------------------- live counts
    def _count_live(self) -> None:
        """Add the bytes moved since the last sample by what still runs; report transfers."""
        ins = self._instruments
        now = time.monotonic()
        elapsed = max(now - self._last_live, 1e-3)
        self._last_live = now
        running: list[dict[str, Any]] = []
        wall = time.time()
        for frontend in self._frontends:
            name = frontend.name
            backend = self._backend_of.get(name, "-")
            for key, server, bytes_in, bytes_out in frontend.control_counts():
                self._advance(
                    ins.control_bytes,
                    ("control", key),
                    (name, backend, server),
                    bytes_in,
                    bytes_out,
                )
            for transfer in frontend.running_transfers():
                labels = (name, backend, transfer.server)
                to_server, to_client = transfer.to_server, transfer.to_client
                moved = self._advance(
                    ins.transfer_bytes, ("data", transfer.key), labels, to_server, to_client
                )
                running.append(
                    {
                        "session": transfer.key,
                        "frontend": name,
                        "backend": backend,
                        "server": transfer.server,
                        "client": transfer.client,
                        "user": transfer.user,
                        "command": transfer.command,
                        "path": transfer.path,
                        "bytes": to_server + to_client,
                        "started": transfer.started,
                        "elapsed": round(max(wall - transfer.started, 0.0), 3),
                        "rate": round(moved / elapsed, 1),
                        "worker": self._worker,
                    }
                )
        self._report(running)

    def _advance(
        self,
        counter: Counter,
        key: tuple[str, str],
        labels: tuple[str, str, str],
        bytes_in: int,
        bytes_out: int,
    ) -> int:
        """Count what ``key`` moved since it was last counted; the bytes moved."""
        before_in, before_out = self._counted.get(key, (0, 0))
        more_in, more_out = bytes_in - before_in, bytes_out - before_out
        if more_in > 0:
            self._add(counter, (*labels, "in"), more_in)
        if more_out > 0:
            self._add(counter, (*labels, "out"), more_out)
        if more_in or more_out:
            self._counted[key] = (max(bytes_in, before_in), max(bytes_out, before_out))
        return max(more_in, 0) + max(more_out, 0)

    def _settle(
        self, key: tuple[str, str], bytes_in: float, bytes_out: float
    ) -> tuple[float, float]:
        """What of an ended (in, out) is left to count: the bytes not counted while it ran."""
        before_in, before_out = self._counted.pop(key, (0, 0))
        return max(bytes_in - before_in, 0.0), max(bytes_out - before_out, 0.0)

    def _report(self, transfers: list[dict[str, Any]]) -> None:
        directory = _mode.directory
        if directory is None or self._log is None:
            return
        report = ProcessReport(
            self._pid,
            self._worker,
            self._process_started,
            tuple(transfers),
            tuple(self._check_reports),
        )
        try:
            write_report(directory, report)
        except OSError:
            return  # a full disk: the next sample tries again
        self._reported = True

    # ------------------------------------------------------------ events
    def _observe(self, kind: str, fields: dict[str, Any]) -> None:
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(fields)

    def _labels(self, fields: dict[str, Any]) -> tuple[str, str, str]:
        frontend = str(fields.get("frontend", "-"))
        return frontend, self._backend_of.get(frontend, "-"), str(fields.get("server", "-"))

    def _on_session_open(self, fields: dict[str, Any]) -> None:
        # A session is counted when a server takes it, with that server's
        # label; one that never reaches a server is counted when it ends.
        session = str(fields.get("session", ""))
        if session:
            self._opened.add(session)
        self._count_session(self._labels(fields))

    def _count_session(self, labels: tuple[str, str, str]) -> None:
        self._add(self._instruments.sessions, labels)
        self._new_session(self._instruments.server_rate, (labels[1], labels[2]))

    def _on_accept(self, fields: dict[str, Any]) -> None:
        # HAProxy's frontend count: every connection the frontend took, at once.
        frontend = (str(fields.get("frontend", "-")),)
        self._add(self._instruments.accepted, frontend)
        self._new_session(self._instruments.frontend_rate, frontend)

    def _on_session(self, fields: dict[str, Any]) -> None:
        ins = self._instruments
        labels = self._labels(fields)
        end = _end(fields.get("end"))
        reason = end.value if end is not None else "other"
        session = str(fields.get("session", ""))
        if session in self._opened:
            self._opened.discard(session)
        else:
            self._count_session(labels)
        self._add(ins.session_ends, (*labels, reason))
        self._child(ins.session_duration, labels[:2]).observe(_number(fields.get("duration")))
        bytes_in, bytes_out = self._settle(
            ("control", session), _number(fields.get("bytes_in")), _number(fields.get("bytes_out"))
        )
        self._add(ins.control_bytes, (*labels, "in"), bytes_in)
        self._add(ins.control_bytes, (*labels, "out"), bytes_out)
        self._counted.pop(("data", session), None)  # its transfer's line came first
        if end is not None and end.refused:
            self._add(ins.refusals, (labels[0], labels[1], reason))

    def _on_transfer(self, fields: dict[str, Any]) -> None:
        ins = self._instruments
        labels = self._labels(fields)
        command = _command_label(str(fields.get("command", "")))
        self._add(ins.transfers, (*labels, command, _result_class(fields.get("result"))))
        self._transfer_bytes(labels, ("data", str(fields.get("session", ""))), fields)

    def _on_data(self, fields: dict[str, Any]) -> None:
        # mode = "tcp": a relayed data connection; its command is unknown.
        ins = self._instruments
        labels = self._labels(fields)
        result = "relayed" if _end(fields.get("end")) is EndReason.CLOSED else "failed"
        self._add(ins.transfers, (*labels, "-", result))
        key = data_key(labels[0], str(fields.get("client", "")))
        self._transfer_bytes(labels, ("data", key), fields)

    def _transfer_bytes(
        self, labels: tuple[str, str, str], key: tuple[str, str], fields: dict[str, Any]
    ) -> None:
        ins = self._instruments
        size = _number(fields.get("bytes_to_server")) + _number(fields.get("bytes_to_client"))
        self._child(ins.transfer_duration, labels[:2]).observe(_number(fields.get("duration")))
        self._child(ins.transfer_size, labels[:2]).observe(size)
        to_server, to_client = self._settle(
            key, _number(fields.get("bytes_to_server")), _number(fields.get("bytes_to_client"))
        )
        self._add(ins.transfer_bytes, (*labels, "in"), to_server)
        self._add(ins.transfer_bytes, (*labels, "out"), to_client)

    def _on_warning(self, fields: dict[str, Any]) -> None:
        warning = fields.get("warning")
        if not isinstance(warning, LogWarning):
            return  # only the balancer's own warnings count, by member, never by text
        ins = self._instruments
        self._add(ins.warnings, (*self._labels(fields), warning.value))
        if warning is LogWarning.CONNECT_FAILED:
            self._add(ins.connect_failures, self._labels(fields))
        elif warning is LogWarning.PASSIVE_LISTENER_FAILED:
            self._add(ins.passive_listeners, (str(fields.get("frontend", "-")), "failed"))
        elif warning is LogWarning.PASSIVE_PER_IP:
            self._add(ins.passive_listeners, (str(fields.get("frontend", "-")), "refused"))
        elif warning in _DATA_REFUSALS:
            self._add(ins.data_refused, (str(fields.get("frontend", "-")),))
        elif warning is LogWarning.CLIENT_BANNED:
            self._add(ins.defender_bans, (str(fields.get("frontend", "-")),))

    def _on_defender_failure(self, fields: dict[str, Any]) -> None:
        self._add(self._instruments.defender_failures, (str(fields.get("frontend", "-")),))

    def _on_login(self, fields: dict[str, Any]) -> None:
        result = "ok" if fields.get("result") == "ok" else "failed"
        self._add(self._instruments.logins, (*self._labels(fields), result))

    def _on_retry(self, fields: dict[str, Any]) -> None:
        labels = self._labels(fields)
        self._add(self._instruments.retries, labels)
        if fields.get("redispatch") is True:
            self._add(self._instruments.redispatches, labels)

    def _on_passive(self, fields: dict[str, Any]) -> None:
        frontend = str(fields.get("frontend", "-"))
        self._add(self._instruments.passive_listeners, (frontend, "opened"))

    def _on_health(self, fields: dict[str, Any]) -> None:
        labels = (str(fields.get("backend", "-")), str(fields.get("server", "-")))
        state = fields.get("state")
        state = state if state in _HEALTH_STATES else "other"
        self._add(self._instruments.state_changes, (*labels, state))


_HEALTH_STATES = frozenset(("UP", "DOWN"))
_DATA_REFUSALS = frozenset(
    (
        LogWarning.FOREIGN_DATA_REFUSED,
        LogWarning.ORPHAN_DATA_REFUSED,
        LogWarning.PROXY_HEADER_REFUSED,
    )
)
