"""Runtime actions on one server: what a request asks, who asks, and carrying it out.

The JSON API (``POST /api/servers/{backend}/{server}``), the stats page's
buttons and ``ftplb admin`` all end in :meth:`ServerActions.act`, so that one
place checks the server, writes the shared record and logs the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ftplb.admin.overrides_store import OverridesStore
from ftplb.balancing.overrides import MAX_WEIGHT, Override
from ftplb.balancing.state import AdminState
from ftplb.config.schema import Config
from ftplb.runtime.logs import EventLog

__all__ = [
    "ActionError",
    "Caller",
    "Role",
    "ServerAction",
    "ServerActions",
    "UnknownServerError",
    "parse_action",
]


class Role(StrEnum):
    """What an admin listener user may do."""

    ADMIN = "admin"
    """Read everything and act on servers."""
    READ_ONLY = "read-only"
    """Read everything; an action gets 403."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user behind a request ("" when the listener has no users)."""

    name: str
    role: Role

    @property
    def may_act(self) -> bool:
        return self.role is Role.ADMIN


class ActionError(ValueError):
    """A request body that is not a valid action; the message is the 400's text."""


class UnknownServerError(LookupError):
    """No such backend, or no such server in it (a 404)."""


_STATES = {"ready": AdminState.READY, "drain": AdminState.DRAIN, "maint": AdminState.MAINT}


@dataclass(frozen=True, slots=True)
class ServerAction:
    """``{"state": "drain" | "maint" | "ready"}`` or ``{"weight": N}`` (or both)."""

    state: AdminState | None = None
    weight: int | None = None

    def describe(self) -> dict[str, object]:
        """The action's fields for a log line."""
        fields: dict[str, object] = {}
        if self.state is not None:
            fields["state"] = self.state.value
        if self.weight is not None:
            fields["weight"] = self.weight
        return fields


def parse_action(body: object) -> ServerAction:
    """The action in a decoded JSON body; ActionError with the reason when it is none."""
    if not isinstance(body, dict) or not body:
        raise ActionError(
            'expected an object: {"state": "drain" | "maint" | "ready"} or {"weight": N}'
        )
    unknown = sorted(set(body) - {"state", "weight"})
    if unknown:
        raise ActionError(f'unknown field {unknown[0]!r}: expected "state" or "weight"')
    state = body.get("state")
    weight = body.get("weight")
    if state is not None and (not isinstance(state, str) or state.lower() not in _STATES):
        raise ActionError('"state" must be "drain", "maint" or "ready"')
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT
    ):
        raise ActionError(f'"weight" must be a whole number from 0 to {MAX_WEIGHT}')
    return ServerAction(
        state=_STATES[state.lower()] if isinstance(state, str) else None, weight=weight
    )


class ServerActions:
    """Carries out actions against ``config``'s servers, through the shared record."""

    def __init__(self, store: OverridesStore, config: Config, log: EventLog) -> None:
        self.store = store
        self.config = config
        self.log = log

    def update_config(self, config: Config) -> None:
        """Check later actions against ``config`` (after a reload)."""
        self.config = config

    def configured_weight(self, backend: str, server: str) -> int:
        """The weight the configuration gives; UnknownServerError if there is no such server."""
        for candidate in self.config.backends:
            if candidate.name != backend:
                continue
            for entry in candidate.servers:
                if entry.name == server:
                    return entry.weight
        raise UnknownServerError(f"no server {backend}/{server}")

    def act(self, caller: Caller, backend: str, server: str, action: ServerAction) -> Override:
        """Record ``action`` for every process, log it with ``caller``; the server's new record.

        The caller must be allowed to act (the HTTP layer answers 403 before).
        Every balancer process applies the record within a second.
        """
        configured = self.configured_weight(backend, server)
        override = self.store.change(
            (backend, server),
            user=caller.name,
            admin=action.state,
            weight=action.weight,
            configured_weight=configured,
        )
        self.log.info(
            "admin action",
            user=caller.name or "-",
            backend=backend,
            server=server,
            **action.describe(),
        )
        return override
