"""Log lines as RFC 5424 syslog messages, over a Unix datagram socket or UDP.

Each line becomes one datagram::

    <PRI>1 TIMESTAMP HOSTNAME ftplb PID MSGID - MSG

with facility ``daemon``, a severity chosen by the line's kind, MSGID the kind
(``session``, ``transfer``, ``warning`` ...), no structured data, and MSG the
line itself, as it would have been written on stderr (text or JSON).

Sending never blocks and never raises: a full socket buffer (EAGAIN) drops
the line and counts it. When the receiver cannot be reached at all (no
socket at the path, nobody on the UDP port), :meth:`SyslogTarget.send`
returns False so the caller can write the line elsewhere, and the socket is
opened again on a later line.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from ftplb.config.general import SyslogAddress

__all__ = ["MAX_DATAGRAM", "SEVERITY_OF", "SyslogTarget", "message"]

_DAEMON = 3
"""RFC 5424 facility 3: system daemons."""

_ERR, _WARNING, _INFO = 3, 4, 6

SEVERITY_OF: dict[str, int] = {"error": _ERR, "warning": _WARNING}
"""Severity by kind of line; any other kind is informational."""

_APP_NAME = "ftplb"

MAX_DATAGRAM = 8192
"""Bytes of a line too long for one datagram that are still sent (rsyslog's default limit)."""

_REOPEN_PAUSE = 1.0
"""Least seconds between two attempts to reopen a socket that failed."""


def message(kind: str, stamp: str, line: str, hostname: str, pid: int) -> bytes:
    """The RFC 5424 datagram of one log line of ``kind`` written at ``stamp``."""
    pri = _DAEMON * 8 + SEVERITY_OF.get(kind, _INFO)
    return f"<{pri}>1 {stamp} {hostname} {_APP_NAME} {pid} {kind} - {line}".encode(
        "utf-8", "backslashreplace"
    )


def _header_name(name: str) -> str:
    """A HOSTNAME as RFC 5424 allows: printable US-ASCII without spaces, or ``-``."""
    cleaned = "".join(c for c in name if "!" <= c <= "~")[:255]
    return cleaned or "-"


class SyslogTarget:
    """A non-blocking datagram socket to one syslog receiver."""

    __slots__ = ("_address", "_hostname", "_pid", "_retry_at", "_sock", "dropped")

    def __init__(self, address: SyslogAddress) -> None:
        self._address = address
        self._hostname = _header_name(socket.gethostname())
        self._pid = os.getpid()
        self._sock: socket.socket | None = None
        self._retry_at = 0.0
        self.dropped = 0
        """Lines dropped because the receiver's socket buffer was full."""

    def send(self, kind: str, stamp: str, line: str) -> bool:
        """Send one line; False when the receiver cannot be reached (the line was not sent).

        A line dropped on a full buffer counts as handled (True): retrying it
        elsewhere would only reorder the log.
        """
        sock = self._sock or self._open()
        if sock is None:
            return False
        datagram = message(kind, stamp, line, self._hostname, self._pid)
        try:
            sock.send(datagram)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError as error:
            if error.errno == errno.ENOBUFS:
                self.dropped += 1
            elif error.errno == errno.EMSGSIZE:
                self._send_cut(sock, datagram)
            else:
                # The receiver went away (restarted, or nobody on the UDP port): reopen later.
                self.close()
                self._retry_at = time.monotonic() + _REOPEN_PAUSE
                return False
        return True

    def _send_cut(self, sock: socket.socket, datagram: bytes) -> None:
        """A line too long for one datagram: send its start (receivers cut long ones anyway)."""
        try:
            sock.send(datagram[:MAX_DATAGRAM])
        except OSError:
            self.dropped += 1

    def _open(self) -> socket.socket | None:
        if time.monotonic() < self._retry_at:
            return None
        address = self._address
        try:
            if address.udp is not None:
                family = socket.AF_INET6 if ":" in address.udp.host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM)
                target: str | tuple[str, int] = (address.udp.host, address.udp.port)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                target = address.path
        except OSError:
            self._retry_at = time.monotonic() + _REOPEN_PAUSE
            return None
        try:
            sock.setblocking(False)
            sock.connect(target)
        except OSError:
            sock.close()
            self._retry_at = time.monotonic() + _REOPEN_PAUSE
            return None
        self._sock = sock
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
