"""What one ftplb session costs: instructions per session, where they go, and memory.

A reproducible figure for changes to the session path, independent of what
else runs on the machine: two vsftpd servers on loopback, a real ``ftplb run``
in front of them, and a fixed number of short sessions (login, EPSV, LIST,
QUIT) through it.

* ``instructions``: ftplb runs under ``valgrind --tool=callgrind`` (its workers
  too, with ``--workers``), its counters zeroed after a warm-up. Two windows are counted,
  one of N/2 sessions and one of N, and the difference divided by N/2 is the
  figure per session, so whatever a window costs once cancels out. A third
  window, idle, counts what the process does per second under no load (timers,
  sampling), which the windows of sessions also contain.
* ``profile``: the same sessions under ``cProfile``, for attribution only (the
  profiler's own cost distorts the totals): the functions by own time.
* ``syscalls``: the same sessions under ``strace -c`` (no valgrind), in two
  windows like ``instructions``: the system calls per session, by name.
* ``memory``: 1,000 idle logged-in sessions (by default) against a fresh
  balancer, warmed up with 100 sessions first; the growth of tracemalloc's
  traced memory and of the RSS, per session, and the lines that allocated most.

Run as root (vsftpd switches users), from a checkout with ``.venv``::

    .venv/bin/python -m benchmarks.session_cost instructions --sessions 200
    .venv/bin/python -m benchmarks.session_cost profile --sessions 500
    .venv/bin/python -m benchmarks.session_cost syscalls --sessions 1000
    .venv/bin/python -m benchmarks.session_cost memory --idle 1000

Every wait is bounded; every process started is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tests.integration import servers
from tests.integration.servers import FtpServer, poll_banner, read_banner

from benchmarks import setups
from benchmarks.callgrind_costs import self_costs
from benchmarks.loadgen import Credentials, LoadResult, hold_sessions, run_sessions
from benchmarks.procstat import (
    all_stats,
    context_switches,
    descendants,
    read_stat,
    rss_bytes,
)
from benchmarks.strace_counts import SyscallCount, syscall_counts

SERVER_HOSTS = ("127.0.0.41", "127.0.0.42")
FTPLB_HOST = "127.0.0.40"
PORT = 2121
PASSIVE = (44000, 44999)
START_TIMEOUT = 180.0
"""ftplb starts in seconds, but under valgrind a slow machine may need minutes."""
CONCURRENCY = 10
WORKER_START = 30.0
STRACE_ATTACH = 1.0
"""Seconds given strace to attach to every process before the counted sessions."""
ADMIN_SECTION = f"""
[admin]
bind = "{FTPLB_HOST}:8404"
user = "admin"
password = "not-a-secret-only-a-benchmark"
"""

_TRACED_MAIN = textwrap.dedent(
    """\
    import json, signal, sys, tracemalloc
    tracemalloc.start(1)
    out = sys.argv.pop(1)
    marks = []
    def mark(signum, frame):
        snap = tracemalloc.take_snapshot()
        current = tracemalloc.get_traced_memory()[0]
        marks.append((current, snap))
        if len(marks) == 2:
            (before, first), (after, second) = marks
            top = second.compare_to(first, "lineno")[:25]
            report = {
                "traced_before": before,
                "traced_after": after,
                "top": [[str(s.traceback[0]), s.size_diff, s.count_diff] for s in top],
            }
            with open(out, "w") as f:
                json.dump(report, f)
    signal.signal(signal.SIGUSR1, mark)
    from ftplb.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)
"""``ftplb run`` with tracemalloc on: each SIGUSR1 takes a snapshot, the second writes
the difference to the file named first."""


_PROFILED_MAIN = textwrap.dedent(
    """\
    import cProfile, signal, sys
    out = sys.argv.pop(1)
    profiler = cProfile.Profile()
    def start(signum, frame):
        profiler.enable()
    def stop(signum, frame):
        profiler.disable()
        profiler.dump_stats(out)
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from ftplb.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)
"""``ftplb run`` that profiles from SIGUSR1 to SIGUSR2, then writes the profile."""


def ftplb_config(backends: Sequence[FtpServer], workers: int, *, admin: bool = False) -> str:
    """Round robin over ``backends``, no health checks, logs on stdout as in production;
    with ``admin``, an admin listener (and so metrics recording in every process)."""
    limits = f"workers = {workers}\n"
    text = setups.ftplb_config(backends, FTPLB_HOST, PASSIVE, limits, port=PORT)
    return text + ADMIN_SECTION if admin else text


@contextlib.contextmanager
def cost_setup(
    workers: int, *, admin: bool = False
) -> Iterator[tuple[Path, list[FtpServer], Path]]:
    """A private working directory, two vsftpd servers in it, and an ftplb config
    in front of them: (the directory, the servers, the config file)."""
    with tempfile.TemporaryDirectory(prefix="ftplb-cost-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        with vsftpd_pair(workdir) as backends:
            config = workdir / "ftplb.toml"
            config.write_text(ftplb_config(backends, workers, admin=admin))
            yield workdir, backends, config


@contextlib.contextmanager
def vsftpd_pair(workdir: Path) -> Iterator[list[FtpServer]]:
    problem = servers.available("vsftpd")
    if problem is not None:
        raise SystemExit(f"vsftpd cannot run here: {problem}")
    started: list[FtpServer] = []
    try:
        for index, host in enumerate(SERVER_HOSTS):
            root = workdir / f"root{index}"
            root.mkdir()
            (root / "file.txt").write_bytes(b"x" * 100)
            extra = {"log_ftp_protocol": "NO", "xferlog_enable": "NO"}
            started.append(servers.start_vsftpd(host, PORT, root, extra_config=extra))
        yield started
    finally:
        for server in started:
            server.stop()


@contextlib.contextmanager
def ftplb(argv: list[str], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` (an ``ftplb run`` in some wrapper) until it greets; stopped by PID after."""
    log_path = workdir / "ftplb.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        problem = poll_banner(
            lambda: read_banner(FTPLB_HOST, PORT, timeout=10.0),
            lambda: None if process.poll() is None else f"exited with {process.returncode}",
            START_TIMEOUT,
            interval=0.5,
        )
        if problem is not None:
            raise SystemExit(f"ftplb did not start ({problem}):\n{log_path.read_text()[-3000:]}")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def sessions(backends: Sequence[FtpServer], count: int) -> LoadResult:
    first = backends[0]
    result = asyncio.run(
        run_sessions(
            [(FTPLB_HOST, PORT)],
            Credentials(first.user, first.password),
            action="list",
            sessions=count,
            concurrency=CONCURRENCY,
            session_timeout=60.0,
            deadline=600.0,
        )
    )
    if result.failed:
        raise SystemExit(f"{result.failed} of {count} sessions failed: {result.errors}")
    return result


def ftplb_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "ftplb", "run", "-c", str(config)]


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (the master and its workers)."""
    return [root, *(s.pid for s in descendants(root, all_stats()))]


def instructions_of(out_file: Path) -> int:
    """The total Ir of one callgrind dump ("summary:" or "totals:" line)."""
    for line in out_file.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {out_file}")


def counted_window(
    pids: Sequence[int], workdir: Path, work: Callable[[], object]
) -> tuple[int, float, Path]:
    """Zero the counters of ``pids``, run ``work()``, dump: the instructions of all of
    them, the seconds it took, and the dump of the first."""
    before = set(workdir.glob("callgrind.out*"))
    for pid in pids:
        callgrind(pid, "--zero")
    started = time.monotonic()
    work()
    elapsed = time.monotonic() - started
    total, first = 0, None
    for pid in pids:
        callgrind(pid, "--dump")
        deadline = time.monotonic() + 60
        while True:
            new = [p for p in workdir.glob(f"callgrind.out.{pid}*") if p not in before]
            if new and new[0].stat().st_size:
                time.sleep(0.5)  # written in one go, but let it finish
                counted = instructions_of(new[0])
                if len(pids) > 1:
                    print(f"  process {pid}: {counted:,} instructions", flush=True)
                total += counted
                first = first or new[0]
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"no callgrind dump of {pid}")
            time.sleep(0.2)
    assert first is not None
    return total, elapsed, first


def measure_instructions(count: int, idle: float, top: int, workers: int, admin: bool) -> None:
    with cost_setup(workers, admin=admin) as (workdir, backends, config):
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            f"--callgrind-out-file={workdir}/callgrind.out.%p",
            *ftplb_command(config),
        ]
        with ftplb(argv, workdir) as process:
            if workers > 1:
                # The first worker to listen greets; under valgrind the others need
                # a while more to start, and would count their start-up as idle work.
                time.sleep(WORKER_START)
            sessions(backends, 20 * workers)  # warm up: imports, caches, allocations
            pids = process_tree(process.pid)
            half, t_half, _ = counted_window(pids, workdir, lambda: sessions(backends, count // 2))
            full, t_full, dump = counted_window(pids, workdir, lambda: sessions(backends, count))
            quiet, t_quiet, _ = counted_window(pids, workdir, lambda: time.sleep(idle))
        per_session = (full - half) / (count - count // 2)
        per_second_idle = quiet / t_quiet
        idle_share = per_second_idle * (t_full - t_half) / (count - count // 2)
        print(f"processes: {len(pids)} (workers {workers}, admin {admin})")
        print(f"sessions: {count // 2} and {count} (concurrency {CONCURRENCY})")
        print(f"instructions: {half:,} in {t_half:.1f} s, {full:,} in {t_full:.1f} s")
        print(f"idle: {per_second_idle:,.0f} instructions per second ({t_quiet:.1f} s)")
        print(f"PER SESSION: {per_session:,.0f} instructions")
        print(
            f"  of which idle work over the window's extra time: {idle_share:,.0f};"
            f" without it {per_session - idle_share:,.0f}"
        )
        if top:
            costs = self_costs(dump)
            total = sum(costs.values()) or 1
            print(f"\ntop {top} C functions of the {count}-session window (self):")
            for name, spent in costs.most_common(top):
                print(f"{spent:>14,} {100 * spent / total:5.1f}%  {name}")


def measure_profile(count: int, top: int, callers: str | None, sort: str = "tottime") -> None:
    with cost_setup(1) as (workdir, backends, config):
        out = workdir / "ftplb.prof"
        argv = [sys.executable, "-c", _PROFILED_MAIN, str(out), "run", "-c", str(config)]
        with ftplb(argv, workdir) as process:
            sessions(backends, 20)
            process.send_signal(signal.SIGUSR1)
            sessions(backends, count)
            process.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        print(f"{count} sessions; ncalls / {count} is the count per session")
        stats = pstats.Stats(str(out))
        stats.sort_stats(sort).print_stats(top)
        if callers:
            stats.print_callers(callers)


def strace_window(
    pids: Sequence[int], workdir: Path, work: Callable[[], object]
) -> dict[str, SyscallCount]:
    """The system calls of ``pids`` (and their threads) while ``work()`` runs."""
    out = workdir / "strace.txt"
    argv = ["strace", "-c", "-f", "-qq", "-o", str(out)]
    for pid in pids:
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(STRACE_ATTACH)  # attaching has no signal of its own
        work()
    finally:
        tracer.send_signal(signal.SIGINT)
        try:
            _, errors = tracer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait(10)
            raise SystemExit("strace did not stop") from None
    if not out.exists():
        raise SystemExit(f"strace wrote no summary: {errors.strip()}")
    return syscall_counts(out.read_text())


def usage(pids: Sequence[int]) -> tuple[int, int, int, int]:
    """User and system clock ticks, voluntary and involuntary context switches,
    summed over ``pids`` (a process that is gone counts nothing)."""
    totals = [0, 0, 0, 0]
    for pid in pids:
        stat = read_stat(pid)
        voluntary, involuntary = context_switches(pid)
        if stat is not None:
            totals[0] += stat.utime
            totals[1] += stat.stime
        totals[2] += voluntary
        totals[3] += involuntary
    return totals[0], totals[1], totals[2], totals[3]


def measure_syscalls(count: int, workers: int) -> None:
    with (
        cost_setup(workers) as (workdir, backends, config),
        ftplb(ftplb_command(config), workdir) as process,
    ):
        sessions(backends, 20 * workers)  # warm up
        pids = process_tree(process.pid)
        before = usage(pids)
        sessions(backends, count)  # untraced: strace would inflate the CPU times
        user, system, voluntary, involuntary = (
            a - b for a, b in zip(usage(pids), before, strict=True)
        )
        half = strace_window(pids, workdir, lambda: sessions(backends, count // 2))
        full = strace_window(pids, workdir, lambda: sessions(backends, count))
    extra = count - count // 2
    none = SyscallCount(0, 0)
    per_session = {
        name: (
            (counted.calls - half.get(name, none).calls) / extra,
            (counted.errors - half.get(name, none).errors) / extra,
        )
        for name, counted in full.items()
    }
    ms_per_session = 1e3 / os.sysconf("SC_CLK_TCK") / count
    print(f"processes: {len(pids)} (workers {workers})")
    print(
        f"CPU per session, {count} sessions before tracing: user {user * ms_per_session:.3f}"
        f" ms, system {system * ms_per_session:.3f} ms"
    )
    print(
        f"context switches per session: voluntary {voluntary / count:.2f},"
        f" involuntary {involuntary / count:.2f}"
    )
    print(f"sessions: {count // 2} and {count} (concurrency {CONCURRENCY}); per session:")
    print(f"{'system call':<20} {'calls':>8} {'failing':>8}")
    for name, (calls, errors) in sorted(per_session.items(), key=lambda item: -item[1][0]):
        if calls >= 0.05:
            print(f"{name:<20} {calls:>8.1f} {errors:>8.1f}")
    total = sum(calls for calls, _ in per_session.values())
    print(f"PER SESSION: {total:.1f} system calls")


def hold_idle(
    backends: Sequence[FtpServer], count: int, at_level: Callable[[int, int], None]
) -> int:
    """``count`` idle logged-in sessions; ``at_level`` runs while they are held."""
    first = backends[0]
    result = asyncio.run(
        hold_sessions(
            [(FTPLB_HOST, PORT)],
            Credentials(first.user, first.password),
            levels=[count],
            at_level=at_level,
            settle=3.0,
        )
    )
    if result.failed:
        raise SystemExit(f"{result.failed} of {count} logins failed: {result.errors}")
    return result.levels.get(count, 0)


def measure_memory(idle: int, workers: int) -> None:
    with cost_setup(workers) as (workdir, backends, config):
        # The RSS without tracemalloc, whose own records would count in it.
        rss: list[int] = []
        with ftplb(ftplb_command(config), workdir) as process:
            sessions(backends, 100)
            time.sleep(1.0)
            rss.append(rss_bytes(process.pid))
            held = hold_idle(backends, idle, lambda _l, _h: rss.append(rss_bytes(process.pid)))
        report = workdir / "traced.json"
        argv = [sys.executable, "-c", _TRACED_MAIN, str(report), "run", "-c", str(config)]
        with ftplb(argv, workdir) as process:
            sessions(backends, 100)
            time.sleep(1.0)
            process.send_signal(signal.SIGUSR1)
            traced_held = hold_idle(
                backends, idle, lambda _l, _h: process.send_signal(signal.SIGUSR1)
            )
            deadline = time.monotonic() + 60
            while not report.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        if not held or not traced_held or not report.exists():
            raise SystemExit("no sessions held")
        traced = json.loads(report.read_text())
        growth = traced["traced_after"] - traced["traced_before"]
        print(f"idle logged-in sessions held: {held}, then {traced_held} under tracemalloc")
        print(f"RSS per session: {(rss[1] - rss[0]) / held / 1024:.2f} KiB")
        print(f"TRACED per session: {growth / traced_held / 1024:.2f} KiB")
        print("\nallocations that grew most (line, bytes, blocks):")
        for where, size, blocks in traced["top"]:
            size_each, blocks_each = size / traced_held, blocks / traced_held
            print(f"  {size_each:8.1f} B/session {blocks_each:6.2f} blocks  {where}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    ins = sub.add_parser("instructions", help="instructions per session under callgrind")
    ins.add_argument("--sessions", type=int, default=200)
    ins.add_argument("--idle", type=float, default=10.0, help="seconds of the idle window")
    ins.add_argument("--top", type=int, default=25)
    ins.add_argument("--workers", type=int, default=1)
    ins.add_argument("--admin", action="store_true", help="with an admin listener (metrics)")
    prof = sub.add_parser("profile", help="cProfile's functions by own time")
    prof.add_argument("--sessions", type=int, default=500)
    prof.add_argument("--top", type=int, default=40)
    prof.add_argument("--callers", help="also print who calls the functions matching this")
    prof.add_argument(
        "--sort",
        default="tottime",
        choices=("tottime", "cumulative", "calls"),
        help="order of the functions: by own time, by time with callees, or by calls",
    )
    calls = sub.add_parser("syscalls", help="system calls per session under strace -c")
    calls.add_argument("--sessions", type=int, default=1000)
    calls.add_argument("--workers", type=int, default=1)
    mem = sub.add_parser("memory", help="memory per idle logged-in session")
    mem.add_argument("--idle", type=int, default=1000)
    mem.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: vsftpd switches users")
    if args.what == "instructions":
        measure_instructions(args.sessions, args.idle, args.top, args.workers, args.admin)
    elif args.what == "profile":
        measure_profile(args.sessions, args.top, args.callers, args.sort)
    elif args.what == "syscalls":
        measure_syscalls(args.sessions, args.workers)
    else:
        measure_memory(args.idle, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
