"""The JSON shapes of the runtime API: one server, as ``/api/servers`` shows it.

The numbers and the effective ``state`` come from the metrics of every
process (a :class:`~ftplb.admin.snapshot.Snapshot`), so they lag by up to a
second. ``admin_state``, ``weight`` and ``changed_by`` come from the shared
record of actions, so an action's answer already shows what it did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftplb.admin.snapshot import ServerStats, Snapshot
from ftplb.balancing.overrides import Override, ServerKey

__all__ = ["find_server", "server_json", "servers_json"]


def server_json(backend: str, stats: ServerStats, override: Override | None) -> dict[str, Any]:
    """One server: who it is, what it is set to, what it does."""
    configured = stats.weight if stats.configured_weight is None else stats.configured_weight
    record = override or Override()
    return {
        "backend": backend,
        "server": stats.name,
        "address": stats.address,
        "state": stats.state,
        "admin_state": record.admin.value,
        "weight": record.effective_weight(configured),
        "configured_weight": configured,
        "current_sessions": stats.current_sessions,
        "sessions": stats.sessions,
        "transfers": stats.transfers,
        "connect_failures": stats.connect_failures,
        "last_check": {"result": stats.last_check, "duration": stats.last_check_duration},
        # None once a server is back to READY at its configured weight: no
        # action is then in force, and the record forgets it.
        "changed_by": override.user if override is not None else None,
    }


def servers_json(
    snapshot: Snapshot, overrides: Mapping[ServerKey, Override]
) -> list[dict[str, Any]]:
    """Every configured server, backend by backend, in the file's order."""
    return [
        server_json(backend.name, stats, overrides.get((backend.name, stats.name)))
        for backend in snapshot.backends
        for stats in backend.servers
    ]


def find_server(
    snapshot: Snapshot, overrides: Mapping[ServerKey, Override], backend: str, server: str
) -> dict[str, Any] | None:
    """The server ``backend/server`` of the snapshot; None when it has no such server."""
    for candidate in snapshot.backends:
        if candidate.name != backend:
            continue
        for stats in candidate.servers:
            if stats.name == server:
                return server_json(backend, stats, overrides.get((backend, server)))
    return None
