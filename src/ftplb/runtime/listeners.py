"""Listening sockets for frontends, with error messages an administrator can act on."""

from __future__ import annotations

import errno
import socket


class ListenError(Exception):
    """A listener could not be opened; the message says where and why."""


def show_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking listening socket; ListenError if the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "[::]" and "0.0.0.0" are separate binds in the config; keep them apart.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        message = f"cannot listen on {show_address(host, port)}: {error.strerror or error}"
        ephemeral = ephemeral_ports()
        if error.errno == errno.EADDRINUSE and ephemeral is not None:
            first, last = ephemeral
            if first <= port <= last:
                # Any outgoing connection (or its TIME_WAIT) may hold a port of
                # the kernel's ephemeral range at any moment.
                message += (
                    f" (the port is in the kernel's ephemeral range {first}-{last}, "
                    "net.ipv4.ip_local_port_range: choose ports outside it)"
                )
        raise ListenError(message) from error
    return sock


def ephemeral_ports() -> tuple[int, int] | None:
    """The kernel's range of ports for outgoing connections, if it can be read."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as file:
            first, last = file.read().split()
        return int(first), int(last)
    except (OSError, ValueError):
        return None
