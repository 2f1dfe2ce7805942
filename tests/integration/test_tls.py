"""FTPS through a real ``ftplb run``: termination, re-encryption, refusals and health probes.

Certificates come from trustme: one CA, one certificate for every loopback
address used here (ftplb's own and the servers'), so clients verify ftplb and
ftplb verifies the servers, each against the same CA file.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ftplb.config.load import load_config_text
from ftplb.runtime.probes import probe
from ftplb.runtime.tls import backend_tls
from tests.integration import servers
from tests.integration.balancer import RunningBalancer, balancer, simple_config
from tests.integration.clients import (
    CLIENT_SOURCE_IPV4,
    DataMode,
    LftpMode,
    curl_list,
    curl_retr,
    curl_stor,
    ftp_url,
    make_random_file,
    sha256_file,
)
from tests.integration.conftest import require_ipv6
from tests.integration.farms import started_servers
from tests.integration.tls_peers import (
    BIG,
    ModeFtpTls,
    Pki,
    curl_tls,
    ftplib_round_trip,
    ftps_session,
    ftps_url,
    lftp_tls_run,
    make_pki,
    tls_frontend,
    tls_server,
)
from tests.integration.workers_farm import records, wait_ready
from tests.support import free_port

pytestmark = pytest.mark.integration

LB_HOST = "127.0.0.1"
PY_HOSTS = ["127.0.0.61"]
VS_HOSTS = ["127.0.0.62"]
PRO_HOSTS = ["127.0.0.63"]
TLS_PY_HOST = "127.0.0.64"
TLS_VS_HOST = "127.0.0.65"
IMPLICIT_VS_HOST = "127.0.0.66"
ALL_HOSTS = [LB_HOST, "::1", "localhost", *PY_HOSTS, *VS_HOSTS, *PRO_HOSTS]
ALL_HOSTS += [TLS_PY_HOST, TLS_VS_HOST, IMPLICIT_VS_HOST]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ALL_HOSTS)


@contextlib.contextmanager
def tls_balancer(
    server_list: list[servers.FtpServer], frontend: str = "", backend: str = "", health: str = ""
) -> Iterator[RunningBalancer]:
    port = free_port(LB_HOST)
    options: dict[str, str] = {"frontend": frontend, "backend": backend}
    if health:
        options["health"] = health
    text = simple_config([s.address for s in server_list], port=port, host=LB_HOST, **options)
    with balancer(text, LB_HOST, port) as lb:
        yield lb


# ---------------------------------------------------------------------------
# explicit FTPS terminated by ftplb, plain to the servers (offload)


@pytest.mark.parametrize("kind", ["pyftpdlib", "vsftpd"])
@pytest.mark.parametrize("mode", ["epsv", "pasv"])
def test_offload_with_curl(kind: str, mode: DataMode, pki: Pki, tmp_path: Path) -> None:
    hosts = PY_HOSTS if kind == "pyftpdlib" else VS_HOSTS
    with (
        started_servers(kind, hosts) as group,
        tls_balancer(group, frontend=tls_frontend(pki)) as lb,
    ):
        # Passive only: curl 7.88 sends active-mode FTPS data in the clear.
        server = group[0]
        source = None
        tls = curl_tls(pki)
        src = tmp_path / "up.bin"
        digest = make_random_file(src, BIG)
        url = ftp_url(lb.host, lb.port, "big.bin", server.user, server.password)
        stored = curl_stor(url, src, mode, source, tls).check()
        assert {"AUTH", "PBSZ", "PROT"} <= set(stored.verbs), stored.commands
        assert "PROT P" in stored.commands
        expected_verb = {"epsv": "EPSV", "pasv": "PASV"}[mode]
        assert expected_verb in stored.data_setup_verbs
        assert (server.root / "big.bin").stat().st_size == BIG
        dest = tmp_path / "down.bin"
        curl_retr(url, dest, mode, source, tls).check()
        assert sha256_file(dest) == digest
        listing = curl_list(
            ftp_url(lb.host, lb.port, "", server.user, server.password), mode, source, tls
        ).check()
        assert b"big.bin" in listing.stdout
        if kind == "vsftpd":
            # vsftpd logs every command: ftplb kept AUTH, PBSZ and PROT to itself.
            commands = [line for line in server.log_text().splitlines() if "FTP command" in line]
            assert any('"STOR big.bin"' in line for line in commands), commands
            assert not any(verb in line for line in commands for verb in ("AUTH", "PBSZ", "PROT"))


@pytest.mark.parametrize("kind", ["pyftpdlib", "vsftpd"])
@pytest.mark.parametrize("mode", ["epsv", "pasv", "port"])
def test_offload_with_lftp(kind: str, mode: LftpMode, pki: Pki, tmp_path: Path) -> None:
    hosts = PY_HOSTS if kind == "pyftpdlib" else VS_HOSTS
    with (
        started_servers(kind, hosts) as group,
        tls_balancer(group, frontend=tls_frontend(pki)) as lb,
    ):
        server = group[0]
        src = tmp_path / "up.bin"
        digest = make_random_file(src, BIG)
        dest = tmp_path / "down.bin"
        commands = f"put {src} -o big.bin\nget big.bin -o {dest}\nls"
        source = CLIENT_SOURCE_IPV4 if mode == "port" else None
        code, stderr, sent = lftp_tls_run(
            pki, lb.host, lb.port, server.user, server.password, commands, mode, source
        )
        assert code == 0, stderr[-3000:]
        verbs = [c.split(" ", 1)[0].upper() for c in sent]
        assert "AUTH" in verbs and "PROT" in verbs, sent
        assert {"epsv": "EPSV", "pasv": "PASV", "port": "PORT"}[mode] in verbs, sent
        assert sha256_file(dest) == digest


@pytest.mark.parametrize("kind", ["pyftpdlib", "vsftpd"])
@pytest.mark.parametrize("mode", ["epsv", "pasv", "port"])
def test_offload_with_ftplib(kind: str, mode: DataMode, pki: Pki, tmp_path: Path) -> None:
    hosts = PY_HOSTS if kind == "pyftpdlib" else VS_HOSTS
    with (
        started_servers(kind, hosts) as group,
        tls_balancer(group, frontend=tls_frontend(pki)) as lb,
    ):
        server = group[0]
        source = CLIENT_SOURCE_IPV4 if mode == "port" else None
        with ftps_session(
            pki, lb.host, lb.port, server.user, server.password, mode, source=source
        ) as ftp:
            ftplib_round_trip(ftp, tmp_path, "f.bin")


def test_offload_with_a_separate_key_file(pki: Pki, tmp_path: Path) -> None:
    frontend = f'tls = "explicit"\ntls_certificate = "{pki.cert_only}"\ntls_key = "{pki.key_only}"'
    with started_servers("pyftpdlib", PY_HOSTS) as group, tls_balancer(group, frontend) as lb:
        server = group[0]
        with ftps_session(pki, lb.host, lb.port, server.user, server.password) as ftp:
            assert ftp.sendcmd("NOOP").startswith("200")


def test_feat_lists_tls_from_ftplb(pki: Pki) -> None:
    with (
        started_servers("pyftpdlib", PY_HOSTS) as group,
        tls_balancer(group, frontend=tls_frontend(pki)) as lb,
        ftplib.FTP() as ftp,
    ):
        ftp.connect(lb.host, lb.port, timeout=10)
        lines = [line.strip() for line in ftp.sendcmd("FEAT").splitlines()[1:-1]]
        assert {"AUTH TLS", "PBSZ", "PROT"} <= set(lines), lines


def test_clear_sessions_still_work_when_tls_is_optional(pki: Pki) -> None:
    with (
        started_servers("pyftpdlib", PY_HOSTS) as group,
        tls_balancer(group, frontend=tls_frontend(pki)) as lb,
        ftplib.FTP() as ftp,
    ):
        ftp.connect(lb.host, lb.port, timeout=10)
        ftp.login(group[0].user, group[0].password)
        assert ftp.nlst() == []


# ---------------------------------------------------------------------------
# implicit FTPS


def test_explicit_over_ipv6(pki: Pki, tmp_path: Path) -> None:
    require_ipv6()
    with started_servers("pyftpdlib", PY_HOSTS) as group:
        port = free_port("::1")
        text = simple_config(
            [s.address for s in group], port=port, host="::1", frontend=tls_frontend(pki)
        )
        with (
            balancer(text, "::1", port) as lb,
            ftps_session(pki, "::1", lb.port, group[0].user, group[0].password) as ftp,
        ):
            ftp.storbinary("STOR six.txt", io.BytesIO(b"over IPv6\n"))
            assert ftp.nlst() == ["six.txt"]


def test_implicit_with_curl_and_ftplib(pki: Pki, tmp_path: Path) -> None:
    with (
        started_servers("pyftpdlib", PY_HOSTS) as group,
        tls_balancer(group, frontend=tls_frontend(pki, "implicit")) as lb,
    ):
        server = group[0]
        src = tmp_path / "up.bin"
        digest = make_random_file(src, BIG)
        url = ftps_url(lb.host, lb.port, "big.bin", server.user, server.password)
        tls = curl_tls(pki, implicit=True)
        curl_stor(url, src, "epsv", None, tls).check()
        dest = tmp_path / "down.bin"
        curl_retr(url, dest, "pasv", None, tls).check()
        assert sha256_file(dest) == digest
        with ftps_session(
            pki, lb.host, lb.port, server.user, server.password, "pasv", implicit=True
        ) as ftp:
            ftplib_round_trip(ftp, tmp_path, "g.bin")
            with pytest.raises(ftplib.error_perm, match=r"^503"):
                ftp.sendcmd("AUTH TLS")


# ---------------------------------------------------------------------------
# re-encryption towards the servers


def backend_tls_lines(pki: Pki, mode: str = "explicit") -> str:
    return f'tls = "{mode}"\ntls_ca = "{pki.ca}"'


@pytest.mark.parametrize(
    ("kind", "host"),
    [("vsftpd", TLS_VS_HOST), ("proftpd", PRO_HOSTS[0]), ("pyftpdlib", TLS_PY_HOST)],
)
def test_reencrypt_explicit(kind: str, host: str, pki: Pki, tmp_path: Path) -> None:
    with (
        tls_server(kind, pki, host) as server,
        tls_balancer([server], frontend=tls_frontend(pki), backend=backend_tls_lines(pki)) as lb,
    ):
        for mode in ("epsv", "port"):
            source = CLIENT_SOURCE_IPV4 if mode == "port" else None
            with ftps_session(
                pki, lb.host, lb.port, server.user, server.password, mode, source=source
            ) as ftp:
                ftplib_round_trip(ftp, tmp_path, f"{mode}.bin")
        # A client in the clear still gets TLS towards the server.
        with ftplib.FTP() as ftp:
            ftp.connect(lb.host, lb.port, timeout=10)
            ftp.login(server.user, server.password)
            assert sorted(ftp.nlst()) == ["epsv.bin", "port.bin"]
        assert "did not resume" not in lb.log_text()


@pytest.mark.parametrize(
    "backend",
    [
        'tls = "explicit"\ntls_ca = "{ca}"\ntls_server_name = "localhost"',
        'tls = "explicit"\ntls_verify = false',
    ],
    ids=["server-name", "no-verify"],
)
def test_reencrypt_with_a_server_name_or_without_verification(
    backend: str, pki: Pki, tmp_path: Path
) -> None:
    with (
        tls_server("vsftpd", pki, TLS_VS_HOST) as server,
        tls_balancer([server], backend=backend.format(ca=pki.ca), health='{ type = "none" }') as lb,
        ftplib.FTP() as ftp,
    ):
        ftp.connect(lb.host, lb.port, timeout=10)
        ftp.login(server.user, server.password)
        ftp.storbinary("STOR small.txt", io.BytesIO(b"hello\n"))
        assert ftp.nlst() == ["small.txt"]


def test_reencrypt_implicit_to_vsftpd(pki: Pki, tmp_path: Path) -> None:
    with (
        tls_server("vsftpd", pki, IMPLICIT_VS_HOST, implicit_ssl="YES") as server,
        tls_balancer(
            [server],
            frontend=tls_frontend(pki),
            backend=backend_tls_lines(pki, "implicit"),
            health='{ type = "login", user = "ftptest", password = "ftptest", '
            'interval = "500ms", rise = 1, fall = 2, timeout = "2s" }',
        ) as lb,
        ftps_session(pki, lb.host, lb.port, server.user, server.password) as ftp,
    ):
        ftplib_round_trip(ftp, tmp_path, "i.bin")


def test_reencrypt_refuses_a_server_with_an_unknown_certificate(pki: Pki) -> None:
    backend = f'tls = "explicit"\ntls_ca = "{pki.other_ca}"'
    with (
        tls_server("vsftpd", pki, TLS_VS_HOST) as server,
        tls_balancer([server], backend=backend, health='{ type = "none" }') as lb,
        ftplib.FTP() as ftp,
    ):
        # The server is reached (and refused) before the 220.
        with pytest.raises(ftplib.error_temp, match=r"^421"):
            ftp.connect(lb.host, lb.port, timeout=10)
        assert "certificate verify failed" in lb.log_text().lower(), lb.log_text()


# ---------------------------------------------------------------------------
# refusals


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not (data.endswith(b"\r\n") and data[3:4] == b" "):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_commands_pipelined_after_auth_never_run(pki: Pki) -> None:
    with (
        started_servers("pyftpdlib", PY_HOSTS) as group,
        tls_balancer(group, frontend=tls_frontend(pki)) as lb,
    ):
        server = group[0]
        with socket.create_connection((lb.host, lb.port), timeout=10) as raw:
            assert _read_reply(raw).startswith(b"220")
            login = f"USER {server.user}\r\nPASS {server.password}\r\n"
            raw.sendall(b"AUTH TLS\r\n" + login.encode() + b"MKD injected\r\n")
            assert _read_reply(raw).startswith(b"234")
            tls = pki.client_context().wrap_socket(raw, server_hostname=lb.host)
            tls.sendall(b"NOOP\r\n")
            # Only the NOOP is answered: nothing pipelined in the clear ran.
            assert _read_reply(tls).startswith(b"200")
            tls.sendall(b"PWD\r\n")
            assert _read_reply(tls).startswith(b"530")
            tls.close()
        assert not (server.root / "injected").exists()


def test_prot_without_pbsz_and_other_refusals(pki: Pki) -> None:
    with (
        started_servers("pyftpdlib", PY_HOSTS) as group,
        tls_balancer(group, frontend=tls_frontend(pki)) as lb,
    ):
        server = group[0]
        ftp = ModeFtpTls(pki.client_context(), "epsv", None)
        try:
            ftp.connect(lb.host, lb.port)
            with pytest.raises(ftplib.error_perm, match=r"^503"):
                ftp.sendcmd("PBSZ 0")
            ftp.auth()
            with pytest.raises(ftplib.error_perm, match=r"^503"):
                ftp.sendcmd("PROT P")
            assert ftp.sendcmd("PBSZ 0") == "200 PBSZ=0"
            with pytest.raises(ftplib.error_perm, match=r"^536"):
                ftp.sendcmd("PROT S")
            with pytest.raises(ftplib.error_perm, match=r"^533"):
                ftp.sendcmd("CCC")
            with pytest.raises(ftplib.error_perm, match=r"^503"):
                ftp.sendcmd("AUTH TLS")
            ftp.login(server.user, server.password)
            ftp.prot_p()
            assert ftp.nlst() == []
        finally:
            ftp.close()


def test_tls_required(pki: Pki) -> None:
    frontend = tls_frontend(pki, extra="tls_required = true")
    with started_servers("pyftpdlib", PY_HOSTS) as group, tls_balancer(group, frontend) as lb:
        server = group[0]
        with ftplib.FTP() as plain:
            plain.connect(lb.host, lb.port, timeout=10)
            with pytest.raises(ftplib.error_perm, match=r"^530"):
                plain.login(server.user, server.password)
        with ftps_session(
            pki, lb.host, lb.port, server.user, server.password, protect=False
        ) as ftp:
            with pytest.raises(ftplib.error_perm, match=r"^521"):
                ftp.nlst()
            ftp.prot_p()
            assert ftp.nlst() == []


def test_failed_handshakes_leave_ftplb_serving(pki: Pki) -> None:
    with (
        started_servers("pyftpdlib", PY_HOSTS) as group,
        tls_balancer(group, frontend=tls_frontend(pki)) as lb,
    ):
        server = group[0]
        # Explicit: AUTH, then garbage instead of a ClientHello.
        with socket.create_connection((lb.host, lb.port), timeout=10) as raw:
            _read_reply(raw)
            raw.sendall(b"AUTH TLS\r\n")
            assert _read_reply(raw).startswith(b"234")
            raw.sendall(b"USER x\r\n" * 10)
            data = b""
            with contextlib.suppress(OSError):
                while chunk := raw.recv(4096):
                    data += chunk
            # Closed, with at most a TLS alert: no FTP reply to the plaintext.
            assert b"331" not in data and b"530" not in data, data
        # A client that distrusts ftplb's certificate.
        with socket.create_connection((lb.host, lb.port), timeout=10) as raw:
            _read_reply(raw)
            raw.sendall(b"AUTH TLS\r\n")
            _read_reply(raw)
            distrust = ssl.create_default_context(cafile=str(pki.other_ca))
            with pytest.raises(ssl.SSLCertVerificationError):
                distrust.wrap_socket(raw, server_hostname=lb.host)
        with ftps_session(pki, lb.host, lb.port, server.user, server.password) as ftp:
            assert ftp.nlst() == []
    assert "handshake" in lb.log_text()


def test_failed_implicit_handshake_gets_no_session(pki: Pki) -> None:
    with (
        started_servers("pyftpdlib", PY_HOSTS) as group,
        tls_balancer(group, frontend=tls_frontend(pki, "implicit")) as lb,
    ):
        server = group[0]
        with socket.create_connection((lb.host, lb.port), timeout=10) as raw:
            raw.sendall(b"USER plaintext\r\n")
            raw.settimeout(10)
            data = b""
            with contextlib.suppress(OSError):
                while chunk := raw.recv(4096):
                    data += chunk
            assert b"220" not in data
        with ftps_session(
            pki, lb.host, lb.port, server.user, server.password, implicit=True
        ) as ftp:
            assert ftp.nlst() == []
    sessions = [line for line in lb.log_lines("session") if "server=s1" in line]
    assert len(sessions) == 1, lb.log_lines("session")


def test_bad_certificate_paths_are_clear_errors(pki: Pki, tmp_path: Path) -> None:
    port = free_port(LB_HOST)
    missing = tmp_path / "nope.pem"
    text = simple_config(
        [("127.0.0.61", 2121)],
        port=port,
        frontend=f'tls = "explicit"\ntls_certificate = "{missing}"',
        health='{ type = "none" }',
    )
    config = tmp_path / "ftplb.toml"
    config.write_text(text)
    checked = subprocess.run(
        [sys.executable, "-m", "ftplb", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 1
    assert "tls_certificate" in checked.stderr and str(missing) in checked.stderr
    # A file that looks like PEM but that OpenSSL refuses: a start-up error.
    broken = tmp_path / "broken.pem"
    good = pki.server_pem.read_text()
    broken.write_text(good.replace(good.splitlines()[3], "A" * 64, 1))
    config.write_text(text.replace(str(missing), str(broken)))
    ran = subprocess.run(
        [sys.executable, "-m", "ftplb", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ran.returncode == 1
    assert "tls_certificate" in ran.stderr and str(broken) in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr


# ---------------------------------------------------------------------------
# health probes with TLS


def _backend(pki: Pki, server: servers.FtpServer, mode: str, ca: Path) -> Any:
    shown = f"{server.host}:{server.port}"
    config = load_config_text(
        f"""
        [[frontends]]
        name = "f"
        bind = ["127.0.0.1:2121"]
        backend = "b"
        [[backends]]
        name = "b"
        tls = "{mode}"
        tls_ca = "{ca}"
        [[backends.servers]]
        name = "s"
        address = "{shown}"
        """.replace("\n        ", "\n")
    )
    return backend_tls(config.backends[0])


async def test_login_probe_does_auth_tls_and_reports_l6(pki: Pki) -> None:
    with tls_server("vsftpd", pki, TLS_VS_HOST) as server:
        good = _backend(pki, server, "explicit", pki.ca)
        result = await probe(
            "login", server.host, server.port, 5, server.user, server.password, tls=good
        )
        assert result.ok, result
        plain = await probe("login", server.host, server.port, 5, server.user, server.password)
        assert not plain.ok and plain.layer == "L7"
        bad = _backend(pki, server, "explicit", pki.other_ca)
        result = await probe(
            "login", server.host, server.port, 5, server.user, server.password, tls=bad
        )
        assert not result.ok and result.layer == "L6", result
        assert "certificate" in result.detail


async def test_ftp_probe_over_implicit_tls(pki: Pki) -> None:
    with tls_server("vsftpd", pki, IMPLICIT_VS_HOST, implicit_ssl="YES") as server:
        good = _backend(pki, server, "implicit", pki.ca)
        result = await probe("ftp", server.host, server.port, 5, tls=good)
        assert result.ok and result.detail == "220 banner", result
        result = await probe("ftp", server.host, server.port, 2)
        assert not result.ok
        bad = _backend(pki, server, "implicit", pki.other_ca)
        result = await probe("ftp", server.host, server.port, 5, tls=bad)
        assert not result.ok and result.layer == "L6", result


# ---------------------------------------------------------------------------
# FTPS with workers = 2: each worker terminates TLS for the clients steered to it


def test_offload_with_two_workers(pki: Pki, tmp_path: Path) -> None:
    sources = [f"127.0.0.{n}" for n in range(100, 106)]
    with started_servers("vsftpd", VS_HOSTS) as group:
        port = free_port(LB_HOST)
        text = simple_config(
            [s.address for s in group],
            port=port,
            host=LB_HOST,
            frontend=tls_frontend(pki),
            defaults="workers = 2",
        )
        with balancer(text, LB_HOST, port) as lb:
            wait_ready(lb)
            server = group[0]
            for index, source in enumerate(sources):
                name = f"w{index}.bin"
                src = tmp_path / name
                digest = make_random_file(src, 1024 * 1024)
                url = ftp_url(lb.host, lb.port, name, server.user, server.password)
                stored = curl_stor(url, src, "epsv", source, curl_tls(pki)).check()
                assert "PROT P" in stored.commands
                assert sha256_file(server.root / name) == digest, f"STOR from {source}"
                dest = tmp_path / f"{name}.down"
                curl_retr(url, dest, "epsv", source, curl_tls(pki)).check()
                assert sha256_file(dest) == digest
            served = {
                fields["worker"]
                for fields in records(lb, "transfer")
                if fields["client"] in sources
            }
            assert served == {"0", "1"}


def test_curl_uploads_arrive_whole(pki: Pki, tmp_path: Path) -> None:
    """curl never reads an upload's data connection. TLS 1.3 session tickets
    sent there once made it close with unread bytes: the kernel reset the
    connection and the tail of the upload was lost, with 226 all round."""
    with (
        started_servers("vsftpd", VS_HOSTS) as group,
        tls_balancer(group, frontend=tls_frontend(pki)) as lb,
    ):
        server = group[0]
        for index in range(30):
            name = f"u{index}.bin"
            src = tmp_path / name
            digest = make_random_file(src, 1024 * 1024)
            url = ftp_url(lb.host, lb.port, name, server.user, server.password)
            curl_stor(url, src, "epsv", None, curl_tls(pki)).check()
            assert sha256_file(server.root / name) == digest, f"upload {index} differs"
