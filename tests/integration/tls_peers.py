"""FTPS peers for integration tests: certificates, FTPS clients and FTPS servers.

Certificates come from trustme.  The clients are ftplib's FTP_TLS in each data
mode (explicit or implicit) and lftp with TLS forced; the servers are vsftpd,
ProFTPD and pyftpdlib demanding TLS on control and data.
"""

from __future__ import annotations

import contextlib
import ftplib
import socket
import ssl
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.integration import servers
from tests.integration.clients import (
    SOCKET_TIMEOUT,
    DataMode,
    LftpMode,
    _parse_trace,
    _run,
    ftp_url,
    lftp_script,
    make_random_file,
    sha256_file,
)
from tests.integration.conftest import require_server
from tests.support import free_port

BIG = 10 * 1024 * 1024


# ---------------------------------------------------------------------------
# certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    """The CA certificate (PEM) that clients and ftplb trust."""
    server_pem: Path
    """Key and certificate chain for every test address, in one file."""
    cert_only: Path
    key_only: Path
    other_ca: Path
    """A CA that signed none of the certificates."""

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_pki(work: Path, hosts: Iterable[str]) -> Pki:
    """A CA in ``work``, and one certificate (with its key) for every name of ``hosts``."""
    # Readable by the servers' unprivileged processes too.
    work.chmod(0o755)
    ca = trustme.CA()
    cert = ca.issue_cert(*hosts)
    paths = Pki(
        work / "ca.pem",
        work / "server.pem",
        work / "cert.pem",
        work / "key.pem",
        work / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(paths.ca))
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths.server_pem))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(paths.cert_only), append=True)
    cert.private_key_pem.write_to_path(str(paths.key_only))
    trustme.CA().cert_pem.write_to_path(str(paths.other_ca))
    for path in (paths.ca, paths.server_pem, paths.cert_only, paths.key_only, paths.other_ca):
        path.chmod(0o644)
    return paths


def tls_frontend(pki: Pki, mode: str = "explicit", extra: str = "") -> str:
    return f'tls = "{mode}"\ntls_certificate = "{pki.server_pem}"\n{extra}'


# ---------------------------------------------------------------------------
# clients


def curl_tls(pki: Pki, implicit: bool = False) -> list[str]:
    args = ["--cacert", str(pki.ca)]
    return args if implicit else ["--ssl-reqd", *args]


def ftps_url(host: str, port: int, path: str = "", user: str = "", password: str = "") -> str:
    return "ftps" + ftp_url(host, port, path, user, password).removeprefix("ftp")


class ModeFtpTls(ftplib.FTP_TLS):
    """ftplib's FTPS client with one data mode, strict about the 227 address."""

    trust_server_pasv_ipv4_address = True

    def __init__(self, context: ssl.SSLContext, mode: DataMode, source: str | None) -> None:
        super().__init__(
            context=context,
            timeout=SOCKET_TIMEOUT,
            source_address=(source, 0) if source is not None else None,
        )
        self.data_mode = mode
        self.set_pasv(mode in ("pasv", "epsv"))

    def makepasv(self) -> tuple[str, int]:
        if self.data_mode == "epsv":
            assert self.sock is not None
            return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        return ftplib.parse227(self.sendcmd("PASV"))

    def makeport(self) -> socket.socket:
        assert self.sock is not None
        host = self.sock.getsockname()[0]
        listener = socket.create_server((host, 0), family=self.af, backlog=1)
        port = listener.getsockname()[1]
        if self.data_mode == "eprt":
            self.sendeprt(host, port)
        else:
            self.sendport(host, port)
        listener.settimeout(SOCKET_TIMEOUT)
        return listener


class ImplicitFtpTls(ModeFtpTls):
    """Implicit FTPS: TLS from the first byte, before the 220."""

    def connect(
        self, host: str = "", port: int = 0, timeout: float = -999, source_address: Any = None
    ) -> str:
        self.host, self.port = host, port
        sock = socket.create_connection((host, port), SOCKET_TIMEOUT, self.source_address)
        self.af = sock.family
        self.sock = self.context.wrap_socket(sock, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


@contextlib.contextmanager
def ftps_session(
    pki: Pki,
    host: str,
    port: int,
    user: str,
    password: str,
    mode: DataMode = "epsv",
    *,
    implicit: bool = False,
    source: str | None = None,
    protect: bool = True,
) -> Iterator[ModeFtpTls]:
    kind = ImplicitFtpTls if implicit else ModeFtpTls
    ftp = kind(pki.client_context(), mode, source)
    try:
        ftp.connect(host, port)
        ftp.login(user, password, secure=not implicit)
        if protect:
            ftp.prot_p()
        yield ftp
        with contextlib.suppress(OSError, EOFError, ftplib.Error):
            ftp.quit()
    finally:
        ftp.close()


def ftplib_round_trip(ftp: ftplib.FTP, work: Path, name: str) -> None:
    """STOR then RETR a 10 MB file, compare by sha256, and LIST it."""
    src = work / f"{name}.up"
    digest = make_random_file(src, BIG)
    with src.open("rb") as data:
        assert ftp.storbinary(f"STOR {name}", data, blocksize=1 << 20).startswith("226")
    dest = work / f"{name}.down"
    with dest.open("wb") as out:
        assert ftp.retrbinary(f"RETR {name}", out.write, blocksize=1 << 20).startswith("226")
    assert sha256_file(dest) == digest
    listing: list[str] = []
    ftp.retrlines("LIST", listing.append)
    assert any(name in line for line in listing), listing


def lftp_tls_run(
    pki: Pki,
    host: str,
    port: int,
    user: str,
    password: str,
    commands: str,
    mode: LftpMode,
    source: str | None = None,
) -> tuple[int, str, tuple[str, ...]]:
    script = lftp_script(host, port, user, password, commands, mode, source)
    script = script.replace(
        "set ftp:ssl-allow no",
        "\n".join(
            [
                "set ftp:ssl-allow yes",
                "set ftp:ssl-force true",
                "set ftp:ssl-protect-data true",
                "set ftp:ssl-protect-list true",
                f"set ssl:ca-file {pki.ca}",
                "set ssl:verify-certificate yes",
            ]
        ),
    )
    completed = _run(["lftp", "-d", "-c", script])
    stderr = completed.stderr.decode(errors="replace")
    sent, _ = _parse_trace(stderr + completed.stdout.decode(errors="replace"), "---> ", "<--- ")
    return completed.returncode, stderr, sent


# ---------------------------------------------------------------------------
# servers


def _tls_banner(host: str, port: int, timeout: float = 3.0) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw) as sock,
    ):
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


@contextlib.contextmanager
def tls_server(kind: str, pki: Pki, host: str, **options: str) -> Iterator[servers.FtpServer]:
    """A server that demands TLS on control and data (and session reuse, where it can)."""
    require_server(kind)
    root = servers.make_server_root(f"ftplb-tls-{kind}-")
    port = free_port(host)
    if kind == "vsftpd":
        extra = {
            "ssl_enable": "YES",
            "rsa_cert_file": str(pki.server_pem),
            "rsa_private_key_file": str(pki.server_pem),
            "ssl_ciphers": "HIGH",
            "force_local_logins_ssl": "YES",
            "force_local_data_ssl": "YES",
            "require_ssl_reuse": "YES",
            **options,
        }
        with pytest.MonkeyPatch.context() as patch:
            if options.get("implicit_ssl") == "YES":
                patch.setattr(servers, "read_banner", _tls_banner)
            server = servers.start_vsftpd(host, port, root, extra_config=extra)
    elif kind == "proftpd":
        extra = {
            "LoadModule": "mod_tls.c",
            "TLSEngine": "on",
            "TLSRSACertificateFile": str(pki.cert_only),
            "TLSRSACertificateKeyFile": str(pki.key_only),
            "TLSRequired": "on",
            "TLSProtocol": "TLSv1.2 TLSv1.3",
            "TLSVerifyClient": "off",
            "TLSLog": str(root.parent / f"{root.name}-tls.log"),
            **options,
        }
        server = servers.start_proftpd(host, port, root, extra_config=extra)
    else:
        server = _start_pyftpdlib_tls(host, port, root, pki)
    try:
        yield server
    finally:
        server.stop()


_PYFTPDLIB_TLS_MAIN = textwrap.dedent(
    """
    import logging, sys
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import TLS_FTPHandler
    from pyftpdlib.log import config_logging
    from pyftpdlib.servers import ThreadedFTPServer

    host, port, root, user, password, pem = sys.argv[1:7]
    config_logging(level=logging.INFO)
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    handler = TLS_FTPHandler
    handler.certfile = pem
    handler.tls_control_required = True
    handler.tls_data_required = True
    handler.authorizer = authorizer
    ThreadedFTPServer((host, int(port)), handler).serve_forever()
    """
)


def _start_pyftpdlib_tls(host: str, port: int, root: Path, pki: Pki) -> servers.FtpServer:
    workdir = Path(servers.make_server_root("ftplb-conf-pyftpdlib-tls-"))
    argv = [sys.executable, "-c", _PYFTPDLIB_TLS_MAIN, host, str(port), str(root)]
    argv += ["ftptest", "ftptest", str(pki.server_pem)]
    proc = servers.spawn_foreground("pyftpdlib-tls", argv, workdir)
    server = servers.FtpServer("pyftpdlib", host, port, root, "ftptest", "ftptest", proc)
    deadline = time.monotonic() + servers.STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if servers.read_banner(host, port, timeout=2.0).startswith(b"220"):
                return server
        time.sleep(0.05)
    server.stop()
    raise servers.ServerStartError(f"pyftpdlib TLS did not start:\n{proc.log_tail()}")
