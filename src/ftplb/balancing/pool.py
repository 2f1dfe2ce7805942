"""A pool of backend servers: which server takes the next session, and the counts.

The order of precedence when choosing is fixed and explicit: an operator's
user map first, then stickiness, then the balancing strategy. Each step only
yields a server that can take the session right now and that the caller has
not excluded (a server whose connect just failed is excluded on redispatch).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from ftplb.balancing.algorithms import make_strategy
from ftplb.balancing.state import Server
from ftplb.balancing.stick import StickStore, StickTable

STICKY_NAMES = ("none", "source", "user")


def _decode_user(user: bytes) -> str:
    # User names are bytes on the wire; maps and stick keys are text, and a
    # name that is not UTF-8 must still route somewhere rather than fail.
    return user.decode("utf-8", errors="replace")


class Pool:
    """Servers behind one backend, with their balancing strategy and stickiness."""

    def __init__(  # noqa: PLR0917 - positional order is part of the published API
        self,
        name: str,
        servers: Sequence[Server],
        balance: str = "roundrobin",
        sticky: str = "none",
        sticky_timeout: float = 3600.0,
        user_map: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if sticky not in STICKY_NAMES:
            raise ValueError(
                f"pool {name!r}: unknown sticky {sticky!r}; expected one of "
                + ", ".join(STICKY_NAMES)
            )
        self.name = name
        self.servers: list[Server] = list(servers)
        self._by_name: dict[str, Server] = {}
        for server in self.servers:
            if server.name in self._by_name:
                raise ValueError(f"pool {name!r}: duplicate server name {server.name!r}")
            self._by_name[server.name] = server
        self.user_map: dict[str, str] = dict(user_map or {})
        for user, server_name in self.user_map.items():
            if server_name not in self._by_name:
                raise ValueError(
                    f"pool {name!r}: user_map sends {user!r} to unknown server {server_name!r}"
                )
        self.balance = balance
        self.sticky = sticky
        self._strategy = make_strategy(balance, rng)
        self.stick: StickStore | None = (
            StickTable(sticky_timeout, clock=clock) if sticky != "none" else None
        )

    @property
    def needs_user(self) -> bool:
        """True when the server can only be chosen once the USER name is known."""
        return self.balance == "user" or self.sticky == "user" or bool(self.user_map)

    def server(self, name: str) -> Server:
        """The server called ``name``; KeyError if the pool has none."""
        return self._by_name[name]

    def pick(
        self, client_ip: str, user: bytes | None, exclude: Collection[str] = ()
    ) -> Server | None:
        """The server for a new session, or None when no server can take it."""

        def usable(server_name: str | None) -> Server | None:
            if server_name is None or server_name in exclude:
                return None
            server = self._by_name.get(server_name)
            if server is None or not server.available():
                return None
            return server

        if user is not None and self.user_map:
            mapped = usable(self.user_map.get(_decode_user(user)))
            if mapped is not None:
                return mapped

        key = self._stick_key(client_ip, user)
        if key is not None and self.stick is not None:
            remembered = usable(self.stick.get(key))
            if remembered is not None:
                return remembered

        candidates = [
            server for server in self.servers if server.available() and server.name not in exclude
        ]
        return self._strategy.pick(candidates, client_ip, user)

    def acquire(self, server: Server, client_ip: str, user: bytes | None) -> None:
        """Count a session that ``server`` has taken and remember it for stickiness."""
        server.active += 1
        server.total += 1
        key = self._stick_key(client_ip, user)
        if key is not None and self.stick is not None:
            self.stick.put(key, server.name)

    def release(self, server: Server) -> None:
        """Count the end of a session on ``server``."""
        # Never below 0: a double release after an error must not make a
        # server look less loaded than idle and attract every new session.
        server.active = max(0, server.active - 1)

    def _stick_key(self, client_ip: str, user: bytes | None) -> str | None:
        if self.sticky == "source":
            return client_ip
        if self.sticky == "user" and user is not None:
            return _decode_user(user)
        return None
