"""ControlSession driven by a model of its client, its server and its runtime.

A Hypothesis ``RuleBasedStateMachine`` plays all three at once. It delivers
only what the runtime could deliver at that point:

* a listener outcome right after ``OpenClientListener``/``OpenServerListener``
  (the runtime reports it synchronously, before any other event);
* a TLS outcome only after ``StartTls``, and no client bytes meanwhile (the
  runtime stops reading);
* ``data_done`` once per ``StartTransfer``; after ``CloseData`` it may still
  come, late, or never (the relay task may have finished already);
* server replies only to what the server was sent, in order (a small model of
  what the server owes); ``server_closed`` only once it has said everything;
* timeouts only when the runtime's timer would fire (``idle``, ``awaiting_server``);
* nothing once the session said ``Close`` (the runtime stops there); the
  machine then only checks that late events are ignored, as the session promises.

Every action is checked as the runtime would carry it out, in order; the
client's side keeps the lines it sent and pairs each final reply with the
oldest unanswered one, so a missing, extra or misplaced reply shows. Checked
after every event:

* nothing goes to the server while the client's TLS handshake is pending;
* no final reply to a transfer command reaches the client before its data is
  done, except a refusal before any 1xx, and an ABOR's 426;
* each transfer gets exactly one final reply (426 then 226 when aborted) and
  one ``TransferDone`` with that code;
* no action but the PASS/ACCT line to the server carries the PASS argument;
* every chunk to the client is whole, CRLF-terminated FTP replies;
* the session is closed, ``Close`` last, after QUIT is answered, after
  ``client_closed``, after ``server_closed`` once no final reply is held, and
  no action follows a ``Close``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ftplb.proto import actions as act
from ftplb.proto.addresses import HostPort
from ftplb.proto.control import ClientTlsMode, ControlSession, ServerDataMode, SessionPolicy
from ftplb.proto.outcomes import LoginStatus
from ftplb.proto.replies import Reply, ReplyParser
from ftplb.proto.rules import RULES, Direction, rule_for

SECRET = "Pw-7kQ93zX"
"""The PASS/ACCT argument: it may go to the server, and nowhere else."""
SECRET_BYTES = SECRET.encode()

TRANSFER_VERBS = frozenset(verb for verb, row in RULES.items() if row.transfer is not None)
UPLOAD_VERBS = frozenset(verb for verb, row in RULES.items() if row.transfer is Direction.UPLOAD)
SETUP_VERBS = frozenset({b"PASV", b"EPSV", b"PORT", b"EPRT"})
TELNET_ABORT = b"\xff\xf4\xff\xf2"  # IAC IP, IAC DM: what clients put before ABOR
OVERLONG = b"NOOP " + b"x" * 4200 + b"\r\n"  # longer than every max_line_length used here

SERVER_MODES: list[ServerDataMode] = ["passive", "active", "client"]
CLIENT_TLS_MODES: list[ClientTlsMode] = ["none", "explicit", "implicit"]
# (client address, passive family): the PORT/EPRT lines below are valid for one of them.
NETWORKS = [("127.0.0.100", 1), ("::1", 2)]

SINGLE_LINES = st.sampled_from(
    [
        b"USER alice\r\n",
        b"user bob\r\n",
        b"PASS " + SECRET_BYTES + b"\r\n",
        b"pass " + SECRET_BYTES + b"\r\n",
        b"ACCT " + SECRET_BYTES + b"\r\n",
        b"PASS\r\n",
        b"PASV\r\n",
        b"EPSV\r\n",
        b"EPSV 1\r\n",
        b"EPSV 2\r\n",
        b"EPSV ALL\r\n",
        b"EPSV 7\r\n",
        b"EPSV x\r\n",
        b"PORT 127,0,0,100,19,137\r\n",
        b"PORT 10,0,0,1,19,137\r\n",  # a third host: the bounce attack
        b"PORT 127,0,0,100,0,21\r\n",  # a privileged port
        b"PORT 1,2,3\r\n",
        b"EPRT |1|127.0.0.100|5001|\r\n",
        b"EPRT |2|::1|5001|\r\n",
        b"EPRT |2|::|5002|\r\n",
        b"EPRT |9|x|1|\r\n",
        b"RETR file.txt\r\n",
        b"STOR up.bin\r\n",
        b"LIST\r\n",
        b"NLST /pub\r\n",
        b"APPE log.txt\r\n",
        b"ABOR\r\n",
        TELNET_ABORT + b"ABOR\r\n",
        b"QUIT\r\n",
        b"FEAT\r\n",
        b"AUTH TLS\r\n",
        b"AUTH SSL\r\n",
        b"AUTH KERBEROS\r\n",
        b"PBSZ 0\r\n",
        b"PBSZ x\r\n",
        b"PROT P\r\n",
        b"PROT C\r\n",
        b"PROT S\r\n",
        b"PROT Z\r\n",
        b"CCC\r\n",
        b"NOOP\r\n",
        b"CWD /pub\r\n",
        b"SYST\r\n",
        b"REIN\r\n",
        b"LPSV\r\n",
        b"XYZZY plugh\r\n",
        b"12#$ nonsense\r\n",
        b"\x00\x01\x02\r\n",
        OVERLONG,
    ]
)
# What clients pipeline in practice, so that random runs get logged in and
# reach transfers often.
SCRIPTS = st.sampled_from(
    [
        (b"USER alice\r\n", b"PASS " + SECRET_BYTES + b"\r\n"),
        (b"PASV\r\n", b"RETR file.txt\r\n"),
        (b"EPSV\r\n", b"LIST\r\n"),
        (b"PORT 127,0,0,100,19,137\r\n", b"STOR up.bin\r\n"),
        (b"EPRT |2|::1|5001|\r\n", b"RETR file.txt\r\n"),
        (b"AUTH TLS\r\n", b"USER mallory\r\n"),  # the STARTTLS injection
        (b"PBSZ 0\r\n", b"PROT P\r\n"),
    ]
)
BATCHES = st.one_of(SCRIPTS, st.lists(SINGLE_LINES, min_size=1, max_size=4).map(tuple))
CUTS = st.lists(st.integers(0, 10_000), max_size=3)

MALFORMED_REPLIES = [
    b"hello\r\n",
    b"99 too short\r\n",
    b"600 out of range\r\n",
    b"2000 four digits\r\n",
    b"2" * 9000 + b"\r\n",
]

# (reply, whether it is the final one for what the server owes)
_Options = list[tuple[bytes, bool]]
_LOGIN_REPLIES: dict[str, _Options] = {
    "USER": [
        (b"331 Password required.\r\n", True),
        (b"331 Password required.\r\n", True),
        (b"331 Password required.\r\n", True),
        (b"230 Logged in without a password.\r\n", True),
        (b"530 Not logged in.\r\n", True),
    ],
    "PASS": [
        (b"230 Logged in.\r\n", True),
        (b"230 Logged in.\r\n", True),
        (b"230-Welcome.\r\n Be nice.\r\n230 Logged in.\r\n", True),
        (b"530 Login incorrect.\r\n", True),
    ],
    "ACCT": [(b"230 Account ok.\r\n", True), (b"202 Superfluous.\r\n", True)],
}
_SIMPLE_REPLIES: dict[str, _Options] = {
    "pasv": [
        (b"227 Entering Passive Mode (127,0,0,11,200,10).\r\n", True),
        (b"227 Entering Passive Mode (127,0,0,11,200,10).\r\n", True),
        (b"227 Entering Passive Mode (1,2,3).\r\n", True),
        (b"425 Cannot open passive connection.\r\n", True),
    ],
    "epsv": [
        (b"229 Entering Extended Passive Mode (|||51210|)\r\n", True),
        (b"229 Entering Extended Passive Mode (|||51210|)\r\n", True),
        (b"229 Entering Extended Passive Mode (|||x|)\r\n", True),
        (b"500 EPSV not understood.\r\n", True),
    ],
    "port": [(b"200 PORT command successful.\r\n", True), (b"500 Illegal PORT command.\r\n", True)],
    "quit": [(b"221 Goodbye.\r\n", True)],
    "feat": [
        (b"211-Features:\r\n MDTM\r\n AUTH TLS\r\n SIZE\r\n211 End\r\n", True),
        (b"500 FEAT not understood.\r\n", True),
    ],
    "abor": [(b"225 No transfer to ABOR.\r\n", True), (b"226 ABOR command successful.\r\n", True)],
    "other": [
        (b"200 OK.\r\n", True),
        (b"250 Directory changed.\r\n", True),
        (b"214-Help\r\n 200 is not the end\r\n214 End.\r\n", True),
        (b"500 Unknown command.\r\n", True),
        (b"550 Failed.\r\n", True),
    ],
}
_TRANSFER_OPENS: _Options = [
    (b"150 Opening BINARY mode data connection.\r\n", False),
    (b"150 Opening BINARY mode data connection.\r\n", False),
    (b"125 Data connection already open.\r\n", False),
    (b"550 No such file.\r\n", True),
    (b"425 Can't open data connection.\r\n", True),
]
_TRANSFER_ENDS: _Options = [
    (b"226 Transfer complete.\r\n", True),
    (b"226 Transfer complete.\r\n", True),
    (b"426 Connection closed; transfer aborted.\r\n", True),
    (b"451 Local error.\r\n", True),
]
# Pure-FTPd ends a transfer whose data broke (or that was aborted) with a second 1xx.
_PURE_FTPD_END: _Options = [(b"150 Connecting to the data port.\r\n", True)]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def parse_chunk(data: bytes) -> list[Reply]:
    """The replies of one chunk sent to the client; AssertionError unless it is nothing else."""
    assert data.endswith(b"\r\n"), f"chunk to the client not CRLF-terminated: {data!r}"
    assert data.count(b"\n") == data.count(b"\r\n"), f"bare LF in a chunk to the client: {data!r}"
    parser = ReplyParser()
    replies = parser.feed(data)  # a malformed reply raises ProtocolError
    assert replies and parser.buffered == 0, f"incomplete reply to the client: {data!r}"
    return replies


@dataclass(eq=False)
class Item:
    """One line as the session's command parser yields it: a command, or a line it answers 500."""

    raw: bytes
    verb: bytes | None
    arg: bytes
    prelims: int = 0


def item_of(raw: bytes, max_line_length: int) -> Item:
    line = raw[:-2]
    if line.startswith(TELNET_ABORT):
        line = line[len(TELNET_ABORT) :]
    verb, _, arg = line.partition(b" ")
    if len(raw) - 1 > max_line_length or not verb.isalpha() or len(verb) > 16:
        return Item(raw, None, b"")
    return Item(raw, verb.upper(), arg)


@dataclass(eq=False)
class Unsent:
    """A line the client wrote, and how much of it the session has been given."""

    raw: bytes
    delivered: int = 0
    parsed: bool = False


@dataclass(eq=False)
class Transfer:
    item: Item
    start: act.StartTransfer
    data_done: bool = False
    data_failed: bool = False
    client_connected: bool = False
    """ConnectClient was carried out (active mode towards the client)."""
    sent_to_server: bool = False
    server_final_sent: bool = False
    aborted: bool = False
    abor_item: Item | None = None
    abor_sent: bool = False
    final_code: int | None = None
    """The final reply the client got for the transfer command (not a closing 421)."""
    logged: list[int] = field(default_factory=list)
    over: bool = False
    """The client has every reply it is owed for the transfer (and its ABOR)."""

    @property
    def running(self) -> bool:
        return not self.aborted and self.final_code is None


@dataclass(eq=False)
class Owed:
    """A line the server was sent and has not finished answering."""

    kind: str
    transfer: Transfer | None = None
    prelim_sent: bool = False


_LOGIN_STATUS = {True: LoginStatus.OK, False: LoginStatus.FAILED}


class ControlMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.policy = SessionPolicy()
        self.session = ControlSession(self.policy, "127.0.0.100", 1)
        self.server_family = 1
        self.patience = 0
        self.steps = 0
        self.depth = 0
        self.trace: list[str] = []
        self.started = False
        self.closed_seen = False
        self.last_action: act.Action | None = None
        # The client.
        self.unsent: deque[Unsent] = deque()
        self.expect: deque[Item] = deque()
        """Lines the session has parsed, oldest first, not yet finally answered."""
        self.banner_due = True
        self.quit_answered = False
        # The server.
        self.server = "unchosen"  # connecting, up, gone
        self.owed: deque[Owed] = deque()
        self.server_unsent = bytearray()
        # The runtime.
        self.tls_pending = False
        self.transfer: Transfer | None = None
        self.data_due: Transfer | None = None
        self.data_cancelled = False
        self.logins: list[bool] = []
        """The ``ok`` of each LoginResult, in order."""

    # ------------------------------------------------------------ plumbing
    def check(self, condition: object, message: str) -> None:
        if not condition:
            tail = "\n".join(self.trace[-12:])
            raise AssertionError(f"{message}\n--- last events:\n{tail}")

    @property
    def live(self) -> bool:
        return self.started and not self.closed_seen

    @property
    def patient(self) -> bool:
        """Events that end or disrupt the session wait a drawn number of steps."""
        return self.live and self.steps >= self.patience

    def run(
        self, name: str, deliver: Callable[[], list[act.Action]], data: st.DataObject
    ) -> list[act.Action]:
        self.check(not self.closed_seen, f"{name} delivered after Close")
        actions = deliver()
        self.trace.append(f"{'  ' * self.depth}>> {name}")
        self.trace += [f"{'  ' * self.depth}<< {action!r}"[:300] for action in actions]
        self.depth += 1
        for index, action in enumerate(actions):
            following = actions[index + 1] if index + 1 < len(actions) else None
            self.carry_out(action, following, data)
        self.depth -= 1
        if self.depth == 0:
            self.after_event()
        return actions

    # ------------------------------------------------------------- actions
    def carry_out(
        self, action: act.Action, following: act.Action | None, data: st.DataObject
    ) -> None:
        self.check(not self.closed_seen, f"{action!r} follows a Close")
        previous, self.last_action = self.last_action, action
        if isinstance(action, act.SendToServer):
            if SECRET_BYTES in action.data:
                verb = action.data.split(b" ", 1)[0].upper()
                self.check(verb in (b"PASS", b"ACCT"), f"secret in {action!r}")
        else:
            self.check(SECRET not in repr(action), f"the PASS argument leaked: {action!r}")

        if isinstance(action, act.SendToClient):
            replies = parse_chunk(action.data)
            for index, reply in enumerate(replies):
                last_words = isinstance(following, act.Close) and index == len(replies) - 1
                self.client_gets(reply, last_words)
        elif isinstance(action, act.SendToServer):
            self.server_gets(action.data)
        elif isinstance(action, act.ConnectServer):
            self.check(self.server == "unchosen", f"{action!r} with a server {self.server}")
            if self.policy.route_on_user:
                head = self.expect[0] if self.expect else None
                self.check(head is not None and head.verb == b"USER", "ConnectServer without USER")
                assert head is not None
                self.check(action.user == head.arg, f"{action!r} is not for {head.raw!r}")
            else:
                self.check(action.user is None, f"{action!r} while not routing on USER")
            self.server = "connecting"
        elif isinstance(action, act.OpenClientListener):
            self.report_listener("client", self.session.passive_family, data)
        elif isinstance(action, act.OpenServerListener):
            self.report_listener("server", self.server_family, data)
        elif isinstance(action, act.StartTransfer):
            self.started_transfer(action)
        elif isinstance(action, act.StartTls):
            self.check(not self.tls_pending, "StartTls twice")
            self.tls_pending = True
        elif isinstance(action, act.ConnectClient):
            t = self.transfer
            self.check(
                t is not None and not t.over and isinstance(t.start.client, act.ClientActive),
                "ConnectClient without an active-mode transfer",
            )
            assert t is not None
            self.check(t.item.prelims >= 1, "ConnectClient before the server's 1xx")
            t.client_connected = True
        elif isinstance(action, act.CloseData):
            if self.data_due is not None:
                self.data_cancelled = True
        elif isinstance(action, act.TransferDone):
            t = self.transfer
            self.check(t is not None and t.final_code is not None, "TransferDone before its reply")
            assert t is not None and t.item.verb is not None
            self.check(not t.logged, f"a second TransferDone: {action!r}")
            t.logged.append(action.code)
            expected = act.TransferDone(
                t.item.verb.decode(),
                t.item.arg,
                t.final_code or 0,
                t.start.client.mode,
                t.start.server.mode,
            )
            self.check(action == expected, f"{action!r} is not {expected!r}")
        elif isinstance(action, act.LoginResult):
            # It follows the server's own 230 or 530, passed on to the client.
            said = parse_chunk(previous.data) if isinstance(previous, act.SendToClient) else []
            code = 230 if action.ok else 530
            self.check([r.code for r in said] == [code], f"{action!r} after {previous!r}")
            self.logins.append(action.ok)
        elif isinstance(action, act.Close):
            self.closed_seen = True

    def report_listener(self, side: str, family: int, data: st.DataObject) -> None:
        """The runtime opens a listener and reports at once, before any other event."""
        session = self.session
        if side == "client":
            ready, failed, port = (
                session.client_listener_ready,
                session.client_listener_failed,
                40001,
            )
        else:
            ready, failed, port = (
                session.server_listener_ready,
                session.server_listener_failed,
                40002,
            )
        outcome = data.draw(st.integers(0, 9), label=f"{side} listener fails (9, 8)")
        if outcome == 9:
            self.run(f"{side}_listener_failed", partial(failed, "EADDRINUSE"), data)
        elif outcome == 8 and side == "client":
            # The client's address holds max_passive_per_ip listeners already.
            self.run("client_listener_refused", session.client_listener_refused, data)
        else:
            address = HostPort.of("127.0.0.1" if family == 1 else "::1", port)
            self.run(f"{side}_listener_ready", partial(ready, address), data)

    def started_transfer(self, action: act.StartTransfer) -> None:
        previous = self.transfer
        self.check(previous is None or previous.over, "StartTransfer while a transfer runs")
        head = self.expect[0] if self.expect else None
        self.check(
            head is not None and head.verb in TRANSFER_VERBS, "StartTransfer for no transfer"
        )
        assert head is not None
        self.check(action.upload == (head.verb in UPLOAD_VERBS), f"wrong direction: {action!r}")
        self.check(action.server_tls == self.policy.server_tls, f"wrong server TLS: {action!r}")
        self.transfer = Transfer(head, action)
        self.data_due = self.transfer
        self.data_cancelled = False
        # An ABOR that was queued behind the transfer command acts as soon as
        # the transfer starts, whatever event started it.
        self.predict_abort()

    # --------------------------------------------------------- client side
    def client_gets(self, reply: Reply, last_words: bool) -> None:
        """One reply reaches the client: pair it with the oldest unanswered line."""
        head = self.expect[0] if self.expect else None
        t = self.transfer if self.transfer is not None and not self.transfer.over else None
        if reply.is_preliminary:
            self.check(head is not None, f"{reply.raw!r} answers nothing")
            assert head is not None
            if t is not None:
                self.check(head is not t.abor_item, "a 1xx for ABOR")
                self.check(head is not t.item or not t.aborted, "a 1xx after the transfer's 426")
            head.prelims += 1
            return
        if self.banner_due:
            self.banner_due = False
            self.check(
                reply.code == 220 or (reply.code == 421 and last_words),
                f"the first reply is {reply.raw!r}, not the banner",
            )
            if reply.code == 220:
                return
        if last_words and reply.code == 421:
            # The session's closing words (a timeout, the server gone): they
            # answer whatever was pending, and nothing is owed after them.
            if self.expect:
                self.expect.popleft()
            return
        last = self.transfer
        self.check(
            last is None or last.final_code is None or last.logged,
            f"{reply.raw!r} follows the transfer's final reply before its TransferDone",
        )
        self.check(head is not None, f"{reply.raw!r} answers nothing")
        assert head is not None
        self.expect.popleft()
        if t is not None and head is t.item:
            if t.aborted:
                self.check(reply.code == 426, f"aborted transfer answered {reply.raw!r}, not 426")
            else:
                self.check(
                    t.data_done or head.prelims == 0,
                    f"final transfer reply {reply.raw!r} before the data was done",
                )
                t.over = True
                event("transfer answered after its data" if t.data_done else "transfer refused")
            t.final_code = reply.code
        elif t is not None and head is t.abor_item:
            self.check(reply.code == 226, f"ABOR of a transfer answered {reply.raw!r}, not 226")
            t.over = True
            event("transfer aborted")
        if head.verb == b"QUIT":
            self.quit_answered = True
            event("QUIT answered")
        if head.verb == b"AUTH" and reply.code == 234:
            # Whatever the client sent after AUTH is dropped unexecuted, and
            # it stops writing until the handshake is done.
            self.expect.clear()
            self.unsent.clear()

    def give_client_bytes(self, count: int) -> None:
        """The session is given ``count`` more bytes of what the client wrote."""
        limit = self.policy.max_line_length
        while count:
            line = self.unsent[0]
            taken = min(count, len(line.raw) - line.delivered)
            line.delivered += taken
            count -= taken
            # An overlong line is answered as soon as it passes the limit.
            if not line.parsed and (line.delivered == len(line.raw) or line.delivered > limit):
                line.parsed = True
                self.expect.append(item_of(line.raw, limit))
            if line.delivered == len(line.raw):
                self.unsent.popleft()

    def predict_abort(self) -> None:
        """During a transfer, the session acts at once on the first ABOR it has queued."""
        t = self.transfer
        if t is None or t.over or not t.running:
            return
        abor = next((item for item in list(self.expect)[1:] if item.verb == b"ABOR"), None)
        if abor is None:
            return
        self.check(self.expect[0] is t.item, "the transfer is not the command in progress")
        self.expect.remove(abor)
        self.expect.insert(1, abor)
        t.aborted = True
        t.abor_item = abor

    def client_deliver(self, cuts: list[int], keep_tail: bool, data: st.DataObject) -> None:
        stream = b"".join(line.raw[line.delivered :] for line in self.unsent)
        pieces = split(stream, cuts)
        if keep_tail and len(pieces) > 1:
            pieces.pop()  # the rest waits in the client's socket
        for piece in pieces:
            if not self.client_may_send:
                return
            self.give_client_bytes(len(piece))
            self.predict_abort()
            self.run("client_data", partial(self.session.client_data, piece), data)

    @property
    def client_may_send(self) -> bool:
        return self.live and not self.tls_pending

    # --------------------------------------------------------- server side
    def server_gets(self, line: bytes) -> None:
        self.check(not self.tls_pending, f"{line!r} to the server during the client's handshake")
        self.check(line.endswith(b"\n") and line.count(b"\n") == 1, f"not one line: {line!r}")
        if self.server == "gone":
            return  # the runtime writes to a closed connection: nobody answers
        self.check(self.server == "up", f"{line!r} to a server that is {self.server}")
        t = self.transfer
        if line == b"ABOR\r\n" and t is not None and t.aborted and not t.abor_sent:
            t.abor_sent = True
            self.owed.append(Owed("abor"))
            return
        head = self.expect[0] if self.expect else None
        self.check(head is not None, f"{line!r} to the server for no command")
        assert head is not None
        if head.verb in SETUP_VERBS and line in (b"PASV\r\n", b"EPSV\r\n"):
            self.owed.append(Owed(line[:4].decode().lower()))
        elif head.verb in SETUP_VERBS and line[:5] in (b"PORT ", b"EPRT "):
            self.owed.append(Owed("port"))
        elif line == head.raw and head.verb is not None:
            verb = head.verb
            self.check(
                not rule_for(verb).handling.answered_by_balancer, f"{line!r} reached the server"
            )
            if verb in TRANSFER_VERBS:
                self.check(
                    t is not None and t.item is head, "a transfer command without StartTransfer"
                )
                assert t is not None
                self.check(not t.sent_to_server, "a transfer command sent twice")
                t.sent_to_server = True
                self.owed.append(Owed("transfer", t))
            elif verb.decode() in _LOGIN_REPLIES:
                self.owed.append(Owed(verb.decode()))
            elif verb in (b"QUIT", b"FEAT", b"ABOR"):
                self.owed.append(Owed(verb.decode().lower()))
            else:
                self.owed.append(Owed("other"))
        else:
            self.check(False, f"{line!r} to the server while {head.raw!r} is in progress")

    def reply_options(self, owed: Owed) -> _Options:
        t = owed.transfer
        if t is None:
            if owed.kind in _LOGIN_REPLIES:
                return _LOGIN_REPLIES[owed.kind]
            return _SIMPLE_REPLIES[owed.kind]
        if not owed.prelim_sent:
            return _TRANSFER_OPENS
        if t.abor_sent or t.data_failed:
            return _TRANSFER_ENDS + _PURE_FTPD_END
        return _TRANSFER_ENDS

    def server_wrote(self, owed: Owed, final: bool) -> None:
        if not final:
            owed.prelim_sent = True
            return
        self.owed.popleft()
        if owed.transfer is not None:
            owed.transfer.server_final_sent = True

    def server_deliver(self, cuts: list[int], keep_tail: bool, data: st.DataObject) -> None:
        pieces = split(bytes(self.server_unsent), cuts)
        if keep_tail and len(pieces) > 1:
            pieces.pop()
        for piece in pieces:
            if self.closed_seen:
                return
            del self.server_unsent[: len(piece)]
            self.run("server_data", partial(self.session.server_data, piece), data)

    @property
    def server_may_speak(self) -> bool:
        return self.live and self.server == "up"

    @property
    def reply_held(self) -> bool:
        """The server's final transfer reply waits for the data to be delivered."""
        t = self.transfer
        return (
            t is not None and t.running and not t.over and t.server_final_sent and not t.data_done
        )

    # ---------------------------------------------------------- invariants
    def after_event(self) -> None:
        session = self.session
        self.check(session.closed == self.closed_seen, "closed disagrees with the Close action")
        if session.closed:
            self.check(isinstance(self.last_action, act.Close), "closed, but Close was not last")
        if self.quit_answered:
            self.check(session.closed, "QUIT was answered and the session is open")
        if self.server == "gone" and not self.reply_held:
            self.check(session.closed, "the server is gone, nothing is held, the session is open")
        failures = self.logins.count(False)
        self.check(session.login_failures == failures, f"{failures} LoginResult(ok=False)")
        last = LoginStatus.NONE if not self.logins else _LOGIN_STATUS[self.logins[-1]]
        self.check(session.login_status is last, f"login {session.login_status}, not {last}")
        t = self.transfer
        if t is not None and t.final_code is not None:
            self.check(len(t.logged) == 1, f"{len(t.logged)} TransferDone for one transfer")
        if not session.closed:
            if session.idle:
                self.check(not self.expect, f"idle, with {len(self.expect)} lines unanswered")
            else:
                # The queued lines, and at most one in progress.
                self.check(
                    session.backlog <= len(self.expect) <= session.backlog + 1,
                    f"{len(self.expect)} lines unanswered, {session.backlog} queued",
                )

    @invariant()
    def closed_means_closed(self) -> None:
        if self.started:
            self.check(self.session.closed == self.closed_seen, "closed without a Close action")

    # --------------------------------------------------------------- rules
    @initialize(
        server_data_mode=st.sampled_from(SERVER_MODES),
        route_on_user=st.booleans(),
        client_tls=st.sampled_from(CLIENT_TLS_MODES),
        tls_required=st.booleans(),
        log_commands=st.booleans(),
        server_tls=st.booleans(),
        max_line_length=st.sampled_from([256, 4096]),
        network=st.sampled_from(NETWORKS),
        server_family=st.sampled_from([1, 2]),
        patience=st.integers(0, 80),
        data=st.data(),
    )
    def start(
        self,
        server_data_mode: ServerDataMode,
        route_on_user: bool,
        client_tls: ClientTlsMode,
        tls_required: bool,
        log_commands: bool,
        server_tls: bool,
        max_line_length: int,
        network: tuple[str, int],
        server_family: int,
        patience: int,
        data: st.DataObject,
    ) -> None:
        self.policy = SessionPolicy(
            server_data_mode=server_data_mode,
            route_on_user=route_on_user,
            max_line_length=max_line_length,
            log_commands=log_commands,
            client_tls=client_tls,
            tls_required=tls_required and client_tls != "none",
            server_tls=server_tls,
        )
        client_ip, passive_family = network
        self.session = ControlSession(self.policy, client_ip, passive_family)
        self.server_family = server_family
        self.patience = patience
        self.started = True
        self.run("start", self.session.start, data)

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        """One to three things happen: whatever could happen now, drawn with weights.

        One rule rather than one per event: Hypothesis's swarm testing would
        otherwise switch off whole kinds of events (server replies, say) for
        a test case, and few runs would get as far as a transfer.
        """
        for _ in range(data.draw(st.integers(1, 3), label="moves")):
            self.steps += 1
            moves = self.possible_moves()
            name = data.draw(st.sampled_from([name for name, _ in moves]), label="move")
            dict(moves)[name](data)

    def possible_moves(self) -> list[tuple[str, Callable[[st.DataObject], None]]]:
        if self.closed_seen:
            return [("late event", self.late_event_is_ignored)]
        moves: list[tuple[str, Callable[[st.DataObject], None]]] = []
        if self.client_may_send:
            # A client mostly waits for its answers before it speaks again.
            moves += [("client sends", self.client_sends)] * (1 if self.expect else 4)
            if self.unsent:
                moves += [("client sends the rest", self.client_sends_the_rest)] * 2
        if self.server_may_speak and self.owed:
            moves += [("server replies", self.server_replies)] * 4
        if self.server_may_speak and self.server_unsent:
            moves += [("server sends the rest", self.server_sends_the_rest)] * 2
        if self.server == "connecting":
            moves += [("server connect ends", self.server_connect_ends)] * 3
        if self.tls_pending:
            moves += [("client handshake ends", self.client_handshake_ends)] * 3
        if self.data_due is not None:
            moves += [("data ends", self.data_ends)] * 3
        if self.patient and self.server == "up" and not self.owed and not self.server_unsent:
            moves.append(("server closes", self.server_closes))  # an idle timeout, say
        if self.patient or not moves:
            moves.append(("disruption", self.disruption))
        return moves

    def disruption(self, data: st.DataObject) -> None:
        """Something ends or breaks the session."""
        session = self.session
        moves: list[tuple[str, Callable[[st.DataObject], None]]] = [
            ("client closes", self.client_closes)
        ]
        if self.server == "up":
            moves += [
                ("server sends garbage", self.server_sends_garbage),
                ("server says 421 and closes", self.server_says_421_and_closes),
            ]
            if not self.server_unsent:
                moves.append(("server closes", self.server_closes))
        if session.idle and not session.transfer_running:
            moves.append(("client times out", self.client_times_out))
        if session.awaiting_server:
            moves.append(("server times out", self.server_times_out))
        name = data.draw(st.sampled_from([name for name, _ in moves]), label="disruption")
        dict(moves)[name](data)

    # ------------------------------------------------------------- moves
    def client_sends(self, data: st.DataObject) -> None:
        batch = data.draw(self.client_batches(), label="client writes")
        self.unsent.extend(Unsent(raw) for raw in batch)
        cuts = data.draw(CUTS, label="split at")
        keep_tail = data.draw(st.booleans(), label="keep the last piece")
        self.client_deliver(cuts, keep_tail, data)

    def client_batches(self) -> st.SearchStrategy[tuple[bytes, ...]]:
        """Mostly what a client would send next, sometimes anything."""
        session = self.session
        t = self.transfer
        if t is not None and t.running and not t.over:
            aborts = st.sampled_from([(b"ABOR\r\n",), (TELNET_ABORT + b"ABOR\r\n",)])
            return st.one_of(aborts, aborts, BATCHES)
        if not session.logged_in:
            if self.policy.tls_required and not session.client_control_protected:
                wanted: tuple[bytes, ...] = (b"AUTH TLS\r\n",)
            else:
                wanted = (b"USER alice\r\n", b"PASS " + SECRET_BYTES + b"\r\n")
        elif self.policy.tls_required and not session.client_data_protected:
            wanted = (b"PBSZ 0\r\n", b"PROT P\r\n")
        else:
            return st.one_of(SCRIPTS, SCRIPTS, SCRIPTS, BATCHES)
        return st.one_of(st.just(wanted), st.just(wanted), st.just(wanted), BATCHES)

    def client_sends_the_rest(self, data: st.DataObject) -> None:
        self.client_deliver(data.draw(CUTS, label="split at"), False, data)

    def server_replies(self, data: st.DataObject) -> None:
        owed = self.owed[0]
        reply, final = data.draw(st.sampled_from(self.reply_options(owed)), label="reply")
        self.server_wrote(owed, final)
        self.server_unsent += reply
        cuts = data.draw(CUTS, label="split at")
        keep_tail = data.draw(st.booleans(), label="keep the last piece")
        self.server_deliver(cuts, keep_tail, data)

    def server_sends_the_rest(self, data: st.DataObject) -> None:
        self.server_deliver(data.draw(CUTS, label="split at"), False, data)

    def server_sends_garbage(self, data: st.DataObject) -> None:
        self.server_unsent += data.draw(st.sampled_from(MALFORMED_REPLIES), label="garbage")
        self.server_deliver([], False, data)
        self.check(self.session.closed, "a malformed reply did not close the session")

    def server_says_421_and_closes(self, data: st.DataObject) -> None:
        if self.owed:
            self.server_wrote(self.owed[0], final=True)  # 421 may answer any command
        self.server_unsent += b"421 Service closing control connection.\r\n"
        self.server_deliver([], False, data)
        if not self.closed_seen:
            self.server_closes(data)

    def server_closes(self, data: st.DataObject) -> None:
        self.server = "gone"
        if self.reply_held:
            event("server gone while a final reply is held")
        self.run("server_closed", self.session.server_closed, data)

    def client_closes(self, data: st.DataObject) -> None:
        self.run("client_closed", self.session.client_closed, data)
        self.check(self.session.closed, "client_closed left the session open")

    def client_times_out(self, data: st.DataObject) -> None:
        self.run("timed_out(client)", partial(self.session.timed_out, "client"), data)
        self.check(self.session.closed, "a client timeout left the session open")

    def server_times_out(self, data: st.DataObject) -> None:
        self.run("timed_out(server)", partial(self.session.timed_out, "server"), data)
        self.check(self.session.closed, "a server timeout left the session open")

    def server_connect_ends(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 9), label="no server (9)") == 9:
            self.run(
                "server_unavailable", partial(self.session.server_unavailable, "refused"), data
            )
            self.check(self.session.closed, "no server, and the session is open")
            return
        self.server = "up"
        address = "127.0.0.11" if self.server_family == 1 else "::11"
        connected = partial(self.session.server_connected, address, self.server_family)
        self.run("server_connected", connected, data)

    def client_handshake_ends(self, data: st.DataObject) -> None:
        self.tls_pending = False
        if data.draw(st.integers(0, 9), label="handshake fails (9)") == 9:
            self.run(
                "client_tls_failed", partial(self.session.client_tls_failed, "bad record"), data
            )
            self.check(self.session.closed, "a failed handshake left the session open")
        else:
            event("client TLS started")
            self.run("client_tls_started", self.session.client_tls_started, data)

    def data_ends(self, data: st.DataObject) -> None:
        t = self.data_due
        assert t is not None
        self.data_due = None
        # Active mode: the client's leg is only connected after ConnectClient.
        can_succeed = not isinstance(t.start.client, act.ClientActive) or t.client_connected
        fails = data.draw(st.integers(0, 3), label="data fails (3)") == 3
        error = "connection reset" if fails or not can_succeed else None
        if not self.data_cancelled:
            t.data_done = True
            t.data_failed = error is not None
        self.run(f"data_done({error!r})", partial(self.session.data_done, error), data)

    def late_event_is_ignored(self, data: st.DataObject) -> None:
        # The runtime delivers nothing after Close; the session promises to
        # ignore it anyway.
        session = self.session
        events: list[Callable[[], list[act.Action]]] = [
            partial(session.client_data, b"NOOP\r\n"),
            partial(session.server_data, b"200 OK\r\n"),
            session.server_closed,
            session.client_closed,
            partial(session.timed_out, "client"),
            partial(session.timed_out, "server"),
            partial(session.data_done, None),
            session.client_tls_started,
            partial(session.client_tls_failed, "late"),
            partial(session.client_listener_ready, HostPort.of("127.0.0.1", 40001)),
            session.client_listener_refused,
            partial(session.server_listener_failed, "late"),
            partial(session.server_connected, "127.0.0.11", 1),
            partial(session.server_unavailable, "late"),
        ]
        actions = data.draw(st.sampled_from(events), label="late event")()
        self.check(actions == [], f"actions after Close: {actions!r}")


ControlMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestControlSessionStateful = ControlMachine.TestCase
