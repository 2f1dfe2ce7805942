"""Session, transfer and event log lines, as text or JSON lines, on stderr or to syslog."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Literal, TextIO

from ftplb.config.general import Defaults
from ftplb.proto.outcomes import TLS_SESSION_NOT_RESUMED, EndReason
from ftplb.runtime.syslog_target import SyslogTarget

LogFormat = Literal["text", "json"]


class LogWarning(StrEnum):
    """Every warning the balancer writes.

    A warning line carries the member's value as ``warning=`` (stable: what
    metrics, alerts and ``grep warning=connect_failed`` match) and its
    :attr:`message` as ``message=`` (for a human; its words may change).
    """

    CONNECT_FAILED = "connect_failed"
    """A connect to a server failed (refused, timed out, bad greeting); failover goes on."""
    PASSIVE_LISTENER_FAILED = "passive_listener_failed"
    """No passive listener could be opened for a client (no free port, say)."""
    PASSIVE_PER_IP = "passive_per_ip"
    """A PASV/EPSV was refused: the client's address holds ``max_passive_per_ip`` listeners."""
    FOREIGN_DATA_REFUSED = "foreign_data_refused"
    """A data connection came from an address no session waits for on that port (port theft)."""
    PROXY_HEADER_REFUSED = "proxy_header_refused"
    """A data connection from a trusted upstream brought no valid PROXY header."""
    ORPHAN_DATA_REFUSED = "orphan_data_refused"
    """``mode = "tcp"``: a data connection from an address with no control session."""
    CLIENT_TLS_FAILED = "client_tls_failed"
    """The client's TLS handshake after AUTH TLS failed."""
    TLS_NOT_RESUMED = "tls_not_resumed"
    """The server's data connection did not resume the control connection's TLS session."""
    TLS_REUSE_REQUIRED = "tls_reuse_required"
    """``tls_session_reuse = "required"``: a client's data connection did not resume
    its session's TLS session, and was refused."""
    ACCEPT_FAILED = "accept_failed"
    """``mode = "tcp"``: accept() failed (out of descriptors or memory); the listener rests."""
    RELAY_FAILED = "relay_failed"
    """``mode = "tcp"``: a relay stopped on an unexpected error (a defect)."""
    UNSTEERED = "unsteered"
    """Worker processes: one client's sessions may reach different workers."""
    WORKER_EXITED = "worker_exited"
    """A worker process exited on its own; the supervisor restarts it."""
    WORKER_RESTART_FAILED = "worker_restart_failed"
    """A worker could not be started again; the supervisor retries."""
    WORKER_KILLED = "worker_killed"
    """A worker did not stop in time and was killed."""
    HEALTH_CALLBACK_FAILED = "health_callback_failed"
    """A listener of health changes raised (a defect); the checks go on."""
    LIBRARY_LOG = "library_log"
    """A library (asyncio, aiohttp) logged a warning or an error through stdlib ``logging``."""
    OVERRIDES_UNREADABLE = "overrides_unreadable"
    """The shared record of runtime server actions could not be read; the last one stays."""
    RELOAD_REFUSED = "reload_refused"
    """A reload found the configuration file invalid; the running configuration stays."""
    RELOAD_FAILED = "reload_failed"
    """A reload's new generation could not start (a bind, a certificate); the old one stays."""
    RESTART_NEEDED = "restart_needed"
    """A reload cannot change a key (``workers``, the admin ``bind``); it keeps its old value."""
    PLAIN_ADMIN_PASSWORD = "plain_admin_password"
    """``[admin]`` has the legacy ``password`` in plain text; ``[[admin.users]]`` hash theirs."""
    CLIENT_BANNED = "client_banned"
    """The login defender banned a client address after too many failed logins."""
    DEFENDER_UNREADABLE = "defender_unreadable"
    """The defender's shared record could not be read or written; connections are admitted."""

    @property
    def message(self) -> str:
        """The human text of the warning."""
        return _MESSAGES[self]


_MESSAGES: dict[LogWarning, str] = {
    LogWarning.CONNECT_FAILED: "server connect failed",
    LogWarning.PASSIVE_LISTENER_FAILED: "cannot open a passive listener",
    LogWarning.PASSIVE_PER_IP: "refused a passive listener: too many for the client's address",
    LogWarning.FOREIGN_DATA_REFUSED: "refused a data connection from a foreign address",
    LogWarning.PROXY_HEADER_REFUSED: "refused a data connection without a valid PROXY header",
    LogWarning.ORPHAN_DATA_REFUSED: (
        "data connection refused: no control session from this address to the server"
    ),
    LogWarning.CLIENT_TLS_FAILED: "client TLS handshake failed",
    LogWarning.TLS_NOT_RESUMED: "the server did not resume the control connection's TLS session",
    LogWarning.TLS_REUSE_REQUIRED: (
        "refused a data connection that did not resume the control connection's TLS session"
    ),
    LogWarning.ACCEPT_FAILED: "cannot accept",
    LogWarning.RELAY_FAILED: "relay failed",
    LogWarning.UNSTEERED: (
        "connections are spread by the kernel's 4-tuple hash, "
        "so one client's sessions may reach different workers"
    ),
    LogWarning.WORKER_EXITED: "worker exited",
    LogWarning.WORKER_RESTART_FAILED: "worker restart failed",
    LogWarning.WORKER_KILLED: "worker did not stop; killing it",
    LogWarning.HEALTH_CALLBACK_FAILED: "health change callback failed",
    LogWarning.LIBRARY_LOG: "a library logged a warning or an error",
    LogWarning.OVERRIDES_UNREADABLE: "the record of runtime server actions cannot be read",
    LogWarning.RELOAD_REFUSED: "the new configuration is invalid; the running one stays",
    LogWarning.RELOAD_FAILED: "the new configuration could not start; the running one stays",
    LogWarning.RESTART_NEEDED: "this change needs a restart; the old value stays until then",
    LogWarning.CLIENT_BANNED: "client address banned after too many failed logins",
    LogWarning.DEFENDER_UNREADABLE: "the defender's shared record cannot be read or written",
    LogWarning.PLAIN_ADMIN_PASSWORD: (
        "the admin password is written in plain text in the configuration; "
        "prefer [[admin.users]] with a password_hash (ftplb hash-password makes one)"
    ),
}


class TransferError(StrEnum):
    """Why a transfer's data connection failed: the ``error=`` of a ``transfer`` line.

    Free text (an errno name, a TLS alert) goes beside it as ``error_detail=``.
    """

    RESET_BY_CLIENT = "reset_by_client"
    """The client reset its data connection, or it broke (EPIPE)."""
    RESET_BY_SERVER = "reset_by_server"
    """The server reset its data connection, or it broke."""
    CLIENT_SOCKET_ERROR = "client_socket_error"
    """Another socket error on the client's data connection (the detail names it)."""
    SERVER_SOCKET_ERROR = "server_socket_error"
    """Another socket error on the server's data connection (the detail names it)."""
    CLIENT_TLS_ERROR = "client_tls_error"
    """A TLS error on the client's data connection (the detail is its reason)."""
    SERVER_TLS_ERROR = "server_tls_error"
    """A TLS error on the server's data connection (the detail is its reason)."""
    IDLE_TIMEOUT = "idle_timeout"
    """No byte moved either way for the idle timeout."""
    DATA_TIMEOUT = "data_timeout"
    """The data connections were not established within ``timeout_data``."""
    DATA_CONNECT_FAILED = "data_connect_failed"
    """A data connection (or its TLS handshake) could not be established (the detail says why)."""
    TLS_SESSION_NOT_RESUMED = TLS_SESSION_NOT_RESUMED
    """The client's data connection did not resume its session's TLS session, and
    ``tls_session_reuse = "required"`` refused it."""
    CLIENT_STOPPED_READING = "client_stopped_reading"
    """Every byte was sent, but the client stopped acknowledging them."""
    SESSION_ENDED = "session_ended"
    """The session ended before the transfer's final reply (the detail is the session's end)."""


Observer = Callable[[str, dict[str, Any]], None]
"""Called with each record's kind and fields (read-only), e.g. to count it in metrics."""


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    # Quote only what would be ambiguous in a key=value line.
    if not text or " " in text or '"' in text or "=" in text or "\\" in text:
        return json.dumps(text)
    return text


UTC_OFFSET = "+00:00"
"""Every timestamp is UTC, written with its offset so no reader has to guess."""


class EventLog:
    """Writes one line per record; never raises on a closed or full stream.

    Lines go to ``stream`` (stderr), or with ``syslog`` to that receiver, and
    to ``stream`` only when the receiver cannot be reached.
    """

    __slots__ = (
        "_fixed",
        "_format",
        "_observers",
        "_second",
        "_stamp",
        "_stream",
        "_syslog",
    )

    def __init__(
        self,
        log_format: LogFormat = "text",
        stream: TextIO | None = None,
        fixed: Mapping[str, Any] | None = None,
        syslog: SyslogTarget | None = None,
    ) -> None:
        # Fields on every line, right after the kind (a worker's `worker=<i>`).
        self._fixed: dict[str, Any] = dict(fixed or {})
        self._format = log_format
        self._stream = stream if stream is not None else sys.stderr
        self._syslog = syslog
        self._second = -1
        self._stamp = ""
        self._observers: tuple[Observer, ...] = ()

    def close(self) -> None:
        """Close the syslog socket, if any (the stream is not ours to close)."""
        if self._syslog is not None:
            self._syslog.close()

    @property
    def syslog_dropped(self) -> int:
        """Lines dropped because the syslog receiver's buffer was full (0 without syslog)."""
        return self._syslog.dropped if self._syslog is not None else 0

    def _now(self) -> str:
        """``2026-12-05T05:41:07.123+00:00``: the second's text is made once per second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}{UTC_OFFSET}"

    def add_observer(self, observer: Observer) -> None:
        """Also hand every record to ``observer``, after its line is written."""
        self._observers = (*self._observers, observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop handing records to ``observer``; unknown observers are ignored."""
        # Equality, not identity: each access to a bound method makes a new object.
        self._observers = tuple(o for o in self._observers if o != observer)

    def notify(self, kind: str, **fields: Any) -> None:
        """Hand a record to the observers only: an event worth counting, not a line."""
        self._tell(kind, fields)

    def _tell(self, kind: str, fields: dict[str, Any]) -> None:
        for observer in self._observers:
            try:
                observer(kind, fields)
            except Exception:
                continue  # an observer (metrics) must never take a session down

    def write(self, kind: str, **fields: Any) -> None:
        stamp = self._now()
        line = self._line(stamp, kind, fields)
        if self._syslog is None or not self._syslog.send(kind, stamp, line):
            self._to_stream(line)
        if self._observers:
            self._tell(kind, fields)

    def _line(self, stamp: str, kind: str, fields: dict[str, Any]) -> str:
        shown = {**self._fixed, **fields} if self._fixed else fields
        if self._format == "json":
            return json.dumps({"time": stamp, "event": kind, **shown}, default=str)
        return " ".join([stamp, kind, *(f"{k}={_text_value(v)}" for k, v in shown.items())])

    def _to_stream(self, line: str) -> None:
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # logging must never take a session down

    def session(self, *, end: EndReason, detail: str = "", **fields: Any) -> None:
        """A ``session`` line: ``fields``, then ``end=`` and, when not empty, ``detail=``."""
        self._ended("session", end, detail, fields)

    def data(self, *, end: EndReason, detail: str = "", **fields: Any) -> None:
        """A ``data`` line (a relayed data connection of ``mode = "tcp"``), ended like a session."""
        self._ended("data", end, detail, fields)

    def _ended(self, kind: str, end: EndReason, detail: str, fields: dict[str, Any]) -> None:
        if detail:
            self.write(kind, **fields, end=end, detail=detail)
        else:
            self.write(kind, **fields, end=end)

    def transfer(self, **fields: Any) -> None:
        self.write("transfer", **fields)

    def warning(self, warning: LogWarning, **fields: Any) -> None:
        """A ``warning`` line: ``warning=<value>`` to match on, then the human ``message``."""
        self.write("warning", warning=warning, message=warning.message, **fields)

    def error(self, message: str) -> None:
        """A fatal error that stops ftplb: a JSON ``error`` line under ``json``; under ``text``
        the plain ``ftplb: <message>`` line an operator reads on a terminal, as other tools'
        fatal errors look. It goes to the stream even with syslog (whoever started ftplb
        must see why it stopped), and to syslog as an ``error`` line too."""
        stamp = self._now()
        line = self._line(stamp, "error", {"message": message})
        if self._syslog is not None:
            self._syslog.send("error", stamp, line)
        self._to_stream(line if self._format == "json" else f"ftplb: {message}")

    def info(self, message: str, **fields: Any) -> None:
        self.write("info", message=message, **fields)


class _ToEventLog(logging.Handler):
    """Writes stdlib ``logging`` records (warnings and errors) as EventLog warnings."""

    def __init__(self, log: EventLog) -> None:
        super().__init__(logging.WARNING)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {
                "logger": record.name,
                "level": record.levelname,
                "reason": record.getMessage(),
            }
            error = record.exc_info[1] if record.exc_info else None
            if error is not None:
                fields["error"] = f"{type(error).__name__}: {error}"
                frames = traceback.extract_tb(error.__traceback__)
                if frames:
                    fields["where"] = f"{frames[-1].filename}:{frames[-1].lineno}"
            self._log.warning(LogWarning.LIBRARY_LOG, **fields)
        except Exception:
            self.handleError(record)


def capture_library_logs(log: EventLog) -> Callable[[], None]:
    """Route what libraries log through stdlib ``logging`` to ``log``; returns the undo.

    asyncio (an exception nobody retrieved, a callback that raised) and aiohttp
    (a failed request) log through stdlib ``logging``, whose fallback prints
    plain text on stderr: with ``log_format = "json"`` every line must be JSON.
    Python's own ``warnings`` (a deprecation, say) take the same way.
    """
    handler = _ToEventLog(log)
    root = logging.getLogger()
    root.addHandler(handler)
    logging.captureWarnings(True)

    def release() -> None:
        logging.captureWarnings(False)
        root.removeHandler(handler)

    return release


def event_log(defaults: Defaults, fixed: Mapping[str, Any] | None = None) -> EventLog:
    """The EventLog that ``[defaults]`` asks for: its format, and stderr or syslog."""
    syslog = SyslogTarget(defaults.syslog_address) if defaults.log_target == "syslog" else None
    return EventLog(defaults.log_format, fixed=fixed, syslog=syslog)
