"""``mode = "tcp"``: real servers and clients through a passthrough frontend.

The servers advertise the balancer's address and their own passive range, as
tcp mode requires. Every client runs from a source address of its own, so the
session log line of that address names the server that owned the session, and
an upload must be found on exactly that server's disk. A data connection
relayed to the wrong server would fail the transfer or put the file elsewhere.
Clients use the address in 227 replies, so PASV really goes through the
balancer's ports.

The servers also offer TLS with a certificate from a test CA, so explicit FTPS
runs end to end through the same frontend. Tests that need other settings run
a balancer of their own, in this process (to look at its pools) or as a
process, on another loopback address: EPSV leads data back to that address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import hashlib
import io
import itertools
import os
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from ftplb.balancer import Balancer, StartupError
from ftplb.config.load import load_config_text
from ftplb.runtime.logs import EventLog
from tests.integration import clients, servers
from tests.integration.balancer import RunningBalancer, balancer, log_fields
from tests.integration.conftest import require_ipv6, require_server
from tests.integration.servers import FtpServer
from tests.support import free_port, passive_range, wait_until

pytestmark = pytest.mark.integration

SIZE = 10 * 1024 * 1024
LB_HOST = "127.0.0.1"
SERVER_HOSTS = {
    "vsftpd": ("127.0.0.51", "127.0.0.52"),
    "pureftpd": ("127.0.0.61", "127.0.0.62"),
    "proftpd": ("127.0.0.67", "127.0.0.68"),
}
# One source address per client run (see the module docstring).
_SOURCES = (f"127.0.9.{n}" for n in itertools.cycle(range(1, 255)))

CLIENT_MODES = [
    ("curl", "pasv"),
    ("curl", "epsv"),
    ("lftp", "pasv"),
    ("lftp", "epsv"),
    ("ftplib", "pasv"),
    ("ftplib", "epsv"),
]
EXPECTED_VERB = {"pasv": "PASV", "epsv": "EPSV"}


def next_source() -> str:
    return next(_SOURCES)


# ---------------------------------------------------------------------------
# servers and balancers


def start_server(
    kind: str, host: str, ports: str, root: Path, tls_pem: Path | None = None
) -> servers.FtpServer:
    """A ``kind`` server that advertises the balancer's address and the range ``ports``."""
    first, last = ports.split("-")
    port = free_port(host)
    if kind == "vsftpd":
        extra = {
            "pasv_enable": "YES",
            "pasv_address": LB_HOST,
            "pasv_addr_resolve": "NO",
            "pasv_min_port": first,
            "pasv_max_port": last,
        }
        if tls_pem is not None:
            extra |= {
                "ssl_enable": "YES",
                "rsa_cert_file": str(tls_pem),
                "rsa_private_key_file": str(tls_pem),
                # vsftpd 3.0.3 defaults to DES-CBC3-SHA, which OpenSSL 3 refuses.
                "ssl_ciphers": "HIGH",
                # Plain clients stay welcome; curl --ssl-reqd insists on TLS itself.
                "force_local_logins_ssl": "NO",
                "force_local_data_ssl": "NO",
            }
        return servers.start_vsftpd(host, port, root, extra_config=extra)
    if kind == "pureftpd":
        args = ["-P", LB_HOST, "-p", f"{first}:{last}"]
        if tls_pem is not None:
            args += ["-Y", "1", "-2", str(tls_pem)]  # TLS optional; cert and key in one file
        return servers.start_pureftpd(host, port, root, extra_args=args)
    if kind == "proftpd":
        directives = {"MasqueradeAddress": LB_HOST, "PassivePorts": f"{first} {last}"}
        if tls_pem is not None:
            directives |= {
                "LoadModule": "mod_tls.c",
                "TLSEngine": "on",
                # One PEM file holds both; each loader skips the other's block.
                "TLSRSACertificateFile": str(tls_pem),
                "TLSRSACertificateKeyFile": str(tls_pem),
                "TLSRequired": "off",
                "TLSProtocol": "TLSv1.2 TLSv1.3",
                "TLSVerifyClient": "off",
            }
        return servers.start_proftpd(host, port, root, extra_config=directives)
    raise ValueError(kind)


def tcp_config(
    group: list[servers.FtpServer],
    ranges: list[str],
    *,
    host: str,
    port: int,
    defaults: str = "",
    frontend: str = "",
    health: str = '{ type = "tcp", interval = "200ms", rise = 1, fall = 1, timeout = "1s" }',
) -> str:
    entries = "\n".join(
        f'[[backends.servers]]\nname = "s{i}"\naddress = "{s.host}:{s.port}"\n'
        f'passive_ports = "{r}"\n'
        for i, (s, r) in enumerate(zip(group, ranges, strict=True), start=1)
    )
    return f"""
[defaults]
timeout_connect = "2s"
# Were a byte of the control stream ever parsed, a command line would show up.
log_commands = true
{defaults}

[[frontends]]
name = "tcp"
bind = ["{host}:{port}"]
mode = "tcp"
backend = "pool"
{frontend}

[[backends]]
name = "pool"
balance = "roundrobin"
health = {health}

{entries}
"""


@dataclass
class TcpFarm:
    kind: str
    servers: list[servers.FtpServer]
    ranges: list[str]
    lb: RunningBalancer
    big_sha: str
    ca_pem: Path

    @property
    def user(self) -> str:
        return self.servers[0].user

    @property
    def password(self) -> str:
        return self.servers[0].password

    def server_named(self, name: str) -> FtpServer:
        return self.servers[int(name.removeprefix("s")) - 1]


@contextlib.contextmanager
def server_pair(
    kind: str,
    hosts: tuple[str, str],
    seed: Path | None = None,
    tls_pem: Path | None = None,
) -> Iterator[tuple[list[servers.FtpServer], list[str]]]:
    require_server(kind)
    ranges = [passive_range(bindable=True), passive_range(bindable=True)]
    started: list[servers.FtpServer] = []
    try:
        for host, ports in zip(hosts, ranges, strict=True):
            root = servers.make_server_root(f"ftplb-tcp-{kind}-")
            if seed is not None:
                shutil.copyfile(seed, root / "big.bin")
                (root / "big.bin").chmod(0o644)
            started.append(start_server(kind, host, ports, root, tls_pem))
        yield started, ranges
    finally:
        for server in started:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="module", params=list(SERVER_HOSTS))
def farm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TcpFarm]:
    kind: str = request.param
    work = tmp_path_factory.mktemp(f"tcp-{kind}")
    seed = work / "big.bin"
    big_sha = clients.make_random_file(seed, SIZE)
    # The servers' certificate names the balancer's address: through a
    # passthrough frontend the client talks TLS with the server itself.
    ca = trustme.CA()
    tls_pem = work / "server.pem"
    ca.issue_cert(LB_HOST).private_key_and_cert_chain_pem.write_to_path(str(tls_pem))
    ca_pem = work / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    with server_pair(kind, SERVER_HOSTS[kind], seed, tls_pem) as (group, ranges):
        port = free_port(LB_HOST)
        text = tcp_config(group, ranges, host=LB_HOST, port=port)
        with balancer(text, LB_HOST, port) as lb:
            yield TcpFarm(kind, group, ranges, lb, big_sha, ca_pem)
        # Nothing of the control streams was parsed: no command was ever logged.
        assert not lb.log_lines("command"), lb.log_lines("command")[:3]


# ---------------------------------------------------------------------------
# log helpers


def sessions_from(log_text: str, source: str) -> list[dict[str, str]]:
    """The session log records of control connections from ``source``."""
    records = [log_fields(line) for line in log_text.splitlines() if " session " in line]
    return [r for r in records if r.get("client", "").startswith(f"{source}:")]


def owner_of(lb: RunningBalancer, source: str, count: int = 1) -> list[str]:
    """The servers of the ``count`` sessions from ``source``, once all are logged."""
    wait_until(lambda: len(sessions_from(lb.log_text(), source)) >= count, 5, f"{source} logs")
    records = sessions_from(lb.log_text(), source)
    assert len(records) == count, records
    assert all(r["mode"] == "tcp" for r in records), records
    return [r["server"] for r in records]


def assert_upload_on(farm: TcpFarm, server_name: str, name: str, sha: str) -> None:
    """``name`` is on ``server_name``'s disk with content ``sha``, and on no other."""
    holders = [s for s in farm.servers if (s.root / name).exists()]
    assert holders == [farm.server_named(server_name)], (name, server_name, holders)
    assert clients.sha256_file(holders[0].root / name) == sha


# ---------------------------------------------------------------------------
# transfers through the passthrough frontend


@pytest.mark.parametrize(("tool", "mode"), CLIENT_MODES, ids=[f"{t}-{m}" for t, m in CLIENT_MODES])
def test_list_retr_stor(farm: TcpFarm, tool: str, mode: str, tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload_sha = clients.make_random_file(upload, SIZE)
    upload_name = f"up-{uuid.uuid4().hex}.bin"
    download = tmp_path / "download.bin"
    lb = farm.lb
    if tool == "curl":
        # One session per curl run: list, download and upload each get a source.
        base = clients.ftp_url(lb.host, lb.port, "", farm.user, farm.password)
        list_from, retr_from, stor_from = next_source(), next_source(), next_source()
        listing = clients.curl_list(base, mode, list_from).check()  # type: ignore[arg-type]
        got = clients.curl_retr(base + "big.bin", download, mode, retr_from).check()  # type: ignore[arg-type]
        put = clients.curl_stor(base + upload_name, upload, mode, stor_from).check()  # type: ignore[arg-type]
        assert b"big.bin" in listing.stdout
        verbs = {*listing.data_setup_verbs, *got.data_setup_verbs, *put.data_setup_verbs}
        owner_of(lb, list_from)
        owner_of(lb, retr_from)
        (owner,) = owner_of(lb, stor_from)
    elif tool == "lftp":
        source = next_source()
        script = f"cls -1\nget big.bin -o {download}\nput {upload} -o {upload_name}\n"
        result = clients.lftp_run(
            lb.host,
            lb.port,
            farm.user,
            farm.password,
            script,
            mode,  # type: ignore[arg-type]
            source,
        ).check()
        assert b"big.bin" in result.stdout
        verbs = set(result.data_setup_verbs)
        (owner,) = owner_of(lb, source)
    else:
        source = next_source()
        with clients.ftplib_session(
            lb.host,
            lb.port,
            farm.user,
            farm.password,
            mode,  # type: ignore[arg-type]
            source,
        ) as ftp:
            assert b"big.bin" in ftp.list()
            assert ftp.retr_to("big.bin", download).startswith("226")
            assert ftp.stor(upload_name, upload).startswith("226")
            verbs = set(ftp.data_setup_verbs)
        (owner,) = owner_of(lb, source)
    assert verbs == {EXPECTED_VERB[mode]}, verbs
    assert clients.sha256_file(download) == farm.big_sha
    assert_upload_on(farm, owner, upload_name, upload_sha)


@pytest.mark.parametrize("tool", ["curl", "ftplib"])
def test_an_ipv6_client_through_a_tcp_frontend_on_ipv6(
    farm: TcpFarm, tool: str, tmp_path: Path
) -> None:
    """EPSV carries no address: the client returns to [::1], and ftplb relays to IPv4."""
    require_ipv6()
    port = free_port("::1")
    text = tcp_config(farm.servers, farm.ranges, host="[::1]", port=port)
    upload = tmp_path / "upload.bin"
    upload_sha = clients.make_random_file(upload, 1024 * 1024)
    name = f"v6-{uuid.uuid4().hex}.bin"
    download = tmp_path / "download.bin"
    with balancer(text, "::1", port) as lb:
        if tool == "curl":
            base = clients.ftp_url("::1", port, "", farm.user, farm.password)
            clients.curl_retr(base + "big.bin", download, "epsv", "::1").check()
            clients.curl_stor(base + name, upload, "epsv", "::1").check()
        else:
            with clients.ftplib_session(
                "::1", port, farm.user, farm.password, "epsv", "::1"
            ) as ftp:
                assert ftp.retr_to("big.bin", download).startswith("226")
                assert ftp.stor(name, upload).startswith("226")
        wait_until(lambda: len(lb.log_lines("data")) >= 2, 5, "both data lines")
        data = [log_fields(line) for line in lb.log_lines("data")]
    assert all(record["client"].startswith("[::1]:") for record in data), data
    assert all(record["end"] == "closed" for record in data), data
    assert clients.sha256_file(download) == farm.big_sha
    holders = [s for s in farm.servers if (s.root / name).exists()]
    assert len(holders) == 1
    assert clients.sha256_file(holders[0].root / name) == upload_sha


def test_sessions_spread_and_data_follows_each_session(farm: TcpFarm) -> None:
    placed: dict[str, str] = {}
    sources: list[str] = []
    for _ in range(4):
        source = next_source()
        sources.append(source)
        name = f"spread-{uuid.uuid4().hex}.bin"
        with clients.ftplib_session(
            farm.lb.host, farm.lb.port, farm.user, farm.password, "pasv", source
        ) as ftp:
            assert ftp.stor(name, name.encode() * 1000).startswith("226")
        (placed[name],) = owner_of(farm.lb, source)
    assert set(placed.values()) == {"s1", "s2"}, placed
    # Each data line carries the id of its client's one control session.
    for source in sources:
        (session,) = sessions_from(farm.lb.log_text(), source)
        data = [
            log_fields(line) for line in farm.lb.log_lines("data") if f"client={source}:" in line
        ]
        assert data and {d["session"] for d in data} == {session["session"]}, (session, data)
    for name, owner in placed.items():
        assert_upload_on(farm, owner, name, hashlib.sha256(name.encode() * 1000).hexdigest())


def test_a_data_connection_from_another_address_is_refused(farm: TcpFarm) -> None:
    """Port theft: only the session's own address may use its passive port."""
    source, thief = next_source(), next_source()
    with clients.ftplib_session(
        farm.lb.host, farm.lb.port, farm.user, farm.password, "pasv", source
    ) as session:
        ftp = session.ftp
        ftp.voidcmd("TYPE I")
        host, port = ftp.makepasv()
        with socket.create_connection((host, port), timeout=5, source_address=(thief, 0)) as bad:
            assert bad.recv(1) == b"", "the balancer relayed a stranger's data connection"
        # The server never saw the stranger: its port still waits for the client.
        with socket.create_connection((host, port), timeout=5, source_address=(source, 0)) as data:
            assert ftp.sendcmd("RETR big.bin").startswith("150")
            digest = hashlib.sha256()
            while chunk := data.recv(1 << 20):
                digest.update(chunk)
        assert ftp.voidresp().startswith("226")
    assert digest.hexdigest() == farm.big_sha
    refused = [
        log_fields(line)
        for line in farm.lb.log_lines("warning")
        if "warning=orphan_data_refused " in line and f"client={thief}:" in line
    ]
    assert len(refused) == 1 and refused[0]["port"] == str(port), refused


def test_explicit_ftps_end_to_end(farm: TcpFarm, tmp_path: Path) -> None:
    tls = ["--ssl-reqd", "--cacert", str(farm.ca_pem)]
    base = clients.ftp_url(farm.lb.host, farm.lb.port, "", farm.user, farm.password)
    download = tmp_path / "download.bin"
    upload = tmp_path / "upload.bin"
    upload_sha = clients.make_random_file(upload, SIZE)
    name = f"tls-{uuid.uuid4().hex}.bin"
    retr_from, stor_from = next_source(), next_source()
    got = clients.curl_retr(base + "big.bin", download, "epsv", retr_from, tls).check()
    put = clients.curl_stor(base + name, upload, "pasv", stor_from, tls).check()
    for result in (got, put):
        assert result.verbs[:1] == ("AUTH",), result.commands
        assert "PROT P" in result.commands
        # The certificate that curl verified is the server's own, signed by the
        # test CA: TLS ran between client and server, through the balancer.
        assert "SSL certificate verify ok" in result.stderr
        assert "trustme" in result.stderr
    assert clients.sha256_file(download) == farm.big_sha
    (owner,) = owner_of(farm.lb, stor_from)
    assert_upload_on(farm, owner, name, upload_sha)


# ---------------------------------------------------------------------------
# health, idleness, limits and stopping, on balancers of their own


@contextlib.asynccontextmanager
async def in_process(text: str) -> AsyncIterator[tuple[Balancer, io.StringIO]]:
    stream = io.StringIO()
    lb = Balancer(load_config_text(text), EventLog("text", stream))
    await lb.start()
    try:
        yield lb, stream
    finally:
        await lb.stop()


def ftplib_login(host: str, port: int, farm: TcpFarm, source: str) -> clients.FtplibClient:
    # EPSV: the servers advertise 127.0.0.1 in 227 replies, but these balancers
    # listen elsewhere; a 229 reply sends the client back to the control address.
    return clients.ftplib_session(host, port, farm.user, farm.password, "epsv", source)


async def test_a_down_server_takes_no_new_session_but_finishes_its_transfers(
    farm: TcpFarm, tmp_path: Path
) -> None:
    host, port = "127.0.0.2", free_port("127.0.0.2")
    text = tcp_config(farm.servers, farm.ranges, host=host, port=port, health='{ type = "none" }')
    async with in_process(text) as (lb, stream):
        pool = lb.pools["pool"]
        first = await asyncio.to_thread(ftplib_login, host, port, farm, next_source())
        try:
            (busy,) = [s for s in pool.servers if s.active == 1]
            busy.healthy = False  # what the health checker does on a failed check
            later = [
                await asyncio.to_thread(ftplib_login, host, port, farm, next_source())
                for _ in range(3)
            ]
            try:
                assert busy.active == 1
                assert [s.active for s in pool.servers if s is not busy] == [3]
                # The existing session's transfers still cross the DOWN server's ports.
                download = tmp_path / "download.bin"
                reply = await asyncio.to_thread(first.retr_to, "big.bin", download)
                assert reply.startswith("226")
                assert clients.sha256_file(download) == farm.big_sha
            finally:
                for session in later:
                    await asyncio.to_thread(session.close)
        finally:
            await asyncio.to_thread(first.close)
    data = [log_fields(line) for line in stream.getvalue().splitlines() if " data " in line]
    assert [d["server"] for d in data] == [busy.name], data
    assert int(data[0]["bytes_to_client"]) == SIZE


class PacedUpload(io.RawIOBase):
    """``chunks`` blocks of 64 KiB, one every ``interval`` seconds: a slow, steady upload."""

    def __init__(self, chunks: int, interval: float) -> None:
        self.left = chunks
        self.interval = interval
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.left == 0:
            return b""
        self.left -= 1
        time.sleep(self.interval)
        block = os.urandom(64 * 1024)
        self.digest.update(block)
        return block


def idle_config(farm: TcpFarm, idle: str) -> tuple[str, int, str]:
    """(host, port, config) of a balancer of its own whose idle timeout is ``idle``."""
    host, port = "127.0.0.2", free_port("127.0.0.2")
    text = tcp_config(
        farm.servers,
        farm.ranges,
        host=host,
        port=port,
        defaults=f'timeout_client = "{idle}"\ntimeout_server = "{idle}"',
        health='{ type = "none" }',
    )
    return host, port, text


async def test_idle_control_is_closed_but_not_during_a_transfer(farm: TcpFarm) -> None:
    host, port, text = idle_config(farm, "600ms")
    async with in_process(text) as (_, stream):
        # An upload of about 2 s that never pauses for long: its control
        # connection carries nothing meanwhile, three times the idle timeout.
        busy_source, idle_source = next_source(), next_source()
        name = f"paced-{uuid.uuid4().hex}.bin"
        paced = PacedUpload(64, 0.03)
        busy = await asyncio.to_thread(ftplib_login, host, port, farm, busy_source)
        try:
            started = time.monotonic()
            reply = await asyncio.to_thread(busy.ftp.storbinary, f"STOR {name}", paced, 65536)
            assert reply.startswith("226")
            assert time.monotonic() - started > 1.8
        finally:
            await asyncio.to_thread(busy.close)
        idle = await asyncio.to_thread(ftplib_login, host, port, farm, idle_source)
        try:
            await asyncio.sleep(2.0)
            with pytest.raises((EOFError, OSError, ftplib.Error)):
                await asyncio.to_thread(idle.ftp.voidcmd, "NOOP")
        finally:
            await asyncio.to_thread(idle.close)
        await asyncio.sleep(0.1)
    (uploader,) = sessions_from(stream.getvalue(), busy_source)
    assert uploader["end"] == "closed", uploader
    assert_upload_on(farm, uploader["server"], name, paced.digest.hexdigest())
    (record,) = sessions_from(stream.getvalue(), idle_source)
    assert record["end"] == "idle_timeout", record
    assert 0.6 <= float(record["duration"]) < 2.0, record


async def test_a_download_read_slowly_after_its_eof_ends_as_closed(farm: TcpFarm) -> None:
    """The client has every byte and the EOF, but closes its data socket late."""
    # Long enough that no stall of a loaded machine ends the transfer itself.
    host, port, text = idle_config(farm, "1s")
    async with in_process(text) as (_, stream):
        session = await asyncio.to_thread(ftplib_login, host, port, farm, next_source())
        try:
            await asyncio.to_thread(session.ftp.voidcmd, "TYPE I")
            conn = await asyncio.to_thread(session.ftp.transfercmd, "RETR big.bin")
            with conn:
                digest = hashlib.sha256()
                while chunk := await asyncio.to_thread(conn.recv, 1 << 20):
                    digest.update(chunk)
                # Past the relay's idle timeout with the data socket still open.
                await asyncio.sleep(2.5)
            assert digest.hexdigest() == farm.big_sha
            assert (await asyncio.to_thread(session.ftp.voidresp)).startswith("226")
        finally:
            await asyncio.to_thread(session.close)
    data = [log_fields(line) for line in stream.getvalue().splitlines() if " data " in line]
    assert len(data) == 1, data
    assert data[0]["end"] == "closed", data[0]
    assert int(data[0]["bytes_to_client"]) == SIZE


async def test_max_connections_closes_the_extra_client(farm: TcpFarm) -> None:
    host, port = "127.0.0.2", free_port("127.0.0.2")
    text = tcp_config(
        farm.servers,
        farm.ranges,
        host=host,
        port=port,
        frontend="max_connections = 2",
        health='{ type = "none" }',
    )

    def banner(source: str) -> bytes:
        with socket.create_connection((host, port), timeout=5, source_address=(source, 0)) as s:
            return s.recv(100)

    async with in_process(text) as (lb, stream):
        (frontend,) = lb.passthroughs
        held = [
            await asyncio.to_thread(ftplib_login, host, port, farm, next_source()) for _ in range(2)
        ]
        try:
            extra = next_source()
            assert await asyncio.to_thread(banner, extra) == b""
        finally:
            await asyncio.to_thread(held.pop().close)
        try:
            deadline = time.monotonic() + 5
            while len(frontend.sessions) > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert (await asyncio.to_thread(banner, next_source())).startswith(b"220")
        finally:
            for session in held:
                await asyncio.to_thread(session.close)
    (record,) = sessions_from(stream.getvalue(), extra)
    assert (record["server"], record["end"]) == ("-", "limit"), record


def test_stop_ends_sessions_and_transfers_and_exits_0(farm: TcpFarm) -> None:
    host, port = "127.0.0.3", free_port("127.0.0.3")
    # The client reads nothing while ftplb stops: the drain ends only by the timeout.
    text = tcp_config(
        farm.servers, farm.ranges, host=host, port=port, defaults='timeout_shutdown = "1s"'
    )
    with balancer(text, host, port) as lb:
        session = ftplib_login(host, port, farm, next_source())
        try:
            session.ftp.voidcmd("TYPE I")
            data = session.ftp.transfercmd("RETR big.bin")
            with data:
                assert len(data.recv(65536)) > 0  # the transfer is under way
                started = time.monotonic()
                assert lb.stop() == 0
                assert time.monotonic() - started < 5
                data.settimeout(5)
                with contextlib.suppress(ConnectionResetError):
                    while data.recv(1 << 20):
                        pass
            # The control connection ends too (after a 226, if the server was quick).
            control = session.ftp.sock
            assert control is not None, "ftplib closed the control connection itself"
            control.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                for _ in range(10):
                    if not control.recv(4096):
                        break
                else:
                    raise AssertionError("the control connection stayed open")
        finally:
            session.ftp.close()
    ends = {log_fields(line)["end"] for line in lb.log_lines("session") if "server=s" in line}
    assert "shutdown" in ends, lb.log_lines("session")
    data_ends = [log_fields(line)["end"] for line in lb.log_lines("data")]
    assert data_ends == ["shutdown"], data_ends


def test_a_stopped_server_is_marked_down_and_skipped() -> None:
    host, port = "127.0.0.4", free_port("127.0.0.4")
    with server_pair("vsftpd", ("127.0.0.71", "127.0.0.72")) as (group, ranges):
        text = tcp_config(group, ranges, host=host, port=port)
        with balancer(text, host, port) as lb:
            user, password = group[0].user, group[0].password

            def session(source: str) -> None:
                with clients.ftplib_session(host, port, user, password, "epsv", source) as ftp:
                    ftp.list()

            before = [next_source() for _ in range(2)]
            for source in before:
                session(source)
            assert sorted(owner_of(lb, s)[0] for s in before) == ["s1", "s2"]
            group[0].stop()
            wait_until(
                lambda: any(
                    "server=s1" in line and "state=DOWN" in line for line in lb.log_lines("health")
                ),
                5,
                "s1 DOWN",
            )
            down_at = len(lb.log_text())
            after = [next_source() for _ in range(4)]
            for source in after:
                session(source)
            assert [owner_of(lb, s)[0] for s in after] == ["s2"] * 4
            # Health, not redispatch, kept the sessions away: no connect was tried.
            assert "warning=connect_failed " not in lb.log_text()[down_at:]


async def test_a_passive_port_in_use_stops_the_start_and_frees_the_others() -> None:
    host = "127.0.0.5"
    ranges = [passive_range(bindable=True), passive_range(bindable=True)]
    taken = int(ranges[1].split("-")[0]) + 50
    text = f"""
[[frontends]]
name = "tcp"
bind = ["{host}:{free_port(host)}"]
mode = "tcp"
backend = "pool"

[[backends]]
name = "pool"
health = {{ type = "none" }}

[[backends.servers]]
name = "s1"
address = "127.0.0.81:21"
passive_ports = "{ranges[0]}"

[[backends.servers]]
name = "s2"
address = "127.0.0.82:21"
passive_ports = "{ranges[1]}"
"""
    lb = Balancer(load_config_text(text), EventLog("text", io.StringIO()))
    with (
        socket.create_server((host, taken)),
        pytest.raises(StartupError, match=f"cannot listen on {host}:{taken}: "),
    ):
        await lb.start()
    # Every listener opened before the failure was closed again.
    for ports in ranges:
        first, last = (int(p) for p in ports.split("-"))
        for port in range(first, last + 1):
            with socket.create_server((host, port)):
                pass


async def test_without_a_reachable_server_the_client_is_closed_after_redispatch() -> None:
    host, port = "127.0.0.5", free_port("127.0.0.5")
    # Nothing listens on these: each connect is refused at once.
    dead = [("127.0.0.81", free_port("127.0.0.81")), ("127.0.0.82", free_port("127.0.0.82"))]
    entries = "\n".join(
        f'[[backends.servers]]\nname = "s{i}"\naddress = "{h}:{p}"\n'
        f'passive_ports = "{passive_range(bindable=True)}"\n'
        for i, (h, p) in enumerate(dead, start=1)
    )
    text = f"""
[defaults]
retries = 2

[[frontends]]
name = "tcp"
bind = ["{host}:{port}"]
mode = "tcp"
backend = "pool"

[[backends]]
name = "pool"
health = {{ type = "none" }}

{entries}
"""

    def first_bytes() -> bytes:
        source = next_source()
        with socket.create_connection((host, port), timeout=5, source_address=(source, 0)) as s:
            return s.recv(100)

    async with in_process(text) as (_, stream):
        assert await asyncio.to_thread(first_bytes) == b""
        await asyncio.sleep(0.05)
    log = stream.getvalue()
    failed = [
        log_fields(line)["server"] for line in log.splitlines() if "warning=connect_failed " in line
    ]
    assert sorted(failed) == ["s1", "s2"], log  # redispatch: each server tried once
    (record,) = [log_fields(line) for line in log.splitlines() if " session " in line]
    # The reason is that of the last attempt.
    assert (record["server"], record["end"]) == ("-", "no_server"), record
    assert record["detail"].startswith(f"{failed[-1]}: "), record
