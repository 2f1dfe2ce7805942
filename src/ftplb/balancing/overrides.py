"""What operators set on servers at runtime: an admin state and a weight.

Overrides are kept apart from the configuration, as HAProxy keeps its
server-state file apart from haproxy.cfg: one shared record, written by the
process that hosts the admin listener, read by every worker, and applied
again to every new generation after a reload. This module is the pure half:
the record's value, its JSON form, and how it is laid onto pools.

A runtime weight is kept only while the configuration's weight of that server
is the one it was set against. An administrator who then edits the weight in
the file and reloads means the file's new weight, as with HAProxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ftplb.balancing.pool import Pool
from ftplb.balancing.state import AdminState

__all__ = [
    "MAX_WEIGHT",
    "Override",
    "OverrideError",
    "ServerKey",
    "apply_overrides",
    "overrides_from_json",
    "overrides_to_json",
]

MAX_WEIGHT = 256
"""The largest weight, runtime or configured (HAProxy's limit too)."""

ServerKey = tuple[str, str]
"""(backend name, server name)."""


class OverrideError(ValueError):
    """A stored record that cannot be read; the message says where."""


@dataclass(frozen=True, slots=True)
class Override:
    """One server's runtime settings, and who set them last."""

    admin: AdminState = AdminState.READY
    weight: int | None = None
    """The runtime weight, None for the configured one."""
    configured_weight: int | None = None
    """The configured weight when ``weight`` was set; the runtime weight holds while it stays."""
    user: str = ""
    """Who made the last change."""

    def effective_weight(self, configured: int) -> int:
        """The weight in force for a server whose configuration now says ``configured``."""
        if self.weight is not None and self.configured_weight == configured:
            return self.weight
        return configured


def apply_overrides(pools: Mapping[str, Pool], overrides: Mapping[ServerKey, Override]) -> None:
    """Give every server of ``pools`` its admin state and weight from ``overrides``.

    A server without an override is READY at its configured weight, so that a
    record which drops an entry (``ready`` at the configured weight) takes effect.
    """
    for pool in pools.values():
        for server in pool.servers:
            override = overrides.get((pool.name, server.name))
            if override is None:
                server.admin = AdminState.READY
                server.weight = server.configured_weight
                continue
            server.admin = override.admin
            server.weight = override.effective_weight(server.configured_weight)


def overrides_to_json(overrides: Mapping[ServerKey, Override]) -> dict[str, object]:
    """The JSON document of ``overrides``: {"servers": {backend: {server: {...}}}}."""
    servers: dict[str, dict[str, dict[str, object]]] = {}
    for (backend, server), override in sorted(overrides.items()):
        servers.setdefault(backend, {})[server] = {
            "admin": override.admin.value,
            "weight": override.weight,
            "configured_weight": override.configured_weight,
            "user": override.user,
        }
    return {"version": 1, "servers": servers}


def overrides_from_json(document: object) -> dict[ServerKey, Override]:
    """The overrides in a document that :func:`overrides_to_json` wrote; OverrideError if bad."""
    if not isinstance(document, dict) or document.get("version") != 1:
        raise OverrideError("not a version 1 server overrides document")
    servers = document.get("servers")
    if not isinstance(servers, dict):
        raise OverrideError('"servers" must be an object')
    overrides: dict[ServerKey, Override] = {}
    for backend, entries in servers.items():
        if not isinstance(entries, dict):
            raise OverrideError(f"servers.{backend} must be an object")
        for server, entry in entries.items():
            overrides[(backend, server)] = _override(f"servers.{backend}.{server}", entry)
    return overrides


def _override(where: str, entry: object) -> Override:
    if not isinstance(entry, dict):
        raise OverrideError(f"{where} must be an object")
    try:
        admin = AdminState(entry.get("admin", "READY"))
    except ValueError as error:
        raise OverrideError(f"{where}.admin: {error}") from error
    weight = _optional_weight(where, entry, "weight")
    configured = _optional_weight(where, entry, "configured_weight")
    user = entry.get("user", "")
    if not isinstance(user, str):
        raise OverrideError(f"{where}.user must be text")
    return Override(admin, weight, configured, user)


def _optional_weight(where: str, entry: Mapping[str, object], key: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WEIGHT:
        raise OverrideError(f"{where}.{key} must be a whole number from 0 to {MAX_WEIGHT}")
    return value
