"""What a real ftplb logs about each session: one id on every line, and how the login went.

Each client runs from its own loopback address, so every line that names a
client (``client``, or ``expected`` on a refused data connection) can be tied
to that client's session, and must carry that session's id. The first server
is stopped and never checked, so some session's connect fails over: its
``connect_failed`` warning belongs to the session too.
"""

from __future__ import annotations

import contextlib
import ftplib
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration import farms
from tests.integration.balancer import RunningBalancer
from tests.support import wait_until

pytestmark = pytest.mark.integration

CONTENT = b"session log\n" * 200
CLIENTS = ("127.0.0.101", "127.0.0.102")
FAILED_LOGIN = "127.0.0.103"
NO_LOGIN = "127.0.0.104"
ATTACKER = "127.0.0.105"
DEFAULTS = 'log_format = "json"\nlog_commands = true'


def records(lb: RunningBalancer) -> list[dict[str, Any]]:
    """Every line of the log, each parsed as one JSON object."""
    return [json.loads(line) for line in lb.log_text().splitlines()]


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def about(record: dict[str, Any], client: str) -> bool:
    """The line names ``client``: as the session's client, or as the expected data peer."""
    named = record.get("client") or record.get("expected") or ""
    return host_of(str(named)) == client


def session_lines(lb: RunningBalancer) -> list[dict[str, Any]]:
    """The session lines of this test's clients (not of the start-up probe's connection)."""
    ours = (*CLIENTS, FAILED_LOGIN, NO_LOGIN)
    return [r for r in records(lb) if r["event"] == "session" and any(about(r, c) for c in ours)]


@contextlib.contextmanager
def control(lb: RunningBalancer, source: str) -> Iterator[ftplib.FTP]:
    ftp = ftplib.FTP(timeout=15, source_address=(source, 0))
    ftp.connect(lb.host, lb.port, timeout=15)
    try:
        yield ftp
    finally:
        ftp.close()


def download_past_a_thief(ftp: ftplib.FTP, source: str) -> bytes:
    """RETR over PASV, after a stranger tried the passive port first."""
    ftp.voidcmd("TYPE I")
    host, port = ftplib.parse227(ftp.sendcmd("PASV"))
    thief = socket.create_connection((host, port), timeout=5, source_address=(ATTACKER, 0))
    with thief, contextlib.suppress(ConnectionResetError):
        assert thief.recv(1) == b"", "the balancer relayed a stranger's data connection"
    with socket.create_connection((host, port), timeout=5, source_address=(source, 0)) as data:
        assert ftp.sendcmd("RETR f.txt").startswith("150")
        received = b""
        while chunk := data.recv(65536):
            received += chunk
    assert ftp.voidresp().startswith("226")
    return received


def test_every_line_of_a_session_carries_its_id_and_the_session_line_tells_the_login() -> None:
    with farms.farm(
        files={"f.txt": CONTENT}, health='{ type = "none" }', defaults=DEFAULTS
    ) as farm:
        lb = farm.lb
        farm.servers[0].stop()  # roundrobin: one of the two sessions tries it first
        for source in CLIENTS:
            with control(lb, source) as ftp:
                ftp.login(farm.user, farm.password)
                assert download_past_a_thief(ftp, source) == CONTENT
                ftp.quit()
        with control(lb, FAILED_LOGIN) as ftp, pytest.raises(ftplib.error_perm, match="530"):
            ftp.login(farm.user, "wrong")
        with control(lb, NO_LOGIN) as ftp:
            ftp.quit()
        wait_until(lambda: len(session_lines(lb)) == 4, 10, "the 4 session lines")
    logged = records(lb)

    kinds_seen: set[str] = set()
    for client in CLIENTS:
        (session,) = [r for r in logged if r["event"] == "session" and about(r, client)]
        lines = [r for r in logged if about(r, client)]
        assert {r.get("session") for r in lines} == {session["session"]}, lines
        kinds = {r["event"] if r["event"] != "warning" else r["warning"] for r in lines}
        assert {"session", "transfer", "command", "foreign_data_refused"} <= kinds, kinds
        kinds_seen |= kinds
        assert (session["login"], session["login_failures"], session["end"]) == ("ok", 0, "quit")
        (transfer,) = [r for r in lines if r["event"] == "transfer"]
        assert (transfer["result"], transfer["error"]) == (226, "-"), transfer
    assert "connect_failed" in kinds_seen, "no session tried the stopped server"
    ids = [r["session"] for r in session_lines(lb)]
    assert len(set(ids)) == 4, ids

    (failed,) = [r for r in logged if r["event"] == "session" and about(r, FAILED_LOGIN)]
    # The client gave up after the 530: how the session ended stays what ended it.
    assert (failed["login"], failed["login_failures"], failed["end"]) == (
        "failed",
        1,
        "client_closed",
    ), failed
    assert failed["user"] == farm.user
    (never,) = [r for r in logged if r["event"] == "session" and about(r, NO_LOGIN)]
    assert (never["login"], never["login_failures"], never["end"]) == ("none", 0, "quit"), never
