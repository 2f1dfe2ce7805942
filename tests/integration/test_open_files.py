"""ftplb raises its own open-files soft limit to the hard one at start, as HAProxy does."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from tests.integration.balancer import RunningBalancer, balancer, log_fields, startup_error_config
from tests.integration.workers_farm import current_pids
from tests.support import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


def open_files_limits(pid: int) -> tuple[int, int]:
    """The soft and hard open-files limits of ``pid``, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files line in /proc/{pid}/limits")


def raised_lines(lb: RunningBalancer) -> list[dict[str, str]]:
    return [log_fields(line) for line in lb.log_lines("info") if "open files limit raised" in line]


@pytest.mark.parametrize("workers", [1, 2])
def test_ftplb_raises_its_soft_limit_once_and_workers_inherit_it(workers: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = hard // 2
    port = free_port(HOST)
    # prlimit (util-linux) sets the limits and execs ftplb in its place: the same PID.
    with balancer(
        startup_error_config(port, workers=workers),
        HOST,
        port,
        wrapper=["prlimit", f"--nofile={soft}:{hard}", "--"],
    ) as lb:
        processes = [lb.process.pid, *current_pids(lb).values()]
        assert len(processes) == 1 + (workers if workers > 1 else 0)
        assert [open_files_limits(pid) for pid in processes] == [(hard, hard)] * len(processes)
        # Said once, by the process that raised it: the lone one, or the master.
        [line] = raised_lines(lb)
        assert (line["before"], line["limit"]) == (str(soft), str(hard))
