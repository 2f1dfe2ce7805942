"""The workers, small-range and idle sections of the benchmark.

- **workers**: sessions/s and CPU per session of ftplb with ``workers = N``
  against the tuned HAProxy with ``nbthread N``, for the counts the machine's
  cores allow;
- **small range**: hundreds of transfers pending at once on a frontend with 10
  passive ports (``small_range.py``);
- **idle**: resident memory per idle logged-in session up to 10,000 sessions,
  held by several load-generator processes (``holders.py``), with pyftpdlib
  servers behind (one process for all their sessions).

Each ``run_*`` function returns the plain dict that goes into the JSON under
the section's name; ``report_sections.py`` turns it into tables.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.integration.servers import FtpServer

from benchmarks import holders, loadgen, procstat, report_sections, setups, small_range
from benchmarks.setups import PathUnderTest
from ftplb.runtime.steering import steered_index

MiB = 1024**2
WORKER_COUNTS = (1, 2, 4)
RANGE_FILE = "range.bin"
# Open files a balancer process needs besides its sessions' (listeners, logs, epoll,
# pipes, the admin socket): kept free under the hard limit when sizing a level.
FD_RESERVE = 500
FDS_PER_SESSION = 2  # client side and server side


def log(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- workers


def nproc() -> int:
    """The cores this process may run on (what ``nproc`` prints)."""
    return len(os.sched_getaffinity(0))


def counts_within(counts: Sequence[int], cores: int) -> list[int]:
    """The worker/thread counts to run: those the machine's cores allow."""
    return sorted({count for count in counts if 1 <= count <= cores})


def _cpu(path: PathUnderTest) -> float:
    assert path.pid is not None
    return procstat.cpu_seconds(path.pid)


def _warm_up(runner: asyncio.Runner, path: PathUnderTest, credentials: loadgen.Credentials) -> None:
    outcome = runner.run(
        loadgen.run_sessions(
            path.targets, credentials, action="list", sessions=100, concurrency=10, deadline=60.0
        )
    )
    if outcome.ok == 0:
        raise setups.SetupError(f"{path.key}: no warm-up session succeeded: {outcome.errors}")


def _load_sample(
    runner: asyncio.Runner,
    path: PathUnderTest,
    credentials: loadgen.Credentials,
    sessions: int,
    concurrency: int,
) -> dict[str, Any]:
    before = _cpu(path)
    outcome = runner.run(
        loadgen.run_sessions(
            path.targets,
            credentials,
            action="list",
            sessions=sessions,
            concurrency=concurrency,
            deadline=120.0,
        )
    )
    after = _cpu(path)
    cpu_ms = None if outcome.ok == 0 else (after - before) * 1000 / outcome.ok
    assert path.pid is not None
    return {
        "attempted": outcome.attempted,
        "ok": outcome.ok,
        "failed": outcome.failed + sessions - outcome.attempted,
        "errors": outcome.errors,
        "elapsed_s": round(outcome.elapsed, 3),
        "sessions_per_s": round(outcome.sessions_per_s, 1),
        "cpu_ms_per_session": None if cpu_ms is None else round(cpu_ms, 3),
        "processes": 1 + procstat.child_count(path.pid),
    }


def run_workers_phase(
    runner: asyncio.Runner,
    backends: list[FtpServer],
    credentials: loadgen.Credentials,
    *,
    counts: Sequence[int],
    sessions: int,
    concurrency: int,
    runs: int,
) -> dict[str, Any]:
    """At each count: ftplb ``workers = N`` and HAProxy tuned ``nbthread N`` side by side,
    runs interleaved; CPU is summed over each balancer's processes (master + workers)."""
    cores = nproc()
    usable = counts_within(counts, cores)
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {"ftplb": {}, "haproxy": {}}
    for count in usable:
        running: dict[str, PathUnderTest] = {}
        try:
            running["ftplb"] = setups.start_ftplb_workers(backends, count)
            running["haproxy"] = setups.start_haproxy_threads(backends, count)
            for path in running.values():
                _warm_up(runner, path, credentials)
            for run in range(runs):
                order = ["ftplb", "haproxy"] if run % 2 == 0 else ["haproxy", "ftplb"]
                for key in order:
                    sample = _load_sample(runner, running[key], credentials, sessions, concurrency)
                    samples[key].setdefault(str(count), []).append(sample)
                    cpu = sample["cpu_ms_per_session"]
                    log(
                        f"  workers {count} run {run + 1} {key:<8} "
                        f"{sample['sessions_per_s']:6.0f}/s  "
                        + ("" if cpu is None else f"CPU {cpu:5.2f} ms/session  ")
                        + f"({sample['processes']} processes)  failed {sample['failed']}"
                        + (f" {sample['errors']}" if sample["errors"] else "")
                    )
        finally:
            for path in running.values():
                path.stop()
    return {
        "nproc": cores,
        "counts": usable,
        "skipped_counts": sorted(set(counts) - set(usable)),
        "sessions": sessions,
        "concurrency": concurrency,
        "runs": runs,
        "workload": "login, EPSV, LIST, QUIT",
        "haproxy_config": "tuned (splice, tune.pipesize 1048576) + nbthread N",
        "samples": samples,
        "summary": report_sections.workers_summary(samples),
    }


# --------------------------------------------------------------------------- small range


def _read_upload(roots: Sequence[Path]) -> Callable[[str], bytes | None]:
    def find(name: str) -> bytes | None:
        for root in roots:
            candidate = root / name
            if candidate.exists():
                return candidate.read_bytes()
        return None

    return find


def run_small_range_phase(
    runner: asyncio.Runner,
    backends: list[FtpServer],
    roots: Sequence[Path],
    credentials: loadgen.Credentials,
    *,
    sessions: int,
    size: int,
    ports: int = 10,
) -> dict[str, Any]:
    """``sessions`` transfers (half RETR, half STOR of ``size`` bytes) pending at once
    on ftplb's ``ports`` passive ports, each from its own source address."""
    content = os.urandom(size)
    for root in roots:
        target = root / RANGE_FILE
        target.write_bytes(content)
        target.chmod(0o644)
    path = setups.start_ftplb_small_range(backends, ports)
    try:
        outcome = runner.run(
            small_range.run_barrier_transfers(
                path.targets[0],
                credentials,
                sessions=sessions,
                retr_name=RANGE_FILE,
                retr_sha256=hashlib.sha256(content).hexdigest(),
                retr_size=size,
                base_payload=os.urandom(size),
            )
        )
    finally:
        path.stop()
    good_uploads, upload_problems = small_range.check_uploads(outcome.uploads, _read_upload(roots))
    for root in roots:
        for stale in [*root.glob("range-*.bin"), root / RANGE_FILE]:
            stale.unlink(missing_ok=True)
    bad_uploads = len(outcome.uploads) - good_uploads
    completed = outcome.completed - bad_uploads
    errors = Counter(outcome.errors)
    errors.update(upload_problems)
    moved = outcome.bytes_moved - bad_uploads * size
    rate = moved / outcome.transfer_seconds / 1e6 if outcome.transfer_seconds > 0 else 0.0
    entry = {
        "sessions": sessions,
        "passive_ports": ports,
        "size": size,
        "retr": (sessions + 1) // 2,
        "stor": sessions // 2,
        "sources": small_range.source_span(sessions),
        "passive_replies": outcome.passive_ok,
        "completed": completed,
        "failed": sessions - completed,
        "errors": dict(errors),
        "login_seconds": round(outcome.login_seconds, 2),
        "transfer_seconds": round(outcome.transfer_seconds, 2),
        "mb_per_s": round(rate, 1),
    }
    log(
        f"  small range: {completed} of {sessions} completed, {sessions - completed} failed, "
        f"{outcome.passive_ok} passive replies; logins {outcome.login_seconds:.1f} s, "
        f"transfers {outcome.transfer_seconds:.1f} s, {rate:.0f} MB/s"
        + (f" {dict(errors)}" if errors else "")
    )
    return entry


# --------------------------------------------------------------------------- idle


def busiest_share(level: int, workers: int, steer: Callable[[str, int], int]) -> int:
    """The most sessions one worker gets of ``level`` sessions from the load phase's
    source addresses, steered by client address."""
    counts = Counter(steer(loadgen.source_address(i), workers) for i in range(level))
    return max(counts.values(), default=0)


def fits(sessions_in_one_process: int, fd_limit: int) -> bool:
    """Whether one process can hold that many relayed sessions under ``fd_limit``."""
    return sessions_in_one_process * FDS_PER_SESSION + FD_RESERVE <= fd_limit


def stand_in_level(fd_limit: int, step: int = 500) -> int:
    """The most sessions one process holds under ``fd_limit``, rounded down to ``step``."""
    most = (fd_limit - FD_RESERVE) // FDS_PER_SESSION
    return max(step, most // step * step)


def _process_breakdown(pid: int) -> list[dict[str, int]]:
    """RSS and open files of each process of the tree (master first)."""
    stats = procstat.all_stats()
    pids = [pid, *(s.pid for s in procstat.descendants(pid, stats))]
    out = []
    for each in pids:
        stat = procstat.read_stat(each)
        if stat is None:
            continue
        try:
            fds = len(os.listdir(f"/proc/{each}/fd"))
        except OSError:
            fds = -1
        out.append({"pid": each, "rss_bytes": stat.rss_pages * procstat.PAGE_SIZE, "fds": fds})
    return out


def rss_recorder(
    label: str, pid: int, baseline: int, entry: dict[str, Any], *, per_process: bool = False
) -> Callable[[int, int], None]:
    """What to do at each level of held sessions: read the RSS of ``pid``'s process tree,
    record it and its growth per session over ``baseline`` in ``entry["levels"]`` (with
    ``per_process``, each process's RSS and open files too), and log it after ``label``."""

    def at_level(level: int, held: int) -> None:
        rss = procstat.rss_bytes(pid)
        per = (rss - baseline) / held if held else 0.0
        record: dict[str, Any] = {
            "held": held,
            "rss_bytes": rss,
            "per_session_bytes": round(per, 1),
        }
        if per_process:
            record["processes"] = _process_breakdown(pid)
        entry["levels"][str(level)] = record
        log(
            f"  {label} {held:>6} of {level:>6} held: RSS {rss / MiB:7.1f} MiB "
            f"(baseline {baseline / MiB:.1f}), {per / 1024:6.1f} KiB per session"
        )

    return at_level


def _idle_path(
    key: str,
    backends: list[FtpServer],
    levels: Sequence[int],
    fd_limit: int,
    workers: int,
) -> tuple[list[int], list[int], Callable[[], PathUnderTest]]:
    """The levels this path can hold (each process under the fd limit), those it cannot,
    and how to start it."""
    if key == "ftplb":
        usable = [lv for lv in levels if fits(busiest_share(lv, workers, steered_index), fd_limit)]
        return (
            usable,
            sorted(set(levels) - set(usable)),
            (lambda: setups.start_ftplb_idle(backends, workers)),
        )
    usable = [lv for lv in levels if fits(lv, fd_limit)]
    skipped = sorted(set(levels) - set(usable))
    if skipped:
        # The most it can hold stands in for the levels it cannot, for the ratio.
        usable = sorted({*usable, stand_in_level(fd_limit)})
    maxconn = max(usable, default=100) + 100
    return usable, skipped, (lambda: setups.start_haproxy_idle(backends, maxconn))


def run_idle_phase(
    runner: asyncio.Runner,
    credentials: loadgen.Credentials,
    *,
    levels: Sequence[int],
    fd_limit: int,
    workers: int = 2,
    processes: int = 4,
    keys: Sequence[str] = ("ftplb", "haproxy"),
) -> dict[str, Any]:
    """RSS per idle logged-in session at each level, for ftplb (``workers``, RSS summed
    over master and workers) and HAProxy (one process), pyftpdlib behind both."""
    base = Path(tempfile.mkdtemp(prefix="ftplb-bench-idle-", dir=setups._tmpfs_or_tmp()))
    base.chmod(0o755)
    backends: list[FtpServer] = []
    results: dict[str, Any] = {
        "backend": "pyftpdlib (one process, FTPServer on epoll), two servers",
        "ftplb_workers": workers,
        "load_processes": processes,
        "fd_limit": fd_limit,
        "paths": {},
    }
    try:
        for host in setups.IDLE_SERVER_HOSTS:
            backends.append(setups.start_pyftpdlib_async(host, base / host))
        for key in keys:
            usable, skipped, start = _idle_path(key, backends, levels, fd_limit, workers)
            entry: dict[str, Any] = {"levels": {}, "skipped_levels": skipped}
            results["paths"][key] = entry
            if skipped:
                log(f"  idle {key}: levels {skipped} not run: one process would pass the fd limit")
            if not usable:
                continue
            path = start()
            assert path.pid is not None
            try:
                # Warm up (imports, caches): 100 sessions logged in and closed again.
                runner.run(
                    loadgen.hold_sessions(
                        path.targets, credentials, levels=[100], at_level=lambda _l, _h: None
                    )
                )
                time.sleep(1.0)
                baseline = procstat.rss_bytes(path.pid)
                entry["baseline_bytes"] = baseline
                entry["processes"] = 1 + procstat.child_count(path.pid)
                held = holders.hold_levels(
                    path.targets,
                    credentials,
                    levels=usable,
                    at_level=rss_recorder(
                        f"idle {key:<8}", path.pid, baseline, entry, per_process=True
                    ),
                    processes=processes,
                )
                entry.update(
                    attempted=held.attempted,
                    failed=held.failed,
                    errors=held.errors,
                    ramp_seconds=round(held.ramp_seconds, 1),
                )
            finally:
                path.stop()
    finally:
        for server in backends:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
    results["summary"] = report_sections.idle_summary(results["paths"])
    return results
