"""CPU time and resident memory of a process tree, read from /proc.

A balancer under test is one process (ftplb, HAProxy) or a parent with one
child per session (ProFTPD). Its cost is counted over the whole tree:

    cpu(tree) = utime + stime of the root and of every live descendant
              + cutime + cstime of the root (children it has already reaped)

so a session child that ends between two readings is counted once, whether it
was alive at the first reading or not. Zombies still show their times.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class StatFields:
    """The fields of /proc/<pid>/stat this module uses (times in clock ticks)."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    rss_pages: int


def parse_stat(text: str) -> StatFields:
    """Parse one /proc/<pid>/stat line.

    The command name (field 2) is in parentheses and may hold spaces or ")",
    so the fields are counted from the last ")".
    """
    pid_text, _, rest = text.partition(" (")
    fields = rest[rest.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5).
    return StatFields(
        pid=int(pid_text),
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
        rss_pages=int(fields[21]),
    )


def read_stat(pid: int) -> StatFields | None:
    """The stat fields of ``pid``, or None when it is gone."""
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def context_switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of ``pid`` so far; (0, 0) when it is gone."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return (
        int(fields.get("voluntary_ctxt_switches", "0")),
        int(fields.get("nonvoluntary_ctxt_switches", "0")),
    )


def all_stats() -> list[StatFields]:
    stats = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                stats.append(stat)
    return stats


def descendants(root: int, stats: Iterable[StatFields]) -> list[StatFields]:
    """Every process below ``root`` in the parent tree (not ``root`` itself)."""
    children: dict[int, list[StatFields]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
    found: list[StatFields] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def tree_cpu_ticks(root: StatFields, below: Iterable[StatFields]) -> int:
    """CPU ticks of a tree, with the root's reaped children (see module docstring)."""
    total = root.utime + root.stime + root.cutime + root.cstime
    return total + sum(s.utime + s.stime for s in below)


def cpu_seconds(pid: int, *, with_children: bool = True) -> float:
    """User + system CPU seconds used so far by ``pid`` (and its process tree)."""
    root = read_stat(pid)
    if root is None:
        raise ProcessLookupError(pid)
    below = descendants(pid, all_stats()) if with_children else []
    return tree_cpu_ticks(root, below) / CLOCK_TICKS


def rss_bytes(pid: int, *, with_children: bool = True) -> int:
    """Resident set size of ``pid`` (summed over its process tree), in bytes."""
    root = read_stat(pid)
    if root is None:
        raise ProcessLookupError(pid)
    below = descendants(pid, all_stats()) if with_children else []
    return (root.rss_pages + sum(s.rss_pages for s in below)) * PAGE_SIZE


def child_count(pid: int) -> int:
    """How many processes are below ``pid`` right now (zombies included)."""
    return len(descendants(pid, all_stats()))
