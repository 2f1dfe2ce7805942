"""FEAT through ftplb: a server's TLS features are hidden, and AUTH never reaches it.

A vsftpd with TLS enabled advertises AUTH TLS, PBSZ and PROT. If they reached a
client, the client would negotiate TLS with the server through ftplb, and
ftplb would go blind to PASV/PORT. So ftplb must hide them and refuse AUTH.
"""

from __future__ import annotations

import contextlib
import ftplib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.integration import servers
from tests.integration.balancer import balancer, simple_config
from tests.integration.conftest import require_server
from tests.support import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.91"


@contextlib.contextmanager
def tls_vsftpd(work: Path) -> Iterator[servers.FtpServer]:
    pem = work / "server.pem"
    trustme.CA().issue_cert(HOST).private_key_and_cert_chain_pem.write_to_path(str(pem))
    extra = {
        "ssl_enable": "YES",
        "rsa_cert_file": str(pem),
        "rsa_private_key_file": str(pem),
        "ssl_ciphers": "HIGH",  # vsftpd 3.0.3's default cipher is refused by OpenSSL 3
        "force_local_logins_ssl": "NO",
        "force_local_data_ssl": "NO",
    }
    root = servers.make_server_root("ftplb-feat-")
    server = servers.start_vsftpd(HOST, free_port(HOST), root, extra_config=extra)
    try:
        yield server
    finally:
        server.stop()


def feat_lines(host: str, port: int, user: str | None = None, password: str = "") -> list[str]:
    with ftplib.FTP() as ftp:
        ftp.connect(host, port, timeout=10)
        if user is not None:
            ftp.login(user, password)
        reply = ftp.sendcmd("FEAT")
        return [line.strip().upper() for line in reply.splitlines()[1:-1]]


def test_feat_hides_tls_and_offers_extended_modes(tmp_path: Path) -> None:
    require_server("vsftpd")
    with tls_vsftpd(tmp_path) as server:
        direct = feat_lines(server.host, server.port)
        assert "AUTH TLS" in direct and "PBSZ" in direct and "PROT" in direct
        port = free_port()
        with balancer(simple_config([server.address], port=port), "127.0.0.1", port) as lb:
            for user in (None, server.user):
                through = feat_lines(lb.host, lb.port, user, server.password)
                assert not {"AUTH TLS", "AUTH SSL", "PBSZ", "PROT"} & set(through), through
                assert "EPSV" in through and "EPRT" in through
                # Everything else the server offers passes through.
                kept = {f for f in direct if f.split()[0] not in ("AUTH", "PBSZ", "PROT")}
                assert kept <= set(through), (kept, through)
            with ftplib.FTP() as ftp:
                ftp.connect(lb.host, lb.port, timeout=10)
                with pytest.raises(ftplib.error_perm, match=r"^502"):
                    ftp.sendcmd("AUTH TLS")
                ftp.login(server.user, server.password)
                # OPTS passes through: this is vsftpd's own answer.
                assert ftp.sendcmd("OPTS UTF8 ON") == "200 Always in UTF8 mode."
                assert ftp.sendcmd("NOOP").startswith("200")
