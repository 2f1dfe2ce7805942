"""The data-path relay: moves bytes both ways between two connected sockets.

Two engines share one control structure (a ``_Session`` with one ``_Direction``
per way):

* **splice** (the default on Linux): ``os.splice`` socket -> pipe -> socket, so
  the payload never enters Python. One pipe per direction.
* **copy** (no ``os.splice``, a TLS socket, or ``force_copy``): ``recv_into`` a
  fixed 256 KiB buffer per direction, then ``send`` from it.

Both are driven by the event loop's readiness callbacks (``add_reader`` /
``add_writer``), never by streams or protocols, which cost 2-5x more CPU per
byte. A direction runs this loop (see the project's performance notes):

1. When the source is readable, move up to a pipe (or buffer) full from it.
   A read of 0 bytes is EOF.
2. Flush: move everything buffered to the destination.
3. If the destination would block, stop watching the source and watch the
   destination for writability instead (backpressure: memory stays bounded by
   one pipe or buffer per direction). Resume at 2 when it is writable.
4. At EOF with nothing left buffered, half-close the destination with
   ``shutdown(SHUT_WR)``. The relay returns when both directions are done.

The source is only watched while the pipe is empty. That matters because
EAGAIN from splice(socket -> pipe) is ambiguous (an empty socket, or a pipe
that is "full" below its size because it fills per packet fragment); with an
empty pipe it can only mean the socket is empty. The bytes in the pipe are still
counted, since splice(pipe -> socket) may move only part of them.

**Pacing** (transfer rate limits): with ``pace``, a direction moves at most the
tokens its buckets hold, so splice stays zero-copy and only its length
shrinks. With the buckets empty, it stops watching the source and resumes
from a ``call_later`` timer once they hold a chunk again. Without ``pace``,
the data path pays one attribute check per round.

It is over 500 lines because the splice and copy engines share one control
structure; splitting the engines apart would split that structure too.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Literal

from ftplb.balancing.client_limits import TokenBucket, allowance, take, wait
from ftplb.runtime.pipes import Pipe, PipeBudget, default_budget

__all__ = [
    "CLEAN",
    "COPY_BUFFER_SIZE",
    "PROGRESS_INTERVAL",
    "RelayEnd",
    "RelayMeter",
    "RelayOutcome",
    "RelayResult",
    "relay",
    "splice_available",
]

COPY_BUFFER_SIZE = 256 * 1024
"""Per-direction buffer of the copy engine (the size that measured best on uvloop)."""

RETURN_BUFFER_SIZE = 4 * 1024
"""Copy buffer of the direction that carries no payload in a one-way transfer.

It normally carries only an EOF, so it is kept small: a bytearray is zeroed
when made, and a bigger one cost more than the rest of the relay set-up.
Stray bytes still pass, a page per read."""

PROGRESS_INTERVAL = 0.5
"""Least time in seconds between two ``on_progress`` calls."""


class RelayEnd(Enum):
    """How a relay ended; what a caller decides on, where the log shows text."""

    CLOSED = auto()
    """A clean EOF both ways (or, one-way, on the payload's way)."""
    IDLE = auto()
    """No byte moved either way for the idle timeout."""
    IDLE_AFTER_HALF_CLOSE = auto()
    """The idle timeout struck after one way had passed its EOF on: everything
    sent was relayed, only the other side never closed its own way (a client
    still reading what the kernel holds for it, say)."""
    RESET = auto()
    """A reset or broken pipe on ``side``."""
    SOCKET_ERROR = auto()
    """Another socket error on ``side`` (its errno name is the detail)."""
    TLS_ERROR = auto()
    """A TLS error on ``side`` (its reason is the detail)."""


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    """How a relay ended, and on which side: ``"a"`` or ``"b"``, for the errors.

    The caller knows what ``a`` and ``b`` are (the client, the server) and
    names them in its logs: the relay never writes a text of its own.
    """

    end: RelayEnd
    side: str = ""
    detail: str = ""


CLEAN = RelayOutcome(RelayEnd.CLOSED)

_ROUNDS_PER_WAKEUP = 4
"""Read+flush rounds per readiness callback before yielding to the loop.

More than one saves an epoll round trip when the source refills while we flush
(the common case at full speed); a small bound keeps one busy relay from
starving the other connections of the event loop.
"""

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)

_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ENOTCONN})

ProgressCallback = Callable[[int, int], None]


def splice_available() -> bool:
    """Whether this platform has ``os.splice`` (Linux, Python 3.10+)."""
    return hasattr(os, "splice")


@dataclass(frozen=True, slots=True)
class RelayResult:
    """How a relay ended."""

    a_to_b: int
    """Bytes delivered from socket ``a`` to socket ``b``."""
    b_to_a: int
    outcome: RelayOutcome
    spliced: bool
    """True if the zero-copy engine moved the bytes."""


class RelayMeter:
    """The running byte totals of one relay, readable while it runs and after it ends.

    It reads the counters the relay keeps anyway for its result, so watching
    a transfer costs nothing on the data path: whoever wants progress reads
    it when it likes (the metrics, once a second).
    """

    __slots__ = ("_a_to_b", "_b_to_a")

    def __init__(self) -> None:
        self._a_to_b: _Direction | None = None
        self._b_to_a: _Direction | None = None

    def _bind(self, a_to_b: _Direction, b_to_a: _Direction) -> None:
        self._a_to_b, self._b_to_a = a_to_b, b_to_a

    @property
    def a_to_b(self) -> int:
        """Bytes delivered from ``a`` to ``b`` so far (0 before the relay starts)."""
        return self._a_to_b.sent if self._a_to_b is not None else 0

    @property
    def b_to_a(self) -> int:
        return self._b_to_a.sent if self._b_to_a is not None else 0


async def relay(
    a: socket.socket,
    b: socket.socket,
    *,
    budget: PipeBudget | None = None,
    idle_timeout: float | None = None,
    on_progress: ProgressCallback | None = None,
    force_copy: bool = False,
    finish_with: Literal["a_to_b", "b_to_a"] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    meter: RelayMeter | None = None,
    pace: Sequence[TokenBucket] = (),
) -> RelayResult:
    """Relay bytes between ``a`` and ``b`` until both directions end.

    With ``finish_with``, the relay ends as soon as that direction has passed
    its EOF on: an FTP transfer carries data one way only, and a peer may wait
    for the transfer's reply before it closes the other way.

    Both sockets must be connected and non-blocking (timeout 0). The relay owns
    neither: it never closes them, but half-closes a destination
    (``shutdown(SHUT_WR)``) once its source hit EOF and everything was flushed.
    A TLS destination cannot be half-closed, so EOF towards one ends the whole
    relay after the flush; the caller then closes TLS properly.

    Ends with ``error`` set on a reset or broken pipe on either socket (both
    directions stop), or when no byte moved either way for ``idle_timeout``
    seconds. On cancellation, everything it registered or opened is released
    before ``CancelledError`` propagates.

    ``on_progress(a_to_b, b_to_a)`` gets the running totals at most every
    ``PROGRESS_INTERVAL`` seconds while bytes move; it runs from a timer, so it
    costs nothing per chunk. An exception from it ends the relay and is raised.

    ``loop`` saves looking the running loop up (a system call on Python 3.11).
    ``meter`` shows the running totals to whoever holds it.
    ``pace``: token buckets that every direction takes from, byte for byte
    (the strictest sets the rate); others may share them.
    """
    for name, sock in (("a", a), ("b", b)):
        if sock.fileno() < 0:
            raise ValueError(f"socket {name} is closed")
        if sock.gettimeout() != 0.0:
            raise ValueError(f"socket {name} must be non-blocking (timeout 0)")
    if a.fileno() == b.fileno():
        raise ValueError("a and b are the same socket")
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError(f"idle_timeout must be > 0, not {idle_timeout}")

    loop = loop or asyncio.get_running_loop()
    use_splice = (
        not force_copy
        and splice_available()
        and not isinstance(a, ssl.SSLSocket)
        and not isinstance(b, ssl.SSLSocket)
    )
    pipe_budget = budget if budget is not None else default_budget()
    # With a payload direction, the other one carries no data, only its EOF:
    # it needs no pipe, and a small copy buffer will do.
    splice_a_to_b = use_splice and finish_with != "b_to_a"
    splice_b_to_a = use_splice and finish_with != "a_to_b"
    pipes: list[Pipe] = []
    session = _Session(loop, idle_timeout, on_progress, tuple(pace) or None)
    try:
        a_to_b = _direction(
            session,
            (a, "a"),
            (b, "b"),
            use_splice=splice_a_to_b,
            budget=pipe_budget,
            pipes=pipes,
            finish_with=finish_with,
        )
        b_to_a = _direction(
            session,
            (b, "b"),
            (a, "a"),
            use_splice=splice_b_to_a,
            budget=pipe_budget,
            pipes=pipes,
            finish_with=finish_with,
        )
        if finish_with is not None:
            session.payload = a_to_b if finish_with == "a_to_b" else b_to_a
        if meter is not None:
            meter._bind(a_to_b, b_to_a)
        try:
            session.start(a_to_b, b_to_a)
            outcome = await session.outcome
        finally:
            # Unregister before the pipes close: a callback that ran after
            # would splice into a descriptor number the process may reuse.
            session.stop()
        return RelayResult(a_to_b.sent, b_to_a.sent, outcome, bool(pipes))
    finally:
        for pipe in pipes:
            pipe_budget.close_pipe(pipe)


def _direction(
    session: _Session,
    source: tuple[socket.socket, str],
    destination: tuple[socket.socket, str],
    *,
    use_splice: bool,
    budget: PipeBudget,
    pipes: list[Pipe],
    finish_with: str | None,
) -> _Direction:
    """The engine for one direction: splice through a pipe from ``budget`` when
    asked and possible, else a copy buffer (a small one for the return
    direction of a one-way transfer)."""
    (src, src_name), (dst, dst_name) = source, destination
    if use_splice:
        try:
            pipe = budget.open_pipe()
        except OSError:
            pass  # out of descriptors for pipes: copying needs none, and is only slower
        else:
            pipes.append(pipe)
            return _SpliceDirection(session, src, dst, src_name, dst_name, pipe=pipe)
    payload = finish_with is None or finish_with == f"{src_name}_to_{dst_name}"
    size = COPY_BUFFER_SIZE if payload else RETURN_BUFFER_SIZE
    return _CopyDirection(session, src, dst, src_name, dst_name, buffer_size=size)


def _outcome_of(exc: OSError, side: str) -> RelayOutcome:
    """What a socket error on ``side`` means for the relay."""
    if isinstance(exc, ssl.SSLError):  # its errno is an SSL_ERROR_* code, not an errno
        return RelayOutcome(RelayEnd.TLS_ERROR, side, str(exc.reason or exc))
    if exc.errno in _RESET_ERRNOS:
        return RelayOutcome(RelayEnd.RESET, side)
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return RelayOutcome(RelayEnd.SOCKET_ERROR, side, name)


class _Session:
    """What the two directions share: the outcome, the end, and the timer."""

    __slots__ = (
        "_directions",
        "_idle_timeout",
        "_last_active",
        "_last_moved",
        "_last_report",
        "_on_progress",
        "_reported",
        "_tick",
        "_ticker",
        "finished",
        "live",
        "loop",
        "outcome",
        "pace",
        "payload",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        idle_timeout: float | None,
        on_progress: ProgressCallback | None,
        pace: tuple[TokenBucket, ...] | None = None,
    ) -> None:
        self.loop = loop
        self.pace = pace
        self.outcome: asyncio.Future[RelayOutcome] = loop.create_future()
        self.finished = False
        self.live = 2
        self.payload: _Direction | None = None
        self._directions: tuple[_Direction, ...] = ()
        self._idle_timeout = idle_timeout
        self._on_progress = on_progress
        self._ticker: asyncio.TimerHandle | None = None
        # One timer serves both the idle check and progress reports, so the
        # data path never looks at a clock. It ticks often enough to notice
        # idleness within a quarter of the timeout.
        self._tick = PROGRESS_INTERVAL
        if idle_timeout is not None:
            self._tick = min(PROGRESS_INTERVAL, max(idle_timeout / 4, 0.005))
        self._last_moved = 0
        self._last_active = 0.0
        self._last_report = 0.0
        self._reported = (0, 0)

    def start(self, a_to_b: _Direction, b_to_a: _Direction) -> None:
        self._directions = (a_to_b, b_to_a)
        now = self.loop.time()
        self._last_active = now
        self._last_report = now
        if self._idle_timeout is not None or self._on_progress is not None:
            self._ticker = self.loop.call_at(now + self._tick, self._on_tick)
        for direction in self._directions:
            direction.start()

    def stop(self) -> None:
        """Unregister every callback. Idempotent."""
        self.finished = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for direction in self._directions:
            direction.unregister()

    def direction_done(self, direction: _Direction) -> None:
        self.live -= 1
        if self.live == 0 or direction is self.payload:
            self.finish(CLEAN)

    def finish(self, outcome: RelayOutcome) -> None:
        """End the relay now; the first outcome wins."""
        if self.finished:
            return
        self.stop()
        if not self.outcome.done():
            self.outcome.set_result(outcome)

    def _on_tick(self) -> None:
        self._ticker = None
        if self.finished:
            return
        now = self.loop.time()
        a_to_b, b_to_a = self._directions
        moved = a_to_b.received + a_to_b.sent + b_to_a.received + b_to_a.sent
        if moved != self._last_moved:
            self._last_moved = moved
            self._last_active = now
        elif self._idle_timeout is not None and now - self._last_active >= self._idle_timeout:
            idle = RelayEnd.IDLE_AFTER_HALF_CLOSE if self.live == 1 else RelayEnd.IDLE
            self.finish(RelayOutcome(idle))
            return
        if self._on_progress is not None and now - self._last_report >= PROGRESS_INTERVAL:
            totals = (a_to_b.sent, b_to_a.sent)
            if totals != self._reported:
                self._reported = totals
                self._last_report = now
                try:
                    self._on_progress(*totals)
                except Exception as exc:
                    self.stop()
                    if not self.outcome.done():
                        self.outcome.set_exception(exc)
                    return
        self._ticker = self.loop.call_at(now + self._tick, self._on_tick)


class _Direction:
    """One way of the relay: the readiness bookkeeping both engines share.

    At any time a live direction watches exactly one thing: its source for
    readability (nothing buffered) or its destination for writability
    (something buffered that the destination would not take).
    """

    __slots__ = (
        "_dst",
        "_dst_fd",
        "_eof",
        "_loop",
        "_pace",
        "_reading",
        "_resume",
        "_session",
        "_src",
        "_src_fd",
        "_writing",
        "dst_name",
        "received",
        "sent",
        "src_name",
    )

    def __init__(
        self,
        session: _Session,
        src: socket.socket,
        dst: socket.socket,
        src_name: str,
        dst_name: str,
    ) -> None:
        self._session = session
        self._loop = session.loop
        self._pace = session.pace
        self._resume: asyncio.TimerHandle | None = None
        self._src = src
        self._dst = dst
        self._src_fd = src.fileno()
        self._dst_fd = dst.fileno()
        self.src_name = src_name
        self.dst_name = dst_name
        self.received = 0
        """Bytes taken from the source."""
        self.sent = 0
        """Bytes delivered to the destination."""
        self._eof = False
        self._reading = False
        self._writing = False

    def start(self) -> None:
        self._watch_source()

    def pump(self) -> None:
        """Readiness callback for both the source and the destination."""
        raise NotImplementedError

    def unregister(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._src_fd)
            self._reading = False
        if self._writing:
            self._loop.remove_writer(self._dst_fd)
            self._writing = False
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None

    def _allowed(self, most: int) -> int:
        """What the buckets let this direction move now, at most ``most``; 0 pauses it."""
        assert self._pace is not None
        allowed = allowance(self._pace, most)
        if allowed == 0:
            # Out of tokens: watch nothing until the buckets refill. Nothing is
            # buffered here (the flush came first), so the destination can wait.
            self.unregister()
            if self._resume is None:
                self._resume = self._loop.call_later(wait(self._pace), self._resume_reading)
        return allowed

    def _resume_reading(self) -> None:
        self._resume = None
        if not self._session.finished:
            self._watch_source()
            self.pump()

    def _watch_source(self) -> None:
        if self._writing:
            self._loop.remove_writer(self._dst_fd)
            self._writing = False
        if not self._reading:
            self._loop.add_reader(self._src_fd, self.pump)
            self._reading = True

    def _watch_destination(self) -> None:
        # Backpressure: while the destination is full, reading more from the
        # source would only pile bytes up in memory.
        if self._reading:
            self._loop.remove_reader(self._src_fd)
            self._reading = False
        if not self._writing:
            self._loop.add_writer(self._dst_fd, self.pump)
            self._writing = True

    def _fail(self, exc: OSError, side: str) -> None:
        self._session.finish(_outcome_of(exc, side))

    def _end_of_stream(self) -> None:
        """Source at EOF and everything delivered: pass the EOF on."""
        self.unregister()
        if isinstance(self._dst, ssl.SSLSocket):
            payload = self._session.payload
            if payload is not None and payload is not self:
                # The return direction of a one-way transfer (a server that
                # half-closes its side of an upload): nothing to pass on, and
                # the payload must go on to its own EOF.
                self._session.direction_done(self)
                return
            # shutdown() on an SSLSocket would drop TLS without close_notify;
            # TLS has no half-close, so the transfer ends here.
            self._session.finish(CLEAN)
            return
        try:
            self._dst.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fail(exc, self.dst_name)
            return
        self._session.direction_done(self)


class _SpliceDirection(_Direction):
    """Zero-copy: source socket -> pipe -> destination socket."""

    __slots__ = ("_in_pipe", "_pipe_r", "_pipe_size", "_pipe_w")

    def __init__(
        self,
        session: _Session,
        src: socket.socket,
        dst: socket.socket,
        src_name: str,
        dst_name: str,
        *,
        pipe: Pipe,
    ) -> None:
        super().__init__(session, src, dst, src_name, dst_name)
        self._pipe_r = pipe.read_fd
        self._pipe_w = pipe.write_fd
        self._pipe_size = pipe.size
        self._in_pipe = 0
        """Bytes sitting in the pipe: what still has to reach the destination."""

    def pump(self) -> None:
        if self._session.finished:
            return
        if not self._flush():
            return
        if self._eof:
            self._end_of_stream()
            return
        splice = os.splice
        pace = self._pace  # one attribute read per wake-up; unpaced, that is all it costs
        for _ in range(_ROUNDS_PER_WAKEUP):
            size = self._pipe_size
            if pace is not None and not (size := self._allowed(size)):
                return
            try:
                moved = splice(self._src_fd, self._pipe_w, size, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                # The pipe is empty here, so this can only mean "socket empty".
                self._watch_source()
                return
            except OSError as exc:
                self._fail(exc, self.src_name)
                return
            if moved == 0:
                self._eof = True
                self._end_of_stream()
                return
            self._in_pipe += moved
            self.received += moved
            if pace is not None:
                take(pace, moved)
            if not self._flush():
                return
        # Out of rounds with the source possibly still readable: the
        # level-triggered reader brings us back after the loop's other work.
        self._watch_source()

    def _flush(self) -> bool:
        """Empty the pipe into the destination. False if it blocked or failed."""
        splice = os.splice
        while self._in_pipe:
            try:
                moved = splice(self._pipe_r, self._dst_fd, self._in_pipe, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                self._watch_destination()
                return False
            except OSError as exc:
                self._fail(exc, self.dst_name)
                return False
            self._in_pipe -= moved
            self.sent += moved
        return True


class _CopyDirection(_Direction):
    """Buffered copy through one reusable buffer: for TLS, or without splice."""

    __slots__ = ("_buffer", "_end", "_retry", "_start", "_tls_source")

    def __init__(
        self,
        session: _Session,
        src: socket.socket,
        dst: socket.socket,
        src_name: str,
        dst_name: str,
        *,
        buffer_size: int = COPY_BUFFER_SIZE,
    ) -> None:
        super().__init__(session, src, dst, src_name, dst_name)
        self._buffer = memoryview(bytearray(buffer_size))
        self._start = 0
        self._end = 0
        self._tls_source = src if isinstance(src, ssl.SSLSocket) else None
        self._retry: asyncio.Handle | None = None

    def pump(self) -> None:
        if self._session.finished:
            return
        if not self._flush():
            return
        if self._eof:
            self._end_of_stream()
            return
        src = self._src
        pace = self._pace  # one attribute read per wake-up; unpaced, that is all it costs
        for _ in range(_ROUNDS_PER_WAKEUP):
            buffer = self._buffer
            if pace is not None:
                if not (size := self._allowed(len(buffer))):
                    return
                buffer = buffer[:size]
            try:
                received = src.recv_into(buffer)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                # SSLWantWriteError on a read only happens in a TLS 1.2
                # renegotiation; waiting for input is the closest we can do.
                self._watch_source()
                return
            except OSError as exc:
                self._fail(exc, self.src_name)
                return
            if received == 0:
                self._eof = True
                self._end_of_stream()
                return
            if self._tls_source is not None:
                received = self._gather_records(received, len(buffer))
            if pace is not None:
                take(pace, received)
            self._start = 0
            self._end = received
            self.received += received
            if not self._flush():
                return
            if self._eof:
                self._end_of_stream()
                return
        self._watch_source()
        if self._tls_source is not None and self._tls_source.pending():
            # Decrypted bytes wait inside the TLS object, where no readiness
            # event will announce them: come back on the next loop iteration.
            self._retry = self._loop.call_soon(self.pump)

    def _gather_records(self, end: int, most: int) -> int:
        """Read more of a TLS source into the buffer after ``end``, up to ``most``; the new end.

        A TLS read returns one record, 16 KiB at most: gathering the records
        already here lets one send carry up to a whole buffer, not a syscall
        per record. An EOF met here is kept for after the flush; an error is
        left for the next read to raise.
        """
        src, buffer = self._src, self._buffer
        while end < most:
            try:
                received = src.recv_into(buffer[end:most])
            except (OSError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if received == 0:
                self._eof = True
                break
            end += received
        return end

    def unregister(self) -> None:
        super().unregister()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def _flush(self) -> bool:
        """Send the buffered bytes. False if the destination blocked or failed."""
        dst = self._dst
        while self._start < self._end:
            try:
                sent = dst.send(self._buffer[self._start : self._end])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                self._watch_destination()
                return False
            except OSError as exc:
                self._fail(exc, self.dst_name)
                return False
            self._start += sent
            self.sent += sent
        return True
