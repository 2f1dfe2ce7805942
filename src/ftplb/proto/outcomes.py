"""Why a session ended: one closed vocabulary for the core, the logs and the metrics.

Each value is also the bounded ``reason`` label of the session-end counter, so
a log line's ``end=`` field and the metric agree without any text matching.
Free text (the last connect error, a TLS alert) travels beside it as a detail.
"""

from __future__ import annotations

from enum import StrEnum


class EndReason(StrEnum):
    """How a client session (or, in ``mode = "tcp"``, a relayed connection) ended."""

    QUIT = "quit"
    """The client sent QUIT and got its 221."""
    CLIENT_CLOSED = "client_closed"
    """The client closed its control connection."""
    CLIENT_TIMEOUT = "client_timeout"
    """The client stayed silent past ``timeout_client``."""
    CLIENT_TLS_FAILED = "client_tls_failed"
    """The client's TLS handshake after AUTH TLS failed."""
    SERVER_TIMEOUT = "server_timeout"
    """The server owed a reply past ``timeout_server``."""
    SERVER_CLOSED = "server_closed"
    """The server closed the connection, or said 421 on its own."""
    PROTOCOL_ERROR = "protocol_error"
    """The server sent something that is not an FTP reply."""
    NO_SERVER = "no_server"
    """No server could take the session (every connect failed, or none was available).

    In ``mode = "tcp"`` also the end of a data connection whose server could
    not be connected; the detail names the connect error."""
    LIMIT = "limit"
    """Refused at accept: a ``max_connections`` limit was reached."""
    PROXY_REFUSED = "proxy_refused"
    """Refused at accept on an ``accept_proxy`` frontend: the connection came from
    outside ``proxy_trusted``, or brought no valid PROXY header in time; the
    detail says which (``untrusted_source``, ``not_proxy``, ``v1_malformed``, ...)."""
    SESSIONS_PER_IP = "sessions_per_ip"
    """Refused at accept: the client's address holds ``max_sessions_per_ip`` sessions."""
    SESSION_RATE = "session_rate"
    """Refused at accept: the client's address opened ``sessions_per_second_per_ip``
    sessions within the last second."""
    SHUTDOWN = "shutdown"
    """The balancer was stopping."""
    CLOSED = "closed"
    """``mode = "tcp"``: both ends closed in turn."""
    IDLE_TIMEOUT = "idle_timeout"
    """``mode = "tcp"``: no byte moved for the idle timeout."""
    CLIENT_RESET = "client_reset"
    """``mode = "tcp"``: the client reset the connection, or it failed with another
    socket error (the detail names it: ``ETIMEDOUT``, ...)."""
    SERVER_RESET = "server_reset"
    """``mode = "tcp"``: the server reset the connection, or it failed with another
    socket error (the detail names it)."""
    INTERNAL_ERROR = "internal_error"
    """``mode = "tcp"``: the relay stopped on an unexpected error, a defect of the
    balancer; the ``relay_failed`` warning beside it says which."""
    BANNED = "banned"
    """Refused at connect, or closed after the failed login that earned it: the client
    address is banned by the login defender (``[defender]``)."""
    DENIED = "denied"
    """Refused at connect: the client address is in the defender's ``deny`` list."""

    @property
    def refused(self) -> bool:
        """The session was turned away before any server served it."""
        return self in _REFUSALS


_REFUSALS = frozenset(
    (
        EndReason.NO_SERVER,
        EndReason.LIMIT,
        EndReason.SESSIONS_PER_IP,
        EndReason.SESSION_RATE,
        EndReason.PROXY_REFUSED,
        EndReason.BANNED,
        EndReason.DENIED,
    )
)


class LoginStatus(StrEnum):
    """How a session's last login attempt went: the ``login`` field of its log line.

    A login ends with the server's 230 or 530 to USER, PASS or ACCT; a 331
    (password please) only carries it on.
    """

    NONE = "none"
    """The server never answered a login with 230 or 530."""
    OK = "ok"
    """The last one was accepted (230)."""
    FAILED = "failed"
    """The last one was refused (530)."""


TLS_SESSION_NOT_RESUMED = "tls_session_not_resumed"
"""The data error of a client data connection refused by ``tls_session_reuse =
"required"``: the core answers it with its own reply, whatever the server said."""
