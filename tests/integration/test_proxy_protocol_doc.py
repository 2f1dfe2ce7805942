"""The examples of docs/proxy-protocol.md, run as written against a real ``ftplb run``.

The page's configuration blocks are taken from their sections, with the
documented addresses and ports replaced by the test's loopback ones; nothing
else of them changes. HAProxy is Debian's; the PROXY-aware server is
pyftpdlib with a header reader, since no Debian FTP server reads the header.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import pytest

from tests.integration.balancer import balancer
from tests.integration.farms import started_servers
from tests.integration.haproxy import (
    recorded_headers,
    start_haproxy,
    start_header_reading_server,
)
from tests.integration.servers import make_server_root
from tests.integration.test_proxy_protocol import ftp_from, retr, sessions
from tests.support import free_port, passive_range

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "proxy-protocol.md"
CLIENT = "127.0.0.85"
UPSTREAM = "127.0.0.51"
CONTENT = os.urandom(32 * 1024)
SHA = hashlib.sha256(CONTENT).hexdigest()


def blocks(title: str) -> dict[str, str]:
    """The fenced blocks of the section whose heading starts with ``title``, by language."""
    found: dict[str, str] = {}
    inside, language, current = False, "", ""
    lines: list[str] = []
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            current = line.lstrip("#").strip()
        elif line.startswith("```") and not inside:
            inside, language, lines = True, line[3:].strip(), []
        elif line.startswith("```"):
            inside = False
            if current.startswith(title):
                found[language] = "\n".join(lines) + "\n"
        elif inside:
            lines.append(line)
    return found


def replaced(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"the example no longer mentions {old}"
        text = text.replace(old, new)
    return text


def test_the_haproxy_in_front_example() -> None:
    example = blocks("Example: HAProxy in front")
    ports = passive_range(10)
    first, last = ports.split("-")
    with started_servers("pyftpdlib", ["127.0.0.11", "127.0.0.12"], {"f.bin": CONTENT}) as pair:
        public, lb_port = free_port(UPSTREAM), free_port()
        text = replaced(
            example["toml"],
            {
                "10.0.0.5:2121": f"127.0.0.1:{lb_port}",
                "10.0.0.2/32": "127.0.0.1/32",
                "203.0.113.10": UPSTREAM,
                "40000-40099": ports,
                "10.0.0.11:21": f"{pair[0].host}:{pair[0].port}",
                "10.0.0.12:21": f"{pair[1].host}:{pair[1].port}",
            },
        )
        with balancer('[defaults]\nlog_format = "json"\n' + text, "127.0.0.1", lb_port) as lb:
            config = replaced(
                example["haproxy"],
                {
                    "203.0.113.10:21": f"{UPSTREAM}:{public}",
                    "203.0.113.10:40000-40099": f"{UPSTREAM}:{first}-{last}",
                    "10.0.0.5:2121": f"127.0.0.1:{lb_port}",
                    "10.0.0.5 ": "127.0.0.1 ",
                },
            )
            upstream = start_haproxy(_haproxy_head() + config, (UPSTREAM, public))
            try:
                with ftp_from(CLIENT, UPSTREAM, public) as ftp:
                    ftp.login(pair[0].user, pair[0].password)
                    assert hashlib.sha256(retr(ftp, "f.bin")).hexdigest() == SHA
                    ftp.quit()
            finally:
                upstream.stop()
    (served,) = [s for s in sessions(lb) if s["client"].startswith(f"{CLIENT}:")]
    assert served["end"] == "quit"


def _haproxy_head() -> str:
    # The page shows only the sections that matter; HAProxy needs its defaults too.
    return (
        "defaults\n    mode tcp\n    timeout connect 5s\n"
        "    timeout client 30s\n    timeout server 30s\n\n"
    )


def test_the_proxy_aware_server_example() -> None:
    text = blocks("Example: a PROXY-aware server")["toml"]
    root = make_server_root("ftplb-proxy-doc-")
    (root / "f.bin").write_bytes(CONTENT)
    host = "127.0.0.13"
    server, record = start_header_reading_server(host, free_port(host), root)
    try:
        lb_port = free_port()
        text = replaced(
            text,
            {
                "0.0.0.0:21": f"127.0.0.1:{lb_port}",
                "40000-40099": passive_range(10),
                "10.0.0.21:2121": f"{server.host}:{server.port}",
            },
        )
        with balancer(text, "127.0.0.1", lb_port), ftp_from(CLIENT, "127.0.0.1", lb_port) as ftp:
            ftp.login(server.user, server.password)
            assert hashlib.sha256(retr(ftp, "f.bin")).hexdigest() == SHA
            ftp.storbinary("STOR up.bin", io.BytesIO(CONTENT))
            ftp.quit()
        headers = [h for h in recorded_headers(record) if h.get("source") == CLIENT]
    finally:
        server.stop()
    try:
        assert hashlib.sha256((root / "up.bin").read_bytes()).hexdigest() == SHA
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert [(h["conn"], h["version"]) for h in headers] == [
        ("control", 2),
        ("data", 2),
        ("data", 2),
    ]
