"""The per-session FTP state machine: events in, actions out.

One ``ControlSession`` sits between one client and one server.  It relays
commands and replies as bytes, and acts only where a load balancer must:

* data setup (PASV, EPSV, PORT, EPRT): the client's data leg always ends at
  the balancer, and the server's leg follows the backend's ``data_mode``;
* transfers: a transfer's final reply is held until every data byte has been
  relayed, so a client never reads "226" with bytes still missing;
* ABOR, QUIT, EPSV ALL, FEAT and security commands;
* FTPS (RFC 4217): AUTH, PBSZ and PROT are answered here and never reach the
  server, which gets its own TLS (or none) from the runtime.

Commands are taken one at a time: the next one waits until the previous one
has its final reply, which keeps our own replies in order with the server's.
ABOR is the exception: during a transfer it is acted on at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
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
from ftplb.proto.commands import Command, CommandParser, loggable, rule_for
from ftplb.proto.errors import ProtocolError
from ftplb.proto.features import filter_feat, own_feat
from ftplb.proto.outcomes import EndReason
from ftplb.proto.replies import Reply, ReplyParser, format_reply

ServerDataMode = Literal["passive", "active", "client"]
ClientTlsMode = Literal["none", "explicit", "implicit"]

_UPLOAD_VERBS = frozenset({b"STOR", b"APPE", b"STOU"})
_SECURITY_VERBS = frozenset({b"AUTH", b"PBSZ", b"PROT", b"CCC", b"ADAT", b"MIC", b"CONF", b"ENC"})
_UNPROXIABLE_VERBS = frozenset({b"LPSV", b"LPRT", b"SPSV"})
_LOGIN_VERBS = frozenset({b"USER", b"PASS", b"ACCT"})
_AUTH_MECHANISMS = frozenset({b"TLS", b"SSL", b"TLS-C"})
# What a TLS frontend adds to FEAT, whatever the server offers.
_TLS_FEATURES = (b"AUTH TLS", b"PBSZ", b"PROT")

_PLEASE_LOGIN = format_reply(530, "Please login with USER and PASS.")
_LOGIN_NEEDS_TLS = format_reply(530, "Non-anonymous sessions must use encryption (AUTH TLS).")


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


class _Expect(Enum):
    """What the next server reply answers."""

    FORWARD = auto()
    LOGIN = auto()
    FEAT = auto()
    QUIT = auto()
    SERVER_PASSIVE = auto()
    SERVER_ACTIVE = auto()
    TRANSFER = auto()
    ABORT = auto()


@dataclass(slots=True)
class _Transfer:
    command: Command
    client: act.ClientSide
    server: act.ServerSide
    preliminary_seen: bool = False
    held_final: Reply | None = None
    data_finished: bool = False
    data_error: str | None = None


@dataclass(frozen=True, slots=True)
class _DataSetup:
    client: act.ClientSide
    server: act.ServerSide


class ControlSession:
    """The FTP control-connection state machine of one client session."""

    __slots__ = (
        "_abort_needs_transfer_final",
        "_abort_saw_preliminary",
        "_after_tls",
        "_busy",
        "_client_listener",
        "_closed",
        "_commands",
        "_control_protected",
        "_data",
        "_epsv_all",
        "_expect",
        "_held_output",
        "_pbsz",
        "_pending_client_side",
        "_pending_user",
        "_policy",
        "_prot_private",
        "_queue",
        "_replies",
        "_server_address",
        "_server_family",
        "_server_gone",
        "_server_ready",
        "_setup_verb",
        "_tls_pending",
        "_transfer",
        "client_ip",
        "logged_in",
        "passive_family",
        "user",
    )

    def __init__(self, policy: SessionPolicy, client_ip: str, passive_family: int) -> None:
        self._policy = policy
        self.client_ip = client_ip
        self.passive_family = passive_family
        self.user: bytes | None = None
        self.logged_in = False
        self._commands = CommandParser(policy.max_line_length)
        self._replies = ReplyParser()
        self._queue: deque[Command | ProtocolError] = deque()
        self._expect: deque[_Expect] = deque()
        self._busy = False
        self._closed = False
        self._server_ready = False
        self._server_gone = False
        self._server_address = ""
        self._server_family = 1
        self._pending_user: Command | None = None
        self._epsv_all = False
        self._setup_verb: act.DataModeName = "PASV"
        self._pending_client_side: act.ClientSide | None = None
        self._client_listener: HostPort | None = None
        self._data: _DataSetup | None = None
        self._transfer: _Transfer | None = None
        self._abort_needs_transfer_final = False
        self._abort_saw_preliminary = False
        # While a transfer's final reply is held back, everything else bound
        # for the client queues behind it, so the order never changes.
        self._held_output: list[bytes] | None = None
        # TLS towards the client: the control connection, PBSZ, and PROT P.
        self._control_protected = policy.client_tls == "implicit"
        self._tls_pending = False
        self._after_tls: list[bytes] = []
        self._pbsz = False
        self._prot_private = False

    # ----------------------------------------------------------------- state
    @property
    def idle(self) -> bool:
        """No command is in progress: the client is the one expected to speak."""
        return not self._busy and not self._queue

    @property
    def backlog(self) -> int:
        """Client commands received and not yet acted on (pipelined ones)."""
        return len(self._queue)

    @property
    def transfer_running(self) -> bool:
        return self._transfer is not None

    @property
    def awaiting_server(self) -> bool:
        """A reply is due from the server (and no data transfer excuses its silence)."""
        return bool(self._expect) and (self._transfer is None or self._transfer.data_finished)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def client_control_protected(self) -> bool:
        """The client's control connection is TLS (after AUTH, or implicit)."""
        return self._control_protected

    @property
    def client_data_protected(self) -> bool:
        """The client asked for TLS data connections (PROT P)."""
        return self._prot_private

    @property
    def server_tls(self) -> bool:
        """The server's control and data connections are TLS."""
        return self._policy.server_tls

    # ---------------------------------------------------------------- events
    def start(self) -> list[act.Action]:
        if self._policy.route_on_user:
            return [act.SendToClient(self._banner())]
        self._busy = True
        return [act.ConnectServer(None)]

    def server_connected(self, server_address: str, server_family: int) -> list[act.Action]:
        """The runtime connected to a server and consumed its greeting."""
        self._server_ready = True
        self._server_address = server_address
        self._server_family = server_family
        out: list[act.Action] = []
        if self._pending_user is not None:
            user_command, self._pending_user = self._pending_user, None
            out.append(act.SendToServer(user_command.raw))
            self._expect.append(_Expect.LOGIN)
        else:
            self._busy = False
            out.append(act.SendToClient(self._banner()))
        out += self._pump()
        return out

    def server_unavailable(self, reason: str) -> list[act.Action]:
        text = "Service not available, no server could take the session."
        return self._close(EndReason.NO_SERVER, format_reply(421, text), detail=reason)

    def client_data(self, data: bytes) -> list[act.Action]:
        if self._closed or self._tls_pending:
            # Between AUTH and the end of the handshake, plaintext from the
            # client is an injection attempt (or garbage): never execute it.
            return []
        self._queue.extend(self._commands.feed(data))
        out: list[act.Action] = []
        if self._transfer is not None:
            abort = next(
                (c for c in self._queue if isinstance(c, Command) and c.verb == b"ABOR"), None
            )
            if abort is not None:
                self._queue.remove(abort)
                out += self._abort_transfer()
        out += self._pump()
        return out

    def server_data(self, data: bytes) -> list[act.Action]:
        if self._closed:
            return []
        try:
            replies = self._replies.feed(data)
        except ProtocolError as error:
            return self._close(EndReason.PROTOCOL_ERROR, error.reply())
        out: list[act.Action] = []
        for reply in replies:
            out += self._on_reply(reply)
            if self._closed:
                return out
        out += self._pump()
        return out

    def server_closed(self) -> list[act.Action]:
        if self._closed:
            return []
        self._server_gone = True
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
        self._client_listener = address
        self._pending_client_side = act.ClientPassive(self._setup_verb)
        return self._prepare_server_side()

    def client_listener_failed(self, reason: str) -> list[act.Action]:
        return self._setup_failed(f"cannot open a passive listener: {reason}")

    def server_listener_ready(self, address: HostPort) -> list[act.Action]:
        if address.family == 1:
            command = b"PORT " + format_port_arg(address)
        else:
            command = b"EPRT " + format_eprt_arg(address)
        self._expect.append(_Expect.SERVER_ACTIVE)
        return [act.SendToServer(command + b"\r\n")]

    def server_listener_failed(self, reason: str) -> list[act.Action]:
        return self._setup_failed(f"cannot open a listener for the server: {reason}")

    def client_tls_started(self) -> list[act.Action]:
        """The client's control connection completed its TLS handshake after AUTH."""
        if self._closed or not self._tls_pending:
            return []
        self._tls_pending = False
        self._control_protected = True
        out: list[act.Action] = [act.SendToClient(chunk) for chunk in self._after_tls]
        self._after_tls = []
        out += self._command_done()
        out += self._pump()
        return out

    def client_tls_failed(self, reason: str) -> list[act.Action]:
        """The TLS handshake after AUTH failed: nothing can be said to the client."""
        self._after_tls = []
        return self._close(EndReason.CLIENT_TLS_FAILED, detail=reason)

    def data_done(self, error: str | None) -> list[act.Action]:
        """The data relay of the running transfer has ended (flushed, or failed)."""
        transfer = self._transfer
        if transfer is None or self._closed:
            return []
        transfer.data_finished = True
        transfer.data_error = error
        out = self._release_transfer_reply()
        out += self._finish_if_server_gone()
        out += self._pump()
        return out

    # ------------------------------------------------------- client commands
    def _pump(self) -> list[act.Action]:
        out: list[act.Action] = []
        while self._queue and not self._busy and not self._closed:
            if not self._server_ready and not self._policy.route_on_user:
                break
            item = self._queue.popleft()
            if isinstance(item, ProtocolError):
                out += self._say(item.reply())
            else:
                if self._policy.log_commands:
                    out.append(act.CommandSeen(loggable(item)))
                out += self._on_command(item)
        return out

    def _on_command(self, command: Command) -> list[act.Action]:
        verb = command.verb
        if not self._server_ready:
            return self._before_server(command)
        if verb in _SECURITY_VERBS:
            return self._on_security_command(command)
        if verb in _LOGIN_VERBS and self._login_needs_tls():
            return self._say(_LOGIN_NEEDS_TLS)
        if verb in _UNPROXIABLE_VERBS:
            return self._say(format_reply(502, f"{verb.decode()} is not supported."))
        rule = rule_for(verb)
        if not self.logged_in and (rule.data_setup or rule.opens_data):
            return self._say(_PLEASE_LOGIN)
        if verb in (b"PASV", b"EPSV"):
            return self._on_passive_request(command)
        if verb in (b"PORT", b"EPRT"):
            return self._on_active_request(command)
        if rule.opens_data:
            return self._on_transfer_command(command)
        if verb == b"ABOR":
            return self._forward(command, _Expect.FORWARD, self._drop_data("ABOR"))
        if verb == b"QUIT":
            return self._forward(command, _Expect.QUIT)
        if verb == b"FEAT":
            return self._forward(command, _Expect.FEAT)
        if verb == b"REIN" and self._policy.client_tls != "none":
            # REIN would reset the TLS state (RFC 4217): the client would then
            # expect plaintext on a connection that stays TLS here.
            return self._say(format_reply(502, "REIN is not supported with TLS."))
        if verb in _LOGIN_VERBS:
            if verb == b"USER":
                self.user = command.arg
                self.logged_in = False
            return self._forward(command, _Expect.LOGIN)
        if verb == b"REIN":
            self.logged_in = False
        return self._forward(command, _Expect.FORWARD)

    def _before_server(self, command: Command) -> list[act.Action]:
        """Commands before USER when the server can only be chosen from USER."""
        verb = command.verb
        if verb in _SECURITY_VERBS:
            return self._on_security_command(command)
        if verb in _LOGIN_VERBS and self._login_needs_tls():
            return self._say(_LOGIN_NEEDS_TLS)
        if verb == b"USER":
            self.user = command.arg
            self._pending_user = command
            self._busy = True
            return [act.ConnectServer(command.arg)]
        if verb == b"QUIT":
            return self._close(EndReason.QUIT, format_reply(221, "Goodbye."))
        if verb == b"FEAT":
            return self._say(own_feat(self._feat_extra()))
        if verb == b"NOOP":
            return self._say(format_reply(200, "NOOP ok."))
        if verb == b"SYST":
            return self._say(format_reply(215, "UNIX Type: L8"))
        if verb == b"OPTS":
            return self._say(format_reply(200, "OK."))
        if verb == b"PASS":
            return self._say(format_reply(503, "Login with USER first."))
        return self._say(_PLEASE_LOGIN)

    # -------------------------------------------------------------- security
    def _on_security_command(self, command: Command) -> list[act.Action]:
        """AUTH, PBSZ, PROT and friends: ftplb's own, never forwarded."""
        verb = command.verb
        if self._policy.client_tls == "none":
            return self._say(format_reply(502, "TLS is not enabled on this frontend."))
        if verb == b"AUTH":
            return self._on_auth(command.arg.strip().upper())
        if verb == b"PBSZ":
            return self._on_pbsz(command.arg.strip())
        if verb == b"PROT":
            return self._on_prot(command.arg.strip().upper())
        if verb == b"CCC":
            # A clear control channel would blind nothing here, but it would
            # let anyone on the path rewrite the client's commands again.
            return self._say(format_reply(533, "CCC is not allowed; the session stays encrypted."))
        return self._say(format_reply(502, f"{verb.decode()} is not supported."))

    def _on_auth(self, mechanism: bytes) -> list[act.Action]:
        if self._control_protected:
            return self._say(format_reply(503, "Already using TLS."))
        if mechanism not in _AUTH_MECHANISMS:
            shown = mechanism.decode("ascii", "backslashreplace")
            return self._say(format_reply(504, f"AUTH {shown} is not supported; use AUTH TLS."))
        # Whatever the client sent after AUTH was sent in the clear, before
        # the handshake: executing it later as if it came over TLS is the
        # STARTTLS command injection.  Drop it, and any partial line.
        self._queue.clear()
        self._commands = CommandParser(self._policy.max_line_length)
        self._tls_pending = True
        self._busy = True
        return [act.SendToClient(format_reply(234, "AUTH TLS successful.")), act.StartTls()]

    def _on_pbsz(self, size: bytes) -> list[act.Action]:
        if not self._control_protected:
            return self._say(format_reply(503, "PBSZ needs AUTH first."))
        if not size.isdigit():
            return self._say(format_reply(501, "PBSZ needs a number."))
        self._pbsz = True
        # TLS protects a stream, not blocks: the only buffer size is 0 (RFC 4217 §9).
        return self._say(format_reply(200, "PBSZ=0"))

    def _on_prot(self, level: bytes) -> list[act.Action]:
        if not self._control_protected:
            return self._say(format_reply(503, "PROT needs AUTH first."))
        if not self._pbsz:
            return self._say(format_reply(503, "PROT needs PBSZ first."))
        shown = level.decode("ascii", "backslashreplace")
        if level in (b"P", b"C"):
            self._prot_private = level == b"P"
            return self._say(format_reply(200, f"Protection level set to {shown}."))
        if level in (b"S", b"E"):
            return self._say(format_reply(536, f"PROT {shown} is not supported; use P or C."))
        return self._say(format_reply(504, f"PROT {shown} is not recognized."))

    def _login_needs_tls(self) -> bool:
        return self._policy.tls_required and not self._control_protected

    def _feat_extra(self) -> tuple[bytes, ...]:
        return _TLS_FEATURES if self._policy.client_tls != "none" else ()

    def _forward(
        self, command: Command, expect: _Expect, before: list[act.Action] | None = None
    ) -> list[act.Action]:
        self._busy = True
        self._expect.append(expect)
        return [*(before or []), act.SendToServer(command.raw)]

    # ------------------------------------------------------------ data setup
    def _on_passive_request(self, command: Command) -> list[act.Action]:
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
        self._setup_verb = "EPSV" if extended else "PASV"
        self._busy = True
        return [*self._drop_data("new data setup"), act.OpenClientListener()]

    def _on_active_request(self, command: Command) -> list[act.Action]:
        verb = command.verb
        if self._epsv_all:
            text = f"{verb.decode()} not allowed after EPSV ALL."
            return self._say(format_reply(503, text))
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
        self._setup_verb = "PORT" if verb == b"PORT" else "EPRT"
        self._busy = True
        out = self._drop_data("new data setup")
        self._pending_client_side = act.ClientActive(address, self._setup_verb)
        return out + self._prepare_server_side()

    def _prepare_server_side(self) -> list[act.Action]:
        mode = self._policy.server_data_mode
        client_passive = isinstance(self._pending_client_side, act.ClientPassive)
        if mode == "passive" or (mode == "client" and client_passive):
            verb = b"PASV" if self._server_family == 1 else b"EPSV"
            self._expect.append(_Expect.SERVER_PASSIVE)
            return [act.SendToServer(verb + b"\r\n")]
        return [act.OpenServerListener()]

    def _on_server_data_setup_reply(self, reply: Reply, expect: _Expect) -> list[act.Action]:
        if reply.code // 100 != 2:
            return self._setup_failed(f"server refused data setup: {reply.code}")
        server: act.ServerSide
        if expect is _Expect.SERVER_PASSIVE:
            try:
                if reply.code == 229:
                    port = parse_epsv_reply(reply.text)
                    mode: act.DataModeName = "EPSV"
                else:
                    port = parse_pasv_reply(reply.text).port
                    mode = "PASV"
                # The server's own control address, not the one in its reply:
                # servers behind NAT advertise addresses we cannot reach, and a
                # server must never steer our data connection to a third host.
                server = act.ServerPassive(HostPort.of(self._server_address, port), mode)
            except (ProtocolError, ValueError) as error:
                return self._setup_failed(f"unusable passive reply from server: {error}")
        else:
            server = act.ServerActive("PORT" if self._server_family == 1 else "EPRT")
        client = self._pending_client_side
        assert client is not None
        self._pending_client_side = None
        self._data = _DataSetup(client, server)
        return [*self._say(self._data_setup_reply(client)), *self._command_done()]

    def _data_setup_reply(self, client: act.ClientSide) -> bytes:
        if isinstance(client, act.ClientActive):
            return format_reply(200, f"{client.mode} command successful.")
        listener = self._client_listener
        assert listener is not None
        if client.mode == "PASV":
            return format_pasv_reply(listener)
        return format_epsv_reply(listener.port)

    def _setup_failed(self, reason: str) -> list[act.Action]:
        self._pending_client_side = None
        reply = format_reply(425, "Can't open data connection.")
        return [act.CloseData(reason), *self._say(reply), *self._command_done()]

    def _drop_data(self, reason: str) -> list[act.Action]:
        if self._data is None and self._client_listener is None:
            return []
        self._data = None
        self._client_listener = None
        return [act.CloseData(reason)]

    # ------------------------------------------------------------- transfers
    def _on_transfer_command(self, command: Command) -> list[act.Action]:
        if self._policy.tls_required and not self._prot_private:
            return self._say(format_reply(521, "Data connections must be encrypted."))
        setup = self._data
        if setup is None:
            return self._say(format_reply(425, "Use PORT, PASV, EPRT or EPSV first."))
        self._transfer = _Transfer(command, setup.client, setup.server)
        start = act.StartTransfer(
            setup.client,
            setup.server,
            command.verb in _UPLOAD_VERBS,
            client_tls=self._prot_private,
            server_tls=self._policy.server_tls,
        )
        return self._forward(command, _Expect.TRANSFER, [start])

    def _on_transfer_reply(self, reply: Reply) -> list[act.Action]:
        transfer = self._transfer
        assert transfer is not None
        if reply.is_preliminary and transfer.preliminary_seen and transfer.data_error is not None:
            # Pure-FTPd ends a transfer whose data connection broke with a
            # second 1xx line and no final reply; waiting for one would hang.
            transfer.held_final = reply
            self._held_output = []
            return self._release_transfer_reply()
        if reply.is_preliminary:
            out = self._say(reply.raw)
            if not transfer.preliminary_seen and isinstance(transfer.client, act.ClientActive):
                out.append(act.ConnectClient())
            transfer.preliminary_seen = True
            self._expect.appendleft(_Expect.TRANSFER)
            return out
        if not transfer.preliminary_seen:
            # Refused before any data flowed (550 and the like).
            self._transfer = None
            self._data = None
            self._client_listener = None
            out = [act.CloseData(f"transfer refused: {reply.code}"), *self._say(reply.raw)]
            out.append(self._transfer_done(transfer, reply.code))
            return out + self._command_done()
        transfer.held_final = reply
        self._held_output = []
        return self._release_transfer_reply()

    def _release_transfer_reply(self) -> list[act.Action]:
        transfer = self._transfer
        if transfer is None or transfer.held_final is None or not transfer.data_finished:
            return []
        reply = transfer.held_final
        data = reply.raw
        code = reply.code
        if transfer.data_error is not None and code // 100 in (1, 2):
            # The server finished, but the client did not get every byte.
            code = 426
            data = format_reply(426, "Data connection failed; transfer aborted.")
        held = self._held_output or []
        self._held_output = None
        self._transfer = None
        self._data = None
        self._client_listener = None
        out: list[act.Action] = [act.SendToClient(data)]
        out += [act.SendToClient(chunk) for chunk in held]
        out.append(self._transfer_done(transfer, code))
        out.append(act.CloseData("transfer complete"))
        return out + self._command_done()

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
        self._abort_needs_transfer_final = transfer.held_final is None
        self._abort_saw_preliminary = transfer.preliminary_seen
        self._transfer = None
        self._data = None
        self._client_listener = None
        self._held_output = None
        if self._expect and self._expect[0] is _Expect.TRANSFER:
            self._expect.popleft()
        self._expect.appendleft(_Expect.ABORT)
        return [
            act.CloseData("aborted by client"),
            act.SendToServer(b"ABOR\r\n"),
            act.SendToClient(format_reply(426, "Transfer aborted, data connection closed.")),
            self._transfer_done(transfer, 426),
        ]

    # ---------------------------------------------------------------- replies
    def _on_reply(self, reply: Reply) -> list[act.Action]:
        if not self._expect:
            # Unsolicited (a server's idle-timeout 421, say): pass it on.
            if reply.code == 421:
                return self._close(EndReason.SERVER_CLOSED, reply.raw)
            return self._say(reply.raw)
        expect = self._expect.popleft()
        if expect is _Expect.TRANSFER:
            return self._on_transfer_reply(reply)
        if expect is _Expect.ABORT:
            return self._on_abort_reply(reply)
        if reply.is_preliminary:
            self._expect.appendleft(expect)
            return self._say(reply.raw)
        if expect in (_Expect.SERVER_PASSIVE, _Expect.SERVER_ACTIVE):
            return self._on_server_data_setup_reply(reply, expect)
        if expect is _Expect.FEAT:
            return [*self._say(filter_feat(reply, self._feat_extra())), *self._command_done()]
        if expect is _Expect.QUIT:
            return self._close(EndReason.QUIT, reply.raw)
        if expect is _Expect.LOGIN and reply.code == 230:
            self.logged_in = True
        return [*self._say(reply.raw), *self._command_done()]

    def _on_abort_reply(self, reply: Reply) -> list[act.Action]:
        if self._abort_needs_transfer_final:
            if reply.is_preliminary and not self._abort_saw_preliminary:
                # The transfer's own 1xx, which crossed our ABOR on the wire.
                self._abort_saw_preliminary = True
            else:
                # The transfer's final reply; or a second 1xx, which is how
                # Pure-FTPd ends a transfer whose data connection broke.
                self._abort_needs_transfer_final = False
            self._expect.appendleft(_Expect.ABORT)
            return []
        if reply.is_preliminary:
            self._expect.appendleft(_Expect.ABORT)
            return []
        return [
            *self._say(format_reply(226, "Abort successful.")),
            *self._command_done(),
        ]

    # ---------------------------------------------------------------- helpers
    def _command_done(self) -> list[act.Action]:
        if not self._expect and self._transfer is None:
            self._busy = False
        return []

    def _say(self, data: bytes) -> list[act.Action]:
        """Send to the client, or queue behind a held transfer reply (or a handshake)."""
        if self._tls_pending:
            self._after_tls.append(data)
            return []
        if self._held_output is not None:
            self._held_output.append(data)
            return []
        return [act.SendToClient(data)]

    def _banner(self) -> bytes:
        return format_reply(220, self._policy.banner)

    def _finish_if_server_gone(self) -> list[act.Action]:
        if not self._server_gone or self._closed:
            return []
        if self._transfer is not None and self._transfer.held_final is not None:
            return []  # the final reply goes out once the data is flushed
        if self._expect and self._expect[0] is _Expect.QUIT:
            return self._close(EndReason.QUIT, format_reply(221, "Goodbye."))
        text = "Service not available, the server closed the connection."
        return self._close(EndReason.SERVER_CLOSED, format_reply(421, text))

    def _close(
        self, reason: EndReason, last_words: bytes = b"", *, detail: str = ""
    ) -> list[act.Action]:
        if self._closed:
            return []
        self._closed = True
        out: list[act.Action] = []
        if self._held_output:
            out += [act.SendToClient(chunk) for chunk in self._held_output]
        self._held_output = None
        if last_words and not self._tls_pending:
            # Mid-handshake, plaintext last words would only garble it.
            out.append(act.SendToClient(last_words))
        out.append(act.Close(reason, detail))
        return out


def _unsupported_family(family: int) -> bytes:
    return format_reply(522, f"Network protocol not supported, use ({family}).")
