"""The PROXY protocol through a real ftplb: received from Debian's HAProxy, and sent
to servers (HAProxy with ``accept-proxy``, and a pyftpdlib server that reads the
header, since no Debian FTP server does).

Every party has its own loopback address, so each address in a log names one
party: the client 127.0.0.77 (and 127.0.0.78 to .81), the upstream HAProxy
127.0.0.50, ftplb 127.0.0.1, the downstream HAProxy 127.0.0.60.
"""

from __future__ import annotations

import asyncio
import contextlib
import ftplib
import hashlib
import io
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from ftplb.proto.addresses import HostPort
from ftplb.proto.proxy_header import ProxyHeader, build_v2
from ftplb.runtime.proxy_protocol import receive_header
from tests.integration import farms
from tests.integration.balancer import RunningBalancer, balancer, simple_config
from tests.integration.conftest import require_server
from tests.integration.haproxy import (
    haproxy_config,
    haproxy_connections,
    recorded_headers,
    start_haproxy,
    start_header_reading_server,
)
from tests.integration.servers import make_server_root, start_vsftpd
from tests.support import free_port, passive_range, wait_until

pytestmark = pytest.mark.integration

CLIENT = "127.0.0.77"
MORE_CLIENTS = ("127.0.0.78", "127.0.0.79", "127.0.0.80", "127.0.0.81")
UPSTREAM = "127.0.0.50"
DOWNSTREAM = "127.0.0.60"
CONTENT = os.urandom(64 * 1024)
SHA = hashlib.sha256(CONTENT).hexdigest()
ACCEPT = 'accept_proxy = true\nproxy_trusted = ["127.0.0.1/32"]'


def records(lb: RunningBalancer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lb.log_text().splitlines()]


def sessions(lb: RunningBalancer) -> list[dict[str, Any]]:
    return [r for r in records(lb) if r["event"] == "session"]


@contextlib.contextmanager
def ftp_from(source: str, host: str, port: int) -> Iterator[ftplib.FTP]:
    ftp = ftplib.FTP(timeout=15, source_address=(source, 0))
    ftp.connect(host, port, timeout=15)
    try:
        yield ftp
    finally:
        ftp.close()


def retr(ftp: ftplib.FTP, name: str) -> bytes:
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {name}", out.write)
    return out.getvalue()


def passive_ports(lb: RunningBalancer) -> tuple[int, int]:
    found = re.search(r'passive_ports = "(\d+)-(\d+)"', lb.config_path.read_text())
    assert found is not None
    return int(found[1]), int(found[2])


@contextlib.contextmanager
def haproxy_in_front(
    lb_port: int, passive: tuple[int, int], send_proxy: str = "send-proxy-v2"
) -> Iterator[int]:
    """A real HAProxy on UPSTREAM that forwards a control port and the passive range
    ``passive`` to ftplb on 127.0.0.1, with ``send_proxy`` on each; yields its control port."""
    first, last = passive
    port = free_port(UPSTREAM)
    upstream = start_haproxy(
        haproxy_config(
            f"""
            frontend control
                bind {UPSTREAM}:{port}
                default_backend ftplb_control
            backend ftplb_control
                server lb 127.0.0.1:{lb_port} {send_proxy}
            frontend passive
                bind {UPSTREAM}:{first}-{last}
                default_backend ftplb_passive
            backend ftplb_passive
                server lb 127.0.0.1 {send_proxy}
            """
        ),
        (UPSTREAM, port),
    )
    try:
        yield port
    finally:
        upstream.stop()


# ------------------------------------------------------------ received


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_haproxy_in_front_names_the_client_on_control_and_data(send_proxy: str) -> None:
    frontend = f'{ACCEPT}\npassive_address = "{UPSTREAM}"'
    backend = 'balance = "source"'
    defaults = 'log_format = "json"'
    with farms.farm(
        files={"f.bin": CONTENT}, frontend=frontend, backend=backend, defaults=defaults
    ) as farm:
        lb = farm.lb
        with haproxy_in_front(lb.port, passive_ports(lb), send_proxy) as port:
            with ftp_from(CLIENT, UPSTREAM, port) as ftp:
                ftp.login(farm.user, farm.password)
                ftp.voidcmd("TYPE I")
                # A data connection straight from the trusted upstream's address,
                # without a header, is refused; the client's own still works.
                _, data_port = ftplib.parse227(ftp.sendcmd("PASV"))
                with socket.create_connection(("127.0.0.1", data_port), timeout=5) as bare:
                    bare.sendall(b"no header")
                    with contextlib.suppress(ConnectionResetError):
                        assert bare.recv(1) == b""
                with socket.create_connection((UPSTREAM, data_port), 5, (CLIENT, 0)) as data:
                    assert ftp.sendcmd("RETR f.bin").startswith("150")
                    received = b""
                    while chunk := data.recv(65536):
                        received += chunk
                ftp.voidresp()
                assert hashlib.sha256(received).hexdigest() == SHA
                assert hashlib.sha256(retr(ftp, "f.bin")).hexdigest() == SHA
                ftp.quit()
            for source in (*MORE_CLIENTS, CLIENT):
                with ftp_from(source, UPSTREAM, port) as ftp:
                    ftp.login(farm.user, farm.password)
                    ftp.quit()
        count = 2 + len(MORE_CLIENTS)
        wait_until(lambda: len([s for s in sessions(lb) if s["end"] == "quit"]) == count, 10, "")

    served = [s for s in sessions(lb) if s["end"] == "quit"]
    clients = [s["client"].rsplit(":", 1)[0] for s in served]
    assert clients == [CLIENT, *MORE_CLIENTS, CLIENT]
    # balance = "source" hashes the header's address: HAProxy's own is the same for
    # every session, and would put them all on one server.
    by_client: dict[str, set[str]] = {}
    for client, session in zip(clients, served, strict=True):
        by_client.setdefault(client, set()).add(session["server"])
    assert all(len(names) == 1 for names in by_client.values()), by_client
    assert len(set().union(*by_client.values())) == 2, by_client
    transfers = [r for r in records(lb) if r["event"] == "transfer"]
    assert [(t["client"], t["result"]) for t in transfers] == [(CLIENT, 226), (CLIENT, 226)]
    (refused,) = [r for r in records(lb) if r.get("warning") == "proxy_header_refused"]
    assert (refused["peer"], refused["reason"], refused["port"]) == (
        "127.0.0.1",
        "not_proxy",
        data_port,
    )


def test_behind_an_upstream_the_sessions_spread_over_the_workers() -> None:
    # Every connection comes from HAProxy's address: steered by source address,
    # they would all reach one worker.
    frontend = f'{ACCEPT}\npassive_address = "{UPSTREAM}"'
    defaults = 'log_format = "json"\nworkers = 2'
    rounds = 4
    with farms.farm(files={"f.bin": CONTENT}, frontend=frontend, defaults=defaults) as farm:
        lb = farm.lb
        with haproxy_in_front(lb.port, passive_ports(lb)) as port:
            for _ in range(rounds):
                for source in (CLIENT, *MORE_CLIENTS):
                    with ftp_from(source, UPSTREAM, port) as ftp:
                        ftp.login(farm.user, farm.password)
                        assert hashlib.sha256(retr(ftp, "f.bin")).hexdigest() == SHA
                        ftp.quit()
        count = rounds * (1 + len(MORE_CLIENTS))
        wait_until(lambda: len([s for s in sessions(lb) if s["end"] == "quit"]) == count, 10, "")

    served = [s for s in sessions(lb) if s["end"] == "quit"]
    assert sorted({s["client"].rsplit(":", 1)[0] for s in served}) == sorted(
        [CLIENT, *MORE_CLIENTS]
    )
    # 20 sessions over two workers by the kernel's 4-tuple hash: all on one
    # worker would happen about once in half a million runs.
    assert {s["worker"] for s in served} == {0, 1}
    transfers = [r for r in records(lb) if r["event"] == "transfer"]
    assert [t["result"] for t in transfers] == [226] * count


def test_implicit_ftps_behind_haproxy_reads_each_header_before_the_handshake(
    tmp_path: Path,
) -> None:
    """Implicit FTPS with the header first, on control and data: curl through HAProxy
    gets its file, and ftplb names the client from the header."""
    ca = trustme.CA()
    pem, ca_file = tmp_path / "lb.pem", tmp_path / "ca.pem"
    ca.issue_cert(UPSTREAM).private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca.cert_pem.write_to_path(str(ca_file))
    frontend = (
        f'{ACCEPT}\npassive_address = "{UPSTREAM}"\ntls = "implicit"\ntls_certificate = "{pem}"'
    )
    with farms.farm(
        files={"f.bin": CONTENT}, frontend=frontend, defaults='log_format = "json"'
    ) as farm:
        lb = farm.lb
        got = tmp_path / "got.bin"
        with haproxy_in_front(lb.port, passive_ports(lb)) as port:
            done = subprocess.run(
                [
                    *("curl", "-sS", "--fail", "--cacert", str(ca_file)),
                    *("--interface", CLIENT, "--user", f"{farm.user}:{farm.password}"),
                    *("-o", str(got), f"ftps://{UPSTREAM}:{port}/f.bin"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256(got.read_bytes()).hexdigest() == SHA
        # A handshake straight from the trusted address, with no header first: refused.
        with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as bare:
            context = ssl.create_default_context(cafile=str(ca_file))
            with pytest.raises(OSError):  # ssl.SSLError included
                context.wrap_socket(bare, server_hostname=UPSTREAM)
        wait_until(
            lambda: "not_proxy" in [s.get("detail") for s in sessions(lb)], 10, "the refusal"
        )
    (served,) = [s for s in sessions(lb) if s["end"] != "proxy_refused"]
    assert served["client"].rsplit(":", 1)[0] == CLIENT
    transfers = [r for r in records(lb) if r["event"] == "transfer"]
    assert [(t["client"], t["result"]) for t in transfers] == [(CLIENT, 226)]


def test_connections_without_a_valid_header_or_from_untrusted_sources_are_refused() -> None:
    with farms.farm(frontend=ACCEPT, defaults='log_format = "json"') as farm:
        lb = farm.lb
        for source, sent in (
            ("127.0.0.99", b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 21\r\n"),
            ("127.0.0.1", b"USER anonymous\r\n"),
            ("127.0.0.1", b"PROXY TCP4 203.0.113.9\r\n"),
            ("127.0.0.1", b"\r\n\r\n\x00\r\nQUIT\n\x21\x99\x00\x00"),
        ):
            with socket.create_connection((lb.host, lb.port), 5, (source, 0)) as sock:
                sock.sendall(sent)
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(100) == b"", "a refused connection got a reply"
        # A valid header and the first command in one segment: both are read.
        header = build_v2(HostPort("203.0.113.9", 5555), HostPort("198.51.100.1", 21))
        with socket.create_connection((lb.host, lb.port), 5) as sock:
            sock.sendall(header + f"USER {farm.user}\r\n".encode())
            replies = b""
            while b"331" not in replies:
                chunk = sock.recv(1000)
                assert chunk, replies
                replies += chunk
            assert replies.startswith(b"220 ")
            sock.sendall(b"QUIT\r\n")
            wait_until(lambda: any(s["end"] == "quit" for s in sessions(lb)), 10, "the QUIT")
    ended = [(s["client"], s["end"], s.get("detail", "")) for s in sessions(lb)]
    for expected in (
        ("127.0.0.99", "proxy_refused", "untrusted_source"),
        ("127.0.0.1", "proxy_refused", "not_proxy"),
        ("127.0.0.1", "proxy_refused", "v1_malformed"),
        ("127.0.0.1", "proxy_refused", "v2_bad_family"),
    ):
        assert [e for e in ended if e[0].startswith(expected[0] + ":") and e[1:] == expected[1:]]
    assert ("203.0.113.9:5555", "quit", "") in ended
    assert not any(s["server"] != "-" for s in sessions(lb) if s["end"] == "proxy_refused")


# ------------------------------------------------------------ sent


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_haproxy_accept_proxy_between_ftplb_and_vsftpd_logs_the_client(version: str) -> None:
    require_server("vsftpd")
    with farms.started_servers("vsftpd", ["127.0.0.12"]) as (server,):
        port = free_port(DOWNSTREAM)
        downstream = start_haproxy(
            haproxy_config(
                f"""
                frontend from_ftplb
                    bind {DOWNSTREAM}:{port} accept-proxy
                    default_backend ftpd
                backend ftpd
                    server s1 {server.host}:{server.port}
                """
            ),
            (DOWNSTREAM, port),
        )
        try:
            lb_port = free_port()
            text = simple_config(
                [(DOWNSTREAM, port)], port=lb_port, backend=f'send_proxy = "{version}"'
            )
            with balancer(text, "127.0.0.1", lb_port) as lb:
                with ftp_from(CLIENT, lb.host, lb.port) as ftp:
                    ftp.login(server.user, server.password)
                    assert ftp.pwd()
                    ftp.quit()
                # The health probes pass through accept-proxy too: they send a header.
                wait_until(
                    lambda: any(c["ci"] == "127.0.0.1" for c in haproxy_connections(downstream)),
                    10,
                    "a health probe through HAProxy",
                )
                assert "server_down" not in lb.log_text()
            seen = haproxy_connections(downstream)
        finally:
            downstream.stop()
    (client,) = [c for c in seen if c["ci"] == CLIENT]
    assert (client["fi"], client["fp"]) == ("127.0.0.1", str(lb_port))


def tls_certificate(directory: Path) -> Path:
    pem = directory / "lb.pem"
    trustme.CA().issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    return pem


def test_a_proxy_reading_server_sees_the_client_on_control_and_data(tmp_path: Path) -> None:
    require_server("pyftpdlib")
    root = make_server_root("ftplb-proxy-root-")
    (root / "f.bin").write_bytes(CONTENT)
    server, record = start_header_reading_server("127.0.0.13", free_port("127.0.0.13"), root)
    try:
        lb_port = free_port()
        # Routing on USER: the client's AUTH TLS is over before the server is picked,
        # so the version 2 header can tell the server about it.
        text = simple_config(
            [(server.host, server.port)],
            port=lb_port,
            frontend=f'tls = "explicit"\ntls_certificate = "{tls_certificate(tmp_path)}"',
            backend='balance = "user"\nsend_proxy = "v2"\nsend_proxy_data = true',
            defaults='log_format = "json"',
        )
        with balancer(text, "127.0.0.1", lb_port) as lb:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            ftp = ftplib.FTP_TLS(context=context, timeout=15, source_address=(CLIENT, 0))
            ftp.connect(lb.host, lb.port, timeout=15)
            ftp.host = "ftp.example"  # the SNI that AUTH TLS sends (ftplib takes it from here)
            try:
                ftp.login(server.user, server.password)
                ftp.prot_p()
                assert hashlib.sha256(retr(ftp, "f.bin")).hexdigest() == SHA
                ftp.storbinary("STOR up.bin", io.BytesIO(CONTENT))
                ftp.quit()
            finally:
                ftp.close()
            wait_until(lambda: any(s["end"] == "quit" for s in sessions(lb)), 10, "the QUIT")
        assert hashlib.sha256((root / "up.bin").read_bytes()).hexdigest() == SHA
        ours = [h for h in recorded_headers(record) if h.get("source") == CLIENT]
        control, *data = ours
        assert control["conn"] == "control"
        assert (control["version"], control["destination"]) == (2, f"127.0.0.1:{lb_port}")
        version, cipher, server_name = control["tls"]
        assert (version[:6], server_name) == ("TLSv1.", "ftp.example")
        assert cipher
        assert [h["conn"] for h in data] == ["data", "data"], ours
        assert not [h for h in recorded_headers(record) if "problem" in h]
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------ mode = "tcp"


def tcp_config(server: tuple[str, int], ranges: str, port: int, frontend: str, backend: str) -> str:
    return f"""
[defaults]
timeout_connect = "2s"
log_format = "json"

[[frontends]]
name = "tcp"
bind = ["127.0.0.1:{port}"]
mode = "tcp"
backend = "pool"
{frontend}

[[backends]]
name = "pool"
health = {{ type = "tcp", interval = "500ms", rise = 1, fall = 2, timeout = "1s" }}
{backend}

[[backends.servers]]
name = "s1"
address = "{server[0]}:{server[1]}"
passive_ports = "{ranges}"
"""


def test_tcp_mode_receives_the_header_on_control_and_data_from_haproxy() -> None:
    require_server("vsftpd")
    ports = passive_range(3, bindable=True)
    first, last = ports.split("-")
    root = make_server_root("ftplb-proxy-tcp-")
    (root / "f.bin").write_bytes(CONTENT)
    (root / "f.bin").chmod(0o644)
    extra = {
        "pasv_enable": "YES",
        "pasv_address": UPSTREAM,
        "pasv_addr_resolve": "NO",
        "pasv_min_port": first,
        "pasv_max_port": last,
    }
    server = start_vsftpd("127.0.0.12", free_port("127.0.0.12"), root, extra_config=extra)
    try:
        lb_port = free_port()
        text = tcp_config(server.address, ports, lb_port, ACCEPT, "")
        with balancer(text, "127.0.0.1", lb_port) as lb:
            passive = (int(first), int(last))
            with (
                haproxy_in_front(lb_port, passive) as port,
                ftp_from(CLIENT, UPSTREAM, port) as ftp,
            ):
                ftp.login(server.user, server.password)
                assert hashlib.sha256(retr(ftp, "f.bin")).hexdigest() == SHA
                ftp.quit()
            wait_until(lambda: any(r["event"] == "data" for r in records(lb)), 10, "the data line")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    # HAProxy's own readiness check came through too, named as 127.0.0.1.
    (served,) = [s for s in sessions(lb) if s["client"].startswith(f"{CLIENT}:")]
    assert (served["server"], served["end"]) == ("s1", "closed")
    (data,) = [r for r in records(lb) if r["event"] == "data"]
    assert (data["client"].rsplit(":", 1)[0], data["end"]) == (CLIENT, "closed")


def test_tcp_mode_sends_the_header_on_control_and_data() -> None:
    require_server("pyftpdlib")
    ports = passive_range(3, bindable=True)
    root = make_server_root("ftplb-proxy-tcp-")
    (root / "f.bin").write_bytes(CONTENT)
    host = "127.0.0.13"
    server, record = start_header_reading_server(host, free_port(host), root, ("127.0.0.1", ports))
    try:
        lb_port = free_port()
        backend = 'send_proxy = "v1"\nsend_proxy_data = true'
        with (
            balancer(tcp_config(server.address, ports, lb_port, "", backend), "127.0.0.1", lb_port),
            ftp_from(CLIENT, "127.0.0.1", lb_port) as ftp,
        ):
            ftp.login(server.user, server.password)
            assert hashlib.sha256(retr(ftp, "f.bin")).hexdigest() == SHA
            ftp.quit()
        ours = [h for h in recorded_headers(record) if h.get("source") == CLIENT]
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert [(h["conn"], h["version"]) for h in ours] == [("control", 1), ("data", 1)], ours
    assert ours[0]["destination"] == f"127.0.0.1:{lb_port}"


# ------------------------------------------------------------ reading a header off a socket


async def test_a_header_in_pieces_is_read_and_the_bytes_after_it_stay() -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        header = build_v2(HostPort("192.0.2.7", 4000), HostPort("192.0.2.1", 21))
        pieces = (header[:5], header[5:20], header[20:] + b"upload bytes")

        async def send_slowly() -> None:
            for piece in pieces:
                theirs.sendall(piece)
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(send_slowly())
        got = await receive_header(loop, ours, 5)
        await sender
        assert isinstance(got, ProxyHeader)
        assert (got.source, got.length) == (HostPort("192.0.2.7", 4000), len(header))
        assert ours.recv(100) == b"upload bytes"


@pytest.mark.parametrize(
    ("sent", "close", "reason"),
    [
        (b"", True, "closed_before_header"),
        (b"PROXY TCP4 ", True, "closed_before_header"),
        (b"PROXY TCP4 ", False, "no_header_in_time"),
        (b"GET / HTTP/1.0\r\n", False, "not_proxy"),
    ],
)
async def test_no_header_on_a_socket_is_a_reason(sent: bytes, close: bool, reason: str) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.sendall(sent)
        if close:
            theirs.shutdown(socket.SHUT_WR)
        assert await receive_header(asyncio.get_running_loop(), ours, 0.3) == reason
