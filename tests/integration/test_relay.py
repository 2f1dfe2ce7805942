"""The data-path relay over real loopback TCP sockets, on both engines and both loops.

Topology of every test::

    peer_a <-TCP-> relay_a  ==relay()==  relay_b <-TCP-> peer_b

The peers are blocking sockets driven from worker threads (each with a socket
timeout, so a broken relay fails a test instead of hanging it); the relay runs
on the event loop under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import os
import random
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - a dependency on Linux
    uvloop = None  # type: ignore[assignment]

from ftplb.balancing.client_limits import TokenBucket
from ftplb.runtime.pipes import DEFAULT_PIPE_SIZE, PipeBudget
from ftplb.runtime.relay import (
    CLEAN,
    PROGRESS_INTERVAL,
    RelayEnd,
    RelayOutcome,
    RelayResult,
    relay,
    splice_available,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")
MiB = 1024 * 1024
PEER_TIMEOUT = 30.0
SCENARIO_TIMEOUT = 60.0


# --------------------------------------------------------------------------- fixtures


def _tracking(loop_class: Any) -> Any:
    """A loop class that remembers which fds have a reader or writer registered.

    asyncio's remove_reader answers whether one was registered but uvloop's
    answers None, so the cleanup checks keep their own books.
    """

    class TrackingLoop(loop_class):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.watched: set[tuple[str, int]] = set()

        def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
            super().add_reader(fd, callback, *args)
            self.watched.add(("reader", fd))

        def remove_reader(self, fd: int) -> bool:
            self.watched.discard(("reader", fd))
            return bool(super().remove_reader(fd))

        def add_writer(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
            super().add_writer(fd, callback, *args)
            self.watched.add(("writer", fd))

        def remove_writer(self, fd: int) -> bool:
            self.watched.discard(("writer", fd))
            return bool(super().remove_writer(fd))

    return TrackingLoop


def _loop_factories() -> list[Any]:
    factories: list[Any] = [pytest.param(_tracking(asyncio.SelectorEventLoop), id="asyncio")]
    if uvloop is None:  # pragma: no cover - uvloop is a dependency on Linux
        factories.append(pytest.param(None, id="uvloop", marks=pytest.mark.skip("no uvloop")))
    else:
        factories.append(pytest.param(_tracking(uvloop.Loop), id="uvloop"))
    return factories


Runner = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture(params=_loop_factories())
def run(request: pytest.FixtureRequest) -> Iterator[Runner[Any]]:
    """Runs a scenario on the loop under test, bounded in time, and fails the
    test if anything reached the loop's exception handler (a leaked exception,
    a destroyed pending task, ...)."""
    leaked: list[dict[str, Any]] = []

    def run_scenario(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=request.param) as runner:
            runner.get_loop().set_exception_handler(lambda _loop, ctx: leaked.append(ctx))
            return runner.run(asyncio.wait_for(coro, SCENARIO_TIMEOUT))

    yield run_scenario
    assert not leaked, f"exceptions reached the event loop: {leaked}"


@pytest.fixture(
    params=[
        pytest.param(
            False,
            id="splice",
            marks=pytest.mark.skipif(not splice_available(), reason="no os.splice"),
        ),
        pytest.param(True, id="copy"),
    ]
)
def force_copy(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@dataclass
class Wiring:
    peer_a: socket.socket
    relay_a: socket.socket
    relay_b: socket.socket
    peer_b: socket.socket

    def close(self) -> None:
        for sock in (self.peer_a, self.relay_a, self.relay_b, self.peer_b):
            sock.close()


def _tcp_pair(buffer_size: int | None) -> tuple[socket.socket, socket.socket]:
    """(client, server) of one loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if buffer_size is not None:
            # Set before connecting so that the window scale matches; an
            # accepted socket inherits the listener's buffers.
            for sock in (client, listener):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    return client, server


@pytest.fixture
def make_wiring() -> Iterator[Callable[..., Wiring]]:
    made: list[Wiring] = []

    def make(buffer_size: int | None = None) -> Wiring:
        peer_a, relay_a = _tcp_pair(buffer_size)
        relay_b, peer_b = _tcp_pair(buffer_size)
        for peer in (peer_a, peer_b):
            peer.settimeout(PEER_TIMEOUT)
        for end in (relay_a, relay_b):
            end.setblocking(False)
        wiring = Wiring(peer_a, relay_a, relay_b, peer_b)
        made.append(wiring)
        return wiring

    yield make
    for wiring in made:
        wiring.close()


@pytest.fixture(scope="module")
def payload_50mb() -> bytes:
    return random.Random(1).randbytes(50 * 1000 * 1000)


# --------------------------------------------------------------------------- peer helpers


def send_all_then_eof(sock: socket.socket, data: bytes, chunk: int = 1 * MiB) -> None:
    view = memoryview(data)
    for start in range(0, len(view), chunk):
        sock.sendall(view[start : start + chunk])
    sock.shutdown(socket.SHUT_WR)


@dataclass
class Received:
    size: int
    sha256: str


def receive_until_eof(sock: socket.socket, chunk: int = 1 * MiB) -> Received:
    digest = hashlib.sha256()
    size = 0
    while data := sock.recv(chunk):
        digest.update(data)
        size += len(data)
    return Received(size, digest.hexdigest())


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    """MSG_WAITALL does not wait on a socket with a timeout (non-blocking underneath)."""
    parts = []
    while size > 0:
        data = sock.recv(min(size, 1 * MiB))
        if not data:
            break
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def assert_unregistered(*socks: socket.socket) -> None:
    """Nothing of the relay is left watching these sockets."""
    loop: Any = asyncio.get_running_loop()
    fds = {sock.fileno() for sock in socks}
    left = {(kind, fd) for kind, fd in loop.watched if fd in fds}
    assert not left, f"left registered: {left}"


def bytes_queued(sock: socket.socket) -> int:
    """Bytes waiting in the socket's receive queue (SIOCINQ)."""
    queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    return queued


async def assert_relay_inert(w: Wiring) -> None:
    """After the relay returned, bytes sent to its sockets stay unread."""
    await asyncio.to_thread(w.peer_a.sendall, b"late a")
    await asyncio.to_thread(w.peer_b.sendall, b"late b")
    await asyncio.sleep(0.1)  # a leftover callback would run now
    assert w.relay_a.recv(100) == b"late a"
    assert w.relay_b.recv(100) == b"late b"


def rst_close(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --------------------------------------------------------------------------- integrity


def test_one_way_50mb_arrives_intact(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring], payload_50mb: bytes
) -> None:
    w = make_wiring()

    async def scenario() -> tuple[RelayResult, Received]:
        def receive_then_close() -> Received:
            received = receive_until_eof(w.peer_b)
            w.peer_b.shutdown(socket.SHUT_WR)
            return received

        result, _, received = await asyncio.gather(
            relay(w.relay_a, w.relay_b, force_copy=force_copy),
            asyncio.to_thread(send_all_then_eof, w.peer_a, payload_50mb),
            asyncio.to_thread(receive_then_close),
        )
        return result, received

    result, received = run(scenario())
    assert received == Received(len(payload_50mb), sha256(payload_50mb))
    assert result == RelayResult(len(payload_50mb), 0, CLEAN, spliced=not force_copy)
    assert w.peer_a.recv(1) == b"", "a must see the EOF that b sent"


def test_both_ways_at_once(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring], payload_50mb: bytes
) -> None:
    w = make_wiring()
    up = payload_50mb[: 20 * MiB]
    down = payload_50mb[20 * MiB : 40 * MiB]

    async def scenario() -> tuple[RelayResult, Received, Received]:
        result, _, _, at_b, at_a = await asyncio.gather(
            relay(w.relay_a, w.relay_b, force_copy=force_copy),
            asyncio.to_thread(send_all_then_eof, w.peer_a, up, 300_000),
            asyncio.to_thread(send_all_then_eof, w.peer_b, down, 700_000),
            asyncio.to_thread(receive_until_eof, w.peer_b, 128 * 1024),
            asyncio.to_thread(receive_until_eof, w.peer_a, 2 * MiB),
        )
        return result, at_b, at_a

    result, at_b, at_a = run(scenario())
    assert at_b == Received(len(up), sha256(up))
    assert at_a == Received(len(down), sha256(down))
    assert (result.a_to_b, result.b_to_a, result.outcome) == (len(up), len(down), CLEAN)


def test_many_small_writes(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring]
) -> None:
    w = make_wiring()
    rng = random.Random(7)
    chunks = [rng.randbytes(rng.randint(1, 300)) for _ in range(4000)]
    expected = b"".join(chunks)

    def send_small() -> None:
        w.peer_a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in chunks:
            w.peer_a.sendall(chunk)
        w.peer_a.shutdown(socket.SHUT_WR)

    def receive_all() -> bytes:
        parts = []
        while data := w.peer_b.recv(4096):
            parts.append(data)
        w.peer_b.shutdown(socket.SHUT_WR)
        return b"".join(parts)

    async def scenario() -> tuple[RelayResult, bytes]:
        result, _, received = await asyncio.gather(
            relay(w.relay_a, w.relay_b, force_copy=force_copy),
            asyncio.to_thread(send_small),
            asyncio.to_thread(receive_all),
        )
        return result, received

    result, received = run(scenario())
    assert received == expected
    assert (result.a_to_b, result.b_to_a, result.outcome) == (len(expected), 0, CLEAN)


def test_zero_byte_transfer(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring]
) -> None:
    w = make_wiring()
    w.peer_a.shutdown(socket.SHUT_WR)
    w.peer_b.shutdown(socket.SHUT_WR)

    result = run(relay(w.relay_a, w.relay_b, force_copy=force_copy))
    assert result == RelayResult(0, 0, CLEAN, spliced=not force_copy)
    assert w.peer_a.recv(1) == b""
    assert w.peer_b.recv(1) == b""


# --------------------------------------------------------------------------- half-close


def test_half_close_keeps_the_other_direction_open(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring]
) -> None:
    w = make_wiring()
    request = os.urandom(3 * MiB + 17)
    response = os.urandom(2 * MiB + 5)

    async def scenario() -> RelayResult:
        task = asyncio.create_task(relay(w.relay_a, w.relay_b, force_copy=force_copy))
        await asyncio.to_thread(send_all_then_eof, w.peer_a, request)
        at_b = await asyncio.to_thread(receive_until_eof, w.peer_b)
        assert at_b == Received(len(request), sha256(request)), "EOF came before all bytes"

        await asyncio.sleep(0.1)
        assert not task.done(), "the relay ended while b could still send"

        await asyncio.to_thread(w.peer_b.sendall, response)
        received = await asyncio.to_thread(receive_exactly, w.peer_a, len(response))
        assert received == response
        await asyncio.sleep(0.05)
        assert not task.done(), "the relay ended before b closed"

        w.peer_b.shutdown(socket.SHUT_WR)
        result = await task
        assert await asyncio.to_thread(w.peer_a.recv, 1) == b"", "a must get b's EOF"
        return result

    result = run(scenario())
    assert result == RelayResult(len(request), len(response), CLEAN, spliced=not force_copy)


def test_finish_with_ends_when_the_payload_direction_ends(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring]
) -> None:
    """A download is over once b's EOF reached a, even though a never closes."""
    w = make_wiring()
    payload = os.urandom(2 * MiB + 3)

    async def scenario() -> RelayResult:
        task = asyncio.create_task(
            relay(w.relay_a, w.relay_b, force_copy=force_copy, finish_with="b_to_a")
        )
        await asyncio.to_thread(send_all_then_eof, w.peer_b, payload)
        at_a = await asyncio.to_thread(receive_until_eof, w.peer_a)
        assert at_a == Received(len(payload), sha256(payload))
        return await asyncio.wait_for(task, 5)  # peer_a is still open

    result = run(scenario())
    assert result == RelayResult(0, len(payload), CLEAN, spliced=not force_copy)


def test_one_way_transfer_uses_one_pipe(
    run: Runner[Any], make_wiring: Callable[..., Wiring]
) -> None:
    """Only the payload direction is spliced: half the pipes, half the pipe memory."""
    if not splice_available():
        pytest.skip("no splice here")
    w = make_wiring()
    budget = PipeBudget(max_bytes=8 * MiB, pipe_size=1 * MiB)
    payload = os.urandom(3 * MiB)

    async def scenario() -> tuple[RelayResult, int]:
        task = asyncio.create_task(relay(w.relay_a, w.relay_b, budget=budget, finish_with="a_to_b"))
        await asyncio.sleep(0.05)
        in_use = budget.in_use
        await asyncio.to_thread(send_all_then_eof, w.peer_a, payload)
        at_b = await asyncio.to_thread(receive_until_eof, w.peer_b)
        assert at_b == Received(len(payload), sha256(payload))
        return await asyncio.wait_for(task, 5), in_use

    result, in_use = run(scenario())
    assert in_use == 1 * MiB
    assert budget.in_use == 0
    assert result == RelayResult(len(payload), 0, CLEAN, spliced=True)


# --------------------------------------------------------------------------- backpressure


def test_slow_receiver_gets_everything_and_memory_stays_bounded(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring], payload_50mb: bytes
) -> None:
    # Small socket buffers make the bytes in flight small and predictable:
    # 4 socket buffers (the kernel doubles 128 KiB to 256 KiB each) plus what
    # the relay holds, one pipe (1 MiB) or buffer (256 KiB).
    w = make_wiring(buffer_size=128 * 1024)
    data = payload_50mb[: 24 * MiB]
    sent_so_far = [0]
    sender_done = threading.Event()

    def send_counting() -> None:
        view = memoryview(data)
        for start in range(0, len(view), 64 * 1024):
            w.peer_a.sendall(view[start : start + 64 * 1024])
            sent_so_far[0] = start + len(view[start : start + 64 * 1024])
        w.peer_a.shutdown(socket.SHUT_WR)
        sender_done.set()

    def receive_slowly() -> Received:
        digest = hashlib.sha256()
        size = 0
        since_pause = 0
        while data := w.peer_b.recv(64 * 1024):
            digest.update(data)
            size += len(data)
            since_pause += len(data)
            if since_pause >= 2 * MiB:  # keep pausing now and then
                time.sleep(0.02)
                since_pause = 0
        w.peer_b.shutdown(socket.SHUT_WR)
        return Received(size, digest.hexdigest())

    async def scenario() -> tuple[RelayResult, int, int, Received]:
        task = asyncio.create_task(relay(w.relay_a, w.relay_b, force_copy=force_copy))
        sender = asyncio.create_task(asyncio.to_thread(send_counting))
        # The receiver does not read at all for a while: the sender must stall.
        await asyncio.sleep(0.6)
        stalled_at = sent_so_far[0]
        await asyncio.sleep(0.4)
        still_at = sent_so_far[0]
        received = await asyncio.to_thread(receive_slowly)
        await sender
        return await task, stalled_at, still_at, received

    result, stalled_at, still_at, received = run(scenario())
    assert 0 < stalled_at == still_at, "the sender kept going while nobody read"
    assert stalled_at < 4 * MiB, f"{stalled_at} bytes were in flight: the relay buffered them"
    assert received == Received(len(data), sha256(data))
    assert result.a_to_b == len(data) and result.outcome == CLEAN


# --------------------------------------------------------------------------- errors


def test_reset_by_source_ends_relay_with_error(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring]
) -> None:
    w = make_wiring()
    data = os.urandom(1 * MiB)

    async def scenario() -> RelayResult:
        task = asyncio.create_task(relay(w.relay_a, w.relay_b, force_copy=force_copy))
        await asyncio.to_thread(w.peer_a.sendall, data)
        received = await asyncio.to_thread(receive_exactly, w.peer_b, len(data))
        assert received == data
        rst_close(w.peer_a)
        result = await task
        assert_unregistered(w.relay_a, w.relay_b)
        return result

    result = run(scenario())
    assert result == RelayResult(
        len(data), 0, RelayOutcome(RelayEnd.RESET, "a"), spliced=not force_copy
    )


def test_reset_by_destination_mid_transfer(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring], payload_50mb: bytes
) -> None:
    w = make_wiring()

    def send_until_refused() -> None:
        with contextlib.suppress(OSError):
            send_all_then_eof(w.peer_a, payload_50mb)

    async def scenario() -> RelayResult:
        task = asyncio.create_task(relay(w.relay_a, w.relay_b, force_copy=force_copy))
        sender = asyncio.create_task(asyncio.to_thread(send_until_refused))
        await asyncio.to_thread(receive_exactly, w.peer_b, 4 * MiB)
        rst_close(w.peer_b)
        result = await task
        assert_unregistered(w.relay_a, w.relay_b)
        # The caller closes; that unblocks the sender.
        w.relay_a.close()
        await sender
        return result

    result = run(scenario())
    assert result.outcome == RelayOutcome(RelayEnd.RESET, "b")
    assert 4 * MiB <= result.a_to_b < len(payload_50mb)


def test_rejects_blocking_sockets(run: Runner[Any], make_wiring: Callable[..., Wiring]) -> None:
    w = make_wiring()
    with pytest.raises(ValueError, match="non-blocking"):
        run(relay(w.peer_a, w.relay_b))


# --------------------------------------------------------------------------- idle timeout, progress


def test_idle_timeout(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring]
) -> None:
    w = make_wiring()

    async def scenario() -> tuple[RelayResult, float]:
        started = time.monotonic()
        result = await relay(w.relay_a, w.relay_b, idle_timeout=0.3, force_copy=force_copy)
        elapsed = time.monotonic() - started
        assert_unregistered(w.relay_a, w.relay_b)
        await assert_relay_inert(w)
        return result, elapsed

    result, elapsed = run(scenario())
    assert result == RelayResult(0, 0, RelayOutcome(RelayEnd.IDLE), spliced=not force_copy)
    # uvloop's clock is read once per loop turn and in whole milliseconds, so
    # its timer may fire a hair before 0.3 s of time.monotonic() have passed.
    assert 0.3 - 0.005 <= elapsed < 1.0


def test_idle_after_one_way_closed_has_its_own_reason(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring]
) -> None:
    """b got everything and its EOF, but never closes its own side (a slow reader)."""
    w = make_wiring()
    payload = os.urandom(100_000)

    async def scenario() -> RelayResult:
        task = asyncio.create_task(
            relay(w.relay_a, w.relay_b, idle_timeout=0.3, force_copy=force_copy)
        )
        await asyncio.to_thread(w.peer_a.sendall, payload)
        w.peer_a.shutdown(socket.SHUT_WR)
        received = await asyncio.to_thread(receive_until_eof, w.peer_b)
        assert received.sha256 == hashlib.sha256(payload).hexdigest()
        return await task

    result = run(scenario())
    # Not a plain "idle timeout": everything was passed on, the other way only
    # never closed; tcp-mode data connections log that as a normal end.
    assert result == RelayResult(
        len(payload), 0, RelayOutcome(RelayEnd.IDLE_AFTER_HALF_CLOSE), spliced=not force_copy
    )


def test_traffic_defers_the_idle_timeout(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring]
) -> None:
    w = make_wiring()

    def trickle() -> float:
        for _ in range(12):  # one byte every 0.1 s for 1.2 s, well past the timeout
            last_sent = time.monotonic()
            w.peer_a.sendall(b"x")
            time.sleep(0.1)
        return last_sent

    async def scenario() -> tuple[RelayResult, float]:
        task = asyncio.create_task(
            relay(w.relay_a, w.relay_b, idle_timeout=0.4, force_copy=force_copy)
        )
        last_sent = await asyncio.to_thread(trickle)
        assert not task.done(), "timed out although bytes kept moving"
        result = await task
        return result, time.monotonic() - last_sent

    result, quiet_for = run(scenario())
    assert result == RelayResult(12, 0, RelayOutcome(RelayEnd.IDLE), spliced=not force_copy)
    assert 0.4 <= quiet_for < 0.4 + 0.8
    assert receive_exactly(w.peer_b, 12) == b"x" * 12


def test_progress_is_reported_at_most_every_interval(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring]
) -> None:
    w = make_wiring()
    calls: list[tuple[float, int, int]] = []

    def trickle() -> None:
        deadline = time.monotonic() + 1.7
        while time.monotonic() < deadline:
            w.peer_a.sendall(os.urandom(1000))
            time.sleep(0.01)
        w.peer_a.shutdown(socket.SHUT_WR)

    def echo_count_then_close() -> None:
        receive_until_eof(w.peer_b)
        w.peer_b.sendall(b"done")
        w.peer_b.shutdown(socket.SHUT_WR)

    async def scenario() -> RelayResult:
        loop = asyncio.get_running_loop()
        result, _, _ = await asyncio.gather(
            relay(
                w.relay_a,
                w.relay_b,
                on_progress=lambda ab, ba: calls.append((loop.time(), ab, ba)),
                force_copy=force_copy,
            ),
            asyncio.to_thread(trickle),
            asyncio.to_thread(echo_count_then_close),
        )
        return result

    result = run(scenario())
    assert 2 <= len(calls) <= 4, calls
    times = [t for t, _, _ in calls]
    assert all(
        later - earlier >= PROGRESS_INTERVAL * 0.9 for earlier, later in itertools.pairwise(times)
    )
    totals = [(ab, ba) for _, ab, ba in calls]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    assert 0 < totals[-1][0] <= result.a_to_b
    assert result.b_to_a == 4 and result.outcome == CLEAN


def test_failing_progress_callback_propagates_after_cleanup(
    run: Runner[Any], make_wiring: Callable[..., Wiring]
) -> None:
    w = make_wiring()

    def explode(_ab: int, _ba: int) -> None:
        raise RuntimeError("bookkeeping broke")

    async def scenario() -> None:
        task = asyncio.create_task(relay(w.relay_a, w.relay_b, on_progress=explode))
        await asyncio.to_thread(w.peer_a.sendall, b"some bytes")
        with pytest.raises(RuntimeError, match="bookkeeping broke"):
            await task
        assert_unregistered(w.relay_a, w.relay_b)
        assert receive_exactly(w.peer_b, 10) == b"some bytes"
        await assert_relay_inert(w)

    run(scenario())


# --------------------------------------------------------------------------- cancellation


def test_cancellation_releases_everything(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring], payload_50mb: bytes
) -> None:
    w = make_wiring()
    budget = PipeBudget()

    def send_until_refused() -> None:
        with contextlib.suppress(OSError):
            send_all_then_eof(w.peer_a, payload_50mb)

    async def scenario() -> None:
        fds_before = open_fd_count()
        task = asyncio.create_task(
            relay(w.relay_a, w.relay_b, budget=budget, force_copy=force_copy)
        )
        sender = asyncio.create_task(asyncio.to_thread(send_until_refused))
        await asyncio.sleep(0.3)  # nobody reads at b: the relay sits on full buffers
        assert not task.done()
        pipe_fds = 0 if force_copy else 4
        assert open_fd_count() == fds_before + pipe_fds
        assert budget.in_use == (0 if force_copy else 2 * budget.pipe_size)

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert open_fd_count() == fds_before, "pipes left open"
        assert budget.in_use == 0
        assert_unregistered(w.relay_a, w.relay_b)
        queued = bytes_queued(w.relay_a)
        await asyncio.sleep(0.1)  # a leftover reader would take bytes now
        assert queued > 0 and bytes_queued(w.relay_a) >= queued
        w.relay_a.close()
        await sender

    run(scenario())


# --------------------------------------------------------------------------- TLS (copy engine)


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def _tls_wrap_a(
    w: Wiring, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
    """TLS between peer_a (client) and relay_a (the relay terminates TLS)."""
    server_ctx, client_ctx = contexts
    w.relay_a.settimeout(PEER_TIMEOUT)
    result: list[ssl.SSLSocket] = []
    thread = threading.Thread(
        target=lambda: result.append(server_ctx.wrap_socket(w.relay_a, server_side=True))
    )
    thread.start()
    tls_peer = client_ctx.wrap_socket(w.peer_a, server_hostname="localhost")
    thread.join(PEER_TIMEOUT)
    tls_relay = result[0]
    tls_relay.setblocking(False)
    # Wrapping detached the plain sockets: the wiring closes the TLS ones in their place.
    w.peer_a, w.relay_a = tls_peer, tls_relay
    return tls_peer, tls_relay


def _close_tls(sock: ssl.SSLSocket) -> None:
    """What the caller does after the relay: a proper TLS close (close_notify both ways)."""
    sock.setblocking(True)
    sock.settimeout(PEER_TIMEOUT)
    sock.unwrap()


def test_tls_download_ends_after_flush(
    run: Runner[Any], make_wiring: Callable[..., Wiring], tls_contexts: Any, payload_50mb: bytes
) -> None:
    w = make_wiring()
    tls_peer, tls_relay = _tls_wrap_a(w, tls_contexts)
    data = payload_50mb[: 8 * MiB]

    def download() -> Received:
        received = receive_until_eof(tls_peer)
        tls_peer.unwrap()
        return received

    async def scenario() -> tuple[RelayResult, Received]:
        client = asyncio.create_task(asyncio.to_thread(download))
        result, _ = await asyncio.gather(
            relay(tls_relay, w.relay_b),  # no force_copy: TLS must select the copy engine
            asyncio.to_thread(send_all_then_eof, w.peer_b, data),
        )
        # TLS has no half-close, so the relay stopped after the flush.
        assert not client.done(), "the client saw an EOF the relay did not send"
        await asyncio.to_thread(_close_tls, tls_relay)
        return result, await client

    result, received = run(scenario())
    assert result == RelayResult(0, len(data), CLEAN, spliced=False)
    assert received == Received(len(data), sha256(data))


def test_tls_upload_half_closes_the_plain_side(
    run: Runner[Any], make_wiring: Callable[..., Wiring], tls_contexts: Any, payload_50mb: bytes
) -> None:
    w = make_wiring()
    tls_peer, tls_relay = _tls_wrap_a(w, tls_contexts)
    data = payload_50mb[: 8 * MiB]

    def upload() -> None:
        tls_peer.sendall(data)
        tls_peer.unwrap()  # close_notify, the TLS EOF; waits for the relay's

    def receive_then_close() -> Received:
        received = receive_until_eof(w.peer_b)
        w.peer_b.shutdown(socket.SHUT_WR)
        return received

    async def scenario() -> tuple[RelayResult, Received]:
        client = asyncio.create_task(asyncio.to_thread(upload))
        result, received = await asyncio.gather(
            relay(tls_relay, w.relay_b), asyncio.to_thread(receive_then_close)
        )
        await asyncio.to_thread(_close_tls, tls_relay)
        await client
        return result, received

    result, received = run(scenario())
    assert received == Received(len(data), sha256(data))
    assert result == RelayResult(len(data), 0, CLEAN, spliced=False)


def test_tls_upload_goes_on_when_the_server_half_closes_first(
    run: Runner[Any], make_wiring: Callable[..., Wiring], tls_contexts: Any, payload_50mb: bytes
) -> None:
    """A server may shut down its own side of an upload's data connection at once.

    That EOF travels the return direction towards the TLS client, which cannot
    be half-closed: the relay must note it and go on with the payload, not end.
    """
    w = make_wiring()
    tls_peer, tls_relay = _tls_wrap_a(w, tls_contexts)
    data = payload_50mb[: 8 * MiB]
    w.peer_b.shutdown(socket.SHUT_WR)

    def upload() -> None:
        time.sleep(0.2)  # the relay sees the server's EOF before any payload
        tls_peer.sendall(data)
        tls_peer.unwrap()

    async def scenario() -> tuple[RelayResult, Received]:
        client = asyncio.create_task(asyncio.to_thread(upload))
        result, received = await asyncio.gather(
            relay(tls_relay, w.relay_b, finish_with="a_to_b"),
            asyncio.to_thread(receive_until_eof, w.peer_b),
        )
        await asyncio.to_thread(_close_tls, tls_relay)
        await client
        return result, received

    result, received = run(scenario())
    assert received == Received(len(data), sha256(data))
    assert result == RelayResult(len(data), 0, CLEAN, spliced=False)


# --------------------------------------------------------------------------- PipeBudget


def _real_pipe_size(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def test_budget_caps_enlarged_pipes_and_falls_back_to_default() -> None:
    budget = PipeBudget(max_bytes=3 * MiB, pipe_size=1 * MiB)
    opened = [budget.open_pipe() for _ in range(5)]
    try:
        assert [p.size for p in opened] == [MiB, MiB, MiB, DEFAULT_PIPE_SIZE, DEFAULT_PIPE_SIZE]
        assert [_real_pipe_size(p.write_fd) for p in opened] == [p.size for p in opened]
        assert budget.in_use == 3 * MiB

        budget.close_pipe(opened[0])
        budget.close_pipe(opened[0])  # twice is harmless
        assert budget.in_use == 2 * MiB
        opened[0] = budget.open_pipe()  # the freed share goes to the next pipe
        assert opened[0].size == MiB
        assert budget.in_use == 3 * MiB
    finally:
        for pipe in opened:
            budget.close_pipe(pipe)
    assert budget.in_use == 0


def test_budget_pipes_are_nonblocking_and_cloexec() -> None:
    budget = PipeBudget()
    pipe = budget.open_pipe()
    try:
        for fd in (pipe.read_fd, pipe.write_fd):
            assert os.get_blocking(fd) is False
            assert os.get_inheritable(fd) is False
    finally:
        budget.close_pipe(pipe)


def test_budget_rounds_sizes_like_the_kernel() -> None:
    budget = PipeBudget(max_bytes=10 * MiB, pipe_size=100_000)
    assert budget.pipe_size == 128 * 1024
    pipe = budget.open_pipe()
    try:
        assert pipe.size == _real_pipe_size(pipe.write_fd) == 128 * 1024
        assert budget.in_use == 128 * 1024
    finally:
        budget.close_pipe(pipe)


def test_budget_keeps_default_pipe_when_the_kernel_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_fcntl = fcntl.fcntl

    def refuse_to_grow(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETPIPE_SZ:  # what a non-root user gets past pipe-user-pages-soft
            raise PermissionError(1, "Operation not permitted")
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", refuse_to_grow)  # what pipes.py calls
    budget = PipeBudget()
    pipe = budget.open_pipe()
    try:
        assert pipe.size == DEFAULT_PIPE_SIZE and pipe.charged == 0
        assert budget.in_use == 0
    finally:
        budget.close_pipe(pipe)


@pytest.mark.skipif(not splice_available(), reason="no os.splice")
def test_relay_with_small_budget_mixes_pipe_sizes_and_releases_them(
    run: Runner[Any], make_wiring: Callable[..., Wiring], payload_50mb: bytes
) -> None:
    w = make_wiring()
    budget = PipeBudget(max_bytes=1 * MiB, pipe_size=1 * MiB)  # room for one big pipe
    up = payload_50mb[: 10 * MiB]
    down = payload_50mb[10 * MiB : 20 * MiB]

    async def scenario() -> tuple[RelayResult, Received, Received]:
        task = asyncio.create_task(relay(w.relay_a, w.relay_b, budget=budget))
        await asyncio.sleep(0)  # the relay has opened its pipes
        assert budget.in_use == 1 * MiB, "one pipe enlarged, the other left at 64K"
        result, _, _, at_b, at_a = await asyncio.gather(
            task,
            asyncio.to_thread(send_all_then_eof, w.peer_a, up),
            asyncio.to_thread(send_all_then_eof, w.peer_b, down),
            asyncio.to_thread(receive_until_eof, w.peer_b),
            asyncio.to_thread(receive_until_eof, w.peer_a),
        )
        return result, at_b, at_a

    result, at_b, at_a = run(scenario())
    assert at_b == Received(len(up), sha256(up))
    assert at_a == Received(len(down), sha256(down))
    assert result == RelayResult(len(up), len(down), CLEAN, spliced=True)
    assert budget.in_use == 0


# --------------------------------------------------------------------------- pacing


def _bucket(rate: int) -> TokenBucket:
    return TokenBucket(rate, time.monotonic)


def _paced_time(size: int, rate: int) -> float:
    """The least time ``size`` bytes take at ``rate``: a full bucket goes at once."""
    return (size - _bucket(rate).capacity) / rate


def test_paced_relay_moves_at_the_rate_and_intact(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring], payload_50mb: bytes
) -> None:
    w = make_wiring()
    data = payload_50mb[: 3 * 1000 * 1000]
    rate = 4_000_000

    async def scenario() -> tuple[RelayResult, Received, float]:
        started = time.monotonic()
        result, _, received = await asyncio.gather(
            relay(
                w.relay_a,
                w.relay_b,
                force_copy=force_copy,
                pace=(_bucket(rate),),
                finish_with="a_to_b",
            ),
            asyncio.to_thread(send_all_then_eof, w.peer_a, data),
            asyncio.to_thread(receive_until_eof, w.peer_b),
        )
        elapsed = time.monotonic() - started
        assert_unregistered(w.relay_a, w.relay_b)
        return result, received, elapsed

    result, received, elapsed = run(scenario())
    assert received == Received(len(data), sha256(data))
    assert result.a_to_b == len(data) and result.spliced is not force_copy
    assert elapsed >= _paced_time(len(data), rate) * 0.98
    assert elapsed < _paced_time(len(data), rate) * 2


def test_relays_sharing_a_bucket_share_its_rate(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring], payload_50mb: bytes
) -> None:
    first, second = make_wiring(), make_wiring()
    data = payload_50mb[: 2 * 1000 * 1000]
    rate = 4_000_000
    shared = _bucket(rate)

    async def scenario() -> tuple[list[Received], float]:
        started = time.monotonic()
        results = await asyncio.gather(
            *(
                relay(
                    w.relay_a,
                    w.relay_b,
                    force_copy=force_copy,
                    pace=(shared,),
                    finish_with="a_to_b",
                )
                for w in (first, second)
            ),
            *(asyncio.to_thread(send_all_then_eof, w.peer_a, data) for w in (first, second)),
            *(asyncio.to_thread(receive_until_eof, w.peer_b) for w in (first, second)),
        )
        return [r for r in results if isinstance(r, Received)], time.monotonic() - started

    received, elapsed = run(scenario())
    assert received == [Received(len(data), sha256(data))] * 2
    assert elapsed >= _paced_time(2 * len(data), rate) * 0.98


def test_the_strictest_bucket_sets_the_pace(
    run: Runner[Any], make_wiring: Callable[..., Wiring], payload_50mb: bytes
) -> None:
    w = make_wiring()
    data = payload_50mb[: 3 * 1000 * 1000]
    slow = 2_000_000

    async def scenario() -> float:
        started = time.monotonic()
        await asyncio.gather(
            relay(
                w.relay_a,
                w.relay_b,
                pace=(_bucket(1000 * slow), _bucket(slow)),
                finish_with="a_to_b",
            ),
            asyncio.to_thread(send_all_then_eof, w.peer_a, data),
            asyncio.to_thread(receive_until_eof, w.peer_b),
        )
        return time.monotonic() - started

    assert run(scenario()) >= _paced_time(len(data), slow) * 0.98


def test_tls_download_is_paced(
    run: Runner[Any], make_wiring: Callable[..., Wiring], tls_contexts: Any, payload_50mb: bytes
) -> None:
    w = make_wiring()
    tls_peer, tls_relay = _tls_wrap_a(w, tls_contexts)
    data = payload_50mb[: 3 * 1000 * 1000]
    rate = 2_000_000

    def download() -> Received:
        received = receive_until_eof(tls_peer)
        tls_peer.unwrap()
        return received

    async def scenario() -> tuple[Received, float]:
        started = time.monotonic()
        client = asyncio.create_task(asyncio.to_thread(download))
        await asyncio.gather(
            relay(tls_relay, w.relay_b, pace=(_bucket(rate),)),
            asyncio.to_thread(send_all_then_eof, w.peer_b, data),
        )
        await asyncio.to_thread(_close_tls, tls_relay)
        received = await client
        return received, time.monotonic() - started

    received, elapsed = run(scenario())
    assert received == Received(len(data), sha256(data))
    assert elapsed >= _paced_time(len(data), rate) * 0.98


def test_cancelling_a_paused_relay_leaves_no_timer_behind(
    run: Runner[Any], force_copy: bool, make_wiring: Callable[..., Wiring]
) -> None:
    w = make_wiring()
    bucket = _bucket(100_000)  # 25 kB at once, then paused for a quarter second

    async def scenario() -> None:
        task = asyncio.create_task(
            relay(w.relay_a, w.relay_b, force_copy=force_copy, pace=(bucket,))
        )
        await asyncio.to_thread(w.peer_a.sendall, b"x" * 64 * 1024)
        got = await asyncio.to_thread(receive_exactly, w.peer_b, bucket.capacity)
        assert len(got) == bucket.capacity
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_unregistered(w.relay_a, w.relay_b)
        queued = bytes_queued(w.relay_a)
        await asyncio.sleep(bucket.wait() + 0.2)  # a leftover resume timer would read now
        assert queued > 0 and bytes_queued(w.relay_a) == queued

    run(scenario())
