"""Security rules of a real ftplb, driven over raw FTP by a client and an attacker.

The client always has its own source address (127.0.0.100), distinct from the
balancer's (127.0.0.1), so that "the client's address" is something ftplb must
really check. The attacker uses another one (127.0.0.2).
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import os
import re
import shlex
import shutil
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration import farms, servers
from tests.integration.balancer import RunningBalancer, balancer, simple_config
from tests.integration.conftest import require_server
from tests.support import free_port

pytestmark = pytest.mark.integration

CLIENT = "127.0.0.100"
ATTACKER = "127.0.0.2"
CONTENT = os.urandom(256 * 1024)
FILES = {"data.bin": CONTENT}
SECRET = "S3cretPass!"
MAX_LINE = 1024


# --------------------------------------------------------------------------- helpers


def connect(lb: RunningBalancer, source: str = CLIENT) -> ftplib.FTP:
    """A control connection from ``source`` with the banner read, not logged in."""
    ftp = ftplib.FTP(timeout=15, source_address=(source, 0))
    ftp.connect(lb.host, lb.port, timeout=15)
    return ftp


@contextlib.contextmanager
def logged_in(
    farm: farms.Farm, source: str = CLIENT, password: str | None = None
) -> Iterator[ftplib.FTP]:
    ftp = connect(farm.lb, source)
    try:
        ftp.login(farm.user, farm.password if password is None else password)
        yield ftp
    finally:
        with contextlib.suppress(OSError, EOFError, ftplib.Error):
            ftp.quit()
        ftp.close()


def reply_to(ftp: ftplib.FTP, command: str) -> str:
    """The full reply to ``command``, error replies included."""
    try:
        return ftp.sendcmd(command)
    except ftplib.Error as error:
        return str(error)


def passive_ports(lb: RunningBalancer) -> range:
    match = re.search(r'passive_ports = "(\d+)-(\d+)"', lb.config_path.read_text())
    assert match is not None
    return range(int(match[1]), int(match[2]) + 1)


def listening_ports(host: str, ports: range) -> list[int]:
    """The ports of ``ports`` that accept a connection on ``host`` right now."""
    found = []
    for port in ports:
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex((host, port)) == 0:
                found.append(port)
    return found


def refusals(lb: RunningBalancer) -> list[str]:
    return [line for line in lb.log_lines("warning") if "warning=foreign_data_refused " in line]


def logged_sessions(lb: RunningBalancer, user: str) -> int:
    return sum(f"user={user}" in shlex.split(line) for line in lb.log_lines("session"))


def attacker_gets_nothing(address: tuple[str, int]) -> bytes:
    """Connect from the attacker's address; returns what could be read (b"" on a reset)."""
    with socket.socket() as thief:
        thief.bind((ATTACKER, 0))
        thief.settimeout(5)
        thief.connect(address)
        started = time.monotonic()
        try:
            data = thief.recv(65536)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            raise AssertionError("ftplb accepted the foreign connection and kept it") from None
        assert time.monotonic() - started < 4, "the foreign connection was held open"
        return data


# --------------------------------------------------------------------------- PORT / EPRT


def test_port_and_eprt_cannot_aim_the_data_connection_elsewhere() -> None:
    with farms.farm(files=FILES) as farm, logged_in(farm) as ftp:
        lb = farm.lb
        # A third host waiting for a bounced connection.
        with socket.create_server(("127.0.0.5", 0)) as target:
            target.settimeout(0.5)
            tport = target.getsockname()[1]
            hi, lo = divmod(tport, 256)
            for command in (
                f"PORT 127,0,0,1,{hi},{lo}",
                f"PORT 127,0,0,5,{hi},{lo}",
                f"EPRT |1|127.0.0.5|{tport}|",
                f"EPRT |1|127.0.0.1|{tport}|",
            ):
                reply = reply_to(ftp, command)
                assert reply.startswith("500 "), (command, reply)
                # No data setup survived: a transfer command has nothing to use.
                assert reply_to(ftp, "LIST").startswith("425 "), command
            with pytest.raises(TimeoutError):
                target.accept()

        # The client's own address, but a privileged port: the classic bounce to port 21.
        assert reply_to(ftp, f"PORT {CLIENT.replace('.', ',')},0,21").startswith("500 ")
        assert reply_to(ftp, f"EPRT |1|{CLIENT}|1023|").startswith("500 ")
        # Malformed addresses are syntax errors.
        for command in ("PORT 127,0,0,100,4", "PORT 127,0,0,300,4,1", "PORT x", "EPRT |1|nope|"):
            assert reply_to(ftp, command).startswith("501 "), command
        assert ftp.voidcmd("NOOP").startswith("200")
        assert not lb.log_lines("transfer")

        # The same session can still use a legitimate PORT.
        ftp.voidcmd("TYPE I")
        with socket.create_server((CLIENT, 0)) as mine:
            mine.settimeout(10)
            mport = mine.getsockname()[1]
            ftp.voidcmd(f"PORT {CLIENT.replace('.', ',')},{mport // 256},{mport % 256}")
            assert ftp.sendcmd("RETR data.bin").startswith("150")
            conn, peer = mine.accept()
            with conn:
                assert peer[0] == "127.0.0.1"
                received = b""
                while chunk := conn.recv(65536):
                    received += chunk
            assert ftp.voidresp().startswith("226")
        assert received == CONTENT


# --------------------------------------------------------------------------- passive port theft


@pytest.mark.parametrize("verb", ["PASV", "EPSV"])
def test_foreign_peer_cannot_steal_a_passive_transfer(verb: str) -> None:
    with farms.farm(files=FILES) as farm, logged_in(farm) as ftp:
        lb = farm.lb
        ftp.voidcmd("TYPE I")
        reply = ftp.sendcmd(verb)
        if verb == "PASV":
            address = ftplib.parse227(reply)
        else:
            address = ftplib.parse229(reply, (lb.host, lb.port))
        assert address[0] == lb.host

        assert attacker_gets_nothing(address) == b""
        # ftplb closes the connection first and logs right after.
        deadline = time.monotonic() + 5
        while not refusals(lb) and time.monotonic() < deadline:
            time.sleep(0.02)
        lines = refusals(lb)
        assert len(lines) == 1, lines
        assert f"peer={ATTACKER}" in lines[0]
        assert f"expected={CLIENT}" in lines[0]

        # The listener kept waiting for the real client.
        with socket.socket() as data:
            data.bind((CLIENT, 0))
            data.settimeout(15)
            data.connect(address)
            assert ftp.sendcmd("RETR data.bin").startswith("150")
            digest = hashlib.sha256()
            while chunk := data.recv(65536):
                digest.update(chunk)
        assert ftp.voidresp().startswith("226")
        assert digest.hexdigest() == hashlib.sha256(CONTENT).hexdigest()


# --------------------------------------------------------------------------- line length


def test_overlong_line_is_refused_and_the_session_goes_on() -> None:
    defaults = f"max_line_length = {MAX_LINE}"
    with farms.farm(files=FILES, defaults=defaults) as farm, logged_in(farm) as ftp:
        for size in (5000, MAX_LINE + 50):
            reply = reply_to(ftp, "CWD " + "x" * (size - 4))
            assert reply.startswith("500 "), reply[:200]
            assert "too long" in reply.lower(), reply[:200]
            assert ftp.voidcmd("NOOP").startswith("200")
        # Just under the limit the line is the server's business: pyftpdlib
        # answers 550 for a directory that does not exist, ftplb never would.
        reply = reply_to(ftp, "CWD " + "y" * (MAX_LINE - 30))
        assert reply.startswith("550 "), reply[:200]
        assert ftp.voidcmd("NOOP").startswith("200")
        assert ftp.retrbinary("RETR data.bin", lambda _chunk: None).startswith("226")


# --------------------------------------------------------------------------- before login


@pytest.mark.parametrize("routing", ["server-first", "user-first"])
def test_data_commands_before_login_are_refused(routing: str) -> None:
    backend = 'balance = "user"' if routing == "user-first" else ""
    with farms.farm(files=FILES, backend=backend) as farm:
        lb = farm.lb
        ftp = connect(lb)
        try:
            port = free_port(CLIENT)
            for command in (
                "PASV",
                "EPSV",
                f"PORT {CLIENT.replace('.', ',')},{port // 256},{port % 256}",
                f"EPRT |1|{CLIENT}|{port}|",
                "LIST",
                "RETR data.bin",
                "STOR evil.bin",
            ):
                assert reply_to(ftp, command).startswith("530 "), command
            assert not listening_ports(lb.host, passive_ports(lb))
            # A wrong password leaves the session just as locked.
            ftp.sendcmd(f"USER {farm.user}")
            with pytest.raises(ftplib.error_perm):
                ftp.sendcmd("PASS not-the-password")
            assert reply_to(ftp, "PASV").startswith("530 ")
            assert not listening_ports(lb.host, passive_ports(lb))
        finally:
            ftp.close()
        assert not lb.log_lines("transfer")
        assert not farm.holder_of("evil.bin")


# --------------------------------------------------------------------------- TLS


def test_auth_tls_is_answered_by_ftplb_on_a_plain_frontend() -> None:
    with farms.farm(files=FILES) as farm:
        ftp = connect(farm.lb)
        try:
            # Before login, and after: never forwarded (pyftpdlib's plain handler
            # would say 500 "not understood"; 502 is ftplb's own answer).
            for command in ("AUTH TLS", "AUTH SSL"):
                assert reply_to(ftp, command).startswith("502 "), command
            ftp.login(farm.user, farm.password)
            for command in ("AUTH TLS", "PBSZ 0", "PROT P"):
                assert reply_to(ftp, command).startswith("502 "), command
            # The control connection is still plain text and usable.
            assert ftp.voidcmd("NOOP").startswith("200")
            assert ftp.retrbinary("RETR data.bin", lambda _chunk: None).startswith("226")
        finally:
            ftp.close()


# --------------------------------------------------------------------------- secrets in logs


@pytest.mark.parametrize("log_commands", [False, True], ids=["default", "log_commands"])
def test_password_never_reaches_the_log(log_commands: bool) -> None:
    require_server("pyftpdlib")
    started: list[servers.FtpServer] = []
    roots = []
    try:
        for host in ("127.0.0.11", "127.0.0.12"):
            root = servers.make_server_root("ftplb-secret-")
            roots.append(root)
            (root / "data.bin").write_bytes(CONTENT)
            started.append(servers.start_pyftpdlib(host, free_port(host), root, "ftptest", SECRET))
        port = free_port()
        text = simple_config(
            [s.address for s in started],
            port=port,
            defaults=f"log_commands = {'true' if log_commands else 'false'}",
        )
        with balancer(text, "127.0.0.1", port) as lb:
            farm = farms.Farm(started, lb)
            for _ in range(2):  # one session on each server
                with logged_in(farm) as ftp:
                    assert ftp.retrbinary("RETR data.bin", lambda _c: None).startswith("226")
            # A failed login, and a password sent twice in one session.
            with pytest.raises(ftplib.error_perm), logged_in(farm, password=SECRET + "x"):
                pass
            ftp = connect(lb)
            try:
                ftp.sendcmd("USER ftptest")
                ftp.sendcmd(f"PASS {SECRET}")
                reply_to(ftp, f"pass {SECRET}")  # verbs are case-insensitive
                ftp.quit()
            finally:
                ftp.close()
            # Every session has been logged (and could have leaked the secret).
            deadline = time.monotonic() + 10
            while logged_sessions(lb, "ftptest") < 4:
                assert time.monotonic() < deadline, lb.log_text()
                time.sleep(0.05)
        log = lb.log_text()
        if log_commands:
            # Commands are logged, so the masking was really put to the test.
            commands = [shlex.split(line) for line in lb.log_lines("command")]
            assert sum(any(f.upper().startswith("COMMAND=PASS") for f in c) for c in commands) >= 4
        assert SECRET not in log
        assert SECRET.rstrip("!") not in log
    finally:
        for server in started:
            server.stop()
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
