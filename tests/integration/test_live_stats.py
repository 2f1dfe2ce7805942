"""Figures of a real ``ftplb run`` while transfers run, not only once they end.

The client reads a large download slowly, a chunk at a time: the relay can
then move at most what the client read plus the sockets' buffers, so the
transfer is still running when the figures are read (the log has no transfer
line yet), and they must already show its bytes. At the end the counters
hold the file's size exactly: what was counted while it ran is not counted
twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.integration import clients
from tests.integration.balancer import RunningBalancer, balancer
from tests.integration.farms import farm
from tests.integration.test_admin_live import (
    admin_section,
    eventually,
    free_port_for_admin,
    get,
    metric_sum,
)
from tests.integration.test_tcp_mode import LB_HOST, server_pair, tcp_config
from tests.integration.workers_farm import records, wait_ready
from tests.support import free_port

pytestmark = pytest.mark.integration

SIZE = 40 * 1024 * 1024
BIG = os.urandom(SIZE)
CHUNK = 256 * 1024


def stats(admin_port: int) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(get(admin_port, "/stats.json")[2])
    return document


def read_exactly(conn: socket.socket, count: int, digest: Any) -> None:
    left = count
    while left > 0:
        chunk = conn.recv(min(CHUNK, left))
        assert chunk, "the download ended early"
        digest.update(chunk)
        left -= len(chunk)


def out_bytes(admin_port: int) -> float:
    return metric_sum(admin_port, "ftplb_transfer_bytes_total", direction="out")


def listed_bytes(admin_port: int) -> int:
    """The bytes of the one transfer /stats.json lists, -1 if it lists none."""
    transfers = stats(admin_port)["transfers"]
    return int(transfers[0]["bytes"]) if len(transfers) == 1 else -1


def no_transfer_logged(lb: RunningBalancer) -> bool:
    return not records(lb, "transfer")


@pytest.mark.parametrize("workers", [1, 2])
def test_bytes_and_the_transfer_show_while_it_runs(workers: int) -> None:
    admin_port = free_port_for_admin()
    with farm(
        files={"big.bin": BIG},
        defaults=f"workers = {workers}",
        sections=admin_section(admin_port),
    ) as group:
        lb = group.lb
        if workers > 1:
            wait_ready(lb)
        digest = hashlib.sha256()
        with clients.ftplib_session(lb.host, lb.port, group.user, group.password, "epsv") as client:
            # A session still open is already counted.
            assert eventually(lambda: metric_sum(admin_port, "ftplb_sessions_total") == 1)
            client.ftp.voidcmd("TYPE I")
            with client.ftp.transfercmd("RETR big.bin") as conn:
                read_exactly(conn, 1024 * 1024, digest)
                assert eventually(lambda: out_bytes(admin_port) >= 1024 * 1024)
                assert eventually(lambda: listed_bytes(admin_port) >= 1024 * 1024)
                first_metric, first_listed = out_bytes(admin_port), listed_bytes(admin_port)
                (running,) = stats(admin_port)["transfers"]
                assert (running["command"], running["path"]) == ("RETR", "big.bin")
                assert running["session"] and running["server"] in {"s1", "s2"}
                assert running["worker"] == (None if workers == 1 else running["worker"])
                assert no_transfer_logged(lb)

                read_exactly(conn, 10 * 1024 * 1024, digest)
                assert eventually(lambda: out_bytes(admin_port) > first_metric)
                assert eventually(lambda: listed_bytes(admin_port) > first_listed)
                (frontend,) = stats(admin_port)["frontends"]
                assert frontend["bytes_out"] >= 11 * 1024 * 1024
                # Still running: the figures above came before its end.
                assert no_transfer_logged(lb)
                assert out_bytes(admin_port) < SIZE

                read_exactly(conn, SIZE - 11 * 1024 * 1024, digest)
                assert conn.recv(1) == b""
            client.ftp.voidresp()
        assert digest.hexdigest() == hashlib.sha256(BIG).hexdigest()
        assert eventually(lambda: len(records(lb, "transfer")) == 1)
        (line,) = records(lb, "transfer")
        assert int(line["bytes_to_client"]) == SIZE
        assert eventually(lambda: stats(admin_port)["transfers"] == [])
        # Counted once: the running counts and the remainder at the end.
        assert eventually(lambda: out_bytes(admin_port) == SIZE), out_bytes(admin_port)
        assert metric_sum(admin_port, "ftplb_sessions_total") == 1
        process = stats(admin_port)["process"]
        assert process["workers"] == workers and process["generation"] == 1
        assert process["pid"] > 0 and process["uptime"] > 0 and process["version"]


def test_a_tcp_mode_data_relay_counts_while_it_runs(tmp_path: Path) -> None:
    admin_port = free_port_for_admin()
    seed = tmp_path / "big.bin"
    seed.write_bytes(BIG)
    with server_pair("vsftpd", ("127.0.0.77", "127.0.0.78"), seed) as (group, ranges):
        port = free_port(LB_HOST)
        text = tcp_config(group, ranges, host=LB_HOST, port=port) + admin_section(admin_port)
        with balancer(text, LB_HOST, port) as lb:
            user, password = group[0].user, group[0].password
            digest = hashlib.sha256()
            with clients.ftplib_session(LB_HOST, port, user, password, "epsv") as client:
                client.ftp.voidcmd("TYPE I")
                with client.ftp.transfercmd("RETR big.bin") as conn:
                    read_exactly(conn, 4 * 1024 * 1024, digest)
                    assert eventually(lambda: out_bytes(admin_port) >= 4 * 1024 * 1024)
                    (running,) = stats(admin_port)["transfers"]
                    assert running["frontend"] == "tcp" and running["bytes"] >= 4 * 1024 * 1024
                    assert not records(lb, "data"), "the relay should still be running"
                    read_exactly(conn, SIZE - 4 * 1024 * 1024, digest)
                client.ftp.voidresp()
            assert digest.hexdigest() == hashlib.sha256(BIG).hexdigest()
            assert eventually(lambda: len(records(lb, "data")) == 1)
            assert eventually(lambda: out_bytes(admin_port) == SIZE), out_bytes(admin_port)
