"""Helpers for tests of ``workers = N``: the master's log, its processes, per-worker records."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from ftplb.config.fields import PortRange
from tests.integration.balancer import RunningBalancer, log_fields
from tests.support import wait_until

READY_TIMEOUT = 20.0


def ready_count(lb: RunningBalancer) -> int:
    return lb.log_text().count('message="workers ready"')


def wait_ready(lb: RunningBalancer) -> None:
    """Wait until the master reports every worker listening (``start_balancer``
    returns as soon as the first one listens)."""
    wait_until(lambda: ready_count(lb) >= 1, READY_TIMEOUT, "workers ready")


def records(lb: RunningBalancer, kind: str) -> list[dict[str, str]]:
    return [log_fields(line) for line in lb.log_lines(kind)]


def messages(lb: RunningBalancer, message: str) -> list[dict[str, str]]:
    """The info/warning records of the master or a worker with ``message``."""
    return [
        fields
        for kind in ("info", "warning")
        for fields in records(lb, kind)
        if fields.get("message") == message
    ]


def started_pids(lb: RunningBalancer) -> dict[int, list[int]]:
    """Worker index -> PIDs of every process started for it, in order."""
    pids: dict[int, list[int]] = {}
    for fields in messages(lb, "worker started"):
        pids.setdefault(int(fields["worker"]), []).append(int(fields["pid"]))
    return pids


def current_pids(lb: RunningBalancer) -> dict[int, int]:
    """Worker index -> PID of the process started last for it."""
    return {index: pids[-1] for index, pids in started_pids(lb).items()}


def slices(lb: RunningBalancer, frontend: str = "ftp") -> dict[int, PortRange]:
    """Worker index -> its logged passive port slice (the last one logged)."""
    found: dict[int, PortRange] = {}
    for fields in messages(lb, "passive port slice"):
        if fields.get("frontend") == frontend:
            first, _, last = fields["ports"].partition("-")
            found[int(fields["worker"])] = PortRange(int(first), int(last or first))
    return found


def source_of(record: dict[str, str]) -> str:
    client = record.get("client", "")
    return client.rpartition(":")[0] if ":" in client else client


def sessions_by_source(lb: RunningBalancer) -> dict[str, list[dict[str, str]]]:
    """Session records that reached a server, grouped by client address."""
    grouped: dict[str, list[dict[str, str]]] = {}
    for record in records(lb, "session"):
        if record.get("server", "-") != "-":
            grouped.setdefault(source_of(record), []).append(record)
    return grouped


def is_gone(pid: int) -> bool:
    """True when no process ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


PASV_PORT_RE = re.compile(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")
EPSV_PORT_RE = re.compile(r"\(\|\|\|(\d+)\|\)")


def advertised_port(reply: str) -> int:
    """The port of a 227 or 229 reply."""
    epsv = EPSV_PORT_RE.search(reply)
    if epsv is not None:
        return int(epsv[1])
    pasv = PASV_PORT_RE.search(reply)
    assert pasv is not None, reply
    return int(pasv[5]) * 256 + int(pasv[6])


@contextlib.contextmanager
def holding_port(host: str, port: int) -> Iterator[None]:
    """A plain listener (no SO_REUSEPORT) on ``host:port``, so nobody else can bind it."""
    import socket  # noqa: PLC0415

    with socket.create_server((host, port), reuse_port=False) as sock:
        assert sock.getsockname()[1] == port
        yield
