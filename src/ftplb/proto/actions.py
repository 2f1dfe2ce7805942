"""What the control session asks the I/O layer to do.

``ControlSession`` never touches a socket: every event it receives returns a
list of these frozen values, and the runtime carries them out in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ftplb.proto.addresses import HostPort
from ftplb.proto.outcomes import EndReason

DataModeName = Literal["PASV", "EPSV", "PORT", "EPRT"]


@dataclass(frozen=True, slots=True)
class SendToClient:
    data: bytes


@dataclass(frozen=True, slots=True)
class SendToServer:
    data: bytes


@dataclass(frozen=True, slots=True)
class ConnectServer:
    """Pick a server (by the pool's rules, with ``user`` when the pool routes on it),
    connect, and consume its greeting; then report ``server_connected`` or
    ``server_unavailable``."""

    user: bytes | None


@dataclass(frozen=True, slots=True)
class OpenClientListener:
    """Open a passive listener for the client on the advertised address, then
    report ``client_listener_ready`` or ``client_listener_failed``."""


@dataclass(frozen=True, slots=True)
class OpenServerListener:
    """Open a listener the server will connect to (active mode towards the
    server), then report ``server_listener_ready`` or ``server_listener_failed``."""


@dataclass(frozen=True, slots=True)
class ClientPassive:
    """The client connects to our listener."""

    mode: DataModeName


@dataclass(frozen=True, slots=True)
class ClientActive:
    """We connect to the client at ``address`` once the server answers 1xx."""

    address: HostPort
    mode: DataModeName


@dataclass(frozen=True, slots=True)
class ServerPassive:
    """We connect to the server's data port."""

    address: HostPort
    mode: DataModeName


@dataclass(frozen=True, slots=True)
class ServerActive:
    """The server connects to our listener."""

    mode: DataModeName


ClientSide = ClientPassive | ClientActive
ServerSide = ServerPassive | ServerActive


@dataclass(frozen=True, slots=True)
class StartTransfer:
    """A transfer command is on its way to the server: establish both data
    legs that can be established now, and relay once both are up.  Report
    ``data_done`` when the relay ends."""

    client: ClientSide
    server: ServerSide
    upload: bool
    client_tls: bool = False
    """The client's data leg is TLS (the client sent PROT P): we are its TLS server."""
    server_tls: bool = False
    """The server's data leg is TLS (the backend re-encrypts): we are its TLS client."""


@dataclass(frozen=True, slots=True)
class StartTls:
    """The 234 reply to AUTH has been queued for the client: upgrade the client's
    control connection to TLS (as the TLS server) once it is written, then report
    ``client_tls_started`` or ``client_tls_failed``.  Until then, stop reading
    from the client: bytes sent before the handshake must never be executed."""


@dataclass(frozen=True, slots=True)
class ConnectClient:
    """Active mode towards the client: the server has answered 1xx, connect now."""


@dataclass(frozen=True, slots=True)
class CloseData:
    """Tear down every data listener and connection of the session."""

    reason: str


@dataclass(frozen=True, slots=True)
class TransferDone:
    """A transfer's final reply has been sent to the client: log it."""

    verb: str
    path: bytes
    code: int
    client_mode: DataModeName
    server_mode: DataModeName


@dataclass(frozen=True, slots=True)
class CommandSeen:
    """A client command, as it may be logged (secrets masked)."""

    text: str


@dataclass(frozen=True, slots=True)
class LoginResult:
    """The server answered a login command (USER, PASS, ACCT) for good: 230 or 530.

    Its reply has been queued for the client; count it (metrics), nothing to carry out.
    """

    ok: bool
    """True for 230 (logged in), False for 530 (refused)."""
    user: bytes | None
    """The session's last USER argument, None if it sent none."""


@dataclass(frozen=True, slots=True)
class Close:
    """Flush what was sent to the client, then close every connection."""

    reason: EndReason
    detail: str = ""
    """Free text beside the reason (the last connect error, a TLS alert), or empty."""


Action = (
    SendToClient
    | SendToServer
    | ConnectServer
    | OpenClientListener
    | OpenServerListener
    | StartTransfer
    | StartTls
    | ConnectClient
    | CloseData
    | TransferDone
    | CommandSeen
    | LoginResult
    | Close
)
