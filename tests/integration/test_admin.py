"""The admin listener over real sessions: /metrics, /stats and /stats.json.

A real Balancer runs in this process in front of pyftpdlib servers, with
Metrics and the admin server wired the way the application wires them
(:func:`running`), and real ftplib clients go through it. A second process
(multiprocessing, spawned) records into the same directory to show the sums.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import multiprocessing
import multiprocessing.synchronize
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ftplb.admin.server import AdminError, AdminServer, start_admin
from ftplb.admin.snapshot import collect
from ftplb.balancer import Balancer
from ftplb.balancing.pool import Pool
from ftplb.balancing.state import Server
from ftplb.config.load import load_config_text
from ftplb.proto.outcomes import EndReason
from ftplb.runtime import metrics
from ftplb.runtime.logs import EventLog
from tests.integration import clients
from tests.integration.balancer import log_fields, simple_config
from tests.integration.farms import started_servers
from tests.integration.servers import FtpServer
from tests.metrics_processes import act_as_process
from tests.support import free_port

pytestmark = pytest.mark.integration

FILE = os.urandom(300_000)
UPLOAD = os.urandom(70_000)
USER, PASSWORD = "ops", "s3cret:with colon"
WAIT = 10.0


@pytest.fixture(scope="module")
def ftp_servers() -> Iterator[list[FtpServer]]:
    with started_servers("pyftpdlib", ["127.0.0.11", "127.0.0.12"], {"file.bin": FILE}) as group:
        yield group


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "metrics")
    act_as_process(monkeypatch, path)
    return path


def config_text(group: list[FtpServer], dead_port: int, auth: bool = True) -> str:
    addresses = [(s.host, s.port) for s in group] + [("127.0.0.13", dead_port)]
    text = simple_config(
        addresses,
        port=free_port("127.0.0.1"),
        # Long fall: the dead server stays UP, so sessions keep trying it.
        health='{ type = "ftp", interval = "200ms", rise = 1, fall = 1000, timeout = "1s" }',
    )
    passive = load_config_text(text).frontends[0].passive_ports
    assert passive is not None
    admin_port = free_port("127.0.0.1")
    while admin_port in passive:  # the cross-check would refuse it
        admin_port = free_port("127.0.0.1")
    credentials = f'user = "{USER}"\npassword = "{PASSWORD}"\n' if auth else ""
    return f'{text}\n[admin]\nbind = "127.0.0.1:{admin_port}"\nstats_refresh = "3s"\n{credentials}'


@dataclass
class Running:
    balancer: Balancer
    metrics: metrics.Metrics
    admin: AdminServer
    log: io.StringIO

    @property
    def port(self) -> int:
        return self.balancer.config.frontends[0].bind[0].port

    @property
    def url(self) -> str:
        host, port = self.admin.address
        return f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def running(text: str, directory: str) -> AsyncIterator[Running]:
    """What the application does, in the same order (one process: no supervisor)."""
    config = load_config_text(text)
    assert config.admin is not None
    metrics.clear_directory(directory)  # supervisor: once, before any worker
    metrics.enable(directory)  # each worker, before any Metrics
    stream = io.StringIO()
    lb = Balancer(config, EventLog("text", stream))
    await lb.start()
    recorder = metrics.Metrics(sample_interval=0.1)
    recorder.attach(lb.log, lb.pools, lb.config, checkers=lb.checkers, frontends=lb.frontends)
    recorder.start()
    admin = await start_admin(config.admin, directory, config)
    try:
        yield Running(lb, recorder, admin, stream)
    finally:
        await admin.close()
        recorder.stop()
        await lb.stop()


def auth_header(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def fetch(
    url: str, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, str, str]:
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.request(method, url + path, headers=headers or auth_header()) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(metrics_text: str, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, got), value in samples(metrics_text).items()
        if sample == name and set(labels.items()) <= got
    )


def client_session(port: int, group: list[FtpServer]) -> tuple[int, int, str]:
    """Login, RETR, LIST, STOR, QUIT; returns (control bytes sent, data bytes received, name)."""
    name = f"up-{os.urandom(4).hex()}.bin"
    with clients.ftplib_session("127.0.0.1", port, group[0].user, group[0].password, "epsv") as c:
        assert c.retr("file.bin") == FILE
        listing = c.list()
        assert c.stor(name, UPLOAD).startswith("226")
    sent = sum(len(line) + 2 for line in c.commands)  # ftplib sends each line + CRLF
    return sent, len(FILE) + len(listing), name


async def wait_for(
    condition: str, check: Callable[[], Awaitable[bool]], timeout: float = WAIT
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await asyncio.sleep(0.05)


async def test_metrics_and_stats_agree_with_what_the_clients_did(
    ftp_servers: list[FtpServer], directory: str
) -> None:
    text = config_text(ftp_servers, free_port("127.0.0.13"))
    async with running(text, directory) as run:
        done = [await asyncio.to_thread(client_session, run.port, ftp_servers) for _ in range(4)]
        control_sent = sum(d[0] for d in done)
        data_received = sum(d[1] for d in done)

        async def all_ended() -> bool:
            _, _, body = await fetch(run.url, "/metrics")
            return total(body, "ftplb_sessions_total", server="s1") + total(
                body, "ftplb_sessions_total", server="s2"
            ) == len(done)

        await wait_for("4 sessions in /metrics", all_ended)
        await asyncio.sleep(0.3)  # a few more samples: health checks of the dead server
        status, kind, body = await fetch(run.url, "/metrics")
        assert status == 200 and kind.startswith("text/plain")
        lines = run.log.getvalue().splitlines()
        sessions = [log_fields(line) for line in lines if " session " in line]
        transfers = [log_fields(line) for line in lines if " transfer " in line]
        failures = [line for line in lines if "warning=connect_failed " in line]

        # What the clients did...
        assert total(body, "ftplb_control_bytes_total", direction="in") == control_sent
        assert total(body, "ftplb_transfer_bytes_total", direction="out") == data_received
        assert total(body, "ftplb_transfer_bytes_total", direction="in") == 4 * len(UPLOAD)
        assert total(body, "ftplb_transfers_total", command="RETR", result="2xx") == 4
        assert total(body, "ftplb_transfers_total", command="STOR", result="2xx") == 4
        assert total(body, "ftplb_transfers_total", command="LIST", result="2xx") == 4
        assert total(body, "ftplb_session_ends_total", reason="quit") == 4
        # ...and what the balancer logged about them.
        for server in ("s1", "s2"):
            mine = [s for s in sessions if s["server"] == server]
            assert total(body, "ftplb_sessions_total", server=server) == len(mine)
            assert total(body, "ftplb_control_bytes_total", server=server, direction="out") == sum(
                int(s["bytes_out"]) for s in mine
            )
        assert sum(int(t["bytes_to_client"]) for t in transfers) == data_received
        assert failures, "roundrobin over a dead server must have tried it"
        assert total(body, "ftplb_server_connect_failures_total", server="s3") == len(failures)
        assert total(body, "ftplb_server_current_sessions") == 0
        assert total(body, "ftplb_worker_processes") == 1
        assert total(body, "ftplb_server_state", server="s3", state="UP") == 1
        assert total(body, "ftplb_health_checks_total", server="s3", result="fail") >= 1
        assert total(body, "ftplb_health_checks_total", server="s1", result="ok") >= 1
        assert total(body, "ftplb_server_check_ok", server="s3") == 0

        # /stats.json and /stats show the same numbers.
        status, kind, raw = await fetch(run.url, "/stats.json")
        assert status == 200 and kind.startswith("application/json")
        stats = json.loads(raw)
        (frontend,) = stats["frontends"]
        assert frontend["sessions"] == len(sessions)
        assert frontend["bytes_in"] == control_sent + 4 * len(UPLOAD)
        assert frontend["transfer_results"] == {"LIST 2xx": 4, "RETR 2xx": 4, "STOR 2xx": 4}
        (backend,) = stats["backends"]
        by_name = {s["name"]: s for s in backend["servers"]}
        for server in ("s1", "s2", "s3"):
            assert by_name[server]["sessions"] == total(body, "ftplb_sessions_total", server=server)
        assert by_name["s3"]["connect_failures"] == len(failures)
        assert by_name["s3"]["last_check"] == "failed"
        assert by_name["s1"]["last_check"] == "ok"
        assert stats["workers"] == 1

        status, kind, page = await fetch(run.url, "/stats")
        assert status == 200 and kind.startswith("text/html")
        assert '<meta http-equiv="refresh" content="3">' in page
        s1 = by_name["s1"]
        row = page.split('<td class="name">s1</td>', 1)[1].split("</tr>", 1)[0]
        assert f"<td>{s1['sessions']:,}</td>" in row
        assert f'title="{s1["bytes_in"]:,} bytes"' in row  # the exact count, on hover


async def test_basic_auth_and_unknown_paths(ftp_servers: list[FtpServer], directory: str) -> None:
    text = config_text(ftp_servers, free_port("127.0.0.13"))
    async with running(text, directory) as run:
        for headers in ({}, auth_header(password="wrong"), {"Authorization": "Basic !!!"}):
            status, _, _ = await fetch(run.url, "/stats", headers=headers or {"X": "1"})
            assert status == 401
        async with (
            aiohttp.ClientSession() as http,
            http.get(run.url + "/metrics") as response,
        ):
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith('Basic realm="ftplb"')
        for path in ("/metrics", "/stats", "/stats.json"):
            assert (await fetch(run.url, path))[0] == 200
        assert (await fetch(run.url, "/"))[0] == 404
        assert (await fetch(run.url, "/stats/"))[0] == 404
        assert (await fetch(run.url, "/stats", method="POST"))[0] == 404


async def test_without_credentials_no_auth_is_asked(
    ftp_servers: list[FtpServer], directory: str
) -> None:
    text = config_text(ftp_servers, free_port("127.0.0.13"), auth=False)
    async with running(text, directory) as run:
        assert (await fetch(run.url, "/stats.json", headers={"X": "1"}))[0] == 200


async def test_a_taken_admin_address_is_a_clear_error(
    ftp_servers: list[FtpServer], directory: str
) -> None:
    text = config_text(ftp_servers, free_port("127.0.0.13"))
    async with running(text, directory) as run:
        config = run.balancer.config
        assert config.admin is not None
        with pytest.raises(AdminError, match=r"\[admin\] cannot listen on 127\.0\.0\.1:\d+"):
            await start_admin(config.admin, directory, config)


# ------------------------------------------------------------ two processes


def record_in_another_process(
    directory: str,
    ready: multiprocessing.synchronize.Event,
    leave: multiprocessing.synchronize.Event,
) -> None:
    """A second worker: 3 sessions on s1, 2 of its own open now, then wait to be told to go."""
    metrics.enable(directory)
    config = load_config_text(simple_config([("127.0.0.11", 21), ("127.0.0.12", 21)], port=2121))
    pool = Pool("pool", [Server("s1", "127.0.0.11", 21), Server("s2", "127.0.0.12", 21)])
    pool.servers[0].active = 2
    log = EventLog("text", io.StringIO())
    recorder = metrics.Metrics()
    recorder.attach(log, {"pool": pool}, config)
    for _ in range(3):
        log.notify("accept", frontend="ftp")  # what the runtime tells at each connect
        log.session(frontend="ftp", server="s1", bytes_in=1000, bytes_out=10, end=EndReason.QUIT)
    recorder.sample()
    ready.set()
    leave.wait(30)


async def test_two_processes_are_summed(ftp_servers: list[FtpServer], directory: str) -> None:
    text = config_text(ftp_servers, free_port("127.0.0.13"))
    async with running(text, directory) as run:
        sent, _, _ = await asyncio.to_thread(client_session, run.port, ftp_servers)
        context = multiprocessing.get_context("spawn")
        ready, leave = context.Event(), context.Event()
        child = context.Process(target=record_in_another_process, args=(directory, ready, leave))
        child.start()
        try:
            assert await asyncio.to_thread(ready.wait, 30), "the second process did not record"

            async def both_recorded() -> bool:
                _, _, body = await fetch(run.url, "/metrics")
                return total(body, "ftplb_sessions_total") == 4

            await wait_for("the sessions of both processes", both_recorded)
            _, _, body = await fetch(run.url, "/metrics")
            assert total(body, "ftplb_worker_processes") == 2
            assert total(body, "ftplb_server_current_sessions", server="s1") == 2
            assert total(body, "ftplb_control_bytes_total", direction="in") == sent + 3000
            stats = json.loads((await fetch(run.url, "/stats.json"))[2])
            assert stats["workers"] == 2
            assert stats["frontends"][0]["sessions"] == 4
            assert stats["backends"][0]["current_sessions"] == 2
        finally:
            leave.set()
            await asyncio.to_thread(child.join, 30)
            if child.is_alive():
                child.kill()
        assert child.exitcode == 0
        metrics.mark_process_dead(child.pid or 0, directory)  # what the supervisor does
        _, _, body = await fetch(run.url, "/metrics")
        assert total(body, "ftplb_worker_processes") == 1
        assert total(body, "ftplb_server_current_sessions", server="s1") == 0
        assert total(body, "ftplb_sessions_total") == 4  # its sessions still happened


def record_after_fork(directory: str) -> None:
    """A forked worker: enable() again is a no-op, and the files are named by its own pid."""
    metrics.enable(directory)
    config = load_config_text(simple_config([("127.0.0.11", 21)], port=2121))
    log = EventLog("text", io.StringIO())
    recorder = metrics.Metrics()
    recorder.attach(log, {}, config)
    log.session(frontend="ftp", server="s1", bytes_in=7, bytes_out=0, end=EndReason.QUIT)
    recorder.sample()


def test_workers_forked_after_enable_write_files_of_their_own(directory: str) -> None:
    metrics.enable(directory)  # the supervisor, before forking
    metrics.clear_directory(directory)
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=record_after_fork, args=(directory,)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    names = {p.name for p in Path(directory).glob("counter_*.db")}
    assert names == {f"counter_{child.pid}.db" for child in children}
    got = collect(directory)
    assert sum(s.value for f in got for s in f.samples if s.name == "ftplb_sessions_total") == 2
