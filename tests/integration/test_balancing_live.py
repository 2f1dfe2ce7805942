"""Balancing, stickiness, routing and limits of a real ftplb over real pyftpdlib servers.

Each server has a disk of its own. A marker file named after the server
("marker-s1" on s1, ...) lets a live session find out where it landed (MDTM
answers 213 only on the server that holds the marker); ftplb's session log
lines tell where finished sessions went. Sessions run one after the other, so
every expected split is exact.
"""

from __future__ import annotations

import contextlib
import ftplib
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.integration import clients, farms
from tests.integration.balancer import RunningBalancer, balancer, log_fields
from tests.integration.fakes import ThreadedTcpServer
from tests.support import free_port, passive_range, wait_until

pytestmark = pytest.mark.integration

USER = "ftptest"
PASSWORD = "ftptest"
SOURCES = ("127.0.0.100", "127.0.0.101")

# A client that hangs up while ftplb is still connecting to its server must not
# leave that server's session count raised (it did once: leastconn and
# max_connections then saw a phantom session).
SLOW_HOST = "127.0.0.15"


# --------------------------------------------------------------------------- helpers


def user_sessions(lb: RunningBalancer, user: str = USER) -> list[dict[str, str]]:
    """The logged session lines of ``user`` (the harness probe has no user)."""
    return [
        fields for fields in map(log_fields, lb.log_lines("session")) if fields.get("user") == user
    ]


def wait_for_sessions(lb: RunningBalancer, total: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(user_sessions(lb)) < total:
        if time.monotonic() >= deadline:
            raise AssertionError(f"only {len(user_sessions(lb))} of {total} sessions logged")
        time.sleep(0.05)


def server_counts(lb: RunningBalancer, total: int) -> Counter[str]:
    """Sessions per server, once ``total`` of them have been logged."""
    wait_for_sessions(lb, total)
    return Counter(fields["server"] for fields in user_sessions(lb))


def servers_by_source(lb: RunningBalancer, total: int) -> dict[str, Counter[str]]:
    wait_for_sessions(lb, total)
    found: dict[str, Counter[str]] = {}
    for fields in user_sessions(lb):
        source = fields["client"].rsplit(":", 1)[0]
        found.setdefault(source, Counter())[fields["server"]] += 1
    return found


def mark_servers(farm: farms.Farm) -> None:
    for index, server in enumerate(farm.servers, start=1):
        (server.root / f"marker-s{index}").write_bytes(b"")


def open_session(
    lb: RunningBalancer, source: str | None = None, user: str = USER, password: str = PASSWORD
) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=15, source_address=(source, 0) if source else None)
    try:
        ftp.connect(lb.host, lb.port, timeout=15)
        ftp.login(user, password)
    except BaseException:
        ftp.close()
        raise
    return ftp


def close_session(ftp: ftplib.FTP) -> None:
    try:
        ftp.quit()
    except (OSError, EOFError, ftplib.Error):
        pass
    finally:
        ftp.close()


@contextlib.contextmanager
def session(lb: RunningBalancer, source: str | None = None) -> Iterator[ftplib.FTP]:
    ftp = open_session(lb, source)
    try:
        yield ftp
    finally:
        close_session(ftp)


def where(ftp: ftplib.FTP, count: int = 2) -> str:
    """The name of the server behind a live session, from the marker it can see."""
    found = []
    for index in range(1, count + 1):
        with contextlib.suppress(ftplib.error_perm):
            ftp.sendcmd(f"MDTM marker-s{index}")
            found.append(f"s{index}")
    assert len(found) == 1, f"session sees markers {found}"
    return found[0]


def short_sessions(lb: RunningBalancer, count: int, source: str | None = None) -> None:
    """``count`` sequential sessions: login, NOOP, QUIT."""
    for _ in range(count):
        with session(lb, source) as ftp:
            ftp.voidcmd("NOOP")


class SlowGreeter(ThreadedTcpServer):
    """A TCP relay in front of an FTP server that holds everything back for ``delay`` s.

    It makes ftplb's connect to the server last that long (the connect ends
    with the server's 220), so a client can hang up while it is in progress.
    """

    def __init__(self, host: str, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        super().__init__(host)

    def handle(self, conn: socket.socket) -> None:
        self._relay(conn)

    def _relay(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.target, timeout=5) as server:
            if self._stop.wait(self.delay):
                return
            pump = threading.Thread(target=self._pump, args=(server, client), daemon=True)
            pump.start()
            self._pump(client, server)
            pump.join(10)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            try:
                dst.sendall(data)
            except OSError:
                return


@contextlib.contextmanager
def slow_greeter(host: str, target: tuple[str, int], delay: float) -> Iterator[SlowGreeter]:
    greeter = SlowGreeter(host, target, delay)
    try:
        yield greeter
    finally:
        greeter.close()


def lb_config(
    servers_toml: str,
    port: int,
    backend: str = "",
    health: str = '{ type = "ftp", interval = "500ms", rise = 1, fall = 2, timeout = "1s" }',
) -> str:
    return f"""
[defaults]
timeout_connect = "2s"
timeout_data = "10s"

[[frontends]]
name = "ftp"
bind = ["127.0.0.1:{port}"]
backend = "pool"
passive_ports = "{passive_range()}"

[[backends]]
name = "pool"
health = {health}
{backend}

{servers_toml}
"""


def server_block(name: str, address: tuple[str, int], **extra: object) -> str:
    lines = [f'[[backends.servers]]\nname = "{name}"\naddress = "{address[0]}:{address[1]}"']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- algorithms


def test_roundrobin_splits_100_sessions_exactly() -> None:
    with farms.farm() as farm:
        short_sessions(farm.lb, 100)
        assert server_counts(farm.lb, 100) == Counter({"s1": 50, "s2": 50})


def test_weights_3_to_1_split_100_sessions_75_25() -> None:
    with farms.started_servers("pyftpdlib", ["127.0.0.11", "127.0.0.12"]) as group:
        port = free_port()
        blocks = server_block("s1", group[0].address, weight=3) + server_block(
            "s2", group[1].address, weight=1
        )
        with balancer(lb_config(blocks, port), "127.0.0.1", port) as lb:
            short_sessions(lb, 100)
            assert server_counts(lb, 100) == Counter({"s1": 75, "s2": 25})


def test_leastconn_sends_new_sessions_to_the_idle_server() -> None:
    with farms.farm(backend='balance = "leastconn"') as farm:
        mark_servers(farm)
        held = open_session(farm.lb)
        try:
            busy = where(held)
            short_sessions(farm.lb, 10)
            counts = server_counts(farm.lb, 10)
        finally:
            close_session(held)
        idle = "s2" if busy == "s1" else "s1"
        assert counts == Counter({idle: 10})


# --------------------------------------------------------------------------- stickiness


def test_source_stickiness_keeps_each_client_on_one_server() -> None:
    with farms.farm(backend='sticky = "source"') as farm:
        lb = farm.lb
        for source in SOURCES:
            short_sessions(lb, 10, source)
        by_source = servers_by_source(lb, 20)
        assert set(by_source) == set(SOURCES)
        for source, counts in by_source.items():
            assert len(counts) == 1, f"{source} was spread over {counts}"
            assert counts.total() == 10
        # Round robin placed the two first sessions, so the clients got different servers.
        assert by_source[SOURCES[0]] != by_source[SOURCES[1]]

        # A file stored in one session is there in the next (separate disks!).
        name = f"sticky-{uuid.uuid4().hex}.bin"
        data = os.urandom(64 * 1024)
        with clients.ftplib_session(lb.host, lb.port, USER, PASSWORD, "pasv", SOURCES[0]) as up:
            assert up.stor(name, data).startswith("226")
        with clients.ftplib_session(lb.host, lb.port, USER, PASSWORD, "pasv", SOURCES[0]) as dn:
            assert dn.retr(name) == data
        assert len(farm.holder_of(name)) == 1


def test_without_stickiness_a_new_session_misses_the_stored_file() -> None:
    with farms.farm() as farm:
        lb = farm.lb
        name = f"loose-{uuid.uuid4().hex}.bin"
        data = os.urandom(64 * 1024)
        with clients.ftplib_session(lb.host, lb.port, USER, PASSWORD, "pasv", SOURCES[0]) as up:
            assert up.stor(name, data).startswith("226")
        with (
            clients.ftplib_session(lb.host, lb.port, USER, PASSWORD, "pasv", SOURCES[0]) as dn,
            pytest.raises(ftplib.error_perm, match=r"^550"),
        ):
            dn.retr(name)
        assert len(farm.holder_of(name)) == 1


def test_user_stickiness_with_roundrobin() -> None:
    with farms.farm(backend='sticky = "user"') as farm:
        # Alternate the source address: the user name alone must keep the server.
        for index in range(10):
            short_sessions(farm.lb, 1, SOURCES[index % 2])
        counts = server_counts(farm.lb, 10)
        assert len(counts) == 1 and counts.total() == 10, counts


# --------------------------------------------------------------------------- user routing


def test_user_balance_sends_one_user_to_one_server() -> None:
    with farms.farm(backend='balance = "user"') as farm:
        for index in range(10):
            short_sessions(farm.lb, 1, SOURCES[index % 2])
        counts = server_counts(farm.lb, 10)
        assert len(counts) == 1 and counts.total() == 10, counts


@pytest.mark.parametrize("target", ["s1", "s2"])
def test_user_map_sends_the_user_to_the_mapped_server(target: str) -> None:
    backend = f'balance = "user"\nuser_map = {{ {USER} = "{target}" }}'
    with farms.farm(backend=backend) as farm:
        mark_servers(farm)
        with session(farm.lb) as ftp:
            assert where(ftp) == target
        short_sessions(farm.lb, 9)
        assert server_counts(farm.lb, 10) == Counter({target: 10})


def test_user_map_is_honoured_or_refused_with_another_balance() -> None:
    backend = f'user_map = {{ {USER} = "s2" }}'
    try:
        with farms.farm(backend=backend) as farm:
            short_sessions(farm.lb, 6)
            counts = server_counts(farm.lb, 6)
    except RuntimeError as error:
        # Refusing the combination at start-up is fine too: it is not silent.
        assert "user_map" in str(error)
        return
    assert counts == Counter({"s2": 6})


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    "limited",
    [
        "s1",
        "s2",
    ],
)
def test_server_max_connections_is_respected(limited: str) -> None:
    with farms.started_servers("pyftpdlib", ["127.0.0.11", "127.0.0.12"]) as group:
        port = free_port()
        blocks = "".join(
            server_block(name, server.address, max_connections=1 if name == limited else 0)
            for name, server in zip(("s1", "s2"), group, strict=True)
        )
        with balancer(lb_config(blocks, port), "127.0.0.1", port) as lb:
            farm = farms.Farm(group, lb)
            mark_servers(farm)
            # Open sessions until one lands on the limited server; keep that one.
            held: ftplib.FTP | None = None
            for _ in range(4):
                ftp = open_session(lb)
                if where(ftp) == limited:
                    held = ftp
                    break
                close_session(ftp)
            assert held is not None, f"no session could be placed on {limited}"
            try:
                for _ in range(10):
                    with session(lb) as ftp:
                        assert where(ftp) != limited
            finally:
                close_session(held)
            # Released: the server takes sessions again.
            landed = []
            for _ in range(4):
                with session(lb) as ftp:
                    landed.append(where(ftp))
            assert limited in landed, landed


def test_client_hanging_up_during_the_server_connect_frees_the_server() -> None:
    with (
        farms.started_servers("pyftpdlib", ["127.0.0.11"]) as group,
        slow_greeter(SLOW_HOST, group[0].address, delay=1.0) as slow,
    ):
        (group[0].root / "marker-s1").write_bytes(b"")
        port = free_port()
        text = lb_config(
            server_block("s1", (slow.host, slow.port), max_connections=1),
            port,
            health='{ type = "none" }',
        )
        with balancer(text, "127.0.0.1", port) as lb:
            # An impatient client (or a port scanner): gone before the server greets.
            before = slow.accepted
            with socket.create_connection((lb.host, lb.port), timeout=5):
                wait_until(lambda: slow.accepted > before, 5, "ftplb connecting to s1")
            time.sleep(0.3)
            # Nobody holds a session on s1 now, so its one slot is free.
            with session(lb) as ftp:
                assert where(ftp, 1) == "s1"
