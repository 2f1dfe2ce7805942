"""What ftplb itself says to a server before the server is of use: the setup dialogue.

A session's server link and a health probe both open a control connection and
talk to the server on their own before anything else: read the greeting
(RFC 959 lets a ``120`` come before the ``220``), then, as the settings ask,
``AUTH TLS`` and the handshake (RFC 4217), ``PBSZ 0`` and ``PROT P``, ``USER``
and ``PASS``, and ``QUIT``. :class:`ServerDialogue` is that conversation as a
sans-IO machine: the runtime feeds it events and carries out the actions it
returns, in order.

Its states and the moves between them are one table, ``_TRANSITIONS``, in the
spirit of h11's ``_state.py``: a final reply's code, or an event, leads from
one state to the next. A step the settings leave out (no ``AUTH`` without
explicit TLS, no ``PBSZ``/``PROT`` for a probe, no ``USER`` without
credentials) is passed over by the table's ``NOT_NEEDED`` entries, so no flag
beside the state says where the dialogue is. A reply the table has no entry
for ends the dialogue with :class:`DialogueFailed`, whose detail reads the
same to an operator whether a probe or a session met it ("421 banner",
"530 login failed"). Timeouts are the runtime's: it names them by ``step``
("timeout reading banner").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import Final, Literal

from ftplb.proto.actions import SendToServer
from ftplb.proto.errors import ProtocolError
from ftplb.proto.replies import Reply, ReplyParser

__all__ = [
    "Credentials",
    "DialogueAction",
    "DialogueFailed",
    "DialogueReady",
    "DialogueSettings",
    "DialogueState",
    "DialogueStateError",
    "Layer",
    "SendToServer",
    "ServerDialogue",
    "StartServerTls",
    "TlsMode",
]

TlsMode = Literal["none", "explicit", "implicit"]
Layer = Literal["L6", "L7"]
"""Where a dialogue failed: "L6" (TLS and its setup), "L7" (FTP)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """The user and password a login probe sends (UTF-8, RFC 2640)."""

    user: str
    password: str = ""

    def __post_init__(self) -> None:
        # A CR or LF would let the configured text inject a second command.
        if any(ch in text for text in (self.user, self.password) for ch in "\r\n"):
            raise ValueError("credentials must not contain CR or LF")


@dataclass(frozen=True, slots=True)
class DialogueSettings:
    """What the dialogue does after the greeting."""

    tls: TlsMode = "none"
    """"explicit": send AUTH TLS and have the runtime handshake. "implicit": the
    runtime handshook before the greeting, so there is no AUTH."""
    protect_data: bool = False
    """Send PBSZ 0 and PROT P (RFC 4217), so that data connections use TLS too."""
    login: Credentials | None = None
    """Log in with USER and PASS; None leaves the login to someone else."""
    quit_at_end: bool = False
    """Say QUIT once the dialogue has passed (a probe is polite; a session is not done)."""
    max_reply_bytes: int = 4 * 1024 * 1024
    """The largest reply the parser holds; a probe needs far less than a session."""

    def __post_init__(self) -> None:
        if self.protect_data and self.tls == "none":
            raise ValueError("PBSZ and PROT protect data only over TLS")


# --------------------------------------------------------------------- actions
@dataclass(frozen=True, slots=True)
class StartServerTls:
    """Handshake TLS on the control connection now, then report ``tls_started``
    or ``tls_failed``. Until then, nothing more is read in the clear."""


@dataclass(frozen=True, slots=True)
class DialogueReady:
    """The server is set up; the dialogue is over (always the last action)."""

    detail: str
    """What passed, for a probe's result: "220 banner" or "230 logged in"."""
    unread: bytes
    """What the server sent after its last setup reply: the session's, not the dialogue's."""


@dataclass(frozen=True, slots=True)
class DialogueFailed:
    """The server cannot be used; the dialogue is over (always the last action)."""

    layer: Layer
    detail: str
    """For an operator: "421 banner", "504 to AUTH TLS", "530 login failed", ..."""


DialogueAction = SendToServer | StartServerTls | DialogueReady | DialogueFailed


class DialogueStateError(RuntimeError):
    """The runtime reported an event that cannot happen in the dialogue's state."""


# ----------------------------------------------------------------------- states
class DialogueState(Enum):
    IDLE = auto()
    """Not started: the runtime is connecting (and, for implicit TLS, handshaking)."""
    GREETING = auto()
    AUTH = auto()
    """AUTH TLS sent, its 234 awaited."""
    TLS_HANDSHAKE = auto()
    PBSZ = auto()
    PROT = auto()
    USER = auto()
    PASS = auto()
    READY = auto()
    FAILED = auto()


class _Event(Enum):
    START = auto()
    PRELIMINARY = auto()
    """A 1xx reply the state has no entry of its own for: another reply will follow."""
    TLS_STARTED = auto()
    NOT_NEEDED = auto()
    """Entering a step that the settings leave out: go on to the one after."""


_State = DialogueState
_Input = int | _Event
"""A final reply's code, or an event."""

_TRANSITIONS: Final[dict[DialogueState, dict[_Input, DialogueState]]] = {
    _State.IDLE: {_Event.START: _State.GREETING},
    # RFC 959: "120 Service ready in nnn minutes" may come before the 220.
    _State.GREETING: {120: _State.GREETING, 220: _State.AUTH},
    _State.AUTH: {
        _Event.NOT_NEEDED: _State.PBSZ,
        _Event.PRELIMINARY: _State.AUTH,
        234: _State.TLS_HANDSHAKE,
    },
    _State.TLS_HANDSHAKE: {_Event.TLS_STARTED: _State.PBSZ},
    _State.PBSZ: {
        _Event.NOT_NEEDED: _State.USER,
        _Event.PRELIMINARY: _State.PBSZ,
        200: _State.PROT,
    },
    _State.PROT: {_Event.PRELIMINARY: _State.PROT, 200: _State.USER},
    _State.USER: {
        _Event.NOT_NEEDED: _State.READY,
        _Event.PRELIMINARY: _State.USER,
        230: _State.READY,
        331: _State.PASS,
    },
    _State.PASS: {_Event.PRELIMINARY: _State.PASS, 230: _State.READY},
    _State.READY: {},
    _State.FAILED: {},
}

_AWAITING_REPLY: Final = frozenset(
    (_State.GREETING, _State.AUTH, _State.PBSZ, _State.PROT, _State.USER, _State.PASS)
)

_STEPS: Final[dict[DialogueState, str]] = {
    _State.IDLE: "before the greeting",
    _State.GREETING: "reading banner",
    _State.AUTH: "waiting for AUTH TLS reply",
    _State.TLS_HANDSHAKE: "in the TLS handshake",
    _State.PBSZ: "waiting for PBSZ reply",
    _State.PROT: "waiting for PROT reply",
    _State.USER: "waiting for USER reply",
    _State.PASS: "waiting for PASS reply",
    _State.READY: "after the setup",
    _State.FAILED: "after a failure",
}

_REFUSALS: Final[dict[DialogueState, tuple[Layer, str]]] = {
    # What a reply the table has no entry for means, as "{code} ..." for operators.
    _State.GREETING: ("L7", "banner"),
    _State.AUTH: ("L6", "to AUTH TLS"),
    _State.PBSZ: ("L6", "to PBSZ 0"),
    _State.PROT: ("L6", "to PROT P"),
    _State.USER: ("L7", "login failed"),
    _State.PASS: ("L7", "login failed"),
}

_CLEARTEXT_IN_HANDSHAKE = "data in the clear before the TLS handshake"


class ServerDialogue:
    """The setup dialogue with one server: events in, :data:`DialogueAction` lists out.

    Events: :meth:`start` once the connection is open (and, for implicit TLS,
    handshaken); :meth:`server_data`; :meth:`tls_started` or :meth:`tls_failed`
    after :class:`StartServerTls`; :meth:`server_closed`. The dialogue ends with
    exactly one :class:`DialogueReady` or :class:`DialogueFailed`. After it
    failed, every event returns ``[]`` (the runtime is closing the connection);
    after it is ready, the server's bytes are the session's and
    :meth:`server_data` refuses them.
    """

    __slots__ = ("_parser", "_settings", "_state")

    def __init__(self, settings: DialogueSettings) -> None:
        self._settings = settings
        self._state = DialogueState.IDLE
        self._parser = ReplyParser(max_reply_bytes=settings.max_reply_bytes)

    @property
    def state(self) -> DialogueState:
        return self._state

    @property
    def step(self) -> str:
        """What the dialogue waits for, as operators read it after "timeout ..."."""
        return _STEPS[self._state]

    @property
    def layer(self) -> Layer:
        """The layer a failure to go on from here belongs to."""
        return "L6" if self._state is DialogueState.TLS_HANDSHAKE else "L7"

    # ------------------------------------------------------------------ events
    def start(self) -> list[DialogueAction]:
        """The connection is open: wait for the greeting."""
        if self._state is not DialogueState.IDLE:
            raise DialogueStateError(f"start() in state {self._state.name}")
        return self._advance(_Event.START)

    def server_data(self, data: bytes) -> list[DialogueAction]:
        """Bytes from the server, split anyhow."""
        state = self._state
        if state is DialogueState.FAILED:
            return []
        if state is DialogueState.TLS_HANDSHAKE:
            return self._fail("L6", _CLEARTEXT_IN_HANDSHAKE)
        if state not in _AWAITING_REPLY:
            raise DialogueStateError(f"server_data() in state {state.name}")
        out: list[DialogueAction] = []
        start = 0
        # One line at a time, so that the bytes after the reply that ends a
        # step stay unparsed: the TLS handshake's, or the session's.
        while start < len(data) and self._state in _AWAITING_REPLY:
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline + 1
            try:
                replies = self._parser.feed(data[start:end])
            except ProtocolError as error:
                out += self._fail("L7", f"bad reply {self.step}: {error.message}")
                break
            start = end
            # A piece holds at most one LF, so it completes at most one reply.
            for reply in replies:
                out += self._on_reply(reply, data[start:])
        return out

    def tls_started(self) -> list[DialogueAction]:
        """The handshake that :class:`StartServerTls` asked for succeeded."""
        if self._state is DialogueState.FAILED:
            return []
        if self._state is not DialogueState.TLS_HANDSHAKE:
            raise DialogueStateError(f"tls_started() in state {self._state.name}")
        return self._advance(_Event.TLS_STARTED)

    def tls_failed(self, detail: str) -> list[DialogueAction]:
        """The handshake failed; ``detail`` says why ("certificate verify failed: ...")."""
        if self._state is DialogueState.FAILED:
            return []
        if self._state is not DialogueState.TLS_HANDSHAKE:
            raise DialogueStateError(f"tls_failed() in state {self._state.name}")
        return self._fail("L6", f"TLS handshake failed: {detail}")

    def server_closed(self) -> list[DialogueAction]:
        """The server closed the connection (or it was lost)."""
        state = self._state
        if state is DialogueState.IDLE:
            raise DialogueStateError("server_closed() before start()")
        if state in {DialogueState.READY, DialogueState.FAILED}:
            return []
        return self._fail("L7", f"connection closed {self.step}")

    # --------------------------------------------------------------- internals
    def _on_reply(self, reply: Reply, rest: bytes) -> list[DialogueAction]:
        transitions = _TRANSITIONS[self._state]
        key: _Input = reply.code
        if key not in transitions and reply.is_preliminary:
            key = _Event.PRELIMINARY
        if key not in transitions:
            layer, meaning = _REFUSALS[self._state]
            return self._fail(layer, f"{reply.code} {meaning}")
        return self._advance(key, rest)

    def _advance(self, key: _Input, rest: bytes = b"") -> list[DialogueAction]:
        """Follow the table on ``key``, past the steps the settings leave out."""
        target = _TRANSITIONS[self._state][key]
        while not self._needed(target):
            target = _TRANSITIONS[target][_Event.NOT_NEEDED]
        if target is self._state:
            return []  # a preliminary reply: the final one is still to come
        self._state = target
        return self._enter(target, rest)

    def _needed(self, state: DialogueState) -> bool:
        settings = self._settings
        if state is DialogueState.AUTH:
            return settings.tls == "explicit"
        if state is DialogueState.PBSZ:
            return settings.protect_data
        if state is DialogueState.USER:
            return settings.login is not None
        return True

    def _enter(self, state: DialogueState, rest: bytes) -> list[DialogueAction]:
        """The actions on arriving in ``state``; ``rest`` is what the server sent after
        the reply that led here."""
        login = self._settings.login
        if state is DialogueState.AUTH:
            return [SendToServer(b"AUTH TLS\r\n")]
        if state is DialogueState.TLS_HANDSHAKE:
            # Bytes after the 234 did not come through TLS: taking them as a
            # later reply would let anyone on the path answer for the server.
            if rest:
                return self._fail("L6", _CLEARTEXT_IN_HANDSHAKE)
            return [StartServerTls()]
        if state is DialogueState.PBSZ:
            return [SendToServer(b"PBSZ 0\r\n")]
        if state is DialogueState.PROT:
            return [SendToServer(b"PROT P\r\n")]
        if state is DialogueState.USER and login is not None:
            return [SendToServer(b"USER " + login.user.encode("utf-8") + b"\r\n")]
        if state is DialogueState.PASS and login is not None:
            return [SendToServer(b"PASS " + login.password.encode("utf-8") + b"\r\n")]
        if state is DialogueState.READY:
            out: list[DialogueAction] = []
            if self._settings.quit_at_end:
                out.append(SendToServer(b"QUIT\r\n"))
            detail = "230 logged in" if login is not None else "220 banner"
            out.append(DialogueReady(detail, rest))
            return out
        return []

    def _fail(self, layer: Layer, detail: str) -> list[DialogueAction]:
        self._state = DialogueState.FAILED
        return [DialogueFailed(layer, detail)]
