"""One large RETR or STOR through a path with curl (EPSV), and the balancer's CPU for it.

:func:`tls_transfer` does the same over FTPS with a small Python client, for
the TLS paths (see its docstring for why not curl).

Throughput is the payload size over curl's own transfer time:
``time_total - time_pretransfer``, which starts once the transfer command has
been sent and ends with the final reply, so the login and the data-connection
set-up are left out and a held-back 226 is counted in.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
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


# --------------------------------------------------------------------------- FTPS

_FTPS_CHUNK = 1024 * 1024


class _FtpsControl:
    """A minimal blocking FTP(S) control connection for :func:`tls_transfer`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._file = sock.makefile("rb")

    def upgrade(self, context: ssl.SSLContext, host: str) -> None:
        self._file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname=host)
        self._file = self.sock.makefile("rb")

    def reply(self) -> tuple[int, str]:
        line = self._file.readline().decode("utf-8", "replace")
        if len(line) < 4:
            raise TransferError(f"control connection closed (got {line!r})")
        code, text = int(line[:3]), line
        if line[3] == "-":
            while True:
                more = self._file.readline().decode("utf-8", "replace")
                if not more:
                    raise TransferError("control connection closed in a multi-line reply")
                text += more
                if more[:3] == line[:3] and more[3:4] == " ":
                    break
        return code, text.strip()

    def command(self, line: str, *expected: int) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        code, text = self.reply()
        while code // 100 == 1:
            code, text = self.reply()
        if expected and code not in expected:
            raise TransferError(f"{line.split(maxsplit=1)[0]} got {text!r}")
        return text

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
            self.sock.close()


def _epsv_port(text: str) -> int:
    inside = text[text.index("(") + 1 : text.index(")")]
    return int(inside.strip(inside[0])) if inside else 0


def tls_transfer(
    op: Op,
    target: tuple[str, int],
    credentials: tuple[str, str],
    remote_name: str,
    size: int,
    *,
    source: str,
    ca_file: Path,
    implicit: bool,
    upload_from: Path | None = None,
    balancer_pid: int | None = None,
) -> TransferSample:
    """Move ``size`` bytes once over FTPS, with TLS data (EPSV), timed like :func:`transfer`.

    Explicit: AUTH TLS, PBSZ 0, PROT P.  Implicit: TLS from the first byte,
    and no PBSZ/PROT: a TLS-terminating TCP proxy (HAProxy ``ssl crt``) passes
    them to a server that knows no TLS; the data connection is TLS anyway,
    since the proxy terminates TLS on the passive ports as well.

    Not curl: behind HAProxy the server refuses PROT P (it knows no TLS), and
    curl then falls back to clear data connections, which the proxy's TLS
    ports refuse.  This client is Python's ssl module with 1 MiB reads and
    writes, the same for every TLS path, so the ratios compare the balancers.
    """
    host, port = target
    user, password = credentials
    context = ssl.create_default_context(cafile=str(ca_file))
    cpu_before = procstat.cpu_seconds(balancer_pid) if balancer_pid is not None else None
    started = time.perf_counter()
    raw = socket.create_connection((host, port), timeout=60, source_address=(source, 0))
    control = _FtpsControl(context.wrap_socket(raw, server_hostname=host) if implicit else raw)
    moved = 0
    try:
        code, text = control.reply()
        if code != 220:
            raise TransferError(f"banner {text!r}")
        if not implicit:
            control.command("AUTH TLS", 234)
            control.upgrade(context, host)
        control.command(f"USER {user}", 331, 230)
        control.command(f"PASS {password}", 230)
        if not implicit:
            control.command("PBSZ 0", 200)
            control.command("PROT P", 200)
        control.command("TYPE I", 200)
        data_port = _epsv_port(control.command("EPSV", 229))
        plain = socket.create_connection((host, data_port), timeout=60, source_address=(source, 0))
        begun = time.perf_counter()
        verb = "RETR" if op == "retr" else "STOR"
        control.sock.sendall(f"{verb} {remote_name}\r\n".encode())
        session = control.sock.session if isinstance(control.sock, ssl.SSLSocket) else None
        with context.wrap_socket(plain, server_hostname=host, session=session) as data:
            code, text = control.reply()
            if code // 100 != 1:
                raise TransferError(f"{verb} got {text!r}")
            moved = _ftps_receive(data) if op == "retr" else _ftps_send(data, upload_from)
        code, text = control.reply()
        ended = time.perf_counter()
        if code // 100 != 2:
            raise TransferError(f"{verb} ended with {text!r}")
        with contextlib.suppress(OSError, TransferError):
            control.command("QUIT")
    finally:
        control.close()
    wall = time.perf_counter() - started
    cpu = None
    if balancer_pid is not None and cpu_before is not None:
        cpu = procstat.cpu_seconds(balancer_pid) - cpu_before
    if moved != size:
        raise TransferError(f"FTPS {op} {host}:{port} moved {moved} bytes, not {size}")
    return TransferSample(op, size, ended - begun, wall, cpu)


def _ftps_receive(data: ssl.SSLSocket) -> int:
    buffer = bytearray(_FTPS_CHUNK)
    view = memoryview(buffer)
    total = 0
    while received := data.recv_into(view):
        total += received
    with contextlib.suppress(OSError, ValueError):
        data.unwrap()
    return total


def _ftps_send(data: ssl.SSLSocket, upload_from: Path | None) -> int:
    if upload_from is None:
        raise ValueError("STOR needs a file to upload")
    total = 0
    with upload_from.open("rb") as source:
        while chunk := source.read(_FTPS_CHUNK):
            data.sendall(chunk)
            total += len(chunk)
    with contextlib.suppress(OSError, ValueError):
        data.unwrap()  # close_notify: the end of the upload
    return total
