"""Session ends as typed values: the core's reasons, the vocabulary, the tcp relay's."""

from __future__ import annotations

import pytest

from ftplb.proto import actions as act
from ftplb.proto.control import ControlSession, SessionPolicy
from ftplb.proto.outcomes import EndReason
from ftplb.runtime.data import transfer_error
from ftplb.runtime.logs import TransferError
from ftplb.runtime.passthrough import _relay_end
from ftplb.runtime.relay import CLEAN, RelayEnd, RelayOutcome

CLIENT = "127.0.0.100"
SERVER = "127.0.0.11"


def connected(policy: SessionPolicy | None = None) -> ControlSession:
    session = ControlSession(policy or SessionPolicy(), CLIENT, 1)
    assert session.start() == [act.ConnectServer(None)]
    assert session.server_connected(SERVER, 1) == [act.SendToClient(b"220 ftplb ready\r\n")]
    return session


def reply(text: bytes) -> act.SendToClient:
    return act.SendToClient(text + b"\r\n")


# ----------------------------------------------------------------- the core


def test_no_server_ends_with_no_server_and_the_last_connect_error() -> None:
    session = ControlSession(SessionPolicy(), CLIENT, 1)
    session.start()
    assert session.server_unavailable("s2: Connection refused") == [
        reply(b"421 Service not available, no server could take the session."),
        act.Close(EndReason.NO_SERVER, "s2: Connection refused"),
    ]


def test_quit_answered_by_the_server_ends_with_quit() -> None:
    session = connected()
    assert session.client_data(b"QUIT\r\n") == [act.SendToServer(b"QUIT\r\n")]
    assert session.server_data(b"221 Bye\r\n") == [reply(b"221 Bye"), act.Close(EndReason.QUIT)]


def test_quit_before_any_server_ends_with_quit() -> None:
    session = ControlSession(SessionPolicy(route_on_user=True), CLIENT, 1)
    session.start()
    assert session.client_data(b"QUIT\r\n") == [
        reply(b"221 Goodbye."),
        act.Close(EndReason.QUIT),
    ]


def test_client_closing_ends_with_client_closed() -> None:
    assert connected().client_closed() == [act.Close(EndReason.CLIENT_CLOSED)]


def test_client_silence_ends_with_client_timeout() -> None:
    assert connected().timed_out("client") == [
        reply(b"421 Idle timeout, closing."),
        act.Close(EndReason.CLIENT_TIMEOUT),
    ]


def test_server_silence_ends_with_server_timeout() -> None:
    assert connected().timed_out("server") == [
        reply(b"421 Service not available, the server did not answer in time."),
        act.Close(EndReason.SERVER_TIMEOUT),
    ]


def test_server_closing_ends_with_server_closed() -> None:
    assert connected().server_closed() == [
        reply(b"421 Service not available, the server closed the connection."),
        act.Close(EndReason.SERVER_CLOSED),
    ]


def test_unsolicited_421_ends_with_server_closed() -> None:
    assert connected().server_data(b"421 Timeout\r\n") == [
        reply(b"421 Timeout"),
        act.Close(EndReason.SERVER_CLOSED),
    ]


def test_malformed_reply_ends_with_protocol_error() -> None:
    session = connected()
    session.client_data(b"NOOP\r\n")
    assert session.server_data(b"hello there\r\n") == [
        reply(b"421 Service not available, malformed reply from server (bad first line)"),
        act.Close(
            EndReason.PROTOCOL_ERROR,
            "Service not available, malformed reply from server (bad first line)",
        ),
    ]


def test_failed_client_handshake_ends_with_client_tls_failed_and_the_alert() -> None:
    session = connected(SessionPolicy(client_tls="explicit"))
    assert session.client_data(b"AUTH TLS\r\n") == [
        reply(b"234 AUTH TLS successful."),
        act.StartTls(),
    ]
    assert session.client_tls_failed("bad record") == [
        act.Close(EndReason.CLIENT_TLS_FAILED, "bad record")
    ]


# ----------------------------------------------------------- the vocabulary


def test_refusals_are_exactly_the_limits_no_server_proxy_refused_and_the_defenders() -> None:
    assert {reason for reason in EndReason if reason.refused} == {
        EndReason.LIMIT,
        EndReason.SESSIONS_PER_IP,
        EndReason.SESSION_RATE,
        EndReason.NO_SERVER,
        EndReason.PROXY_REFUSED,
        EndReason.BANNED,
        EndReason.DENIED,
    }


def test_end_reason_values_are_the_documented_labels() -> None:
    # The values are published (log lines, metric labels, docs/admin.md): pinned.
    assert [reason.value for reason in EndReason] == [
        "quit",
        "client_closed",
        "client_timeout",
        "client_tls_failed",
        "server_timeout",
        "server_closed",
        "protocol_error",
        "no_server",
        "limit",
        "proxy_refused",
        "sessions_per_ip",
        "session_rate",
        "shutdown",
        "closed",
        "idle_timeout",
        "client_reset",
        "server_reset",
        "internal_error",
        "banned",
        "denied",
    ]


# ------------------------------------------------------------- tcp relays


@pytest.mark.parametrize(
    ("outcome", "expected", "transfer"),
    [
        (CLEAN, (EndReason.CLOSED, ""), (None, "")),
        (
            RelayOutcome(RelayEnd.IDLE),
            (EndReason.IDLE_TIMEOUT, ""),
            (TransferError.IDLE_TIMEOUT, ""),
        ),
        (
            RelayOutcome(RelayEnd.IDLE_AFTER_HALF_CLOSE),
            (EndReason.IDLE_TIMEOUT, "after half-close"),
            (TransferError.IDLE_TIMEOUT, "after half-close"),
        ),
        (
            RelayOutcome(RelayEnd.RESET, "a"),
            (EndReason.CLIENT_RESET, ""),
            (TransferError.RESET_BY_CLIENT, ""),
        ),
        (
            RelayOutcome(RelayEnd.RESET, "b"),
            (EndReason.SERVER_RESET, ""),
            (TransferError.RESET_BY_SERVER, ""),
        ),
        (
            RelayOutcome(RelayEnd.SOCKET_ERROR, "a", "ETIMEDOUT"),
            (EndReason.CLIENT_RESET, "ETIMEDOUT"),
            (TransferError.CLIENT_SOCKET_ERROR, "ETIMEDOUT"),
        ),
        (
            RelayOutcome(RelayEnd.SOCKET_ERROR, "b", "EHOSTUNREACH"),
            (EndReason.SERVER_RESET, "EHOSTUNREACH"),
            (TransferError.SERVER_SOCKET_ERROR, "EHOSTUNREACH"),
        ),
        (
            RelayOutcome(RelayEnd.TLS_ERROR, "a", "bad record mac"),
            (EndReason.CLIENT_RESET, "TLS error: bad record mac"),
            (TransferError.CLIENT_TLS_ERROR, "bad record mac"),
        ),
        (
            RelayOutcome(RelayEnd.TLS_ERROR, "b", "decryption failed"),
            (EndReason.SERVER_RESET, "TLS error: decryption failed"),
            (TransferError.SERVER_TLS_ERROR, "decryption failed"),
        ),
    ],
)
def test_relay_outcomes_become_end_reasons_and_transfer_errors(
    outcome: RelayOutcome,
    expected: tuple[EndReason, str],
    transfer: tuple[TransferError | None, str],
) -> None:
    """A tcp relay's side "a" and an FTP data relay's are the client: both logs say so."""
    assert _relay_end(outcome) == expected
    assert transfer_error(outcome) == transfer
