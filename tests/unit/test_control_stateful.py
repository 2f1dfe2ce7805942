"""ControlSession regressions (exact events in, actions out)."""

from __future__ import annotations

from ftplb.proto import actions as act
from ftplb.proto.addresses import HostPort
from ftplb.proto.control import ControlSession, SessionPolicy
from ftplb.proto.outcomes import EndReason
from tests.unit.playbook import (
    ClientListenerReady,
    ClientSends,
    Playbook,
    ServerCloses,
    ServerConnected,
    ServerSends,
    Start,
)


def test_abor_after_the_server_left_with_a_held_reply_closes_the_session() -> None:
    # The server said 226 and closed while the data still flowed: the reply is
    # held. ABOR then drops it, and no server is left to answer the ABOR.
    session = ControlSession(SessionPolicy(), "127.0.0.100", 1)
    listener = HostPort.of("127.0.0.1", 40001)
    passive = act.ServerPassive(HostPort.of("127.0.0.11", 51210), "PASV")
    assert (
        Playbook(session)
        >> Start()
        << act.ConnectServer(None)
        >> ServerConnected()
        << act.SendToClient(b"220 ftplb ready\r\n")
        >> ClientSends(b"USER alice\r\n")
        << act.SendToServer(b"USER alice\r\n")
        >> ServerSends(b"230 Logged in.\r\n")
        << act.SendToClient(b"230 Logged in.\r\n")
        >> ClientSends(b"PASV\r\n")
        << act.OpenClientListener()
        >> ClientListenerReady(listener)
        << act.SendToServer(b"PASV\r\n")
        >> ServerSends(b"227 Entering Passive Mode (127,0,0,11,200,10).\r\n")
        << act.SendToClient(b"227 Entering Passive Mode (127,0,0,1,156,65).\r\n")
        >> ClientSends(b"RETR f\r\n")
        << act.StartTransfer(act.ClientPassive("PASV"), passive, upload=False)
        << act.SendToServer(b"RETR f\r\n")
        >> ServerSends(b"150 Opening.\r\n226 Done.\r\n")
        << act.SendToClient(b"150 Opening.\r\n")
        >> ServerCloses()
        >> ClientSends(b"ABOR\r\n")
        << act.CloseData("aborted by client")
        << act.SendToServer(b"ABOR\r\n")
        << act.SendToClient(b"426 Transfer aborted, data connection closed.\r\n")
        << act.TransferDone("RETR", b"f", 426, "PASV", "PASV")
        << act.SendToClient(b"421 Service not available, the server closed the connection.\r\n")
        << act.Close(EndReason.SERVER_CLOSED)
    )
