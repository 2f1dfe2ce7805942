"""SIGTERM through a real `ftplb run`: running transfers finish, new connects are refused.

A throttled download and a throttled upload run through ftplb when it gets
SIGTERM. Both must complete with the right sha256, a connect during the drain
must be refused, and ftplb must exit 0 once they are done. A second SIGTERM
must end the drain at once.
"""

from __future__ import annotations

import hashlib
import os
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration import clients
from tests.integration.balancer import log_fields
from tests.integration.farms import Farm, farm
from tests.support import connect_refused, wait_until

pytestmark = pytest.mark.integration

SIZE = 100 * 1024 * 1024
RATE = "25M"
"""curl's --limit-rate: about 4 s for SIZE, long enough to stop ftplb in the middle."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def started_transfers(
    group: Farm, pool: ThreadPoolExecutor, tmp_path: Path, upload: bytes
) -> tuple[Future[clients.ClientResult], Future[clients.ClientResult], Path]:
    lb = group.lb
    down = tmp_path / "down.bin"
    up = tmp_path / "up.bin"
    up.write_bytes(upload)

    def url(name: str) -> str:
        return clients.ftp_url(lb.host, lb.port, name, group.user, group.password)

    throttle = ["--limit-rate", RATE]
    download = pool.submit(clients.curl_retr, url("big.bin"), down, "epsv", None, throttle)
    uploading = pool.submit(clients.curl_stor, url("up.bin"), up, "epsv", None, throttle)
    stored = group.servers[0].root / "up.bin"
    # Both transfers are under way: bytes have arrived at each end.
    wait_until(lambda: down.exists() and down.stat().st_size > 0, 20, "the download to start")
    wait_until(lambda: stored.exists() and stored.stat().st_size > 0, 20, "the upload to start")
    return download, uploading, down


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_running_transfers_finish_and_refuses_new_sessions(
    tmp_path: Path, workers: int
) -> None:
    content = os.urandom(SIZE)
    upload = os.urandom(SIZE)
    host = f"127.0.0.{70 + workers}"
    with (
        farm("pyftpdlib", [host], {"big.bin": content}, defaults=f"workers = {workers}") as group,
        ThreadPoolExecutor(2) as pool,
    ):
        lb = group.lb
        download, uploading, down = started_transfers(group, pool, tmp_path, upload)
        lb.process.send_signal(signal.SIGTERM)
        # The listener closes at once, while the transfers go on.
        wait_until(lambda: connect_refused(lb.host, lb.port), 5, "new connects to be refused")
        assert lb.process.poll() is None
        download.result(120).check()
        uploading.result(120).check()
        assert lb.process.wait(30) == 0
        lb.stopped = True
        assert sha256(down.read_bytes()) == sha256(content)
        assert sha256((group.servers[0].root / "up.bin").read_bytes()) == sha256(upload)
        results = sorted(
            (log_fields(line)["command"], log_fields(line)["result"])
            for line in lb.log_lines("transfer")
        )
        assert results == [("RETR", "226"), ("STOR", "226")]
        assert "draining" in lb.log_text()


def test_a_second_sigterm_ends_the_drain_at_once(tmp_path: Path) -> None:
    content = os.urandom(SIZE)
    with (
        farm("pyftpdlib", ["127.0.0.73"], {"big.bin": content}) as group,
        ThreadPoolExecutor(2) as pool,
    ):
        lb = group.lb
        download, uploading, _ = started_transfers(group, pool, tmp_path, os.urandom(SIZE))
        assert lb.stop_twice() < 5  # the second signal ends the drain at once
        # Cut short: the clients see the transfers fail, and ftplb logs them as 426.
        assert download.result(60).returncode != 0
        assert uploading.result(60).returncode != 0
        results = [log_fields(line)["result"] for line in lb.log_lines("transfer")]
        assert sorted(results) == ["426", "426"]
