"""Passive port pools: bind a listener on a free port of a configured range."""

from __future__ import annotations

import errno
import socket


class PortPool:
    """Hands out listening sockets on ports ``first..last`` (or OS-chosen ports).

    Ports are tried round-robin from where the last search stopped, so that a
    port just released is the last to be reused: a late packet for an old
    transfer then cannot reach a new one.

    A port of the range is *held* from :meth:`listen` until its user calls
    :meth:`release`, once its transfer is over: the kernel would let a new
    listener share a port with an established data connection, and a pool
    that a reload hands to a new generation must not give out a port that a
    transfer of the old one still uses.
    """

    __slots__ = ("_first", "_held", "_last", "_next")

    def __init__(self, first: int | None = None, last: int | None = None) -> None:
        if (first is None) != (last is None):
            raise ValueError("give both ends of the port range, or neither")
        self._first = first
        self._last = last
        self._next = first
        self._held: set[int] = set()

    @property
    def range(self) -> tuple[int | None, int | None]:
        """(first, last) as configured; (None, None) for OS-chosen ports."""
        return (self._first, self._last)

    @property
    def size(self) -> int:
        if self._first is None or self._last is None:
            return 0
        return self._last - self._first + 1

    def listen(self, host: str, backlog: int = 4) -> socket.socket:
        """A non-blocking listening socket on ``host``; OSError when the range is full."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if self._first is None or self._last is None or self._next is None:
            return _listen_on(family, host, 0, backlog)
        for _ in range(self.size):
            port = self._next
            self._next = self._first if port >= self._last else port + 1
            if port in self._held:
                continue
            try:
                sock = _listen_on(family, host, port, backlog)
            except OSError as error:
                if error.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                continue
            self._held.add(port)
            return sock
        raise OSError(errno.EADDRINUSE, f"no free port in {self._first}-{self._last}")

    def release(self, port: int) -> None:
        """The transfer on ``port`` (or its listener's wait) is over: the port may serve again."""
        self._held.discard(port)

    @property
    def held(self) -> int:
        """Ports of the range in use now."""
        return len(self._held)


def _listen_on(family: int, host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Lets a port whose last transfer is in TIME_WAIT serve again; Linux
        # still refuses two listeners on one port, so pools cannot collide.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
