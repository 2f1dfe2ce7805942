"""Reading strace -c's summary table."""

from __future__ import annotations

from benchmarks.strace_counts import SyscallCount, syscall_counts

SUMMARY = """\
strace: Process 41 attached
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 61.02    0.001000          10       100           write
 20.00    0.000300           1       300       150 epoll_ctl
  0.00    0.000000           0         2           close
------ ----------- ----------- --------- --------- ----------------
100.00    0.001300           3       402       150 total
"""


def test_counts_per_call_with_errors_and_without_the_total() -> None:
    assert syscall_counts(SUMMARY) == {
        "write": SyscallCount(100, 0),
        "epoll_ctl": SyscallCount(300, 150),
        "close": SyscallCount(2, 0),
    }
