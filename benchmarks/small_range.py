"""Many transfers pending at once on a small passive range, behind a barrier.

Every session logs in from its own source address and asks for a passive
port (EPSV) first; only once every session has its 229 (or its refusal) do
they all connect their data connections and transfer. So, with 500 sessions
and 10 passive ports, 500 transfers are pending on 10 ports at once: what a
balancer that shares each passive listener among sessions, routing by client
address, must handle, and what one port per pending transfer cannot.

Half the sessions RETR one file, half STOR a file of their own (distinct
bytes, so a data connection handed to the wrong session shows); the sha256
of every file is checked, the uploads on the server's disk by the caller.
Every wait is bounded; a refusal (425) or a timeout is a counted failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from benchmarks.loadgen import (
    Credentials,
    Stage,
    Target,
    command,
    error_kind,
    expect,
    login,
    parse_epsv_port,
)

FIRST_SOURCE = ipaddress.IPv4Address("127.0.1.1")
LAST_SOURCE = ipaddress.IPv4Address("127.255.255.254")
CHUNK = 256 * 1024

Op = Literal["retr", "stor"]


def distinct_source(index: int) -> str:
    """Session ``index``'s own source address: 127.0.1.1, 127.0.1.2, ... (all loopback)."""
    address = FIRST_SOURCE + index
    if address > LAST_SOURCE:
        raise ValueError(f"session {index} has no source address left in 127/8")
    return str(address)


def source_span(sessions: int) -> str:
    """The source addresses ``sessions`` sessions use, for the report."""
    return f"{distinct_source(0)} .. {distinct_source(sessions - 1)}"


def op_of(index: int) -> Op:
    """Even sessions download, odd ones upload: half and half."""
    return "retr" if index % 2 == 0 else "stor"


def upload_payload(index: int, base: bytes) -> bytes:
    """Session ``index``'s upload: ``base`` with the index in its first 8 bytes."""
    return index.to_bytes(8, "big") + base[8:]


def upload_name(index: int) -> str:
    return f"range-{index}.bin"


@dataclass
class RangeResult:
    """What :func:`run_barrier_transfers` did."""

    sessions: int
    completed: int = 0
    passive_ok: int = 0  # sessions that got their 229 before the barrier
    bytes_moved: int = 0
    login_seconds: float = 0.0  # start to barrier: logins and passive replies
    transfer_seconds: float = 0.0  # barrier to the last transfer's end
    errors: dict[str, int] = field(default_factory=dict)
    uploads: dict[int, str] = field(default_factory=dict)  # index -> sha256 sent

    @property
    def failed(self) -> int:
        return self.sessions - self.completed

    @property
    def mb_per_s(self) -> float:
        if self.transfer_seconds <= 0:
            return 0.0
        return self.bytes_moved / self.transfer_seconds / 1e6


@dataclass
class _Gate:
    """The barrier: opens when every session has its passive reply or has failed."""

    expected: int
    arrived: int = 0
    opened_at: float = 0.0
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def arrive(self) -> None:
        self.arrived += 1
        if self.arrived >= self.expected and not self.event.is_set():
            self.opened_at = time.perf_counter()
            self.event.set()


async def _transfer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    data_target: Target,
    source: str,
    op: Op,
    *,
    name: str,
    payload: bytes,
    at: Stage,
) -> bytes:
    """Connect the data connection, run the transfer, read the 226; the bytes received."""
    at.name = "data connect"
    data_reader, data_writer = await asyncio.open_connection(*data_target, local_addr=(source, 0))
    received = b""
    try:
        verb = (b"RETR " if op == "retr" else b"STOR ") + name.encode()
        at.name = f"{op.upper()} 1xx"
        await command(reader, writer, verb, 125, 150)
        at.name = f"{op.upper()} data"
        if op == "retr":
            received = await data_reader.read()
        else:
            for start in range(0, len(payload), CHUNK):
                data_writer.write(payload[start : start + CHUNK])
                await data_writer.drain()
    finally:
        data_writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(5.0):
                await data_writer.wait_closed()
    at.name = f"{op.upper()} 226"
    await expect(reader, 226)
    return received


async def run_barrier_transfers(
    target: Target,
    credentials: Credentials,
    *,
    sessions: int,
    retr_name: str,
    retr_sha256: str,
    retr_size: int,
    base_payload: bytes,
    login_concurrency: int = 16,
    barrier_timeout: float = 120.0,
    transfer_timeout: float = 120.0,
    source: Callable[[int], str] = distinct_source,
) -> RangeResult:
    """``sessions`` sessions: log in and EPSV (``login_concurrency`` at a time), wait at
    the barrier, then all transfer at once; the outcome, failures counted by step."""
    result = RangeResult(sessions)
    errors: Counter[str] = Counter()
    gate = _Gate(sessions)
    logins = asyncio.Semaphore(login_concurrency)
    started = time.perf_counter()
    finished: list[float] = []

    async def one(index: int) -> None:
        op = op_of(index)
        at = Stage()
        address = source(index)
        writer: asyncio.StreamWriter | None = None
        arrived = False
        try:
            async with logins:
                at.name = "connect+login"
                async with asyncio.timeout(barrier_timeout):
                    reader, writer = await login(target, address, credentials)
                    at.name = "EPSV"
                    line = await command(reader, writer, b"EPSV", 229)
            port = parse_epsv_port(line)
            result.passive_ok += 1
            gate.arrive()
            arrived = True
            at.name = "barrier"
            async with asyncio.timeout(barrier_timeout):
                await gate.event.wait()
            payload = upload_payload(index, base_payload) if op == "stor" else b""
            async with asyncio.timeout(transfer_timeout):
                received = await _transfer(
                    reader,
                    writer,
                    (target[0], port),
                    address,
                    op,
                    name=retr_name if op == "retr" else upload_name(index),
                    payload=payload,
                    at=at,
                )
            if op == "retr":
                if len(received) != retr_size:
                    errors[f"RETR: {len(received)} bytes, not {retr_size}"] += 1
                    return
                if hashlib.sha256(received).hexdigest() != retr_sha256:
                    errors["RETR: sha256 differs"] += 1
                    return
                result.bytes_moved += len(received)
            else:
                result.uploads[index] = hashlib.sha256(payload).hexdigest()
                result.bytes_moved += len(payload)
            result.completed += 1
            finished.append(time.perf_counter())
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await command(reader, writer, b"QUIT", 221)
        except Exception as error:  # every failure is counted, by step and kind
            errors[error_kind(error, at.name)] += 1
        finally:
            if not arrived:
                gate.arrive()
            if writer is not None:
                writer.close()

    async with asyncio.TaskGroup() as group:
        for index in range(sessions):
            group.create_task(one(index))
    end = time.perf_counter()
    opened = gate.opened_at or end
    result.login_seconds = opened - started
    result.transfer_seconds = (max(finished) if finished else end) - opened
    result.errors = dict(errors)
    return result


def check_uploads(
    uploads: dict[int, str], find: Callable[[str], bytes | None]
) -> tuple[int, dict[str, int]]:
    """Compare each upload's sha256 with the file on the server (``find`` reads it by
    name, None when missing): the count that match, and the others by kind."""
    good = 0
    problems: Counter[str] = Counter()
    for index, digest in sorted(uploads.items()):
        content = find(upload_name(index))
        if content is None:
            problems["STOR: file missing on the servers"] += 1
        elif hashlib.sha256(content).hexdigest() != digest:
            problems["STOR: sha256 on the server differs"] += 1
        else:
            good += 1
    return good, dict(problems)
