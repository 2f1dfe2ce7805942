"""The open-files limit of a balancer process.

A session holds two sockets, four during a transfer, so the soft limit most
shells and service managers start a process with (1,024) caps a process at a
few hundred sessions, while the hard limit is usually far higher (524,288
under systemd). Raising the soft limit up to the hard one needs no privilege,
and HAProxy does the same at start. Worker processes inherit the raised limit
from their master.
"""

from __future__ import annotations

import resource

from ftplb.runtime.logs import EventLog

__all__ = ["raise_open_files_limit"]


def raise_open_files_limit(log: EventLog) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard one, and log it when it moved.

    Nothing moves when there is nothing to raise, or when the kernel refuses
    (the process then runs with the limit it was given).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited soft limit needs nothing; an unlimited hard one cannot be
    # asked for (Linux caps the limit at fs.nr_open), so leave both alone.
    if resource.RLIM_INFINITY in (soft, hard) or hard <= soft:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        return
    log.info("open files limit raised", before=soft, limit=hard)
