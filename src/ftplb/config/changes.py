"""What a reload changes: servers added, removed and changed, and keys that need a restart.

The reload log line names the servers by ``backend/server``, which is how an
administrator finds them in the file and on the stats page.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftplb.config.backends import Server
from ftplb.config.schema import Config

__all__ = [
    "RESTART_ONLY_KEYS",
    "ServerChanges",
    "keep_restart_only",
    "restart_only_changes",
    "server_changes",
]

_RESTART_ONLY_DEFAULTS = ("workers", "user", "group", "log_format", "log_target", "syslog_address")
"""The process layout, the user it runs as (root is given up by then), and the log
each process opens once, at its start."""

RESTART_ONLY_KEYS = (*(f"defaults.{key}" for key in _RESTART_ONLY_DEFAULTS), "admin.bind")
"""Keys a reload cannot apply: those of ``[defaults]`` above, and the admin listener's
address (an ``[admin]`` table added or removed counts as a changed ``admin.bind``)."""


@dataclass(frozen=True, slots=True)
class ServerChanges:
    """Servers, as ``backend/server``, in sorted order."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


def _servers(config: Config) -> dict[str, Server]:
    return {
        f"{backend.name}/{server.name}": server
        for backend in config.backends
        for server in backend.servers
    }


def server_changes(old: Config, new: Config) -> ServerChanges:
    """The servers that ``new`` adds to, removes from or changes in ``old``."""
    before, after = _servers(old), _servers(new)
    return ServerChanges(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(
            sorted(key for key in before.keys() & after.keys() if before[key] != after[key])
        ),
    )


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The keys of :data:`RESTART_ONLY_KEYS` whose value ``new`` changes."""
    changed = [
        f"defaults.{key}"
        for key in _RESTART_ONLY_DEFAULTS
        if getattr(old.defaults, key) != getattr(new.defaults, key)
    ]
    old_bind = old.admin.bind if old.admin is not None else None
    new_bind = new.admin.bind if new.admin is not None else None
    if old_bind != new_bind:
        changed.append("admin.bind")
    return changed


def keep_restart_only(old: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with the restart-only values of ``old``, and the keys that were kept.

    A reload applies everything else, so that an edit of the worker count in
    the same file as a new server does not hold the server back.
    """
    kept = restart_only_changes(old, new)
    if not kept:
        return new, kept
    defaults = new.defaults.model_copy(
        update={key: getattr(old.defaults, key) for key in _RESTART_ONLY_DEFAULTS}
    )
    if old.admin is None or new.admin is None:
        admin = old.admin
    else:
        admin = new.admin.model_copy(update={"bind": old.admin.bind})
    return new.model_copy(update={"defaults": defaults, "admin": admin}), kept
