"""One frontend's per-client limits, as the sessions of one process count them.

A :class:`ClientGate` answers three questions for the sessions of a frontend:
may this address open a session now (``max_sessions_per_ip``,
``sessions_per_second_per_ip``), may it open one more passive listener
(``max_passive_per_ip``), and which token buckets pace a transfer
(``transfer_rate_per_session``, ``_per_user``, ``_per_ip``).

Counting in one process is exact for an address: with workers, the steering
program sends every connection of one client address to one worker. A user
who logs in from several addresses may reach several workers, each with its
own bucket for that user.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from ftplb.balancing.client_limits import Counts, SessionWindow, TokenBucket
from ftplb.config.limits import ClientLimits
from ftplb.proto.outcomes import EndReason

__all__ = ["ClientGate", "Pace"]

K = TypeVar("K", bound=Hashable)


class _SharedBuckets(Generic[K]):
    """One bucket per key, shared by every transfer of that key while any runs."""

    __slots__ = ("_clock", "_held", "_rate")

    def __init__(self, rate: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._clock = clock
        self._held: dict[K, tuple[TokenBucket, int]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def acquire(self, key: K) -> TokenBucket:
        bucket, users = self._held.get(key) or (TokenBucket(self._rate, self._clock), 0)
        self._held[key] = (bucket, users + 1)
        return bucket

    def release(self, key: K) -> None:
        held = self._held.get(key)
        if held is None:
            return
        bucket, users = held
        if users <= 1:
            del self._held[key]  # its next transfer starts with a full bucket, as a new user
        else:
            self._held[key] = (bucket, users - 1)


class Pace:
    """The buckets that pace one transfer; released once its relay is over."""

    __slots__ = ("_release", "buckets")

    def __init__(self, buckets: tuple[TokenBucket, ...], release: Callable[[], None]) -> None:
        self.buckets = buckets
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        """Give the shared buckets back. Idempotent."""
        release, self._release = self._release, None
        if release is not None:
            release()


class ClientGate:
    """The per-client limits of one frontend, and what its sessions hold of them."""

    __slots__ = ("_clock", "_ips", "_passive", "_sessions", "_users", "_window", "limits")

    def __init__(
        self, limits: ClientLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits = limits or ClientLimits()
        self._clock = clock
        self._sessions: Counts[str] = Counts(limits.max_sessions_per_ip)
        self._window: SessionWindow[str] = SessionWindow(limits.sessions_per_second_per_ip, clock)
        self._passive: Counts[str] = Counts(limits.max_passive_per_ip)
        self._users: _SharedBuckets[bytes] = _SharedBuckets(limits.transfer_rate_per_user, clock)
        self._ips: _SharedBuckets[str] = _SharedBuckets(limits.transfer_rate_per_ip, clock)

    # ----------------------------------------------------------- sessions
    def admit(self, client_ip: str) -> EndReason | None:
        """Count a new session of ``client_ip``, or say which limit refuses it.

        A refused session is not counted, in either limit.
        """
        if not self._sessions.acquire(client_ip):
            return EndReason.SESSIONS_PER_IP
        if not self._window.admit(client_ip):
            self._sessions.release(client_ip)
            return EndReason.SESSION_RATE
        return None

    def session_ended(self, client_ip: str) -> None:
        """An admitted session of ``client_ip`` is over."""
        self._sessions.release(client_ip)

    def sessions_of(self, client_ip: str) -> int:
        return self._sessions.count(client_ip)

    # ------------------------------------------------------------ passive
    def open_passive(self, client_ip: str) -> bool:
        """Count one more passive listener waiting for ``client_ip``; False at the limit."""
        return self._passive.acquire(client_ip)

    def close_passive(self, client_ip: str) -> None:
        """A listener counted by ``open_passive`` stopped waiting (connected or closed)."""
        self._passive.release(client_ip)

    def passive_of(self, client_ip: str) -> int:
        return self._passive.count(client_ip)

    # ---------------------------------------------------------- transfers
    def session_bucket(self) -> TokenBucket | None:
        """A new session's own bucket, which all its transfers share; None when unlimited."""
        rate = self.limits.transfer_rate_per_session
        return TokenBucket(rate, self._clock) if rate else None

    def pace(self, client_ip: str, user: bytes | None, session: TokenBucket | None) -> Pace | None:
        """The buckets of a transfer by ``user`` from ``client_ip``; None when nothing limits it.

        A session without a USER is its own user: it shares nothing by name.
        """
        limits = self.limits
        buckets: list[TokenBucket] = [session] if session is not None else []
        by_user = bool(limits.transfer_rate_per_user) and user is not None
        by_ip = bool(limits.transfer_rate_per_ip)
        if by_user and user is not None:
            buckets.append(self._users.acquire(user))
        if by_ip:
            buckets.append(self._ips.acquire(client_ip))
        if not buckets:
            return None

        def release() -> None:
            if by_user and user is not None:
                self._users.release(user)
            if by_ip:
                self._ips.release(client_ip)

        return Pace(tuple(buckets), release)

    @property
    def tracked(self) -> int:
        """Entries held in every table: what the memory bound is about (tests read it)."""
        return (
            len(self._sessions)
            + len(self._window)
            + len(self._passive)
            + len(self._users)
            + len(self._ips)
        )
