"""The stats tables as plain data: what the page and the terminal views both show.

A :class:`Table` is grouped columns (HAProxy's "Sessions: Cur, Max, Limit,
Total", "Bytes: In, Out" ...) and rows of text :class:`Cell` s. The HTML
page (:mod:`ftplb.admin.stats_page`) and ``ftplb status`` / ``ftplb top``
(:mod:`ftplb.console`) each lay the same tables out in their own medium, so
the two never disagree on a column or on how a value reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ftplb.admin.snapshot import (
    BackendStats,
    BanInfo,
    FrontendStats,
    ServerStats,
    Snapshot,
    TransferInProgress,
)
from ftplb.admin.units import count, human_bytes, human_duration, human_rate, sessions_rate
from ftplb.balancing.state import AdminState

__all__ = [
    "STATE_CLASSES",
    "Cell",
    "Group",
    "Row",
    "Table",
    "backend_table",
    "bans_table",
    "frontend_table",
    "process_facts",
    "tables",
    "transfers_table",
]

STATE_CLASSES = {"UP": "up", "DOWN": "down", "DRAIN": "drain", "MAINT": "maint", "-": "unknown"}
"""A server state's class (its colour); a mixed state such as "UP/DOWN" is "mixed"."""


@dataclass(frozen=True, slots=True)
class Cell:
    """One value as shown, with the exact value or an explanation in ``title``."""

    text: str
    title: str = ""
    css: str = ""
    """Space-separated classes: "name", "state up", "admin set" ..."""


@dataclass(frozen=True, slots=True)
class Group:
    """Columns under one heading; the heading is "" for the leading columns."""

    name: str
    columns: tuple[str, ...]
    short: str = ""
    """A shorter heading for a terminal, where width is scarce ("" to use ``name``)."""


@dataclass(frozen=True, slots=True)
class Row:
    cells: tuple[Cell, ...]
    css: str = ""
    """"total" for a backend's sum; the state class for a server."""
    server: ServerStats | None = None
    """The server of the row, for its buttons on the page."""


@dataclass(frozen=True, slots=True)
class Table:
    kind: str
    """"frontend", "backend", "transfers" or "bans"."""
    name: str
    """What the table is of: a frontend's or a backend's name; "" for the transfers."""
    title: str
    groups: tuple[Group, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()
    """Lines under the table (plain text)."""
    empty: str = ""
    """What to say instead of a table without rows."""
    optional: frozenset[tuple[str, str]] = frozenset()
    """Columns (group, column) a terminal leaves out first when the table is too wide."""
    essential: frozenset[tuple[str, str]] = frozenset()
    """The columns a terminal keeps when the table is still too wide; empty: all."""


def _limit(value: int) -> Cell:
    return Cell(count(value)) if value > 0 else Cell("-", "unlimited")


def _bytes(value: int, css: str = "") -> Cell:
    return Cell(human_bytes(value), f"{count(value)} bytes", css)


def _peak(peak: int, current: int) -> Cell:
    # A peak is never below what is open now, even before the peak is first sampled.
    return Cell(count(max(peak, current)))


def _rate(value: float) -> Cell:
    return Cell(sessions_rate(value), f"{value:.2f} new sessions per second")


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key}: {count(value)}" for key, value in counts.items()) or "none"


_SESSION_GROUPS = (
    Group("Session rate", ("Cur", "Max", "Limit"), "Rate"),
    Group("Sessions", ("Cur", "Max", "Limit", "Total"), "Sess"),
    Group("Bytes", ("In", "Out")),
)


def frontend_table(frontend: FrontendStats) -> Table:
    groups = (
        Group("", ("Frontend", "Mode", "Bind", "Backend")),
        *_SESSION_GROUPS,
        Group("Denied", ("Refused", "Data"), "Deny"),
        Group("Errors", ("Client",), "Err"),
        Group("Warnings", ("Warn",), "Wrn"),
        Group("FTP", ("Transfers", "Logins", "Failed", "Passive", "Pasv failed")),
    )
    cells = (
        Cell(frontend.name, css="name"),
        Cell(frontend.mode, css="text"),
        Cell(" ".join(frontend.binds), css="text"),
        Cell(frontend.backend, css="text"),
        _rate(frontend.session_rate),
        _rate(frontend.session_rate_max),
        _limit(frontend.session_rate_limit),
        Cell(count(frontend.current_sessions)),
        _peak(frontend.max_sessions, frontend.current_sessions),
        _limit(frontend.session_limit),
        Cell(count(frontend.sessions)),
        _bytes(frontend.bytes_in),
        _bytes(frontend.bytes_out),
        Cell(count(frontend.refusals), "clients answered 421: over a limit, or no server"),
        Cell(count(frontend.data_connections_refused), "data connections refused"),
        Cell(count(frontend.errors), "sessions ended on a protocol error or a reset"),
        Cell(count(frontend.warnings)),
        Cell(count(frontend.transfers)),
        Cell(count(frontend.logins)),
        Cell(count(frontend.failed_logins)),
        Cell(count(frontend.passive_listeners), "passive listeners opened"),
        Cell(count(frontend.passive_listener_failures), "passive listeners that failed"),
    )
    return Table(
        kind="frontend",
        name=frontend.name,
        title=f"Frontend {frontend.name}",
        groups=groups,
        rows=(Row(cells),),
        notes=(
            f"Session ends: {_counts(frontend.end_reasons)}",
            f"Transfers: {_counts(frontend.transfer_results)}",
        ),
        optional=frozenset({("", "Bind"), ("FTP", "Passive"), ("FTP", "Pasv failed")}),
        essential=frozenset(
            {
                ("", "Frontend"),
                ("Sessions", "Cur"),
                ("Sessions", "Total"),
                ("Bytes", "In"),
                ("Bytes", "Out"),
                ("Denied", "Refused"),
                ("FTP", "Transfers"),
            }
        ),
    )


def _status(server: ServerStats) -> Cell:
    css = f"state {STATE_CLASSES.get(server.state, 'mixed')}"
    if server.state_since is None:
        return Cell(server.state, css=css)
    since = human_duration(server.state_since)
    return Cell(f"{server.state} {since}", f"{server.state} for {since}", css)


def _check(server: ServerStats) -> Cell:
    if server.last_check_reason:
        text = f"{server.last_check}: {server.last_check_reason}"
        if server.last_check_duration is not None:
            text += f", {server.last_check_duration * 1000:.0f} ms"
        return Cell(text, text, "check")
    if server.last_check_duration is None:
        return Cell(server.last_check, css="check")
    return Cell(f"{server.last_check} in {server.last_check_duration * 1000:.0f} ms", css="check")


def _weight(server: ServerStats) -> Cell:
    if server.configured_weight is not None and server.configured_weight != server.weight:
        # A runtime weight is in force.
        return Cell(f"{server.weight} (file: {server.configured_weight})")
    return Cell(str(server.weight))


def _admin(server: ServerStats) -> Cell:
    css = "admin" if server.admin == AdminState.READY.value else "admin set"
    return Cell(server.admin, f"set by {server.admin_by}" if server.admin_by else "", css)


_SERVER_GROUPS = (
    Group("", ("Server", "Address")),
    # A server has no session rate limit of its own.
    Group("Session rate", ("Cur", "Max"), "Rate"),
    *_SESSION_GROUPS[1:],
    Group("Errors", ("Conn", "Total"), "Err"),
    Group("Warnings", ("Warn", "Retr", "Redis"), "Warn"),
    Group("FTP", ("Transfers", "Logins", "Failed")),
    Group("Server", ("Status", "Last check", "Weight", "Admin", "Checks", "Downtime")),
)


def _server_row(server: ServerStats) -> Row:
    cells = (
        Cell(server.name, css="name"),
        Cell(server.address, css="text"),
        _rate(server.session_rate),
        _rate(server.session_rate_max),
        Cell(count(server.current_sessions)),
        _peak(server.max_sessions, server.current_sessions),
        _limit(server.session_limit),
        Cell(count(server.sessions)),
        _bytes(server.bytes_in),
        _bytes(server.bytes_out),
        Cell(count(server.connect_failures), "connects that failed"),
        Cell(count(server.errors), "connects and server dialogues that failed"),
        Cell(count(server.warnings)),
        Cell(count(server.retries), "connects retried"),
        Cell(count(server.redispatches), "sessions sent on to another server"),
        Cell(count(server.transfers)),
        Cell(count(server.logins)),
        Cell(count(server.failed_logins)),
        _status(server),
        _check(server),
        _weight(server),
        _admin(server),
        Cell(f"{count(server.checks_ok)}/{count(server.checks_failed)}", "checks ok / failed"),
        Cell(human_duration(server.downtime), "time spent DOWN since start"),
    )
    return Row(cells, STATE_CLASSES.get(server.state, "mixed"), server)


def _total_row(backend: BackendStats) -> Row:
    servers = backend.servers
    blank = Cell("")
    cells = (
        Cell("BACKEND", css="name"),
        Cell(f"balance {backend.balance}", css="text"),
        _rate(sum(s.session_rate for s in servers)),
        blank,
        Cell(count(backend.current_sessions)),
        blank,
        blank,
        Cell(count(backend.sessions)),
        _bytes(backend.bytes_in),
        _bytes(backend.bytes_out),
        Cell(count(backend.connect_failures)),
        Cell(count(sum(s.errors for s in servers))),
        Cell(count(sum(s.warnings for s in servers))),
        Cell(count(sum(s.retries for s in servers))),
        Cell(count(sum(s.redispatches for s in servers))),
        Cell(count(backend.transfers)),
        Cell(count(sum(s.logins for s in servers))),
        Cell(count(sum(s.failed_logins for s in servers))),
        Cell(f"{backend.servers_up}/{len(servers)} UP"),
        blank,
        blank,
        blank,
        blank,
        blank,
    )
    return Row(cells, "total")


def backend_table(backend: BackendStats) -> Table:
    rows = (*(_server_row(server) for server in backend.servers), _total_row(backend))
    return Table(
        kind="backend",
        name=backend.name,
        title=f"Backend {backend.name}",
        groups=_SERVER_GROUPS,
        rows=rows,
        optional=frozenset({("", "Address")}),
        essential=frozenset(
            {
                ("", "Server"),
                ("Sessions", "Cur"),
                ("Sessions", "Total"),
                ("Bytes", "In"),
                ("Bytes", "Out"),
                ("FTP", "Transfers"),
                ("Server", "Status"),
                ("Server", "Last check"),
                ("Server", "Admin"),
            }
        ),
    )


_TRANSFER_GROUPS = (
    Group(
        "",
        ("Session", "Client", "User", "Server", "Verb", "Path", "Bytes", "Rate", "Elapsed"),
    ),
)


def _transfer_row(transfer: TransferInProgress) -> Row:
    where = f"{transfer.backend}/{transfer.server}"
    worker = "" if transfer.worker is None else f", worker {transfer.worker}"
    cells = (
        Cell(transfer.session, f"frontend {transfer.frontend}{worker}", "name"),
        Cell(transfer.client, css="text"),
        Cell(transfer.user, css="text"),
        Cell(where, css="text"),
        Cell(transfer.command, css="text"),
        Cell(transfer.path, transfer.path, "text path"),
        _bytes(transfer.bytes, "bytes"),
        Cell(human_rate(transfer.rate), css="rate"),
        Cell(human_duration(transfer.elapsed), css="elapsed"),
    )
    return Row(cells, "transfer")


def transfers_table(transfers: tuple[TransferInProgress, ...]) -> Table:
    return Table(
        kind="transfers",
        name="",
        title="Transfers in progress",
        groups=_TRANSFER_GROUPS,
        rows=tuple(_transfer_row(transfer) for transfer in transfers),
        empty="No transfer in progress.",
        optional=frozenset({("", "Client")}),
    )


_BAN_GROUPS = (Group("", ("Address", "Since", "Until", "Left", "Offence")),)


def _ban_row(ban: BanInfo) -> Row:
    cells = (
        Cell(ban.address, css="name"),
        Cell(ban.since, css="text"),
        Cell(ban.until, css="text"),
        Cell(human_duration(ban.remaining), f"{ban.remaining} s", "elapsed"),
        Cell(str(ban.offence), "1: a first ban; each repeat doubles it", "count"),
    )
    return Row(cells, "ban")


def bans_table(bans: tuple[BanInfo, ...]) -> Table:
    return Table(
        kind="bans",
        name="",
        title="Banned client addresses",
        groups=_BAN_GROUPS,
        rows=tuple(_ban_row(ban) for ban in bans),
        empty="No client address is banned.",
        optional=frozenset({("", "Since")}),
    )


def tables(snapshot: Snapshot) -> list[Table]:
    """Every table of the page, in its order: frontends, backends, transfers in progress,
    and the login defender's bans when there is a defender."""
    bans = [] if snapshot.bans is None else [bans_table(snapshot.bans)]
    return [
        *(frontend_table(frontend) for frontend in snapshot.frontends),
        *(backend_table(backend) for backend in snapshot.backends),
        transfers_table(snapshot.transfers),
        *bans,
    ]


def process_facts(snapshot: Snapshot) -> list[tuple[str, str]]:
    """The header line: (label, value) pairs, the reading's time last."""
    process = snapshot.process
    facts: list[tuple[str, str]] = []
    if process is not None:
        facts += [
            ("version", process.version),
            ("pid", str(process.pid)),
            ("uptime", human_duration(process.uptime)),
            ("workers", str(process.workers)),
            ("generation", str(process.generation)),
        ]
    facts += [("processes reporting", str(snapshot.workers)), ("read at", snapshot.generated)]
    return facts
