"""ftplb under a service manager: the systemd notify protocol, and a start that fails cleanly.

The notify tests bind a real AF_UNIX datagram socket, as systemd does for a
``Type=notify`` unit, and run a real ``ftplb run`` with ``$NOTIFY_SOCKET``
pointing at it. The kernel tells the sender of each datagram, so the tests
can tell that only the master of ``workers = 2`` speaks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.balancer import log_fields, start_balancer, startup_error_config
from tests.integration.notify_socket import Notification, NotifySocket
from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path, abstract=request.param == "abstract")
    try:
        yield sock
    finally:
        sock.close()


def _expect(sock: NotifySocket, pid: int, *keys: str) -> Notification:
    message = sock.next()
    assert message.sender_pid == pid, f"sent by {message.sender_pid}, not ftplb ({pid})"
    for key in keys:
        assert message.fields.get(key) == "1", f"{key}=1 missing in {message.fields}"
    return message


@pytest.mark.parametrize("workers", [1, 2])
def test_ready_reloading_and_stopping_reach_the_notify_socket(
    notify_socket: NotifySocket, workers: int
) -> None:
    port = free_port()
    text = startup_error_config(port, workers=workers)
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.address}
    lb = start_balancer(text, "127.0.0.1", port, env)
    try:
        pid = lb.process.pid
        ready = _expect(notify_socket, pid, "READY")
        assert ready.fields["MAINPID"] == str(pid)
        assert ready.fields["STATUS"]
        if workers > 1:
            # The master is ready only once every worker is.
            assert "workers ready" in lb.log_text()
            worker_lines = [log_fields(line) for line in lb.log_lines("info")]
            started = [f for f in worker_lines if f.get("message") == "worker started"]
            assert len(started) == workers

        # A reload that succeeds: RELOADING=1 with the monotonic clock, then READY=1.
        before = _monotonic_usec()
        lb.process.send_signal(signal.SIGHUP)
        reloading = _expect(notify_socket, pid, "RELOADING")
        assert before <= int(reloading.fields["MONOTONIC_USEC"]) <= _monotonic_usec()
        _expect(notify_socket, pid, "READY")
        wait_until(lambda: "reloaded" in lb.log_text(), 10, "the reload")

        # A refused reload (an invalid file) ends in READY=1 too.
        lb.config_path.write_text(text + "\n[[frontends]]\nname = 1\n")
        lb.process.send_signal(signal.SIGHUP)
        _expect(notify_socket, pid, "RELOADING")
        _expect(notify_socket, pid, "READY")
        wait_until(lambda: "reload_refused" in lb.log_text(), 10, "the refusal")

        lb.process.send_signal(signal.SIGTERM)
        _expect(notify_socket, pid, "STOPPING")
        assert lb.process.wait(30) == 0
        lb.stopped = True
        # Nothing more: no worker spoke, no second STOPPING.
        assert notify_socket.nothing_pending()
    finally:
        status = lb.stop()
        assert status == 0, lb.log_text()[-3000:]


def test_without_notify_socket_nothing_is_sent(tmp_path: Path) -> None:
    """A run outside systemd: the variable is unset, and ftplb starts and stops as ever."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    lb = start_balancer(startup_error_config(port), "127.0.0.1", port, env)
    assert lb.stop() == 0, lb.log_text()


# ---------------------------------------------------------------- failed start
@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_start_leaves_no_temporary_directory(tmp_path: Path, workers: int) -> None:
    """A taken port ends the start with exit 1, and the metrics (and run) directories go."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        admin = f'[admin]\nbind = "127.0.0.1:{free_port()}"\n'
        config = tmp_path / "ftplb.toml"
        config.write_text(startup_error_config(port, workers=workers, sections=admin))
        result = subprocess.run(
            [sys.executable, "-m", "ftplb", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "TMPDIR": str(temporary)},
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot listen on 127.0.0.1" in result.stdout + result.stderr
    assert list(temporary.iterdir()) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_leaves_no_temporary_directory(tmp_path: Path, workers: int) -> None:
    """The metrics directory, made before prometheus_client loads, goes when ftplb stops."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    port = free_port()
    admin = f'[admin]\nbind = "127.0.0.1:{free_port()}"\n'
    env = {**os.environ, "TMPDIR": str(temporary)}
    lb = start_balancer(
        startup_error_config(port, workers=workers, sections=admin), "127.0.0.1", port, env
    )
    try:
        made = [path for path in temporary.iterdir() if path.name.startswith("ftplb-metrics-")]
        assert len(made) == 1
        # Files of prometheus_client's multiprocess mode: each process that records writes its own.
        wait_until(
            lambda: len(list(made[0].glob("gauge_livesum_*.db"))) == workers,
            10,
            "a gauge file of each recording process",
        )
    finally:
        assert lb.stop() == 0, lb.log_text()
    assert list(temporary.iterdir()) == []
