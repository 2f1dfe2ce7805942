"""The passive port pool: a port stays held until its transfer releases it, reloads included."""

from __future__ import annotations

import errno
import socket

import pytest

from ftplb.runtime.ports import PortPool
from tests.support import neighbouring_free_ports

pytestmark = pytest.mark.integration


def test_a_held_port_is_not_handed_out_again_until_released() -> None:
    first = neighbouring_free_ports()
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
    first = neighbouring_free_ports()
    pool = PortPool(first, first + 1)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", first))
        other.listen(1)
        got = pool.listen("127.0.0.1")
        assert got.getsockname()[1] == first + 1
        got.close()
    assert pool.held == 1
