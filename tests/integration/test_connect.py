"""``runtime.connect.open_connection`` on real loopback sockets, with asyncio's loop and uvloop's.

Over loopback a connect has usually finished by the time ``connect_ex``
returns, and ``open_connection`` settles it at once; the tests also force the
slow path (a listener whose accept queue is full drops the SYN) so that the
writability callback, its cancellation and its errors stay covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from ftplb.runtime.connect import open_connection

pytestmark = pytest.mark.integration

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
RUNNERS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=list(RUNNERS))
def run(request: pytest.FixtureRequest) -> Runner:
    return RUNNERS[request.param]


@contextlib.contextmanager
def listening(host: str = "127.0.0.1", backlog: int = 16) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen(backlog)
        yield listener


def test_connects_at_once_over_loopback(run: Runner) -> None:
    with listening() as listener:
        port = listener.getsockname()[1]

        async def main() -> tuple[str, int]:
            future = open_connection(asyncio.get_running_loop(), "127.0.0.1", port)
            # Settled before the loop runs again: the fast path was taken.
            assert future.done()
            sock = await future
            with sock:
                assert sock.gettimeout() == 0.0
                peer: tuple[str, int] = sock.getpeername()
                return peer

        assert run(main()) == ("127.0.0.1", port)


def test_binds_the_source_address_of_the_same_family(run: Runner) -> None:
    with listening() as listener:
        port = listener.getsockname()[1]

        async def main() -> list[str]:
            loop = asyncio.get_running_loop()
            sources = []
            # An IPv6 source is ignored for an IPv4 destination, not an error.
            for source in ("127.0.0.77", "::1"):
                with await open_connection(loop, "127.0.0.1", port, source) as sock:
                    sources.append(sock.getsockname()[0])
            return sources

        assert run(main()) == ["127.0.0.77", "127.0.0.1"]


def test_a_refused_connect_fails_with_econnrefused(run: Runner) -> None:
    with listening() as listener:
        port = listener.getsockname()[1]
    # The listener is closed: nothing listens on the port any more.

    async def main() -> None:
        await open_connection(asyncio.get_running_loop(), "127.0.0.1", port)

    with pytest.raises(OSError) as raised:
        run(main())
    assert raised.value.errno == errno.ECONNREFUSED


def _fill_accept_queue(listener: socket.socket) -> list[socket.socket]:
    """Connections that fill ``listener``'s accept queue (backlog 0 holds one)."""
    queued = []
    address = listener.getsockname()
    for _ in range(4):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(address)
        queued.append(sock)
    return queued


def test_a_pending_connect_completes_once_the_listener_makes_room(run: Runner) -> None:
    with listening(backlog=0) as listener:
        port = listener.getsockname()[1]
        queued = _fill_accept_queue(listener)
        try:

            async def main() -> tuple[bool, tuple[str, int]]:
                loop = asyncio.get_running_loop()
                future = open_connection(loop, "127.0.0.1", port)
                pending = not future.done()
                # Make room: the SYN's retransmission (after about 1 s) gets in.
                listener.setblocking(False)
                for _ in queued:
                    with contextlib.suppress(BlockingIOError):
                        listener.accept()[0].close()
                drainer = loop.call_later(0.5, _drain, listener)
                try:
                    async with asyncio.timeout(10):
                        sock = await future
                finally:
                    drainer.cancel()
                with sock:
                    return pending, sock.getpeername()

            pending, peer = run(main())
        finally:
            for sock in queued:
                sock.close()
    assert pending, "the connect settled at once: the slow path was not exercised"
    assert peer == ("127.0.0.1", port)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _drain(listener: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError):
        while True:
            listener.accept()[0].close()


def test_cancelling_a_pending_connect_closes_its_socket(run: Runner) -> None:
    with listening(backlog=0) as listener:
        port = listener.getsockname()[1]
        queued = _fill_accept_queue(listener)
        try:

            async def main() -> tuple[bool, int, int]:
                loop = asyncio.get_running_loop()
                before = _open_fds()
                future = open_connection(loop, "127.0.0.1", port)
                assert not future.done()
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await future
                # The loop must not call back into a closed socket afterwards.
                await asyncio.sleep(0.05)
                return future.cancelled(), before, _open_fds()

            cancelled, before, after = run(main())
            assert cancelled
            assert after == before, "the pending connect's socket was left open"
        finally:
            for sock in queued:
                sock.close()
