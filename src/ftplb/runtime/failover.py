"""Connect a new session to a server: pick, try, and retry or redispatch on failure."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ftplb.balancing.pool import Pool
from ftplb.balancing.state import Server
from ftplb.proto.errors import ProtocolError
from ftplb.runtime.logs import EventLog, LogWarning

Link = TypeVar("Link")


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    retries: int
    redispatch: bool


async def connect_with_failover(  # noqa: PLR0917 - one call per session kind
    pool: Pool,
    policy: FailoverPolicy,
    client_ip: str,
    user: bytes | None,
    open_link: Callable[[Server], Awaitable[Link]],
    log: EventLog,
    frontend: str,
    *,
    session: str,
) -> tuple[Server, Link] | str:
    """The server and its open link, or why no server could be reached.

    That reason is the last connect error ("s1: Connection refused"), or empty
    when no server was available to try at all.

    The server is acquired before the attempt, so attempts in flight count for
    leastconn and for ``max_connections``; it is released again on failure and
    on cancellation (the client left while we were connecting).  With
    ``redispatch`` each retry goes to a server not tried yet.  ``session`` is
    the id that each ``connect_failed`` warning carries.
    """
    tried: set[str] = set()
    server: Server | None = None
    failed: Server | None = None
    reason = ""
    for _ in range(1 + policy.retries):
        if server is None or policy.redispatch:
            server = pool.pick(client_ip, user, tried)
        if server is None:
            break
        if failed is not None:
            # A retry, counted against the server that failed (HAProxy's
            # retries and redispatches).
            log.notify(
                "retry",
                frontend=frontend,
                server=failed.name,
                redispatch=server is not failed,
            )
        pool.acquire(server, client_ip, user)
        try:
            link = await open_link(server)
        except asyncio.CancelledError:
            pool.release(server)
            raise
        except (OSError, TimeoutError, ProtocolError) as error:
            pool.release(server)
            reason = f"{server.name}: {describe(error)}"
            log.warning(
                LogWarning.CONNECT_FAILED,
                session=session,
                frontend=frontend,
                server=server.name,
                client=client_ip,
                reason=describe(error),
            )
            tried.add(server.name)
            failed = server
            continue
        return server, link
    return reason


def describe(error: BaseException) -> str:
    """A short reason for logs: "timeout", "Connection refused", ..."""
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ProtocolError):
        return error.message
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, OSError) and error.errno is not None:
        return errno.errorcode.get(error.errno, str(error.errno))
    return str(error) or error.__class__.__name__
