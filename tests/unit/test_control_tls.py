"""FTPS in the control-session core: AUTH, PBSZ, PROT, FEAT and the TLS policy (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftplb.proto import actions as act
from ftplb.proto.addresses import HostPort
from ftplb.proto.control import ControlSession, SessionPolicy

CLIENT = "127.0.0.100"
SERVER = "127.0.0.11"
LISTENER = HostPort.of("127.0.0.1", 40001)

EXPLICIT = SessionPolicy(client_tls="explicit")
IMPLICIT = SessionPolicy(client_tls="implicit")
REQUIRED = SessionPolicy(client_tls="explicit", tls_required=True)


def to_client(actions: list[act.Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, act.SendToClient))


def to_server(actions: list[act.Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, act.SendToServer))


def codes(actions: list[act.Action]) -> list[bytes]:
    return [line[:3] for line in to_client(actions).split(b"\r\n") if line[:3].isdigit()]


def connected(policy: SessionPolicy) -> ControlSession:
    session = ControlSession(policy, CLIENT, 1)
    assert session.start() == [act.ConnectServer(None)]
    assert to_client(session.server_connected(SERVER, 1)) == b"220 ftplb ready\r\n"
    return session


def secured(policy: SessionPolicy = EXPLICIT) -> ControlSession:
    """AUTH TLS accepted and the handshake done."""
    session = connected(policy)
    out = session.client_data(b"AUTH TLS\r\n")
    assert to_client(out) == b"234 AUTH TLS successful.\r\n"
    assert isinstance(out[-1], act.StartTls)
    assert session.client_tls_started() == []
    assert session.client_control_protected
    return session


def log_in(session: ControlSession) -> None:
    assert to_server(session.client_data(b"USER alice\r\n")) == b"USER alice\r\n"
    session.server_data(b"331 Password please\r\n")
    assert to_server(session.client_data(b"PASS secret\r\n")) == b"PASS secret\r\n"
    session.server_data(b"230 Welcome\r\n")
    assert session.logged_in


def start_transfer(session: ControlSession) -> act.StartTransfer:
    session.client_data(b"PASV\r\n")
    session.client_listener_ready(LISTENER)
    session.server_data(b"227 Entering Passive Mode (127,0,0,11,200,10).\r\n")
    out = session.client_data(b"RETR file\r\n")
    starts = [a for a in out if isinstance(a, act.StartTransfer)]
    assert len(starts) == 1, out
    assert to_server(out) == b"RETR file\r\n"
    return starts[0]


# ---------------------------------------------------------------- AUTH


@pytest.mark.parametrize("mechanism", [b"TLS", b"tls", b"SSL", b"TLS-C", b"TLS "])
def test_auth_answers_234_and_asks_for_a_handshake(mechanism: bytes) -> None:
    session = connected(EXPLICIT)
    out = session.client_data(b"AUTH " + mechanism + b"\r\n")
    assert to_client(out).startswith(b"234 ")
    assert out[-1] == act.StartTls()
    assert to_server(out) == b""
    assert not session.client_control_protected


def test_auth_with_an_unknown_mechanism_is_504() -> None:
    session = connected(EXPLICIT)
    out = session.client_data(b"AUTH GSSAPI\r\n")
    assert codes(out) == [b"504"]
    assert not any(isinstance(a, act.StartTls) for a in out)


def test_auth_under_tls_is_503() -> None:
    session = secured()
    assert codes(session.client_data(b"AUTH TLS\r\n")) == [b"503"]


def test_auth_in_implicit_mode_is_503() -> None:
    session = connected(IMPLICIT)
    assert session.client_control_protected
    assert codes(session.client_data(b"AUTH TLS\r\n")) == [b"503"]


def test_security_commands_without_tls_are_502_as_before() -> None:
    session = connected(SessionPolicy())
    for line in (b"AUTH TLS", b"PBSZ 0", b"PROT P", b"CCC"):
        out = session.client_data(line + b"\r\n")
        assert codes(out) == [b"502"], line
        assert to_server(out) == b""


def test_commands_pipelined_after_auth_are_discarded() -> None:
    session = connected(EXPLICIT)
    out = session.client_data(b"AUTH TLS\r\nUSER mallory\r\nPASS x\r\nDELE important\r\nPART")
    assert codes(out) == [b"234"]
    assert to_server(out) == b""
    assert session.backlog == 0
    # Anything that arrives before the handshake ends is dropped too.
    assert session.client_data(b"IAL\r\nRMD /\r\n") == []
    assert session.client_tls_started() == []
    # The first command after the handshake is parsed on a clean slate.
    out = session.client_data(b"NOOP\r\n")
    assert to_server(out) == b"NOOP\r\n"


def test_auth_queued_behind_a_busy_command_still_drops_what_follows() -> None:
    session = connected(EXPLICIT)
    out = session.client_data(b"NOOP\r\nAUTH TLS\r\nDELE x\r\n")
    assert to_server(out) == b"NOOP\r\n"
    out = session.server_data(b"200 NOOP ok\r\n")
    assert codes(out) == [b"200", b"234"]
    assert to_server(out) == b""
    session.client_tls_started()
    assert session.idle


def test_server_replies_during_the_handshake_wait_for_it() -> None:
    session = connected(EXPLICIT)
    session.client_data(b"AUTH TLS\r\n")
    # An unsolicited reply must not be written in the clear mid-handshake.
    assert to_client(session.server_data(b"200 hello\r\n")) == b""
    assert to_client(session.client_tls_started()) == b"200 hello\r\n"


def test_failed_handshake_closes_without_words() -> None:
    session = connected(EXPLICIT)
    session.client_data(b"AUTH TLS\r\n")
    out = session.client_tls_failed("bad record")
    assert to_client(out) == b""
    assert isinstance(out[-1], act.Close)
    assert session.closed


def test_auth_before_the_server_is_chosen_by_user() -> None:
    session = ControlSession(SessionPolicy(route_on_user=True, client_tls="explicit"), CLIENT, 1)
    assert to_client(session.start()) == b"220 ftplb ready\r\n"
    out = session.client_data(b"AUTH TLS\r\nUSER injected\r\n")
    assert codes(out) == [b"234"]
    assert not any(isinstance(a, act.ConnectServer) for a in out)
    session.client_tls_started()
    assert session.user is None
    out = session.client_data(b"USER alice\r\n")
    assert out == [act.ConnectServer(b"alice")]


# ---------------------------------------------------------------- PBSZ / PROT


def test_pbsz_and_prot_need_auth_first() -> None:
    session = connected(EXPLICIT)
    assert codes(session.client_data(b"PBSZ 0\r\n")) == [b"503"]
    assert codes(session.client_data(b"PROT P\r\n")) == [b"503"]


def test_prot_needs_pbsz_first() -> None:
    session = secured()
    assert codes(session.client_data(b"PROT P\r\n")) == [b"503"]
    assert not session.client_data_protected


def test_pbsz_then_prot_p() -> None:
    session = secured()
    out = session.client_data(b"PBSZ 0\r\n")
    assert to_client(out) == b"200 PBSZ=0\r\n"
    assert to_server(out) == b""
    out = session.client_data(b"PROT P\r\n")
    assert codes(out) == [b"200"]
    assert to_server(out) == b""
    assert session.client_data_protected
    assert codes(session.client_data(b"PROT C\r\n")) == [b"200"]
    assert not session.client_data_protected


def test_pbsz_accepts_any_size_and_answers_zero() -> None:
    session = secured()
    assert to_client(session.client_data(b"PBSZ 16384\r\n")) == b"200 PBSZ=0\r\n"
    assert codes(session.client_data(b"PBSZ lots\r\n")) == [b"501"]


@pytest.mark.parametrize(("level", "code"), [(b"S", b"536"), (b"E", b"536"), (b"X", b"504")])
def test_prot_levels_we_cannot_offer(level: bytes, code: bytes) -> None:
    session = secured()
    session.client_data(b"PBSZ 0\r\n")
    assert codes(session.client_data(b"PROT " + level + b"\r\n")) == [code]
    assert not session.client_data_protected


def test_ccc_is_refused() -> None:
    session = secured()
    assert codes(session.client_data(b"CCC\r\n")) == [b"533"]
    assert session.client_control_protected


def test_implicit_accepts_pbsz_and_prot_at_once() -> None:
    session = connected(IMPLICIT)
    assert to_client(session.client_data(b"PBSZ 0\r\n")) == b"200 PBSZ=0\r\n"
    assert codes(session.client_data(b"PROT P\r\n")) == [b"200"]
    assert session.client_data_protected


def test_rein_is_refused_with_tls() -> None:
    session = secured()
    out = session.client_data(b"REIN\r\n")
    assert codes(out) == [b"502"]
    assert to_server(out) == b""


# ---------------------------------------------------------------- transfers


def test_start_transfer_says_which_legs_are_tls() -> None:
    session = secured(SessionPolicy(client_tls="explicit", server_tls=True))
    log_in(session)
    start = start_transfer(session)
    assert (start.client_tls, start.server_tls) == (False, True)
    session.server_data(b"150 here\r\n")
    session.data_done(None)
    session.server_data(b"226 done\r\n")
    session.client_data(b"PBSZ 0\r\nPROT P\r\n")
    start = start_transfer(session)
    assert (start.client_tls, start.server_tls) == (True, True)


def test_offload_transfers_are_plain_towards_the_server() -> None:
    session = secured()
    log_in(session)
    session.client_data(b"PBSZ 0\r\nPROT P\r\n")
    start = start_transfer(session)
    assert (start.client_tls, start.server_tls) == (True, False)


# ---------------------------------------------------------------- tls_required


def test_required_refuses_login_before_auth() -> None:
    session = connected(REQUIRED)
    for line in (b"USER alice", b"PASS secret"):
        out = session.client_data(line + b"\r\n")
        assert codes(out) == [b"530"]
        assert to_server(out) == b""


def test_required_refuses_login_before_auth_when_routing_on_user() -> None:
    policy = SessionPolicy(route_on_user=True, client_tls="explicit", tls_required=True)
    session = ControlSession(policy, CLIENT, 1)
    session.start()
    out = session.client_data(b"USER alice\r\n")
    assert codes(out) == [b"530"]
    assert not any(isinstance(a, act.ConnectServer) for a in out)


def test_required_refuses_clear_data_with_521() -> None:
    session = secured(REQUIRED)
    log_in(session)
    session.client_data(b"PASV\r\n")
    session.client_listener_ready(LISTENER)
    session.server_data(b"227 Entering Passive Mode (127,0,0,11,200,10).\r\n")
    out = session.client_data(b"RETR file\r\n")
    assert to_client(out) == b"521 Data connections must be encrypted.\r\n"
    assert to_server(out) == b""
    assert not any(isinstance(a, act.StartTransfer) for a in out)
    session.client_data(b"PBSZ 0\r\nPROT P\r\n")
    out = session.client_data(b"RETR file\r\n")
    assert to_server(out) == b"RETR file\r\n"


def test_required_with_implicit_still_wants_prot_p() -> None:
    session = connected(SessionPolicy(client_tls="implicit", tls_required=True))
    log_in(session)
    session.client_data(b"PASV\r\n")
    session.client_listener_ready(LISTENER)
    session.server_data(b"227 Entering Passive Mode (127,0,0,11,200,10).\r\n")
    assert codes(session.client_data(b"LIST\r\n")) == [b"521"]


# ---------------------------------------------------------------- FEAT


def test_feat_lists_tls_features_from_ftplb() -> None:
    session = connected(EXPLICIT)
    session.client_data(b"FEAT\r\n")
    out = session.server_data(b"211-Features:\r\n MDTM\r\n AUTH SSL\r\n PROT\r\n211 End\r\n")
    lines = to_client(out).split(b"\r\n")
    assert b" AUTH TLS" in lines and b" PBSZ" in lines and b" PROT" in lines
    assert b" AUTH SSL" not in lines
    assert b" MDTM" in lines


def test_feat_without_tls_hides_them() -> None:
    session = connected(SessionPolicy())
    session.client_data(b"FEAT\r\n")
    out = session.server_data(b"211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n211 End\r\n")
    assert b"AUTH" not in to_client(out) and b"PROT" not in to_client(out)


def test_own_feat_before_the_server_lists_tls() -> None:
    session = ControlSession(SessionPolicy(route_on_user=True, client_tls="implicit"), CLIENT, 1)
    session.start()
    text = to_client(session.client_data(b"FEAT\r\n"))
    assert b" AUTH TLS\r\n" in text and b" PBSZ\r\n" in text and b" PROT\r\n" in text


# ---------------------------------------------------------------- properties


@given(
    st.lists(st.binary(max_size=20), max_size=6),
    st.integers(min_value=0, max_value=40),
)
def test_nothing_sent_after_auth_in_the_clear_ever_reaches_the_server(
    tail: list[bytes], split: int
) -> None:
    """Whatever follows AUTH before the handshake, and however it is split, is dropped."""
    session = connected(EXPLICIT)
    stream = b"AUTH TLS\r\n" + b"".join(t + b"\r\n" for t in tail)
    outs = session.client_data(stream[:split]) + session.client_data(stream[split:])
    assert to_server(outs) == b""
    assert len([a for a in outs if isinstance(a, act.StartTls)]) == 1
    session.client_tls_started()
    assert session.backlog == 0
    assert to_server(session.client_data(b"NOOP\r\n")) == b"NOOP\r\n"
