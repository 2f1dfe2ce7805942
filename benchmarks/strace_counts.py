"""System calls counted by ``strace -c``: read its summary table.

The table lists, per system call, the share of time, seconds, microseconds
per call, calls, errors (blank when none) and the name; a ``total`` row ends
it. Only the counts are kept: strace's own overhead makes its times no
measure of anything.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SyscallCount", "syscall_counts"]


@dataclass(frozen=True, slots=True)
class SyscallCount:
    calls: int
    errors: int


def syscall_counts(summary: str) -> dict[str, SyscallCount]:
    """Calls and errors per system call name, the ``total`` row left out."""
    counts: dict[str, SyscallCount] = {}
    for line in summary.splitlines():
        fields = line.split()
        if len(fields) not in (5, 6) or not fields[0][0].isdigit():
            continue  # headers, rulers, strace's own messages
        name = fields[-1]
        if name == "total":
            continue
        errors = int(fields[4]) if len(fields) == 6 else 0
        counts[name] = SyscallCount(calls=int(fields[3]), errors=errors)
    return counts
