"""The systemd notify protocol: tell the service manager when ftplb is ready, reloading, stopping.

systemd (``Type=notify``) names a datagram socket in ``$NOTIFY_SOCKET``; a
message is newline-separated ``KEY=VALUE`` assignments (sd_notify(3)). A path
that starts with "@" is in the abstract namespace. Without the variable,
every call here does nothing, so a process not run by systemd pays nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["NOTIFY_SOCKET_ENV", "Notifier", "format_notification", "monotonic_usec"]

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def format_notification(fields: Mapping[str, object]) -> bytes:
    """One notify datagram: ``KEY=VALUE`` lines, in the order given.

    A value cannot span lines: a newline would start a new assignment, so it
    becomes a space.
    """
    lines = []
    for key, value in fields.items():
        if not key or not key.isupper() or "=" in key:
            raise ValueError(f"invalid notify key {key!r}")
        text = str(value).replace("\r", " ").replace("\n", " ")
        lines.append(f"{key}={text}\n")
    return "".join(lines).encode("utf-8")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, what ``MONOTONIC_USEC=`` of a reload carries."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _socket_address(path: str) -> str | bytes:
    if path.startswith("@"):
        return b"\0" + path[1:].encode("utf-8")
    return path


class Notifier:
    """Sends notifications to the socket in ``$NOTIFY_SOCKET``, if there is one.

    A failed send is ignored: the service manager going away must not stop
    the balancer.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address or None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        environ = os.environ if environ is None else environ
        return cls(environ.get(NOTIFY_SOCKET_ENV))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: object) -> None:
        if self.address is None:
            return
        message = format_notification(fields)
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
        ):
            sock.sendto(message, _socket_address(self.address))

    def ready(self, status: str) -> None:
        """Every listener is open and serves (also: a reload has ended)."""
        self.send(READY=1, MAINPID=os.getpid(), STATUS=status)

    def reloading(self, status: str = "reloading the configuration") -> None:
        self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS=status)

    def stopping(self, status: str = "stopping: running sessions finish") -> None:
        self.send(STOPPING=1, STATUS=status)
