"""The control-session state machine, driven by scripted events (no sockets, no loop)."""

from __future__ import annotations

import pytest

from ftplb.proto import actions as act
from ftplb.proto.addresses import HostPort
from ftplb.proto.control import ControlSession, SessionPolicy

CLIENT = "127.0.0.100"
SERVER = "127.0.0.11"
LISTENER = HostPort.of("127.0.0.1", 40001)


def sent_to_client(actions: list[act.Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, act.SendToClient))


def sent_to_server(actions: list[act.Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, act.SendToServer))


def of_type(actions: list[act.Action], kind: type) -> list[act.Action]:
    return [a for a in actions if isinstance(a, kind)]


def connected(policy: SessionPolicy | None = None, passive_family: int = 1) -> ControlSession:
    session = ControlSession(policy or SessionPolicy(), CLIENT, passive_family)
    assert session.start() == [act.ConnectServer(None)]
    out = session.server_connected(SERVER, 1)
    assert sent_to_client(out) == b"220 ftplb ready\r\n"
    return session


def logged_in(policy: SessionPolicy | None = None, passive_family: int = 1) -> ControlSession:
    session = connected(policy, passive_family)
    assert sent_to_server(session.client_data(b"USER alice\r\n")) == b"USER alice\r\n"
    assert sent_to_client(session.server_data(b"331 Password please\r\n")) == (
        b"331 Password please\r\n"
    )
    assert sent_to_server(session.client_data(b"PASS secret\r\n")) == b"PASS secret\r\n"
    assert not session.logged_in
    out = session.server_data(b"230 Welcome\r\n")
    assert sent_to_client(out) == b"230 Welcome\r\n"
    assert session.logged_in
    assert session.user == b"alice"
    return session


def passive_ready(session: ControlSession, verb: bytes = b"PASV") -> bytes:
    """Run a client PASV/EPSV through listener and server setup; return the client's reply."""
    out = session.client_data(verb + b"\r\n")
    assert of_type(out, act.OpenClientListener)
    out = session.client_listener_ready(LISTENER)
    assert sent_to_server(out) == b"PASV\r\n"
    return sent_to_client(
        session.server_data(b"227 Entering Passive Mode (127,0,0,11,200,10).\r\n")
    )


def test_greeting_comes_from_the_balancer_after_the_server_is_ready() -> None:
    session = ControlSession(SessionPolicy(banner="hello"), CLIENT, 1)
    assert session.start() == [act.ConnectServer(None)]
    assert sent_to_client(session.server_connected(SERVER, 1)) == b"220 hello\r\n"


def test_no_server_gives_421_and_close() -> None:
    session = ControlSession(SessionPolicy(), CLIENT, 1)
    session.start()
    out = session.server_unavailable("all down")
    assert sent_to_client(out).startswith(b"421 ")
    assert isinstance(out[-1], act.Close)


def test_commands_and_replies_pass_as_bytes() -> None:
    session = logged_in()
    path = b"CWD /d\xe9j\xe0 vu \r\n"  # Latin-1 bytes and a trailing space stay untouched
    assert sent_to_server(session.client_data(path)) == path
    reply = b"250-first\r\n250 caf\xe9\r\n"
    assert sent_to_client(session.server_data(reply)) == reply


def test_unknown_commands_pass_through() -> None:
    session = logged_in()
    assert sent_to_server(session.client_data(b"XYZZY plugh\r\n")) == b"XYZZY plugh\r\n"
    assert sent_to_client(session.server_data(b"500 Unknown\r\n")) == b"500 Unknown\r\n"


def test_multiline_reply_split_across_reads() -> None:
    session = logged_in()
    session.client_data(b"HELP\r\n")
    assert sent_to_client(session.server_data(b"214-The following\r\n 214 not the end\r\n")) == b""
    out = session.server_data(b"214 Help OK\r\n")
    assert sent_to_client(out) == b"214-The following\r\n 214 not the end\r\n214 Help OK\r\n"


def test_one_command_at_a_time_keeps_reply_order() -> None:
    session = logged_in()
    out = session.client_data(b"TYPE I\r\nNOOP\r\n")
    assert sent_to_server(out) == b"TYPE I\r\n"
    out = session.server_data(b"200 Type set\r\n")
    assert sent_to_client(out) == b"200 Type set\r\n"
    assert sent_to_server(out) == b"NOOP\r\n"


def test_pasv_answers_with_the_balancers_own_address() -> None:
    session = logged_in()
    assert passive_ready(session) == b"227 Entering Passive Mode (127,0,0,1,156,65).\r\n"


def test_epsv_answers_229_with_the_listener_port() -> None:
    session = logged_in()
    assert passive_ready(session, b"EPSV") == b"229 Entering Extended Passive Mode (|||40001|)\r\n"


def test_server_passive_address_is_its_control_address() -> None:
    session = logged_in()
    passive_ready(session)
    out = session.client_data(b"RETR f\r\n")
    start = of_type(out, act.StartTransfer)[0]
    assert isinstance(start, act.StartTransfer)
    assert start.server == act.ServerPassive(HostPort.of(SERVER, 200 * 256 + 10), "PASV")
    assert start.client == act.ClientPassive("PASV")
    assert not start.upload


def test_ipv6_server_gets_epsv() -> None:
    session = ControlSession(SessionPolicy(), CLIENT, 1)
    session.start()
    session.server_connected("::1", 2)
    session.client_data(b"USER u\r\n")
    session.server_data(b"230 ok\r\n")
    session.client_data(b"PASV\r\n")
    assert sent_to_server(session.client_listener_ready(LISTENER)) == b"EPSV\r\n"
    out = session.server_data(b"229 Entering Extended Passive Mode (|||5000|)\r\n")
    assert sent_to_client(out).startswith(b"227 ")
    start = of_type(session.client_data(b"LIST\r\n"), act.StartTransfer)[0]
    assert isinstance(start, act.StartTransfer)
    assert start.server == act.ServerPassive(HostPort.of("::1", 5000), "EPSV")


def test_pasv_on_ipv6_advertised_address_is_refused() -> None:
    session = logged_in(passive_family=2)
    out = session.client_data(b"PASV\r\n")
    assert sent_to_client(out).startswith(b"425 ")
    assert not of_type(out, act.OpenClientListener)


def test_epsv_with_wrong_protocol_gets_522() -> None:
    session = logged_in()
    assert sent_to_client(session.client_data(b"EPSV 2\r\n")).startswith(b"522 ")


def test_final_reply_is_held_until_data_is_flushed() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR big\r\n")
    assert sent_to_client(session.server_data(b"150 Opening\r\n")) == b"150 Opening\r\n"
    assert sent_to_client(session.server_data(b"226 Transfer complete\r\n")) == b""
    assert session.transfer_running
    out = session.data_done(None)
    assert sent_to_client(out) == b"226 Transfer complete\r\n"
    done = of_type(out, act.TransferDone)[0]
    assert done == act.TransferDone("RETR", b"big", 226, "PASV", "PASV")
    assert not session.transfer_running


def test_data_done_before_final_reply_releases_at_once() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"STOR up\r\n")
    session.server_data(b"150 ok\r\n")
    assert session.data_done(None) == []
    assert sent_to_client(session.server_data(b"226 done\r\n")) == b"226 done\r\n"


def test_failed_data_turns_226_into_426() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR f\r\n")
    session.server_data(b"150 ok\r\n226 done\r\n")
    out = session.data_done("reset by client")
    assert sent_to_client(out).startswith(b"426 ")


def test_refused_transfer_closes_data_and_forwards() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR missing\r\n")
    out = session.server_data(b"550 No such file\r\n")
    assert sent_to_client(out) == b"550 No such file\r\n"
    assert of_type(out, act.CloseData)
    assert sent_to_client(session.client_data(b"RETR again\r\n")).startswith(b"425 ")


def test_commands_during_transfer_wait_for_its_end() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR f\r\n")
    session.server_data(b"150 ok\r\n")
    assert sent_to_server(session.client_data(b"QUIT\r\n")) == b""
    session.server_data(b"226 done\r\n")
    out = session.data_done(None)
    assert sent_to_client(out) == b"226 done\r\n"
    assert sent_to_server(out) == b"QUIT\r\n"
    out = session.server_data(b"221 Bye\r\n")
    assert sent_to_client(out) == b"221 Bye\r\n"
    assert isinstance(out[-1], act.Close)


def test_abor_during_transfer_gives_426_then_226() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR f\r\n")
    session.server_data(b"150 ok\r\n")
    out = session.client_data(b"\xff\xf4\xff\xf2ABOR\r\n")
    assert of_type(out, act.CloseData)
    assert sent_to_server(out) == b"ABOR\r\n"
    assert sent_to_client(out).startswith(b"426 ")
    assert sent_to_client(session.server_data(b"426 Connection closed\r\n")) == b""
    out = session.server_data(b"226 ABOR successful\r\n")
    assert sent_to_client(out).startswith(b"226 ")
    assert session.idle
    assert sent_to_server(session.client_data(b"NOOP\r\n")) == b"NOOP\r\n"


def test_abor_after_server_finished_swallows_only_the_abor_reply() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR f\r\n")
    session.server_data(b"150 ok\r\n226 done\r\n")  # held: data still flushing
    out = session.client_data(b"ABOR\r\n")
    assert sent_to_client(out).startswith(b"426 ")
    out = session.server_data(b"225 No transfer to ABOR\r\n")
    assert sent_to_client(out).startswith(b"226 ")
    assert session.data_done(None) == []


def test_abor_without_transfer_passes_through() -> None:
    session = logged_in()
    out = session.client_data(b"ABOR\r\n")
    assert sent_to_server(out) == b"ABOR\r\n"
    assert sent_to_client(session.server_data(b"225 No transfer\r\n")) == b"225 No transfer\r\n"


def test_second_pasv_replaces_the_first_listener() -> None:
    session = logged_in()
    passive_ready(session)
    out = session.client_data(b"PASV\r\n")
    assert of_type(out, act.CloseData)
    assert of_type(out, act.OpenClientListener)


def test_epsv_all_refuses_other_data_commands() -> None:
    session = logged_in()
    out = session.client_data(b"EPSV ALL\r\n")
    assert sent_to_client(out).startswith(b"200 ")
    assert sent_to_server(out) == b""
    for command in (b"PASV", b"PORT 127,0,0,100,100,100", b"EPRT |1|127.0.0.100|5000|"):
        assert sent_to_client(session.client_data(command + b"\r\n")).startswith(b"503 ")
    assert of_type(session.client_data(b"EPSV\r\n"), act.OpenClientListener)


@pytest.mark.parametrize(
    "command",
    [
        b"PORT 127,0,0,1,100,100",  # another address
        b"PORT 127,0,0,100,0,21",  # privileged port
        b"EPRT |1|10.0.0.1|5000|",
        b"EPRT |2|::1|5000|",
    ],
)
def test_port_bounce_is_refused(command: bytes) -> None:
    session = logged_in()
    out = session.client_data(command + b"\r\n")
    assert sent_to_client(out).startswith(b"500 ")
    assert sent_to_server(out) == b""


def test_malformed_port_gets_501() -> None:
    session = logged_in()
    assert sent_to_client(session.client_data(b"PORT 1,2,3\r\n")).startswith(b"501 ")


def test_port_with_passive_server_mode() -> None:
    session = logged_in()
    out = session.client_data(b"PORT 127,0,0,100,100,100\r\n")
    assert sent_to_server(out) == b"PASV\r\n"
    out = session.server_data(b"227 Entering Passive Mode (127,0,0,11,4,1)\r\n")
    assert sent_to_client(out) == b"200 PORT command successful.\r\n"
    out = session.client_data(b"RETR f\r\n")
    start = of_type(out, act.StartTransfer)[0]
    assert isinstance(start, act.StartTransfer)
    assert start.client == act.ClientActive(HostPort.of(CLIENT, 25700), "PORT")
    assert not of_type(out, act.ConnectClient)
    out = session.server_data(b"150 here it comes\r\n")
    assert of_type(out, act.ConnectClient)


def test_active_server_mode_sends_port_with_our_listener() -> None:
    session = logged_in(SessionPolicy(server_data_mode="active"))
    session.client_data(b"EPSV\r\n")
    out = session.client_listener_ready(LISTENER)
    assert of_type(out, act.OpenServerListener)
    out = session.server_listener_ready(HostPort.of("127.0.0.1", 45000))
    assert sent_to_server(out) == b"PORT 127,0,0,1,175,200\r\n"
    out = session.server_data(b"200 PORT ok\r\n")
    assert sent_to_client(out).startswith(b"229 ")
    start = of_type(session.client_data(b"LIST\r\n"), act.StartTransfer)[0]
    assert isinstance(start, act.StartTransfer)
    assert start.server == act.ServerActive("PORT")


def test_client_server_mode_follows_the_client() -> None:
    session = logged_in(SessionPolicy(server_data_mode="client"))
    out = session.client_data(b"EPRT |1|127.0.0.100|5000|\r\n")
    assert of_type(out, act.OpenServerListener)
    session2 = logged_in(SessionPolicy(server_data_mode="client"))
    session2.client_data(b"PASV\r\n")
    assert sent_to_server(session2.client_listener_ready(LISTENER)) == b"PASV\r\n"


def test_server_refusing_passive_gives_425() -> None:
    session = logged_in()
    session.client_data(b"PASV\r\n")
    session.client_listener_ready(LISTENER)
    out = session.server_data(b"500 no passive today\r\n")
    assert sent_to_client(out).startswith(b"425 ")
    assert of_type(out, act.CloseData)


def test_garbage_passive_reply_gives_425() -> None:
    session = logged_in()
    session.client_data(b"PASV\r\n")
    session.client_listener_ready(LISTENER)
    assert sent_to_client(session.server_data(b"227 no address here\r\n")).startswith(b"425 ")


def test_transfer_without_data_setup_gets_425() -> None:
    session = logged_in()
    out = session.client_data(b"RETR f\r\n")
    assert sent_to_client(out).startswith(b"425 ")
    assert sent_to_server(out) == b""


def test_data_commands_before_login_get_530() -> None:
    session = connected()
    for command in (b"PASV", b"PORT 127,0,0,100,100,100", b"LIST"):
        out = session.client_data(command + b"\r\n")
        assert sent_to_client(out).startswith(b"530 ")
        assert sent_to_server(out) == b""


def test_overlong_line_gets_500_and_session_goes_on() -> None:
    session = logged_in(SessionPolicy(max_line_length=1024))
    out = session.client_data(b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\n")
    assert sent_to_client(out).startswith(b"500 ")
    assert sent_to_server(out) == b"NOOP\r\n"


def test_feat_hides_security_and_adds_extended_modes() -> None:
    session = logged_in()
    session.client_data(b"FEAT\r\n")
    out = session.server_data(
        b"211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n MDTM\r\n211 End\r\n"
    )
    reply = sent_to_client(out)
    assert b"AUTH" not in reply and b"PBSZ" not in reply and b"PROT" not in reply
    assert b" MDTM\r\n" in reply and b" EPSV\r\n" in reply and b" EPRT\r\n" in reply
    assert reply.startswith(b"211-") and reply.endswith(b"211 End\r\n")


def test_auth_is_refused_while_tls_is_off() -> None:
    session = connected()
    out = session.client_data(b"AUTH TLS\r\n")
    assert sent_to_client(out).startswith(b"502 ")
    assert sent_to_server(out) == b""


def test_user_routing_waits_for_user() -> None:
    session = ControlSession(SessionPolicy(route_on_user=True), CLIENT, 1)
    assert sent_to_client(session.start()) == b"220 ftplb ready\r\n"
    assert sent_to_client(session.client_data(b"FEAT\r\n")).startswith(b"211-")
    assert sent_to_client(session.client_data(b"PASS x\r\n")).startswith(b"503 ")
    assert sent_to_client(session.client_data(b"LIST\r\n")).startswith(b"530 ")
    out = session.client_data(b"USER bob\r\n")
    assert out == [act.ConnectServer(b"bob")]
    out = session.server_connected(SERVER, 1)
    assert sent_to_server(out) == b"USER bob\r\n"
    assert sent_to_client(out) == b""
    assert sent_to_client(session.server_data(b"331 pw\r\n")) == b"331 pw\r\n"


def test_user_routing_with_no_server_gives_421() -> None:
    session = ControlSession(SessionPolicy(route_on_user=True), CLIENT, 1)
    session.start()
    session.client_data(b"USER bob\r\n")
    out = session.server_unavailable("down")
    assert sent_to_client(out).startswith(b"421 ")
    assert isinstance(out[-1], act.Close)


def test_server_closing_gives_421() -> None:
    session = logged_in()
    out = session.server_closed()
    assert sent_to_client(out).startswith(b"421 ")
    assert isinstance(out[-1], act.Close)


def test_server_closing_during_flush_waits_for_the_data() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR f\r\n")
    session.server_data(b"150 ok\r\n226 done\r\n")
    assert session.server_closed() == []
    out = session.data_done(None)
    assert sent_to_client(out).startswith(b"226 done\r\n421 ")
    assert isinstance(out[-1], act.Close)


def test_malformed_server_reply_closes_with_421() -> None:
    session = logged_in()
    session.client_data(b"NOOP\r\n")
    out = session.server_data(b"hello there\r\n")
    assert sent_to_client(out).startswith(b"421 ")
    assert isinstance(out[-1], act.Close)


def test_rest_then_retr_passes_through() -> None:
    session = logged_in()
    assert sent_to_server(session.client_data(b"REST 1000\r\n")) == b"REST 1000\r\n"
    assert sent_to_client(session.server_data(b"350 Restarting\r\n")) == b"350 Restarting\r\n"
    passive_ready(session)
    assert sent_to_server(session.client_data(b"RETR f\r\n")) == b"RETR f\r\n"


def test_timeouts_close_with_421() -> None:
    session = logged_in()
    assert session.idle
    out = session.timed_out("client")
    assert sent_to_client(out).startswith(b"421 ")
    session = logged_in()
    session.client_data(b"NOOP\r\n")
    assert session.awaiting_server
    assert sent_to_client(session.timed_out("server")).startswith(b"421 ")


def test_idleness_excludes_running_transfers() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR f\r\n")
    session.server_data(b"150 ok\r\n")
    assert not session.idle
    assert not session.awaiting_server


def test_logged_commands_mask_the_password() -> None:
    session = connected(SessionPolicy(log_commands=True))
    out = session.client_data(b"USER alice\r\n")
    session.server_data(b"331 pw\r\n")
    out += session.client_data(b"PASS hunter2\r\n")
    seen = [a.text for a in out if isinstance(a, act.CommandSeen)]
    assert seen == ["USER alice", "PASS ****"]
    assert sent_to_server(out).endswith(b"PASS hunter2\r\n")


def test_commands_are_not_logged_by_default() -> None:
    session = connected()
    assert not of_type(session.client_data(b"USER alice\r\n"), act.CommandSeen)


def test_unspecified_active_address_means_the_client() -> None:
    session = logged_in()
    session.client_data(b"EPRT |2|::|50000|\r\n")
    session.server_data(b"227 Entering Passive Mode (127,0,0,11,4,1)\r\n")
    start = of_type(session.client_data(b"LIST\r\n"), act.StartTransfer)[0]
    assert isinstance(start, act.StartTransfer)
    assert start.client == act.ClientActive(HostPort.of(CLIENT, 50000), "EPRT")


def test_abor_crossing_the_transfers_first_reply() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR f\r\n")
    session.client_data(b"ABOR\r\n")  # before the server's 150 arrived
    assert sent_to_client(session.server_data(b"150 ok\r\n")) == b""
    assert sent_to_client(session.server_data(b"426 closed\r\n")) == b""
    assert sent_to_client(session.server_data(b"226 ABOR ok\r\n")).startswith(b"226 ")
    assert session.idle


def test_abor_when_the_server_ends_the_transfer_with_a_second_1xx() -> None:
    # Pure-FTPd: after its data write fails it sends "150 <stats>" and then
    # answers the ABOR; there is no other final reply to the RETR.
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR f\r\n")
    session.server_data(b"150 Accepted data connection\r\n")
    assert sent_to_client(session.client_data(b"ABOR\r\n")).startswith(b"426 ")
    assert sent_to_client(session.server_data(b"150 0.002 seconds\r\n")) == b""
    out = session.server_data(b"226 Since you see this ABOR must've succeeded\r\n")
    assert sent_to_client(out).startswith(b"226 ")
    assert session.idle


def test_second_1xx_after_broken_data_ends_the_transfer() -> None:
    session = logged_in()
    passive_ready(session)
    session.client_data(b"RETR f\r\n")
    session.server_data(b"150 Accepted data connection\r\n")
    assert session.data_done("reset by client") == []
    out = session.server_data(b"150 0.002 seconds\r\n")
    assert sent_to_client(out).startswith(b"426 ")
    assert session.idle
    assert sent_to_server(session.client_data(b"NOOP\r\n")) == b"NOOP\r\n"


def test_backlog_counts_pipelined_commands() -> None:
    session = logged_in()
    session.client_data(b"NOOP\r\n" * 10)
    assert session.backlog == 9  # one is with the server
    session.server_data(b"200 ok\r\n")
    assert session.backlog == 8
