"""``mode = "tcp"``: a graceful stop, and the handover of a frontend to its next generation.

A graceful stop (SIGTERM to a real ``ftplb run``) closes the control listener
at once, lets the open sessions finish, their new data connections included,
and exits 0; a second SIGTERM, or ``timeout_shutdown``, cuts what is left,
with a log line for each cut connection.

The handover runs two generations of one frontend in this process. The new
one's listening sockets are duplicates of the old one's, as a reload hands
them out: each generation must close only its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from ftplb.balancing.pool import Pool
from ftplb.balancing.state import Server
from ftplb.config.fields import PortRange
from ftplb.runtime.failover import FailoverPolicy
from ftplb.runtime.logs import EventLog
from ftplb.runtime.passthrough import PassthroughFrontend, PassthroughSettings
from ftplb.runtime.pipes import PipeBudget
from ftplb.runtime.session import SessionLimit
from tests.integration import clients, servers
from tests.integration.balancer import RunningBalancer, balancer, log_fields
from tests.integration.test_tcp_mode import (
    PacedUpload,
    in_process,
    next_source,
    server_pair,
    sessions_from,
    tcp_config,
)
from tests.support import connect_refused, free_port, wait_until

pytestmark = pytest.mark.integration

SIZE = 32 * 1024 * 1024
RATE = "10M"
"""curl's --limit-rate: about 3 s for SIZE, long enough to stop ftplb in the middle."""
SLOW_RATE = "4M"
"""About 8 s for SIZE: what is left when a 2 s drain ends is far more than the
kernel's socket buffers hold, which a cut connection would still deliver."""
SERVER_HOSTS = ("127.0.0.57", "127.0.0.58")


@dataclass
class Pair:
    servers: list[servers.FtpServer]
    ranges: list[str]
    big_sha: str

    @property
    def user(self) -> str:
        return self.servers[0].user

    @property
    def password(self) -> str:
        return self.servers[0].password


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    seed = tmp_path_factory.mktemp("tcp-stop") / "big.bin"
    big_sha = clients.make_random_file(seed, SIZE)
    with server_pair("vsftpd", SERVER_HOSTS, seed) as (group, ranges):
        yield Pair(group, ranges, big_sha)


def throttled_download(
    pool: ThreadPoolExecutor,
    lb: RunningBalancer,
    pair: Pair,
    dest: Path,
    source: str,
    rate: str = RATE,
) -> Future[clients.ClientResult]:
    """A curl download through ``lb`` (EPSV: back to the balancer's own address), under way."""
    url = clients.ftp_url(lb.host, lb.port, "big.bin", pair.user, pair.password)
    throttle = ["--limit-rate", rate]
    download = pool.submit(clients.curl_retr, url, dest, "epsv", source, throttle)
    wait_until(lambda: dest.exists() and dest.stat().st_size > 0, 20, "the download to start")
    return download


def ends(lb: RunningBalancer, kind: str, *sources: str) -> list[str]:
    """The ``end=`` of every ``kind`` line of the clients at ``sources``.

    Other lines there are: the probe that saw ftplb listen made a session too.
    """
    records = [log_fields(line) for line in lb.log_lines(kind)]
    return sorted(r["end"] for r in records if r["client"].split(":")[0] in sources)


# ---------------------------------------------------------------------------
# SIGTERM through a real ftplb run


def test_sigterm_lets_a_tcp_download_finish_and_refuses_new_connects(
    pair: Pair, tmp_path: Path
) -> None:
    host, port = "127.0.0.6", free_port("127.0.0.6")
    down = tmp_path / "down.bin"
    with (
        balancer(tcp_config(pair.servers, pair.ranges, host=host, port=port), host, port) as lb,
        ThreadPoolExecutor(1) as pool,
    ):
        # A second session, logged in and quiet when the stop begins.
        loader, waiter = next_source(), next_source()
        quiet = clients.ftplib_session(host, port, pair.user, pair.password, "epsv", waiter)
        try:
            download = throttled_download(pool, lb, pair, down, loader)
            lb.process.send_signal(signal.SIGTERM)
            wait_until(lambda: connect_refused(host, port), 5, "new connects to be refused")
            # The open session still gets a new data connection through a passive port.
            assert b"big.bin" in quiet.list()
            assert lb.process.poll() is None
        finally:
            quiet.close()
        download.result(120).check()
        assert lb.process.wait(30) == 0
        lb.stopped = True
    assert clients.sha256_file(down) == pair.big_sha
    assert "draining" in lb.log_text()
    assert ends(lb, "session", loader, waiter) == ["closed", "closed"], lb.log_text()
    assert ends(lb, "data", loader, waiter) == ["closed", "closed"], lb.log_text()


def test_a_second_sigterm_ends_a_tcp_drain_at_once(pair: Pair, tmp_path: Path) -> None:
    host, port = "127.0.0.7", free_port("127.0.0.7")
    with (
        balancer(tcp_config(pair.servers, pair.ranges, host=host, port=port), host, port) as lb,
        ThreadPoolExecutor(1) as pool,
    ):
        loader = next_source()
        download = throttled_download(pool, lb, pair, tmp_path / "down.bin", loader)
        assert lb.stop_twice() < 5  # the second signal ends the drain at once
        # Cut short: curl sees its transfer fail, and ftplb logs both connections as cut.
        assert download.result(60).returncode != 0
    assert ends(lb, "session", loader) == ["shutdown"], lb.log_text()
    assert ends(lb, "data", loader) == ["shutdown"], lb.log_text()


def test_timeout_shutdown_cuts_a_tcp_transfer_and_exits_0(pair: Pair, tmp_path: Path) -> None:
    host, port = "127.0.0.8", free_port("127.0.0.8")
    text = tcp_config(
        pair.servers, pair.ranges, host=host, port=port, defaults='timeout_shutdown = "2s"'
    )
    with balancer(text, host, port) as lb, ThreadPoolExecutor(1) as pool:
        loader = next_source()
        download = throttled_download(pool, lb, pair, tmp_path / "down.bin", loader, SLOW_RATE)
        started = time.monotonic()
        lb.process.send_signal(signal.SIGTERM)
        assert lb.process.wait(15) == 0
        lb.stopped = True
        # The drain waited its 2 s for the transfer, then cut it.
        assert 1.9 <= time.monotonic() - started < 5
        assert download.result(60).returncode != 0
    assert "draining" in lb.log_text()
    assert ends(lb, "session", loader) == ["shutdown"], lb.log_text()
    assert ends(lb, "data", loader) == ["shutdown"], lb.log_text()


# ---------------------------------------------------------------------------
# in this process: the passive ports after the control listener, and the handover


def login(host: str, port: int, pair: Pair, source: str) -> clients.FtplibClient:
    return clients.ftplib_session(host, port, pair.user, pair.password, "epsv", source)


def first_passive_port(pair: Pair) -> int:
    return int(pair.ranges[0].split("-")[0])


def accepted(host: str, port: int) -> bool:
    """Whether a connect to ``host``:``port`` is accepted (and then, here, closed unrelayed)."""
    try:
        with socket.create_connection((host, port), timeout=2, source_address=(next_source(), 0)):
            return True
    except ConnectionRefusedError:
        return False


async def test_stop_accepting_keeps_the_passive_ports_until_the_last_session_ends(
    pair: Pair,
) -> None:
    host, port = "127.0.0.8", free_port("127.0.0.8")
    text = tcp_config(pair.servers, pair.ranges, host=host, port=port, health='{ type = "none" }')
    async with in_process(text) as (lb, stream):
        (frontend,) = lb.passthroughs
        source = next_source()
        session = await asyncio.to_thread(login, host, port, pair, source)
        try:
            lb.stop_accepting()  # what a stop does first: every frontend, kept sockets too
            assert await asyncio.to_thread(connect_refused, host, port)
            assert b"big.bin" in await asyncio.to_thread(session.list)
            passive = first_passive_port(pair)
            assert await asyncio.to_thread(accepted, host, passive)
        finally:
            await asyncio.to_thread(session.close)
        for _ in range(250):
            if not frontend.sessions and not frontend.transfers:
                break
            await asyncio.sleep(0.02)
        assert await asyncio.to_thread(connect_refused, host, passive)
    (record,) = sessions_from(stream.getvalue(), source)
    assert record["end"] == "closed", record


async def test_a_new_generation_takes_over_the_ports_and_the_open_sessions(
    pair: Pair,
) -> None:
    host, port = "127.0.0.6", free_port("127.0.0.6")
    text = tcp_config(
        pair.servers,
        pair.ranges,
        host=host,
        port=port,
        defaults='timeout_client = "1s"\ntimeout_server = "1s"',
        health='{ type = "none" }',
    )
    async with in_process(text) as (lb, old_stream):
        (old,) = lb.passthroughs
        kept, fresh = next_source(), next_source()
        session = await asyncio.to_thread(login, host, port, pair, kept)
        new: PassthroughFrontend | None = None
        try:
            # A download runs through the old generation when the new one takes over.
            await asyncio.to_thread(session.ftp.voidcmd, "TYPE I")
            data = await asyncio.to_thread(session.ftp.transfercmd, "RETR big.bin")
            digest = hashlib.sha256(await asyncio.to_thread(data.recv, 1 << 20))

            new_stream = io.StringIO()
            new = PassthroughFrontend(
                old.settings,
                old.pool,
                overall=SessionLimit(),
                log=EventLog("text", new_stream),
                budget=PipeBudget(),
                # As a reload opens them: duplicates of the sockets the old one has.
                listen=lb.listeners.open,
            )
            new.take_over(old)
            new.open()
            new.start()
            old.hand_over()
            # The old relay goes on to its end.
            with data:
                while chunk := await asyncio.to_thread(data.recv, 1 << 20):
                    digest.update(chunk)
            assert (await asyncio.to_thread(session.ftp.voidresp)).startswith("226")
            assert digest.hexdigest() == pair.big_sha
            # A new data connection of the old session reaches the new generation,
            # passes its port-theft check, and holds the old session's idle timer
            # through an upload of about 2.5 s, well past the idle timeout of 1 s.
            name = f"handover-{uuid.uuid4().hex}.bin"
            paced = PacedUpload(64, 0.04)
            reply = await asyncio.to_thread(session.ftp.storbinary, f"STOR {name}", paced, 65536)
            assert reply.startswith("226")
            # Closed before it idles: the idle timer of 1 s runs on.
            await asyncio.to_thread(session.close)
            # A stranger still gets nothing.
            stranger = first_passive_port(pair)
            assert await asyncio.to_thread(accepted, host, stranger)
            # New sessions start on the new generation, on the same port.
            other = await asyncio.to_thread(login, host, port, pair, fresh)
            try:
                assert b"big.bin" in await asyncio.to_thread(other.list)
            finally:
                await asyncio.to_thread(other.close)
        finally:
            if session.ftp.sock is not None:  # not closed yet: the test failed
                await asyncio.to_thread(session.close)
            await asyncio.sleep(0.1)  # the relays' ends reach the logs
            if new is not None:
                await new.stop()
    old_log, new_log = old_stream.getvalue(), new_stream.getvalue()
    (kept_session,) = sessions_from(old_log, kept)
    assert kept_session["end"] == "closed", kept_session
    assert sessions_from(new_log, kept) == []
    (fresh_session,) = sessions_from(new_log, fresh)
    assert fresh_session["end"] == "closed", fresh_session
    assert sessions_from(old_log, fresh) == []

    def data_lines(log: str, source: str) -> list[dict[str, str]]:
        records = [log_fields(line) for line in log.splitlines() if " data " in line]
        return [r for r in records if r["client"].startswith(f"{source}:")]

    (retr,) = data_lines(old_log, kept)
    assert (retr["end"], retr["bytes_to_client"]) == ("closed", str(SIZE)), retr
    (stor,) = data_lines(new_log, kept)
    assert (stor["end"], stor["bytes_to_server"]) == ("closed", str(64 * 64 * 1024)), stor
    assert stor["server"] == kept_session["server"], (stor, kept_session)
    refused = [line for line in new_log.splitlines() if "warning=orphan_data_refused " in line]
    assert len(refused) == 1 and f" port={stranger} " in f"{refused[0]} ", refused
    assert "warning=orphan_data_refused " not in old_log


def test_only_a_frontend_of_the_same_name_can_take_over() -> None:
    def frontend(name: str) -> PassthroughFrontend:
        settings = PassthroughSettings(
            name=name,
            binds=(("127.0.0.6", 2121),),
            passive_ranges={"s1": PortRange(30000, 30009)},
            connect_timeout=1.0,
            idle_timeout=1.0,
            failover=FailoverPolicy(0, False),
            max_connections=0,
            source_ip=None,
        )
        pool = Pool("pool", [Server(name="s1", host="127.0.0.57", port=21)])
        log = EventLog("text", io.StringIO())
        return PassthroughFrontend(
            settings, pool, overall=SessionLimit(), log=log, budget=PipeBudget()
        )

    with pytest.raises(ValueError, match=r"^frontend 'tcp' cannot take over 'other'$"):
        frontend("tcp").take_over(frontend("other"))


# ---------------------------------------------------------------------------
# SIGHUP through a real ftplb run


def test_a_tcp_download_goes_on_across_a_reload_and_no_connect_is_refused(
    pair: Pair, tmp_path: Path
) -> None:
    host, port = "127.0.0.9", free_port("127.0.0.9")
    text = tcp_config(pair.servers, pair.ranges, host=host, port=port)
    down = tmp_path / "down.bin"
    with balancer(text, host, port) as lb, ThreadPoolExecutor(2) as pool:
        loader, later = next_source(), next_source()
        download = throttled_download(pool, lb, pair, down, loader)
        done = threading.Event()

        def knock() -> int:
            """Connects until the reload is done (at most 400); how many were refused."""
            refused = 0
            for _ in range(400):
                if done.is_set():
                    break
                refused += connect_refused(host, port)
                time.sleep(0.005)
            return refused

        knocking = pool.submit(knock)
        lb.config_path.write_text(text.replace('balance = "roundrobin"', 'balance = "leastconn"'))
        lb.process.send_signal(signal.SIGHUP)
        # Only a new generation that started logs this (else: reload_failed).
        wait_until(lambda: "message=reloaded" in lb.log_text(), 10, "the reload")
        done.set()
        assert not download.done(), "the download ended before the reload"
        assert knocking.result(30) == 0
        # A new session runs on the new generation, data connection included.
        session = login(host, port, pair, later)
        try:
            assert b"big.bin" in session.list()
        finally:
            session.close()
        download.result(120).check()
    assert clients.sha256_file(down) == pair.big_sha
    assert ends(lb, "session", loader, later) == ["closed", "closed"], lb.log_text()
