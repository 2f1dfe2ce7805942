"""The control-session state machine, driven by scripted events (no sockets, no loop).

Every test is a Playbook: each event in, and the exact, whole, ordered list of
actions out. A stray, missing or reordered action fails.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from ftplb.proto import actions as act
from ftplb.proto.addresses import HostPort
from ftplb.proto.control import ControlSession, SessionPolicy
from ftplb.proto.outcomes import TLS_SESSION_NOT_RESUMED, EndReason, LoginStatus
from ftplb.proto.phases import Phase, TransferPhase
from tests.unit.playbook import (
    ClientCloses,
    ClientListenerFails,
    ClientListenerReady,
    ClientListenerRefused,
    ClientSends,
    ClientTlsFails,
    ClientTlsStarted,
    DataDone,
    Playbook,
    ServerCloses,
    ServerConnected,
    ServerListenerFails,
    ServerListenerReady,
    ServerSends,
    ServerUnavailable,
    Start,
    StopGracefully,
    StopNow,
    TimesOut,
)

CLIENT = "127.0.0.100"
SERVER = "127.0.0.11"
LISTENER = HostPort.of("127.0.0.1", 40001)
SERVER_LISTENER = HostPort.of("127.0.0.1", 45000)

BANNER = b"220 ftplb ready\r\n"
SERVER_227 = b"227 Entering Passive Mode (127,0,0,11,200,10).\r\n"
SERVER_PASSIVE = act.ServerPassive(HostPort.of(SERVER, 200 * 256 + 10), "PASV")
OUR_227 = b"227 Entering Passive Mode (127,0,0,1,156,65).\r\n"
OUR_229 = b"229 Entering Extended Passive Mode (|||40001|)\r\n"
CANT_OPEN = b"425 Can't open data connection.\r\n"
PLEASE_LOGIN = b"530 Please login with USER and PASS.\r\n"
GOODBYE = b"221 Goodbye.\r\n"
SERVER_GONE = b"421 Service not available, the server closed the connection.\r\n"
OWN_FEAT = b"211-Features:\r\n EPRT\r\n EPSV\r\n PASV\r\n REST STREAM\r\n211 End\r\n"
ABORTED_426 = b"426 Transfer aborted, data connection closed.\r\n"
ABORT_OK_226 = b"226 Abort successful.\r\n"
DATA_FAILED_426 = b"426 Data connection failed; transfer aborted.\r\n"

ON_USER = SessionPolicy(route_on_user=True)
DEFAULT_SERVER = ServerConnected(SERVER, 1)


@dataclass(frozen=True)
class State:
    """Every public property of a session, compared whole."""

    phase: Phase
    transfer_phase: TransferPhase | None = None
    idle: bool = False
    backlog: int = 0
    transfer_running: bool = False
    awaiting_server: bool = False
    closed: bool = False
    logged_in: bool = False
    control_protected: bool = False
    data_protected: bool = False
    login: LoginStatus = LoginStatus.NONE
    login_failures: int = 0


def state(playbook: Playbook) -> State:
    s = playbook.session
    return State(
        s.phase,
        s.transfer_phase,
        s.idle,
        s.backlog,
        s.transfer_running,
        s.awaiting_server,
        s.closed,
        s.logged_in,
        s.client_control_protected,
        s.client_data_protected,
        s.login_status,
        s.login_failures,
    )


IDLE = State(Phase.READY, idle=True, logged_in=True, login=LoginStatus.OK)
COMMAND = State(Phase.COMMAND, awaiting_server=True, logged_in=True, login=LoginStatus.OK)
CLOSED = State(Phase.CLOSED, closed=True, logged_in=True, login=LoginStatus.OK)
OPENING_LISTENER = State(Phase.OPENING_LISTENER, logged_in=True, login=LoginStatus.OK)
SERVER_SETUP = State(Phase.SERVER_SETUP, awaiting_server=True, logged_in=True, login=LoginStatus.OK)


def transferring(transfer: TransferPhase, **changes: object) -> State:
    """The state during a transfer: running until ABOR; the server owes a reply once the
    data has ended first, or after ABOR."""
    aborting = transfer.name.startswith("ABORT")
    data_ended = transfer in (TransferPhase.DATA_FIRST, TransferPhase.DATA_DONE)
    base = State(
        Phase.TRANSFER,
        transfer,
        transfer_running=not aborting,
        awaiting_server=aborting or data_ended,
        logged_in=True,
        login=LoginStatus.OK,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def new(policy: SessionPolicy | None = None, passive_family: int = 1) -> Playbook:
    return Playbook(ControlSession(policy or SessionPolicy(), CLIENT, passive_family))


def connected(
    policy: SessionPolicy | None = None,
    passive_family: int = 1,
    server: ServerConnected = DEFAULT_SERVER,
) -> Playbook:
    playbook = new(policy, passive_family)
    assert playbook >> Start() << act.ConnectServer(None) >> server << act.SendToClient(BANNER)
    assert state(playbook) == replace(IDLE, logged_in=False, login=LoginStatus.NONE)
    return playbook


def log_in(playbook: Playbook) -> None:
    assert (
        playbook
        >> ClientSends(b"USER alice\r\n")
        << act.SendToServer(b"USER alice\r\n")
        >> ServerSends(b"331 Password please\r\n")
        << act.SendToClient(b"331 Password please\r\n")
        >> ClientSends(b"PASS secret\r\n")
        << act.SendToServer(b"PASS secret\r\n")
    )
    assert state(playbook) == replace(COMMAND, logged_in=False, login=LoginStatus.NONE)
    assert (
        playbook
        >> ServerSends(b"230 Welcome\r\n")
        << act.SendToClient(b"230 Welcome\r\n")
        << act.LoginResult(ok=True, user=b"alice")
    )
    assert state(playbook) == IDLE
    assert playbook.session.user == b"alice"


def logged_in(
    policy: SessionPolicy | None = None,
    passive_family: int = 1,
    server: ServerConnected = DEFAULT_SERVER,
) -> Playbook:
    playbook = connected(policy, passive_family, server)
    log_in(playbook)
    return playbook


def passive_ready(playbook: Playbook, verb: bytes = b"PASV") -> None:
    """A client PASV/EPSV through listener and server setup, the server passive over IPv4."""
    assert playbook >> ClientSends(verb + b"\r\n") << act.OpenClientListener()
    assert state(playbook) == OPENING_LISTENER
    assert playbook >> ClientListenerReady(LISTENER) << act.SendToServer(b"PASV\r\n")
    assert state(playbook) == SERVER_SETUP
    ours = OUR_227 if verb == b"PASV" else OUR_229
    assert playbook >> ServerSends(SERVER_227) << act.SendToClient(ours)
    assert state(playbook) == IDLE


def retr(playbook: Playbook, line: bytes = b"RETR f\r\n") -> None:
    """A download over the client's PASV and the server's PASV."""
    assert (
        playbook
        >> ClientSends(line)
        << act.StartTransfer(act.ClientPassive("PASV"), SERVER_PASSIVE, upload=False)
        << act.SendToServer(line)
    )
    assert state(playbook) == transferring(TransferPhase.REQUESTED)


def done(code: int, verb: str = "RETR", path: bytes = b"f") -> act.TransferDone:
    return act.TransferDone(verb, path, code, "PASV", "PASV")


def running(playbook: Playbook) -> None:
    """PASV, RETR f and the server's 150."""
    passive_ready(playbook)
    retr(playbook)
    assert playbook >> ServerSends(b"150 ok\r\n") << act.SendToClient(b"150 ok\r\n")
    assert state(playbook) == transferring(TransferPhase.RUNNING)


# ---------------------------------------------------------------- greeting


def test_greeting_comes_from_the_balancer_after_the_server_is_ready() -> None:
    playbook = new(SessionPolicy(banner="hello"))
    assert state(playbook) == State(Phase.NEW)
    assert playbook >> Start() << act.ConnectServer(None)
    assert state(playbook) == State(Phase.CONNECTING)
    assert playbook >> ServerConnected() << act.SendToClient(b"220 hello\r\n")
    assert state(playbook) == State(Phase.READY, idle=True)


def test_no_server_gives_421_and_close() -> None:
    playbook = new()
    assert (
        playbook
        >> Start()
        << act.ConnectServer(None)
        >> ServerUnavailable("all down")
        << act.SendToClient(b"421 Service not available, no server could take the session.\r\n")
        << act.Close(EndReason.NO_SERVER, "all down")
    )
    assert state(playbook) == State(Phase.CLOSED, closed=True)


def test_commands_before_the_server_is_connected_wait_for_the_greeting() -> None:
    playbook = new()
    assert playbook >> Start() << act.ConnectServer(None) >> ClientSends(b"USER a\r\nSYST\r\n")
    assert state(playbook) == State(Phase.CONNECTING, backlog=2)
    assert (
        playbook >> ServerConnected() << act.SendToClient(BANNER) << act.SendToServer(b"USER a\r\n")
    )
    assert state(playbook) == State(Phase.COMMAND, backlog=1, awaiting_server=True)


# ---------------------------------------------------------------- relaying


def test_commands_and_replies_pass_as_bytes() -> None:
    playbook = logged_in()
    path = b"CWD /d\xe9j\xe0 vu \r\n"  # Latin-1 bytes and a trailing space stay untouched
    reply = b"250-first\r\n250 caf\xe9\r\n"
    assert playbook >> ClientSends(path) << act.SendToServer(path)
    assert state(playbook) == COMMAND
    assert playbook >> ServerSends(reply) << act.SendToClient(reply)
    assert state(playbook) == IDLE


def test_unknown_commands_pass_through() -> None:
    assert (
        logged_in()
        >> ClientSends(b"XYZZY plugh\r\n")
        << act.SendToServer(b"XYZZY plugh\r\n")
        >> ServerSends(b"500 Unknown\r\n")
        << act.SendToClient(b"500 Unknown\r\n")
    )


def test_unknown_commands_pass_before_login_too() -> None:
    assert (
        connected()
        >> ClientSends(b"SITE HELP\r\n")
        << act.SendToServer(b"SITE HELP\r\n")
        >> ServerSends(b"214 ok\r\n")
        << act.SendToClient(b"214 ok\r\n")
    )


def test_multiline_reply_split_across_reads() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"HELP\r\n")
        << act.SendToServer(b"HELP\r\n")
        >> ServerSends(b"214-The following\r\n 214 not the end\r\n")
    )
    assert state(playbook) == COMMAND
    assert (
        playbook
        >> ServerSends(b"214 Help OK\r\n")
        << act.SendToClient(b"214-The following\r\n 214 not the end\r\n214 Help OK\r\n")
    )


def test_preliminary_replies_pass_and_the_command_stays_in_flight() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"STAT\r\nNOOP\r\n")
        << act.SendToServer(b"STAT\r\n")
        >> ServerSends(b"110 marker\r\n")
        << act.SendToClient(b"110 marker\r\n")
    )
    assert state(playbook) == replace(COMMAND, backlog=1)
    assert (
        playbook
        >> ServerSends(b"211 status\r\n")
        << act.SendToClient(b"211 status\r\n")
        << act.SendToServer(b"NOOP\r\n")
    )


def test_one_command_at_a_time_keeps_reply_order() -> None:
    playbook = logged_in()
    assert playbook >> ClientSends(b"TYPE I\r\nNOOP\r\n") << act.SendToServer(b"TYPE I\r\n")
    assert state(playbook) == replace(COMMAND, backlog=1)
    assert (
        playbook
        >> ServerSends(b"200 Type set\r\n")
        << act.SendToClient(b"200 Type set\r\n")
        << act.SendToServer(b"NOOP\r\n")
    )
    assert state(playbook) == COMMAND


def test_replies_in_one_read_are_each_answered_in_turn() -> None:
    playbook = logged_in()
    assert playbook >> ClientSends(b"TYPE I\r\nNOOP\r\n") << act.SendToServer(b"TYPE I\r\n")
    assert (
        playbook
        >> ServerSends(b"200 Type set\r\n200 ok\r\n")
        << act.SendToClient(b"200 Type set\r\n")
        << act.SendToClient(b"200 ok\r\n")
        << act.SendToServer(b"NOOP\r\n")
    )
    # The NOOP's own answer then comes; nothing is out of step.
    assert playbook >> ServerSends(b"200 NOOP\r\n") << act.SendToClient(b"200 NOOP\r\n")


def test_backlog_counts_pipelined_commands() -> None:
    playbook = logged_in()
    assert playbook >> ClientSends(b"NOOP\r\n" * 10) << act.SendToServer(b"NOOP\r\n")
    assert state(playbook) == replace(COMMAND, backlog=9)  # one is with the server
    assert (
        playbook
        >> ServerSends(b"200 ok\r\n")
        << act.SendToClient(b"200 ok\r\n")
        << act.SendToServer(b"NOOP\r\n")
    )
    assert state(playbook) == replace(COMMAND, backlog=8)


def test_overlong_line_gets_500_and_session_goes_on() -> None:
    assert (
        logged_in(SessionPolicy(max_line_length=1024))
        >> ClientSends(b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\n")
        << act.SendToClient(b"500 Command line too long\r\n")
        << act.SendToServer(b"NOOP\r\n")
    )


def test_an_unparsable_line_is_answered_in_its_turn() -> None:
    playbook = logged_in()
    assert playbook >> ClientSends(b"NOOP\r\nN0OP\r\nSYST\r\n") << act.SendToServer(b"NOOP\r\n")
    assert (
        playbook
        >> ServerSends(b"200 ok\r\n")
        << act.SendToClient(b"200 ok\r\n")
        << act.SendToClient(b"500 Syntax error, command unrecognized\r\n")
        << act.SendToServer(b"SYST\r\n")
    )


def test_unsolicited_reply_passes_to_an_idle_client() -> None:
    playbook = logged_in()
    assert playbook >> ServerSends(b"200 hello\r\n") << act.SendToClient(b"200 hello\r\n")
    assert state(playbook) == IDLE


def test_unsolicited_421_ends_the_session() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ServerSends(b"421 Timeout\r\n")
        << act.SendToClient(b"421 Timeout\r\n")
        << act.Close(EndReason.SERVER_CLOSED)
    )
    assert state(playbook) == CLOSED


def test_malformed_server_reply_closes_with_421() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"NOOP\r\n")
        << act.SendToServer(b"NOOP\r\n")
        >> ServerSends(b"hello there\r\n")
        << act.SendToClient(
            b"421 Service not available, malformed reply from server (bad first line)\r\n"
        )
        << act.Close(
            EndReason.PROTOCOL_ERROR,
            "Service not available, malformed reply from server (bad first line)",
        )
    )
    assert state(playbook) == CLOSED


def test_rest_then_retr_passes_through() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"REST 1000\r\n")
        << act.SendToServer(b"REST 1000\r\n")
        >> ServerSends(b"350 Restarting\r\n")
        << act.SendToClient(b"350 Restarting\r\n")
    )
    passive_ready(playbook)
    retr(playbook)


# ---------------------------------------------------------------- login


def test_login_tracks_230_on_any_login_verb() -> None:
    playbook = connected()
    assert (
        playbook
        >> ClientSends(b"USER anonymous\r\n")
        << act.SendToServer(b"USER anonymous\r\n")
        >> ServerSends(b"230 Anonymous ok\r\n")
        << act.SendToClient(b"230 Anonymous ok\r\n")
        << act.LoginResult(ok=True, user=b"anonymous")
    )
    assert state(playbook) == IDLE
    # A new USER logs the session out until its own 230.
    assert (
        playbook
        >> ClientSends(b"USER bob\r\n")
        << act.SendToServer(b"USER bob\r\n")
        >> ServerSends(b"331 pw\r\n")
        << act.SendToClient(b"331 pw\r\n")
    )
    # The last login that ended was the 230: a 331 only carries the new one on.
    assert state(playbook) == replace(IDLE, logged_in=False)
    assert playbook.session.user == b"bob"
    assert (
        playbook
        >> ClientSends(b"PASS x\r\n")
        << act.SendToServer(b"PASS x\r\n")
        >> ServerSends(b"332 account\r\n")
        << act.SendToClient(b"332 account\r\n")
        >> ClientSends(b"ACCT y\r\n")
        << act.SendToServer(b"ACCT y\r\n")
        >> ServerSends(b"230 ok\r\n")
        << act.SendToClient(b"230 ok\r\n")
        << act.LoginResult(ok=True, user=b"bob")
    )
    assert state(playbook) == IDLE
    assert playbook.session.login_failures == 0


def test_a_230_to_another_command_does_not_log_in() -> None:
    playbook = connected()
    assert (
        playbook
        >> ClientSends(b"SITE x\r\n")
        << act.SendToServer(b"SITE x\r\n")
        >> ServerSends(b"230 odd\r\n")
        << act.SendToClient(b"230 odd\r\n")
        >> ClientSends(b"SITE y\r\n")
        << act.SendToServer(b"SITE y\r\n")
        >> ServerSends(b"530 odd too\r\n")
        << act.SendToClient(b"530 odd too\r\n")
    )
    assert state(playbook) == replace(IDLE, logged_in=False, login=LoginStatus.NONE)


def test_a_failed_login_stays_logged_out() -> None:
    playbook = connected()
    assert (
        playbook
        >> ClientSends(b"USER alice\r\nPASS bad\r\n")
        << act.SendToServer(b"USER alice\r\n")
        >> ServerSends(b"331 pw\r\n")
        << act.SendToClient(b"331 pw\r\n")
        << act.SendToServer(b"PASS bad\r\n")
        >> ServerSends(b"530 Login incorrect\r\n")
        << act.SendToClient(b"530 Login incorrect\r\n")
        << act.LoginResult(ok=False, user=b"alice")
        >> ClientSends(b"CWD /\r\n")
        << act.SendToClient(PLEASE_LOGIN)
    )
    assert state(playbook) == replace(
        IDLE, logged_in=False, login=LoginStatus.FAILED, login_failures=1
    )


def test_failed_logins_are_counted_and_the_last_login_tells_the_status() -> None:
    playbook = connected()
    assert (
        playbook
        >> ClientSends(b"USER mallory\r\n")
        << act.SendToServer(b"USER mallory\r\n")
        >> ServerSends(b"530 No such user\r\n")
        << act.SendToClient(b"530 No such user\r\n")
        << act.LoginResult(ok=False, user=b"mallory")
        >> ClientSends(b"USER alice\r\n")
        << act.SendToServer(b"USER alice\r\n")
        >> ServerSends(b"331 pw\r\n")
        << act.SendToClient(b"331 pw\r\n")
        >> ClientSends(b"PASS bad\r\n")
        << act.SendToServer(b"PASS bad\r\n")
        >> ServerSends(b"530 Login incorrect\r\n")
        << act.SendToClient(b"530 Login incorrect\r\n")
        << act.LoginResult(ok=False, user=b"alice")
    )
    assert state(playbook) == replace(
        IDLE, logged_in=False, login=LoginStatus.FAILED, login_failures=2
    )
    assert (
        playbook
        >> ClientSends(b"PASS good\r\n")
        << act.SendToServer(b"PASS good\r\n")
        >> ServerSends(b"230 in\r\n")
        << act.SendToClient(b"230 in\r\n")
        << act.LoginResult(ok=True, user=b"alice")
    )
    assert state(playbook) == replace(IDLE, login_failures=2)
    assert playbook >> ClientCloses() << act.Close(EndReason.CLIENT_CLOSED)
    assert state(playbook) == replace(CLOSED, login_failures=2)


def test_a_530_to_another_command_is_no_failed_login() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"CWD /secret\r\n")
        << act.SendToServer(b"CWD /secret\r\n")
        >> ServerSends(b"530 Not for you\r\n")
        << act.SendToClient(b"530 Not for you\r\n")
    )
    assert state(playbook) == IDLE


def test_ftplbs_own_530_before_login_is_no_login_result() -> None:
    playbook = connected()
    assert playbook >> ClientSends(b"CWD /\r\n") << act.SendToClient(PLEASE_LOGIN)
    assert state(playbook) == replace(IDLE, logged_in=False, login=LoginStatus.NONE)


def test_rein_logs_out() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"REIN\r\n")
        << act.SendToServer(b"REIN\r\n")
        >> ServerSends(b"220 again\r\n")
        << act.SendToClient(b"220 again\r\n")
        >> ClientSends(b"PWD\r\n")
        << act.SendToClient(PLEASE_LOGIN)
    )
    assert state(playbook) == replace(IDLE, logged_in=False)


NEEDS_LOGIN = [
    b"PASV",
    b"EPSV",
    b"PORT 127,0,0,100,100,100",
    b"EPRT |1|127.0.0.100|5000|",
    b"RETR f",
    b"LIST",
    b"NLST",
    b"MLSD",
    b"STOR f",
    b"STOU",
    b"APPE f",
    b"ABOR",
    *(
        b"CWD CDUP XCWD XCUP PWD XPWD MKD XMKD RMD XRMD DELE RNFR RNTO SIZE MDTM "
        b"MLST TYPE STRU MODE ALLO REST SMNT".split()
    ),
]


@pytest.mark.parametrize("line", NEEDS_LOGIN)
def test_commands_before_login_get_530(line: bytes) -> None:
    playbook = connected()
    assert playbook >> ClientSends(line + b"\r\n") << act.SendToClient(PLEASE_LOGIN)
    assert state(playbook) == replace(IDLE, logged_in=False, login=LoginStatus.NONE)


@pytest.mark.parametrize(
    "line", [b"SYST", b"NOOP", b"OPTS UTF8 ON", b"HELP", b"STAT", b"CLNT x", b"HOST h", b"LANG"]
)
def test_informational_commands_before_login_go_to_the_server(line: bytes) -> None:
    assert (
        connected()
        >> ClientSends(line + b"\r\n")
        << act.SendToServer(line + b"\r\n")
        >> ServerSends(b"200 fine\r\n")
        << act.SendToClient(b"200 fine\r\n")
    )


@pytest.mark.parametrize("verb", [b"LPSV", b"LPRT", b"SPSV", b"ADAT", b"MIC", b"CONF", b"ENC"])
def test_unproxyable_verbs_get_502_logged_in_or_not(verb: bytes) -> None:
    reply = act.SendToClient(b"502 " + verb + b" is not supported.\r\n")
    assert connected() >> ClientSends(verb + b" x\r\n") << reply
    assert logged_in() >> ClientSends(verb.lower() + b"\r\n") << reply
    assert (
        new(ON_USER) >> Start() << act.SendToClient(BANNER) >> ClientSends(verb + b"\r\n") << reply
    )


# ---------------------------------------------------------------- QUIT


def test_quit_ends_with_the_servers_reply() -> None:
    playbook = logged_in()
    assert playbook >> ClientSends(b"QUIT\r\n") << act.SendToServer(b"QUIT\r\n")
    assert state(playbook) == COMMAND
    assert (
        playbook
        >> ServerSends(b"221 Bye\r\n")
        << act.SendToClient(b"221 Bye\r\n")
        << act.Close(EndReason.QUIT)
    )
    assert state(playbook) == CLOSED


def test_quit_when_the_server_closes_before_answering() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"QUIT\r\n")
        << act.SendToServer(b"QUIT\r\n")
        >> ServerCloses()
        << act.SendToClient(GOODBYE)
        << act.Close(EndReason.QUIT)
    )
    assert state(playbook) == CLOSED


def test_quit_before_the_server_is_chosen() -> None:
    playbook = new(ON_USER)
    assert (
        playbook
        >> Start()
        << act.SendToClient(BANNER)
        >> ClientSends(b"QUIT\r\nNOOP\r\n")
        << act.SendToClient(GOODBYE)
        << act.Close(EndReason.QUIT)
    )
    assert state(playbook) == State(Phase.CLOSED, closed=True, backlog=1)


def test_commands_after_quit_are_never_sent() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"QUIT\r\nDELE x\r\n")
        << act.SendToServer(b"QUIT\r\n")
        >> ServerSends(b"221 Bye\r\n")
        << act.SendToClient(b"221 Bye\r\n")
        << act.Close(EndReason.QUIT)
    )


# ---------------------------------------------------------------- routing on USER


def test_user_routing_waits_for_user() -> None:
    playbook = new(ON_USER)
    assert playbook >> Start() << act.SendToClient(BANNER)
    assert state(playbook) == State(Phase.READY, idle=True)
    assert (
        playbook
        >> ClientSends(b"FEAT\r\n")
        << act.SendToClient(OWN_FEAT)
        >> ClientSends(b"PASS x\r\n")
        << act.SendToClient(b"503 Login with USER first.\r\n")
        >> ClientSends(b"ACCT x\r\n")
        << act.SendToClient(b"503 Login with USER first.\r\n")
        >> ClientSends(b"LIST\r\n")
        << act.SendToClient(PLEASE_LOGIN)
        >> ClientSends(b"USER bob\r\n")
        << act.ConnectServer(b"bob")
    )
    assert state(playbook) == State(Phase.CONNECTING)
    assert playbook.session.user == b"bob"
    assert playbook >> ServerConnected() << act.SendToServer(b"USER bob\r\n")
    assert state(playbook) == State(Phase.COMMAND, awaiting_server=True)
    assert playbook >> ServerSends(b"331 pw\r\n") << act.SendToClient(b"331 pw\r\n")
    assert (
        playbook
        >> ClientSends(b"PASS pw\r\n")
        << act.SendToServer(b"PASS pw\r\n")
        >> ServerSends(b"230 in\r\n")
        << act.SendToClient(b"230 in\r\n")
        << act.LoginResult(ok=True, user=b"bob")
    )
    assert state(playbook) == IDLE


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"SYST", b"215 UNIX Type: L8\r\n"),
        (b"NOOP", b"200 NOOP ok.\r\n"),
        (b"OPTS UTF8 ON", b"200 OK.\r\n"),
        (b"HELP", b"214 Log in with USER and PASS.\r\n"),
        (b"STAT", b"211 Not logged in.\r\n"),
        (b"CLNT lftp", b"200 Noted.\r\n"),
        (b"HOST ftp.example.com", b"502 HOST is not supported before login.\r\n"),
        (b"LANG fr", b"502 LANG is not supported before login.\r\n"),
        (b"PASS x", b"503 Login with USER first.\r\n"),
        (b"ACCT x", b"503 Login with USER first.\r\n"),
        (b"REIN", PLEASE_LOGIN),
        (b"SITE x", PLEASE_LOGIN),
        (b"CWD /", PLEASE_LOGIN),
        (b"PASV", PLEASE_LOGIN),
    ],
)
def test_before_the_server_ftplb_answers_alone(line: bytes, reply: bytes) -> None:
    playbook = new(ON_USER)
    assert (
        playbook
        >> Start()
        << act.SendToClient(BANNER)
        >> ClientSends(line + b"\r\n")
        << act.SendToClient(reply)
    )
    assert state(playbook) == State(Phase.READY, idle=True)


def test_pipelined_commands_wait_while_user_connects_the_server() -> None:
    playbook = new(ON_USER)
    assert (
        playbook
        >> Start()
        << act.SendToClient(BANNER)
        >> ClientSends(b"SYST\r\nUSER bob\r\nPASS pw\r\nPWD\r\n")
        << act.SendToClient(b"215 UNIX Type: L8\r\n")
        << act.ConnectServer(b"bob")
        >> ClientSends(b"NOOP\r\n")
    )
    assert state(playbook) == State(Phase.CONNECTING, backlog=3)
    assert playbook >> ServerConnected() << act.SendToServer(b"USER bob\r\n")
    assert state(playbook) == State(Phase.COMMAND, backlog=3, awaiting_server=True)
    assert (
        playbook
        >> ServerSends(b"331 pw\r\n")
        << act.SendToClient(b"331 pw\r\n")
        << act.SendToServer(b"PASS pw\r\n")
        >> ServerSends(b"230 in\r\n")
        << act.SendToClient(b"230 in\r\n")
        << act.LoginResult(ok=True, user=b"bob")
        << act.SendToServer(b"PWD\r\n")
        >> ServerSends(b'257 "/"\r\n')
        << act.SendToClient(b'257 "/"\r\n')
        << act.SendToServer(b"NOOP\r\n")
        >> ServerSends(b"200 ok\r\n")
        << act.SendToClient(b"200 ok\r\n")
    )
    assert state(playbook) == IDLE


def test_user_routing_with_no_server_gives_421() -> None:
    playbook = new(ON_USER)
    assert (
        playbook
        >> Start()
        << act.SendToClient(BANNER)
        >> ClientSends(b"USER bob\r\n")
        << act.ConnectServer(b"bob")
        >> ServerUnavailable("down")
        << act.SendToClient(b"421 Service not available, no server could take the session.\r\n")
        << act.Close(EndReason.NO_SERVER, "down")
    )


def test_user_routing_replays_user_to_an_ipv6_server_which_gets_epsv() -> None:
    playbook = new(ON_USER)
    assert (
        playbook
        >> Start()
        << act.SendToClient(BANNER)
        >> ClientSends(b"USER bob\r\n")
        << act.ConnectServer(b"bob")
        >> ServerConnected("::1", 2)
        << act.SendToServer(b"USER bob\r\n")
        >> ServerSends(b"230 in\r\n")
        << act.SendToClient(b"230 in\r\n")
        << act.LoginResult(ok=True, user=b"bob")
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"EPSV\r\n")
    )


# ---------------------------------------------------------------- data setup


def test_pasv_answers_with_the_balancers_own_address() -> None:
    passive_ready(logged_in())


def test_epsv_answers_229_with_the_listener_port() -> None:
    passive_ready(logged_in(), b"EPSV")


@pytest.mark.parametrize("line", [b"EPSV 1", b"EPSV 01", b"epsv"])
def test_epsv_with_our_family_is_plain_epsv(line: bytes) -> None:
    assert logged_in() >> ClientSends(line + b"\r\n") << act.OpenClientListener()


def test_server_passive_address_is_its_control_address() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    retr(playbook)


def test_ipv6_server_gets_epsv() -> None:
    playbook = logged_in(server=ServerConnected("::1", 2))
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"EPSV\r\n")
        >> ServerSends(b"229 Entering Extended Passive Mode (|||5000|)\r\n")
        << act.SendToClient(OUR_227)
        >> ClientSends(b"LIST\r\n")
        << act.StartTransfer(
            act.ClientPassive("PASV"),
            act.ServerPassive(HostPort.of("::1", 5000), "EPSV"),
            upload=False,
        )
        << act.SendToServer(b"LIST\r\n")
    )


def test_pasv_reply_to_epsv_is_accepted() -> None:
    playbook = logged_in(server=ServerConnected("::1", 2))
    assert (
        playbook
        >> ClientSends(b"EPSV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"EPSV\r\n")
        >> ServerSends(SERVER_227)
        << act.SendToClient(OUR_229)
        >> ClientSends(b"NLST\r\n")
        << act.StartTransfer(
            act.ClientPassive("EPSV"),
            act.ServerPassive(HostPort.of("::1", 51210), "PASV"),
            upload=False,
        )
        << act.SendToServer(b"NLST\r\n")
    )


def test_pasv_on_ipv6_advertised_address_is_refused() -> None:
    playbook = logged_in(passive_family=2)
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.SendToClient(b"425 Use EPSV on an IPv6 connection.\r\n")
    )
    assert state(playbook) == IDLE


def test_epsv_on_ipv6_answers_229() -> None:
    playbook = logged_in(passive_family=2)
    listener = HostPort.of("::1", 40001)
    assert (
        playbook
        >> ClientSends(b"EPSV 2\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(listener)
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(SERVER_227)
        << act.SendToClient(OUR_229)
    )


@pytest.mark.parametrize(
    ("family", "line", "reply"),
    [
        (1, b"EPSV 2", b"522 Network protocol not supported, use (1).\r\n"),
        (2, b"EPSV 1", b"522 Network protocol not supported, use (2).\r\n"),
        (1, b"EPSV 3", b"522 Network protocol not supported, use (1,2)\r\n"),
        (1, b"EPSV x", b"501 Syntax error in EPSV arguments\r\n"),
    ],
)
def test_epsv_with_a_wrong_protocol(family: int, line: bytes, reply: bytes) -> None:
    playbook = logged_in(passive_family=family)
    assert playbook >> ClientSends(line + b"\r\n") << act.SendToClient(reply)
    assert state(playbook) == IDLE


def test_second_pasv_replaces_the_first_listener() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.CloseData("new data setup")
        << act.OpenClientListener()
    )


def test_port_after_pasv_drops_the_listener() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    assert (
        playbook
        >> ClientSends(b"PORT 127,0,0,100,100,100\r\n")
        << act.CloseData("new data setup")
        << act.SendToServer(b"PASV\r\n")
    )


def test_epsv_all_refuses_other_data_commands() -> None:
    playbook = logged_in()
    assert playbook >> ClientSends(b"EPSV ALL\r\n") << act.SendToClient(b"200 EPSV ALL ok.\r\n")
    assert state(playbook) == IDLE
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.SendToClient(b"503 PASV not allowed after EPSV ALL.\r\n")
        >> ClientSends(b"PORT 127,0,0,100,100,100\r\n")
        << act.SendToClient(b"503 PORT not allowed after EPSV ALL.\r\n")
        >> ClientSends(b"EPRT |1|127.0.0.100|5000|\r\n")
        << act.SendToClient(b"503 EPRT not allowed after EPSV ALL.\r\n")
        >> ClientSends(b"EPSV\r\n")
        << act.OpenClientListener()
    )


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"PORT 127,0,0,1,100,100", b"500 Illegal PORT command.\r\n"),  # another address
        (b"PORT 127,0,0,100,0,21", b"500 Illegal PORT command.\r\n"),  # privileged port
        (b"PORT 127,0,0,100,3,255", b"500 Illegal PORT command.\r\n"),  # port 1023
        (b"EPRT |1|10.0.0.1|5000|", b"500 Illegal EPRT command.\r\n"),
        (b"EPRT |2|::1|5000|", b"500 Illegal EPRT command.\r\n"),
        (b"EPRT |1|0.0.0.0|80|", b"500 Illegal EPRT command.\r\n"),
    ],
)
def test_port_bounce_is_refused(line: bytes, reply: bytes) -> None:
    playbook = logged_in()
    passive_ready(playbook)
    # A refused PORT keeps the data connection already prepared.
    assert playbook >> ClientSends(line + b"\r\n") << act.SendToClient(reply)
    assert state(playbook) == IDLE
    retr(playbook)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"PORT 1,2,3", b"501 Syntax error in PORT arguments\r\n"),
        (b"EPRT |1|127.0.0.100|", b"501 Syntax error in EPRT arguments\r\n"),
        (b"EPRT |3|x|5000|", b"522 Network protocol not supported, use (1,2)\r\n"),
    ],
)
def test_malformed_active_commands(line: bytes, reply: bytes) -> None:
    assert logged_in() >> ClientSends(line + b"\r\n") << act.SendToClient(reply)


def test_lftps_unspecified_eprt_address_means_the_client() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"EPRT |2|::|50000|\r\n")
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(SERVER_227)
        << act.SendToClient(b"200 EPRT command successful.\r\n")
        >> ClientSends(b"LIST\r\n")
        << act.StartTransfer(
            act.ClientActive(HostPort.of(CLIENT, 50000), "EPRT"), SERVER_PASSIVE, upload=False
        )
        << act.SendToServer(b"LIST\r\n")
    )


def test_unspecified_port_address_means_the_client() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"PORT 0,0,0,0,100,100\r\n")
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(SERVER_227)
        << act.SendToClient(b"200 PORT command successful.\r\n")
        >> ClientSends(b"RETR f\r\n")
        << act.StartTransfer(
            act.ClientActive(HostPort.of(CLIENT, 25700), "PORT"), SERVER_PASSIVE, upload=False
        )
        << act.SendToServer(b"RETR f\r\n")
    )


def test_port_with_passive_server_mode_connects_the_client_at_the_1xx() -> None:
    playbook = logged_in()
    client = act.ClientActive(HostPort.of(CLIENT, 25700), "PORT")
    assert playbook >> ClientSends(b"PORT 127,0,0,100,100,100\r\n") << act.SendToServer(b"PASV\r\n")
    assert state(playbook) == SERVER_SETUP
    assert (
        playbook
        >> ServerSends(b"227 Entering Passive Mode (127,0,0,11,4,1)\r\n")
        << act.SendToClient(b"200 PORT command successful.\r\n")
        >> ClientSends(b"RETR f\r\n")
        << act.StartTransfer(
            client, act.ServerPassive(HostPort.of(SERVER, 1025), "PASV"), upload=False
        )
        << act.SendToServer(b"RETR f\r\n")
        >> ServerSends(b"150 here it comes\r\n")
        << act.SendToClient(b"150 here it comes\r\n")
        << act.ConnectClient()
        # A later 1xx does not connect again.
        >> ServerSends(b"150 still\r\n")
        << act.SendToClient(b"150 still\r\n")
        >> DataDone()
        >> ServerSends(b"226 done\r\n")
        << act.SendToClient(b"226 done\r\n")
        << act.TransferDone("RETR", b"f", 226, "PORT", "PASV")
        << act.CloseData("transfer complete")
    )


CLIENT_SETUPS: dict[bytes, tuple[act.ClientSide, bytes]] = {
    b"PASV": (act.ClientPassive("PASV"), OUR_227),
    b"EPSV": (act.ClientPassive("EPSV"), OUR_229),
    b"PORT 127,0,0,100,100,100": (
        act.ClientActive(HostPort.of(CLIENT, 25700), "PORT"),
        b"200 PORT command successful.\r\n",
    ),
    b"EPRT |1|127.0.0.100|25700|": (
        act.ClientActive(HostPort.of(CLIENT, 25700), "EPRT"),
        b"200 EPRT command successful.\r\n",
    ),
}


@pytest.mark.parametrize("mode", ["passive", "active", "client"])
@pytest.mark.parametrize("server_family", [1, 2])
@pytest.mark.parametrize("line", list(CLIENT_SETUPS))
def test_data_setup_in_every_server_mode(mode: str, server_family: int, line: bytes) -> None:
    server_address = SERVER if server_family == 1 else "::1"
    playbook = logged_in(
        SessionPolicy(server_data_mode=mode),  # type: ignore[arg-type]
        server=ServerConnected(server_address, server_family),
    )
    client, our_reply = CLIENT_SETUPS[line]
    playbook >> ClientSends(line + b"\r\n")
    if isinstance(client, act.ClientPassive):
        assert playbook << act.OpenClientListener()
        playbook >> ClientListenerReady(LISTENER)
    server_passive = mode == "passive" or (
        mode == "client" and isinstance(client, act.ClientPassive)
    )
    server: act.ServerSide
    if server_passive:
        verb = b"PASV\r\n" if server_family == 1 else b"EPSV\r\n"
        server_reply = SERVER_227 if server_family == 1 else b"229 ok (|||51210|)\r\n"
        server_mode: act.DataModeName = "PASV" if server_family == 1 else "EPSV"
        server = act.ServerPassive(HostPort.of(server_address, 51210), server_mode)
        assert playbook << act.SendToServer(verb)
    else:
        assert playbook << act.OpenServerListener()
        assert state(playbook) == OPENING_LISTENER
        if server_family == 1:
            listener, verb = SERVER_LISTENER, b"PORT 127,0,0,1,175,200\r\n"
        else:
            listener, verb = HostPort.of("::1", 45000), b"EPRT |2|::1|45000|\r\n"
        server_reply = b"200 ok\r\n"
        server_mode = "PORT" if server_family == 1 else "EPRT"
        server = act.ServerActive(server_mode)
        assert playbook >> ServerListenerReady(listener) << act.SendToServer(verb)
    assert state(playbook) == SERVER_SETUP
    assert (
        playbook
        >> ServerSends(server_reply)
        << act.SendToClient(our_reply)
        >> ClientSends(b"STOR up\r\n")
        << act.StartTransfer(client, server, upload=True)
        << act.SendToServer(b"STOR up\r\n")
    )
    if isinstance(client, act.ClientActive):
        assert (
            playbook
            >> ServerSends(b"150 ok\r\n")
            << act.SendToClient(b"150 ok\r\n")
            << act.ConnectClient()
        )
    else:
        assert playbook >> ServerSends(b"150 ok\r\n") << act.SendToClient(b"150 ok\r\n")
    assert (
        playbook
        >> DataDone()
        >> ServerSends(b"226 stored\r\n")
        << act.SendToClient(b"226 stored\r\n")
        << act.TransferDone("STOR", b"up", 226, client.mode, server_mode)
        << act.CloseData("transfer complete")
    )
    assert state(playbook) == IDLE


def test_client_listener_failure_gives_425() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerFails("no free port")
        << act.CloseData("cannot open a passive listener: no free port")
        << act.SendToClient(CANT_OPEN)
    )
    assert state(playbook) == IDLE


def test_transfer_command_names_the_running_transfer_only() -> None:
    playbook = logged_in()
    assert playbook.session.transfer_command is None
    running(playbook)
    assert playbook.session.transfer_command == ("RETR", b"f")
    assert (
        playbook
        >> DataDone()
        >> ServerSends(b"226 done\r\n")
        << act.SendToClient(b"226 done\r\n")
        << done(226)
        << act.CloseData("transfer complete")
    )
    assert playbook.session.transfer_command is None


def test_passive_limit_refuses_with_425_and_the_next_command_runs() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"EPSV\r\nNOOP\r\n")
        << act.OpenClientListener()
        >> ClientListenerRefused()
        << act.CloseData("too many passive listeners for the client")
        << act.SendToClient(b"425 Too many passive connections from your address.\r\n")
        << act.SendToServer(b"NOOP\r\n")
    )


def test_passive_limit_leaves_no_data_setup_behind() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerRefused()
        << act.CloseData("too many passive listeners for the client")
        << act.SendToClient(b"425 Too many passive connections from your address.\r\n")
        >> ClientSends(b"RETR f\r\n")
        << act.SendToClient(b"425 Use PORT, PASV, EPRT or EPSV first.\r\n")
    )
    assert state(playbook) == IDLE


def test_server_listener_failure_gives_425() -> None:
    playbook = logged_in(SessionPolicy(server_data_mode="active"))
    assert (
        playbook
        >> ClientSends(b"EPSV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.OpenServerListener()
        >> ServerListenerFails("EMFILE")
        << act.CloseData("cannot open a listener for the server: EMFILE")
        << act.SendToClient(CANT_OPEN)
    )
    assert state(playbook) == IDLE


def test_server_refusing_passive_gives_425() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(b"500 no passive today\r\n")
        << act.CloseData("server refused data setup: 500")
        << act.SendToClient(CANT_OPEN)
    )
    assert state(playbook) == IDLE


def test_server_refusing_port_gives_425() -> None:
    playbook = logged_in(SessionPolicy(server_data_mode="active"))
    assert (
        playbook
        >> ClientSends(b"PORT 127,0,0,100,100,100\r\n")
        << act.OpenServerListener()
        >> ServerListenerReady(SERVER_LISTENER)
        << act.SendToServer(b"PORT 127,0,0,1,175,200\r\n")
        >> ServerSends(b"150 thinking\r\n")
        << act.SendToClient(b"150 thinking\r\n")
        >> ServerSends(b"100 odd\r\n")
        << act.SendToClient(b"100 odd\r\n")
        >> ServerSends(b"300 odd\r\n")
        << act.CloseData("server refused data setup: 300")
        << act.SendToClient(CANT_OPEN)
    )


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"227 no address here\r\n", "425 Can't open data connection: unreadable 227 reply"),
        (b"229 no port here\r\n", "425 Can't open data connection: unreadable 229 reply"),
        (b"227 (127,0,0,11,0,0)\r\n", "425 Can't open data connection: unreadable 227 reply"),
    ],
)
def test_unusable_passive_reply_gives_425(reply: bytes, reason: str) -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(reply)
        << act.CloseData(f"unusable passive reply from server: {reason} from server")
        << act.SendToClient(CANT_OPEN)
    )
    assert state(playbook) == IDLE


def test_transfer_without_data_setup_gets_425() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"RETR f\r\n")
        << act.SendToClient(b"425 Use PORT, PASV, EPRT or EPSV first.\r\n")
    )
    assert state(playbook) == IDLE


def test_abor_without_transfer_drops_the_data_setup_and_passes_through() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    assert (
        playbook
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("ABOR")
        << act.SendToServer(b"ABOR\r\n")
        >> ServerSends(b"225 No transfer\r\n")
        << act.SendToClient(b"225 No transfer\r\n")
        >> ClientSends(b"ABOR\r\n")
        << act.SendToServer(b"ABOR\r\n")
        >> ServerSends(b"225 No transfer\r\n")
        << act.SendToClient(b"225 No transfer\r\n")
        >> ClientSends(b"RETR f\r\n")
        << act.SendToClient(b"425 Use PORT, PASV, EPRT or EPSV first.\r\n")
    )


# ---------------------------------------------------------------- transfers


@pytest.mark.parametrize(
    ("verb", "upload"),
    [
        (b"RETR", False),
        (b"LIST", False),
        (b"NLST", False),
        (b"MLSD", False),
        (b"STOR", True),
        (b"STOU", True),
        (b"APPE", True),
    ],
)
def test_each_transfer_verb_says_its_direction(verb: bytes, upload: bool) -> None:
    playbook = logged_in()
    passive_ready(playbook)
    line = verb.lower() + b" x\r\n"
    assert (
        playbook
        >> ClientSends(line)
        << act.StartTransfer(act.ClientPassive("PASV"), SERVER_PASSIVE, upload=upload)
        << act.SendToServer(line)
        >> ServerSends(b"150 ok\r\n")
        << act.SendToClient(b"150 ok\r\n")
        >> DataDone()
        >> ServerSends(b"226 ok\r\n")
        << act.SendToClient(b"226 ok\r\n")
        << act.TransferDone(verb.decode(), b"x", 226, "PASV", "PASV")
        << act.CloseData("transfer complete")
    )


def test_final_reply_is_held_until_data_is_flushed() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    retr(playbook, b"RETR big\r\n")
    assert playbook >> ServerSends(b"150 Opening\r\n") << act.SendToClient(b"150 Opening\r\n")
    assert state(playbook) == transferring(TransferPhase.RUNNING)
    assert playbook >> ServerSends(b"226 Transfer complete\r\n")
    assert state(playbook) == transferring(TransferPhase.REPLY_HELD)
    assert (
        playbook
        >> DataDone()
        << act.SendToClient(b"226 Transfer complete\r\n")
        << done(226, path=b"big")
        << act.CloseData("transfer complete")
    )
    assert state(playbook) == IDLE
    # Each transfer needs a new data setup.
    assert (
        playbook
        >> ClientSends(b"RETR again\r\n")
        << act.SendToClient(b"425 Use PORT, PASV, EPRT or EPSV first.\r\n")
    )


def test_data_done_before_final_reply_releases_at_once() -> None:
    playbook = logged_in()
    running(playbook)
    assert playbook >> DataDone()
    assert state(playbook) == transferring(TransferPhase.DATA_DONE)
    assert (
        playbook
        >> ServerSends(b"226 done\r\n")
        << act.SendToClient(b"226 done\r\n")
        << done(226)
        << act.CloseData("transfer complete")
    )
    assert state(playbook) == IDLE


@pytest.mark.parametrize("data_first", [False, True])
def test_failed_data_turns_226_into_426(data_first: bool) -> None:
    playbook = logged_in()
    running(playbook)
    if data_first:
        playbook >> DataDone("reset by client") >> ServerSends(b"226 done\r\n")
    else:
        playbook >> ServerSends(b"226 done\r\n") >> DataDone("reset by client")
    assert (
        playbook
        << act.SendToClient(DATA_FAILED_426)
        << done(426)
        << act.CloseData("transfer complete")
    )
    assert state(playbook) == IDLE


def test_failed_data_keeps_a_4xx_or_5xx_reply() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ServerSends(b"451 local error\r\n")
        >> DataDone("reset by server")
        << act.SendToClient(b"451 local error\r\n")
        << done(451)
        << act.CloseData("transfer complete")
    )


@pytest.mark.parametrize("server_reply", [b"226 done\r\n", b"426 connection reset\r\n"])
def test_a_data_connection_that_did_not_resume_tls_gets_425(server_reply: bytes) -> None:
    # Whatever the server says of the data connection ftplb reset, the client
    # learns why it was refused.
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> DataDone(TLS_SESSION_NOT_RESUMED)
        >> ServerSends(server_reply)
        << act.SendToClient(
            b"425 TLS session reuse required: the data connection must resume this "
            b"control connection's TLS session.\r\n"
        )
        << done(425)
        << act.CloseData("transfer complete")
    )
    assert state(playbook) == IDLE


def test_refused_transfer_closes_data_and_forwards() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    retr(playbook, b"RETR missing\r\n")
    assert (
        playbook
        >> ServerSends(b"550 No such file\r\n")
        << act.CloseData("transfer refused: 550")
        << act.SendToClient(b"550 No such file\r\n")
        << done(550, path=b"missing")
    )
    assert state(playbook) == IDLE
    assert (
        playbook
        >> DataDone()
        >> ClientSends(b"RETR again\r\n")
        << act.SendToClient(b"425 Use PORT, PASV, EPRT or EPSV first.\r\n")
    )


def test_data_ending_before_the_1xx() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    retr(playbook)
    assert playbook >> DataDone()
    assert state(playbook) == transferring(TransferPhase.DATA_FIRST)
    assert playbook >> ServerSends(b"150 ok\r\n") << act.SendToClient(b"150 ok\r\n")
    assert state(playbook) == transferring(TransferPhase.DATA_DONE)
    assert (
        playbook
        >> ServerSends(b"226 done\r\n")
        << act.SendToClient(b"226 done\r\n")
        << done(226)
        << act.CloseData("transfer complete")
    )


def test_data_ending_before_a_refusal() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    retr(playbook)
    assert (
        playbook
        >> DataDone("refused")
        >> ServerSends(b"425 no data connection\r\n")
        << act.SendToClient(b"425 no data connection\r\n")
        << done(425)
        << act.CloseData("transfer complete")
    )
    assert state(playbook) == IDLE


def test_data_failing_before_a_1xx_turns_a_bare_226_into_426() -> None:
    # A server that skips its 1xx still must not tell the client the bytes arrived.
    playbook = logged_in()
    passive_ready(playbook)
    retr(playbook)
    assert (
        playbook
        >> DataDone("reset")
        >> ServerSends(b"226 done\r\n")
        << act.SendToClient(DATA_FAILED_426)
        << done(426)
        << act.CloseData("transfer complete")
    )
    assert state(playbook) == IDLE


def test_active_client_whose_data_ended_first_is_not_connected_at_the_1xx() -> None:
    playbook = logged_in()
    client = act.ClientActive(HostPort.of(CLIENT, 25700), "PORT")
    assert (
        playbook
        >> ClientSends(b"PORT 127,0,0,100,100,100\r\n")
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(SERVER_227)
        << act.SendToClient(b"200 PORT command successful.\r\n")
        >> ClientSends(b"RETR f\r\n")
        << act.StartTransfer(client, SERVER_PASSIVE, upload=False)
        << act.SendToServer(b"RETR f\r\n")
        >> DataDone("server leg failed")
        >> ServerSends(b"150 ok\r\n")
        << act.SendToClient(b"150 ok\r\n")
        >> ServerSends(b"226 done\r\n")
        << act.SendToClient(DATA_FAILED_426)
        << act.TransferDone("RETR", b"f", 426, "PORT", "PASV")
        << act.CloseData("transfer complete")
    )


def test_second_1xx_after_broken_data_ends_the_transfer() -> None:
    # Pure-FTPd: after its data write fails it sends "150 <stats>" and no final reply.
    playbook = logged_in()
    passive_ready(playbook)
    retr(playbook)
    assert (
        playbook
        >> ServerSends(b"150 Accepted data connection\r\n")
        << act.SendToClient(b"150 Accepted data connection\r\n")
        >> DataDone("reset by client")
        >> ServerSends(b"150 0.002 seconds\r\n")
        << act.SendToClient(DATA_FAILED_426)
        << done(426)
        << act.CloseData("transfer complete")
    )
    assert state(playbook) == IDLE
    assert playbook >> ClientSends(b"NOOP\r\n") << act.SendToServer(b"NOOP\r\n")


def test_a_second_1xx_after_clean_data_is_passed_on() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook >> DataDone() >> ServerSends(b"150 more\r\n") << act.SendToClient(b"150 more\r\n")
    )
    assert state(playbook) == transferring(TransferPhase.DATA_DONE)


def test_commands_during_transfer_wait_for_its_end() -> None:
    playbook = logged_in()
    running(playbook)
    assert playbook >> ClientSends(b"QUIT\r\n")
    assert state(playbook) == transferring(TransferPhase.RUNNING, backlog=1)
    assert (
        playbook
        >> ServerSends(b"226 done\r\n")
        >> DataDone()
        << act.SendToClient(b"226 done\r\n")
        << done(226)
        << act.CloseData("transfer complete")
        << act.SendToServer(b"QUIT\r\n")
        >> ServerSends(b"221 Bye\r\n")
        << act.SendToClient(b"221 Bye\r\n")
        << act.Close(EndReason.QUIT)
    )


def test_an_unsolicited_reply_waits_behind_the_held_reply() -> None:
    playbook = logged_in()
    running(playbook)
    assert playbook >> ServerSends(b"226 done\r\n200 unsolicited\r\n")
    assert (
        playbook
        >> DataDone()
        << act.SendToClient(b"226 done\r\n")
        << act.SendToClient(b"200 unsolicited\r\n")
        << done(226)
        << act.CloseData("transfer complete")
    )


def test_an_unsolicited_reply_during_a_running_transfer_is_its_final_reply() -> None:
    playbook = logged_in()
    running(playbook)
    assert playbook >> ServerSends(b"213 late\r\n")
    assert state(playbook) == transferring(TransferPhase.REPLY_HELD)


def test_idleness_excludes_running_transfers() -> None:
    playbook = logged_in()
    running(playbook)
    assert state(playbook) == transferring(
        TransferPhase.RUNNING, idle=False, awaiting_server=False, transfer_running=True
    )


# ---------------------------------------------------------------- ABOR


def test_abor_during_transfer_gives_426_then_226() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ClientSends(b"\xff\xf4\xff\xf2ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
    )
    assert state(playbook) == transferring(TransferPhase.ABORT_AWAIT_FINAL)
    assert playbook >> ServerSends(b"426 Connection closed\r\n")
    assert state(playbook) == transferring(TransferPhase.ABORT_AWAIT_REPLY)
    assert playbook >> DataDone("cancelled")
    assert state(playbook) == transferring(TransferPhase.ABORT_AWAIT_REPLY)
    assert playbook >> ServerSends(b"226 ABOR successful\r\n") << act.SendToClient(ABORT_OK_226)
    assert state(playbook) == IDLE
    assert playbook >> ClientSends(b"NOOP\r\n") << act.SendToServer(b"NOOP\r\n")


def test_abor_crossing_the_transfers_first_reply() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    retr(playbook)
    assert (
        playbook
        >> ClientSends(b"ABOR\r\n")  # before the server's 150 arrived
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
    )
    assert state(playbook) == transferring(TransferPhase.ABORT_BEFORE_START)
    assert playbook >> DataDone("cancelled")
    assert state(playbook) == transferring(TransferPhase.ABORT_BEFORE_START)
    assert playbook >> ServerSends(b"150 ok\r\n")
    assert state(playbook) == transferring(TransferPhase.ABORT_AWAIT_FINAL)
    assert playbook >> ServerSends(b"426 closed\r\n")
    assert playbook >> ServerSends(b"226 ABOR ok\r\n") << act.SendToClient(ABORT_OK_226)
    assert state(playbook) == IDLE


def test_abor_before_a_refusal_of_the_transfer() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    retr(playbook)
    assert (
        playbook
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
        >> ServerSends(b"550 no such file\r\n")
    )
    assert state(playbook) == transferring(TransferPhase.ABORT_AWAIT_REPLY)
    assert playbook >> ServerSends(b"225 nothing to abort\r\n") << act.SendToClient(ABORT_OK_226)


def test_abor_after_the_data_ended_before_the_1xx() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    retr(playbook)
    assert (
        playbook
        >> DataDone()
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
    )
    assert state(playbook) == transferring(TransferPhase.ABORT_BEFORE_START)


def test_abor_after_server_finished_swallows_only_the_abor_reply() -> None:
    playbook = logged_in()
    running(playbook)
    assert playbook >> ServerSends(b"226 done\r\n200 unsolicited\r\n")  # held: data still flushing
    assert (
        playbook
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
    )
    assert state(playbook) == transferring(TransferPhase.ABORT_AWAIT_REPLY)
    assert playbook >> ServerSends(b"150 odd\r\n")
    assert state(playbook) == transferring(TransferPhase.ABORT_AWAIT_REPLY)
    # What waited behind the held reply is dropped with it.
    assert playbook >> ServerSends(b"225 No transfer to ABOR\r\n") << act.SendToClient(ABORT_OK_226)
    assert playbook >> DataDone()
    assert state(playbook) == IDLE


def test_abor_after_data_done() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> DataDone()
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
    )
    assert state(playbook) == transferring(TransferPhase.ABORT_AWAIT_FINAL)
    assert playbook >> ServerSends(b"226 done\r\n226 abor\r\n") << act.SendToClient(ABORT_OK_226)


def test_abor_when_the_server_ends_the_transfer_with_a_second_1xx() -> None:
    # Pure-FTPd: after its data write fails it sends "150 <stats>" and then
    # answers the ABOR; there is no other final reply to the RETR.
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
        >> ServerSends(b"150 0.002 seconds\r\n")
        >> ServerSends(b"226 Since you see this ABOR must've succeeded\r\n")
        << act.SendToClient(ABORT_OK_226)
    )
    assert state(playbook) == IDLE


def test_a_second_abor_waits_and_then_goes_to_the_server() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
        >> ClientSends(b"ABOR\r\n")
    )
    assert state(playbook) == transferring(TransferPhase.ABORT_AWAIT_FINAL, backlog=1)
    assert (
        playbook
        >> ServerSends(b"426 closed\r\n226 abor ok\r\n")
        << act.SendToClient(ABORT_OK_226)
        << act.SendToServer(b"ABOR\r\n")
        >> ServerSends(b"225 nothing\r\n")
        << act.SendToClient(b"225 nothing\r\n")
    )


def test_abor_behind_other_pipelined_commands_acts_first() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ClientSends(b"NOOP\r\nABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
    )
    assert state(playbook) == transferring(TransferPhase.ABORT_AWAIT_FINAL, backlog=1)
    assert (
        playbook
        >> ServerSends(b"426 closed\r\n226 abor ok\r\n")
        << act.SendToClient(ABORT_OK_226)
        << act.SendToServer(b"NOOP\r\n")
    )


# ---------------------------------------------------------------- server closing


def test_server_closing_an_idle_session_gives_421() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ServerCloses()
        << act.SendToClient(SERVER_GONE)
        << act.Close(EndReason.SERVER_CLOSED)
    )
    assert state(playbook) == CLOSED


def test_server_closing_with_a_command_in_flight_gives_421() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"NOOP\r\n")
        << act.SendToServer(b"NOOP\r\n")
        >> ServerCloses()
        << act.SendToClient(SERVER_GONE)
        << act.Close(EndReason.SERVER_CLOSED)
    )


def test_server_closing_during_data_setup_gives_421() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"PASV\r\n")
        >> ServerCloses()
        << act.SendToClient(SERVER_GONE)
        << act.Close(EndReason.SERVER_CLOSED)
    )


def test_server_closing_during_a_running_transfer_gives_421() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ServerCloses()
        << act.SendToClient(SERVER_GONE)
        << act.Close(EndReason.SERVER_CLOSED)
        >> DataDone()
    )


def test_server_closing_during_flush_waits_for_the_data() -> None:
    playbook = logged_in()
    running(playbook)
    assert playbook >> ServerSends(b"226 done\r\n200 later\r\n") >> ServerCloses()
    assert state(playbook) == transferring(TransferPhase.REPLY_HELD)
    assert playbook >> ClientSends(b"NOOP\r\n")
    assert (
        playbook
        >> DataDone()
        << act.SendToClient(b"226 done\r\n")
        << act.SendToClient(b"200 later\r\n")
        << done(226)
        << act.CloseData("transfer complete")
        << act.SendToClient(SERVER_GONE)
        << act.Close(EndReason.SERVER_CLOSED)
    )
    assert state(playbook) == replace(CLOSED, backlog=1)


def test_server_closing_during_flush_then_failed_data_gives_426_then_421() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ServerSends(b"226 done\r\n")
        >> ServerCloses()
        >> DataDone("reset")
        << act.SendToClient(DATA_FAILED_426)
        << done(426)
        << act.CloseData("transfer complete")
        << act.SendToClient(SERVER_GONE)
        << act.Close(EndReason.SERVER_CLOSED)
    )


def test_server_closing_during_an_abort_gives_421() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
        >> ServerCloses()
        << act.SendToClient(SERVER_GONE)
        << act.Close(EndReason.SERVER_CLOSED)
    )


def test_abor_after_the_server_closed_behind_a_held_reply_ends_the_pair_and_the_session() -> None:
    playbook = logged_in()
    running(playbook)
    assert playbook >> ServerSends(b"226 done\r\n") >> ServerCloses()
    assert (
        playbook
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToClient(ABORTED_426)
        << done(426)
        << act.SendToClient(ABORT_OK_226)
        << act.SendToClient(SERVER_GONE)
        << act.Close(EndReason.SERVER_CLOSED)
        >> DataDone()
    )
    assert state(playbook) == CLOSED


def test_a_421_answering_a_command_ends_the_session_at_once() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"CWD x\r\nPWD\r\n")
        << act.SendToServer(b"CWD x\r\n")
        >> ServerSends(b"421 Shutting down\r\n")
        << act.SendToClient(b"421 Shutting down\r\n")
        << act.Close(EndReason.SERVER_CLOSED)
        >> ServerCloses()
    )
    assert state(playbook) == replace(CLOSED, backlog=1)


def test_a_421_answering_ftplbs_own_pasv_ends_the_session() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(b"421 Too many\r\n")
        << act.SendToClient(b"421 Too many\r\n")
        << act.Close(EndReason.SERVER_CLOSED)
    )


def test_a_421_answering_quit_ends_as_quit() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"QUIT\r\n")
        << act.SendToServer(b"QUIT\r\n")
        >> ServerSends(b"421 Bye\r\n")
        << act.SendToClient(b"421 Bye\r\n")
        << act.Close(EndReason.QUIT)
    )


def test_server_closing_while_user_connects_it_gives_421() -> None:
    playbook = new(ON_USER)
    assert (
        playbook
        >> Start()
        << act.SendToClient(BANNER)
        >> ClientSends(b"USER bob\r\n")
        << act.ConnectServer(b"bob")
        >> ServerConnected()
        << act.SendToServer(b"USER bob\r\n")
        >> ServerCloses()
        << act.SendToClient(SERVER_GONE)
        << act.Close(EndReason.SERVER_CLOSED)
    )


# ---------------------------------------------------------------- ends and timeouts


def test_client_closing_ends_without_words() -> None:
    playbook = logged_in()
    running(playbook)
    assert playbook >> ClientCloses() << act.Close(EndReason.CLIENT_CLOSED)
    assert state(playbook) == transferring(TransferPhase.RUNNING, phase=Phase.CLOSED, closed=True)


def test_client_idle_timeout() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> TimesOut("client")
        << act.SendToClient(b"421 Idle timeout, closing.\r\n")
        << act.Close(EndReason.CLIENT_TIMEOUT)
    )
    assert state(playbook) == CLOSED


def test_server_timeout() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"NOOP\r\n")
        << act.SendToServer(b"NOOP\r\n")
        >> TimesOut("server")
        << act.SendToClient(b"421 Service not available, the server did not answer in time.\r\n")
        << act.Close(EndReason.SERVER_TIMEOUT)
    )


def test_a_timeout_during_flush_sends_what_waited_but_not_the_held_reply() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ServerSends(b"226 done\r\n200 later\r\n")
        >> TimesOut("client")
        << act.SendToClient(b"200 later\r\n")
        << act.SendToClient(b"421 Idle timeout, closing.\r\n")
        << act.Close(EndReason.CLIENT_TIMEOUT)
    )


def test_every_event_after_the_close_is_ignored() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    assert playbook >> ClientCloses() << act.Close(EndReason.CLIENT_CLOSED)
    assert (
        playbook
        >> ClientSends(b"NOOP\r\n")
        >> ServerSends(b"200 ok\r\n")
        >> ServerCloses()
        >> ClientCloses()
        >> TimesOut("client")
        >> TimesOut("server")
        >> ServerUnavailable("late")
        >> ServerConnected()
        >> ClientListenerReady(LISTENER)
        >> ClientListenerFails("late")
        >> ClientListenerRefused()
        >> ServerListenerReady(SERVER_LISTENER)
        >> ServerListenerFails("late")
        >> ClientTlsStarted()
        >> ClientTlsFails("late")
        >> DataDone()
    )
    assert state(playbook) == CLOSED


def test_events_out_of_phase_are_ignored() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ServerConnected()
        >> ClientListenerReady(LISTENER)
        >> ClientListenerFails("stray")
        >> ClientListenerRefused()
        >> ServerListenerReady(SERVER_LISTENER)
        >> ServerListenerFails("stray")
        >> ClientTlsStarted()
        >> DataDone()
        >> DataDone("stray")
    )
    assert state(playbook) == IDLE
    assert (
        playbook
        >> ClientSends(b"NOOP\r\n")
        << act.SendToServer(b"NOOP\r\n")
        >> ClientListenerReady(LISTENER)
        >> ServerListenerReady(SERVER_LISTENER)
        >> DataDone()
    )
    assert state(playbook) == COMMAND


def test_replies_before_any_command_in_a_new_session_pass() -> None:
    playbook = new()
    assert playbook >> Start() << act.ConnectServer(None)
    assert playbook >> ServerSends(b"200 early\r\n") << act.SendToClient(b"200 early\r\n")


# ---------------------------------------------------------------- FEAT


def test_feat_hides_security_and_adds_extended_modes() -> None:
    assert (
        logged_in()
        >> ClientSends(b"FEAT\r\n")
        << act.SendToServer(b"FEAT\r\n")
        >> ServerSends(
            b"211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n MDTM\r\n EPSV\r\n211 End\r\n"
        )
        << act.SendToClient(b"211-Features:\r\n MDTM\r\n EPSV\r\n EPRT\r\n211 End\r\n")
    )


def test_feat_refused_by_the_server_passes_untouched() -> None:
    assert (
        connected()
        >> ClientSends(b"FEAT\r\n")
        << act.SendToServer(b"FEAT\r\n")
        >> ServerSends(b"500 no FEAT\r\n")
        << act.SendToClient(b"500 no FEAT\r\n")
    )


def test_auth_is_refused_while_tls_is_off() -> None:
    assert (
        connected()
        >> ClientSends(b"AUTH TLS\r\n")
        << act.SendToClient(b"502 TLS is not enabled on this frontend.\r\n")
    )


# ---------------------------------------------------------------- command log


def test_logged_commands_mask_the_secrets() -> None:
    playbook = connected(SessionPolicy(log_commands=True))
    assert (
        playbook
        >> ClientSends(b"USER alice\r\n")
        << act.CommandSeen("USER alice")
        << act.SendToServer(b"USER alice\r\n")
        >> ServerSends(b"331 pw\r\n")
        << act.SendToClient(b"331 pw\r\n")
        >> ClientSends(b"PASS hunter2\r\n")
        << act.CommandSeen("PASS ****")
        << act.SendToServer(b"PASS hunter2\r\n")
        >> ServerSends(b"332 acct\r\n")
        << act.SendToClient(b"332 acct\r\n")
        >> ClientSends(b"ACCT hunter3\r\n")
        << act.CommandSeen("ACCT ****")
        << act.SendToServer(b"ACCT hunter3\r\n")
        >> ServerSends(b"230 in\r\n")
        << act.SendToClient(b"230 in\r\n")
        << act.LoginResult(ok=True, user=b"alice")
        # Refused commands are logged too; unparsable lines are not commands.
        >> ClientSends(b"MIC x\r\n4x\r\n")
        << act.CommandSeen("MIC x")
        << act.SendToClient(b"502 MIC is not supported.\r\n")
        << act.SendToClient(b"500 Syntax error, command unrecognized\r\n")
    )


def test_commands_are_logged_before_the_server_is_chosen() -> None:
    assert (
        new(SessionPolicy(route_on_user=True, log_commands=True))
        >> Start()
        << act.SendToClient(BANNER)
        >> ClientSends(b"SYST\r\nUSER bob\r\n")
        << act.CommandSeen("SYST")
        << act.SendToClient(b"215 UNIX Type: L8\r\n")
        << act.CommandSeen("USER bob")
        << act.ConnectServer(b"bob")
    )


def test_an_abor_that_acts_at_once_is_logged_too() -> None:
    playbook = connected(SessionPolicy(log_commands=True))
    assert (
        playbook
        >> ClientSends(b"USER alice\r\n")
        << act.CommandSeen("USER alice")
        << act.SendToServer(b"USER alice\r\n")
        >> ServerSends(b"230 Welcome\r\n")
        << act.SendToClient(b"230 Welcome\r\n")
        << act.LoginResult(ok=True, user=b"alice")
        >> ClientSends(b"PASV\r\n")
        << act.CommandSeen("PASV")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(SERVER_227)
        << act.SendToClient(OUR_227)
        >> ClientSends(b"RETR f\r\n")
        << act.CommandSeen("RETR f")
        << act.StartTransfer(act.ClientPassive("PASV"), SERVER_PASSIVE, upload=False)
        << act.SendToServer(b"RETR f\r\n")
        >> ClientSends(b"ABOR\r\n")
        << act.CommandSeen("ABOR")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
    )


def test_commands_are_not_logged_by_default() -> None:
    assert connected() >> ClientSends(b"USER alice\r\n") << act.SendToServer(b"USER alice\r\n")


def test_a_command_pipelined_behind_a_failed_client_listener_runs() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"PASV\r\nNOOP\r\n")
        << act.OpenClientListener()
        >> ClientListenerFails("no free port")
        << act.CloseData("cannot open a passive listener: no free port")
        << act.SendToClient(CANT_OPEN)
        << act.SendToServer(b"NOOP\r\n")
    )
    assert state(playbook) == COMMAND


def test_a_command_pipelined_behind_a_failed_server_listener_runs() -> None:
    playbook = logged_in(SessionPolicy(server_data_mode="active"))
    assert (
        playbook
        >> ClientSends(b"PORT 127,0,0,100,100,100\r\nNOOP\r\n")
        << act.OpenServerListener()
        >> ServerListenerFails("EMFILE")
        << act.CloseData("cannot open a listener for the server: EMFILE")
        << act.SendToClient(CANT_OPEN)
        << act.SendToServer(b"NOOP\r\n")
    )
    assert state(playbook) == COMMAND


def test_abor_pipelined_behind_the_transfer_command_acts_at_once() -> None:
    playbook = logged_in()
    passive_ready(playbook)
    assert (
        playbook
        >> ClientSends(b"RETR f\r\nABOR\r\n")
        << act.StartTransfer(act.ClientPassive("PASV"), SERVER_PASSIVE, upload=False)
        << act.SendToServer(b"RETR f\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
    )
    assert state(playbook) == transferring(TransferPhase.ABORT_BEFORE_START)
    assert (
        playbook
        >> ServerSends(b"150 ok\r\n226 done\r\n")
        >> ServerSends(b"226 abor ok\r\n")
        << act.SendToClient(ABORT_OK_226)
    )
    assert state(playbook) == IDLE


def test_abor_pipelined_behind_a_transfer_that_waits_for_its_data_setup_acts_at_once() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"PASV\r\nRETR f\r\nABOR\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(SERVER_227)
        << act.SendToClient(OUR_227)
        << act.StartTransfer(act.ClientPassive("PASV"), SERVER_PASSIVE, upload=False)
        << act.SendToServer(b"RETR f\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
    )
    assert state(playbook) == transferring(TransferPhase.ABORT_BEFORE_START)


def test_listener_events_during_the_servers_setup_are_ignored() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"PASV\r\n")
        >> ClientListenerReady(HostPort.of("127.0.0.1", 40002))
        >> ServerListenerReady(SERVER_LISTENER)
        >> ClientListenerFails("stray")
        >> ServerListenerFails("stray")
        >> ServerSends(SERVER_227)
        << act.SendToClient(OUR_227)
    )


def test_the_lowest_unprivileged_port_is_accepted() -> None:
    assert (
        logged_in()
        >> ClientSends(b"PORT 127,0,0,100,4,0\r\n")
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(SERVER_227)
        << act.SendToClient(b"200 PORT command successful.\r\n")
    )


def test_failed_data_keeps_a_3xx_reply() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ServerSends(b"300 odd\r\n")
        >> DataDone("reset")
        << act.SendToClient(b"300 odd\r\n")
        << done(300)
        << act.CloseData("transfer complete")
    )


def test_what_was_held_behind_a_final_reply_is_dropped_with_it_at_abor() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ServerSends(b"226 done\r\n200 later\r\n")
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
        >> ClientCloses()
        << act.Close(EndReason.CLIENT_CLOSED)
    )


# ------------------------------------------------------------ graceful stop

SHUTTING_DOWN = b"421 Service shutting down.\r\n"


def test_stopping_ends_an_idle_session_at_once() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> StopGracefully()
        << act.SendToClient(SHUTTING_DOWN)
        << act.Close(EndReason.SHUTDOWN)
        >> StopGracefully()
    )
    assert state(playbook) == CLOSED


def test_stopping_lets_a_command_in_flight_have_its_reply_first() -> None:
    playbook = logged_in()
    assert (
        playbook
        >> ClientSends(b"CWD x\r\nPWD\r\n")
        << act.SendToServer(b"CWD x\r\n")
        >> StopGracefully()
        >> ServerSends(b"250 ok\r\n")
        << act.SendToClient(b"250 ok\r\n")
        << act.SendToClient(SHUTTING_DOWN)
        << act.Close(EndReason.SHUTDOWN)
    )
    assert state(playbook) == replace(CLOSED, backlog=1)


def test_stopping_lets_a_transfer_finish_then_ends_the_session() -> None:
    playbook = logged_in()
    running(playbook)
    assert playbook >> StopGracefully() >> ServerSends(b"226 done\r\n")
    assert state(playbook) == transferring(TransferPhase.REPLY_HELD)
    assert (
        playbook
        >> DataDone()
        << act.SendToClient(b"226 done\r\n")
        << done(226)
        << act.CloseData("transfer complete")
        << act.SendToClient(SHUTTING_DOWN)
        << act.Close(EndReason.SHUTDOWN)
    )


def test_stopping_before_user_when_routing_on_user_ends_at_once() -> None:
    playbook = new(ON_USER)
    assert (
        playbook
        >> Start()
        << act.SendToClient(BANNER)
        >> StopGracefully()
        << act.SendToClient(SHUTTING_DOWN)
        << act.Close(EndReason.SHUTDOWN)
    )


def test_stopping_while_the_server_connects_ends_once_it_is_there() -> None:
    playbook = new()
    assert (
        playbook
        >> Start()
        << act.ConnectServer(None)
        >> StopGracefully()
        >> DEFAULT_SERVER
        << act.SendToClient(BANNER)
        << act.SendToClient(SHUTTING_DOWN)
        << act.Close(EndReason.SHUTDOWN)
    )


def test_stopping_now_ends_a_running_transfer_with_426_then_421() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> StopGracefully()
        >> StopNow()
        << act.CloseData("balancer shutting down")
        << act.SendToClient(b"426 Service shutting down; transfer aborted.\r\n")
        << done(426)
        << act.SendToClient(SHUTTING_DOWN)
        << act.Close(EndReason.SHUTDOWN)
        >> StopNow()
        >> DataDone()
    )


def test_stopping_now_during_an_abort_only_closes() -> None:
    playbook = logged_in()
    running(playbook)
    assert (
        playbook
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(ABORTED_426)
        << done(426)
        >> StopNow()
        << act.SendToClient(SHUTTING_DOWN)
        << act.Close(EndReason.SHUTDOWN)
    )
