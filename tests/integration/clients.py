"""Real FTP clients for integration tests: curl, lftp and Python's ftplib.

Each helper does one operation in one data mode and returns what happened,
including the FTP commands the client really sent (parsed from its debug trace),
so a test can check that the mode under test was used: curl silently falls back
from EPSV to PASV and from EPRT to PORT, and ftplib uses EPSV/EPRT only on IPv6
unless told otherwise.

Every subprocess call and every socket operation is bounded by a timeout.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self
from urllib.parse import quote

DataMode = Literal["pasv", "epsv", "port", "eprt"]
LftpMode = Literal["pasv", "epsv", "port"]

DATA_MODES: tuple[DataMode, ...] = ("pasv", "epsv", "port", "eprt")
LFTP_MODES: tuple[LftpMode, ...] = ("pasv", "epsv", "port")
PASSIVE_MODES: frozenset[str] = frozenset({"pasv", "epsv"})
ACTIVE_MODES: frozenset[str] = frozenset({"port", "eprt"})

# The FTP verb that sets up the data connection in each mode.
MODE_VERB: dict[str, str] = {"pasv": "PASV", "epsv": "EPSV", "port": "PORT", "eprt": "EPRT"}
DATA_SETUP_VERBS: frozenset[str] = frozenset(MODE_VERB.values())

# Active-mode clients use an address of their own (see TESTING-NOTES: a client
# sharing the balancer's address lets a server reach it directly).
CLIENT_SOURCE_IPV4 = "127.0.0.100"

PROCESS_TIMEOUT = 90.0  # a whole client run, including a 10 MB transfer
CONNECT_TIMEOUT = 10
SOCKET_TIMEOUT = 30.0
CHUNK = 1 << 20


def is_ipv6(host: str) -> bool:
    return ":" in host


def url_host(host: str) -> str:
    return f"[{host}]" if is_ipv6(host) else host


def ftp_url(host: str, port: int, path: str = "", user: str = "", password: str = "") -> str:
    """An ftp:// URL; ``path`` is relative to the login directory ("" or "dir/" lists)."""
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    return f"ftp://{credentials}{url_host(host)}:{port}/{quote(path)}"


@dataclass(frozen=True, slots=True)
class ClientResult:
    """Outcome of one client process: exit code, output and the FTP dialogue."""

    tool: str
    returncode: int
    stdout: bytes
    stderr: str
    commands: tuple[str, ...]
    replies: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def verbs(self) -> tuple[str, ...]:
        """The verbs of the commands sent, upper-cased ("PASV", "RETR", ...)."""
        return tuple(command.split(" ", 1)[0].upper() for command in self.commands)

    @property
    def data_setup_verbs(self) -> tuple[str, ...]:
        """Only the PASV/EPSV/PORT/EPRT commands, in the order they were sent."""
        return tuple(verb for verb in self.verbs if verb in DATA_SETUP_VERBS)

    def check(self) -> Self:
        """Return self if the client succeeded, else raise with its trace."""
        if self.returncode != 0:
            raise AssertionError(
                f"{self.tool} exited with {self.returncode}\n"
                f"commands: {self.commands}\nreplies: {self.replies}\n"
                f"stderr:\n{self.stderr[-4000:]}"
            )
        return self


CurlResult = ClientResult
LftpResult = ClientResult


def _run(
    argv: Sequence[str], timeout: float = PROCESS_TIMEOUT
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode(errors="replace")
        raise AssertionError(
            f"{argv[0]} did not finish within {timeout} s\nstderr:\n{stderr[-4000:]}"
        ) from exc


def _parse_trace(
    trace: str, sent_prefix: str, received_prefix: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    commands: list[str] = []
    replies: list[str] = []
    for raw in trace.splitlines():
        line = raw.rstrip("\r")
        if line.startswith(sent_prefix):
            commands.append(line[len(sent_prefix) :].strip())
        elif line.startswith(received_prefix):
            replies.append(line[len(received_prefix) :].strip())
    return tuple(commands), tuple(replies)


# ---------------------------------------------------------------------------
# curl


def _curl_mode_args(mode: DataMode, source_address: str | None) -> list[str]:
    # "-" makes curl use the control connection's local address for PORT/EPRT.
    active_address = source_address or "-"
    args = {
        "pasv": ["--ftp-pasv", "--disable-epsv"],
        "epsv": ["--ftp-pasv"],
        "port": ["--ftp-port", active_address, "--disable-eprt"],
        "eprt": ["--ftp-port", active_address],
    }[mode]
    if source_address is not None:
        args += ["--interface", source_address]
    return args


def _curl(
    target_args: Sequence[str],
    url: str,
    mode: DataMode,
    source_address: str | None,
    extra_args: Sequence[str],
) -> ClientResult:
    argv = [
        "curl",
        "--silent",
        "--show-error",
        "--verbose",
        "--globoff",
        # Use the address from the 227 reply: a wrong one must break the test.
        "--no-ftp-skip-pasv-ip",
        "--connect-timeout",
        str(CONNECT_TIMEOUT),
        "--max-time",
        str(int(PROCESS_TIMEOUT) - 10),
        *_curl_mode_args(mode, source_address),
        *extra_args,
        *target_args,
        url,
    ]
    completed = _run(argv)
    stderr = completed.stderr.decode(errors="replace")
    commands, replies = _parse_trace(stderr, "> ", "< ")
    return ClientResult("curl", completed.returncode, completed.stdout, stderr, commands, replies)


def curl_retr(
    url: str,
    dest: Path,
    mode: DataMode,
    source_address: str | None = None,
    extra_args: Sequence[str] = (),
) -> CurlResult:
    """Download ``url`` into ``dest``."""
    return _curl(["--output", str(dest)], url, mode, source_address, extra_args)


def curl_stor(
    url: str,
    src: Path,
    mode: DataMode,
    source_address: str | None = None,
    extra_args: Sequence[str] = (),
) -> CurlResult:
    """Upload ``src`` to ``url``."""
    return _curl(["--upload-file", str(src)], url, mode, source_address, extra_args)


def curl_list(
    url: str,
    mode: DataMode,
    source_address: str | None = None,
    extra_args: Sequence[str] = (),
) -> CurlResult:
    """LIST the directory ``url`` (it must end with "/"); stdout holds the listing."""
    return _curl([], url, mode, source_address, extra_args)


# ---------------------------------------------------------------------------
# lftp


def _lftp_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lftp_script(
    host: str,
    port: int,
    user: str,
    password: str,
    commands: str,
    mode: LftpMode,
    source_address: str | None = None,
) -> str:
    """The lftp script that :func:`lftp_run` runs (settings, open, then ``commands``)."""
    family = "ipv6" if is_ipv6(host) else "ipv4"
    settings = [
        "set cmd:fail-exit yes",
        "set cmd:interactive no",
        # Fail fast instead of lftp's default endless reconnect loop.
        "set net:max-retries 1",
        "set net:persist-retries 0",
        "set net:timeout 15",
        "set net:reconnect-interval-base 1",
        "set ftp:ssl-allow no",
        "set xfer:clobber on",
        f"set ftp:passive-mode {'on' if mode in PASSIVE_MODES else 'off'}",
        f"set ftp:prefer-epsv {'yes' if mode == 'epsv' else 'no'}",
        # lftp switches to passive by itself when PORT/EPRT fails: that would hide
        # exactly the failure an active-mode test is looking for.
        "set ftp:auto-passive-mode no",
    ]
    if source_address is not None:
        settings.append(f"set net:socket-bind-{family} {source_address}")
        if family == "ipv4":  # lftp has no ftp:port-ipv6; EPRT uses the bound address
            settings.append(f"set ftp:port-ipv4 {source_address}")
    opening = f"open -u {_lftp_quote(user)},{_lftp_quote(password)} -p {port} {host}"
    return "\n".join([*settings, opening, commands.strip()]) + "\n"


def lftp_run(
    host: str,
    port: int,
    user: str,
    password: str,
    commands: str,
    mode: LftpMode,
    source_address: str | None = None,
) -> LftpResult:
    """Run lftp commands (newline-separated, e.g. "ls\\nget f -o /tmp/f") in one session.

    lftp's ``-d`` trace lists each command sent ("---> PASV") and reply ("<--- 227 ...").
    On an IPv6 data address, ``port`` mode sends EPRT and ``pasv`` sends EPSV.
    """
    script = lftp_script(host, port, user, password, commands, mode, source_address)
    completed = _run(["lftp", "-d", "-c", script])
    stderr = completed.stderr.decode(errors="replace")
    trace = stderr + "\n" + completed.stdout.decode(errors="replace")
    sent, received = _parse_trace(trace, "---> ", "<--- ")
    return ClientResult("lftp", completed.returncode, completed.stdout, stderr, sent, received)


# ---------------------------------------------------------------------------
# Python ftplib


class _ModeFTP(ftplib.FTP):
    """ftplib.FTP that uses exactly one data mode and records the commands it sends.

    Stock ftplib sends EPSV and EPRT only over IPv6; here the mode decides.
    """

    # Connect to the address in the 227 reply, as a strict client would.
    trust_server_pasv_ipv4_address = True

    def __init__(self, mode: DataMode, source_address: str | None) -> None:
        super().__init__(
            timeout=SOCKET_TIMEOUT,
            source_address=(source_address, 0) if source_address is not None else None,
        )
        self.data_mode: DataMode = mode
        self.sent: list[str] = []
        self.set_pasv(mode in PASSIVE_MODES)

    def _control_socket(self) -> socket.socket:
        if self.sock is None:
            raise ftplib.Error("not connected")
        return self.sock

    def putcmd(self, line: str) -> None:
        self.sent.append(line)
        super().putcmd(line)

    def makepasv(self) -> tuple[str, int]:
        if self.data_mode == "epsv":
            peer = self._control_socket().getpeername()
            return ftplib.parse229(self.sendcmd("EPSV"), peer)
        if self.af != socket.AF_INET:
            raise ValueError("PASV cannot carry an IPv6 address; use epsv")
        return ftplib.parse227(self.sendcmd("PASV"))

    def makeport(self) -> socket.socket:
        # Listen on the control connection's local address: with source_address
        # set, that is the client's own address, not the balancer's.
        local_host: str = self._control_socket().getsockname()[0]
        listener = socket.create_server((local_host, 0), family=self.af, backlog=1)
        port: int = listener.getsockname()[1]
        try:
            if self.data_mode == "eprt":
                self.sendeprt(local_host, port)
            elif self.af == socket.AF_INET:
                self.sendport(local_host, port)
            else:
                raise ValueError("PORT cannot carry an IPv6 address; use eprt")
        except BaseException:
            listener.close()
            raise
        listener.settimeout(SOCKET_TIMEOUT)
        return listener


class FtplibClient:
    """One logged-in ftplib session; use as a context manager (QUIT on exit)."""

    def __init__(self, ftp: _ModeFTP) -> None:
        self.ftp = ftp

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(self.ftp.sent)

    @property
    def verbs(self) -> tuple[str, ...]:
        return tuple(command.split(" ", 1)[0].upper() for command in self.ftp.sent)

    @property
    def data_setup_verbs(self) -> tuple[str, ...]:
        return tuple(verb for verb in self.verbs if verb in DATA_SETUP_VERBS)

    def list(self, path: str = "") -> bytes:
        """The raw LIST output."""
        self.ftp.voidcmd("TYPE A")
        command = f"LIST {path}" if path else "LIST"
        chunks: list[bytes] = []
        with self.ftp.transfercmd(command) as conn:
            while chunk := conn.recv(CHUNK):
                chunks.append(chunk)
        self.ftp.voidresp()
        return b"".join(chunks)

    def retr(self, name: str) -> bytes:
        chunks: list[bytes] = []
        self.ftp.retrbinary(f"RETR {name}", chunks.append, blocksize=CHUNK)
        return b"".join(chunks)

    def retr_to(self, name: str, dest: Path) -> str:
        """Download ``name`` into ``dest``; returns the final reply."""
        with dest.open("wb") as out:
            return self.ftp.retrbinary(f"RETR {name}", out.write, blocksize=CHUNK)

    def stor(self, name: str, data: bytes | Path) -> str:
        """Upload bytes or a local file as ``name``; returns the final reply."""
        if isinstance(data, Path):
            with data.open("rb") as src:
                return self.ftp.storbinary(f"STOR {name}", src, blocksize=CHUNK)
        return self.ftp.storbinary(f"STOR {name}", io.BytesIO(data), blocksize=CHUNK)

    def quote(self, command: str) -> str:
        """Send one command; return the reply text, error replies included."""
        try:
            return self.ftp.sendcmd(command)
        except ftplib.Error as exc:
            return str(exc)

    def close(self) -> None:
        try:
            self.ftp.quit()
        except (OSError, EOFError, ftplib.Error):
            pass
        finally:
            self.ftp.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def ftplib_session(
    host: str,
    port: int,
    user: str,
    password: str,
    mode: DataMode,
    source_address: str | None = None,
) -> FtplibClient:
    """Connect and log in with ftplib, using ``mode`` for every data transfer."""
    ftp = _ModeFTP(mode, source_address)
    try:
        ftp.connect(host, port, timeout=SOCKET_TIMEOUT)
        ftp.login(user, password)
    except BaseException:
        ftp.close()
        raise
    return FtplibClient(ftp)


# ---------------------------------------------------------------------------
# files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def make_random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; returns their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        remaining = size
        while remaining > 0:
            chunk = os.urandom(min(CHUNK, remaining))
            digest.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()
