"""What one worker process of ``workers = N`` serves: its share of a configuration.

With several workers, every worker runs the whole balancer on the same
listeners, so anything that must hold for the balancer as a whole is split:

* **Passive port ranges** of ``mode = "ftp"`` frontends: worker ``i`` of ``N``
  takes the ``i``-th of ``N`` contiguous chunks of the range. The chunks are
  disjoint and cover the range, so one worker never hands out a port that
  another worker uses. A tcp-mode server's own ``passive_ports`` are not
  split: every worker listens on all of them and the kernel steers a client's
  data connections to the worker that holds its control connection.
* **Connection limits** (``max_connections`` of the defaults, of each frontend
  and of each server) are divided among the workers, rounded up, so that a
  global limit holds for the whole balancer (give or take ``N - 1``).
* **Per-client limits** (``max_sessions_per_ip`` and the like) are not
  divided: the steering program sends every connection of one client
  address to one worker, which therefore counts all of that address.

Everything here is pure: a :class:`Config` goes in, a :class:`Config` comes out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftplb.config.fields import PortRange
from ftplb.config.schema import Config

__all__ = ["WorkerSlot", "divide_limit", "slice_range", "worker_share"]


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Worker ``index`` (from 0) of ``count`` worker processes."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker {self.index} of {self.count}: index out of range")

    @classmethod
    def parse(cls, text: str) -> WorkerSlot:
        """A slot from its command-line form ``"INDEX/COUNT"``, such as ``"0/4"``."""
        index, sep, count = text.partition("/")
        if not sep or not index.isdigit() or not count.isdigit():
            raise ValueError(f"invalid worker slot {text!r}: expected INDEX/COUNT, e.g. 0/4")
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def slice_range(ports: PortRange, slot: WorkerSlot) -> PortRange:
    """The contiguous chunk of ``ports`` that worker ``slot`` uses.

    Chunk sizes differ by one at most; ValueError when the range has fewer
    ports than there are workers (the config cross-check refuses that).
    """
    if ports.count < slot.count:
        raise ValueError(f"range {ports} has fewer ports than the {slot.count} workers")
    first = ports.first + ports.count * slot.index // slot.count
    end = ports.first + ports.count * (slot.index + 1) // slot.count
    return PortRange(first, end - 1)


def divide_limit(limit: int, workers: int) -> int:
    """One worker's share of a limit where 0 means unlimited, rounded up."""
    if limit <= 0:
        return 0
    return -(-limit // workers)


def worker_share(config: Config, slot: WorkerSlot) -> Config:
    """``config`` as worker ``slot`` runs it: its passive port slices and limit shares."""
    if slot.count == 1:
        return config
    workers = slot.count
    defaults = config.defaults.model_copy(
        update={"max_connections": divide_limit(config.defaults.max_connections, workers)}
    )
    frontends = [
        frontend.model_copy(
            update={
                "max_connections": divide_limit(frontend.max_connections, workers),
                "passive_ports": (
                    slice_range(frontend.passive_ports, slot)
                    if frontend.passive_ports is not None
                    else None
                ),
            }
        )
        for frontend in config.frontends
    ]
    backends = [
        backend.model_copy(
            update={
                "servers": [
                    server.model_copy(
                        update={"max_connections": divide_limit(server.max_connections, workers)}
                    )
                    for server in backend.servers
                ]
            }
        )
        for backend in config.backends
    ]
    return config.model_copy(
        update={"defaults": defaults, "frontends": frontends, "backends": backends}
    )
