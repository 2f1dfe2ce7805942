"""Threaded TCP fakes for server behaviours that no real server shows on demand."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class ThreadedTcpServer:
    """A loopback listener with one accept thread and one thread per connection.

    Subclasses set their own state, then call ``super().__init__`` (connections
    may arrive at once), and implement :meth:`handle`.
    """

    def __init__(self, host: str, backlog: int = 64) -> None:
        self.sock = socket.create_server((host, 0), backlog=backlog)
        self.sock.settimeout(0.1)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.spawn(self._serve)

    def spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self.spawn(self.handle, conn)

    def handle(self, conn: socket.socket) -> None:
        """Serve one accepted connection (on its own thread)."""
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for thread in self._threads:
            thread.join(5)
