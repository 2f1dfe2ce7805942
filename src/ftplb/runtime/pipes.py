"""Pipes for the zero-copy relay, handed out under one cap on pipe memory.

A spliced relay moves bytes socket -> pipe -> socket, and a bigger pipe moves
more per system call: a 1 MiB pipe relays about twice as fast as the default
64 KiB one. Big pipes are pinned kernel memory, though, and for a non-root user
the kernel refuses to grow pipes past ``fs.pipe-user-pages-soft`` (64 MiB by
default) with EPERM. ``PipeBudget`` decides which pipes get enlarged: while
the enlarged pipes stay under ``max_bytes`` a new pipe is grown to
``pipe_size``; past that, or when the kernel refuses, it keeps its default
size. A relay with small pipes is slower but still correct.

Single-threaded by design: one budget belongs to one event loop (one worker
process), like the relays that use it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass

__all__ = ["DEFAULT_PIPE_SIZE", "Pipe", "PipeBudget", "default_budget"]

DEFAULT_PIPE_SIZE = 64 * 1024
"""What Linux gives a new pipe (16 pages) when nothing asks for more."""

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(slots=True, eq=False)
class Pipe:
    """A non-blocking, close-on-exec pipe and what it costs the budget.

    Mutable only in ``closed``; both descriptors are closed by
    ``PipeBudget.close_pipe``, which also returns ``charged`` to the budget.
    """

    read_fd: int
    write_fd: int
    size: int
    """Capacity in bytes, as the kernel reports it."""
    charged: int
    """Bytes counted against the budget: 0 for a pipe left at its default size."""
    closed: bool = False


def _kernel_pipe_size(requested: int) -> int:
    """The size the kernel rounds a F_SETPIPE_SZ request up to.

    Linux keeps a power-of-two number of pages, so asking for 100 KiB gives
    128 KiB. Budget checks use the rounded figure to stay under the cap.
    """
    pages = max(1, -(-requested // _PAGE_SIZE))
    return (1 << (pages - 1).bit_length()) * _PAGE_SIZE


class PipeBudget:
    """Hands out pipes, growing them while the enlarged total stays under a cap.

    ``max_bytes`` caps the memory of enlarged pipes. Default-size pipes are not
    charged: every pipe costs that much whatever we do, and the budget exists to
    decide who gets a big one. ``max_bytes = 0`` therefore means "never enlarge".
    """

    __slots__ = ("_in_use", "_max_bytes", "_pipe_size")

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, pipe_size: int = 1024 * 1024) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        if pipe_size <= 0:
            raise ValueError(f"pipe_size must be > 0, not {pipe_size}")
        self._max_bytes = max_bytes
        self._pipe_size = _kernel_pipe_size(pipe_size)
        self._in_use = 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def pipe_size(self) -> int:
        """The size an enlarged pipe gets (the request rounded as the kernel does)."""
        return self._pipe_size

    @property
    def in_use(self) -> int:
        """Bytes of enlarged pipes currently open."""
        return self._in_use

    def open_pipe(self) -> Pipe:
        """A new non-blocking pipe, enlarged if the budget allows and the kernel agrees.

        Raises OSError only when the pipe itself cannot be created (EMFILE,
        ENFILE); a refused enlargement is not an error.
        """
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            size, charged = self._size_pipe(write_fd)
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        self._in_use += charged
        return Pipe(read_fd=read_fd, write_fd=write_fd, size=size, charged=charged)

    def open_pair(self) -> tuple[Pipe, Pipe]:
        """Two pipes, one per relay direction; neither stays open if the second fails."""
        first = self.open_pipe()
        try:
            second = self.open_pipe()
        except BaseException:
            self.close_pipe(first)
            raise
        return first, second

    def close_pipe(self, pipe: Pipe) -> None:
        """Close both ends and give the pipe's share back. Safe to call twice."""
        if pipe.closed:
            return
        pipe.closed = True
        self._in_use -= pipe.charged
        for fd in (pipe.read_fd, pipe.write_fd):
            try:
                os.close(fd)
            except OSError as exc:  # pragma: no cover - only if someone closed our fd
                if exc.errno != errno.EBADF:
                    raise

    def _size_pipe(self, fd: int) -> tuple[int, int]:
        """(capacity, bytes charged) after trying to grow the pipe behind ``fd``."""
        if self._in_use + self._pipe_size <= self._max_bytes:
            try:
                size = fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, self._pipe_size)
            except OSError:
                # EPERM past fs.pipe-user-pages-soft (or pipe-max-size) for a
                # non-root user; EBUSY if shrinking below the content. Either
                # way the default pipe still works, only more slowly.
                pass
            else:
                return size, size
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ), 0


_default_budget: PipeBudget | None = None


def default_budget() -> PipeBudget:
    """The process-wide budget that relays share unless given their own."""
    global _default_budget  # noqa: PLW0603 - one lazily built budget per process
    if _default_budget is None:
        _default_budget = PipeBudget()
    return _default_budget
