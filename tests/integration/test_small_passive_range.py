"""500 transfers pending at once through a passive range of 10 ports.

Each of 500 ftplib clients has a loopback address of its own, logs in
through a real ``ftplb run``, and gets its PASV or EPSV reply. Only when all
500 wait do they connect and transfer: 250 RETR and 250 STOR of 1 MB each,
every file checked by sha256. With one listener per transfer, a 10-port
range could hold 10 of them. Right before they connect, a thief from
another address connects to every port they wait on and must get nothing.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import os
import shlex
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import farms
from tests.integration.balancer import RunningBalancer
from tests.support import passive_range

pytestmark = pytest.mark.integration

CLIENTS = 500
SIZE = 1024 * 1024
DOWNLOADS = 10
"""Distinct files the RETR clients share: a transfer wired to the wrong client shows."""
PORTS = 10
THIEF = "127.0.0.2"
WAIT = 120.0
"""The bound of every wait: a barrier, a socket operation, a reply."""
LOGINS_AT_ONCE = 50
"""Logins in flight at once: the servers' accept queues are finite; the transfers are not."""


def client_address(index: int) -> str:
    """127.0.1.1 to 127.0.2.250: all of 127/8 is loopback."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


def upload_content(index: int, block: bytes) -> bytes:
    return index.to_bytes(4, "big") + block[4:]


@dataclass(frozen=True)
class Moved:
    index: int
    port: int
    """The passive port the client's reply advertised."""
    sha256: str


def one_client(
    lb: RunningBalancer,
    index: int,
    credentials: tuple[str, str],
    content: bytes,
    all_waiting: threading.Barrier,
    logins: threading.Semaphore,
    advertised: set[int],
) -> Moved:
    source = client_address(index)
    ftp = ftplib.FTP(timeout=WAIT, source_address=(source, 0))
    try:
        with logins:
            ftp.connect(lb.host, lb.port, timeout=WAIT)
            ftp.login(*credentials)
        ftp.voidcmd("TYPE I")
        if index % 2:
            address = ftplib.parse229(ftp.sendcmd("EPSV"), (lb.host, lb.port))
        else:
            address = ftplib.parse227(ftp.sendcmd("PASV"))
        advertised.add(address[1])
        all_waiting.wait()
        with socket.create_connection(address, WAIT, source_address=(source, 0)) as data:
            if index < CLIENTS // 2:
                reply = ftp.sendcmd(f"RETR down-{index % DOWNLOADS}.bin")
                assert reply.startswith("150"), reply
                digest = hashlib.sha256()
                while chunk := data.recv(1 << 16):
                    digest.update(chunk)
            else:
                reply = ftp.sendcmd(f"STOR up-{index}.bin")
                assert reply.startswith("150"), reply
                data.sendall(content)
                digest = hashlib.sha256(content)
        reply = ftp.voidresp()
        assert reply.startswith("226"), reply
        ftp.quit()
        return Moved(index, address[1], digest.hexdigest())
    except BaseException:
        all_waiting.abort()  # the others must not wait for this one
        raise
    finally:
        ftp.close()


def thief_gets_nothing(ports: set[int]) -> list[bytes]:
    """What a connection from the thief's address reads on each port (b"" when closed)."""
    got = []
    for port in sorted(ports):
        with socket.socket() as thief:
            thief.bind((THIEF, 0))
            thief.settimeout(10)
            thief.connect(("127.0.0.1", port))
            try:
                got.append(thief.recv(1024))
            except ConnectionResetError:
                got.append(b"")
    return got


@contextlib.contextmanager
def ten_port_farm(downloads: dict[str, bytes]) -> Iterator[tuple[farms.Farm, range]]:
    first, last = (int(end) for end in passive_range(PORTS).split("-"))
    with farms.farm(files=downloads, passive_ports=f"{first}-{last}") as group:
        yield group, range(first, last + 1)


def test_500_transfers_wait_at_once_on_10_passive_ports() -> None:
    block = os.urandom(SIZE)
    downloads = {f"down-{i}.bin": i.to_bytes(4, "big") + block[4:] for i in range(DOWNLOADS)}
    expected_down = {name: hashlib.sha256(data).hexdigest() for name, data in downloads.items()}
    stolen: list[bytes] = []
    advertised: set[int] = set()

    with ten_port_farm(downloads) as (group, ports):
        # The barrier's action runs once all 500 wait, before any of them connects.
        all_waiting = threading.Barrier(
            CLIENTS, action=lambda: stolen.extend(thief_gets_nothing(advertised)), timeout=WAIT
        )
        logins = threading.Semaphore(LOGINS_AT_ONCE)
        credentials = (group.user, group.password)
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [
                pool.submit(
                    one_client,
                    group.lb,
                    index,
                    credentials,
                    upload_content(index, block),
                    all_waiting,
                    logins,
                    advertised,
                )
                for index in range(CLIENTS)
            ]
            moved = [future.result(timeout=WAIT * 3) for future in futures]
        lb = group.lb
        log = lb.log_text()
        uploads = {
            path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for server in group.servers
            for path in Path(server.root).glob("up-*.bin")
        }

    assert advertised == {m.port for m in moved}
    assert advertised <= set(ports)
    assert stolen == [b""] * len(advertised)
    for m in moved[: CLIENTS // 2]:
        assert m.sha256 == expected_down[f"down-{m.index % DOWNLOADS}.bin"], m
    for m in moved[CLIENTS // 2 :]:
        assert uploads[f"up-{m.index}.bin"] == m.sha256, m
        assert m.sha256 == hashlib.sha256(upload_content(m.index, block)).hexdigest()
    refusals = [
        dict(field.split("=", 1) for field in shlex.split(line)[2:] if "=" in field)
        for line in log.splitlines()
        if "warning=foreign_data_refused" in line
    ]
    assert sorted((r["peer"], int(r["port"])) for r in refusals) == [
        (THIEF, port) for port in sorted(advertised)
    ]
    transfers = [line for line in log.splitlines() if " transfer " in line]
    assert len(transfers) == CLIENTS
    assert [line for line in transfers if " error=- " not in f"{line} "] == []
