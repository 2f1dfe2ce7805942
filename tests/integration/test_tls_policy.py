"""The TLS policy of a real ``ftplb run``: session reuse, versions, SNI certificates.

- ``tls_session_reuse = "required"``: curl and lftp resume their control
  connection's TLS session on each data connection and work; Python's ftplib
  does not resume, and its transfers get the 425; a client that resumes
  *another* session's TLS session is refused too.
- ``tls_min_version``: a TLS 1.2 client is refused by a TLS 1.3 frontend, and
  a backend that asks for TLS 1.3 does not take a server that only speaks 1.2.
- ``tls_sni``: two names, two certificates from two CAs; each client trusts
  only one CA, so a wrong certificate fails its verification.
"""

from __future__ import annotations

import contextlib
import ftplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.integration.balancer import RunningBalancer, balancer, log_fields, simple_config
from tests.integration.clients import (
    curl_list,
    curl_retr,
    curl_stor,
    ftp_url,
    make_random_file,
    sha256_file,
)
from tests.integration.farms import started_servers
from tests.integration.servers import FtpServer
from tests.integration.tls_peers import (
    ModeFtpTls,
    Pki,
    curl_tls,
    ftps_session,
    lftp_tls_run,
    make_pki,
    tls_frontend,
    tls_server,
)
from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration

LB_HOST = "127.0.0.1"
SERVER_HOSTS = ["127.0.0.141"]
PRO_HOST = "127.0.0.142"
SIZE = 2 * 1024 * 1024
REUSE_REFUSED = r"^425 TLS session reuse required"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), [LB_HOST, PRO_HOST, "localhost"])


@contextlib.contextmanager
def fronted(
    server_list: list[FtpServer], frontend: str, backend: str = ""
) -> Iterator[RunningBalancer]:
    port = free_port(LB_HOST)
    text = simple_config(
        [s.address for s in server_list],
        port=port,
        host=LB_HOST,
        frontend=frontend,
        backend=backend,
        health='{ type = "none" }',
    )
    with balancer(text, LB_HOST, port) as lb:
        yield lb


def warnings_of(lb: RunningBalancer, warning: str) -> list[dict[str, str]]:
    return [
        fields
        for fields in map(log_fields, lb.log_text().splitlines())
        if fields.get("warning") == warning
    ]


class ResumingFtpTls(ModeFtpTls):
    """ftplib's FTPS client, but its data connections resume a TLS session.

    By default the session is its own control connection's (as curl and lftp
    do); ``resume`` may name another one.
    """

    resume: ssl.SSLSession | None = None

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        assert isinstance(self.sock, ssl.SSLSocket)
        session = self.resume or self.sock.session
        tls = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        self.data_resumed = bool(tls.session_reused)
        return tls, size

    data_resumed = False


def assert_refused(ftp: ftplib.FTP, command: str) -> None:
    """``command``'s data connection is closed on the client, which gets the 425.

    ftplib's own retrbinary() would stop at the closed data connection with
    an SSLError (its TLS shutdown fails) before it reads the reply.
    """
    try:
        conn = ftp.transfercmd(command)
    except ssl.SSLError:
        pass  # the handshake itself failed: the reply still follows
    else:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(10)
            assert conn.recv(1) == b""
    with pytest.raises(ftplib.error_temp, match=REUSE_REFUSED):
        ftp.voidresp()


# ---------------------------------------------------------------------------
# tls_session_reuse = "required"

REQUIRED = 'tls_session_reuse = "required"'


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_curl_and_lftp_resume_and_work(version: str, pki: Pki, tmp_path: Path) -> None:
    frontend = tls_frontend(pki, extra=f'{REQUIRED}\ntls_max_version = "{version}"')
    with (
        started_servers("pyftpdlib", SERVER_HOSTS) as group,
        fronted(group, frontend) as lb,
    ):
        server = group[0]
        src = tmp_path / "up.bin"
        digest = make_random_file(src, SIZE)
        url = ftp_url(lb.host, lb.port, "curl.bin", server.user, server.password)
        curl_stor(url, src, "epsv", None, curl_tls(pki)).check()
        dest = tmp_path / "curl.down"
        curl_retr(url, dest, "pasv", None, curl_tls(pki)).check()
        assert sha256_file(dest) == digest
        listing = curl_list(
            ftp_url(lb.host, lb.port, "", server.user, server.password), "epsv", None, curl_tls(pki)
        ).check()
        assert b"curl.bin" in listing.stdout
        lftp_dest = tmp_path / "lftp.down"
        commands = f"put {src} -o lftp.bin\nget lftp.bin -o {lftp_dest}\nls"
        code, stderr, _ = lftp_tls_run(
            pki, lb.host, lb.port, server.user, server.password, commands, "epsv"
        )
        assert code == 0, stderr[-3000:]
        assert sha256_file(lftp_dest) == digest
        assert sha256_file(server.root / "lftp.bin") == digest
        assert warnings_of(lb, "tls_reuse_required") == []


def test_ftplib_does_not_resume_and_is_refused(pki: Pki, tmp_path: Path) -> None:
    with (
        started_servers("pyftpdlib", SERVER_HOSTS) as group,
        fronted(group, tls_frontend(pki, extra=REQUIRED)) as lb,
    ):
        server = group[0]
        (server.root / "file.bin").write_bytes(b"x" * 1000)
        with ftps_session(pki, lb.host, lb.port, server.user, server.password, "epsv") as ftp:
            for command in ("RETR file.bin", "STOR up.bin", "LIST"):
                assert_refused(ftp, command)
            # The session itself goes on.
            assert ftp.voidcmd("NOOP").startswith("200")
        refused = warnings_of(lb, "tls_reuse_required")
        assert len(refused) == 3, lb.log_text()
        assert {fields["client"] for fields in refused} == {"127.0.0.1"}
        transfers = [log_fields(line) for line in lb.log_lines("transfer")]
        assert [(t["result"], t["error"]) for t in transfers] == [
            ("425", "tls_session_not_resumed")
        ] * 3, transfers


def test_only_this_sessions_tls_session_counts(pki: Pki, tmp_path: Path) -> None:
    """Resuming is not enough: the TLS session must be this control connection's own."""
    with (
        started_servers("pyftpdlib", SERVER_HOSTS) as group,
        fronted(group, tls_frontend(pki, extra=REQUIRED)) as lb,
    ):
        server = group[0]
        (server.root / "file.bin").write_bytes(b"y" * 1000)
        sessions: list[ResumingFtpTls] = []
        # One client context: Python resumes a TLS session only in the context that made it.
        context = pki.client_context()
        with contextlib.ExitStack() as stack:
            for _ in range(2):
                ftp = ResumingFtpTls(context, "epsv", None)
                stack.callback(ftp.close)
                ftp.connect(lb.host, lb.port)
                ftp.login(server.user, server.password, secure=True)
                ftp.prot_p()
                sessions.append(ftp)
            first, second = sessions
            # Its own session: resumed, and served.
            chunks: list[bytes] = []
            assert first.retrbinary("RETR file.bin", chunks.append).startswith("226")
            assert first.data_resumed and b"".join(chunks) == b"y" * 1000
            # The first session's TLS session, offered on the second one's data connection.
            assert isinstance(first.sock, ssl.SSLSocket)
            second.resume = first.sock.session
            assert_refused(second, "RETR file.bin")
            assert not second.data_resumed
        assert len(warnings_of(lb, "tls_reuse_required")) == 1, lb.log_text()


# ---------------------------------------------------------------------------
# versions


def test_a_tls_1_2_client_is_refused_by_a_tls_1_3_frontend(pki: Pki) -> None:
    with (
        started_servers("pyftpdlib", SERVER_HOSTS) as group,
        fronted(group, tls_frontend(pki, extra='tls_min_version = "1.3"')) as lb,
    ):
        server = group[0]
        url = ftp_url(lb.host, lb.port, "", server.user, server.password)
        refused = curl_list(url, "epsv", None, [*curl_tls(pki), "--tls-max", "1.2"])
        assert refused.returncode == 35, refused.stderr[-2000:]  # CURLE_SSL_CONNECT_ERROR
        curl_list(url, "epsv", None, curl_tls(pki)).check()
        old = pki.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        ftp = ftplib.FTP_TLS(context=old, timeout=10)
        with contextlib.closing(ftp):
            ftp.connect(lb.host, lb.port)
            # The handshake fails (how the client words it varies); ftplb says why below.
            with pytest.raises(ssl.SSLError):
                ftp.auth()
        wait_until(
            lambda: len(warnings_of(lb, "client_tls_failed")) == 2, 5, "two handshakes refused"
        )
        failed = warnings_of(lb, "client_tls_failed")
        assert all("UNSUPPORTED_PROTOCOL" in fields["reason"] for fields in failed), failed


def test_a_backend_that_asks_for_tls_1_3_refuses_a_tls_1_2_server(pki: Pki) -> None:
    backend = f'tls = "explicit"\ntls_ca = "{pki.ca}"\ntls_min_version = "1.3"'
    with (
        tls_server("proftpd", pki, PRO_HOST, TLSProtocol="TLSv1.2") as server,
        fronted([server], "", backend) as lb,
        ftplib.FTP() as ftp,
    ):
        with pytest.raises(ftplib.error_temp, match=r"^421"):
            ftp.connect(lb.host, lb.port, timeout=10)
        failed = warnings_of(lb, "connect_failed")
        assert failed, lb.log_text()
        assert any(word in failed[0]["reason"].lower() for word in ("version", "protocol")), failed


# ---------------------------------------------------------------------------
# SNI


def _issue(ca: trustme.CA, work: Path, name: str) -> Path:
    pem = work / f"{name}.pem"
    ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(pem))
    return pem


def test_sni_picks_the_certificate_and_data_keeps_it(pki: Pki, tmp_path: Path) -> None:
    cas = {name: trustme.CA() for name in ("ftp.one.test", "ftp.two.test")}
    ca_files: dict[str, Path] = {}
    for name, ca in cas.items():
        ca_files[name] = tmp_path / f"{name}.ca"
        ca.cert_pem.write_to_path(str(ca_files[name]))
    one = _issue(cas["ftp.one.test"], tmp_path, "ftp.one.test")
    two = _issue(cas["ftp.two.test"], tmp_path, "ftp.two.test")
    sni = (
        f'tls_sni = [{{ names = ["ftp.one.test"], certificate = "{one}" }},\n'
        f'  {{ names = ["*.two.test"], certificate = "{two}" }}]'
    )
    with (
        started_servers("pyftpdlib", SERVER_HOSTS) as group,
        fronted(group, tls_frontend(pki, extra=sni)) as lb,
    ):
        server = group[0]
        (server.root / "file.bin").write_bytes(b"z" * 5000)

        def curl_as(name: str, ca: Path) -> int:
            url = ftp_url(name, lb.port, "file.bin", server.user, server.password)
            resolve = [
                "--resolve",
                f"{name}:{lb.port}:{lb.host}",
                "--ssl-reqd",
                "--cacert",
                str(ca),
            ]
            dest = tmp_path / f"{name}.down"
            result = curl_retr(url, dest, "epsv", None, resolve)
            if result.ok:
                assert dest.read_bytes() == b"z" * 5000
            return result.returncode

        assert curl_as("ftp.one.test", ca_files["ftp.one.test"]) == 0
        assert curl_as("ftp.two.test", ca_files["ftp.two.test"]) == 0
        # Each name's certificate and no other: the other CA cannot verify it.
        assert (
            curl_as("ftp.two.test", ca_files["ftp.one.test"]) == 60
        )  # CURLE_PEER_FAILED_VERIFICATION
        assert curl_as("ftp.one.test", ca_files["ftp.two.test"]) == 60
        # Without a known name, the default certificate.
        assert curl_as("localhost", pki.ca) == 0

        # A data connection that asks for the other name, with a full
        # handshake (ftplib does not resume), still gets the control
        # connection's certificate: only ftp.one.test's CA is trusted here.
        context = ssl.create_default_context(cafile=str(ca_files["ftp.one.test"]))

        class OtherNameOnData(ModeFtpTls):
            def ntransfercmd(
                self, cmd: str, rest: int | str | None = None
            ) -> tuple[socket.socket, int | None]:
                conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
                unchecked = ssl.create_default_context(cafile=str(ca_files["ftp.one.test"]))
                unchecked.check_hostname = False
                return unchecked.wrap_socket(conn, server_hostname="ftp.two.test"), size

        ftp = OtherNameOnData(context, "epsv", None)
        with contextlib.closing(ftp):
            ftp.connect(lb.host, lb.port)
            ftp.host = "ftp.one.test"  # the SNI of AUTH TLS
            ftp.login(server.user, server.password, secure=True)
            ftp.prot_p()
            chunks: list[bytes] = []
            assert ftp.retrbinary("RETR file.bin", chunks.append).startswith("226")
            assert b"".join(chunks) == b"z" * 5000
            ftp.quit()
