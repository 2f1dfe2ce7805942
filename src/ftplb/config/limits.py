"""Per-client limits: the keys ``[defaults]`` sets and each ``[[frontends]]`` may override.

``ClientLimitDefaults`` holds them with their defaults (0: unlimited) and is a
base of ``Defaults``; ``ClientLimitOverrides`` holds the same keys, unset by
default, and is a base of ``Frontend``. :func:`resolve_limits` is the one
place where a frontend's value wins over the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from ftplb.config.fields import ByteRate, Count, Section

__all__ = [
    "ClientLimitDefaults",
    "ClientLimitOverrides",
    "ClientLimits",
    "resolve_limits",
]

SessionRate = Annotated[int, Field(ge=0, le=10_000)]
"""New sessions per second from one address; the window keeps one time stamp per session."""


class ClientLimitDefaults(Section):
    """The per-client limits of every frontend that does not set its own."""

    max_sessions_per_ip: Count = 0
    max_passive_per_ip: Count = 0
    sessions_per_second_per_ip: SessionRate = 0
    transfer_rate_per_session: ByteRate = 0
    transfer_rate_per_user: ByteRate = 0
    transfer_rate_per_ip: ByteRate = 0


class ClientLimitOverrides(Section):
    """The same keys on a frontend; an unset one takes the ``[defaults]`` value."""

    max_sessions_per_ip: Count | None = None
    max_passive_per_ip: Count | None = None
    sessions_per_second_per_ip: SessionRate | None = None
    transfer_rate_per_session: ByteRate | None = None
    transfer_rate_per_user: ByteRate | None = None
    transfer_rate_per_ip: ByteRate | None = None


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """One frontend's per-client limits, resolved; 0 is unlimited everywhere."""

    max_sessions_per_ip: int = 0
    max_passive_per_ip: int = 0
    sessions_per_second_per_ip: int = 0
    transfer_rate_per_session: int = 0
    """Bytes per second."""
    transfer_rate_per_user: int = 0
    transfer_rate_per_ip: int = 0

    @property
    def limits_transfers(self) -> bool:
        """Whether any transfer rate is limited (else the data path pays nothing)."""
        return bool(
            self.transfer_rate_per_session
            or self.transfer_rate_per_user
            or self.transfer_rate_per_ip
        )


def resolve_limits(frontend: ClientLimitOverrides, defaults: ClientLimitDefaults) -> ClientLimits:
    """The frontend's limits: each key its own value when set, else the default's."""
    values = {
        name: own if (own := getattr(frontend, name)) is not None else getattr(defaults, name)
        for name in ClientLimitDefaults.model_fields
    }
    return ClientLimits(**values)
