"""The per-session FTP state machine: events in, actions out.

One ``ControlSession`` sits between one client and one server. It relays
commands and replies as bytes, and acts only where a load balancer must:

* data setup (PASV, EPSV, PORT, EPRT): the client's data leg always ends at
  the balancer, and the server's leg follows the backend's ``data_mode``;
* transfers: a transfer's final reply is held until every data byte has been
  relayed, so a client never reads "226" with bytes still missing;
* ABOR, QUIT, EPSV ALL, FEAT and security commands;
* FTPS (RFC 4217): AUTH, PBSZ and PROT are answered here and never reach the
  server, which gets its own TLS (or none) from the runtime.

What each verb means to the balancer is one row of ``rules.RULES``; where the
session is, is one ``Phase`` (and, during a transfer, one ``TransferPhase``),
moved only through the tables of ``phases.py``.

Commands are taken one at a time: the next one waits until the previous one
has its final reply, which keeps our own replies in order with the server's.
ABOR is the exception: during a transfer it is acted on at once.

This module is longer than the others on purpose: it is one class, the whole
session machine, whose handlers read best beside the phase moves they make.
What it reads (the rule table, the phase tables) lives in rules.py and phases.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Literal

from ftplb.proto import actions as act
from ftplb.proto.addresses import (
    HostPort,
    format_eprt_arg,
    format_epsv_reply,
    format_pasv_reply,
    format_port_arg,
    parse_eprt_arg,
    parse_epsv_arg,
    parse_epsv_reply,
    parse_pasv_reply,
    parse_port_arg,
)
from ftplb.proto.commands import Command, CommandParser, loggable
from ftplb.proto.errors import ProtocolError
from ftplb.proto.features import filter_feat, own_feat
from ftplb.proto.outcomes import TLS_SESSION_NOT_RESUMED, EndReason, LoginStatus
from ftplb.proto.phases import (
    ABORTING,
    SERVER_REPLY_DUE,
    Phase,
    TransferEvent,
    TransferPhase,
    Trigger,
    next_phase,
    next_transfer_phase,
)
from ftplb.proto.replies import Reply, ReplyParser, format_reply
from ftplb.proto.rules import Direction, Handling, TlsNeed, VerbRule, rule_for

ServerDataMode = Literal["passive", "active", "client"]
ClientTlsMode = Literal["none", "explicit", "implicit"]

_AUTH_MECHANISMS = frozenset({b"TLS", b"SSL", b"TLS-C"})
# What a TLS frontend adds to FEAT, whatever the server offers.
_TLS_FEATURES = (b"AUTH TLS", b"PBSZ", b"PROT")

_PLEASE_LOGIN = format_reply(530, "Please login with USER and PASS.")
_LOGIN_NEEDS_TLS = format_reply(530, "Non-anonymous sessions must use encryption (AUTH TLS).")
_DATA_NEEDS_TLS = format_reply(521, "Data connections must be encrypted.")
_GOODBYE = format_reply(221, "Goodbye.")
_SHUTTING_DOWN = format_reply(421, "Service shutting down.")
_CANT_OPEN_DATA = format_reply(425, "Can't open data connection.")
# 425 rather than vsftpd's 522: RFC 959 lists 425 among the replies to a
# transfer command after its 1yz, and RFC 4217 gives 522 no meaning there.
_REUSE_REQUIRED = format_reply(
    425,
    "TLS session reuse required: the data connection must resume this control "
    "connection's TLS session.",
)
# 425, not 421: the session itself is welcome, only this data setup is not; the
# client may retry once one of its other transfers is under way.
_TOO_MANY_PASSIVE = format_reply(425, "Too many passive connections from your address.")


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """What the frontend and backend configuration decide for every session."""

    server_data_mode: ServerDataMode = "passive"
    route_on_user: bool = False
    banner: str = "ftplb ready"
    max_line_length: int = 4096
    log_commands: bool = False
    client_tls: ClientTlsMode = "none"
    """FTPS towards the client: AUTH TLS on demand, or TLS from the first byte."""
    tls_required: bool = False
    """Refuse logins before AUTH, and transfers while PROT is C."""
    server_tls: bool = False
    """The runtime speaks TLS to the server, so its data connections are TLS too."""


class Login(Enum):
    """Whether the server has accepted a login; a 230 may answer USER, PASS or ACCT."""

    OUT = auto()
    IN = auto()


class ClientTls(Enum):
    """The TLS state of the client's control connection (RFC 4217)."""

    PLAIN = auto()
    PROTECTED = auto()
    """TLS is up (after AUTH TLS, or implicit); PBSZ has not been given."""
    BUFFER_SET = auto()
    """PBSZ 0 was accepted: PROT may now choose the data protection."""


class Lifecycle(Enum):
    """Whether the balancer is stopping: a stopping session ends at its next turn."""

    RUNNING = auto()
    STOPPING = auto()
    """A graceful stop: what runs finishes, then the client gets 421 instead of a new turn."""


class Upstream(Enum):
    """The server side of the session."""

    UNCHOSEN = auto()
    """No server yet (before the connect, or routing on USER before USER)."""
    CONNECTED = auto()
    GONE = auto()
    """The server closed the connection; what it already said may still go out."""


@dataclass(slots=True)
class _Transfer:
    command: Command
    client: act.ClientSide
    server: act.ServerSide
    phase: TransferPhase = TransferPhase.REQUESTED
    held_final: Reply | None = None
    data_error: str | None = None
    held_output: list[bytes] = field(default_factory=list)
    """What else was bound for the client while the final reply was held."""


@dataclass(frozen=True, slots=True)
class _DataSetup:
    client: act.ClientSide
    server: act.ServerSide


@dataclass(slots=True)
class _SetupInProgress:
    """A PASV/EPSV/PORT/EPRT between the client's command and ftplb's reply."""

    mode: act.DataModeName
    client: act.ClientSide | None = None
    client_listener: HostPort | None = None


class ControlSession:
    """The FTP control-connection state machine of one client session."""

    __slots__ = (
        "_after_tls",
        "_awaiting",
        "_client_tls",
        "_commands",
        "_epsv_all",
        "_lifecycle",
        "_login",
        "_login_status",
        "_pending_user",
        "_phase",
        "_policy",
        "_prepared",
        "_private_data",
        "_queue",
        "_replies",
        "_server_address",
        "_server_family",
        "_setup",
        "_transfer",
        "_upstream",
        "client_ip",
        "login_failures",
        "passive_family",
        "user",
    )

    def __init__(self, policy: SessionPolicy, client_ip: str, passive_family: int) -> None:
        self._policy = policy
        self.client_ip = client_ip
        self.passive_family = passive_family
        self.user: bytes | None = None
        self._phase = Phase.NEW
        self._login = Login.OUT
        self._login_status = LoginStatus.NONE
        self.login_failures = 0
        """The server's 530 replies to login commands in this session."""
        self._lifecycle = Lifecycle.RUNNING
        self._upstream = Upstream.UNCHOSEN
        self._client_tls = (
            ClientTls.PROTECTED if policy.client_tls == "implicit" else ClientTls.PLAIN
        )
        self._private_data = False
        """PROT P: the client's data connections are TLS."""
        self._epsv_all = False
        """EPSV ALL (RFC 2428): the client gave up every other data setup command."""
        self._commands = CommandParser(policy.max_line_length)
        self._replies = ReplyParser()
        self._queue: deque[Command | ProtocolError] | None = None
        """Commands received and not acted on yet; None while there is none, as
        nearly always between commands (a deque is over 600 bytes)."""
        self._awaiting = Handling.FORWARD
        """In phase COMMAND: the handling of the command whose reply is due."""
        self._pending_user: Command | None = None
        """Routing on USER: the USER line to replay once the server is connected."""
        self._server_address = ""
        self._server_family = 1
        self._setup: _SetupInProgress | None = None
        self._prepared: _DataSetup | None = None
        """The data connection the next transfer command will use."""
        self._transfer: _Transfer | None = None
        self._after_tls: list[bytes] | None = None
        """Replies bound for the client during its TLS handshake (None: none yet)."""

    # ----------------------------------------------------------------- state
    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def transfer_phase(self) -> TransferPhase | None:
        """The running transfer's phase; None outside ``Phase.TRANSFER``."""
        return self._transfer.phase if self._transfer is not None else None

    @property
    def logged_in(self) -> bool:
        return self._login is Login.IN

    @property
    def login_status(self) -> LoginStatus:
        """How the last login went (230 or 530), ``NONE`` while there was none."""
        return self._login_status

    @property
    def idle(self) -> bool:
        """No command is in progress: the client is the one expected to speak."""
        return self._phase is Phase.READY and not self._queue

    @property
    def backlog(self) -> int:
        """Client commands received and not yet acted on (pipelined ones)."""
        return len(self._queue) if self._queue is not None else 0

    @property
    def transfer_running(self) -> bool:
        transfer = self._transfer
        return transfer is not None and transfer.phase not in ABORTING

    @property
    def transfer_command(self) -> tuple[str, bytes] | None:
        """The running transfer's verb and argument (its path); None outside a transfer."""
        transfer = self._transfer
        if transfer is None:
            return None
        return transfer.command.verb.decode("ascii"), transfer.command.arg

    @property
    def awaiting_server(self) -> bool:
        """A reply is due from the server (and no data transfer excuses its silence)."""
        if self._phase in (Phase.COMMAND, Phase.SERVER_SETUP):
            return True
        transfer = self._transfer
        return transfer is not None and transfer.phase in SERVER_REPLY_DUE

    @property
    def closed(self) -> bool:
        return self._phase is Phase.CLOSED

    @property
    def client_control_protected(self) -> bool:
        """The client's control connection is TLS (after AUTH, or implicit)."""
        return self._client_tls is not ClientTls.PLAIN

    @property
    def client_data_protected(self) -> bool:
        """The client asked for TLS data connections (PROT P)."""
        return self._private_data

    @property
    def server_tls(self) -> bool:
        """The server's control and data connections are TLS."""
        return self._policy.server_tls

    def _move(self, trigger: Trigger) -> None:
        self._phase = next_phase(self._phase, trigger)

    # ---------------------------------------------------------------- events
    def start(self) -> list[act.Action]:
        if self._policy.route_on_user:
            self._move(Trigger.GREET)
            return [act.SendToClient(self._banner())]
        self._move(Trigger.CONNECT)
        return [act.ConnectServer(None)]

    def server_connected(self, server_address: str, server_family: int) -> list[act.Action]:
        """The runtime connected to a server and consumed its greeting."""
        if self._phase is not Phase.CONNECTING:
            return []
        self._upstream = Upstream.CONNECTED
        self._server_address = server_address
        self._server_family = server_family
        out: list[act.Action] = []
        if self._pending_user is not None:
            user_command, self._pending_user = self._pending_user, None
            self._move(Trigger.REPLAY_USER)
            self._awaiting = Handling.LOGIN
            out.append(act.SendToServer(user_command.raw))
        else:
            self._move(Trigger.SERVER_READY)
            out.append(act.SendToClient(self._banner()))
        out += self._pump()
        return out

    def server_unavailable(self, detail: str) -> list[act.Action]:
        text = "Service not available, no server could take the session."
        return self._close(EndReason.NO_SERVER, format_reply(421, text), detail)

    def client_data(self, data: bytes) -> list[act.Action]:
        if self._phase in (Phase.CLOSED, Phase.TLS_HANDSHAKE):
            # Between AUTH and the end of the handshake, plaintext from the
            # client is an injection attempt (or garbage): never execute it.
            return []
        received = self._commands.feed(data)
        if received:
            if self._queue is None:
                self._queue = deque(received)
            else:
                self._queue.extend(received)
        return self._pump()

    def server_data(self, data: bytes) -> list[act.Action]:
        if self._phase is Phase.CLOSED:
            return []
        try:
            replies = self._replies.feed(data)
        except ProtocolError as error:
            return self._close(EndReason.PROTOCOL_ERROR, error.reply(), error.message)
        out: list[act.Action] = []
        for reply in replies:
            out += self._on_reply(reply)
            if self.closed:
                return out
        out += self._pump()
        return out

    def server_closed(self) -> list[act.Action]:
        if self._phase is Phase.CLOSED:
            return []
        self._upstream = Upstream.GONE
        return self._finish_if_server_gone()

    def client_closed(self) -> list[act.Action]:
        return self._close(EndReason.CLIENT_CLOSED)

    def timed_out(self, side: Literal["client", "server"]) -> list[act.Action]:
        if side == "client":
            return self._close(
                EndReason.CLIENT_TIMEOUT, format_reply(421, "Idle timeout, closing.")
            )
        text = "Service not available, the server did not answer in time."
        return self._close(EndReason.SERVER_TIMEOUT, format_reply(421, text))

    def client_listener_ready(self, address: HostPort) -> list[act.Action]:
        setup = self._setup
        if self._phase is not Phase.OPENING_LISTENER or setup is None:
            return []
        setup.client_listener = address
        setup.client = act.ClientPassive(setup.mode)
        return self._prepare_server_side(client_passive=True)

    def client_listener_failed(self, reason: str) -> list[act.Action]:
        if self._phase is not Phase.OPENING_LISTENER:
            return []
        out = self._setup_failed(f"cannot open a passive listener: {reason}")
        return out + self._pump()

    def client_listener_refused(self) -> list[act.Action]:
        """The client's address already holds as many passive listeners as it may
        (``max_passive_per_ip``): no listener was opened."""
        if self._phase is not Phase.OPENING_LISTENER:
            return []
        out = self._setup_failed("too many passive listeners for the client", _TOO_MANY_PASSIVE)
        return out + self._pump()

    def server_listener_ready(self, address: HostPort) -> list[act.Action]:
        if self._phase is not Phase.OPENING_LISTENER:
            return []
        if address.family == 1:
            command = b"PORT " + format_port_arg(address)
        else:
            command = b"EPRT " + format_eprt_arg(address)
        self._move(Trigger.ASK_SERVER)
        return [act.SendToServer(command + b"\r\n")]

    def server_listener_failed(self, reason: str) -> list[act.Action]:
        if self._phase is not Phase.OPENING_LISTENER:
            return []
        out = self._setup_failed(f"cannot open a listener for the server: {reason}")
        return out + self._pump()

    def client_tls_started(self) -> list[act.Action]:
        """The client's control connection completed its TLS handshake after AUTH."""
        if self._phase is not Phase.TLS_HANDSHAKE:
            return []
        self._move(Trigger.TLS_DONE)
        self._client_tls = ClientTls.PROTECTED
        # One handshake per session (AUTH over TLS is refused), so what was
        # held for it goes out once, and the list is not needed again.
        held, self._after_tls = self._after_tls or [], None
        out: list[act.Action] = [act.SendToClient(chunk) for chunk in held]
        return out + self._pump()

    def client_tls_failed(self, reason: str) -> list[act.Action]:
        """The TLS handshake after AUTH failed: nothing can be said to the client."""
        return self._close(EndReason.CLIENT_TLS_FAILED, detail=reason)

    def data_done(self, error: str | None) -> list[act.Action]:
        """The data relay of the running transfer has ended (flushed, or failed)."""
        transfer = self._transfer
        if transfer is None or self._phase is Phase.CLOSED:
            return []
        before = transfer.phase
        transfer.phase = next_transfer_phase(before, TransferEvent.DATA_ENDED)
        if before in ABORTING:
            return []
        transfer.data_error = error
        released = transfer.phase is TransferPhase.DONE
        out = self._release_transfer_reply(transfer) if released else []
        return out + self._finish_if_server_gone() + self._pump()

    def stop_gracefully(self) -> list[act.Action]:
        """The balancer stops: end now if it is the client's turn, else once what runs is
        answered (a transfer gets its final reply first)."""
        if self._phase is Phase.CLOSED:
            return []
        self._lifecycle = Lifecycle.STOPPING
        return self._pump()

    def stop_now(self) -> list[act.Action]:
        """The graceful stop ran out of time: a running transfer ends with 426, then 421."""
        if self._phase is Phase.CLOSED:
            return []
        transfer = self._transfer
        out: list[act.Action] = []
        if self.transfer_running and transfer is not None:
            aborted = format_reply(426, "Service shutting down; transfer aborted.")
            out = [
                act.CloseData("balancer shutting down"),
                act.SendToClient(aborted),
                self._transfer_done(transfer, 426),
            ]
        return out + self._close(EndReason.SHUTDOWN, _SHUTTING_DOWN)

    # ------------------------------------------------------- client commands
    def _pump(self) -> list[act.Action]:
        if self._lifecycle is Lifecycle.STOPPING and self._phase is Phase.READY:
            # The client's turn, and the balancer is stopping: no new command runs.
            return self._close(EndReason.SHUTDOWN, _SHUTTING_DOWN)
        out: list[act.Action] = []
        queue = self._queue
        while queue and self._phase is Phase.READY:
            item = queue.popleft()
            if isinstance(item, ProtocolError):
                out += self._say(item.reply())
                continue
            if self._policy.log_commands:
                out.append(act.CommandSeen(loggable(item)))
            out += self._on_command(item)
        if self._transfer is not None:
            out += self._abort_if_asked()
        if self._queue is not None and not self._queue:
            self._queue = None
        return out

    def _abort_if_asked(self) -> list[act.Action]:
        """During a transfer, a queued ABOR acts at once, ahead of what waits before it.

        Checked whenever the queue stops, so an ABOR that arrived behind the
        transfer command (in the same read, or while it waited) counts too."""
        queue = self._queue
        if not self.transfer_running or not queue:
            return []
        abort = next((c for c in queue if isinstance(c, Command) and c.verb == b"ABOR"), None)
        if abort is None:
            return []
        queue.remove(abort)
        seen = [act.CommandSeen(loggable(abort))] if self._policy.log_commands else []
        return seen + self._abort_transfer()

    def _on_command(self, command: Command) -> list[act.Action]:
        rule = rule_for(command.verb)
        refusal = self._refusal(rule)
        if refusal is not None:
            return self._say(refusal)
        if self._upstream is Upstream.UNCHOSEN and rule.handling.needs_server:
            return self._before_server(command, rule)
        return self._HANDLERS[rule.handling](self, command)

    def _refusal(self, rule: VerbRule) -> bytes | None:
        """ftplb's own refusal of a command this session may not run now, if any."""
        if self._login is Login.OUT and not rule.before_login:
            return _PLEASE_LOGIN
        if not self._policy.tls_required:
            return None
        if rule.tls is TlsNeed.CONTROL and self._client_tls is ClientTls.PLAIN:
            return _LOGIN_NEEDS_TLS
        if rule.tls is TlsNeed.DATA and not self._private_data:
            return _DATA_NEEDS_TLS
        return None

    def _before_server(self, command: Command, rule: VerbRule) -> list[act.Action]:
        """Routing on USER, before USER: ftplb answers alone."""
        if command.verb == b"USER":
            self.user = command.arg
            self._pending_user = command
            self._move(Trigger.CONNECT)
            return [act.ConnectServer(command.arg)]
        if rule.handling is Handling.QUIT:
            return self._close(EndReason.QUIT, _GOODBYE)
        if rule.handling is Handling.FEAT:
            return self._say(own_feat(self._feat_extra()))
        if rule.unrouted is not None:
            return self._say(format_reply(*rule.unrouted))
        return self._say(_PLEASE_LOGIN)

    def _forward(
        self, command: Command, handling: Handling, before: list[act.Action] | None = None
    ) -> list[act.Action]:
        self._move(Trigger.FORWARD)
        self._awaiting = handling
        return [*(before or []), act.SendToServer(command.raw)]

    def _on_forward(self, command: Command) -> list[act.Action]:
        return self._forward(command, Handling.FORWARD)

    def _on_login(self, command: Command) -> list[act.Action]:
        if command.verb == b"USER":
            self.user = command.arg
            self._login = Login.OUT
        return self._forward(command, Handling.LOGIN)

    def _on_rein(self, command: Command) -> list[act.Action]:
        if self._policy.client_tls != "none":
            # REIN would reset the TLS state (RFC 4217): the client would then
            # expect plaintext on a connection that stays TLS here.
            return self._say(format_reply(502, "REIN is not supported with TLS."))
        self._login = Login.OUT
        return self._forward(command, Handling.FORWARD)

    def _on_feat(self, command: Command) -> list[act.Action]:
        return self._forward(command, Handling.FEAT)

    def _on_quit(self, command: Command) -> list[act.Action]:
        return self._forward(command, Handling.QUIT)

    def _on_abor(self, command: Command) -> list[act.Action]:
        # No transfer runs (during one, ABOR never reaches the queue).
        return self._forward(command, Handling.FORWARD, self._drop_data("ABOR"))

    def _on_unsupported(self, command: Command) -> list[act.Action]:
        return self._say(format_reply(502, f"{command.verb.decode()} is not supported."))

    # -------------------------------------------------------------- security
    def _tls_disabled(self) -> list[act.Action] | None:
        if self._policy.client_tls == "none":
            return self._say(format_reply(502, "TLS is not enabled on this frontend."))
        return None

    def _on_auth(self, command: Command) -> list[act.Action]:
        disabled = self._tls_disabled()
        if disabled is not None:
            return disabled
        if self._client_tls is not ClientTls.PLAIN:
            return self._say(format_reply(503, "Already using TLS."))
        mechanism = command.arg.strip().upper()
        if mechanism not in _AUTH_MECHANISMS:
            shown = mechanism.decode("ascii", "backslashreplace")
            return self._say(format_reply(504, f"AUTH {shown} is not supported; use AUTH TLS."))
        # Whatever the client sent after AUTH was sent in the clear, before
        # the handshake: executing it later as if it came over TLS is the
        # STARTTLS command injection. Drop it, and any partial line.
        if self._queue is not None:
            self._queue.clear()  # the same deque that _pump is reading: it stops there
        self._commands = CommandParser(self._policy.max_line_length)
        self._move(Trigger.START_TLS)
        return [act.SendToClient(format_reply(234, "AUTH TLS successful.")), act.StartTls()]

    def _on_pbsz(self, command: Command) -> list[act.Action]:
        disabled = self._tls_disabled()
        if disabled is not None:
            return disabled
        if self._client_tls is ClientTls.PLAIN:
            return self._say(format_reply(503, "PBSZ needs AUTH first."))
        if not command.arg.strip().isdigit():
            return self._say(format_reply(501, "PBSZ needs a number."))
        self._client_tls = ClientTls.BUFFER_SET
        # TLS protects a stream, not blocks: the only buffer size is 0 (RFC 4217 §9).
        return self._say(format_reply(200, "PBSZ=0"))

    def _on_prot(self, command: Command) -> list[act.Action]:
        disabled = self._tls_disabled()
        if disabled is not None:
            return disabled
        if self._client_tls is ClientTls.PLAIN:
            return self._say(format_reply(503, "PROT needs AUTH first."))
        if self._client_tls is not ClientTls.BUFFER_SET:
            return self._say(format_reply(503, "PROT needs PBSZ first."))
        level = command.arg.strip().upper()
        shown = level.decode("ascii", "backslashreplace")
        if level in (b"P", b"C"):
            self._private_data = level == b"P"
            return self._say(format_reply(200, f"Protection level set to {shown}."))
        if level in (b"S", b"E"):
            return self._say(format_reply(536, f"PROT {shown} is not supported; use P or C."))
        return self._say(format_reply(504, f"PROT {shown} is not recognized."))

    def _on_ccc(self, command: Command) -> list[act.Action]:
        disabled = self._tls_disabled()
        if disabled is not None:
            return disabled
        # A clear control channel would blind nothing here, but it would let
        # anyone on the path rewrite the client's commands again.
        return self._say(format_reply(533, "CCC is not allowed; the session stays encrypted."))

    def _feat_extra(self) -> tuple[bytes, ...]:
        return _TLS_FEATURES if self._policy.client_tls != "none" else ()

    # ------------------------------------------------------------ data setup
    def _on_passive(self, command: Command) -> list[act.Action]:
        extended = command.verb == b"EPSV"
        if extended:
            try:
                wanted = parse_epsv_arg(command.arg)
            except ProtocolError as error:
                return self._say(error.reply())
            if wanted == "ALL":
                self._epsv_all = True
                return self._say(format_reply(200, "EPSV ALL ok."))
            if wanted is not None and wanted != self.passive_family:
                return self._say(_unsupported_family(self.passive_family))
        else:
            if self._epsv_all:
                return self._say(format_reply(503, "PASV not allowed after EPSV ALL."))
            if self.passive_family != 1:
                return self._say(format_reply(425, "Use EPSV on an IPv6 connection."))
        self._setup = _SetupInProgress("EPSV" if extended else "PASV")
        out = self._drop_data("new data setup")
        self._move(Trigger.OPEN_LISTENER)
        return [*out, act.OpenClientListener()]

    def _on_active(self, command: Command) -> list[act.Action]:
        verb = command.verb
        if self._epsv_all:
            return self._say(format_reply(503, f"{verb.decode()} not allowed after EPSV ALL."))
        try:
            address = (
                parse_port_arg(command.arg) if verb == b"PORT" else parse_eprt_arg(command.arg)
            )
        except ProtocolError as error:
            return self._say(error.reply())
        if address.host in ("0.0.0.0", "::"):
            # lftp sends "EPRT |2|::|port|" over IPv6: "wherever I am" can only
            # mean the client's own address, so it cannot bounce anywhere.
            address = HostPort.of(self.client_ip, address.port)
        if address.host != self.client_ip or address.port < 1024:
            # Anything else would let the client aim our data connection at a
            # third host or a privileged port (the FTP bounce attack).
            return self._say(format_reply(500, f"Illegal {verb.decode()} command."))
        mode: act.DataModeName = "PORT" if verb == b"PORT" else "EPRT"
        client = act.ClientActive(address, mode)
        self._setup = _SetupInProgress(mode, client)
        return self._drop_data("new data setup") + self._prepare_server_side(client_passive=False)

    def _server_goes_passive(self, client_passive: bool) -> bool:
        """The server's data leg: PASV/EPSV to it, or else PORT/EPRT to a listener of ours."""
        mode = self._policy.server_data_mode
        return mode == "passive" or (mode == "client" and client_passive)

    def _prepare_server_side(self, *, client_passive: bool) -> list[act.Action]:
        if self._server_goes_passive(client_passive):
            self._move(Trigger.ASK_SERVER)
            verb = b"PASV" if self._server_family == 1 else b"EPSV"
            return [act.SendToServer(verb + b"\r\n")]
        self._move(Trigger.OPEN_LISTENER)
        return [act.OpenServerListener()]

    def _on_server_setup_reply(self, reply: Reply) -> list[act.Action]:
        setup = self._setup
        assert setup is not None and setup.client is not None
        if reply.code // 100 != 2:
            return self._setup_failed(f"server refused data setup: {reply.code}")
        server: act.ServerSide
        if self._server_goes_passive(isinstance(setup.client, act.ClientPassive)):
            try:
                if reply.code == 229:
                    port = parse_epsv_reply(reply.text)
                    mode: act.DataModeName = "EPSV"
                else:
                    port = parse_pasv_reply(reply.text).port
                    mode = "PASV"
            except (ProtocolError, ValueError) as error:
                return self._setup_failed(f"unusable passive reply from server: {error}")
            # The server's own control address, not the one in its reply:
            # servers behind NAT advertise addresses we cannot reach, and a
            # server must never steer our data connection to a third host.
            server = act.ServerPassive(HostPort.of(self._server_address, port), mode)
        else:
            server = act.ServerActive("PORT" if self._server_family == 1 else "EPRT")
        self._setup = None
        self._prepared = _DataSetup(setup.client, server)
        self._move(Trigger.ANSWERED)
        return self._say(_data_setup_reply(setup))

    def _setup_failed(self, reason: str, reply: bytes = _CANT_OPEN_DATA) -> list[act.Action]:
        self._setup = None
        self._move(Trigger.ANSWERED)
        return [act.CloseData(reason), *self._say(reply)]

    def _drop_data(self, reason: str) -> list[act.Action]:
        if self._prepared is None:
            return []
        self._prepared = None
        return [act.CloseData(reason)]

    # ------------------------------------------------------------- transfers
    def _on_transfer(self, command: Command) -> list[act.Action]:
        prepared = self._prepared
        if prepared is None:
            return self._say(format_reply(425, "Use PORT, PASV, EPRT or EPSV first."))
        self._transfer = _Transfer(command, prepared.client, prepared.server)
        self._move(Trigger.START_TRANSFER)
        start = act.StartTransfer(
            prepared.client,
            prepared.server,
            rule_for(command.verb).transfer is Direction.UPLOAD,
            client_tls=self._private_data,
            server_tls=self._policy.server_tls,
        )
        return [start, act.SendToServer(command.raw)]

    def _on_transfer_reply(self, transfer: _Transfer, reply: Reply) -> list[act.Action]:
        before = transfer.phase
        event = TransferEvent.PRELIMINARY if reply.is_preliminary else TransferEvent.FINAL
        if (
            event is TransferEvent.PRELIMINARY
            and before is TransferPhase.DATA_DONE
            and transfer.data_error is not None
        ):
            # Pure-FTPd ends a transfer whose data connection broke with a
            # second 1xx line and no final reply; waiting for one would hang.
            event = TransferEvent.FINAL
        transfer.phase = next_transfer_phase(before, event)
        if before in ABORTING:
            if transfer.phase is TransferPhase.DONE:
                return self._end_transfer([*self._say(format_reply(226, "Abort successful."))])
            return []
        if event is TransferEvent.PRELIMINARY:
            out = self._say(reply.raw)
            if before is TransferPhase.REQUESTED and isinstance(transfer.client, act.ClientActive):
                out.append(act.ConnectClient())
            return out
        transfer.held_final = reply
        if before is TransferPhase.REQUESTED:
            # Refused before any data flowed (550 and the like).
            self._prepared = None
            out = [act.CloseData(f"transfer refused: {reply.code}"), *self._say(reply.raw)]
            return self._end_transfer([*out, self._transfer_done(transfer, reply.code)])
        if transfer.phase is TransferPhase.DONE:
            return self._release_transfer_reply(transfer)
        return []

    def _release_transfer_reply(self, transfer: _Transfer) -> list[act.Action]:
        reply = transfer.held_final
        assert reply is not None
        data = reply.raw
        code = reply.code
        if transfer.data_error == TLS_SESSION_NOT_RESUMED:
            # The server saw its data connection break; what it says about
            # that is beside the point for the client.
            code, data = 425, _REUSE_REQUIRED
        elif transfer.data_error is not None and code // 100 in (1, 2):
            # The server finished, but the client did not get every byte.
            code = 426
            data = format_reply(426, "Data connection failed; transfer aborted.")
        self._prepared = None
        out: list[act.Action] = [act.SendToClient(data)]
        out += [act.SendToClient(chunk) for chunk in transfer.held_output]
        out.append(self._transfer_done(transfer, code))
        out.append(act.CloseData("transfer complete"))
        return self._end_transfer(out)

    def _end_transfer(self, out: list[act.Action]) -> list[act.Action]:
        self._transfer = None
        self._move(Trigger.ANSWERED)
        return out

    def _transfer_done(self, transfer: _Transfer, code: int) -> act.TransferDone:
        return act.TransferDone(
            transfer.command.verb.decode("ascii"),
            transfer.command.arg,
            code,
            transfer.client.mode,
            transfer.server.mode,
        )

    def _abort_transfer(self) -> list[act.Action]:
        transfer = self._transfer
        assert transfer is not None
        # The server will answer the transfer command (unless it already has)
        # and then the ABOR; both answers are ours to swallow, and the client
        # gets the 426/226 pair RFC 959 prescribes.
        # Whatever was held behind a final reply is dropped with it: the
        # client gets the 426/226 pair instead.
        transfer.phase = next_transfer_phase(transfer.phase, TransferEvent.ABORT)
        self._prepared = None
        aborted = format_reply(426, "Transfer aborted, data connection closed.")
        if self._upstream is Upstream.GONE:
            # The server closed behind a held final reply: nothing will answer
            # an ABOR, so ftplb ends the 426/226 pair itself, then the session.
            out = [
                act.CloseData("aborted by client"),
                act.SendToClient(aborted),
                self._transfer_done(transfer, 426),
                *self._end_transfer(self._say(format_reply(226, "Abort successful."))),
            ]
            return out + self._finish_if_server_gone()
        return [
            act.CloseData("aborted by client"),
            act.SendToServer(b"ABOR\r\n"),
            act.SendToClient(aborted),
            self._transfer_done(transfer, 426),
        ]

    # ---------------------------------------------------------------- replies
    def _on_reply(self, reply: Reply) -> list[act.Action]:
        phase = self._phase
        transfer = self._transfer
        if transfer is not None:  # only in Phase.TRANSFER: a closed session reads no reply
            if transfer.phase is not TransferPhase.REPLY_HELD:
                return self._on_transfer_reply(transfer, reply)
        elif phase is Phase.SERVER_SETUP or phase is Phase.COMMAND:
            if reply.is_preliminary:
                return self._say(reply.raw)
            if reply.code == 421 and not self._quitting():
                # RFC 959: 421 answers any command when the server is closing
                # the connection; waiting on would only add a second 421.
                return self._close(EndReason.SERVER_CLOSED, reply.raw)
            if phase is Phase.SERVER_SETUP:
                return self._on_server_setup_reply(reply)
            return self._on_command_reply(reply)
        # Unsolicited (a server's idle-timeout 421, say): pass it on.
        if reply.code == 421:
            return self._close(EndReason.SERVER_CLOSED, reply.raw)
        return self._say(reply.raw)

    def _on_command_reply(self, reply: Reply) -> list[act.Action]:
        awaiting = self._awaiting
        if awaiting is Handling.QUIT:
            return self._close(EndReason.QUIT, reply.raw)
        self._move(Trigger.ANSWERED)
        if awaiting is Handling.FEAT:
            return self._say(filter_feat(reply, self._feat_extra()))
        out = self._say(reply.raw)
        if awaiting is Handling.LOGIN and reply.code in (230, 530):
            out.append(self._login_result(ok=reply.code == 230))
        return out

    def _login_result(self, *, ok: bool) -> act.LoginResult:
        if ok:
            self._login = Login.IN
            self._login_status = LoginStatus.OK
        else:
            self._login_status = LoginStatus.FAILED
            self.login_failures += 1
        return act.LoginResult(ok, self.user)

    # ---------------------------------------------------------------- helpers
    def _quitting(self) -> bool:
        """QUIT went to the server and waits for its answer."""
        return self._phase is Phase.COMMAND and self._awaiting is Handling.QUIT

    def _say(self, data: bytes) -> list[act.Action]:
        """Send to the client, or queue behind a held transfer reply (or a handshake)."""
        if self._phase is Phase.TLS_HANDSHAKE:
            if self._after_tls is None:
                self._after_tls = []
            self._after_tls.append(data)
            return []
        transfer = self._transfer
        if transfer is not None and transfer.phase is TransferPhase.REPLY_HELD:
            transfer.held_output.append(data)
            return []
        return [act.SendToClient(data)]

    def _banner(self) -> bytes:
        return format_reply(220, self._policy.banner)

    def _finish_if_server_gone(self) -> list[act.Action]:
        if self._upstream is not Upstream.GONE or self._phase is Phase.CLOSED:
            return []
        transfer = self._transfer
        if transfer is not None and transfer.phase is TransferPhase.REPLY_HELD:
            return []  # the final reply goes out once the data is flushed
        if self._quitting():
            return self._close(EndReason.QUIT, _GOODBYE)
        text = "Service not available, the server closed the connection."
        return self._close(EndReason.SERVER_CLOSED, format_reply(421, text))

    def _close(
        self, reason: EndReason, last_words: bytes = b"", detail: str = ""
    ) -> list[act.Action]:
        if self._phase is Phase.CLOSED:
            return []
        handshaking = self._phase is Phase.TLS_HANDSHAKE
        self._move(Trigger.CLOSE)
        transfer = self._transfer
        held = (
            transfer.held_output if transfer and transfer.phase is TransferPhase.REPLY_HELD else []
        )
        out: list[act.Action] = [act.SendToClient(chunk) for chunk in held]
        if last_words and not handshaking:
            # Mid-handshake, plaintext last words would only garble it.
            out.append(act.SendToClient(last_words))
        out.append(act.Close(reason, detail))
        return out

    _HANDLERS: dict[Handling, Callable[[ControlSession, Command], list[act.Action]]] = {
        Handling.FORWARD: _on_forward,
        Handling.LOGIN: _on_login,
        Handling.REIN: _on_rein,
        Handling.FEAT: _on_feat,
        Handling.QUIT: _on_quit,
        Handling.ABOR: _on_abor,
        Handling.TRANSFER: _on_transfer,
        Handling.PASSIVE: _on_passive,
        Handling.ACTIVE: _on_active,
        Handling.AUTH: _on_auth,
        Handling.PBSZ: _on_pbsz,
        Handling.PROT: _on_prot,
        Handling.CCC: _on_ccc,
        Handling.UNSUPPORTED: _on_unsupported,
    }


def _data_setup_reply(setup: _SetupInProgress) -> bytes:
    if isinstance(setup.client, act.ClientActive):
        return format_reply(200, f"{setup.mode} command successful.")
    listener = setup.client_listener
    assert listener is not None
    if setup.mode == "PASV":
        return format_pasv_reply(listener)
    return format_epsv_reply(listener.port)


def _unsupported_family(family: int) -> bytes:
    return format_reply(522, f"Network protocol not supported, use ({family}).")
