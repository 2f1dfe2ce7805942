"""A bounded load of real FTP sessions (ftplib), for reload and drain tests.

Each session logs in, does one thing (LIST, a RETR or a STOR checked by
sha256), reads which server it reached from the ``whoami.txt`` in every
server's root, and quits. Sessions come from many loopback source addresses,
so that the workers of ``workers = N`` all serve some.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.servers import FtpServer

SOURCES = [f"127.0.0.{i}" for i in range(100, 164)]
WHOAMI = "whoami.txt"
SAMPLE = "sample.bin"
SESSION_TIMEOUT = 30.0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def label_servers(servers: list[FtpServer], sample: bytes) -> None:
    """Give every server's root its name ("s1", ...) in whoami.txt, and the sample file."""
    for index, server in enumerate(servers, start=1):
        (server.root / WHOAMI).write_text(f"s{index}")
        (server.root / SAMPLE).write_bytes(sample)
        for path in (server.root / WHOAMI, server.root / SAMPLE):
            path.chmod(0o644)


class _TrustingFTP(ftplib.FTP):
    # ftplib ignores the address of a 227 by default; a wrong one must show.
    trust_server_pasv_ipv4_address = True


def open_session(host: str, port: int, user: str, password: str, source: str) -> ftplib.FTP:
    ftp = _TrustingFTP(timeout=SESSION_TIMEOUT)
    ftp.source_address = (source, 0)
    ftp.connect(host, port)
    ftp.login(user, password)
    return ftp


def end_session(ftp: ftplib.FTP) -> None:
    """QUIT if the session still answers; close its socket in any case."""
    with contextlib.suppress(OSError, EOFError, ftplib.Error):
        ftp.quit()
    ftp.close()


def whoami(ftp: ftplib.FTP) -> str:
    buffer = io.BytesIO()
    ftp.retrbinary(f"RETR {WHOAMI}", buffer.write)
    return buffer.getvalue().decode()


@dataclass
class LoadResult:
    """What a load saw: sessions per server, and every failure in words."""

    served: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    refused: int = 0
    stored: dict[str, str] = field(default_factory=dict)
    """Name of each uploaded file -> its sha256, to check on the servers' disks."""
    timeline: list[tuple[float, str]] = field(default_factory=list)
    """(time the session started, server) of every session."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sessions(self) -> int:
        return sum(self.served.values())


class Load:
    """``total`` sessions at ``concurrency`` against one balancer."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        sample: bytes,
        *,
        total: int,
        concurrency: int = 10,
        kinds: tuple[str, ...] = ("list", "retr", "stor"),
    ) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.sample, self.sample_sha = sample, sha256(sample)
        self.total, self.concurrency, self.kinds = total, concurrency, kinds
        self.result = LoadResult()
        self.started = 0
        self._counter = 0
        self._count_lock = threading.Lock()

    def run(
        self, on_progress: Callable[[int], None] | None = None, deadline: float = 300
    ) -> LoadResult:
        """Run every session (bounded by ``deadline`` seconds); ``on_progress(n)`` after each."""
        stop_at = time.monotonic() + deadline
        with ThreadPoolExecutor(self.concurrency) as pool:
            for index in range(self.total):
                pool.submit(self._one, index, stop_at, on_progress)
        return self.result

    def _one(self, index: int, stop_at: float, on_progress: Callable[[int], None] | None) -> None:
        if time.monotonic() > stop_at:
            self._fail(index, "not run: the load's deadline passed")
            return
        kind = self.kinds[index % len(self.kinds)]
        source = SOURCES[index % len(SOURCES)]
        started = time.monotonic()
        try:
            ftp = open_session(self.host, self.port, self.user, self.password, source)
        except ConnectionRefusedError:
            with self.result._lock:
                self.result.refused += 1
            self._fail(index, "connect refused")
            self._progress(on_progress)
            return
        except (OSError, ftplib.Error, EOFError) as error:
            self._fail(index, f"{kind} from {source}: login: {error!r}")
            self._progress(on_progress)
            return
        try:
            server = whoami(ftp)
            self._do(ftp, kind, index)
            ftp.quit()
            with self.result._lock:
                self.result.served[server] += 1
                self.result.timeline.append((started, server))
        except (OSError, ftplib.Error, EOFError, AssertionError) as error:
            self._fail(index, f"{kind} from {source}: {error!r}")
        finally:
            ftp.close()
            self._progress(on_progress)

    def _do(self, ftp: ftplib.FTP, kind: str, index: int) -> None:
        if kind == "list":
            lines: list[str] = []
            ftp.retrlines("LIST", lines.append)
            assert any(SAMPLE in line for line in lines), f"LIST lacks {SAMPLE}: {lines}"
        elif kind == "retr":
            buffer = io.BytesIO()
            ftp.retrbinary(f"RETR {SAMPLE}", buffer.write)
            got = sha256(buffer.getvalue())
            assert got == self.sample_sha, f"RETR {SAMPLE}: sha256 {got}"
        else:
            data = os.urandom(len(self.sample))
            name = f"up-{index}.bin"
            ftp.storbinary(f"STOR {name}", io.BytesIO(data))
            with self.result._lock:
                self.result.stored[name] = sha256(data)

    def _fail(self, index: int, reason: str) -> None:
        with self.result._lock:
            self.result.failures.append(f"session {index}: {reason}")

    def _progress(self, on_progress: Callable[[int], None] | None) -> None:
        with self._count_lock:
            self._counter += 1
            done = self._counter
        if on_progress is None:
            return
        try:
            on_progress(done)
        except Exception as error:
            # A failed step of the test itself (a reload not logged) must fail the test.
            self._fail(done, f"during the load: {error!r}")


def check_uploads(result: LoadResult, servers: list[FtpServer]) -> list[str]:
    """Every stored file, found on exactly one server's disk with its sha256; problems."""
    problems = []
    for name, expected in result.stored.items():
        holders = [s for s in servers if (s.root / name).exists()]
        if len(holders) != 1:
            problems.append(f"{name}: on {len(holders)} servers")
            continue
        got = sha256((holders[0].root / name).read_bytes())
        if got != expected:
            problems.append(f"{name}: sha256 {got} != {expected}")
    return problems


def sessions_opened(server: FtpServer) -> int:
    """Connections the server has logged (pyftpdlib: one line per control connection)."""
    return server.log_text().count("FTP session opened")


def slow_download(ftp: ftplib.FTP, name: str, dest: Path, pace: float = 0.01) -> str:
    """RETR ``name`` reading one block per ``pace`` seconds (TCP backpressure throttles
    the server); the sha256 of what arrived."""
    digest = hashlib.sha256()
    with dest.open("wb") as out:

        def block(data: bytes) -> None:
            digest.update(data)
            out.write(data)
            time.sleep(pace)

        ftp.retrbinary(f"RETR {name}", block, blocksize=64 * 1024)
    return digest.hexdigest()
