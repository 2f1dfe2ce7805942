"""FTPS in the control-session core: AUTH, PBSZ, PROT, FEAT and the TLS policy (no sockets).

Every test is a Playbook: each event in, and the exact, whole, ordered list of
actions out.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftplb.proto import actions as act
from ftplb.proto.addresses import HostPort
from ftplb.proto.control import ControlSession, SessionPolicy
from ftplb.proto.outcomes import EndReason
from ftplb.proto.phases import Phase
from tests.unit.playbook import (
    ClientListenerReady,
    ClientSends,
    ClientTlsFails,
    ClientTlsStarted,
    DataDone,
    Playbook,
    ServerCloses,
    ServerConnected,
    ServerSends,
    Start,
    TimesOut,
)

CLIENT = "127.0.0.100"
LISTENER = HostPort.of("127.0.0.1", 40001)
SERVER_PASSIVE = act.ServerPassive(HostPort.of("127.0.0.11", 51210), "PASV")

EXPLICIT = SessionPolicy(client_tls="explicit")
IMPLICIT = SessionPolicy(client_tls="implicit")
REQUIRED = SessionPolicy(client_tls="explicit", tls_required=True)

BANNER = b"220 ftplb ready\r\n"
AUTH_OK = b"234 AUTH TLS successful.\r\n"
PBSZ_OK = b"200 PBSZ=0\r\n"
TLS_OFF = b"502 TLS is not enabled on this frontend.\r\n"
LOGIN_NEEDS_TLS = b"530 Non-anonymous sessions must use encryption (AUTH TLS).\r\n"
DATA_NEEDS_TLS = b"521 Data connections must be encrypted.\r\n"
OWN_FEAT_TLS = (
    b"211-Features:\r\n EPRT\r\n EPSV\r\n PASV\r\n REST STREAM\r\n"
    b" AUTH TLS\r\n PBSZ\r\n PROT\r\n211 End\r\n"
)


def protection(playbook: Playbook) -> tuple[bool, bool]:
    """(control protected, data protected)."""
    session = playbook.session
    return session.client_control_protected, session.client_data_protected


def phase(playbook: Playbook) -> Phase:
    return playbook.session.phase


def connected(policy: SessionPolicy) -> Playbook:
    playbook = Playbook(ControlSession(policy, CLIENT, 1))
    assert (
        playbook
        >> Start()
        << act.ConnectServer(None)
        >> ServerConnected()
        << act.SendToClient(BANNER)
    )
    assert playbook.session.server_tls is policy.server_tls
    return playbook


def secured(policy: SessionPolicy = EXPLICIT) -> Playbook:
    """AUTH TLS accepted and the handshake done."""
    playbook = connected(policy)
    assert playbook >> ClientSends(b"AUTH TLS\r\n") << act.SendToClient(AUTH_OK) << act.StartTls()
    assert phase(playbook) is Phase.TLS_HANDSHAKE
    assert protection(playbook) == (False, False)
    assert playbook >> ClientTlsStarted()
    assert phase(playbook) is Phase.READY
    assert protection(playbook) == (True, False)
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
        >> ServerSends(b"230 Welcome\r\n")
        << act.SendToClient(b"230 Welcome\r\n")
        << act.LoginResult(ok=True, user=b"alice")
    )
    assert playbook.session.logged_in


def prepare_passive(playbook: Playbook) -> None:
    assert (
        playbook
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(LISTENER)
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(b"227 Entering Passive Mode (127,0,0,11,200,10).\r\n")
        << act.SendToClient(b"227 Entering Passive Mode (127,0,0,1,156,65).\r\n")
    )


def start_transfer(playbook: Playbook, client_tls: bool, server_tls: bool) -> None:
    prepare_passive(playbook)
    assert (
        playbook
        >> ClientSends(b"RETR file\r\n")
        << act.StartTransfer(
            act.ClientPassive("PASV"),
            SERVER_PASSIVE,
            upload=False,
            client_tls=client_tls,
            server_tls=server_tls,
        )
        << act.SendToServer(b"RETR file\r\n")
    )


def finish_transfer(playbook: Playbook) -> None:
    assert (
        playbook
        >> ServerSends(b"150 here\r\n")
        << act.SendToClient(b"150 here\r\n")
        >> DataDone()
        >> ServerSends(b"226 done\r\n")
        << act.SendToClient(b"226 done\r\n")
        << act.TransferDone("RETR", b"file", 226, "PASV", "PASV")
        << act.CloseData("transfer complete")
    )


def protect_data(playbook: Playbook) -> None:
    assert (
        playbook
        >> ClientSends(b"PBSZ 0\r\nPROT P\r\n")
        << act.SendToClient(PBSZ_OK)
        << act.SendToClient(b"200 Protection level set to P.\r\n")
    )
    assert protection(playbook) == (True, True)


# ---------------------------------------------------------------- AUTH


@pytest.mark.parametrize("mechanism", [b"TLS", b"tls", b"SSL", b"TLS-C", b"TLS ", b" ssl"])
def test_auth_answers_234_and_asks_for_a_handshake(mechanism: bytes) -> None:
    playbook = connected(EXPLICIT)
    assert (
        playbook
        >> ClientSends(b"AUTH " + mechanism + b"\r\n")
        << act.SendToClient(AUTH_OK)
        << act.StartTls()
    )
    assert protection(playbook) == (False, False)
    assert phase(playbook) is Phase.TLS_HANDSHAKE
    assert not playbook.session.idle


def test_auth_with_an_unknown_mechanism_is_504() -> None:
    playbook = connected(EXPLICIT)
    assert (
        playbook
        >> ClientSends(b"AUTH GSSAPI\r\n")
        << act.SendToClient(b"504 AUTH GSSAPI is not supported; use AUTH TLS.\r\n")
    )
    assert protection(playbook) == (False, False)


def test_auth_under_tls_is_503() -> None:
    assert (
        secured() >> ClientSends(b"AUTH TLS\r\n") << act.SendToClient(b"503 Already using TLS.\r\n")
    )


def test_auth_in_implicit_mode_is_503() -> None:
    playbook = connected(IMPLICIT)
    assert protection(playbook) == (True, False)
    assert (
        playbook >> ClientSends(b"AUTH TLS\r\n") << act.SendToClient(b"503 Already using TLS.\r\n")
    )


@pytest.mark.parametrize("line", [b"AUTH TLS", b"PBSZ 0", b"PROT P", b"CCC"])
def test_security_commands_without_tls_are_502_as_before(line: bytes) -> None:
    assert connected(SessionPolicy()) >> ClientSends(line + b"\r\n") << act.SendToClient(TLS_OFF)


def test_commands_pipelined_after_auth_are_discarded() -> None:
    playbook = connected(EXPLICIT)
    assert (
        playbook
        >> ClientSends(b"AUTH TLS\r\nUSER mallory\r\nPASS x\r\nDELE important\r\nPART")
        << act.SendToClient(AUTH_OK)
        << act.StartTls()
    )
    assert playbook.session.backlog == 0
    # Anything that arrives before the handshake ends is dropped too.
    assert playbook >> ClientSends(b"IAL\r\nRMD /\r\n") >> ClientTlsStarted()
    assert playbook.session.backlog == 0
    # The first command after the handshake is parsed on a clean slate.
    assert playbook >> ClientSends(b"NOOP\r\n") << act.SendToServer(b"NOOP\r\n")


def test_auth_queued_behind_a_busy_command_still_drops_what_follows() -> None:
    playbook = connected(EXPLICIT)
    assert (
        playbook
        >> ClientSends(b"NOOP\r\nAUTH TLS\r\nDELE x\r\n")
        << act.SendToServer(b"NOOP\r\n")
        >> ServerSends(b"200 NOOP ok\r\n")
        << act.SendToClient(b"200 NOOP ok\r\n")
        << act.SendToClient(AUTH_OK)
        << act.StartTls()
        >> ClientTlsStarted()
    )
    assert playbook.session.idle


def test_server_replies_during_the_handshake_wait_for_it() -> None:
    playbook = connected(EXPLICIT)
    assert (
        playbook
        >> ClientSends(b"AUTH TLS\r\n")
        << act.SendToClient(AUTH_OK)
        << act.StartTls()
        # An unsolicited reply must not be written in the clear mid-handshake.
        >> ServerSends(b"200 hello\r\n")
        >> ServerSends(b"200 again\r\n")
        >> ClientTlsStarted()
        << act.SendToClient(b"200 hello\r\n")
        << act.SendToClient(b"200 again\r\n")
        # Said once only.
        >> ClientTlsStarted()
    )


def test_failed_handshake_closes_without_words() -> None:
    playbook = connected(EXPLICIT)
    assert (
        playbook
        >> ClientSends(b"AUTH TLS\r\n")
        << act.SendToClient(AUTH_OK)
        << act.StartTls()
        >> ServerSends(b"200 hello\r\n")
        >> ClientTlsFails("bad record")
        << act.Close(EndReason.CLIENT_TLS_FAILED, "bad record")
        >> ClientTlsStarted()
    )
    assert playbook.session.closed


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ServerCloses(), EndReason.SERVER_CLOSED),
        (TimesOut("client"), EndReason.CLIENT_TIMEOUT),
        (TimesOut("server"), EndReason.SERVER_TIMEOUT),
    ],
)
def test_a_close_during_the_handshake_says_nothing_in_the_clear(
    event: object, reason: EndReason
) -> None:
    playbook = connected(EXPLICIT)
    assert (
        playbook
        >> ClientSends(b"AUTH TLS\r\n")
        << act.SendToClient(AUTH_OK)
        << act.StartTls()
        >> event  # type: ignore[operator]
        << act.Close(reason)
    )


def test_auth_before_the_server_is_chosen_by_user() -> None:
    playbook = Playbook(
        ControlSession(SessionPolicy(route_on_user=True, client_tls="explicit"), CLIENT, 1)
    )
    assert (
        playbook
        >> Start()
        << act.SendToClient(BANNER)
        >> ClientSends(b"AUTH TLS\r\nUSER injected\r\n")
        << act.SendToClient(AUTH_OK)
        << act.StartTls()
        >> ClientTlsStarted()
    )
    assert playbook.session.user is None
    assert (
        playbook
        >> ClientSends(b"PBSZ 0\r\nPROT P\r\n")
        << act.SendToClient(PBSZ_OK)
        << act.SendToClient(b"200 Protection level set to P.\r\n")
        >> ClientSends(b"USER alice\r\n")
        << act.ConnectServer(b"alice")
    )


# ---------------------------------------------------------------- PBSZ / PROT


def test_pbsz_and_prot_need_auth_first() -> None:
    assert (
        connected(EXPLICIT)
        >> ClientSends(b"PBSZ 0\r\n")
        << act.SendToClient(b"503 PBSZ needs AUTH first.\r\n")
        >> ClientSends(b"PROT P\r\n")
        << act.SendToClient(b"503 PROT needs AUTH first.\r\n")
    )


def test_prot_needs_pbsz_first() -> None:
    playbook = secured()
    assert (
        playbook
        >> ClientSends(b"PROT P\r\n")
        << act.SendToClient(b"503 PROT needs PBSZ first.\r\n")
    )
    assert protection(playbook) == (True, False)


def test_pbsz_then_prot_p_then_prot_c() -> None:
    playbook = secured()
    protect_data(playbook)
    assert (
        playbook
        >> ClientSends(b"PROT c\r\n")
        << act.SendToClient(b"200 Protection level set to C.\r\n")
    )
    assert protection(playbook) == (True, False)
    assert (
        playbook
        >> ClientSends(b"PROT  p \r\n")
        << act.SendToClient(b"200 Protection level set to P.\r\n")
    )
    assert protection(playbook) == (True, True)


@pytest.mark.parametrize("line", [b"PBSZ 0", b"PBSZ 16384", b"PBSZ  7 "])
def test_pbsz_accepts_any_size_and_answers_zero(line: bytes) -> None:
    assert secured() >> ClientSends(line + b"\r\n") << act.SendToClient(PBSZ_OK)


@pytest.mark.parametrize("line", [b"PBSZ lots", b"PBSZ", b"PBSZ -1"])
def test_pbsz_without_a_number_is_501(line: bytes) -> None:
    playbook = secured()
    assert (
        playbook
        >> ClientSends(line + b"\r\n")
        << act.SendToClient(b"501 PBSZ needs a number.\r\n")
        # The buffer size is still unset.
        >> ClientSends(b"PROT P\r\n")
        << act.SendToClient(b"503 PROT needs PBSZ first.\r\n")
    )


@pytest.mark.parametrize(
    ("level", "reply"),
    [
        (b"S", b"536 PROT S is not supported; use P or C.\r\n"),
        (b"E", b"536 PROT E is not supported; use P or C.\r\n"),
        (b"X", b"504 PROT X is not recognized.\r\n"),
        (b"", b"504 PROT  is not recognized.\r\n"),
    ],
)
def test_prot_levels_we_cannot_offer(level: bytes, reply: bytes) -> None:
    playbook = secured()
    protect_data(playbook)
    assert playbook >> ClientSends(b"PROT " + level + b"\r\n") << act.SendToClient(reply)
    assert protection(playbook) == (True, True)


def test_ccc_is_refused() -> None:
    playbook = secured()
    assert (
        playbook
        >> ClientSends(b"CCC\r\n")
        << act.SendToClient(b"533 CCC is not allowed; the session stays encrypted.\r\n")
    )
    assert protection(playbook) == (True, False)


def test_implicit_accepts_pbsz_and_prot_at_once() -> None:
    playbook = connected(IMPLICIT)
    protect_data(playbook)


def test_rein_is_refused_with_tls() -> None:
    playbook = secured()
    log_in(playbook)
    assert (
        playbook
        >> ClientSends(b"REIN\r\n")
        << act.SendToClient(b"502 REIN is not supported with TLS.\r\n")
    )
    assert playbook.session.logged_in


# ---------------------------------------------------------------- transfers


def test_start_transfer_says_which_legs_are_tls() -> None:
    playbook = secured(SessionPolicy(client_tls="explicit", server_tls=True))
    log_in(playbook)
    start_transfer(playbook, client_tls=False, server_tls=True)
    finish_transfer(playbook)
    protect_data(playbook)
    start_transfer(playbook, client_tls=True, server_tls=True)


def test_offload_transfers_are_plain_towards_the_server() -> None:
    playbook = secured()
    log_in(playbook)
    protect_data(playbook)
    start_transfer(playbook, client_tls=True, server_tls=False)


# ---------------------------------------------------------------- tls_required


@pytest.mark.parametrize("line", [b"USER alice", b"PASS secret", b"ACCT x"])
def test_required_refuses_login_before_auth(line: bytes) -> None:
    assert connected(REQUIRED) >> ClientSends(line + b"\r\n") << act.SendToClient(LOGIN_NEEDS_TLS)


def test_required_lets_other_commands_pass_before_auth() -> None:
    assert (
        connected(REQUIRED)
        >> ClientSends(b"SYST\r\n")
        << act.SendToServer(b"SYST\r\n")
        >> ServerSends(b"215 UNIX\r\n")
        << act.SendToClient(b"215 UNIX\r\n")
    )


def test_required_refuses_login_before_auth_when_routing_on_user() -> None:
    policy = SessionPolicy(route_on_user=True, client_tls="explicit", tls_required=True)
    assert (
        Playbook(ControlSession(policy, CLIENT, 1))
        >> Start()
        << act.SendToClient(BANNER)
        >> ClientSends(b"USER alice\r\n")
        << act.SendToClient(LOGIN_NEEDS_TLS)
    )


@pytest.mark.parametrize("verb", [b"RETR", b"LIST", b"NLST", b"MLSD", b"STOR", b"STOU", b"APPE"])
def test_required_refuses_clear_data_with_521(verb: bytes) -> None:
    playbook = secured(REQUIRED)
    log_in(playbook)
    prepare_passive(playbook)
    assert playbook >> ClientSends(verb + b" file\r\n") << act.SendToClient(DATA_NEEDS_TLS)
    protect_data(playbook)
    assert (
        playbook
        >> ClientSends(verb + b" file\r\n")
        << act.StartTransfer(
            act.ClientPassive("PASV"),
            SERVER_PASSIVE,
            upload=verb in (b"STOR", b"STOU", b"APPE"),
            client_tls=True,
        )
        << act.SendToServer(verb + b" file\r\n")
    )


def test_required_login_then_prot_c_is_refused_transfers() -> None:
    playbook = secured(REQUIRED)
    protect_data(playbook)
    log_in(playbook)
    assert (
        playbook
        >> ClientSends(b"PROT C\r\n")
        << act.SendToClient(b"200 Protection level set to C.\r\n")
    )
    prepare_passive(playbook)
    assert playbook >> ClientSends(b"LIST\r\n") << act.SendToClient(DATA_NEEDS_TLS)


def test_required_with_implicit_still_wants_prot_p() -> None:
    playbook = connected(SessionPolicy(client_tls="implicit", tls_required=True))
    log_in(playbook)
    prepare_passive(playbook)
    assert playbook >> ClientSends(b"LIST\r\n") << act.SendToClient(DATA_NEEDS_TLS)


def test_without_required_clear_data_is_allowed_on_a_tls_frontend() -> None:
    playbook = secured()
    log_in(playbook)
    start_transfer(playbook, client_tls=False, server_tls=False)


# ---------------------------------------------------------------- FEAT


def test_feat_lists_tls_features_from_ftplb() -> None:
    assert (
        connected(EXPLICIT)
        >> ClientSends(b"FEAT\r\n")
        << act.SendToServer(b"FEAT\r\n")
        >> ServerSends(b"211-Features:\r\n MDTM\r\n AUTH SSL\r\n PROT\r\n211 End\r\n")
        << act.SendToClient(
            b"211-Features:\r\n MDTM\r\n EPRT\r\n EPSV\r\n"
            b" AUTH TLS\r\n PBSZ\r\n PROT\r\n211 End\r\n"
        )
    )


def test_feat_without_tls_hides_them() -> None:
    assert (
        connected(SessionPolicy())
        >> ClientSends(b"FEAT\r\n")
        << act.SendToServer(b"FEAT\r\n")
        >> ServerSends(b"211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n211 End\r\n")
        << act.SendToClient(b"211-Features:\r\n EPRT\r\n EPSV\r\n211 End\r\n")
    )


@pytest.mark.parametrize("tls", ["explicit", "implicit"])
def test_own_feat_before_the_server_lists_tls(tls: str) -> None:
    policy = SessionPolicy(route_on_user=True, client_tls=tls)  # type: ignore[arg-type]
    assert (
        Playbook(ControlSession(policy, CLIENT, 1))
        >> Start()
        << act.SendToClient(BANNER)
        >> ClientSends(b"FEAT\r\n")
        << act.SendToClient(OWN_FEAT_TLS)
    )


# ---------------------------------------------------------------- properties


@given(
    st.lists(st.binary(max_size=20), max_size=6),
    st.integers(min_value=0, max_value=40),
)
def test_nothing_sent_after_auth_in_the_clear_ever_reaches_the_server(
    tail: list[bytes], split: int
) -> None:
    """Whatever follows AUTH before the handshake, and however it is split, is dropped."""
    playbook = connected(EXPLICIT)
    stream = b"AUTH TLS\r\n" + b"".join(t + b"\r\n" for t in tail)
    first, rest = stream[:split], stream[split:]
    if len(first) >= len(b"AUTH TLS\r\n"):
        playbook >> ClientSends(first) << act.SendToClient(AUTH_OK) << act.StartTls()
        playbook >> ClientSends(rest)
    else:
        playbook >> ClientSends(first)
        playbook >> ClientSends(rest) << act.SendToClient(AUTH_OK) << act.StartTls()
    assert playbook >> ClientTlsStarted()
    assert playbook.session.backlog == 0
    assert playbook >> ClientSends(b"NOOP\r\n") << act.SendToServer(b"NOOP\r\n")


def test_an_undecodable_auth_mechanism_is_shown_escaped() -> None:
    assert (
        connected(EXPLICIT)
        >> ClientSends(b"AUTH T\xffS\r\n")
        << act.SendToClient(b"504 AUTH T\\xffS is not supported; use AUTH TLS.\r\n")
    )


def test_an_undecodable_prot_level_is_shown_escaped() -> None:
    playbook = secured()
    protect_data(playbook)
    assert (
        playbook
        >> ClientSends(b"PROT \xe9\r\n")
        << act.SendToClient(b"504 PROT \\xe9 is not recognized.\r\n")
    )
