"""``ftplb demo``: two built-in pyftpdlib servers behind the balancer, on loopback."""

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
from ftplb.config.load import load_config_text

DEMO_USER = "demo"
DEMO_PASSWORD = "demo"


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


def _start_backend(name: str, root: Path) -> tuple[_Backend, int]:
    authorizer = DummyAuthorizer()
    authorizer.add_user(DEMO_USER, DEMO_PASSWORD, str(root), perm="elradfmwMT")
    handler = type(
        f"DemoHandler_{name}",
        (FTPHandler,),
        {"authorizer": authorizer, "banner": f"demo backend {name} ready"},
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    return _Backend(FTPServer(sock, handler, ioloop=IOLoop())), port


def demo_config(port: int, backend_ports: list[int], stats_port: int = 0) -> str:
    servers = "\n".join(
        f'[[backends.servers]]\nname = "s{i}"\naddress = "127.0.0.1:{p}"\n'
        for i, p in enumerate(backend_ports, start=1)
    )
    return f"""
[[frontends]]
name = "demo"
bind = ["127.0.0.1:{port}"]
backend = "demo"
passive_ports = "40000-40999"

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


def run_demo(port: int, stats_port: int = 0) -> int:
    # pyftpdlib logs every command at INFO unless its logger is already set up.
    backend_log = logging.getLogger("pyftpdlib")
    backend_log.addHandler(logging.StreamHandler())
    backend_log.setLevel(logging.WARNING)
    # The demo servers are not the balancer: their lines stay theirs, not library_log warnings.
    backend_log.propagate = False
    with tempfile.TemporaryDirectory(prefix="ftplb-demo-") as tmp:
        backends = []
        for name in ("s1", "s2"):
            root = Path(tmp) / name
            root.mkdir()
            (root / "hello.txt").write_text(f"Hello from demo server {name}.\n")
            backends.append(_start_backend(name, root))
        config = load_config_text(demo_config(port, [p for _, p in backends], stats_port), "<demo>")
        print(
            f"ftplb demo: two FTP servers behind ftp://127.0.0.1:{port} "
            f"(user {DEMO_USER}, password {DEMO_PASSWORD}); Ctrl-C stops.\n"
            f"Try:  curl -u {DEMO_USER}:{DEMO_PASSWORD} ftp://127.0.0.1:{port}/hello.txt\n"
            f"      curl -u {DEMO_USER}:{DEMO_PASSWORD} -T README.md "
            f"ftp://127.0.0.1:{port}/\n"
            + (f"Stats: http://127.0.0.1:{stats_port}/stats\n" if stats_port else ""),
            flush=True,
        )
        status = 0
        try:
            run_event_loop(lambda: serve(config))
        except StartupError as error:
            print(f"ftplb: {error}", file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            pass
        finally:
            for backend, _ in backends:
                backend.stop()
        return status
