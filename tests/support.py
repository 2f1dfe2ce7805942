"""Small helpers shared by the tests: polling, free ports, passive ranges, skip-or-fail."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import NoReturn

import pytest

POLL_INTERVAL = 0.02


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``condition`` until it is true and return when that was (``time.monotonic()``).

    The condition is checked at least once, even with ``timeout`` 0; after
    ``timeout`` seconds without it the test fails, naming ``what`` it waited for.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.monotonic()
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def connect_refused(host: str, port: int) -> bool:
    """True when a connect to (host, port) is refused right now (nothing listens)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def neighbouring_free_ports(host: str = "127.0.0.1") -> int:
    """The first of two neighbouring ports that are free on ``host`` right now.

    Taken below the kernel's usual ephemeral range (32768 and up), so that no
    outgoing connection of another test takes one of them meanwhile.
    """
    first_choice = 20000 + (os.getpid() * 7) % 12000
    for offset in range(0, 12000, 2):
        first = 20000 + (first_choice - 20000 + offset) % 12000
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((host, first))
                b.bind((host, first + 1))
        except OSError:
            continue
        return first
    raise AssertionError(f"no two free neighbouring ports on {host}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class _PortArea:
    """Hands out consecutive port ranges from ``ports``, wrapping around at its end.

    Each process starts in a window of its own (chosen by its pid), so test
    runs side by side on one machine seldom take the same ports.
    """

    def __init__(self, ports: range, windows: int, window_size: int) -> None:
        self.ports = ports
        self._next = ports.start + (os.getpid() % windows) * window_size

    def take(self, size: int) -> str:
        if self._next + size > self.ports.stop:
            self._next = self.ports.start
        first = self._next
        self._next += size
        return f"{first}-{first + size - 1}"


PASSIVE_AREA = range(41000, 60000)
"""Where :func:`passive_range` takes the balancers' passive ranges from."""

_PASSIVE = _PortArea(PASSIVE_AREA, windows=50, window_size=200)

# Every port of a range that must bind in full (the servers' own ranges in tcp
# mode) stays below the kernel's ephemeral ports (32768 and up): a local port of
# some outgoing connection, or its TIME_WAIT, would block the bind.
_BINDABLE = _PortArea(range(20000, 32000), windows=20, window_size=600)


def passive_range(size: int = 100, *, bindable: bool = False) -> str:
    """A passive port range ``"first-last"``, distinct from the others of this run.

    By default it lies in :data:`PASSIVE_AREA`, among the ephemeral ports, which
    suits a balancer that skips a busy port. ``bindable=True`` gives one below
    the ephemeral ports, for users that need every port of it to bind.
    """
    return (_BINDABLE if bindable else _PASSIVE).take(size)


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def skip_or_fail(message: str) -> NoReturn:
    """Skip a test that cannot run on this machine; under CI (``CI`` set) fail it
    instead, so CI never passes by skipping everything."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
