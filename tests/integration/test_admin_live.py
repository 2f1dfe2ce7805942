"""The admin listener of a real ``ftplb run``: one process, and a master with two workers.

The clients' own counts are the reference: sessions opened, bytes downloaded.
With workers, sessions come from several source addresses so that both workers
serve some, and the master's figures must be the sum.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration import clients
from tests.integration.balancer import (
    RunningBalancer,
    balancer,
    run_until_exit,
    startup_error_config,
)
from tests.integration.farms import farm
from tests.integration.test_tcp_mode import LB_HOST, server_pair, tcp_config
from tests.integration.workers_farm import records, wait_ready
from tests.support import PASSIVE_AREA, free_port

pytestmark = pytest.mark.integration

PAYLOAD = os.urandom(200 * 1024)
SOURCES = [f"127.0.0.{n}" for n in range(100, 108)]


def free_port_for_admin() -> int:
    """A free port outside the passive ranges that the tests' balancers use:
    ``ftplb check`` refuses an admin port inside a frontend's passive range."""
    for _ in range(100):
        port = free_port()
        if port not in PASSIVE_AREA:
            return port
    raise RuntimeError("no free port outside the passive ranges")


def admin_section(port: int) -> str:
    return f'[admin]\nbind = "127.0.0.1:{port}"\nstats_refresh = "2s"\n'


def get(port: int, path: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def metric_sum(port: int, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``.

    Sessions that never reached a server (``server="-"``: the test harness's
    own probe that ftplb listens) are left out.
    """
    _, _, body = get(port, "/metrics")
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if (
                sample.name == name
                and labels.items() <= sample.labels.items()
                and sample.labels.get("server") != "-"
            ):
                total += sample.value
    return total


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Metrics reach the files on a 1 s timer: poll until ``check`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def unserved(lb: RunningBalancer) -> int:
    return sum(1 for fields in records(lb, "session") if fields["server"] == "-")


def download(lb: RunningBalancer, user: str, password: str, source: str | None) -> None:
    with clients.ftplib_session(lb.host, lb.port, user, password, "epsv", source) as client:
        assert client.retr("payload.bin") == PAYLOAD


def test_a_single_process_serves_its_own_figures() -> None:
    admin_port = free_port_for_admin()
    with farm(files={"payload.bin": PAYLOAD}, sections=admin_section(admin_port)) as group:
        for _ in range(3):
            download(group.lb, group.user, group.password, None)
        assert eventually(lambda: metric_sum(admin_port, "ftplb_sessions_total") == 3)
        assert metric_sum(admin_port, "ftplb_transfer_bytes_total", direction="out") == 3 * len(
            PAYLOAD
        )
        assert metric_sum(admin_port, "ftplb_worker_processes") == 1
        assert metric_sum(admin_port, "ftplb_passive_listeners_total", result="opened") == 3

        status, kind, body = get(admin_port, "/stats.json")
        assert status == 200 and kind.startswith("application/json")
        stats = json.loads(body)
        (frontend,) = stats["frontends"]
        assert frontend["sessions"] == 3 + unserved(group.lb)
        assert frontend["bytes_out"] >= 3 * len(PAYLOAD)
        (backend,) = stats["backends"]
        assert sum(server["sessions"] for server in backend["servers"]) == 3

        status, kind, page = get(admin_port, "/stats")
        assert status == 200 and kind.startswith("text/html")
        assert b'http-equiv="refresh" content="2"' in page
        assert b"s1" in page and b"s2" in page


def test_a_session_over_the_limit_is_logged_and_counted() -> None:
    admin_port = free_port_for_admin()
    with farm(frontend="max_connections = 1", sections=admin_section(admin_port)) as group:
        lb = group.lb
        # The harness's probe that ftplb listens holds the one slot until it is logged.
        assert eventually(lambda: unserved(lb) == 1)
        with (
            clients.ftplib_session(lb.host, lb.port, group.user, group.password, "epsv"),
            socket.create_connection((lb.host, lb.port), timeout=10) as refused,
        ):
            assert refused.recv(100).startswith(b"421 ")
        assert eventually(
            lambda: metric_sum(admin_port, "ftplb_refusals_total", reason="limit") == 1
        )
        ends = [fields["end"] for fields in records(lb, "session")]
        assert ends.count("limit") == 1


def test_a_master_sums_its_workers() -> None:
    admin_port = free_port_for_admin()
    with farm(
        files={"payload.bin": PAYLOAD},
        defaults="workers = 2",
        sections=admin_section(admin_port),
    ) as group:
        wait_ready(group.lb)
        for source in SOURCES:
            download(group.lb, group.user, group.password, source)
        workers = {fields["worker"] for fields in records(group.lb, "session")}
        assert workers == {"0", "1"}, "the sources should have reached both workers"
        assert eventually(lambda: metric_sum(admin_port, "ftplb_sessions_total") == len(SOURCES))
        assert metric_sum(admin_port, "ftplb_transfer_bytes_total", direction="out") == len(
            SOURCES
        ) * len(PAYLOAD)
        assert metric_sum(admin_port, "ftplb_worker_processes") == 2
        stats = json.loads(get(admin_port, "/stats.json")[2])
        assert stats["frontends"][0]["sessions"] == len(SOURCES) + unserved(group.lb)


def test_a_tcp_mode_frontend_reports_its_current_sessions() -> None:
    admin_port = free_port_for_admin()
    with server_pair("vsftpd", ("127.0.0.75", "127.0.0.76")) as (group, ranges):
        port = free_port(LB_HOST)
        text = tcp_config(group, ranges, host=LB_HOST, port=port) + admin_section(admin_port)
        with balancer(text, LB_HOST, port):

            def current() -> float:
                return metric_sum(admin_port, "ftplb_frontend_current_sessions", frontend="tcp")

            user, password = group[0].user, group[0].password
            with (
                clients.ftplib_session(LB_HOST, port, user, password, "epsv", SOURCES[0]),
                clients.ftplib_session(LB_HOST, port, user, password, "epsv", SOURCES[1]),
            ):
                assert eventually(lambda: current() == 2), current()
                stats = json.loads(get(admin_port, "/stats.json")[2])
                assert stats["frontends"][0]["current_sessions"] == 2
            assert eventually(lambda: current() == 0), current()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_taken_admin_port_stops_ftplb_with_a_clear_message(tmp_path: Path, workers: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        path = tmp_path / "ftplb.toml"
        path.write_text(
            startup_error_config(free_port(), workers=workers, sections=admin_section(port))
        )
        done = run_until_exit(path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"127.0.0.1:{port}" in done.stderr
    assert done.stderr.count("ftplb: ") == 1
