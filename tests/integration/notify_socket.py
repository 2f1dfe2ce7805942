"""A real systemd notify socket for tests: what a ``Type=notify`` service manager receives."""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

_UCRED = struct.Struct("3i")  # pid, uid, gid


@dataclass(frozen=True)
class Notification:
    fields: dict[str, str]
    sender_pid: int
    """The sending process, as the kernel reports it (SCM_CREDENTIALS)."""


class NotifySocket:
    """A bound AF_UNIX datagram socket; ``address`` is what goes into ``$NOTIFY_SOCKET``.

    ``abstract=True`` binds in the abstract namespace ("@name").
    """

    def __init__(self, directory: Path, *, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = f"ftplb-test-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind(b"\0" + name.encode())
            self.address = "@" + name
        else:
            path = directory / "notify.sock"
            self.sock.bind(str(path))
            path.chmod(0o777)  # a process that dropped root must still reach it
            self.address = str(path)

    def next(self, timeout: float = 20.0) -> Notification:
        """The next datagram; fails the test after ``timeout`` seconds without one."""
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
        except TimeoutError:
            raise AssertionError(f"no notification within {timeout:.0f} s") from None
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(payload[: _UCRED.size])[0]
        fields: dict[str, str] = {}
        for line in data.decode().splitlines():
            key, _, value = line.partition("=")
            fields[key] = value
        return Notification(fields, pid)

    def nothing_pending(self) -> bool:
        """True when no datagram waits right now."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
        return False

    def close(self) -> None:
        self.sock.close()
