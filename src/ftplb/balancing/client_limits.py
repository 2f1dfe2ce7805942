"""The pure bookkeeping of per-client limits: counts per address, the window of
new sessions per address, and the token buckets of transfer rates.

The clock is injected (``loop.time`` in the runtime, a fake in the tests), and
nothing here does I/O. Every table forgets an address as soon as it holds
nothing for it, so memory follows the clients present, not the clients seen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = [
    "MIN_BURST",
    "RESUME_CHUNK",
    "Counts",
    "SessionWindow",
    "TokenBucket",
    "allowance",
    "take",
    "wait",
]

Clock = Callable[[], float]
K = TypeVar("K", bound=Hashable)

MIN_BURST = 4096
"""The least a bucket holds, so a low rate still moves a useful chunk at a time."""

RESUME_CHUNK = 64 * 1024
"""What an empty bucket waits to refill before a paced transfer moves again:
one system call's worth, so pacing costs a wake-up per chunk, not per packet.
A low rate waits for one second of its rate instead, so that a paced transfer
never goes quiet long enough to look idle."""

WINDOW = 1.0
"""The span of ``sessions_per_second_per_ip``: one second."""


class Counts(Generic[K]):
    """How many of something each key holds (sessions, passive listeners), against a cap.

    A key whose count drops to 0 is forgotten.
    """

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        """The most one key may hold; 0 = unlimited."""
        self._counts: dict[K, int] = {}

    def __len__(self) -> int:
        """The keys holding at least one."""
        return len(self._counts)

    def count(self, key: K) -> int:
        return self._counts.get(key, 0)

    def acquire(self, key: K) -> bool:
        """Count one more for ``key``; False (and nothing counted) when it is at its cap."""
        held = self._counts.get(key, 0)
        if self.limit and held >= self.limit:
            return False
        self._counts[key] = held + 1
        return True

    def release(self, key: K) -> None:
        held = self._counts.get(key, 0)
        if held <= 1:
            self._counts.pop(key, None)
        else:
            self._counts[key] = held - 1


class SessionWindow(Generic[K]):
    """At most ``limit`` new sessions per key within any one-second window.

    A sliding log: each key keeps the times of its admitted sessions of the
    last second (at most ``limit`` of them). A refused session is not
    recorded, so a client that keeps knocking is let in again as soon as its
    oldest session of the window is a second old. Keys whose newest session
    is older than the window are swept once per window.
    """

    __slots__ = ("_clock", "_log", "_swept", "limit")

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit
        """Sessions per second per key; 0 = unlimited."""
        self._clock = clock
        self._log: dict[K, deque[float]] = {}
        self._swept = clock()

    def __len__(self) -> int:
        """The keys remembered now."""
        return len(self._log)

    def admit(self, key: K) -> bool:
        """Record a new session of ``key``; False (not recorded) when over the limit."""
        if not self.limit:
            return True
        now = self._clock()
        since = now - WINDOW
        if now - self._swept >= WINDOW:
            self._sweep(since)
            self._swept = now
        times = self._log.get(key)
        if times is None:
            times = self._log[key] = deque()
        while times and times[0] <= since:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True

    def _sweep(self, since: float) -> None:
        # A remembered key always holds its newest session (admit never leaves one empty).
        for key in [key for key, times in self._log.items() if times[-1] <= since]:
            del self._log[key]


class TokenBucket:
    """A rate in bytes per second, shared by everything it limits.

    It holds up to ``capacity`` tokens (a quarter second of the rate, at least
    ``MIN_BURST``), starts full, and refills continuously; a byte moved takes
    one token. Taking more than is there leaves a debt that the refill pays
    first.
    """

    __slots__ = ("_clock", "_stamp", "_tokens", "capacity", "rate")

    def __init__(self, rate: int, clock: Clock) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, not {rate}")
        self.rate = rate
        self.capacity = max(rate // 4, MIN_BURST)
        self._clock = clock
        self._tokens = float(self.capacity)
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens

    def available(self) -> int:
        """Whole tokens there now (0 while a debt is paid off)."""
        return max(0, int(self._refill()))

    def take(self, count: int) -> None:
        self._refill()
        self._tokens -= count

    def wait(self) -> float:
        """Seconds until the bucket holds ``RESUME_CHUNK`` tokens, or a second's worth
        if that is less (never more than a second), or is full."""
        wanted = min(self.capacity, self.rate, RESUME_CHUNK)
        missing = wanted - self._refill()
        return max(0.0, missing / self.rate)


def allowance(buckets: Sequence[TokenBucket], most: int) -> int:
    """What may move now under every bucket, and at most ``most``: the strictest wins."""
    for bucket in buckets:
        most = min(most, bucket.available())
    return most


def take(buckets: Sequence[TokenBucket], count: int) -> None:
    """``count`` bytes moved: each bucket pays for them."""
    for bucket in buckets:
        bucket.take(count)


def wait(buckets: Sequence[TokenBucket]) -> float:
    """Seconds until every bucket can let a chunk through again."""
    return max((bucket.wait() for bucket in buckets), default=0.0)
