"""ftplb against a direct path, HAProxy and ProFTPD mod_proxy, in one run.

    python -m benchmarks.ftp_bench [--quick] [--runs 5] [--size 1G] [--out benchmarks/results]

On loopback, as root (vsftpd switches to the test account): two vsftpd servers,
and in front of them ftplb, HAProxy 2.6 (seed config), HAProxy tuned with splice,
and ProFTPD mod_proxy. Measured, with repetitions interleaved over the paths:

1. RETR and STOR of one large file per path (curl, EPSV): MB/s and the
   balancer's CPU seconds per GiB (/proc, summed over its process tree);
2. short sessions from an asyncio load generator (login, EPSV, LIST or RETR of
   1 KiB, QUIT): sessions/s, latency p50/p99, the balancer's CPU ms per session;
3. resident memory per idle logged-in session, at 1,000 and 5,000 sessions held
   by one fresh ftplb process, and by a fresh HAProxy as the reference;
4. RETR and STOR over FTPS with TLS data connections: ftplb terminating
   explicit FTPS against HAProxy ``mode tcp`` with ``ssl crt`` on every bind
   (implicit FTPS), both with the vsftpd servers plain behind them.
5. workers: sessions/s and CPU per session of ftplb ``workers = N`` against
   HAProxy tuned ``nbthread N``, N = 1, 2, 4 as far as the cores allow;
6. small range: 500 transfers pending at once on a frontend with 10 passive
   ports, from 500 source addresses, behind a barrier (completed/failed);
7. idle: RSS per idle logged-in session up to 10,000 sessions (ftplb with 2
   workers, pyftpdlib servers behind), the load spread over several processes.

Writes RESULTS/<stamp>.json, .md and .png, and prints the Markdown. Each figure
is given as a ratio to direct, to HAProxy (seed config) and to HAProxy tuned.
Run the TLS comparison alone with ``--paths ftplb_tls,haproxy_tls`` (or leave
it out with ``--skip tls``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from tests.integration import servers
from tests.integration.servers import FtpServer

from benchmarks import loadgen, procstat, report, sections, setups, transfers
from benchmarks.setups import PathUnderTest

REPO_ROOT = Path(__file__).resolve().parents[1]
MiB = 1024**2
GiB = 1024**3
BIG_NAME = "big.bin"
SMALL_NAME = "small.bin"
SMALL_SIZE = 1024
OPS: tuple[transfers.Op, ...] = ("retr", "stor")
FILL_BLOCK = 16 * MiB
# Bytes of memory a held vsftpd session costs (two processes); measured ~0.7 MB.
VSFTPD_BYTES_PER_SESSION = 1 * MiB
MEMORY_RESERVE = 2 * GiB
RSS_PATHS = ("ftplb", "haproxy")
PHASES = ("throughput", "sessions", "rss", "tls", "workers", "small_range", "idle")

T = TypeVar("T")


# --------------------------------------------------------------------------- arguments


def parse_size(text: str) -> int:
    """A size such as "1G", "256M", "64K", or a byte count."""
    units = {"K": 1024, "M": MiB, "G": GiB}
    suffix = text[-1:].upper()
    if suffix in units:
        return int(float(text[:-1]) * units[suffix])
    return int(text)


def size_text(size: int) -> str:
    if size % GiB == 0:
        return f"{size // GiB} GiB"
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size} B"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ftp_bench",
        description=__doc__.splitlines()[0] if __doc__ else "",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 transfer run of 256 MiB, 1 load run of 1,000 sessions (RSS levels unchanged); "
        "workers 500 sessions x 1 run, small range 200 sessions, idle at 2,000 and 10,000",
    )
    parser.add_argument("--runs", type=int, help="interleaved transfer runs (default 5)")
    parser.add_argument("--size", type=parse_size, help="bytes per transfer (default 1G)")
    parser.add_argument("--sessions", type=int, help="sessions per load run (default 2000)")
    parser.add_argument("--concurrency", type=int, default=50, help="sessions at a time")
    parser.add_argument("--session-runs", type=int, help="interleaved load runs (default 3)")
    parser.add_argument(
        "--rss-levels", default="1000,5000", help="idle sessions held for the RSS figure"
    )
    parser.add_argument(
        "--workers-counts",
        default=",".join(str(c) for c in sections.WORKER_COUNTS),
        help="workers section: ftplb workers / HAProxy nbthread counts (those <= nproc run)",
    )
    parser.add_argument("--workers-sessions", type=int, help="workers: sessions per run (2000)")
    parser.add_argument("--workers-runs", type=int, help="workers: runs per count (default 3)")
    parser.add_argument(
        "--range-sessions", type=int, help="small range: sessions, half RETR half STOR (500)"
    )
    parser.add_argument(
        "--range-size", type=parse_size, default=MiB, help="small range: bytes per file (1M)"
    )
    parser.add_argument(
        "--range-ports",
        type=int,
        default=10,
        help="small range: ftplb's passive ports (10; more, to check the client itself)",
    )
    parser.add_argument(
        "--idle-levels", help="idle: sessions held, comma-separated (default 1000,5000,10000)"
    )
    parser.add_argument(
        "--idle-processes", type=int, default=4, help="idle: load-generator processes"
    )
    parser.add_argument(
        "--paths",
        default=",".join(p.key for p in setups.ALL_PATHS),
        help="paths to measure (direct,ftplb,ftplb_limited,haproxy,haproxy_tuned,proftpd; "
        "ftplb_tls,haproxy_tls for the TLS phase)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="phases to leave out: throughput,sessions,rss,tls,workers,small_range,idle "
        "(comma-separated)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 5)
    args.size = args.size or (256 * MiB if args.quick else GiB)
    args.session_runs = args.session_runs or (1 if args.quick else 3)
    args.sessions = args.sessions or (1000 if args.quick else 2000)
    args.rss_levels = sorted({int(x) for x in args.rss_levels.split(",") if x.strip()})
    args.workers_counts = sorted({int(x) for x in args.workers_counts.split(",") if x.strip()})
    args.workers_sessions = args.workers_sessions or (500 if args.quick else 2000)
    args.workers_runs = args.workers_runs or (1 if args.quick else 3)
    args.range_sessions = args.range_sessions or (200 if args.quick else 500)
    if not 1 <= args.range_ports <= 1000:
        parser.error("--range-ports must be 1 to 1000")
    idle_default = "2000,10000" if args.quick else "1000,5000,10000"
    args.idle_levels = sorted(
        {int(x) for x in (args.idle_levels or idle_default).split(",") if x.strip()}
    )
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    args.skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    unknown_phases = args.skip - set(PHASES)
    if unknown_phases:
        parser.error(f"unknown phases in --skip: {', '.join(sorted(unknown_phases))}")
    unknown = set(args.paths) - set(setups.STARTERS)
    if unknown:
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    return args


# --------------------------------------------------------------------------- environment


def _first_line(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, check=False, stdin=subprocess.DEVNULL
        )
        text = (done.stdout or done.stderr).strip()
        return text.splitlines()[0] if text else "?"
    return "not available"


def _ftplb_commit() -> str:
    commit = _first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "src"])
    return f"commit {commit}" + (" + uncommitted changes in src/" if dirty not in ("?", "") else "")


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def environment() -> dict[str, Any]:
    return {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        # Which build runs ftplb matters: a PGO/LTO one (Debian's) costs ~12% less per session.
        "python": f"{platform.python_version()} ({os.path.realpath(sys.executable)})",
        "ftplb_commit": _ftplb_commit(),
        "haproxy": setups.haproxy_version(),
        "proftpd": setups.proftpd_version(),
        # vsftpd -v writes its version to standard input (fd 0).
        "vsftpd": _first_line(["sh", "-c", '"$0" -v 0>&1', str(servers.VSFTPD_BIN)]).replace(
            "vsftpd: ", "vsftpd "
        ),
        "curl": " ".join(_first_line(["curl", "--version"]).split()[:2]),
        "loadavg_start": loadavg(),
        "mem_available_gib": round(mem_available() / GiB, 1),
    }


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --------------------------------------------------------------------------- files


@dataclass
class Workspace:
    """Server roots and the file to move, on tmpfs when there is room."""

    base: Path
    roots: list[Path]
    source_file: Path
    on: str

    @classmethod
    def create(cls, size: int) -> Workspace:
        # Peak use: the file (hard-linked into both roots) and one upload of it.
        needed = 2 * size + 512 * MiB
        shm = Path("/dev/shm")
        if shm.is_dir() and shutil.disk_usage(shm).free >= needed:
            base, on = Path(tempfile.mkdtemp(prefix="ftplb-bench-", dir=shm)), "/dev/shm (tmpfs)"
        else:
            base, on = (
                Path(tempfile.mkdtemp(prefix="ftplb-bench-")),
                f"{tempfile.gettempdir()} (disk)",
            )
        base.chmod(0o755)
        workspace = cls(base, [base / "s1", base / "s2"], base / "source.bin", on)
        workspace._write_source(size)
        return workspace

    def _write_source(self, size: int) -> None:
        block = os.urandom(FILL_BLOCK)
        with self.source_file.open("wb") as out:
            left = size
            while left > 0:
                out.write(block[: min(left, FILL_BLOCK)])
                left -= FILL_BLOCK
        self.source_file.chmod(0o644)

    def fill_roots(self) -> None:
        """After the servers took ownership of their roots: the files to download."""
        for root in self.roots:
            os.link(self.source_file, root / BIG_NAME)
            small = root / SMALL_NAME
            small.write_bytes(os.urandom(SMALL_SIZE))
            small.chmod(0o644)

    def take_upload(self, name: str, size: int) -> None:
        """Check that an upload arrived whole on one server, then delete it."""
        found = [root / name for root in self.roots if (root / name).exists()]
        if len(found) != 1:
            raise transfers.TransferError(f"upload {name} found on {len(found)} servers")
        actual = found[0].stat().st_size
        found[0].unlink()
        if actual != size:
            raise transfers.TransferError(f"upload {name} has {actual} bytes, not {size}")

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------- phases


def rotated(items: Sequence[T], shift: int) -> list[T]:
    """``items`` rotated left by ``shift``: each repetition starts with another path."""
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def log(text: str) -> None:
    print(text, flush=True)


@contextlib.contextmanager
def timed_phase(raw: dict[str, Any], name: str, announce: str) -> Iterator[None]:
    """Log ``announce``, then record how long the block took as ``<name>_seconds``."""
    log(announce)
    started = time.monotonic()
    yield
    raw["meta"][f"{name}_seconds"] = round(time.monotonic() - started)


def run_throughput(
    paths: dict[str, PathUnderTest],
    workspace: Workspace,
    credentials: tuple[str, str],
    size: int,
    runs: int,
    *,
    tls: bool = False,
) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, dict[str, list[str]]]]:
    """RETR and STOR of ``size`` bytes, interleaved over ``paths``; over FTPS with ``tls``."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {"retr": {}, "stor": {}}
    errors: dict[str, dict[str, list[str]]] = {}
    sample_index = 0
    for run in range(runs):
        for op in OPS:
            for key in rotated(list(paths), run):
                path = paths[key]
                name = BIG_NAME if op == "retr" else f"up-{key}-{run}.bin"
                sample_index += 1
                source = loadgen.source_address(sample_index)
                try:
                    sample = _transfer(
                        op, path, run, credentials, name, size, source, workspace, tls
                    )
                    if op == "stor":
                        workspace.take_upload(name, size)
                except (transfers.TransferError, subprocess.TimeoutExpired, OSError) as error:
                    errors.setdefault(op, {}).setdefault(key, []).append(str(error)[:500])
                    log(f"  run {run + 1} {op.upper()} {key:<14} FAILED: {str(error)[:300]}")
                    for root in workspace.roots:
                        with contextlib.suppress(FileNotFoundError):
                            (root / name).unlink()
                    continue
                cpu = sample.cpu_s_per_gib
                results[op].setdefault(key, []).append(
                    {
                        "mb_per_s": round(sample.mb_per_s, 1),
                        "seconds": round(sample.seconds, 4),
                        "wall_seconds": round(sample.wall_seconds, 4),
                        "cpu_s_per_gib": None if cpu is None else round(cpu, 4),
                    }
                )
                log(
                    f"  run {run + 1} {op.upper()} {key:<14} {sample.mb_per_s:8.0f} MB/s"
                    + ("" if cpu is None else f"   balancer CPU {cpu:5.2f} s/GiB")
                )
    return results, errors


def _transfer(  # noqa: PLR0917 - one call site, all positional for brevity
    op: transfers.Op,
    path: PathUnderTest,
    run: int,
    credentials: tuple[str, str],
    name: str,
    size: int,
    source: str,
    workspace: Workspace,
    tls: bool,
) -> transfers.TransferSample:
    """One RETR or STOR through ``path``: curl for plain FTP, the FTPS client for TLS."""
    if tls:
        assert path.ca_file is not None
        return transfers.tls_transfer(
            op,
            path.target(run),
            credentials,
            name,
            size,
            source=source,
            ca_file=path.ca_file,
            implicit=path.implicit_tls,
            upload_from=workspace.source_file,
            balancer_pid=path.pid,
        )
    return transfers.transfer(
        op,
        path.target(run),
        credentials,
        name,
        size,
        source=source,
        upload_from=workspace.source_file,
        balancer_pid=path.pid,
        forks_sessions=path.forks_sessions,
    )


def _cpu(path: PathUnderTest) -> float | None:
    return None if path.pid is None else procstat.cpu_seconds(path.pid)


def _settle_children(path: PathUnderTest, timeout: float = 10.0) -> None:
    if path.pid is None or not path.forks_sessions:
        return
    deadline = time.monotonic() + timeout
    while procstat.child_count(path.pid) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def run_load_phase(
    runner: asyncio.Runner,
    paths: dict[str, PathUnderTest],
    credentials: loadgen.Credentials,
    *,
    sessions: int,
    concurrency: int,
    runs: int,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    results: dict[str, dict[str, list[dict[str, Any]]]] = {"list": {}, "retr": {}}
    for run in range(runs):
        for action in ("list", "retr"):
            for key in rotated(list(paths), run):
                path = paths[key]
                _settle_children(path)
                before = _cpu(path)
                outcome = runner.run(
                    loadgen.run_sessions(
                        path.targets,
                        credentials,
                        action=action,
                        sessions=sessions,
                        concurrency=concurrency,
                        retr_name=SMALL_NAME,
                        retr_size=SMALL_SIZE,
                        deadline=120.0,
                    )
                )
                _settle_children(path)
                after = _cpu(path)
                cpu_ms = (
                    None
                    if before is None or after is None or outcome.ok == 0
                    else (after - before) * 1000 / outcome.ok
                )
                results[action].setdefault(key, []).append(
                    {
                        "attempted": outcome.attempted,
                        "ok": outcome.ok,
                        "failed": outcome.failed,
                        "not_started": sessions - outcome.attempted,
                        "errors": outcome.errors,
                        "elapsed_s": round(outcome.elapsed, 3),
                        "sessions_per_s": round(outcome.sessions_per_s, 1),
                        "p50_ms": None if outcome.p50_ms is None else round(outcome.p50_ms, 2),
                        "p99_ms": None if outcome.p99_ms is None else round(outcome.p99_ms, 2),
                        "cpu_ms_per_session": None if cpu_ms is None else round(cpu_ms, 3),
                    }
                )
                log(
                    f"  run {run + 1} {action.upper():<4} {key:<14} "
                    f"{outcome.sessions_per_s:6.0f}/s  p50 {outcome.p50_ms or 0:7.1f} ms  "
                    f"p99 {outcome.p99_ms or 0:7.1f} ms  "
                    + ("" if cpu_ms is None else f"CPU {cpu_ms:5.2f} ms/session  ")
                    + f"failed {outcome.failed}"
                    + (f" {outcome.errors}" if outcome.errors else "")
                )
    return results


def _wait_backends_idle(backends: list[FtpServer], timeout: float = 60.0) -> None:
    """Wait until the servers' session processes from held sessions have exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(procstat.child_count(s.pid) == 0 for s in backends):
            return
        time.sleep(0.2)


def affordable_levels(levels: Sequence[int], available: int) -> list[int]:
    """The levels whose vsftpd session processes fit in memory, with a reserve left."""
    return [lv for lv in levels if lv * VSFTPD_BYTES_PER_SESSION + MEMORY_RESERVE <= available]


def run_rss_phase(
    runner: asyncio.Runner,
    backends: list[FtpServer],
    credentials: loadgen.Credentials,
    keys: Sequence[str],
    levels: Sequence[int],
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for key in keys:
        _wait_backends_idle(backends)
        usable = affordable_levels(levels, mem_available())
        skipped = sorted(set(levels) - set(usable))
        if skipped:
            log(f"  RSS {key}: levels {skipped} skipped, not enough memory for the servers")
        path = setups.STARTERS[key](backends)
        assert path.pid is not None
        pid = path.pid
        try:
            # Warm up: the first sessions import code and fill caches; not session memory.
            runner.run(
                loadgen.run_sessions(
                    path.targets,
                    credentials,
                    action="list",
                    sessions=100,
                    concurrency=10,
                    retr_name=SMALL_NAME,
                    retr_size=SMALL_SIZE,
                    deadline=60.0,
                )
            )
            _wait_backends_idle(backends, timeout=10.0)
            time.sleep(1.0)
            baseline = procstat.rss_bytes(pid)
            entry: dict[str, Any] = {
                "backend": "vsftpd",
                "baseline_bytes": baseline,
                "levels": {},
                "skipped_levels": skipped,
            }

            at_level = sections.rss_recorder(f"RSS {key:<14}", pid, baseline, entry)
            if usable:
                held = runner.run(
                    loadgen.hold_sessions(
                        path.targets, credentials, levels=usable, at_level=at_level
                    )
                )
                entry.update(
                    attempted=held.attempted,
                    failed=held.failed,
                    errors=held.errors,
                    ramp_seconds=round(held.ramp_seconds, 1),
                )
            results[key] = entry
        finally:
            path.stop()
    _wait_backends_idle(backends)
    return results


def run_new_sections(  # noqa: PLR0917 - one call site
    raw: dict[str, Any],
    args: argparse.Namespace,
    runner: asyncio.Runner,
    backends: list[FtpServer],
    workspace: Workspace,
    credentials: loadgen.Credentials,
) -> None:
    """The workers, small-range and idle sections, each unless ``--skip`` names it."""
    cores = sections.nproc()
    announced_runs: dict[str, tuple[str, Callable[[], dict[str, Any]]]] = {
        "workers": (
            f"workers: ftplb workers / HAProxy nbthread {args.workers_counts} (nproc {cores})",
            lambda: sections.run_workers_phase(
                runner,
                backends,
                credentials,
                counts=args.workers_counts,
                sessions=args.workers_sessions,
                concurrency=args.concurrency,
                runs=args.workers_runs,
            ),
        ),
        "small_range": (
            f"small range: {args.range_sessions} transfers of {size_text(args.range_size)}",
            lambda: sections.run_small_range_phase(
                runner,
                backends,
                workspace.roots,
                credentials,
                sessions=args.range_sessions,
                size=args.range_size,
                ports=args.range_ports,
            ),
        ),
        "idle": (
            f"idle: RSS per idle session at {args.idle_levels}, pyftpdlib behind",
            lambda: sections.run_idle_phase(
                runner,
                credentials,
                levels=args.idle_levels,
                fd_limit=args.fd_limit,
                processes=args.idle_processes,
            ),
        ),
    }
    for name, (announce, run) in announced_runs.items():
        if name not in args.skip:
            with timed_phase(raw, name, announce):
                raw[name] = run()


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def started_paths(
    keys: Sequence[str], backends: list[FtpServer]
) -> Iterator[dict[str, PathUnderTest]]:
    running: dict[str, PathUnderTest] = {}
    try:
        for key in keys:
            running[key] = setups.STARTERS[key](backends)
            log(f"  started {key:<14} on {running[key].targets[0][0]} (pid {running[key].pid})")
        yield running
    finally:
        for path in running.values():
            path.stop()


def warm_up(
    runner: asyncio.Runner,
    paths: dict[str, PathUnderTest],
    credentials: loadgen.Credentials,
) -> None:
    for key, path in paths.items():
        outcome = runner.run(
            loadgen.run_sessions(
                path.targets,
                credentials,
                action="retr",
                sessions=100,
                concurrency=10,
                retr_name=SMALL_NAME,
                retr_size=SMALL_SIZE,
                deadline=60.0,
            )
        )
        if outcome.ok == 0:
            raise setups.SetupError(f"{key}: no warm-up session succeeded: {outcome.errors}")


def write_outputs(raw: dict[str, Any], out_dir: Path, stamp: str) -> tuple[Path, Path, Path | None]:
    figures = report.build_figures(raw)
    checks = report.check_targets(raw, figures)
    raw["figures"] = report.figures_json(figures)
    raw["targets"] = report.checks_json(checks)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stamp}.json"
    md_path = out_dir / f"{stamp}.md"
    json_path.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n")
    md_path.write_text(report.markdown(raw, figures, checks))
    png_path: Path | None = None
    if "throughput" not in raw and "workers" not in raw:
        return json_path, md_path, None  # the charts show throughput ratios and workers only
    try:
        from benchmarks.plot import plot, plot_workers  # noqa: PLC0415

        if "workers" in raw:
            png_path = plot_workers(raw, out_dir / f"{stamp}-workers.png")
        if "throughput" in raw:
            png_path = plot(raw, out_dir / f"{stamp}.png")
    except ImportError as error:
        log(f"no plot: {error} (pip install matplotlib)")
    return json_path, md_path, png_path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("ftp_bench needs root: vsftpd switches to the ftptest account", file=sys.stderr)
        return 2
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    fd_limit = raise_fd_limit()
    raw: dict[str, Any] = {"meta": environment()}
    raw["meta"]["fd_limit"] = fd_limit
    args.fd_limit = fd_limit
    credentials = (servers.SYSTEM_USER, servers.SYSTEM_PASSWORD)
    load_credentials = loadgen.Credentials(*credentials)
    log(
        f"ftp_bench: {size_text(args.size)} x {args.runs} runs; {args.sessions} sessions at "
        f"{args.concurrency} x {args.session_runs} runs; RSS at {args.rss_levels}; "
        f"load average {raw['meta']['loadavg_start']}"
    )
    workspace = Workspace.create(args.size)
    raw["params"] = {
        "size": args.size,
        "size_text": size_text(args.size),
        "runs": args.runs,
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "session_runs": args.session_runs,
        "rss_levels": args.rss_levels,
        "rss_backend": "vsftpd",
        "roots_on": workspace.on,
        "upload_from": workspace.on,
        "paths": args.paths,
        "quick": args.quick,
        "workers_counts": args.workers_counts,
        "workers_sessions": args.workers_sessions,
        "workers_runs": args.workers_runs,
        "range_sessions": args.range_sessions,
        "range_size": args.range_size,
        "range_ports": args.range_ports,
        "idle_levels": args.idle_levels,
        "idle_processes": args.idle_processes,
    }
    tls_keys = [k for k in args.paths if k in {p.key for p in setups.TLS_PATHS}]
    raw["tls"] = {
        "status": "measured" if tls_keys and "tls" not in args.skip else "not measured",
        "reason": "left out (--skip tls, or no TLS path in --paths)",
        "client": "Python ssl, 1 MiB reads/writes, EPSV, TLS data connections",
    }
    with contextlib.ExitStack() as stack:
        stack.callback(workspace.remove)
        runner = stack.enter_context(asyncio.Runner(loop_factory=loadgen.event_loop_factory()))
        log(f"servers: two vsftpd, roots on {workspace.on}")
        backends = setups.start_vsftpd_pair(workspace.roots)
        for server in backends:
            stack.callback(server.stop)
        workspace.fill_roots()
        wanted = [k for k in args.paths if k not in tls_keys]
        plain_phases = "throughput" not in args.skip or "sessions" not in args.skip
        if wanted and plain_phases:
            with started_paths(wanted, backends) as paths:
                warm_up(runner, paths, load_credentials)
                if "throughput" not in args.skip:
                    announce = f"throughput: RETR and STOR of {size_text(args.size)}"
                    with timed_phase(raw, "throughput", announce):
                        raw["throughput"], raw["transfer_errors"] = run_throughput(
                            paths, workspace, credentials, args.size, args.runs
                        )
                if "sessions" not in args.skip:
                    announce = f"sessions: {args.sessions} at concurrency {args.concurrency}"
                    with timed_phase(raw, "sessions", announce):
                        raw["sessions"] = run_load_phase(
                            runner,
                            paths,
                            load_credentials,
                            sessions=args.sessions,
                            concurrency=args.concurrency,
                            runs=args.session_runs,
                        )
        if tls_keys and "tls" not in args.skip:
            announce = f"TLS: RETR and STOR of {size_text(args.size)} over FTPS: {tls_keys}"
            with timed_phase(raw, "tls", announce), started_paths(tls_keys, backends) as paths:
                raw["tls_throughput"], raw["tls_transfer_errors"] = run_throughput(
                    paths, workspace, credentials, args.size, args.runs, tls=True
                )
        run_new_sections(raw, args, runner, backends, workspace, load_credentials)
        if "rss" not in args.skip and any(k in args.paths for k in RSS_PATHS):
            keys = [k for k in RSS_PATHS if k in args.paths]
            announce = f"RSS per idle logged-in session: {keys} at {args.rss_levels}"
            with timed_phase(raw, "rss", announce):
                raw["rss"] = run_rss_phase(
                    runner, backends, load_credentials, keys, args.rss_levels
                )
    raw["meta"]["loadavg_end"] = loadavg()
    raw["meta"]["total_seconds"] = round(time.monotonic() - started)
    json_path, md_path, png_path = write_outputs(raw, args.out, stamp)
    log("")
    log(md_path.read_text())
    log(f"written: {json_path}, {md_path}" + (f", {png_path}" if png_path else ""))
    log(f"total {raw['meta']['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
