"""Transfers cut short by a client reset are logged and counted with the bytes they moved.

Many downloads and uploads run at once through a real ``ftplb run`` in front
of real servers; each client resets its data and control connections (an
RST: SO_LINGER on with timeout 0) once some bytes have moved. Whichever ftplb
notices first (the data relay's reset, or the control connection's), every
transfer started gets exactly one ``transfer`` line, with bytes > 0 and no
more than the file, and the byte counters agree with the lines.
"""

from __future__ import annotations

import ftplib
import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration import clients
from tests.integration.farms import Farm, farm
from tests.integration.test_admin_live import (
    admin_section,
    eventually,
    free_port_for_admin,
    metric_sum,
)
from tests.integration.workers_farm import records

pytestmark = pytest.mark.integration

SIZE = 20 * 1024 * 1024
BIG = os.urandom(SIZE)
DOWNLOADS = 40
UPLOADS = 20
SOURCES = [f"127.0.0.{n}" for n in range(100, 120)]
UPLOAD_SENT = 2 * 1024 * 1024
"""What an upload sends before it resets: the rest of its SIZE never goes."""


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def grown(group: Farm, name: str) -> bool:
    """Some server has received bytes of the upload ``name``."""
    return any(
        (server.root / name).exists() and (server.root / name).stat().st_size > 0
        for server in group.servers
    )


def cut_download(group: Farm, index: int) -> None:
    source = SOURCES[index % len(SOURCES)]
    lb = group.lb
    client = clients.ftplib_session(lb.host, lb.port, group.user, group.password, "epsv", source)
    ftp = client.ftp
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    received = 0
    while received < 512 * 1024:
        chunk = conn.recv(64 * 1024)
        assert chunk, "the download ended before the reset"
        received += len(chunk)
    reset(conn)
    assert ftp.sock is not None
    reset(ftp.sock)
    ftp.sock = None
    ftp.close()


def cut_upload(group: Farm, index: int) -> None:
    source = SOURCES[index % len(SOURCES)]
    name = f"up-{index}.bin"
    lb = group.lb
    client = clients.ftplib_session(lb.host, lb.port, group.user, group.password, "epsv", source)
    ftp = client.ftp
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd(f"STOR {name}")
    conn.sendall(BIG[:UPLOAD_SENT])
    deadline = time.monotonic() + 20
    while not grown(group, name) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert grown(group, name), "no byte of the upload reached a server"
    reset(conn)
    assert ftp.sock is not None
    reset(ftp.sock)
    ftp.sock = None
    ftp.close()


def test_every_transfer_cut_by_a_reset_gets_its_line_and_its_bytes(tmp_path: Path) -> None:
    admin_port = free_port_for_admin()
    with farm(files={"big.bin": BIG}, sections=admin_section(admin_port)) as group:
        with ThreadPoolExecutor(max_workers=12) as pool:
            jobs = [pool.submit(cut_download, group, i) for i in range(DOWNLOADS)]
            jobs += [pool.submit(cut_upload, group, i) for i in range(UPLOADS)]
            for job in jobs:
                try:
                    job.result(timeout=120)
                except ftplib.Error as error:  # pragma: no cover - shown if it happens
                    pytest.fail(f"a client failed before its reset: {error}")
        started = DOWNLOADS + UPLOADS
        lb = group.lb
        assert eventually(lambda: len(records(lb, "transfer")) >= started, timeout=30)
        assert eventually(
            lambda: sum(1 for s in records(lb, "session") if s["server"] != "-") >= started,
            timeout=30,
        )
        lines = records(lb, "transfer")
        assert len(lines) == started, [line.get("error") for line in lines]
        retr = [line for line in lines if line["command"] == "RETR"]
        stor = [line for line in lines if line["command"] == "STOR"]
        assert (len(retr), len(stor)) == (DOWNLOADS, UPLOADS)
        for line in retr:
            assert 512 * 1024 <= int(line["bytes_to_client"]) <= SIZE, line
        for line in stor:
            assert 0 < int(line["bytes_to_server"]) <= UPLOAD_SENT, line
        assert len({line["session"] for line in lines}) == started
        # The counters hold the lines' bytes, each counted once.
        out = sum(int(line["bytes_to_client"]) for line in lines)
        into = sum(int(line["bytes_to_server"]) for line in lines)
        assert eventually(
            lambda: metric_sum(admin_port, "ftplb_transfer_bytes_total", direction="out") == out
        ), (metric_sum(admin_port, "ftplb_transfer_bytes_total", direction="out"), out)
        assert metric_sum(admin_port, "ftplb_transfer_bytes_total", direction="in") == into
        assert metric_sum(admin_port, "ftplb_transfers_total") == started
