"""One large RETR or STOR through a path with curl (EPSV), and the balancer's CPU for it.

Throughput is the payload size over curl's own transfer time:
``time_total - time_pretransfer``, which starts once the transfer command has
been sent and ends with the final reply, so the login and the data-connection
set-up are left out and a held-back 226 is counted in.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks import procstat

Op = Literal["retr", "stor"]
GiB = 1024**3
CHILD_SETTLE_TIMEOUT = 5.0

# curl -w fields, in this order.
_WRITE_OUT = "%{size_download} %{size_upload} %{time_pretransfer} %{time_total}"


class TransferError(RuntimeError):
    """A transfer failed or moved the wrong number of bytes."""


@dataclass(frozen=True, slots=True)
class TransferSample:
    op: Op
    size: int
    seconds: float  # the transfer itself (see module docstring)
    wall_seconds: float  # the whole curl run, login included
    cpu_seconds: float | None  # the balancer's, None for the direct path

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6

    @property
    def cpu_s_per_gib(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds / (self.size / GiB)


def curl_argv(
    op: Op, url: str, source: str, upload_from: Path | None, max_time: float
) -> list[str]:
    """curl in passive mode with EPSV first, the 229/227 address honoured, verbose trace."""
    argv = [
        "curl",
        "--silent",
        "--show-error",
        "--verbose",
        "--ftp-pasv",
        "--no-ftp-skip-pasv-ip",
        "--interface",
        source,
        "--connect-timeout",
        "10",
        "--max-time",
        str(int(max_time)),
        "--write-out",
        _WRITE_OUT,
    ]
    if op == "retr":
        argv += ["--output", "/dev/null"]
    else:
        if upload_from is None:
            raise ValueError("STOR needs a file to upload")
        argv += ["--upload-file", str(upload_from)]
    return [*argv, url]


def parse_write_out(text: str) -> tuple[int, int, float, float]:
    """(size_download, size_upload, time_pretransfer, time_total) from curl's -w output."""
    fields = text.split()
    if len(fields) != 4:
        raise TransferError(f"unexpected curl --write-out output {text!r}")
    return int(fields[0]), int(fields[1]), float(fields[2]), float(fields[3])


def used_epsv(trace: str) -> bool:
    """True when the trace shows EPSV sent and a 229 received (curl falls back silently)."""
    lines = trace.splitlines()
    return any(line.startswith("> EPSV") for line in lines) and any(
        line.startswith("< 229") for line in lines
    )


def _wait_for_session_children(pid: int) -> None:
    """A forking balancer's session child must be reaped before its CPU is read."""
    deadline = time.monotonic() + CHILD_SETTLE_TIMEOUT
    while procstat.child_count(pid) > 0 and time.monotonic() < deadline:
        time.sleep(0.02)


def transfer(
    op: Op,
    target: tuple[str, int],
    credentials: tuple[str, str],
    remote_name: str,
    size: int,
    *,
    source: str,
    upload_from: Path | None = None,
    balancer_pid: int | None = None,
    forks_sessions: bool = False,
) -> TransferSample:
    """Move ``size`` bytes once; raise TransferError unless exactly that many moved over EPSV."""
    host, port = target
    user, password = credentials
    url = f"ftp://{user}:{password}@{host}:{port}/{remote_name}"
    max_time = 60 + size / 20e6  # no path is slower than 20 MB/s
    argv = curl_argv(op, url, source, upload_from, max_time)
    cpu_before = procstat.cpu_seconds(balancer_pid) if balancer_pid is not None else None
    started = time.perf_counter()
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=max_time + 10, check=False
    )
    wall = time.perf_counter() - started
    cpu: float | None = None
    if balancer_pid is not None and cpu_before is not None:
        if forks_sessions:
            _wait_for_session_children(balancer_pid)
        cpu = procstat.cpu_seconds(balancer_pid) - cpu_before
    if completed.returncode != 0:
        raise TransferError(
            f"curl {op} {url} exited with {completed.returncode}: {completed.stderr[-1500:]}"
        )
    if not used_epsv(completed.stderr):
        raise TransferError(f"curl {op} {url} did not use EPSV:\n{completed.stderr[-1500:]}")
    downloaded, uploaded, pretransfer, total = parse_write_out(completed.stdout)
    moved = downloaded if op == "retr" else uploaded
    if moved != size:
        raise TransferError(f"curl {op} {url} moved {moved} bytes, not {size}")
    seconds = total - pretransfer
    if seconds <= 0:
        seconds = total
    return TransferSample(op, size, seconds, wall, cpu)
