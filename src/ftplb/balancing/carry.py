"""What a pool learnt at runtime, carried into its next generation on a reload.

HAProxy keeps a server's state across a reload through its server-state file;
here the new generation simply takes over the objects, server by server name:

* A server that keeps its name stays the same object, updated to its new
  configuration. Its health verdict, admin state and session counts go on,
  and the sessions of the old generation still count against it until they
  end (they release the very object the new generation balances on).
* A runtime weight stays while the configured weight is unchanged; an edited
  weight in the file means the new weight.
* The stick table goes on when the pool sticks the same way, without the
  entries of servers that are gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ftplb.balancing.pool import Pool
from ftplb.balancing.state import Server

__all__ = ["SavedSettings", "carry_servers", "carry_stickiness", "restore", "save_settings"]

SavedSettings = list[tuple[Server, tuple[str, int, int, int, int]]]
"""Servers and their configured settings, to put back if a new generation fails to start."""


def carry_servers(previous: Pool | None, configured: Sequence[Server]) -> list[Server]:
    """The servers of a new generation: ``configured``, with the survivors of ``previous``."""
    if previous is None:
        return list(configured)
    carried: list[Server] = []
    for fresh in configured:
        try:
            server = previous.server(fresh.name)
        except KeyError:
            carried.append(fresh)
            continue
        if server.configured_weight != fresh.configured_weight:
            server.weight = fresh.weight
        server.configured_weight = fresh.configured_weight
        server.host = fresh.host
        server.port = fresh.port
        server.max_connections = fresh.max_connections
        carried.append(server)
    return carried


def carry_stickiness(previous: Pool | None, pool: Pool, timeout: float) -> None:
    """Let ``pool`` go on with ``previous``'s stick table when both stick the same way."""
    if previous is None or previous.stick is None or previous.sticky != pool.sticky:
        return
    stick = previous.stick
    stick.timeout = timeout
    kept = {server.name for server in pool.servers}
    for server in previous.servers:
        if server.name not in kept:
            stick.forget_server(server.name)
    pool.stick = stick


def save_settings(pools: Iterable[Pool]) -> SavedSettings:
    """What :func:`carry_servers` may change on the servers of ``pools``."""
    return [
        (s, (s.host, s.port, s.weight, s.configured_weight, s.max_connections))
        for pool in pools
        for s in pool.servers
    ]


def restore(saved: SavedSettings) -> None:
    """Undo a carry whose generation did not start: the running one keeps its settings."""
    for server, (host, port, weight, configured_weight, max_connections) in saved:
        server.host, server.port, server.weight = host, port, weight
        server.configured_weight, server.max_connections = configured_weight, max_connections
