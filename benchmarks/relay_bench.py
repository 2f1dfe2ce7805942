"""Throughput and CPU cost of the data-path relay against a direct transfer.

Over loopback, with three processes so that the relay runs on its own::

    sender --TCP--> relay --TCP--> receiver        (or sender --TCP--> receiver)

The sender pushes a tmpfs file with ``socket.sendfile`` (zero-copy); the
receiver reads it with ``recv_into`` into a 4 MiB buffer. Each run moves
``--size`` bytes; the configurations are interleaved run by run, and the table
shows medians. Throughput is measured from the sender's connect to the
receiver's EOF; the relay's CPU time is its own process's user+system time
around the ``relay()`` call, per GiB moved.

    python benchmarks/relay_bench.py [--size 1G] [--runs 3]

The endpoints are Python too, and compete with the relay for the CPUs (3
processes), so the ratios mean more than the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

try:
    import uvloop
except ImportError:  # pragma: no cover - a dependency on Linux
    uvloop = None  # type: ignore[assignment]

from ftplb.balancing.client_limits import TokenBucket
from ftplb.runtime.pipes import DEFAULT_PIPE_SIZE, PipeBudget
from ftplb.runtime.relay import CLEAN, relay

MiB = 1024 * 1024
GiB = 1024 * MiB
SOURCE_FILE_SIZE = 64 * MiB
RECEIVE_BUFFER = 4 * MiB
STARTUP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    name: str
    loop: str | None  # None: direct, no relay
    force_copy: bool = False
    pipe_size: int = MiB
    paced: bool = False
    """Paced by three token buckets at 1 TB/s (the three transfer rate limits, far
    above the link): what pacing costs when it never waits."""


CONFIGS = [
    Config("direct (no relay)", None),
    Config("splice 1 MiB pipe, asyncio", "asyncio"),
    Config("splice 1 MiB pipe, uvloop", "uvloop"),
    Config("splice 1 MiB pipe, uvloop, paced", "uvloop", paced=True),
    Config("splice 64 KiB pipe, asyncio", "asyncio", pipe_size=DEFAULT_PIPE_SIZE),
    Config("splice 64 KiB pipe, uvloop", "uvloop", pipe_size=DEFAULT_PIPE_SIZE),
    Config("copy 256 KiB buffer, asyncio", "asyncio", force_copy=True),
    Config("copy 256 KiB buffer, uvloop", "uvloop", force_copy=True),
    Config("copy 256 KiB buffer, uvloop, paced", "uvloop", force_copy=True, paced=True),
]
FAR_ABOVE_THE_LINK = 1000**4
"""1 TB/s, the highest rate the configuration takes."""


@dataclass(frozen=True, slots=True)
class Sample:
    mb_per_s: float
    cpu_s_per_gib: float | None


# --------------------------------------------------------------------------- processes


def _listen() -> socket.socket:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(STARTUP_TIMEOUT)
    return listener


def receiver_main(report: Connection, timeout: float) -> None:
    """Accept one connection, read to EOF, report (bytes, monotonic time at EOF)."""
    with _listen() as listener:
        report.send(listener.getsockname()[1])
        conn, _ = listener.accept()
    with conn:
        conn.settimeout(timeout)
        buffer = memoryview(bytearray(RECEIVE_BUFFER))
        total = 0
        while received := conn.recv_into(buffer):
            total += received
        finished = time.monotonic()
    report.send((total, finished))


def sender_main(report: Connection, port: int, path: str, size: int, timeout: float) -> None:
    """Send ``size`` bytes from the tmpfs file, zero-copy, then wait for the peer's EOF."""
    started = time.monotonic()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn,
        open(path, "rb") as f,
    ):
        left = size
        while left > 0:
            count = min(left, SOURCE_FILE_SIZE)
            sent = conn.sendfile(f, 0, count)
            if sent != count:
                raise RuntimeError(f"sendfile moved {sent} of {count} bytes")
            left -= count
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
    report.send(started)


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        if uvloop is None:
            raise SystemExit("uvloop is not installed")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def relay_main(report: Connection, config: Config, target_port: int, timeout: float) -> None:
    """Accept one client, connect to the target, relay; report (result, CPU seconds)."""
    with _listen() as listener:
        report.send(listener.getsockname()[1])
        client, _ = listener.accept()
    server = socket.create_connection(("127.0.0.1", target_port), timeout=STARTUP_TIMEOUT)
    budget = PipeBudget(pipe_size=config.pipe_size)
    assert config.loop is not None
    with client, server, asyncio.Runner(loop_factory=_loop_factory(config.loop)) as runner:
        client.setblocking(False)
        server.setblocking(False)
        pace = (
            tuple(TokenBucket(FAR_ABOVE_THE_LINK, time.monotonic) for _ in range(3))
            if config.paced
            else ()
        )
        before = resource.getrusage(resource.RUSAGE_SELF)
        result = runner.run(
            asyncio.wait_for(
                relay(client, server, budget=budget, force_copy=config.force_copy, pace=pace),
                timeout,
            )
        )
        after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    error = None if result.outcome == CLEAN else str(result.outcome)
    report.send((result.a_to_b, error, result.spliced, cpu))


# --------------------------------------------------------------------------- orchestration


class _Children:
    """The processes of one measurement, always reaped (terminated if late)."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("fork")
        self._procs: list[multiprocessing.process.BaseProcess] = []

    def start(self, target: Callable[..., None], *args: Any) -> Connection:
        ours, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(target=target, args=(theirs, *args), daemon=True)
        proc.start()
        theirs.close()
        self._procs.append(proc)
        return ours

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def _receive(conn: Connection, timeout: float, what: str) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"no answer from the {what} within {timeout:.0f} s")
    return conn.recv()


def measure(config: Config, path: str, size: int) -> Sample:
    timeout = 30.0 + size / (50 * MiB)  # generous, but bounded
    children = _Children()
    try:
        to_receiver = children.start(receiver_main, timeout)
        port = _receive(to_receiver, STARTUP_TIMEOUT, "receiver")
        to_relay = None
        if config.loop is not None:
            to_relay = children.start(relay_main, config, port, timeout)
            port = _receive(to_relay, STARTUP_TIMEOUT, "relay")
        to_sender = children.start(sender_main, port, path, size, timeout)

        started = _receive(to_sender, timeout, "sender")
        received, finished = _receive(to_receiver, timeout, "receiver")
        if received != size:
            raise RuntimeError(f"{config.name}: received {received} of {size} bytes")
        cpu_per_gib = None
        if to_relay is not None:
            moved, error, _spliced, cpu = _receive(to_relay, timeout, "relay")
            if error is not None or moved != size:
                raise RuntimeError(f"{config.name}: relay moved {moved} bytes, error {error}")
            cpu_per_gib = cpu / (size / GiB)
        return Sample(size / (finished - started) / 1e6, cpu_per_gib)
    finally:
        children.close(timeout)


def _parse_size(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": GiB}
    suffix = text[-1:].upper()
    if suffix in units:
        return int(float(text[:-1]) * units[suffix])
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=_parse_size, default=GiB, help="bytes per run (1G, 256M)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs per configuration")
    args = parser.parse_args(argv)
    size: int = args.size
    runs: int = max(1, args.runs)

    print(
        f"relay_bench: {size / MiB:.0f} MiB per run, {runs} interleaved runs, median | "
        f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}"
    )
    tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, path = tempfile.mkstemp(prefix="relay_bench-", dir=tmp_dir)
    samples: dict[str, list[Sample]] = {c.name: [] for c in CONFIGS}
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(SOURCE_FILE_SIZE))
        for run in range(runs):
            for config in CONFIGS:
                sample = measure(config, path, size)
                samples[config.name].append(sample)
                print(f"  run {run + 1}: {config.name:<30} {sample.mb_per_s:8.0f} MB/s", flush=True)
    finally:
        os.unlink(path)

    direct = statistics.median(s.mb_per_s for s in samples[CONFIGS[0].name])
    print()
    print(f"| {'relay':<30} | {'MB/s':>6} | {'x direct':>8} | {'relay CPU s/GiB':>15} |")
    print(f"|{'-' * 32}|{'-' * 8}|{'-' * 10}|{'-' * 17}|")
    for config in CONFIGS:
        rate = statistics.median(s.mb_per_s for s in samples[config.name])
        cpus = [s.cpu_s_per_gib for s in samples[config.name] if s.cpu_s_per_gib is not None]
        cpu = f"{statistics.median(cpus):.2f}" if cpus else "-"
        print(f"| {config.name:<30} | {rate:6.0f} | {rate / direct:8.2f} | {cpu:>15} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
