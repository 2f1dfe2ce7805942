"""Stick table: remembers which server a client (or user) was sent to.

Stickiness keeps a client's sessions on one server, which matters for FTP:
a file uploaded in one session must be found by the next one when servers
have separate disks. The table is in-process today; the pool only talks to
the small ``StickStore`` protocol, so a shared store can back it when several
balancer nodes serve one site.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class StickStore(Protocol):
    """What the pool needs from a stick table."""

    timeout: float
    """Seconds an entry lives after its last use; a reload may change it."""

    def get(self, key: str) -> str | None:
        """The server name remembered for ``key``, or None; a hit refreshes it."""
        ...

    def put(self, key: str, server_name: str) -> None:
        """Remember ``server_name`` for ``key``."""
        ...

    def forget_server(self, server_name: str) -> None:
        """Drop every entry that points at ``server_name``."""
        ...

    def __len__(self) -> int: ...


class StickTable:
    """An in-process stick table with a sliding expiry and an LRU size cap.

    Entries live in an OrderedDict kept in order of last use. Because every
    entry gets the same timeout from a monotonic clock, that order is also the
    order of expiry, so expired entries are always at the front and can be
    purged without a scan.
    """

    def __init__(
        self,
        timeout: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("stick table timeout must be positive")
        if max_entries < 1:
            raise ValueError("stick table max_entries must be at least 1")
        self.timeout = timeout
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        server_name, expires = entry
        now = self._clock()
        if now >= expires:
            del self._entries[key]
            return None
        self._entries[key] = (server_name, now + self.timeout)
        self._entries.move_to_end(key)
        return server_name

    def put(self, key: str, server_name: str) -> None:
        now = self._clock()
        self._purge_expired(now)
        self._entries[key] = (server_name, now + self.timeout)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def forget_server(self, server_name: str) -> None:
        stale = [key for key, (name, _) in self._entries.items() if name == server_name]
        for key in stale:
            del self._entries[key]

    def __len__(self) -> int:
        self._purge_expired(self._clock())
        return len(self._entries)

    def _purge_expired(self, now: float) -> None:
        while self._entries:
            _, expires = next(iter(self._entries.values()))
            if now < expires:
                return
            self._entries.popitem(last=False)
