"""A bounded asyncio load generator: a minimal FTP client on asyncio streams.

Two workloads:

* :func:`run_sessions`: N sessions, C at a time, each one connect, 220, USER,
  PASS, EPSV, a data command (LIST, or RETR of a small file), QUIT. It
  returns each session's latency (connect to the 221 of QUIT) and counts the
  failures by kind.
* :func:`hold_sessions`: open logged-in sessions and keep them idle, ramping
  up a few logins at a time (vsftpd's listen backlog is 32), and call back at
  each requested level, so the balancer's memory can be read there.

Client source addresses are spread over 127.0.0.100-127.0.0.163 (bound before
connect): one source would pin every session to one server under stickiness,
and would run out of ports sooner. A data connection leaves from its session's
source address, since a balancer checks that it comes from the client's IP.

Everything is bounded: every session by a timeout, every run by a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from benchmarks.stats import percentile

SOURCE_FIRST = 100
SOURCE_COUNT = 64
DEFAULT_SESSION_TIMEOUT = 20.0
MAX_REPLY_LINES = 100

Action = Literal["list", "retr"]
Target = tuple[str, int]


class FtpReplyError(Exception):
    """A reply other than the expected one, or a malformed one."""


def source_address(index: int) -> str:
    """The client source address of session ``index``: 127.0.0.100 to 127.0.0.163."""
    return f"127.0.0.{SOURCE_FIRST + index % SOURCE_COUNT}"


def parse_epsv_port(line: bytes) -> int:
    """The port of a 229 reply: ``229 Entering Extended Passive Mode (|||50395|)``."""
    start = line.find(b"(")
    end = line.find(b")", start + 1)
    if not line.startswith(b"229") or start < 0 or end < 0:
        raise FtpReplyError(f"not a 229 reply: {line!r}")
    inner = line[start + 1 : end]
    if len(inner) < 5:
        raise FtpReplyError(f"bad 229 reply: {line!r}")
    delimiter = inner[:1]
    parts = inner.split(delimiter)
    # (|||port|) splits into ['', '', '', 'port', ''].
    if len(parts) != 5 or not parts[3].isdigit():
        raise FtpReplyError(f"bad 229 reply: {line!r}")
    port = int(parts[3])
    if not 0 < port < 65536:
        raise FtpReplyError(f"bad port in 229 reply: {line!r}")
    return port


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One reply (multi-line replies read to their last line): (code, first line)."""
    first = await reader.readline()
    if len(first) < 4 or not first[:3].isdigit():
        raise FtpReplyError(f"bad reply line {first!r}")
    if first[3:4] == b"-":
        last_prefix = first[:3] + b" "
        for _ in range(MAX_REPLY_LINES):
            line = await reader.readline()
            if not line:
                raise FtpReplyError("connection closed inside a multi-line reply")
            if line.startswith(last_prefix):
                break
        else:
            raise FtpReplyError("multi-line reply too long")
    return int(first[:3]), first


async def expect(reader: asyncio.StreamReader, *codes: int) -> bytes:
    code, line = await read_reply(reader)
    if code not in codes:
        raise FtpReplyError(f"expected {codes}, got {line!r}")
    return line


async def command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes, *codes: int
) -> bytes:
    writer.write(line + b"\r\n")
    return await expect(reader, *codes)


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError, TimeoutError):
        async with asyncio.timeout(2.0):
            await writer.wait_closed()


async def login(
    target: Target, source: str, credentials: Credentials
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect from ``source``, read the banner, log in; the open control connection."""
    reader, writer = await asyncio.open_connection(*target, local_addr=(source, 0))
    try:
        await expect(reader, 220)
        await command(reader, writer, b"USER " + credentials.user.encode(), 331)
        await command(reader, writer, b"PASS " + credentials.password.encode(), 230)
    except BaseException:
        await _close(writer)
        raise
    return reader, writer


class Stage:
    """The step a session is at, so that a failure can say where it happened."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = "connect"


async def one_session(
    target: Target,
    source: str,
    credentials: Credentials,
    *,
    action: Action,
    retr_name: str,
    retr_size: int,
    stage: Stage | None = None,
) -> None:
    """login, EPSV, LIST or RETR (data read to EOF, then 226), QUIT."""
    at = stage or Stage()
    at.name = "connect+login"
    reader, writer = await login(target, source, credentials)
    try:
        at.name = "EPSV"
        line = await command(reader, writer, b"EPSV", 229)
        at.name = "data connect"
        data_reader, data_writer = await asyncio.open_connection(
            target[0], parse_epsv_port(line), local_addr=(source, 0)
        )
        try:
            verb = b"LIST" if action == "list" else b"RETR " + retr_name.encode()
            at.name = f"{action.upper()} 1xx"
            await command(reader, writer, verb, 125, 150)
            at.name = f"{action.upper()} data"
            payload = await data_reader.read()
        finally:
            await _close(data_writer)
        at.name = f"{action.upper()} 226"
        await expect(reader, 226)
        if action == "retr" and len(payload) != retr_size:
            raise FtpReplyError(f"RETR gave {len(payload)} bytes, not {retr_size}")
        if action == "list" and not payload:
            raise FtpReplyError("LIST gave no listing")
        at.name = "QUIT"
        await command(reader, writer, b"QUIT", 221)
    finally:
        await _close(writer)


def error_kind(error: BaseException, stage: str | None = None) -> str:
    """A short label for a failure, for counting: where, and what."""
    if isinstance(error, TimeoutError):
        what = "timeout"
    elif isinstance(error, FtpReplyError):
        text = str(error)
        what = "reply " + (text[:60] if len(text) > 60 else text)
    elif isinstance(error, OSError):
        what = f"{type(error).__name__} errno={error.errno}"
    else:
        what = type(error).__name__
    return what if stage is None else f"{stage}: {what}"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one :func:`run_sessions` run did."""

    attempted: int
    ok: int
    elapsed: float
    latencies: tuple[float, ...]
    errors: dict[str, int]

    @property
    def failed(self) -> int:
        return self.attempted - self.ok

    @property
    def sessions_per_s(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def p50_ms(self) -> float | None:
        value = percentile(self.latencies, 0.50)
        return None if value is None else value * 1000

    @property
    def p99_ms(self) -> float | None:
        value = percentile(self.latencies, 0.99)
        return None if value is None else value * 1000


async def run_sessions(
    targets: Sequence[Target],
    credentials: Credentials,
    *,
    action: Action,
    sessions: int,
    concurrency: int,
    retr_name: str = "small.bin",
    retr_size: int = 1024,
    session_timeout: float = DEFAULT_SESSION_TIMEOUT,
    deadline: float = 300.0,
) -> LoadResult:
    """``sessions`` sessions, ``concurrency`` at a time; session i goes to targets[i % n].

    No session starts after ``deadline`` seconds; those not started count as
    not attempted, so a slow path shows fewer sessions, not a hang.
    """
    indexes = itertools.count()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    attempted = 0
    started = time.perf_counter()
    stop_at = started + deadline

    async def worker() -> None:
        nonlocal attempted
        while True:
            index = next(indexes)
            if index >= sessions or time.perf_counter() > stop_at:
                return
            attempted += 1
            begin = time.perf_counter()
            stage = Stage()
            try:
                async with asyncio.timeout(session_timeout):
                    await one_session(
                        targets[index % len(targets)],
                        source_address(index),
                        credentials,
                        action=action,
                        retr_name=retr_name,
                        retr_size=retr_size,
                        stage=stage,
                    )
            except Exception as error:  # every failure is counted, by kind
                errors[error_kind(error, stage.name)] += 1
            else:
                latencies.append(time.perf_counter() - begin)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    elapsed = time.perf_counter() - started
    return LoadResult(attempted, len(latencies), elapsed, tuple(latencies), dict(errors))


async def hold_one(
    index: int,
    targets: Sequence[Target],
    credentials: Credentials,
    *,
    held: list[asyncio.StreamWriter],
    errors: Counter[str],
    timeout: float = DEFAULT_SESSION_TIMEOUT,
) -> None:
    """Log session ``index`` in (its target and source address chosen by the index) and
    keep it open in ``held``; a failure is counted in ``errors`` by kind."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await login(
                targets[index % len(targets)], source_address(index), credentials
            )
    except Exception as error:  # counted by kind
        errors[error_kind(error, "login")] += 1
    else:
        held.append(writer)


@dataclass
class HoldResult:
    """What :func:`hold_sessions` (or ``holders.hold_levels``) did at each level."""

    levels: dict[int, int] = field(default_factory=dict)  # level -> sessions held there
    attempted: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    ramp_seconds: float = 0.0


async def hold_sessions(
    targets: Sequence[Target],
    credentials: Credentials,
    *,
    levels: Sequence[int],
    at_level: Callable[[int, int], None],
    ramp_concurrency: int = 16,
    settle: float = 2.0,
    session_timeout: float = DEFAULT_SESSION_TIMEOUT,
    deadline: float = 600.0,
) -> HoldResult:
    """Open logged-in sessions up to each level in turn and keep them all idle.

    At each level (after ``settle`` seconds) ``at_level(level, held)`` runs, with
    ``held`` the sessions really logged in. A failed login is counted and not
    replaced. All sessions are closed at the end.
    """
    held: list[asyncio.StreamWriter] = []
    errors: Counter[str] = Counter()
    result = HoldResult()
    started = time.perf_counter()
    stop_at = started + deadline
    next_index = 0
    try:
        for level in sorted(levels):
            todo = range(next_index, level)
            next_index = level
            gate = asyncio.Semaphore(ramp_concurrency)

            async def gated(index: int, gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    if time.perf_counter() < stop_at:
                        await hold_one(
                            index,
                            targets,
                            credentials,
                            held=held,
                            errors=errors,
                            timeout=session_timeout,
                        )
                    else:
                        errors["deadline"] += 1

            async with asyncio.TaskGroup() as group:
                for index in todo:
                    group.create_task(gated(index))
            result.ramp_seconds = time.perf_counter() - started
            await asyncio.sleep(settle)
            result.levels[level] = len(held)
            at_level(level, len(held))
    finally:
        result.attempted = next_index
        result.failed = sum(errors.values())
        result.errors = dict(errors)
        for writer in held:
            writer.close()
        await asyncio.sleep(0.5)
    return result


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency of ftplb on Linux), so the
    load generator costs less CPU beside the balancer; else asyncio's default."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
