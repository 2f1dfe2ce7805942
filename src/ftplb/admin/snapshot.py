"""The numbers of the stats page and the JSON stats, summed over every process.

:func:`collect` reads the metric files of all processes (a
``MultiProcessCollector`` sums them); :func:`build_snapshot` lays the samples
out per frontend, backend and server in plain frozen dataclasses, with the
configuration supplying what the metrics do not carry (addresses, weights,
modes), the shared record of runtime overrides supplying each server's admin
state, and every configured server listed even before it has numbers.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from ftplb.balancing.defender import Ban
from ftplb.balancing.overrides import Override, ServerKey
from ftplb.balancing.state import AdminState, ServerState
from ftplb.config.schema import Config
from ftplb.runtime.process_report import ProcessReport

__all__ = [
    "STATS_VERSION",
    "UNKNOWN_ADMIN",
    "BackendStats",
    "BanInfo",
    "FrontendStats",
    "ProcessStats",
    "ServerStats",
    "Snapshot",
    "TransferInProgress",
    "ban_info",
    "build_snapshot",
    "collect",
    "snapshot_dict",
]


@dataclass(frozen=True, slots=True)
class ServerStats:
    """One server, as all processes see it together."""

    name: str
    address: str
    weight: int
    """The weight in force: an operator's runtime weight while it holds, else the configured."""
    state: str
    """UP, DOWN, DRAIN or MAINT; "UP/DOWN" while processes disagree; "-" before any sample."""
    current_sessions: int
    sessions: int
    """Sessions since start: counted when a server takes them, open ones included."""
    bytes_in: int
    """From clients: control and data bytes, those still running included (each second)."""
    bytes_out: int
    """To clients: control and data bytes, those still running included."""
    transfers: int
    connect_failures: int
    last_check: str
    """"ok" or "failed" (in some process), "-" before the first check."""
    last_check_duration: float | None
    checks_ok: int
    checks_failed: int
    admin: str = AdminState.READY.value
    """What operators asked: READY, DRAIN or MAINT (the shared record); "?" if unreadable."""
    admin_by: str = ""
    """Who made the last change to the server's record ("" when there is none)."""
    configured_weight: int | None = None
    """The configuration's weight; None when it is ``weight`` (no runtime weight known)."""
    session_rate: float = 0.0
    """New sessions per second, over the last few seconds."""
    session_rate_max: float = 0.0
    """The highest ``session_rate`` seen since start."""
    max_sessions: int = 0
    """The most sessions open at once since start (peak)."""
    session_limit: int = 0
    """The server's ``max_connections``; 0 = unlimited."""
    errors: int = 0
    """Connects and server dialogues that failed (HAProxy's connection errors)."""
    warnings: int = 0
    """Warnings logged about this server."""
    retries: int = 0
    """Connects to this server retried after a failure."""
    redispatches: int = 0
    """Sessions sent on to another server after this one failed."""
    logins: int = 0
    """Logins this server accepted."""
    failed_logins: int = 0
    """Logins this server refused (530)."""
    state_since: float | None = None
    """Seconds the server has been in its current state; None before any sample."""
    downtime: float = 0.0
    """Seconds spent DOWN since start."""
    last_check_reason: str = ""
    """Why the last check ended as it did, e.g. "220 banner in 2 ms" or "connection refused"."""


@dataclass(frozen=True, slots=True)
class BackendStats:
    """A backend and its servers; the totals are the sums of the servers'."""

    name: str
    balance: str
    servers: tuple[ServerStats, ...]
    servers_up: int
    current_sessions: int
    sessions: int
    bytes_in: int
    bytes_out: int
    transfers: int
    connect_failures: int


@dataclass(frozen=True, slots=True)
class FrontendStats:
    """A frontend: where clients connect."""

    name: str
    mode: str
    binds: tuple[str, ...]
    backend: str
    current_sessions: int
    sessions: int
    bytes_in: int
    bytes_out: int
    transfers: int
    refusals: int
    """Clients answered 421: over a limit, or no server could take them."""
    end_reasons: dict[str, int]
    transfer_results: dict[str, int]
    """Transfers by "COMMAND RESULT", e.g. "RETR 2xx"."""
    passive_listeners: int
    passive_listener_failures: int
    data_connections_refused: int
    session_rate: float = 0.0
    """New sessions per second, over the last few seconds."""
    session_rate_max: float = 0.0
    session_rate_limit: int = 0
    """0 = unlimited."""
    max_sessions: int = 0
    """The most sessions open at once since start (peak)."""
    session_limit: int = 0
    """The frontend's ``max_connections``; 0 = unlimited."""
    errors: int = 0
    """Client-side errors: sessions that ended on a protocol error or a reset."""
    warnings: int = 0
    logins: int = 0
    failed_logins: int = 0


@dataclass(frozen=True, slots=True)
class TransferInProgress:
    """A transfer running now, as its process last reported it (at least once a second)."""

    session: str
    """The session id, as in the log lines."""
    frontend: str
    backend: str
    server: str
    client: str
    user: str
    command: str
    """RETR, STOR, LIST ..."""
    path: str
    bytes: int
    """Data bytes moved so far, both directions."""
    elapsed: float
    """Seconds since the transfer started."""
    rate: float
    """Bytes per second, over the last report interval."""
    worker: int | None = None
    """The worker process serving it; None for a lone process."""


@dataclass(frozen=True, slots=True)
class BanInfo:
    """One client address banned by the login defender, as the page and the API show it."""

    address: str
    since: str
    """When the ban began: UTC, ISO 8601."""
    until: str
    """When it ends, unless an operator lifts it first."""
    remaining: float
    """Seconds left."""
    offence: int
    """1 for a first ban, 2 for a ban while the first was remembered (twice as long), ..."""


def ban_info(ban: Ban, now: float) -> BanInfo:
    """The shown form of a ban in force at ``now``."""
    return BanInfo(
        address=ban.address,
        since=_utc(ban.since),
        until=_utc(ban.until),
        remaining=round(max(ban.until - now, 0.0), 3),
        offence=ban.offence,
    )


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


@dataclass(frozen=True, slots=True)
class ProcessStats:
    """The balancer as a whole: the header of the stats page."""

    version: str
    pid: int
    """The pid to signal: the master's with workers, else the lone process's."""
    started: str
    """UTC start time, ISO 8601."""
    uptime: float
    """Seconds since start."""
    workers: int
    """Configured worker processes (1 for a lone process)."""
    generation: int = 1
    """Configuration generation: 1 at start, +1 per successful reload."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the stats page and the JSON stats show."""

    generated: str
    """UTC time of the reading, ISO 8601."""
    workers: int
    """Live processes recording metrics."""
    frontends: tuple[FrontendStats, ...]
    backends: tuple[BackendStats, ...]
    transfers: tuple[TransferInProgress, ...] = ()
    """Every transfer running now, in every process, longest-running first."""
    process: ProcessStats | None = None
    bans: tuple[BanInfo, ...] | None = None
    """The login defender's bans in force, the most recent first; None without a defender."""


STATS_VERSION = 2
"""The version of the ``/stats.json`` schema: raised on every incompatible change."""


def collect(directory: str) -> list[Metric]:
    """The metrics of every process that wrote into ``directory``, summed (blocking I/O)."""
    # prometheus_client leaves the collector unannotated.
    collector = MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]
    return list(collector.collect())  # type: ignore[no-untyped-call]


class _Samples:
    """Sample values by sample name, summed over the label subsets asked for."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in families:
            for sample in family.samples:
                self._by_name[sample.name].append((sample.labels, sample.value))

        self._sums: dict[tuple[str, ...], dict[tuple[str, ...], float]] = {}

    def by(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        """Sums of the samples called ``name`` per value of the labels ``keys``."""
        # Memoized: each frontend and backend asks for the same sums.
        sums = self._sums.get((name, *keys))
        if sums is None:
            sums = self._sums[(name, *keys)] = defaultdict(float)
            for labels, value in self._by_name.get(name, ()):
                sums[tuple(labels.get(key, "") for key in keys)] += value
        return sums

    def present(self, name: str, *keys: str) -> dict[tuple[str, ...], float]:
        """Like :meth:`by`, but only label sets that have a sample (gauges)."""
        return {
            tuple(labels.get(key, "") for key in keys): value
            for labels, value in self._by_name.get(name, ())
        }


_NO_OVERRIDES: Mapping[ServerKey, Override] = MappingProxyType({})

UNKNOWN_ADMIN = "?"
"""The admin state shown while the shared record cannot be read."""


def build_snapshot(
    config: Config,
    families: Iterable[Metric],
    now: float | None = None,
    overrides: Mapping[ServerKey, Override] | None = _NO_OVERRIDES,
    *,
    reports: Iterable[ProcessReport] = (),
    process: ProcessStats | None = None,
    bans: Iterable[Ban] | None = None,
) -> Snapshot:
    """Lay out the collected ``families`` along the frontends and backends of ``config``.

    ``overrides`` is the shared record (:meth:`OverridesStore.load`); None
    when it cannot be read, and every admin state shows as unknown.
    ``reports`` are the processes' reports (their running transfers),
    ``process`` the header of the whole balancer, and ``bans`` the login
    defender's bans in force (None without a defender).
    """
    s = _Samples(families)
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    reports = list(reports)
    reasons = _check_reasons(reports)
    backends = tuple(
        _backend(config, index, s, overrides, _Extra(now, reasons))
        for index in range(len(config.backends))
    )
    frontends = tuple(_frontend(config, index, s) for index in range(len(config.frontends)))
    workers = int(sum(s.by("ftplb_worker_processes").values()))
    transfers = _transfers(reports, now)
    shown = None if bans is None else tuple(ban_info(ban, now) for ban in bans)
    return Snapshot(stamp, workers, frontends, backends, transfers, process, shown)


@dataclass(frozen=True, slots=True)
class _Extra:
    """What a backend's layout needs beside the samples."""

    now: float
    reasons: Mapping[tuple[str, str], str]


def _check_reasons(reports: Iterable[ProcessReport]) -> dict[tuple[str, str], str]:
    """The last check's detail per (backend, server); a failing one wins over processes."""
    reasons: dict[tuple[str, str], str] = {}
    failing: set[tuple[str, str]] = set()
    for report in reports:
        for check in report.checks:
            key = (str(check.get("backend", "")), str(check.get("server", "")))
            ok = check.get("ok") is True
            if key in failing or (key in reasons and ok):
                continue
            layer, detail = str(check.get("layer", "")), str(check.get("detail", ""))
            reasons[key] = f"{layer} {detail}".strip()
            if not ok:
                failing.add(key)
    return reasons


def _transfers(reports: Iterable[ProcessReport], now: float) -> tuple[TransferInProgress, ...]:
    """Every reported transfer, longest-running first; a malformed entry is left out."""
    found: list[TransferInProgress] = []
    for report in reports:
        for entry in report.transfers:
            try:
                started = float(entry["started"])
                worker = entry.get("worker")
                found.append(
                    TransferInProgress(
                        session=str(entry["session"]),
                        frontend=str(entry["frontend"]),
                        backend=str(entry["backend"]),
                        server=str(entry["server"]),
                        client=str(entry["client"]),
                        user=str(entry["user"]),
                        command=str(entry["command"]),
                        path=str(entry["path"]),
                        bytes=int(entry["bytes"]),
                        elapsed=round(max(now - started, 0.0), 3),
                        rate=float(entry["rate"]),
                        worker=None if worker is None else int(worker),
                    )
                )
            except (KeyError, ValueError, TypeError):
                continue
    found.sort(key=lambda transfer: -transfer.elapsed)
    return tuple(found)


def _backend(
    config: Config,
    index: int,
    s: _Samples,
    overrides: Mapping[ServerKey, Override] | None,
    extra: _Extra,
) -> BackendStats:
    backend = config.backends[index]
    name = backend.name
    current = s.present("ftplb_server_current_sessions", "backend", "server")
    states = s.present("ftplb_server_state", "backend", "server", "state")
    sessions = s.by("ftplb_sessions_total", "backend", "server")
    control = s.by("ftplb_control_bytes_total", "backend", "server", "direction")
    data = s.by("ftplb_transfer_bytes_total", "backend", "server", "direction")
    transfers = s.by("ftplb_transfers_total", "backend", "server")
    failures = s.by("ftplb_server_connect_failures_total", "backend", "server")
    checks = s.by("ftplb_health_checks_total", "backend", "server", "result")
    check_ok = s.present("ftplb_server_check_ok", "backend", "server")
    check_duration = s.present("ftplb_server_check_duration_seconds", "backend", "server")
    rate = s.by("ftplb_server_session_rate", "backend", "server")
    rate_max = s.present("ftplb_server_session_rate_max", "backend", "server")
    peak = s.present("ftplb_server_max_sessions", "backend", "server")
    warnings = s.by("ftplb_warnings_total", "backend", "server")
    retries = s.by("ftplb_server_retries_total", "backend", "server")
    redispatches = s.by("ftplb_server_redispatches_total", "backend", "server")
    logins = s.by("ftplb_logins_total", "backend", "server", "result")
    changed = s.present("ftplb_server_state_change_timestamp_seconds", "backend", "server")
    downtime = s.present("ftplb_server_downtime_seconds", "backend", "server")
    servers: list[ServerStats] = []
    for server in backend.servers:
        key = (name, server.name)
        current_sessions = int(current.get(key, 0))
        session_rate = rate.get(key, 0.0)
        seen = [st.value for st in ServerState if states.get((*key, st.value), 0) >= 1]
        checks_ok = int(checks.get((*key, "ok"), 0))
        checks_failed = int(checks.get((*key, "fail"), 0))
        checked = checks_ok + checks_failed > 0
        override = None if overrides is None else overrides.get(key, Override())
        servers.append(
            ServerStats(
                name=server.name,
                address=str(server.address),
                weight=server.weight
                if override is None
                else override.effective_weight(server.weight),
                state="/".join(seen) or "-",
                current_sessions=current_sessions,
                sessions=int(sessions.get(key, 0)),
                bytes_in=int(control.get((*key, "in"), 0) + data.get((*key, "in"), 0)),
                bytes_out=int(control.get((*key, "out"), 0) + data.get((*key, "out"), 0)),
                transfers=int(transfers.get(key, 0)),
                connect_failures=int(failures.get(key, 0)),
                last_check=("ok" if check_ok.get(key, 1) >= 1 else "failed") if checked else "-",
                last_check_duration=check_duration.get(key) if checked else None,
                checks_ok=checks_ok,
                checks_failed=checks_failed,
                admin=UNKNOWN_ADMIN if override is None else override.admin.value,
                admin_by="" if override is None else override.user,
                configured_weight=server.weight,
                session_rate=session_rate,
                session_rate_max=max(rate_max.get(key, 0.0), session_rate),
                max_sessions=int(max(peak.get(key, 0), current_sessions)),
                session_limit=server.max_connections,
                errors=int(failures.get(key, 0)),
                warnings=int(warnings.get(key, 0)),
                retries=int(retries.get(key, 0)),
                redispatches=int(redispatches.get(key, 0)),
                logins=int(logins.get((*key, "ok"), 0)),
                failed_logins=int(logins.get((*key, "failed"), 0)),
                state_since=round(max(extra.now - changed[key], 0.0), 3)
                if key in changed
                else None,
                downtime=downtime.get(key, 0.0),
                last_check_reason=extra.reasons.get(key, ""),
            )
        )
    return BackendStats(
        name=name,
        balance=backend.balance,
        servers=tuple(servers),
        servers_up=sum(1 for server in servers if server.state == ServerState.UP.value),
        current_sessions=sum(server.current_sessions for server in servers),
        sessions=sum(server.sessions for server in servers),
        bytes_in=sum(server.bytes_in for server in servers),
        bytes_out=sum(server.bytes_out for server in servers),
        transfers=sum(server.transfers for server in servers),
        connect_failures=sum(server.connect_failures for server in servers),
    )


def _frontend(config: Config, index: int, s: _Samples) -> FrontendStats:
    frontend = config.frontends[index]
    key = (frontend.name,)
    control = s.by("ftplb_control_bytes_total", "frontend", "direction")
    data = s.by("ftplb_transfer_bytes_total", "frontend", "direction")
    ends = s.by("ftplb_session_ends_total", "frontend", "reason")
    results = s.by("ftplb_transfers_total", "frontend", "command", "result")
    passive = s.by("ftplb_passive_listeners_total", "frontend", "result")
    current = int(s.by("ftplb_frontend_current_sessions", "frontend").get(key, 0))
    rate = s.by("ftplb_frontend_session_rate", "frontend").get(key, 0.0)
    logins = s.by("ftplb_logins_total", "frontend", "result")
    return FrontendStats(
        name=frontend.name,
        mode=frontend.mode,
        binds=tuple(str(bind) for bind in frontend.bind),
        backend=frontend.backend,
        current_sessions=current,
        sessions=int(s.by("ftplb_frontend_sessions_total", "frontend").get(key, 0)),
        bytes_in=int(control.get((*key, "in"), 0) + data.get((*key, "in"), 0)),
        bytes_out=int(control.get((*key, "out"), 0) + data.get((*key, "out"), 0)),
        transfers=int(s.by("ftplb_transfers_total", "frontend").get(key, 0)),
        refusals=int(s.by("ftplb_refusals_total", "frontend").get(key, 0)),
        end_reasons=_nonzero(
            {reason: value for (name, reason), value in ends.items() if name == frontend.name}
        ),
        transfer_results=_nonzero(
            {
                f"{command} {result}": value
                for (name, command, result), value in sorted(results.items())
                if name == frontend.name
            }
        ),
        passive_listeners=int(passive.get((*key, "opened"), 0)),
        passive_listener_failures=int(passive.get((*key, "failed"), 0)),
        data_connections_refused=int(
            s.by("ftplb_data_connections_refused_total", "frontend").get(key, 0)
        ),
        session_rate=rate,
        session_rate_max=max(
            s.present("ftplb_frontend_session_rate_max", "frontend").get(key, 0.0), rate
        ),
        max_sessions=int(
            max(s.present("ftplb_frontend_max_sessions", "frontend").get(key, 0), current)
        ),
        session_limit=frontend.max_connections,
        errors=int(sum(ends.get((frontend.name, reason), 0) for reason in _CLIENT_ERRORS)),
        warnings=int(s.by("ftplb_warnings_total", "frontend").get(key, 0)),
        logins=int(logins.get((*key, "ok"), 0)),
        failed_logins=int(logins.get((*key, "failed"), 0)),
    )


_CLIENT_ERRORS = ("client_reset", "client_tls_failed")
"""Session ends that count as a frontend's errors: the client's side broke."""


def _nonzero(counts: dict[str, float]) -> dict[str, int]:
    return {key: int(value) for key, value in sorted(counts.items()) if value}


def snapshot_dict(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as plain JSON-ready data, with the schema's ``version`` first."""
    return {"version": STATS_VERSION, **asdict(snapshot)}
