"""PROXY protocol peers for integration tests: Debian's HAProxy, and a pyftpdlib
server that reads the header.

HAProxy runs in the foreground (``haproxy -f CONF -db``) on a config the test
writes, logging each connection to its stdout in a raw format the test reads.
No FTP server that Debian packages reads PROXY headers, so the header-reading
server is pyftpdlib with a few lines around its accept calls, using ftplb's own
parser; it writes each header it reads as one JSON line.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from ftplb.proto.proxy_header import build_v2
from tests.integration.servers import ForegroundProcess, FtpServer, spawn_foreground
from tests.support import skip_or_fail, wait_until

LOG_FORMAT = "conn ci=%ci cp=%cp fi=%fi fp=%fp"
"""One stdout line per connection HAProxy took: the client it names (from a header
it accepted, or the socket), and the frontend address."""


def require_haproxy() -> str:
    path = shutil.which("haproxy")
    if path is None:
        skip_or_fail("haproxy is not installed (scripts/install-test-deps.sh installs it)")
    return path


def haproxy_config(*sections: str) -> str:
    """A whole HAProxy config in TCP mode, logging to stdout, with these sections."""
    head = f"""\
        global
            log stdout format raw local0
            maxconn 200

        defaults
            mode tcp
            log global
            log-format "{LOG_FORMAT}"
            timeout connect 5s
            timeout client 30s
            timeout server 30s
        """
    return textwrap.dedent(head) + "\n" + "\n".join(textwrap.dedent(s) for s in sections)


def start_haproxy(config_text: str, ready: tuple[str, int]) -> ForegroundProcess:
    """HAProxy in the foreground on ``config_text``, once it accepts on ``ready``."""
    binary = require_haproxy()
    workdir = Path(tempfile.mkdtemp(prefix="ftplb-haproxy-"))
    config = workdir / "haproxy.cfg"
    config.write_text(config_text)
    process = spawn_foreground("haproxy", [binary, "-f", str(config), "-db"], workdir)

    def listening() -> bool:
        if not process.is_running():
            raise AssertionError(f"haproxy exited:\n{process.log_tail()}")
        try:
            socket.create_connection(ready, timeout=1).close()
        except OSError:
            return False
        return True

    try:
        wait_until(listening, 10, "haproxy to listen")
    except BaseException:
        process.stop()
        raise
    return process


def haproxy_connections(process: ForegroundProcess) -> list[dict[str, str]]:
    """The fields of each connection line HAProxy logged so far."""
    found = []
    for line in process.log_tail(1_000_000).splitlines():
        if line.startswith("conn "):
            found.append(dict(token.split("=", 1) for token in line.split()[1:]))
    return found


_READER_MAIN = textwrap.dedent(
    """
    import json, logging, socket, sys
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    try:
        from pyftpdlib.handlers import PassiveDTP
    except ImportError:  # pyftpdlib 2.x moved it
        from pyftpdlib.handlers.ftp.dispatchers import PassiveDTP
    from pyftpdlib.log import config_logging
    from pyftpdlib.servers import FTPServer
    from ftplb.proto.proxy_header import NeedMore, ProxyHeader, parse_proxy_header

    host, port, root, user, password, record = sys.argv[1:7]
    masquerade, ports = (sys.argv[7:9] + ["", ""])[:2]

    def read_header(sock, kind):
        # Peek, and take only the header's bytes: what follows is FTP or data.
        sock.setblocking(True)
        sock.settimeout(10)
        taken = b""
        while True:
            seen = sock.recv(65552, socket.MSG_PEEK)
            parsed = parse_proxy_header(taken + seen) if seen else None
            if isinstance(parsed, NeedMore):
                taken += sock.recv(len(seen))
                continue
            break
        entry = {"conn": kind}
        if isinstance(parsed, ProxyHeader):
            sock.recv(parsed.length - len(taken))
            tls = parsed.tls
            entry.update(
                version=parsed.version,
                source=None if parsed.source is None else parsed.source.host,
                destination=None if parsed.destination is None else
                    f"{parsed.destination.host}:{parsed.destination.port}",
                tls=None if tls is None else [tls.version, tls.cipher, tls.server_name],
            )
        else:
            entry["problem"] = "no header" if parsed is None else str(parsed)
        with open(record, "a") as out:
            out.write(json.dumps(entry) + "\\n")
        sock.setblocking(False)
        return isinstance(parsed, ProxyHeader)

    class ProxyPassiveDTP(PassiveDTP):
        def handle_accepted(self, sock, addr):
            if read_header(sock, "data"):
                super().handle_accepted(sock, addr)
            else:
                sock.close()

    class ProxyFTPServer(FTPServer):
        def handle_accepted(self, sock, addr):
            if read_header(sock, "control"):
                super().handle_accepted(sock, addr)
            else:
                sock.close()

    config_logging(level=logging.INFO)
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    handler = FTPHandler
    handler.authorizer = authorizer
    handler.passive_dtp = ProxyPassiveDTP
    if masquerade:  # behind a passthrough balancer: advertise it, and this range
        handler.masquerade_address = masquerade
        first, last = map(int, ports.split("-"))
        handler.passive_ports = list(range(first, last + 1))
    ProxyFTPServer((host, int(port)), handler).serve_forever()
    """
)


def start_header_reading_server(
    host: str, port: int, root: Path, advertise: tuple[str, str] | None = None
) -> tuple[FtpServer, Path]:
    """The PROXY-reading pyftpdlib server, and the file where it records each header.

    ``advertise`` (address, "first-last") makes it answer PASV with that address
    and a port of that range, as ``mode = "tcp"`` needs of a server.
    """
    workdir = Path(tempfile.mkdtemp(prefix="ftplb-proxy-ftpd-"))
    record = workdir / "headers.jsonl"
    record.touch()
    argv = [sys.executable, "-c", _READER_MAIN, host, str(port), str(root), "u", "p", str(record)]
    argv += list(advertise or ())
    proc = spawn_foreground("pyftpdlib-proxy", argv, workdir)
    server = FtpServer("pyftpdlib-proxy", host, port, root, "u", "p", proc)

    def greets() -> bool:
        # With a header of its own (LOCAL): without one the server hangs up.
        if not proc.is_running():
            raise AssertionError(f"the server exited:\n{proc.log_tail()}")
        try:
            with socket.create_connection((host, port), timeout=2) as probe:
                probe.sendall(build_v2(None, None))
                return probe.recv(3) == b"220"
        except OSError:
            return False

    try:
        wait_until(greets, 10, "the PROXY-reading server to greet")
    except BaseException:
        proc.stop()
        raise
    return server, record


def recorded_headers(record: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.read_text().splitlines() if line]
