"""The phases of a control session and of its transfer, and the only moves between them.

In the spirit of h11's ``_state.py``: each machine is one enum and one table
``(phase, trigger) -> next phase``. ``ControlSession`` never assigns a phase
directly; it names a trigger, and a trigger the table does not list for the
current phase is a bug in the session (``PhaseError``), never a silent change.

Two aspects of a session change independently of its phase, and have an enum
of their own in ``control.py``: whether the user is logged in (a 230 can come
during any command), and the TLS state of the client's connection (AUTH, PBSZ
and PROT are commands like any other).
"""

from __future__ import annotations

from enum import Enum, auto


class FastEnum(Enum):
    """An enum hashed by identity: the transition tables look members up on every
    event, and ``Enum.__hash__`` is a Python-level call (hashing the name).
    Identity agrees with Enum's equality, which is identity too."""

    __hash__ = object.__hash__


class PhaseError(AssertionError):
    """A trigger arrived in a phase where the table does not allow it."""


class Phase(FastEnum):
    """Where a control session is; exactly one at a time."""

    NEW = auto()
    """Created; ``start()`` has not run."""
    CONNECTING = auto()
    """A server is being chosen and connected; client commands wait."""
    READY = auto()
    """The client's turn: the next command may run."""
    COMMAND = auto()
    """A forwarded command awaits the server's final reply."""
    OPENING_LISTENER = auto()
    """Data setup: the runtime is opening a listener (for the client, or for the server)."""
    SERVER_SETUP = auto()
    """Data setup: the server's answer to ftplb's own PASV/EPSV/PORT/EPRT is due."""
    TLS_HANDSHAKE = auto()
    """AUTH TLS was answered: the client's handshake runs, and nothing is read."""
    TRANSFER = auto()
    """A transfer command runs; ``TransferPhase`` says where."""
    CLOSED = auto()
    """Over: every event is ignored."""


class Trigger(FastEnum):
    """What moves a session from one phase to another."""

    CONNECT = auto()
    """Connect a server before anything else (at start, or at USER when routing on USER)."""
    GREET = auto()
    """Routing on USER: greet at once, choose the server later."""
    SERVER_READY = auto()
    """The server is connected and the client greeted."""
    REPLAY_USER = auto()
    """The server is connected, and the held USER goes to it."""
    FORWARD = auto()
    """A command went to the server."""
    OPEN_LISTENER = auto()
    """The runtime opens a data listener."""
    ASK_SERVER = auto()
    """ftplb's own PASV/EPSV/PORT/EPRT went to the server."""
    START_TLS = auto()
    """AUTH TLS answered 234: the handshake starts."""
    TLS_DONE = auto()
    """The client's handshake completed."""
    START_TRANSFER = auto()
    """A transfer command went to the server, with its data legs."""
    ANSWERED = auto()
    """The command in progress has its final reply: the client's turn again."""
    CLOSE = auto()
    """The session ends."""


_ANY_LIVE_PHASE_CLOSES = {Trigger.CLOSE: Phase.CLOSED}

SESSION_TRANSITIONS: dict[Phase, dict[Trigger, Phase]] = {
    Phase.NEW: {
        Trigger.CONNECT: Phase.CONNECTING,
        Trigger.GREET: Phase.READY,
        **_ANY_LIVE_PHASE_CLOSES,
    },
    Phase.CONNECTING: {
        Trigger.SERVER_READY: Phase.READY,
        Trigger.REPLAY_USER: Phase.COMMAND,
        **_ANY_LIVE_PHASE_CLOSES,
    },
    Phase.READY: {
        Trigger.CONNECT: Phase.CONNECTING,
        Trigger.FORWARD: Phase.COMMAND,
        Trigger.OPEN_LISTENER: Phase.OPENING_LISTENER,
        Trigger.ASK_SERVER: Phase.SERVER_SETUP,
        Trigger.START_TLS: Phase.TLS_HANDSHAKE,
        Trigger.START_TRANSFER: Phase.TRANSFER,
        **_ANY_LIVE_PHASE_CLOSES,
    },
    Phase.COMMAND: {Trigger.ANSWERED: Phase.READY, **_ANY_LIVE_PHASE_CLOSES},
    Phase.OPENING_LISTENER: {
        # The client's listener is up; in active mode towards the server, its
        # own listener comes next.
        Trigger.OPEN_LISTENER: Phase.OPENING_LISTENER,
        Trigger.ASK_SERVER: Phase.SERVER_SETUP,
        Trigger.ANSWERED: Phase.READY,
        **_ANY_LIVE_PHASE_CLOSES,
    },
    Phase.SERVER_SETUP: {Trigger.ANSWERED: Phase.READY, **_ANY_LIVE_PHASE_CLOSES},
    Phase.TLS_HANDSHAKE: {Trigger.TLS_DONE: Phase.READY, **_ANY_LIVE_PHASE_CLOSES},
    Phase.TRANSFER: {Trigger.ANSWERED: Phase.READY, **_ANY_LIVE_PHASE_CLOSES},
    Phase.CLOSED: {},
}


class TransferPhase(FastEnum):
    """Where one transfer is: the server's replies and the data relay race each other."""

    REQUESTED = auto()
    """The command went to the server; neither its 1xx nor the end of the data has come."""
    DATA_FIRST = auto()
    """The data relay ended before the server's 1xx arrived."""
    RUNNING = auto()
    """The server said 1xx; the data flows."""
    DATA_DONE = auto()
    """The data relay ended; the server's final reply is due."""
    REPLY_HELD = auto()
    """The server's final reply came first: it waits until the data is delivered."""
    ABORT_BEFORE_START = auto()
    """ABOR went to the server before the transfer's 1xx: the transfer's own
    replies, then ABOR's, are swallowed."""
    ABORT_AWAIT_FINAL = auto()
    """ABOR went to the server after the transfer's 1xx: its final reply, then ABOR's, are due."""
    ABORT_AWAIT_REPLY = auto()
    """The transfer is answered: only ABOR's own final reply is due."""
    DONE = auto()
    """Over: the client has its final reply."""


class TransferEvent(FastEnum):
    """What happens to a transfer."""

    PRELIMINARY = auto()
    """A 1xx reply from the server."""
    FINAL = auto()
    """A final reply from the server (or what ends the transfer like one)."""
    DATA_ENDED = auto()
    """The data relay ended: delivered, or failed."""
    ABORT = auto()
    """The client sent ABOR."""


TRANSFER_TRANSITIONS: dict[TransferPhase, dict[TransferEvent, TransferPhase]] = {
    TransferPhase.REQUESTED: {
        TransferEvent.PRELIMINARY: TransferPhase.RUNNING,
        TransferEvent.DATA_ENDED: TransferPhase.DATA_FIRST,
        # Refused before any data flowed (550 and the like).
        TransferEvent.FINAL: TransferPhase.DONE,
        TransferEvent.ABORT: TransferPhase.ABORT_BEFORE_START,
    },
    TransferPhase.DATA_FIRST: {
        TransferEvent.PRELIMINARY: TransferPhase.DATA_DONE,
        TransferEvent.FINAL: TransferPhase.DONE,
        TransferEvent.ABORT: TransferPhase.ABORT_BEFORE_START,
    },
    TransferPhase.RUNNING: {
        TransferEvent.PRELIMINARY: TransferPhase.RUNNING,
        TransferEvent.DATA_ENDED: TransferPhase.DATA_DONE,
        TransferEvent.FINAL: TransferPhase.REPLY_HELD,
        TransferEvent.ABORT: TransferPhase.ABORT_AWAIT_FINAL,
    },
    TransferPhase.DATA_DONE: {
        TransferEvent.PRELIMINARY: TransferPhase.DATA_DONE,
        TransferEvent.FINAL: TransferPhase.DONE,
        TransferEvent.ABORT: TransferPhase.ABORT_AWAIT_FINAL,
    },
    TransferPhase.REPLY_HELD: {
        TransferEvent.DATA_ENDED: TransferPhase.DONE,
        TransferEvent.ABORT: TransferPhase.ABORT_AWAIT_REPLY,
    },
    TransferPhase.ABORT_BEFORE_START: {
        # The transfer's own 1xx, which crossed our ABOR on the wire.
        TransferEvent.PRELIMINARY: TransferPhase.ABORT_AWAIT_FINAL,
        TransferEvent.FINAL: TransferPhase.ABORT_AWAIT_REPLY,
        TransferEvent.DATA_ENDED: TransferPhase.ABORT_BEFORE_START,
    },
    TransferPhase.ABORT_AWAIT_FINAL: {
        # A second 1xx is how Pure-FTPd ends a transfer whose data broke.
        TransferEvent.PRELIMINARY: TransferPhase.ABORT_AWAIT_REPLY,
        TransferEvent.FINAL: TransferPhase.ABORT_AWAIT_REPLY,
        TransferEvent.DATA_ENDED: TransferPhase.ABORT_AWAIT_FINAL,
    },
    TransferPhase.ABORT_AWAIT_REPLY: {
        TransferEvent.PRELIMINARY: TransferPhase.ABORT_AWAIT_REPLY,
        TransferEvent.FINAL: TransferPhase.DONE,
        TransferEvent.DATA_ENDED: TransferPhase.ABORT_AWAIT_REPLY,
    },
    TransferPhase.DONE: {},
}

ABORTING = frozenset(
    {
        TransferPhase.ABORT_BEFORE_START,
        TransferPhase.ABORT_AWAIT_FINAL,
        TransferPhase.ABORT_AWAIT_REPLY,
    }
)
"""The phases after ABOR: the client has its 426, and the server's answers are swallowed."""

SERVER_REPLY_DUE = frozenset({TransferPhase.DATA_FIRST, TransferPhase.DATA_DONE, *ABORTING})
"""The phases where the server owes a reply and no running data excuses its silence."""


def next_phase(phase: Phase, trigger: Trigger) -> Phase:
    """The phase ``trigger`` leads to from ``phase``; PhaseError if the table has no such move."""
    try:
        return SESSION_TRANSITIONS[phase][trigger]
    except KeyError:
        raise PhaseError(f"{trigger.name} is not allowed in phase {phase.name}") from None


def next_transfer_phase(phase: TransferPhase, event: TransferEvent) -> TransferPhase:
    """The transfer phase ``event`` leads to; PhaseError if the table has no such move."""
    try:
        return TRANSFER_TRANSITIONS[phase][event]
    except KeyError:
        raise PhaseError(f"{event.name} is not allowed in transfer phase {phase.name}") from None
