"""Shared fixtures for integration tests: real FTP servers on loopback addresses.

A server kind that cannot run on this machine is a skip on a developer's machine
and a failure in CI (``CI`` set), so CI never passes by skipping everything.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.servers import (
    DEFAULT_HOSTS,
    START,
    FtpServer,
    StartFtpServer,
    available,
    ipv6_loopback_problem,
    make_server_root,
)
from tests.support import free_port, skip_or_fail


def require_server(kind: str) -> None:
    """Skip (or fail, in CI) when ``kind`` cannot run on this machine."""
    problem = available(kind)
    if problem is not None:
        skip_or_fail(f"FTP server {kind} unavailable: {problem}")


def require_ipv6() -> None:
    """Skip (or fail, in CI) when the IPv6 loopback address cannot be used."""
    problem = ipv6_loopback_problem()
    if problem is not None:
        skip_or_fail(problem)


@pytest.fixture(scope="session")
def ftp_server_factory() -> Iterator[StartFtpServer]:
    """Start real FTP servers; every one still running is stopped at session end.

    ``start(kind, host=None, port=None, root=None) -> FtpServer``. Without ``root``
    the server gets a fresh directory of its own, removed when the server stops.
    Stop a server earlier with ``server.stop()`` (stopping twice is harmless).
    """
    started: list[FtpServer] = []

    def start(
        kind: str,
        host: str | None = None,
        port: int | None = None,
        root: Path | None = None,
    ) -> FtpServer:
        require_server(kind)
        host = host or DEFAULT_HOSTS[kind]
        fresh_root = root is None
        if root is None:
            root = make_server_root(f"ftplb-{kind}-root-")
        try:
            server = START[kind](host, port or free_port(host), root)
        except BaseException:
            if fresh_root:
                shutil.rmtree(root, ignore_errors=True)
            raise
        # A root made here goes as soon as its server stops, not at the session's end.
        server.owns_root = fresh_root
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
