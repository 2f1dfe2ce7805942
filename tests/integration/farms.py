"""Ready-made groups of real FTP servers with ftplb in front, for integration tests."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration import servers
from tests.integration.balancer import RunningBalancer, balancer, simple_config
from tests.integration.conftest import require_server
from tests.integration.servers import FtpServer
from tests.support import free_port


@dataclass
class Farm:
    """Servers of one kind and a balancer in front of them."""

    servers: list[FtpServer]
    lb: RunningBalancer

    @property
    def user(self) -> str:
        return self.servers[0].user

    @property
    def password(self) -> str:
        return self.servers[0].password

    def holder_of(self, name: str) -> list[FtpServer]:
        """The servers whose disk holds ``name``."""
        return [s for s in self.servers if (s.root / name).exists()]

    def session_counts(self) -> dict[str, int]:
        """Sessions per server name ("s1", "s2", ...) from ftplb's session log lines.

        Sessions that never reached a server (server=-, such as the start-up
        probe of the test harness) are not counted.
        """
        counts: dict[str, int] = {}
        for line in self.lb.log_lines("session"):
            for field in line.split():
                if field.startswith("server="):
                    name = field.removeprefix("server=")
                    if name == "-":
                        continue
                    counts[name] = counts.get(name, 0) + 1
        return counts


@contextlib.contextmanager
def started_servers(
    kind: str,
    hosts: list[str],
    files: dict[str, bytes] | None = None,
    credentials: tuple[str, str] | None = None,
) -> Iterator[list[servers.FtpServer]]:
    """Start one ``kind`` server per host, each with its own root holding ``files``.

    ``credentials`` (user, password) only suit servers with their own user
    database (pyftpdlib); the others use the system test account.
    """
    require_server(kind)
    started: list[servers.FtpServer] = []
    roots: list[Path] = []
    try:
        for host in hosts:
            root = servers.make_server_root(f"ftplb-{kind}-")
            roots.append(root)
            for name, content in (files or {}).items():
                (root / name).write_bytes(content)
                (root / name).chmod(0o644)
            port = free_port(host)
            if credentials is None:
                started.append(servers.START[kind](host, port, root))
            else:
                started.append(servers.START[kind](host, port, root, *credentials))
        yield started
    finally:
        for server in started:
            server.stop()
        # The roots hold the tests' uploads: several GB over a whole run.
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def farm(
    kind: str = "pyftpdlib",
    hosts: list[str] | None = None,
    files: dict[str, bytes] | None = None,
    lb_host: str = "127.0.0.1",
    credentials: tuple[str, str] | None = None,
    **config: str,
) -> Iterator[Farm]:
    """Servers of ``kind`` on ``hosts`` behind an ftplb on ``lb_host``.

    ``config`` goes to :func:`simple_config`: ``backend=``, ``defaults=``,
    ``frontend=`` (extra TOML lines for those sections), ``health=`` and
    ``sections=`` (whole tables).
    """
    hosts = hosts or ["127.0.0.11", "127.0.0.12"]
    with started_servers(kind, hosts, files, credentials) as group:
        port = free_port(lb_host)
        text = simple_config([(s.host, s.port) for s in group], port=port, host=lb_host, **config)
        with balancer(text, lb_host, port) as lb:
            yield Farm(group, lb)


def write_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data
