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


class Handling(Enum):
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


_FORWARDED_BEFORE_LOGIN = VerbRule(Handling.FORWARD, before_login=True)
_NEEDS_LOGIN = VerbRule(Handling.FORWARD)


def _login(*, secret: bool, unrouted: tuple[int, str] | None) -> VerbRule:
    return VerbRule(
        Handling.LOGIN, before_login=True, secret=secret, tls=TlsNeed.CONTROL, unrouted=unrouted
    )


def _own(handling: Handling) -> VerbRule:
    return VerbRule(handling, before_login=True)


def _transfer(direction: Direction) -> VerbRule:
    return VerbRule(Handling.TRANSFER, transfer=direction, tls=TlsNeed.DATA)


def _answered_before_server(code: int, text: str) -> VerbRule:
    return VerbRule(Handling.FORWARD, before_login=True, unrouted=(code, text))


_LOGIN_FIRST = (503, "Login with USER first.")

RULES: dict[bytes, VerbRule] = {
    # Login (RFC 959 §4.1.1). USER picks the server when routing on USER.
    b"USER": _login(secret=False, unrouted=None),
    b"PASS": _login(secret=True, unrouted=_LOGIN_FIRST),
    b"ACCT": _login(secret=True, unrouted=_LOGIN_FIRST),
    b"REIN": VerbRule(Handling.REIN, before_login=True),
    b"QUIT": VerbRule(Handling.QUIT, before_login=True),
    # Security (RFC 2228, RFC 4217): TLS ends at ftplb, so these never reach
    # the server, which gets its own TLS (or none) from the runtime.
    b"AUTH": _own(Handling.AUTH),
    b"PBSZ": _own(Handling.PBSZ),
    b"PROT": _own(Handling.PROT),
    b"CCC": _own(Handling.CCC),
    b"ADAT": _own(Handling.UNSUPPORTED),
    b"MIC": _own(Handling.UNSUPPORTED),
    b"CONF": _own(Handling.UNSUPPORTED),
    b"ENC": _own(Handling.UNSUPPORTED),
    # Data setup: the client's leg always ends at ftplb.
    b"PASV": VerbRule(Handling.PASSIVE),
    b"EPSV": VerbRule(Handling.PASSIVE),
    b"PORT": VerbRule(Handling.ACTIVE),
    b"EPRT": VerbRule(Handling.ACTIVE),
    # Long and single-port passive (RFC 1639, SPSV): no client needs them, and
    # their addresses could not be rewritten.
    b"LPSV": _own(Handling.UNSUPPORTED),
    b"LPRT": _own(Handling.UNSUPPORTED),
    b"SPSV": _own(Handling.UNSUPPORTED),
    # Transfers.
    b"RETR": _transfer(Direction.DOWNLOAD),
    b"LIST": _transfer(Direction.DOWNLOAD),
    b"NLST": _transfer(Direction.DOWNLOAD),
    b"MLSD": _transfer(Direction.DOWNLOAD),
    b"STOR": _transfer(Direction.UPLOAD),
    b"STOU": _transfer(Direction.UPLOAD),
    b"APPE": _transfer(Direction.UPLOAD),
    b"ABOR": VerbRule(Handling.ABOR),
    # Informational commands a client may send before login. With no server
    # chosen yet, ftplb answers them itself.
    b"FEAT": VerbRule(Handling.FEAT, before_login=True),
    b"SYST": _answered_before_server(215, "UNIX Type: L8"),
    b"NOOP": _answered_before_server(200, "NOOP ok."),
    b"OPTS": _answered_before_server(200, "OK."),
    b"HELP": _answered_before_server(214, "Log in with USER and PASS."),
    b"STAT": _answered_before_server(211, "Not logged in."),
    b"CLNT": _answered_before_server(200, "Noted."),
    # HOST (RFC 7151) names a virtual host on the server, which is not chosen
    # yet; FEAT does not offer it either.
    b"HOST": _answered_before_server(502, "HOST is not supported before login."),
    b"LANG": _answered_before_server(502, "LANG is not supported before login."),
    # The rest of RFC 959, 3659 and the X* aliases: file system commands,
    # forwarded, and only after login.
    **dict.fromkeys(
        b"CWD CDUP XCWD XCUP PWD XPWD MKD XMKD RMD XRMD DELE RNFR RNTO SIZE MDTM "
        b"MLST TYPE STRU MODE ALLO REST SMNT".split(),
        _NEEDS_LOGIN,
    ),
}

UNLISTED = _FORWARDED_BEFORE_LOGIN
"""The rule of a verb without a row: forwarded, and the server judges it."""


def rule_for(verb: bytes) -> VerbRule:
    """The rule for ``verb`` (any case)."""
    rule = RULES.get(verb)
    if rule is None:
        rule = RULES.get(verb.upper(), UNLISTED)
    return rule
