"""``workers = N``: a master process that runs N worker processes and keeps them running.

Each worker is a fresh ``python -m ftplb run -c FILE --worker I/N`` that loads
the same configuration file and runs the whole balancer on its share of it
(:mod:`ftplb.config.workers`), on frontend listeners that all workers share
through SO_REUSEPORT (:mod:`ftplb.runtime.steering`). Workers are new
interpreters rather than forks, so no worker inherits a running event loop,
and the master may run one of its own (for the admin server).

The master:

* starts the workers **one after the other**, each once the previous one has
  reported that all its listeners are open. The kernel numbers the sockets of
  each SO_REUSEPORT group in the order they start listening, and the steering
  program picks a socket by that number, so every group must list the workers
  in the same order: otherwise a tcp-mode client's data connection could
  reach another worker than its control connection. (When a worker dies, the
  kernel moves the last socket of each group into its place, the same move in
  every group, and the restarted worker joins every group at the end.)
* reports a worker's startup error (a port in use, ...) as ``ftplb: MESSAGE``
  and exits 1, as a single process does;
* restarts a worker that exits unexpectedly, at once the first time and then
  with a growing delay while it keeps dying soon after its start; after
  ``MAX_QUICK_DEATHS`` such deaths in a row it gives up, stops the others and
  exits 1;
* on SIGTERM or SIGINT, passes SIGTERM to every worker, which stops gracefully,
  waits for them (up to ``timeout_shutdown`` plus ``STOP_TIMEOUT``, then SIGKILL)
  and exits 0; a second signal is passed on too, and the workers stop at once;
* on SIGHUP, reads and validates the configuration file. An invalid file is
  refused with a warning, and nothing changes. A valid one is written, with
  its generation number, to the run directory's ``config.json``, and every
  worker gets SIGHUP: each one reloads in place, on its own listening
  sockets (:mod:`ftplb.generations`), so the SO_REUSEPORT groups and their
  steering never change. A worker started later gets the new text.
* under systemd (``Type=notify``), is the one that notifies: ready once every
  worker is, reloading and ready again around a reload, stopping. Workers get
  no ``$NOTIFY_SOCKET``.
* with ``[defaults] user``, stays root, so that it can restart a worker that
  binds port 21; each worker drops to the user once its listeners are open.
  The run and metrics directories are handed to that user.

A worker reports to the master through a pipe (``--status-fd``): one JSON
line, ``{"ready": true}`` or ``{"error": MESSAGE}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ftplb.admin.server import AdminError
from ftplb.config.changes import keep_restart_only, server_changes
from ftplb.config.load import ConfigError, load_config, load_config_text
from ftplb.config.schema import Config
from ftplb.config.workers import WorkerSlot
from ftplb.monitoring import Monitoring
from ftplb.runtime import metrics
from ftplb.runtime.defender import FileStore
from ftplb.runtime.listeners import ListenError, ensure_unclaimed, resolve_host
from ftplb.runtime.logs import EventLog, LogWarning, capture_library_logs, event_log
from ftplb.runtime.notify import NOTIFY_SOCKET_ENV, Notifier
from ftplb.runtime.open_files import raise_open_files_limit
from ftplb.runtime.privileges import (
    Identity,
    PrivilegeError,
    hand_over,
    privileged_binds_added,
    target_identity,
)

__all__ = [
    "METRICS_DIR_ENV",
    "Supervisor",
    "WorkerExit",
    "run_supervisor",
    "run_worker",
    "worker_metrics_dir",
]

METRICS_DIR_ENV = "FTPLB_METRICS_DIR"
"""Environment variable naming the directory where workers write their metric files."""

RELOAD_FILE_ENV = "FTPLB_RELOAD_FILE"
"""Environment variable naming the file a worker reads its configuration from on SIGHUP."""

RELOAD_FILE = "config.json"

RUN_DIR_ENV = "FTPLB_RUN_DIR"
"""Environment variable naming the master's run directory, where workers share the
login defender's record (``defender.json``)."""

MASTER_PID_ENV = "FTPLB_MASTER_PID"
"""The master's PID, so that a worker started after its master died stops at once."""

START_TIMEOUT = 60.0
"""Seconds a worker may take to open its listeners (thousands of tcp-mode ports)."""

STOP_TIMEOUT = 10.0
"""Seconds the master waits for workers past their ``timeout_shutdown`` before it kills them."""

STABLE_AFTER = 10.0
"""A worker that ran this long before dying is restarted at once."""

MAX_QUICK_DEATHS = 5
"""Quick deaths of one worker in a row after which the master gives up."""

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 8.0

_PR_SET_PDEATHSIG = 1


def describe_status(returncode: int) -> str:
    """A process exit status in words: "exit status 1", "signal SIGKILL"."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """A worker process that has ended, for whoever cleans up after it (metrics)."""

    slot: WorkerSlot
    pid: int
    returncode: int


@dataclass(slots=True)
class _Worker:
    slot: WorkerSlot
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    quick_deaths: int = 0
    exit_reported: bool = False
    waiter: asyncio.Task[int] | None = field(default=None, repr=False)


class _StartError(Exception):
    """A worker could not start; the message says why, for the user."""


class Supervisor:
    """The master process of a ``workers = N`` run.

    ``config_text`` is the text ``config`` came from: every worker, restarted
    ones too, gets that same text on its standard input, so all run the same
    configuration even if the file changes meanwhile. ``command`` starts a
    worker when followed by ``--worker I/N --status-fd FD`` (by default
    ``python -m ftplb run -c CONFIG_PATH``; the path names the file in
    messages and anchors relative paths). ``on_worker_exit`` is called for
    every worker process that ends (to mark its metric files dead).
    """

    def __init__(
        self,
        config_path: str,
        config: Config,
        config_text: str,
        *,
        log: EventLog | None = None,
        command: Sequence[str] | None = None,
        on_worker_exit: Callable[[WorkerExit], None] | None = None,
        metrics_dir: str | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.config_text = config_text
        self.generation = 1
        self.run_dir: str | None = None
        self.count = config.defaults.workers
        self.log = log or event_log(config.defaults)
        self.command = list(command or [sys.executable, "-m", "ftplb", "run", "-c", config_path])
        self.on_worker_exit = on_worker_exit
        self.metrics_dir = metrics_dir
        """Where every worker writes its metric files, for the admin listener here to sum
        (None without ``[admin]``); the caller creates and removes it."""
        self._monitoring: Monitoring | None = None
        self._workers = [_Worker(WorkerSlot(i, self.count)) for i in range(self.count)]
        self._stop = asyncio.Event()
        self._exits: asyncio.Queue[_Worker] = asyncio.Queue()
        self.notifier = Notifier.from_environment()
        self._identity: Identity | None = None

    @property
    def pids(self) -> list[int]:
        """The PIDs of the worker processes running now."""
        return [
            w.process.pid
            for w in self._workers
            if w.process is not None and w.process.returncode is None
        ]

    def stop(self) -> None:
        """Ask :meth:`run` to stop the workers and return (what SIGTERM does)."""
        self._stop.set()

    def _on_signal(self) -> None:
        if not self._stop.is_set():
            self.notifier.stopping()
            self._stop.set()
            return
        # A second signal: the workers, already stopping gracefully, stop at once.
        self._signal_workers()

    def _signal_workers(self) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)

    async def run(self) -> int:
        """Start the workers, keep them running until stopped; the exit status."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.run_dir = tempfile.mkdtemp(prefix="ftplb-")
        raise_open_files_limit(self.log)  # the workers inherit it
        monitoring = Monitoring(self.metrics_dir) if self.metrics_dir is not None else None
        release_library_logs = capture_library_logs(self.log)
        try:
            try:
                self._hand_over_directories()
                if monitoring is not None:
                    # The master hosts the admin listener and sums the workers' files.
                    await monitoring.serve_admin(
                        self.config, self.log, defender=FileStore(self.run_dir)
                    )
                    monitoring.watch_worker_peaks()
                    self._monitoring = monitoring
                try:
                    ensure_unclaimed(shared_addresses(self.config))
                except ListenError as error:
                    raise _StartError(str(error)) from error
                for worker in self._workers:
                    await self._start(worker)
                    if self._stop.is_set():
                        return 0
                self.log.info("workers ready", workers=self.count)
                self.notifier.ready(f"serving with {self.count} workers")
                await self._supervise()
            except (_StartError, AdminError) as error:
                self.log.error(str(error))
                return 1
            return 0
        finally:
            await self._stop_workers()
            if monitoring is not None:
                await monitoring.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            release_library_logs()

    def _hand_over_directories(self) -> None:
        """Let the user the workers drop to read the run directory and write metrics."""
        try:
            self._identity = target_identity(self.config.defaults)
            if self._identity is None:
                return
            for directory in (self.run_dir, self.metrics_dir):
                if directory is not None:
                    hand_over(directory, self._identity)
        except PrivilegeError as error:
            raise _StartError(str(error)) from error

    # ------------------------------------------------------------- reloading
    def reload(self) -> None:
        """Reload the configuration file into every worker (what SIGHUP does)."""
        if self._stop.is_set() or self.run_dir is None:
            return
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            self.notifier.ready(f"serving with {self.count} workers, generation {self.generation}")

    def _reload(self) -> None:
        assert self.run_dir is not None
        try:
            config = load_config(self.config_path)
            text = Path(self.config_path).read_text(encoding="utf-8")
        except ConfigError as error:
            self.log.warning(LogWarning.RELOAD_REFUSED, problems="; ".join(error.problems))
            return
        except (OSError, UnicodeDecodeError) as error:
            self.log.warning(LogWarning.RELOAD_REFUSED, problems=f"{self.config_path}: {error}")
            return
        config, kept = keep_restart_only(self.config, config)
        for key in kept:
            self.log.warning(LogWarning.RESTART_NEEDED, key=key)
        added = privileged_binds_added(self.config, config)
        identity = self._identity
        if added and identity is not None and identity.uid != 0 and os.geteuid() == 0:
            # The workers, which listen, gave root up.
            self.log.warning(
                LogWarning.RELOAD_REFUSED,
                problems=(
                    f"cannot listen on {', '.join(added)}: ports below 1024 need root, "
                    f"which the workers gave up for user {identity.user}; "
                    "restart ftplb to add them"
                ),
            )
            return
        changes = server_changes(self.config, config)
        self.generation += 1
        _write_atomically(
            os.path.join(self.run_dir, RELOAD_FILE),
            json.dumps({"generation": self.generation, "text": text}),
        )
        self.config, self.config_text = config, text
        if self._monitoring is not None and self._monitoring.admin is not None:
            self._monitoring.admin.update_config(config, self.generation)
        self.log.info(
            "reloaded",
            generation=self.generation,
            added=",".join(changes.added),
            removed=",".join(changes.removed),
            changed=",".join(changes.changed),
        )
        for worker in self._workers:
            # A worker still starting gets the signal once it is ready (see _start).
            ready = worker.waiter is not None
            if ready and worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGHUP)

    # ------------------------------------------------------------- starting
    async def _start(self, worker: _Worker) -> None:
        """Start ``worker`` and wait until it listens; _StartError if it cannot."""
        worker.waiter = None  # not ready: a reload now waits until it is
        read_end, write_end = os.pipe()
        env = dict(os.environ)
        env.pop(NOTIFY_SOCKET_ENV, None)  # the master speaks for its workers
        env[MASTER_PID_ENV] = str(os.getpid())
        if self.run_dir is not None:
            env[RELOAD_FILE_ENV] = os.path.join(self.run_dir, RELOAD_FILE)
            env[RUN_DIR_ENV] = self.run_dir
        if self.metrics_dir is not None:
            env[METRICS_DIR_ENV] = self.metrics_dir
            # prometheus_client's documented multiprocess mode: set before the
            # worker imports it, so it stores every value in that directory.
            env[metrics.ENV_VAR] = self.metrics_dir
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                "--worker",
                str(worker.slot),
                "--status-fd",
                str(write_end),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_end,),
                env=env,
            )
        except OSError as error:
            os.close(read_end)
            raise _StartError(f"cannot start worker {worker.slot.index}: {error}") from error
        finally:
            os.close(write_end)
        generation = self.generation
        await _send_config(process, self.config_text)
        worker.process = process
        worker.started = time.monotonic()
        worker.exit_reported = False
        self.log.info("worker started", worker=worker.slot.index, pid=process.pid)
        try:
            status = await self._read_status(read_end)
        finally:
            os.close(read_end)
        if status.get("ready") is True:
            worker.waiter = asyncio.ensure_future(self._wait_for(worker))
            if self.generation != generation:
                # Reloaded while this worker started: it ignored the signal, and
                # its text is older than the file it reads on SIGHUP.
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGHUP)
            return
        if self._stop.is_set():
            return  # stopping: whatever the worker said no longer matters
        # A worker that reported an error exits by itself; one that hangs is killed.
        await self._end(worker, grace=0 if "timeout" in status else STOP_TIMEOUT)
        if "error" in status:
            raise _StartError(str(status["error"]))
        returncode = process.returncode if process.returncode is not None else -signal.SIGKILL
        raise _StartError(
            f"worker {worker.slot.index} ended before it was ready ({describe_status(returncode)})"
            if "timeout" not in status
            else f"worker {worker.slot.index} did not open its listeners in {START_TIMEOUT:g} s"
        )

    async def _read_status(self, read_end: int) -> dict[str, object]:
        """The worker's status line; {} at EOF (it died), {"timeout": ...}, or {} on stop."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(read_end), "rb")
        )
        line_task = asyncio.ensure_future(reader.readline())
        stop_task = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait(
                {line_task, stop_task}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            if line_task in done:
                return _parse_status(line_task.result())
            if stop_task in done:
                return {}
            return {"timeout": True}
        finally:
            for task in (line_task, stop_task):
                task.cancel()
            transport.close()

    async def _wait_for(self, worker: _Worker) -> int:
        assert worker.process is not None
        returncode = await worker.process.wait()
        await self._exits.put(worker)
        return returncode

    # ---------------------------------------------------------- supervising
    async def _supervise(self) -> None:
        """Restart workers that exit, until stopped; _StartError when it gives up."""
        while not self._stop.is_set():
            exit_task = asyncio.ensure_future(self._exits.get())
            stop_task = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({exit_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            if self._stop.is_set():
                exit_task.cancel()  # stopping: workers that exit now are not restarted
                return
            await self._restart(exit_task.result())

    async def _restart(self, worker: _Worker) -> None:
        assert worker.process is not None and worker.process.returncode is not None
        returncode = worker.process.returncode
        lived = time.monotonic() - worker.started
        self._exited(worker, unexpected=True)
        worker.quick_deaths = worker.quick_deaths + 1 if lived < STABLE_AFTER else 0
        while not self._stop.is_set():
            if worker.quick_deaths >= MAX_QUICK_DEATHS:
                raise _StartError(
                    f"worker {worker.slot.index} keeps dying ({describe_status(returncode)}, "
                    f"{worker.quick_deaths} times in a row soon after its start); giving up"
                )
            if worker.quick_deaths:
                delay = min(BACKOFF_FIRST * 2 ** (worker.quick_deaths - 1), BACKOFF_MAX)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    return
            try:
                await self._start(worker)
                return
            except _StartError as error:
                worker.quick_deaths += 1
                if worker.quick_deaths >= MAX_QUICK_DEATHS:
                    raise
                self.log.warning(
                    LogWarning.WORKER_RESTART_FAILED, worker=worker.slot.index, reason=str(error)
                )

    def _exited(self, worker: _Worker, *, unexpected: bool) -> None:
        process = worker.process
        assert process is not None and process.returncode is not None
        fields: dict[str, object] = {
            "worker": worker.slot.index,
            "pid": process.pid,
            "status": describe_status(process.returncode),
        }
        worker.exit_reported = True
        if unexpected:
            self.log.warning(LogWarning.WORKER_EXITED, **fields)
        else:
            self.log.info("worker exited", **fields)
        if self._monitoring is not None:
            self._monitoring.worker_exited(process.pid)
        if self.on_worker_exit is not None:
            self.on_worker_exit(WorkerExit(worker.slot, process.pid, process.returncode))

    # ------------------------------------------------------------- stopping
    async def _stop_workers(self) -> None:
        self._signal_workers()
        grace = self.config.defaults.timeout_shutdown + STOP_TIMEOUT
        await asyncio.gather(*(self._end(worker, grace=grace) for worker in self._workers))

    async def _end(self, worker: _Worker, *, grace: float) -> None:
        """Wait up to ``grace`` seconds for ``worker`` to end, then kill it; log its exit."""
        process = worker.process
        if process is None or worker.exit_reported:
            return
        if worker.waiter is not None:
            worker.waiter.cancel()
            worker.waiter = None
        if process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                if grace > 0:
                    self.log.warning(LogWarning.WORKER_KILLED, worker=worker.slot.index)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._exited(worker, unexpected=False)


def _write_atomically(path: str, text: str) -> None:
    """Replace ``path`` by ``text``; a reader never sees half a file."""
    temporary = path + ".new"
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def _parse_status(line: bytes) -> dict[str, object]:
    if not line:
        return {}
    try:
        status = json.loads(line)
    except ValueError:
        return {"error": f"unreadable worker status {line[:200]!r}"}
    return status if isinstance(status, dict) else {}


async def _send_config(process: asyncio.subprocess.Process, text: str) -> None:
    if process.stdin is None:
        return
    # A worker that dies before reading it is noticed on its status pipe.
    with contextlib.suppress(OSError):
        process.stdin.write(text.encode("utf-8"))
        await process.stdin.drain()
    process.stdin.close()


def run_supervisor(
    config_path: str, config: Config, config_text: str, metrics_dir: str | None
) -> int:
    """Run the master of a ``workers = N`` run until SIGTERM/SIGINT; the exit status."""

    async def main() -> int:
        return await Supervisor(config_path, config, config_text, metrics_dir=metrics_dir).run()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0


def shared_addresses(config: Config) -> list[tuple[str, int]]:
    """Every address that the workers will share: frontend binds, and tcp-mode passive ports."""
    addresses: list[tuple[str, int]] = []
    for frontend in config.frontends:
        binds = [(resolve_host(bind.host), bind.port) for bind in frontend.bind]
        addresses += binds
        if frontend.mode != "tcp":
            continue  # passive ports of mode ftp are each worker's own slice
        for server in config.backend(frontend.backend).servers:
            if server.passive_ports is not None:
                addresses += [(host, port) for host, _ in binds for port in server.passive_ports]
    return addresses


# ------------------------------------------------------------------ worker side
def worker_metrics_dir() -> str | None:
    """In a worker: the master's directory for metric files (None outside a master)."""
    return os.environ.get(METRICS_DIR_ENV) or None


def run_worker(config_path: str, slot: WorkerSlot, status_fd: int) -> int:
    """The body of a worker process; reports to the master on ``status_fd``.

    The configuration text comes on standard input, from the master;
    ``config_path`` names it in messages and anchors its relative paths.
    """
    # Imported here: the master never needs the runtime.
    from ftplb.app import StartupError, run_event_loop, serve  # noqa: PLC0415

    status = os.fdopen(status_fd, "w", encoding="utf-8")
    # Until its reload handler is installed, a SIGHUP from the master must not
    # end the worker; the text on its standard input is the newest anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if not _stop_with_master():
        return 0

    def report(**fields: object) -> None:
        with contextlib.suppress(OSError, ValueError):
            status.write(json.dumps(fields) + "\n")
            status.close()

    try:
        text = sys.stdin.buffer.read().decode("utf-8")
        base_dir = os.path.dirname(os.path.abspath(config_path))
        config = load_config_text(text, config_path, base_dir=base_dir)
        reload_source = _reload_source(config_path, base_dir)
    except (OSError, UnicodeDecodeError) as error:
        report(error=f"worker {slot.index} cannot read its configuration: {error}")
        return 1
    except ConfigError as error:
        report(error="\n".join(error.problems))
        return 1
    try:
        run_event_loop(
            lambda: serve(
                config,
                worker=slot,
                on_ready=lambda: report(ready=True),
                metrics_dir=worker_metrics_dir(),
                reload_source=reload_source,
                run_dir=os.environ.get(RUN_DIR_ENV) or None,
            )
        )
    except StartupError as error:
        report(error=str(error))
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _reload_source(
    config_path: str, base_dir: str
) -> Callable[[], tuple[Config, int | None]] | None:
    """In a worker: reads the configuration the master wrote for a reload."""
    path = os.environ.get(RELOAD_FILE_ENV)
    if not path:
        return None

    def read() -> tuple[Config, int | None]:
        try:
            with open(path, encoding="utf-8") as file:
                document = json.load(file)
            generation, text = int(document["generation"]), str(document["text"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                [f"{path}: cannot read the reloaded configuration: {error}"]
            ) from None
        return load_config_text(text, config_path, base_dir=base_dir), generation

    return read


def _stop_with_master() -> bool:
    """Get SIGTERM when the master dies, so that no worker outlives it.

    False when the master is gone already (it died before the request took
    effect, so no signal will come).
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    master = os.environ.get(MASTER_PID_ENV)
    return master is None or not master.isdigit() or os.getppid() == int(master)
