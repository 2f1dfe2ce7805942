"""ftplb raises its own open-files soft limit to the hard one at start, as HAProxy does."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.balancer import log_fields, startup_error_config
from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration

RAISED = "open files limit raised"
FTPLB_RUN = [sys.executable, "-m", "ftplb", "run", "-c"]


def open_files_limits(pid: int) -> tuple[int, int]:
    """The soft and hard open-files limits of ``pid``, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files line in /proc/{pid}/limits")


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


@contextmanager
def ftplb_with_soft_limit(
    tmp_path: Path, soft: int, workers: int, ready_line: str
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``ftplb run`` started with ``soft`` open files (the hard limit unchanged)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    config = tmp_path / "ftplb.toml"
    config.write_text(startup_error_config(free_port("127.0.0.1"), workers=workers))
    log = tmp_path / "ftplb.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            # prlimit (util-linux) sets the limits and execs ftplb in place: same PID.
            ["prlimit", f"--nofile={soft}:{hard}", "--", *FTPLB_RUN, str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: ready_line in log.read_text(), 30, ready_line)
        yield process, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def raised_lines(log: Path) -> list[dict[str, str]]:
    return [log_fields(line) for line in log.read_text().splitlines() if RAISED in line]


def test_a_lone_process_raises_its_soft_limit_and_says_so(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = hard // 2
    with ftplb_with_soft_limit(tmp_path, soft, 1, "message=listening") as (process, log):
        assert open_files_limits(process.pid) == (hard, hard)
        [line] = raised_lines(log)
        assert (line["before"], line["limit"]) == (str(soft), str(hard))


def test_workers_inherit_the_limit_their_master_raised(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = hard // 2
    with ftplb_with_soft_limit(tmp_path, soft, 2, "workers ready") as (process, log):
        workers = children(process.pid)
        assert len(workers) == 2
        assert [open_files_limits(pid) for pid in (process.pid, *workers)] == [(hard, hard)] * 3
        # Only the master raised it; the workers started with it.
        [line] = raised_lines(log)
        assert (line["before"], line["limit"]) == (str(soft), str(hard))
