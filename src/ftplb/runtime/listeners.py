"""Listening sockets for frontends, with error messages an administrator can act on.

In a worker process of ``workers = N`` (see :func:`share_listeners`), every
frontend listener is opened with SO_REUSEPORT, so that the N workers listen
on the same ports, and carries the program that steers each client IP to one
worker (:mod:`ftplb.runtime.steering`). Passive data listeners do not come
from here: each worker has its own slice of the passive ports.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ftplb.runtime.steering import SteeringError, attach_steering


class ListenError(Exception):
    """A listener could not be opened; the message says where and why."""


def show_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class _Sharing:
    workers: int
    on_unsteered: Callable[[str], None]
    owner: tuple[int, int] | None = None
    steered: bool = True


_sharing: _Sharing | None = None


def share_listeners(
    workers: int, on_unsteered: Callable[[str], None], owner: tuple[int, int] | None = None
) -> None:
    """Make this process one of ``workers`` processes that share every frontend listener.

    Call it once, before any listener opens; a worker process calls it at
    start. From then on :func:`listening_socket` joins the SO_REUSEPORT group
    of its address and attaches the steering program. If the kernel refuses
    the program, ``on_unsteered`` gets the reason once, and connections are
    spread by the kernel's default 4-tuple hash.

    ``owner`` (uid, gid) is the user the workers drop to: every shared socket
    is given to it before it binds. The kernel lets a socket join a
    SO_REUSEPORT group only if the socket's owner is the group's, and a
    worker restarted as root must join groups that dropped workers opened
    on a reload.
    """
    global _sharing  # noqa: PLW0603 - membership of a reuseport group is per process
    _sharing = _Sharing(workers, on_unsteered, owner) if workers > 1 else None


def resolve_host(host: str) -> str:
    """The address to bind for a configured host ("localhost" is the IPv4 loopback)."""
    return "127.0.0.1" if host == "localhost" else host


def ensure_unclaimed(addresses: Iterable[tuple[str, int]]) -> None:
    """ListenError for the first address that some other socket already listens on.

    The workers of one run join a SO_REUSEPORT group, and so would the
    workers of a second run by the same user: the two runs would then share
    the clients without a word. The master therefore binds every address
    once, without SO_REUSEPORT, before its first worker starts.
    """
    for host, port in addresses:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind((host, port))
            except OSError as error:
                raise ListenError(_listen_error(host, port, error)) from error


def listening_socket(host: str, port: int, backlog: int, *, steered: bool = True) -> socket.socket:
    """A non-blocking listening socket; ListenError if the address cannot be bound.

    Shared by workers, it steers each client IP to one worker unless ``steered``
    is False: then the kernel spreads connections by their whole 4-tuple.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sharing = _sharing
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sharing is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if sharing.owner is not None and os.geteuid() == 0:
                os.fchown(sock.fileno(), *sharing.owner)
        if family == socket.AF_INET6:
            # "[::]" and "0.0.0.0" are separate binds in the config; keep them apart.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
        if sharing is not None and steered:
            _steer(sock, sharing)
    except OSError as error:
        sock.close()
        raise ListenError(_listen_error(host, port, error)) from error
    return sock


def _listen_error(host: str, port: int, error: OSError) -> str:
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
    return message


def ephemeral_ports() -> tuple[int, int] | None:
    """The kernel's range of ports for outgoing connections, if it can be read."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as file:
            first, last = file.read().split()
        return int(first), int(last)
    except (OSError, ValueError):
        return None


def _steer(sock: socket.socket, sharing: _Sharing) -> None:
    if not sharing.steered:
        return  # refused once: the kernel will refuse it on every socket
    try:
        attach_steering(sock, sharing.workers)
    except SteeringError as error:
        sharing.steered = False
        sharing.on_unsteered(str(error))


class KeptListeners:
    """Listening sockets that outlive the generation that opened them.

    A reload must never close a listening socket: a connect that arrives
    while no socket listens is refused. Every generation therefore gets its
    own duplicate of one kept socket per address, and closes only that
    duplicate when it stops accepting. While any duplicate or the kept socket
    is open, the kernel goes on queueing connections, and a worker's place in
    its SO_REUSEPORT group (which the steering program counts on) never moves.
    """

    def __init__(self) -> None:
        self._sockets: dict[tuple[str, int], socket.socket] = {}

    def open(self, host: str, port: int, backlog: int, *, steered: bool = True) -> socket.socket:
        """A duplicate of the socket kept for (host, port), opened now if there is none
        (``steered`` as for :func:`listening_socket`; a kept socket keeps its steering)."""
        kept = self._sockets.get((host, port))
        if kept is None:
            kept = listening_socket(host, port, backlog, steered=steered)
            self._sockets[(host, port)] = kept
        duplicate = kept.dup()
        duplicate.setblocking(False)
        return duplicate

    def keep_only(self, addresses: Iterable[tuple[str, int]]) -> None:
        """Close the kept sockets of every other address (binds a reload removed)."""
        wanted = set(addresses)
        for address in list(self._sockets):
            if address not in wanted:
                self._sockets.pop(address).close()

    def close(self) -> None:
        """Close every kept socket: from now on, connects are refused once no
        generation listens on its duplicate either."""
        self.keep_only(())
