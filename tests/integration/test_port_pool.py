"""The passive port pool: a port stays held until its transfer releases it, reloads included."""

from __future__ import annotations

import errno
import socket

import pytest

from ftplb.runtime.ports import PortPool
from tests.support import passive_range

pytestmark = pytest.mark.integration


def two_free_ports() -> int:
    """The first of two neighbouring ports that are free on 127.0.0.1 right now."""
    for _ in range(50):
        first = int(passive_range().split("-")[0])
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", first))
                b.bind(("127.0.0.1", first + 1))
            return first
        except OSError:
            continue
    raise AssertionError("no two free neighbouring ports")


def test_a_held_port_is_not_handed_out_again_until_released() -> None:
    first = two_free_ports()
    pool = PortPool(first, first + 1)
    one = pool.listen("127.0.0.1")
    # The listener closes once its client connected; the transfer still runs on the port.
    held = one.getsockname()[1]
    one.close()
    two = pool.listen("127.0.0.1")
    assert (held, two.getsockname()[1]) == (first, first + 1)
    with pytest.raises(OSError) as raised:
        pool.listen("127.0.0.1")  # both held: the range is full
    assert raised.value.errno == errno.EADDRINUSE
    assert pool.held == 2
    pool.release(held)
    three = pool.listen("127.0.0.1")
    assert three.getsockname()[1] == held
    for sock in (two, three):
        sock.close()


def test_a_port_bound_elsewhere_is_skipped() -> None:
    first = two_free_ports()
    pool = PortPool(first, first + 1)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", first))
        other.listen(1)
        got = pool.listen("127.0.0.1")
        assert got.getsockname()[1] == first + 1
        got.close()
    assert pool.held == 1
