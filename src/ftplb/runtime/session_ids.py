"""Session ids: one short, unique name per session, shared by every line and view of it.

An id is ``<prefix>-<n>``: ``n`` counts this process's sessions from 1, and the
prefix is random per process, so that the workers of one balancer, and a
balancer restarted under a reused pid, never hand out the same id.
"""

from __future__ import annotations

import itertools
import os
import secrets

__all__ = ["next_session_id"]

_owner_pid = 0
_prefix = ""
_counter = itertools.count(1)


def next_session_id() -> str:
    """A new id, unique among the sessions of every process of this balancer."""
    global _owner_pid, _prefix, _counter
    pid = os.getpid()
    if pid != _owner_pid:
        # A forked worker inherits its parent's prefix and count: start its own.
        _owner_pid, _prefix, _counter = pid, secrets.token_hex(3), itertools.count(1)
    return f"{_prefix}-{next(_counter)}"
