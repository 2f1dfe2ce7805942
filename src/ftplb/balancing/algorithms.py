"""Balancing strategies: each picks one server among those that may take a session.

The pool filters out servers that are down, draining, in maintenance or full
before it asks a strategy, so a strategy only ranks. Strategies still skip a
server whose weight is 0 or less, so that they stay correct on their own.
Weights count everywhere: a server of weight 3 gets three times the share of a
server of weight 1.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import Protocol

from ftplb.balancing.state import Server

BALANCE_NAMES = ("roundrobin", "leastconn", "source", "random", "user")


class Strategy(Protocol):
    """Chooses a server for a new session, or None when the list is empty."""

    def pick(self, servers: Sequence[Server], client_ip: str, user: bytes | None) -> Server | None:
        """Return one of ``servers`` (all already available), or None."""
        ...


def _weighted(servers: Sequence[Server]) -> list[Server]:
    return [server for server in servers if server.weight > 0]


def _less_loaded(a: Server, b: Server) -> bool:
    """True when ``a`` carries fewer sessions per unit of weight than ``b``.

    Cross-multiplying compares active/weight exactly, with no float rounding
    that could make equal loads look different.
    """
    return a.active * b.weight < b.active * a.weight


class RoundRobin:
    """Smooth weighted round robin, as nginx does it.

    Every pick adds each server's weight to its running score, takes the
    highest score, and lowers the winner's score by the total weight. For
    weights 5:1:1 this gives a a b a c a a rather than a a a a a b c, so a
    heavy server never receives a burst of consecutive sessions.
    """

    def __init__(self) -> None:
        # Scores are keyed by name, so that the pool may hand over a
        # differently filtered list at every pick without losing the rotation.
        self._scores: dict[str, int] = {}

    def pick(self, servers: Sequence[Server], client_ip: str, user: bytes | None) -> Server | None:
        candidates = _weighted(servers)
        if not candidates:
            return None
        total = 0
        best: Server | None = None
        best_score = 0
        for server in candidates:
            score = self._scores.get(server.name, 0) + server.weight
            self._scores[server.name] = score
            total += server.weight
            if best is None or score > best_score:
                best, best_score = server, score
        assert best is not None
        self._scores[best.name] = best_score - total
        return best


class LeastConn:
    """Fewest active sessions per unit of weight; ties rotate.

    Rotating among equally loaded servers matters when sessions are short:
    always taking the first tied server would send every burst to one box.
    """

    def __init__(self) -> None:
        self._tie_breaker = RoundRobin()

    def pick(self, servers: Sequence[Server], client_ip: str, user: bytes | None) -> Server | None:
        candidates = _weighted(servers)
        if not candidates:
            return None
        least = candidates[0]
        for server in candidates[1:]:
            if _less_loaded(server, least):
                least = server
        tied = [server for server in candidates if not _less_loaded(least, server)]
        return self._tie_breaker.pick(tied, client_ip, user)


def _rendezvous_score(key: bytes, server: Server) -> float:
    """Weighted highest-random-weight score of ``key`` on ``server``.

    blake2b is stable across processes and Python versions (unlike ``hash()``),
    so every balancer node and every restart sends a key to the same server.
    The ``weight / -ln(u)`` form gives each server a share of keys
    proportional to its weight, and removing a server only moves the keys
    that scored highest on it.
    """
    name = server.name.encode("utf-8", "surrogatepass")
    # The length prefix keeps (key, name) pairs unambiguous whatever bytes they hold.
    digest = hashlib.blake2b(len(key).to_bytes(4, "big") + key + name, digest_size=8).digest()
    # Map to the open interval (0, 1): ln(0) and ln(1) would be infinite/zero.
    # Digests within about 2**10 of 2**64 round to 1.0 as a float: they take
    # the largest float below 1 instead (a score that high, not a crash).
    unit = min((int.from_bytes(digest, "big") + 1) / (2**64 + 1), _BELOW_ONE)
    return server.weight / -math.log(unit)


_BELOW_ONE = math.nextafter(1.0, 0.0)


def _rendezvous(servers: Sequence[Server], key: bytes) -> Server | None:
    candidates = _weighted(servers)
    if not candidates:
        return None
    # The name breaks exact ties so the result never depends on list order.
    return max(candidates, key=lambda server: (_rendezvous_score(key, server), server.name))


class Source:
    """Consistent hashing of the client's IP address (weighted rendezvous)."""

    def pick(self, servers: Sequence[Server], client_ip: str, user: bytes | None) -> Server | None:
        return _rendezvous(servers, client_ip.encode("utf-8", "surrogatepass"))


class UserHash:
    """Consistent hashing of the USER name; before USER, hashing of the client IP.

    The name is hashed as raw bytes: user names need not be valid UTF-8, and
    two spellings that decode alike must not be merged by accident.
    """

    def pick(self, servers: Sequence[Server], client_ip: str, user: bytes | None) -> Server | None:
        if user is None:
            return _rendezvous(servers, client_ip.encode("utf-8", "surrogatepass"))
        # A distinct prefix keeps the user b"10.0.0.1" apart from that client IP.
        return _rendezvous(servers, b"user:" + user)


class Random:
    """Power of two random choices, weighted.

    Two servers are drawn with probability proportional to weight, and the
    less loaded one (active per unit of weight) wins. This keeps most of
    leastconn's balance without every node herding onto the same idle server.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    def pick(self, servers: Sequence[Server], client_ip: str, user: bytes | None) -> Server | None:
        candidates = _weighted(servers)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        first, second = self._rng.choices(
            candidates, weights=[server.weight for server in candidates], k=2
        )
        return second if _less_loaded(second, first) else first


def make_strategy(balance: str, rng: random.Random | None = None) -> Strategy:
    """The strategy named ``balance``; ValueError for an unknown name."""
    if balance == "roundrobin":
        return RoundRobin()
    if balance == "leastconn":
        return LeastConn()
    if balance == "source":
        return Source()
    if balance == "random":
        return Random(rng)
    if balance == "user":
        return UserHash()
    raise ValueError(f"unknown balance {balance!r}; expected one of {', '.join(BALANCE_NAMES)}")
