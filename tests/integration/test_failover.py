"""Failover through a real ftplb: dead, silent and misconfigured servers, and their return.

Every scenario runs real pyftpdlib servers (and, where a server must misbehave
in a way no real server does on purpose, a small listener of our own) behind a
real ftplb subprocess. What each test checks is what a client sees (replies,
file contents) and what ftplb wrote to its log (sessions per server, connect
failures, health transitions).
"""

from __future__ import annotations

import contextlib
import ftplib
import shutil
import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.integration import clients, farms, servers
from tests.integration.balancer import (
    RunningBalancer,
    balancer,
    log_fields,
    server_entries,
    simple_config,
)
from tests.integration.conftest import require_server
from tests.integration.fakes import ThreadedTcpServer
from tests.support import free_port, passive_range, wait_until

pytestmark = pytest.mark.integration

CONTENT = b"the same file on every server\n" * 200
FILES = {"hello.txt": CONTENT}
USER = "ftptest"
PASSWORD = "ftptest"

INTERVAL = 0.5
FALL = 2
HEALTH_TIMEOUT = 1.0
SILENT_HOST = "127.0.0.13"


# --------------------------------------------------------------------------- helpers


def sessions_of(lb: RunningBalancer, user: str = USER) -> Counter[str]:
    """Logged-in sessions of ``user`` per server name (the harness probe has no user)."""
    counts: Counter[str] = Counter()
    for line in lb.log_lines("session"):
        fields = log_fields(line)
        if fields.get("user") == user:
            counts[fields.get("server", "-")] += 1
    return counts


def connect_failures(lb: RunningBalancer, server: str | None = None) -> list[dict[str, str]]:
    found = []
    for line in lb.log_lines("warning"):
        fields = log_fields(line)
        if fields.get("warning") != "connect_failed":
            continue
        if server is None or fields.get("server") == server:
            found.append(fields)
    return found


def health_changes(lb: RunningBalancer, server: str, state: str) -> list[dict[str, str]]:
    return [
        fields
        for fields in map(log_fields, lb.log_lines("health"))
        if fields.get("server") == server and fields.get("state") == state
    ]


def wait_for_sessions(lb: RunningBalancer, total: int, timeout: float = 10.0) -> Counter[str]:
    """The per-server counts once ``total`` logged-in sessions have been logged."""
    wait_until(lambda: sum(sessions_of(lb).values()) >= total, timeout, f"{total} session lines")
    return sessions_of(lb)


def full_session(lb: RunningBalancer, user: str = USER, password: str = PASSWORD) -> None:
    """Login, LIST and RETR hello.txt in passive mode; the content must be intact."""
    with clients.ftplib_session(lb.host, lb.port, user, password, "pasv") as ftp:
        assert b"hello.txt" in ftp.list()
        assert ftp.retr("hello.txt") == CONTENT


def short_session(lb: RunningBalancer, password: str = PASSWORD) -> str:
    """Login, NOOP, QUIT; returns "ok" or the error reply that ended the session."""
    ftp = ftplib.FTP()
    try:
        ftp.connect(lb.host, lb.port, timeout=15)
        ftp.login(USER, password)
        ftp.voidcmd("NOOP")
        ftp.quit()
    except ftplib.Error as error:
        return str(error)
    finally:
        ftp.close()
    return "ok"


def lb_config(
    servers_toml: str,
    port: int,
    *,
    defaults: str = "",
    health: str = '{ type = "ftp", interval = "500ms", rise = 1, fall = 2, timeout = "1s" }',
) -> str:
    """A one-frontend config whose [defaults] and servers the test writes itself."""
    return f"""
[defaults]
timeout_data = "10s"
{defaults}

[[frontends]]
name = "ftp"
bind = ["127.0.0.1:{port}"]
backend = "pool"
passive_ports = "{passive_range()}"

[[backends]]
name = "pool"
health = {health}

{servers_toml}
"""


class SilentServer(ThreadedTcpServer):
    """Accepts TCP connections and holds them open without ever sending a byte."""

    def __init__(self, host: str) -> None:
        self._held: list[socket.socket] = []
        super().__init__(host)

    def handle(self, conn: socket.socket) -> None:
        self._held.append(conn)

    def close(self) -> None:
        super().close()
        for conn in self._held:
            conn.close()


@contextlib.contextmanager
def silent_server(host: str = SILENT_HOST) -> Iterator[SilentServer]:
    server = SilentServer(host)
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def pyftpdlib_server(host: str, password: str = PASSWORD) -> Iterator[servers.FtpServer]:
    require_server("pyftpdlib")
    root = servers.make_server_root("ftplb-failover-")
    (root / "hello.txt").write_bytes(CONTENT)
    server = servers.start_pyftpdlib(host, free_port(host), root, USER, password)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- one server down


def test_dead_server_is_hidden_by_redispatch_then_marked_down() -> None:
    with farms.farm(files=FILES) as farm:
        lb = farm.lb
        farm.servers[0].stop()
        stopped_at = time.monotonic()

        # Before the health checks can notice, redispatch must hide the dead server.
        for _ in range(6):
            full_session(lb)
        assert connect_failures(lb, "s1"), "no session even tried the stopped server s1"
        assert not connect_failures(lb, "s2")
        assert sum(wait_for_sessions(lb, 6).values()) == 6

        limit = FALL * INTERVAL + HEALTH_TIMEOUT + 2
        wait_until(
            lambda: health_changes(lb, "s1", "DOWN"),
            max(0.0, stopped_at + limit - time.monotonic()),
            f"a health line with server=s1 state=DOWN within {limit} s of the stop",
        )
        assert not health_changes(lb, "s2", "DOWN")

        before = sessions_of(lb)
        failures_before = len(connect_failures(lb))
        for _ in range(10):
            full_session(lb)
        after = wait_for_sessions(lb, 16)
        assert after - before == Counter({"s2": 10})
        assert len(connect_failures(lb)) == failures_before


# --------------------------------------------------------------------------- all servers down


def test_all_servers_down_answers_421_with_a_reason() -> None:
    with farms.farm(files=FILES) as farm:
        lb = farm.lb
        for server in farm.servers:
            server.stop()

        # At once: every connect fails, and ftplb must still say why.
        ftp = ftplib.FTP()
        try:
            with pytest.raises(ftplib.error_temp) as caught:
                ftp.connect(lb.host, lb.port, timeout=15)
        finally:
            ftp.close()
        reply = str(caught.value)
        assert reply.startswith("421 ")
        assert len(reply[4:].strip()) >= 5, f"421 without a reason: {reply!r}"

        # Later, when both are known DOWN, the same holds for curl.
        wait_until(
            lambda: health_changes(lb, "s1", "DOWN") and health_changes(lb, "s2", "DOWN"),
            6,
            "s1 and s2 DOWN",
        )
        url = clients.ftp_url(lb.host, lb.port, "", USER, PASSWORD)
        result = clients.curl_list(url, "pasv")
        assert not result.ok
        assert "< 421" in result.stderr, result.stderr[-2000:]
        assert any(r.startswith("421 ") and len(r) > 8 for r in result.replies), result.replies


# --------------------------------------------------------------------------- a silent server


def test_server_that_never_greets_is_skipped_after_timeout_connect() -> None:
    with silent_server() as silent, pyftpdlib_server("127.0.0.11") as real:
        port = free_port()
        text = lb_config(
            server_entries([(silent.host, silent.port), (real.host, real.port)]),
            port,
            defaults='timeout_connect = "1s"\nretries = 2',
            health='{ type = "tcp", interval = "500ms", rise = 1, fall = 2, timeout = "1s" }',
        )
        with balancer(text, "127.0.0.1", port) as lb:
            for _ in range(6):
                full_session(lb)
            counts = wait_for_sessions(lb, 6)
            assert counts == Counter({"s2": 6})
            failures = connect_failures(lb, "s1")
            assert failures, "no session tried the silent server"
            assert all(f.get("reason") == "timeout" for f in failures), failures
            assert silent.accepted >= len(failures)
            # The tcp check keeps the silent server UP: the sessions had to route around it.
            assert not health_changes(lb, "s1", "DOWN")


def test_only_a_silent_server_gives_421_after_the_connect_timeout() -> None:
    with silent_server() as silent:
        port = free_port()
        text = lb_config(
            server_entries([(silent.host, silent.port)]),
            port,
            defaults='timeout_connect = "1s"\nretries = 2',
            health='{ type = "tcp", interval = "500ms", rise = 1, fall = 2, timeout = "1s" }',
        )
        with balancer(text, "127.0.0.1", port) as lb:
            ftp = ftplib.FTP()
            started = time.monotonic()
            try:
                with pytest.raises(ftplib.error_temp) as caught:
                    ftp.connect(lb.host, lb.port, timeout=30)
            finally:
                ftp.close()
            elapsed = time.monotonic() - started
            assert str(caught.value).startswith("421 ")
            # At least one whole connect timeout was waited, and not endlessly more.
            assert 0.9 <= elapsed < 10, elapsed
            assert connect_failures(lb, "s1")


# --------------------------------------------------------------------------- retries and redispatch


@pytest.mark.parametrize(
    ("defaults", "shielded"),
    [
        pytest.param("", True, id="defaults"),
        pytest.param("retries = 0\nredispatch = false", False, id="no-retry-no-redispatch"),
    ],
)
def test_retries_and_redispatch_decide_whether_clients_see_a_dead_server(
    defaults: str, shielded: bool
) -> None:
    # No health checks: the dead server stays in rotation, so only the
    # connect-time retry logic stands between it and the clients.
    with farms.started_servers("pyftpdlib", ["127.0.0.11", "127.0.0.12"], FILES) as group:
        port = free_port()
        text = lb_config(
            server_entries([(s.host, s.port) for s in group]),
            port,
            defaults=f'timeout_connect = "2s"\n{defaults}',
            health='{ type = "none" }',
        )
        with balancer(text, "127.0.0.1", port) as lb:
            group[0].stop()
            outcomes = [short_session(lb) for _ in range(6)]
            failed = [o for o in outcomes if o != "ok"]
            if shielded:
                assert not failed, outcomes
            else:
                assert failed, f"no session failed although s1 is dead: {outcomes}"
                assert len(failed) < len(outcomes), outcomes
                assert all(o.startswith("421 ") for o in failed), outcomes
            assert connect_failures(lb, "s1")


# --------------------------------------------------------------------------- login health checks


def test_login_check_with_a_wrong_password_takes_that_server_out() -> None:
    with (
        pyftpdlib_server("127.0.0.11", PASSWORD) as good,
        pyftpdlib_server("127.0.0.12", "An0therPass") as other,
    ):
        port = free_port()
        text = simple_config(
            [good.address, other.address],
            port=port,
            health=(
                f'{{ type = "login", user = "{USER}", password = "{PASSWORD}", '
                'interval = "500ms", rise = 1, fall = 2, timeout = "1s" }'
            ),
        )
        with balancer(text, "127.0.0.1", port) as lb:
            wait_until(lambda: health_changes(lb, "s2", "DOWN"), 6, "s2 DOWN by the login check")
            down = health_changes(lb, "s2", "DOWN")[0]
            assert down.get("check") == "login"
            assert down.get("layer") == "L7"
            outcomes = [short_session(lb) for _ in range(10)]
            assert outcomes == ["ok"] * 10
            assert wait_for_sessions(lb, 10) == Counter({"s1": 10})
            assert not health_changes(lb, "s1", "DOWN")


# --------------------------------------------------------------------------- a server comes back


def test_restarted_server_comes_back_up_after_rise_checks() -> None:
    rise = 2
    health = f'{{ type = "ftp", interval = "500ms", rise = {rise}, fall = 2, timeout = "1s" }}'
    with farms.farm(files=FILES, health=health) as farm:
        lb = farm.lb
        first = farm.servers[0]
        first.stop()
        wait_until(lambda: health_changes(lb, "s1", "DOWN"), 6, "s1 DOWN")
        failures_while_down = len(connect_failures(lb))
        for _ in range(4):
            full_session(lb)
        assert wait_for_sessions(lb, 4) == Counter({"s2": 4})
        # DOWN means not even tried, rather than tried and redispatched.
        assert len(connect_failures(lb)) == failures_while_down

        restarted = servers.start_pyftpdlib(first.host, first.port, first.root)
        try:
            limit = rise * INTERVAL + HEALTH_TIMEOUT + 2
            wait_until(lambda: health_changes(lb, "s1", "UP"), limit, "s1 UP again")
            before = sessions_of(lb)
            for _ in range(10):
                full_session(lb)
            gained = wait_for_sessions(lb, 14) - before
            assert gained["s1"] >= 4, gained
            assert gained["s2"] >= 4, gained
            assert gained.total() == 10
        finally:
            restarted.stop()
