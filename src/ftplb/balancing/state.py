"""Backend servers and the states that decide whether they take new sessions.

A server's effective state combines two independent inputs: what an operator
asked for (``admin``) and what the health checks found (``healthy``). Keeping
them apart means that draining a server never hides that it is also broken,
and that a server coming back from maintenance keeps its last health verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class AdminState(StrEnum):
    """What an operator asked of a server."""

    READY = "READY"
    DRAIN = "DRAIN"  # no new sessions; the ones in flight finish
    MAINT = "MAINT"  # out of service, health checks notwithstanding


class ServerState(StrEnum):
    """The effective state shown on the stats page and used for balancing."""

    UP = "UP"
    DOWN = "DOWN"
    DRAIN = "DRAIN"
    MAINT = "MAINT"


# eq=False: servers are identities (two servers with the same address are still
# two servers), and mutable counters must not make them unhashable.
@dataclass(slots=True, eq=False)
class Server:
    """One backend FTP server and its live counters."""

    name: str
    host: str
    port: int
    weight: int = 1
    max_connections: int = 0  # 0 = unlimited
    admin: AdminState = AdminState.READY
    healthy: bool = True  # set by health checks; starts healthy, like HAProxy
    active: int = 0  # sessions now
    total: int = 0  # sessions ever assigned
    # The weight the configuration gives; ``weight`` may differ while an
    # operator's runtime weight is in force (see balancing.overrides).
    configured_weight: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.configured_weight < 0:
            self.configured_weight = self.weight

    @property
    def state(self) -> ServerState:
        """The effective state.

        MAINT wins over everything because an operator took the server out on
        purpose; DOWN wins over DRAIN because a dead server cannot finish
        anything, and the stats page should say so.
        """
        if self.admin is AdminState.MAINT:
            return ServerState.MAINT
        if not self.healthy:
            return ServerState.DOWN
        if self.admin is AdminState.DRAIN:
            return ServerState.DRAIN
        return ServerState.UP

    @property
    def full(self) -> bool:
        """True when the server has reached its session limit."""
        return self.max_connections > 0 and self.active >= self.max_connections

    def available(self) -> bool:
        """True when the server may take one more new session."""
        return self.state is ServerState.UP and self.weight > 0 and not self.full
