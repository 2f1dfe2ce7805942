"""Transfers while they run: what the metrics count each second and the stats list.

A frontend keeps a :class:`RunningTransfer` for each data transfer it is
relaying, from the transfer command until its log line is written. The
record holds the relay's :class:`~ftplb.runtime.relay.RelayMeter`, so its
byte totals are read when someone looks, never pushed from the data path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ftplb.runtime.relay import RelayMeter

__all__ = ["RunningTransfer", "cut_short_detail", "data_key"]


@dataclass(slots=True, eq=False)
class RunningTransfer:
    """One transfer being relayed. The client is always side ``a`` of its relay."""

    key: str
    """Unique among this process's running transfers: the session id (``mode =
    "ftp"``), or :func:`data_key` of the data connection (``mode = "tcp"``)."""
    frontend: str
    client: str
    server: str
    user: str = "-"
    command: str = "-"
    path: str = "-"
    started: float = field(default_factory=time.time)
    """Wall-clock start (seconds since the epoch)."""
    meter: RelayMeter = field(default_factory=RelayMeter)

    @property
    def to_client(self) -> int:
        return self.meter.b_to_a

    @property
    def to_server(self) -> int:
        return self.meter.a_to_b


def data_key(frontend: str, client: str) -> str:
    """The key of a ``mode = "tcp"`` data connection, from its log line's fields."""
    return f"{frontend} {client}"


def cut_short_detail(end: str, relay_error: str | None = None) -> str:
    """The ``error_detail`` of a transfer line written because its session ended first:
    the session's end, then the data connection's own error, if it had one."""
    return f"{end}: {relay_error}" if relay_error else end
