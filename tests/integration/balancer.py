"""Runs ftplb itself as a subprocess (``python -m ftplb run -c FILE``) for integration tests."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ftplb.runtime.notify import NOTIFY_SOCKET_ENV
from tests.integration.notify_socket import NotifySocket
from tests.support import passive_range, wait_until

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


DEFAULT_HEALTH = '{ type = "ftp", interval = "500ms", rise = 1, fall = 2, timeout = "1s" }'


def log_fields(line: str) -> dict[str, str]:
    """The key=value fields of one text log line of ftplb (values may be JSON-quoted)."""
    fields: dict[str, str] = {}
    for token in shlex.split(line)[2:]:
        key, _, value = token.partition("=")
        fields[key] = value
    return fields


def server_entries(addresses: Iterable[tuple[str, int]], **extra: object) -> str:
    lines = []
    for index, (host, port) in enumerate(addresses, start=1):
        shown = f"[{host}]" if ":" in host else host
        lines.append(f'[[backends.servers]]\nname = "s{index}"\naddress = "{shown}:{port}"')
        lines += [f"{key} = {_toml(value)}" for key, value in extra.items()]
        lines.append("")
    return "\n".join(lines)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def simple_config(
    servers: Iterable[tuple[str, int]],
    *,
    port: int,
    host: str = "127.0.0.1",
    extra_binds: Iterable[str] = (),
    backend: str = "",
    defaults: str = "",
    frontend: str = "",
    health: str = DEFAULT_HEALTH,
    sections: str = "",
    passive_ports: str | None = None,
) -> str:
    """A one-frontend, one-backend config; ``sections`` adds whole tables (``[admin]``);
    ``passive_ports`` is the frontend's range ("first-last"), a fresh one by default."""
    shown = f"[{host}]" if ":" in host else host
    binds = ", ".join(f'"{b}"' for b in (f"{shown}:{port}", *extra_binds))
    return f"""
[defaults]
timeout_connect = "2s"
timeout_data = "10s"
{defaults}

[[frontends]]
name = "ftp"
bind = [{binds}]
backend = "pool"
passive_ports = "{passive_ports or passive_range()}"
{frontend}

[[backends]]
name = "pool"
health = {health}
{backend}

{server_entries(servers)}
{sections}
"""


def startup_error_config(bind_port: int, *, workers: int = 1, sections: str = "") -> str:
    """A config on 127.0.0.1 whose one server is never contacted (no health
    checks): for tests of start-up errors, which happen before any session."""
    return f"""
[defaults]
workers = {workers}

[[frontends]]
name = "ftp"
bind = ["127.0.0.1:{bind_port}"]
backend = "pool"

[[backends]]
name = "pool"
health = {{ type = "none" }}

[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"

{sections}
"""


def run_until_exit(config: Path) -> subprocess.CompletedProcess[str]:
    """``ftplb run -c config``, expected to stop by itself (a start-up error)."""
    return subprocess.run(
        [sys.executable, "-m", "ftplb", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class RunningBalancer:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    config_path: Path
    log_path: Path
    workdir: Path
    readiness: NotifySocket | None = None
    """Where ftplb says ``READY=1`` once every listener (the admin one too) is open."""
    stopped: bool = field(default=False)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self, kind: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if f" {kind} " in line]

    def ready(self, timeout: float) -> bool:
        """True once ftplb has said ``READY=1``: its frontends and its admin
        listener are open, which the frontend's port alone does not prove."""
        assert self.readiness is not None
        try:
            while self.readiness.next(timeout).fields.get("READY") != "1":
                pass
        except AssertionError:
            return False
        # Reloads notify again: a socket nobody reads would fill and block ftplb.
        self.readiness.close()
        self.readiness = None
        return True

    def stop_twice(self) -> float:
        """SIGTERM, and a second one once the drain has begun; the seconds from the
        second signal to the exit, whose status must be 0."""
        self.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "draining" in self.log_text(), 5, "the drain to start")
        self.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert self.process.wait(10) == 0
        self.stopped = True
        return time.monotonic() - started

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit status (kills after a grace period)."""
        if self.readiness is not None:
            self.readiness.close()
            self.readiness = None
        if self.stopped:
            return self.process.returncode
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def launch_balancer(
    config_text: str,
    host: str,
    port: int,
    env: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> RunningBalancer:
    """``ftplb run`` on ``config_text``, started but not yet waited for; ``env`` replaces
    the environment; ``wrapper`` is a command that execs ftplb in its place (``prlimit``)."""
    workdir = Path(tempfile.mkdtemp(prefix="ftplb-test-"))
    config_path = workdir / "ftplb.toml"
    config_path.write_text(config_text)
    log_path = workdir / "ftplb.log"
    # A test that passes its own environment decides about $NOTIFY_SOCKET itself.
    readiness = NotifySocket(workdir, abstract=True) if env is None else None
    if readiness is not None:
        env = {**os.environ, NOTIFY_SOCKET_ENV: readiness.address}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "ftplb", "run", "-c", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return RunningBalancer(process, host, port, config_path, log_path, workdir, readiness)


def start_balancer(
    config_text: str,
    host: str,
    port: int,
    env: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> RunningBalancer:
    """``ftplb run`` on ``config_text``, once it accepts on (host, port); ``env`` and
    ``wrapper`` as for ``launch_balancer``."""
    running = launch_balancer(config_text, host, port, env, wrapper)
    process = running.process
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ftplb exited with {process.returncode}:\n{running.log_text()}")
        # READY=1 first (every listener, the admin one too, is open), then one
        # connection to the frontend, which tests count on as its first session.
        if running.readiness is not None and not running.ready(timeout=0.05):
            continue
        if "listening" in running.log_text():
            with contextlib.suppress(OSError):
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    probe.settimeout(1)
                    probe.connect((host, port))
                    return running
        time.sleep(0.05)
    running.stop()
    raise RuntimeError(f"ftplb did not start listening:\n{running.log_text()}")


@contextlib.contextmanager
def balancer(
    config_text: str,
    host: str,
    port: int,
    env: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> Iterator[RunningBalancer]:
    running = start_balancer(config_text, host, port, env, wrapper)
    try:
        yield running
    finally:
        status = running.stop()
        assert status == 0, f"ftplb exited with {status}:\n{running.log_text()[-4000:]}"
