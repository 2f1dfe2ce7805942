"""Every FTP command rule of the balancer, in one table.

A row says, for one verb: who answers it, whether it may run before login,
whether it opens a data transfer (and which way), whether its argument is a
secret, what it needs under ``tls_required``, and what ftplb answers while no
server is chosen yet (routing on USER). ``ControlSession`` reads the row and
keeps no verb list of its own; a verb without a row is forwarded untouched and
left to the server to judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from ftplb.proto.phases import FastEnum


class Handling(FastEnum):
    """What the session does with a command; each member names its handler."""

    FORWARD = auto()
    """Relay the line to the server, and its reply to the client."""
    LOGIN = auto()
    """Forward; a 230 reply logs the session in. USER names the user (and, when
    routing on USER, is what chooses the server)."""
    REIN = auto()
    """Forward; the session is logged out. Refused on a TLS frontend."""
    FEAT = auto()
    """Forward; the server's feature list is rewritten (features.py)."""
    QUIT = auto()
    """Forward; the session ends with the server's reply."""
    ABOR = auto()
    """Forward and drop the prepared data connection; during a transfer,
    acted on at once (426 then 226)."""
    TRANSFER = auto()
    """Forward, and relay the data connection prepared before it."""
    PASSIVE = auto()
    """ftplb's own: a listener for the client, and the server's leg by ``data_mode``."""
    ACTIVE = auto()
    """ftplb's own: the client's address, checked against bounce and theft."""
    AUTH = auto()
    """ftplb's own TLS towards the client (RFC 4217)."""
    PBSZ = auto()
    """ftplb's own: the only buffer size is 0."""
    PROT = auto()
    """ftplb's own: the client's data protection level."""
    CCC = auto()
    """ftplb's own: refused, the control connection stays encrypted."""
    UNSUPPORTED = auto()
    """ftplb's own 502: the verb cannot be proxied."""

    @property
    def answered_by_balancer(self) -> bool:
        """ftplb writes the reply itself; the verb never reaches the server."""
        return self in _ANSWERED_BY_BALANCER

    @property
    def needs_server(self) -> bool:
        """The handler talks to the server, so it cannot run before one is chosen."""
        return self not in _SERVERLESS


_ANSWERED_BY_BALANCER = frozenset(
    {
        Handling.PASSIVE,
        Handling.ACTIVE,
        Handling.AUTH,
        Handling.PBSZ,
        Handling.PROT,
        Handling.CCC,
        Handling.UNSUPPORTED,
    }
)
_SERVERLESS = frozenset(
    {Handling.AUTH, Handling.PBSZ, Handling.PROT, Handling.CCC, Handling.UNSUPPORTED}
)


class Direction(Enum):
    """Which way a transfer's data flows."""

    DOWNLOAD = auto()
    """Server to client (RETR, LIST, NLST, MLSD)."""
    UPLOAD = auto()
    """Client to server (STOR, STOU, APPE)."""


class TlsNeed(Enum):
    """What ``tls_required`` demands before the verb may run."""

    NONE = auto()
    CONTROL = auto()
    """A TLS control connection (AUTH TLS first): answered 530 otherwise."""
    DATA = auto()
    """A TLS data connection (PROT P first): answered 521 otherwise."""


@dataclass(frozen=True, slots=True)
class VerbRule:
    """One row of the table."""

    handling: Handling
    before_login: bool = False
    """May run before login; otherwise ftplb answers 530 until a 230."""
    transfer: Direction | None = None
    """The verb transfers data over the prepared data connection, this way."""
    secret: bool = False
    """Its argument is masked in logs."""
    tls: TlsNeed = TlsNeed.NONE
    unrouted: tuple[int, str] | None = None
    """ftplb's own answer while no server is chosen yet (routing on USER);
    None for a verb that is refused with 530 then, or that has a handler of its own."""


# The table is plain data: each row writes out every field that differs from
# the default, so a reader sees the whole rule where the verb is.
_LOGIN_FIRST = (503, "Login with USER first.")
_NEEDS_LOGIN = VerbRule(Handling.FORWARD)

RULES: dict[bytes, VerbRule] = {
    # Login (RFC 959 §4.1.1). USER picks the server when routing on USER.
    b"USER": VerbRule(Handling.LOGIN, before_login=True, tls=TlsNeed.CONTROL),
    b"PASS": VerbRule(
        Handling.LOGIN, before_login=True, secret=True, tls=TlsNeed.CONTROL, unrouted=_LOGIN_FIRST
    ),
    b"ACCT": VerbRule(
        Handling.LOGIN, before_login=True, secret=True, tls=TlsNeed.CONTROL, unrouted=_LOGIN_FIRST
    ),
    b"REIN": VerbRule(Handling.REIN, before_login=True),
    b"QUIT": VerbRule(Handling.QUIT, before_login=True),
    # Security (RFC 2228, RFC 4217): TLS ends at ftplb, so these never reach
    # the server, which gets its own TLS (or none) from the runtime.
    b"AUTH": VerbRule(Handling.AUTH, before_login=True),
    b"PBSZ": VerbRule(Handling.PBSZ, before_login=True),
    b"PROT": VerbRule(Handling.PROT, before_login=True),
    b"CCC": VerbRule(Handling.CCC, before_login=True),
    b"ADAT": VerbRule(Handling.UNSUPPORTED, before_login=True),
    b"MIC": VerbRule(Handling.UNSUPPORTED, before_login=True),
    b"CONF": VerbRule(Handling.UNSUPPORTED, before_login=True),
    b"ENC": VerbRule(Handling.UNSUPPORTED, before_login=True),
    # Data setup: the client's leg always ends at ftplb.
    b"PASV": VerbRule(Handling.PASSIVE),
    b"EPSV": VerbRule(Handling.PASSIVE),
    b"PORT": VerbRule(Handling.ACTIVE),
    b"EPRT": VerbRule(Handling.ACTIVE),
    # Long and single-port passive (RFC 1639, SPSV): no client needs them, and
    # their addresses could not be rewritten.
    b"LPSV": VerbRule(Handling.UNSUPPORTED, before_login=True),
    b"LPRT": VerbRule(Handling.UNSUPPORTED, before_login=True),
    b"SPSV": VerbRule(Handling.UNSUPPORTED, before_login=True),
    # Transfers.
    b"RETR": VerbRule(Handling.TRANSFER, transfer=Direction.DOWNLOAD, tls=TlsNeed.DATA),
    b"LIST": VerbRule(Handling.TRANSFER, transfer=Direction.DOWNLOAD, tls=TlsNeed.DATA),
    b"NLST": VerbRule(Handling.TRANSFER, transfer=Direction.DOWNLOAD, tls=TlsNeed.DATA),
    b"MLSD": VerbRule(Handling.TRANSFER, transfer=Direction.DOWNLOAD, tls=TlsNeed.DATA),
    b"STOR": VerbRule(Handling.TRANSFER, transfer=Direction.UPLOAD, tls=TlsNeed.DATA),
    b"STOU": VerbRule(Handling.TRANSFER, transfer=Direction.UPLOAD, tls=TlsNeed.DATA),
    b"APPE": VerbRule(Handling.TRANSFER, transfer=Direction.UPLOAD, tls=TlsNeed.DATA),
    b"ABOR": VerbRule(Handling.ABOR),
    # Informational commands a client may send before login. With no server
    # chosen yet, ftplb answers them itself.
    b"FEAT": VerbRule(Handling.FEAT, before_login=True),
    b"SYST": VerbRule(Handling.FORWARD, before_login=True, unrouted=(215, "UNIX Type: L8")),
    b"NOOP": VerbRule(Handling.FORWARD, before_login=True, unrouted=(200, "NOOP ok.")),
    b"OPTS": VerbRule(Handling.FORWARD, before_login=True, unrouted=(200, "OK.")),
    b"HELP": VerbRule(
        Handling.FORWARD, before_login=True, unrouted=(214, "Log in with USER and PASS.")
    ),
    b"STAT": VerbRule(Handling.FORWARD, before_login=True, unrouted=(211, "Not logged in.")),
    b"CLNT": VerbRule(Handling.FORWARD, before_login=True, unrouted=(200, "Noted.")),
    # HOST (RFC 7151) names a virtual host on the server, which is not chosen
    # yet; FEAT does not offer it either.
    b"HOST": VerbRule(
        Handling.FORWARD, before_login=True, unrouted=(502, "HOST is not supported before login.")
    ),
    b"LANG": VerbRule(
        Handling.FORWARD, before_login=True, unrouted=(502, "LANG is not supported before login.")
    ),
    # The rest of RFC 959, 3659 and the X* aliases: file system commands,
    # forwarded, and only after login.
    **dict.fromkeys(
        b"CWD CDUP XCWD XCUP PWD XPWD MKD XMKD RMD XRMD DELE RNFR RNTO SIZE MDTM "
        b"MLST TYPE STRU MODE ALLO REST SMNT".split(),
        _NEEDS_LOGIN,
    ),
}

UNLISTED = VerbRule(Handling.FORWARD, before_login=True)
"""The rule of a verb without a row: forwarded, and the server judges it."""


def rule_for(verb: bytes) -> VerbRule:
    """The rule for ``verb`` (any case)."""
    return RULES.get(verb.upper(), UNLISTED)
