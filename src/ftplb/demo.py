"""``ftplb demo``: two built-in pyftpdlib servers behind the balancer, on loopback.

The demo's passive range lies outside the kernel's ephemeral ports, and its
servers listen outside that range, so that neither a server nor an outgoing
connection ever holds a port the balancer hands out. What to try is printed
only once the balancer listens: a port already taken is the first and only
thing said.
"""

from __future__ import annotations

import logging
import socket
import sys
import tempfile
import threading
from pathlib import Path

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from ftplb.app import StartupError, run_event_loop, serve
from ftplb.config.fields import PortRange
from ftplb.config.load import ConfigError, load_config_text
from ftplb.config.schema import Config
from ftplb.runtime.listeners import ephemeral_ports

DEMO_USER = "demo"
DEMO_PASSWORD = "demo"
DEMO_PASSIVE_PORTS = 100
"""How many passive ports the demo's frontend has: plenty for a few clients."""

# Linux's default, for a system that does not tell.
_DEFAULT_EPHEMERAL = (32768, 60999)
# Binds to port 0 tried before giving up on a server port outside the passive range.
_BIND_ATTEMPTS = 50


class _Backend:
    """One pyftpdlib server on its own IOLoop, driven only from its own thread.

    pyftpdlib's loop is not thread-safe and its default IOLoop is a process-wide
    singleton: two servers in two threads on it corrupt each other's state.
    """

    def __init__(self, server: FTPServer) -> None:
        self.server = server
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            self.server.serve_forever(timeout=0.2, blocking=False, handle_exit=False)
        self.server.close_all()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


def demo_passive_range(
    ephemeral: tuple[int, int] | None, size: int = DEMO_PASSIVE_PORTS
) -> PortRange:
    """``size`` ports just below the kernel's ephemeral range, or else just above it.

    A port of the ephemeral range may be taken at any moment by an outgoing
    connection or a server bound to port 0 (the demo's own servers, and their
    passive listeners, are); a passive range outside it stays free. When the
    ephemeral range leaves no room, 40000 on: the servers then keep out of it.
    """
    first, last = ephemeral or _DEFAULT_EPHEMERAL
    if first - size >= 1024:
        return PortRange(first - size, first - 1)
    if last + size <= 65535:
        return PortRange(last + 1, last + size)
    return PortRange(40000, 40000 + size - 1)


def _listen_outside(ports: PortRange) -> socket.socket:
    """A listening socket on 127.0.0.1, on a port the kernel picks outside ``ports``."""
    rejected: list[socket.socket] = []
    try:
        for _ in range(_BIND_ATTEMPTS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            if sock.getsockname()[1] not in ports:
                sock.listen(64)
                return sock
            rejected.append(sock)  # held until the end, so the kernel picks another
    finally:
        for sock in rejected:
            sock.close()
    raise OSError(f"no free port outside the passive range {ports}")


def _start_backend(name: str, root: Path, passive: PortRange) -> tuple[_Backend, int]:
    authorizer = DummyAuthorizer()
    authorizer.add_user(DEMO_USER, DEMO_PASSWORD, str(root), perm="elradfmwMT")
    handler = type(
        f"DemoHandler_{name}",
        (FTPHandler,),
        {"authorizer": authorizer, "banner": f"demo backend {name} ready"},
    )
    sock = _listen_outside(passive)
    port = sock.getsockname()[1]
    return _Backend(FTPServer(sock, handler, ioloop=IOLoop())), port


def demo_config(port: int, backend_ports: list[int], stats_port: int, passive: PortRange) -> str:
    servers = "\n".join(
        f'[[backends.servers]]\nname = "s{i}"\naddress = "127.0.0.1:{p}"\n'
        for i, p in enumerate(backend_ports, start=1)
    )
    return f"""
[[frontends]]
name = "demo"
bind = ["127.0.0.1:{port}"]
backend = "demo"
passive_ports = "{passive}"

[[backends]]
name = "demo"
balance = "roundrobin"
health = {{ type = "ftp", interval = "2s", rise = 2, fall = 2, timeout = "2s" }}

{servers}
{_admin_section(stats_port)}"""


def _admin_section(stats_port: int) -> str:
    if not stats_port:
        return ""
    return f'[admin]\nbind = "127.0.0.1:{stats_port}"\nstats_refresh = "2s"\n'


def demo_hints(config: Config, stats_port: int = 0) -> str:
    """What the demo prints once it listens: where, what to try, and what to expect."""
    frontend = config.frontends[0]
    backend = config.backend(frontend.backend)
    url = f"ftp://{frontend.bind[0]}"
    servers = ", ".join(f"{server.name} at {server.address}" for server in backend.servers)
    names = " and ".join(server.name for server in backend.servers)
    login = f"{DEMO_USER}:{DEMO_PASSWORD}"
    if backend.sticky == "none":
        sticky = (
            'To keep a client on one server, set sticky = "source" in [[backends]]\n'
            '      (the demo has sticky = "none").'
        )
    else:
        sticky = f'With sticky = "{backend.sticky}", a client keeps its server.'
    return (
        f"ftplb demo: two FTP servers behind {url} "
        f"(user {DEMO_USER}, password {DEMO_PASSWORD}); Ctrl-C stops.\n"
        f'Servers: {servers}; balance = "{backend.balance}"; '
        f"passive ports {frontend.passive_ports}.\n"
        f"Try:  curl -u {login} {url}/hello.txt\n"
        f"      curl -u {login} -T README.md {url}/\n"
        f"Note: {names} have separate disks. An upload lands on one server only: a later\n"
        f"      session finds the file only if it reaches the same server.\n"
        f"      {sticky}\n"
        + (f"Stats: http://127.0.0.1:{stats_port}/stats\n" if stats_port else "")
    )


def _taken(port: int, option: str) -> str | None:
    """Why the demo cannot listen on ``port`` of 127.0.0.1, or None when it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the balancer binds: a port left in TIME_WAIT is free to it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:
            return f"cannot listen on 127.0.0.1:{port} ({option}): {error.strerror or error}"
    return None


def run_demo(port: int, stats_port: int = 0, metrics_dir: str | None = None) -> int:
    """Run the demo until Ctrl-C; ``metrics_dir`` (ftplb.runtime.metrics_home) feeds the stats."""
    # Before anything starts or is printed: a taken port is the whole answer.
    # (The hints still wait for the balancer to listen, should one be taken
    # between this check and then.)
    for wanted, option in ((port, "--port"), (stats_port, "--stats-port")):
        problem = _taken(wanted, option) if wanted else None
        if problem is not None:
            print(f"ftplb: {problem}", file=sys.stderr)
            return 1
    # pyftpdlib logs every command at INFO unless its logger is already set up.
    backend_log = logging.getLogger("pyftpdlib")
    backend_log.addHandler(logging.StreamHandler())
    backend_log.setLevel(logging.WARNING)
    # The demo servers are not the balancer: their lines stay theirs, not library_log warnings.
    backend_log.propagate = False
    passive = demo_passive_range(ephemeral_ports())
    with tempfile.TemporaryDirectory(prefix="ftplb-demo-") as tmp:
        backends: list[tuple[_Backend, int]] = []
        try:
            for name in ("s1", "s2"):
                root = Path(tmp) / name
                root.mkdir()
                (root / "hello.txt").write_text(f"Hello from demo server {name}.\n")
                backends.append(_start_backend(name, root, passive))
            text = demo_config(port, [p for _, p in backends], stats_port, passive)
            config = load_config_text(text, "<demo>")

            def on_ready() -> None:
                print(demo_hints(config, stats_port), flush=True)

            run_event_loop(lambda: serve(config, on_ready=on_ready, metrics_dir=metrics_dir))
        except (StartupError, OSError) as error:
            print(f"ftplb: {error}", file=sys.stderr)
            return 1
        except ConfigError as error:
            print(f"ftplb demo: {'; '.join(error.problems)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            pass
        finally:
            for backend, _ in backends:
                backend.stop()
        return 0
