"""Drain, maintenance and weights through the admin API of a real ``ftplb run``.

* A drained server takes none of 50 new sessions (sticky clients included),
  while a download its own session runs finishes intact; ``ready`` brings it
  back. With ``workers = 2`` every worker's routing and stats follow.
* ``maint`` stops the server's health checks: its own log shows no probe.
* With weights 1 and 3, 100 sessions split about 1:3, and a runtime weight
  moves the split.
"""

from __future__ import annotations

import ftplib
import json
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.admin_api import (
    APPLIED_WITHIN,
    SOURCES,
    Api,
    admin_section,
    api_farm,
)
from tests.integration.balancer import balancer, simple_config
from tests.integration.farms import Farm, started_servers
from tests.integration.load import end_session, open_session, sessions_opened, sha256, slow_download
from tests.integration.servers import FtpServer
from tests.integration.test_admin_live import free_port_for_admin
from tests.integration.workers_farm import wait_ready
from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration

BIG_SIZE = 24 * 1024 * 1024


def stats_state(api: Api, server: str) -> str:
    """The server's state on /stats.json: "DRAIN", or "UP/DRAIN" while processes differ."""
    status, _, answer = api.call("GET", "/stats.json")
    assert status == 200 and isinstance(answer, dict), (status, answer)
    for backend in answer["backends"]:
        for entry in backend["servers"]:
            if entry["name"] == server:
                return str(entry["state"])
    raise AssertionError(f"{server} not on /stats.json: {json.dumps(answer)[:500]}")


def session_on(api: Api, name: str) -> tuple[ftplib.FTP, str]:
    """An open ftplib session that reached ``name``, and its source address."""
    lb = api.farm.lb
    for source in SOURCES:
        ftp = open_session(lb.host, lb.port, api.farm.user, api.farm.password, source)
        buffer: list[bytes] = []
        ftp.retrbinary("RETR whoami", buffer.append)
        if b"".join(buffer).decode() == name:
            return ftp, source
        end_session(ftp)
    raise AssertionError(f"no session from {SOURCES[0]}.. reached {name} on {lb.port}")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_drained_server_takes_no_new_session_while_its_own_finishes(
    tmp_path: Path, workers: int
) -> None:
    big = bytes(range(256)) * (BIG_SIZE // 256)
    with api_farm(defaults=f"workers = {workers}", backend='sticky = "source"') as api:
        if workers > 1:
            wait_ready(api.farm.lb)
        for server in api.farm.servers:
            (server.root / "big.bin").write_bytes(big)
        ftp, stuck_source = session_on(api, "s1")
        with ThreadPoolExecutor(5) as pool:
            down = tmp_path / "big.down"
            download = pool.submit(slow_download, ftp, "big.bin", down, 0.02)
            download.add_done_callback(lambda _: end_session(ftp))
            wait_until(lambda: down.exists() and down.stat().st_size > 0, 20, "the download")
            status, answer = api.act("s1", {"state": "drain"})
            assert status == 200 and isinstance(answer, dict), answer
            assert answer["admin_state"] == "DRAIN"
            time.sleep(APPLIED_WITHIN)
            # 50 new sessions, the one from the source stuck to s1 among them.
            sources = [stuck_source, *[s for s in SOURCES if s != stuck_source][:49]]
            landed = list(pool.map(api.landed, sources))
            assert landed == ["s2"] * 50
            assert not download.done(), "the download ended too soon to test"
            assert download.result(timeout=120) == sha256(big)
        # Every process's stats show the drain, not a mix of states.
        wait_until(lambda: stats_state(api, "s1") == "DRAIN", 3, "DRAIN on /stats.json")
        status, answer = api.act("s1", {"state": "ready"})
        assert status == 200 and isinstance(answer, dict) and answer["admin_state"] == "READY"
        time.sleep(APPLIED_WITHIN)
        # Sources that the drain did not stick to s2.
        fresh = [s for s in SOURCES if s not in sources]
        assert "s1" in {api.landed(source) for source in fresh}
        wait_until(lambda: stats_state(api, "s1") == "UP", 3, "UP on /stats.json")


def test_maint_stops_the_health_checks_and_ready_resumes_them() -> None:
    health = '{ type = "ftp", interval = "200ms", rise = 1, fall = 2, timeout = "1s" }'
    with api_farm(health=health) as api:
        s1 = api.farm.servers[0]
        wait_until(lambda: sessions_opened(s1) >= 3, 5, "health checks of s1")
        status, answer = api.act("s1", {"state": "maint"})
        assert status == 200 and isinstance(answer, dict), answer
        time.sleep(APPLIED_WITHIN)  # the record applied, and a probe in flight finished
        before = sessions_opened(s1)
        time.sleep(2.0)  # ten intervals
        assert sessions_opened(s1) == before, "a probe reached a server in maintenance"
        assert api.landed() == "s2"
        assert stats_state(api, "s1") == "MAINT"
        api.act("s1", {"state": "ready"})
        wait_until(lambda: sessions_opened(s1) > before, 3, "the checks of s1 to resume")


def _weighted_config(servers: list[FtpServer], port: int, admin_port: int) -> str:
    text = simple_config([], port=port, sections=admin_section(admin_port))
    for index, (server, weight) in enumerate(zip(servers, (1, 3), strict=True), start=1):
        text += (
            f'\n[[backends.servers]]\nname = "s{index}"\n'
            f'address = "{server.host}:{server.port}"\nweight = {weight}\n'
        )
    return text


def test_weights_split_sessions_and_a_runtime_weight_moves_the_split() -> None:
    with started_servers("pyftpdlib", ["127.0.0.41", "127.0.0.42"]) as servers:
        for index, server in enumerate(servers, start=1):
            (server.root / "whoami").write_text(f"s{index}")
            (server.root / "whoami").chmod(0o644)
        port, admin_port = free_port(), free_port_for_admin()
        text = _weighted_config(servers, port, admin_port)
        with balancer(text, "127.0.0.1", port) as lb:
            api = Api(Farm(servers, lb), admin_port)
            first = Counter(api.landed() for _ in range(100))
            assert 20 <= first["s1"] <= 30 and first["s1"] + first["s2"] == 100, first
            status, answer = api.act("s1", {"weight": 3})
            assert status == 200 and isinstance(answer, dict), answer
            assert (answer["weight"], answer["configured_weight"]) == (3, 1)
            _, _, stats = api.call("GET", "/stats.json")
            assert isinstance(stats, dict)
            (s1,) = [s for s in stats["backends"][0]["servers"] if s["name"] == "s1"]
            assert (s1["weight"], s1["configured_weight"]) == (3, 1)
            _, _, page = api.call("GET", "/stats")
            assert "<td>3 (file: 1)</td>" in str(page)
            time.sleep(APPLIED_WITHIN)
            second = Counter(api.landed() for _ in range(100))
            assert 45 <= second["s1"] <= 55, second


def test_an_action_survives_a_reload() -> None:
    with api_farm() as api:
        lb = api.farm.lb
        status, _ = api.act("s1", {"state": "drain"})
        assert status == 200
        time.sleep(APPLIED_WITHIN)
        assert {api.landed() for _ in range(4)} == {"s2"}
        text = lb.config_path.read_text()
        lb.config_path.write_text(
            text.replace("timeout_data", 'timeout_client = "200s"\ntimeout_data')
        )
        lb.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "message=reloaded" in lb.log_text(), 10, "the reload")
        # The new generation follows the record from its first session on.
        assert [api.landed() for _ in range(10)] == ["s2"] * 10
        assert api.server("s1")["admin_state"] == "DRAIN"
