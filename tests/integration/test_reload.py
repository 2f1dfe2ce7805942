"""SIGHUP through a real `ftplb run`: reloads under load lose no session and refuse no connect.

Three pyftpdlib servers; ftplb starts with s1 and s2. During a bounded load
(LIST, 1 MB RETR and STOR checked by sha256, from many source addresses),
three SIGHUPs: a file that adds s3, a file that removes s1 while a slow
download runs on s1, and an invalid file. Every session must succeed, no
connect may be refused, the added server must get sessions, the removed one
none after its reload, the download on it must complete intact, and the
invalid file must be logged and change nothing.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.balancer import RunningBalancer, balancer, log_fields, simple_config
from tests.integration.farms import started_servers
from tests.integration.load import (
    SOURCES,
    Load,
    check_uploads,
    end_session,
    label_servers,
    open_session,
    sessions_opened,
    sha256,
    slow_download,
    whoami,
)
from tests.integration.servers import FtpServer
from tests.support import free_port, neighbouring_free_ports, wait_until

pytestmark = pytest.mark.integration

SAMPLE_SIZE = 1024 * 1024
SESSIONS = 300
BIG_SIZE = 24 * 1024 * 1024
HEALTH = '{ type = "ftp", interval = "500ms", rise = 1, fall = 2, timeout = "1s" }'


def config_for(servers: list[FtpServer], names: list[str], port: int, workers: int) -> str:
    """A config with the servers called ``names`` (s1 is servers[0], ...)."""
    text = simple_config([], port=port, defaults=f"workers = {workers}", health=HEALTH)
    for name in names:
        server = servers[int(name[1:]) - 1]
        text += (
            f'\n[[backends.servers]]\nname = "{name}"\naddress = "{server.host}:{server.port}"\n'
        )
    return text


def reloads(lb: RunningBalancer) -> list[dict[str, str]]:
    """The fields of every ``reloaded`` log line."""
    lines = [log_fields(line) for line in lb.log_lines("info")]
    return [fields for fields in lines if fields.get("message") == "reloaded"]


def refusals(lb: RunningBalancer) -> list[str]:
    return [line for line in lb.log_lines("warning") if "warning=reload_refused" in line]


def reload_with(lb: RunningBalancer, text: str, generation: int | None, workers: int = 1) -> None:
    """Write ``text`` as the config, SIGHUP, and wait until the reload is done: the
    reloaded line of the process, and with workers each worker's (or the refusal)."""
    before = len(refusals(lb))
    lb.config_path.write_text(text)
    lb.process.send_signal(signal.SIGHUP)
    if generation is None:
        wait_until(lambda: len(refusals(lb)) > before, 10, "the refusal")
        return
    lines = 1 if workers == 1 else 1 + workers

    def reloaded() -> bool:
        return sum(1 for fields in reloads(lb) if fields["generation"] == str(generation)) == lines

    wait_until(reloaded, 10, f"reload generation {generation} in every process")


def download_on(
    lb: RunningBalancer, server_name: str, tmp_path: Path, pool: ThreadPoolExecutor
) -> tuple[Future[str], threading.Event]:
    """Start a slow download of big.bin in a session that reached ``server_name``."""
    for source in SOURCES:
        ftp = open_session(lb.host, lb.port, "ftptest", "ftptest", source)
        if whoami(ftp) == server_name:
            break
        end_session(ftp)
    else:
        raise AssertionError(f"no session reached {server_name}")
    running = threading.Event()

    def download() -> str:
        running.set()
        try:
            return slow_download(ftp, "big.bin", tmp_path / "big.down", pace=0.02)
        finally:
            end_session(ftp)

    return pool.submit(download), running


@pytest.mark.parametrize("workers", [1, 2])
def test_reloads_under_load_lose_no_session(tmp_path: Path, workers: int) -> None:
    sample = os.urandom(SAMPLE_SIZE)
    big = os.urandom(BIG_SIZE)
    hosts = [f"127.0.0.{21 + 3 * workers + i}" for i in range(3)]
    with started_servers("pyftpdlib", hosts, {"big.bin": big}) as servers:
        label_servers(servers, sample)
        port = free_port()
        first = config_for(servers, ["s1", "s2"], port, workers)
        with balancer(first, "127.0.0.1", port) as lb, ThreadPoolExecutor(2) as pool:
            # Every worker runs before the first reload, so that each logs its own.
            wait_until(lambda: workers == 1 or "workers ready" in lb.log_text(), 30, "workers")
            load = Load(lb.host, lb.port, "ftptest", "ftptest", sample, total=SESSIONS)
            marks: dict[str, int] = {}
            downloads: list[Future[str]] = []

            def on_progress(done: int) -> None:
                # Runs in a load thread: one reload at a time, at fixed points.
                if done == 60 and "add" not in marks:
                    marks["add"] = done
                    reload_with(
                        lb, config_for(servers, ["s1", "s2", "s3"], port, workers), 2, workers
                    )
                elif done == 140 and "remove" not in marks:
                    marks["remove"] = done
                    download, running = download_on(lb, "s1", tmp_path, pool)
                    downloads.append(download)
                    running.wait(10)
                    reload_with(lb, config_for(servers, ["s2", "s3"], port, workers), 3, workers)
                    marks["s1_opened"] = sessions_opened(servers[0])
                elif done == 220 and "invalid" not in marks:
                    marks["invalid"] = done
                    invalid = config_for(servers, ["s2", "s3"], port, workers)
                    reload_with(
                        lb,
                        invalid.replace('name = "pool"', 'name = "pool"\nbalance = "nope"'),
                        None,
                    )

            result = load.run(on_progress)
            assert result.failures == [], "\n".join(result.failures[:20])
            assert result.refused == 0
            assert result.sessions == SESSIONS
            assert check_uploads(result, servers) == []
            # The slow download on s1 finished intact after s1 left the configuration.
            assert downloads[0].result(timeout=120) == sha256(big)
            # The added server took sessions; the removed one took none after its reload.
            assert result.served["s3"] > 0, result.served
            assert sessions_opened(servers[0]) == marks["s1_opened"]
            # The invalid file was logged with its line and key, and changed nothing.
            refused = refusals(lb)
            assert len(refused) == 1
            assert "balance" in refused[0] and str(lb.config_path) in refused[0]
            assert "generation=4" not in lb.log_text()
            # One line per reload from the process that reloads the file (a
            # master's workers log their own generation line too).
            assert [
                (r["generation"], r["added"], r["removed"])
                for r in reloads(lb)
                if "worker" not in r
            ] == [("2", "pool/s3", ""), ("3", "", "pool/s1")]


def test_download_across_a_reload_completes(tmp_path: Path) -> None:
    """A 100 MB download, throttled to a few seconds, across a SIGHUP that changes weights."""
    big = os.urandom(100 * 1024 * 1024)
    hosts = ["127.0.0.31", "127.0.0.32"]
    with started_servers("pyftpdlib", hosts, {"big.bin": big}) as servers:
        label_servers(servers, b"x")
        port = free_port()
        with balancer(config_for(servers, ["s1", "s2"], port, 1), "127.0.0.1", port) as lb:
            with ThreadPoolExecutor(1) as pool:
                ftp = open_session(lb.host, lb.port, "ftptest", "ftptest", SOURCES[0])
                done = pool.submit(slow_download, ftp, "big.bin", tmp_path / "big.down", 0.002)
                done.add_done_callback(lambda _: end_session(ftp))
                wait_until(
                    lambda: (
                        (tmp_path / "big.down").exists()
                        and (tmp_path / "big.down").stat().st_size > 1024 * 1024
                    ),
                    20,
                    "the download to start",
                )
                changed = config_for(servers, ["s1", "s2"], port, 1).replace(
                    'name = "s2"', 'name = "s2"\nweight = 3'
                )
                reload_with(lb, changed, 2)
                assert (tmp_path / "big.down").stat().st_size < len(big), "too fast to test"
                assert done.result(timeout=120) == sha256(big)
            assert [(r["generation"], r["changed"]) for r in reloads(lb)] == [("2", "pool/s2")]


def test_the_passive_ports_stay_open_across_a_reload_and_serve_both_generations(
    tmp_path: Path,
) -> None:
    """Two passive ports; a slow download of generation 1 runs on the first. After a
    reload, the new generation's sessions wait on that same port, kept open, and
    transfer through it while the old download goes on and completes."""
    big = os.urandom(BIG_SIZE)
    hosts = ["127.0.0.33", "127.0.0.34"]
    with started_servers("pyftpdlib", hosts, {"big.bin": big}) as servers:
        label_servers(servers, b"x")
        port = free_port()
        first = neighbouring_free_ports()
        text = re.sub(
            r'passive_ports = "[0-9-]+"',
            f'passive_ports = "{first}-{first + 1}"',
            config_for(servers, ["s1", "s2"], port, 1),
        )
        with balancer(text, "127.0.0.1", port) as lb, ThreadPoolExecutor(1) as pool:
            ftp = open_session(lb.host, lb.port, "ftptest", "ftptest", SOURCES[0])
            down = tmp_path / "big.down"
            done = pool.submit(slow_download, ftp, "big.bin", down, 0.02)
            done.add_done_callback(lambda _: end_session(ftp))
            wait_until(lambda: down.exists() and down.stat().st_size > 0, 20, "the download")
            reload_with(lb, text.replace('name = "s2"', 'name = "s2"\nweight = 2'), 2)
            advertised = set()
            for source in SOURCES[1:7]:
                session = open_session(lb.host, lb.port, "ftptest", "ftptest", source)
                try:
                    advertised.add(session.makepasv()[1])
                    assert whoami(session) in {"s1", "s2"}
                finally:
                    end_session(session)
            assert not done.done(), "the download ended too soon to test"
            assert advertised == {first}
            assert done.result(timeout=120) == sha256(big)
            assert "passive_listener_failed" not in lb.log_text()


def test_health_and_stickiness_carry_over_a_reload() -> None:
    """A DOWN server stays DOWN across a reload (the new generation tries no session
    on it), and a client stuck to a server stays with it."""
    hosts = ["127.0.0.35", "127.0.0.36", "127.0.0.37"]
    with started_servers("pyftpdlib", hosts) as servers:
        label_servers(servers, b"x")
        port = free_port()
        # s3 is paused, not stopped: a connect to it succeeds and its banner never
        # comes, so a check needs its whole timeout to see it dead again.
        health = '{ type = "ftp", interval = "1s", rise = 1, fall = 1, timeout = "2s" }'
        text = config_for(servers, ["s1", "s2", "s3"], port, 1).replace(HEALTH, health)
        text = text.replace('name = "pool"', 'name = "pool"\nsticky = "source"')
        with balancer(text, "127.0.0.1", port) as lb:

            def reach(source: str) -> str:
                ftp = open_session(lb.host, lb.port, "ftptest", "ftptest", source)
                try:
                    return whoami(ftp)
                finally:
                    end_session(ftp)

            stuck = {source: reach(source) for source in SOURCES[:6]}
            assert set(stuck.values()) == {"s1", "s2", "s3"}, stuck
            os.kill(servers[2].pid, signal.SIGSTOP)
            try:
                wait_until(lambda: "state=DOWN" in lb.log_text(), 10, "s3 marked DOWN")
                reload_with(lb, text.replace('name = "s1"', 'name = "s1"\nweight = 2'), 2)
                failures_before = lb.log_text().count("warning=connect_failed")
                for source, server in stuck.items():
                    if server != "s3":
                        assert reach(source) == server, source
                # Clients stuck to the dead s3 go elsewhere, with no attempt on it.
                moved = [reach(source) for source, server in stuck.items() if server == "s3"]
                assert moved and "s3" not in moved
                assert lb.log_text().count("warning=connect_failed") == failures_before
            finally:
                os.kill(servers[2].pid, signal.SIGCONT)


def test_a_generation_that_cannot_start_leaves_the_running_one_as_it_was() -> None:
    """The new file moves s1 to s2's address and adds a bind that is taken: the
    reload fails, is logged, and sessions still reach s1 at its own address."""
    hosts = ["127.0.0.38", "127.0.0.39"]
    with started_servers("pyftpdlib", hosts) as servers, socket.socket() as squatter:
        label_servers(servers, b"x")
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        taken = squatter.getsockname()[1]
        port = free_port()
        text = config_for(servers, ["s1"], port, 1)
        with balancer(text, "127.0.0.1", port) as lb:
            broken = text.replace(
                f"{servers[0].host}:{servers[0].port}", f"{servers[1].host}:{servers[1].port}"
            ).replace(
                f'bind = ["127.0.0.1:{port}"', f'bind = ["127.0.0.1:{port}", "127.0.0.1:{taken}"'
            )
            lb.config_path.write_text(broken)
            lb.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "warning=reload_failed" in lb.log_text(), 10, "the failure")
            assert reloads(lb) == []
            for source in SOURCES[:4]:
                ftp = open_session(lb.host, lb.port, "ftptest", "ftptest", source)
                try:
                    assert whoami(ftp) == "s1"
                finally:
                    end_session(ftp)
