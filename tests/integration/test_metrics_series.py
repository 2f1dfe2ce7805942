"""The /metrics of a real ``ftplb run`` with two workers: every series operators rely on.

Build info, per-process resource metrics for the master and each worker,
duration and size histograms, logins that servers accepted and refused, and
the DRAIN and MAINT states after runtime actions, all read back through the
admin listener, whose Content-Type is prometheus_client's own.
"""

from __future__ import annotations

import contextlib
import ftplib
import json
import math
import socket
from typing import Any

import pytest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from ftplb.runtime.steering import steered_index
from tests.integration import clients
from tests.integration.admin_api import SOURCES, Api, api_farm
from tests.integration.farms import farm
from tests.integration.test_admin_live import (
    admin_section,
    eventually,
    free_port_for_admin,
    get,
    metric_sum,
)
from tests.integration.workers_farm import records, wait_ready

pytestmark = pytest.mark.integration

Sample = tuple[str, dict[str, str], float]


def scrape(api: Api) -> tuple[str, list[Sample]]:
    status, headers, body = api.call("GET", "/metrics")
    assert status == 200 and isinstance(body, str), status
    samples = [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    ]
    return headers["Content-Type"], samples


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())


def series(samples: list[Sample], name: str) -> list[dict[str, str]]:
    return [labels for n, labels, _ in samples if n == name]


def stats(api: Api) -> dict[str, Any]:
    status, _, body = api.call("GET", "/stats.json")
    assert status == 200 and isinstance(body, dict)
    return body


def state(api: Api, server: str, name: str) -> float:
    return total(scrape(api)[1], "ftplb_server_state", server=server, state=name)


def test_build_processes_histograms_logins_and_admin_states_with_two_workers() -> None:
    with api_farm(defaults="workers = 2") as api:
        lb = api.farm.lb
        wait_ready(lb)
        sessions = 8
        for source in SOURCES[:sessions]:
            assert api.landed(source) in {"s1", "s2"}
        refused = ftplib.FTP(timeout=30)
        refused.connect(lb.host, lb.port)
        with pytest.raises(ftplib.error_perm, match="530"):
            refused.login(api.farm.user, "not the password")
        with contextlib.suppress(OSError, EOFError, ftplib.Error):
            refused.quit()
        refused.close()
        assert {fields["worker"] for fields in records(lb, "session")} == {"0", "1"}

        def logged_in() -> bool:
            samples = scrape(api)[1]
            return (
                total(samples, "ftplb_logins_total", result="ok") == sessions
                and total(samples, "ftplb_logins_total", result="failed") == 1
            )

        assert eventually(logged_in)
        kind, samples = scrape(api)
        assert kind == CONTENT_TYPE_LATEST

        (build,) = series(samples, "ftplb_build_info")
        assert build["version"] and build["python"].count(".") == 2
        workers = {labels["worker"] for labels in series(samples, "process_cpu_seconds_total")}
        assert workers == {"main", "0", "1"}
        for name in (
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ):
            assert {labels["worker"] for labels in series(samples, name)} == workers
            assert all(v > 0 for n, _, v in samples if n == name)

        ended = sessions + 1
        assert eventually(
            lambda: total(scrape(api)[1], "ftplb_session_duration_seconds_count") >= ended
        )
        samples = scrape(api)[1]
        assert total(samples, "ftplb_transfer_duration_seconds_count") == sessions
        assert total(samples, "ftplb_transfer_size_bytes_count") == sessions
        inf = total(samples, "ftplb_transfer_size_bytes_bucket", le="+Inf")
        assert inf == sessions
        # Each download is the 2-byte whoami file: in the lowest bucket (1 KiB).
        assert total(samples, "ftplb_transfer_size_bytes_bucket", le="1024.0") == sessions
        assert total(samples, "ftplb_transfer_size_bytes_sum") == 2 * sessions
        assert not math.isnan(total(samples, "ftplb_session_duration_seconds_sum"))

        frontend = stats(api)["frontends"][0]
        assert (frontend["logins"], frontend["failed_logins"]) == (sessions, 1)
        assert frontend["max_sessions"] >= 1
        servers = stats(api)["backends"][0]["servers"]
        assert sum(s["logins"] for s in servers) == sessions
        assert all(s["last_check_reason"] for s in servers), servers
        assert all(s["state_since"] is not None for s in servers)

        assert state(api, "s1", "UP") == 1
        assert api.act("s1", {"state": "drain"})[0] == 200
        assert api.act("s2", {"state": "maint"})[0] == 200
        assert eventually(lambda: state(api, "s1", "DRAIN") == 1 and state(api, "s1", "UP") == 0)
        assert eventually(lambda: state(api, "s2", "MAINT") == 1 and state(api, "s2", "UP") == 0)
        servers = {s["name"]: s for s in stats(api)["backends"][0]["servers"]}
        assert (servers["s1"]["state"], servers["s2"]["state"]) == ("DRAIN", "MAINT")
        assert json.dumps(stats(api))  # the whole document is plain JSON


def test_a_dead_server_counts_its_retries_redispatches_errors_and_warnings() -> None:
    admin_port = free_port_for_admin()
    # No health checks: the dead server stays in rotation, so every session
    # that picks it is retried on the other one (the defaults redispatch).
    with farm(
        sections=admin_section(admin_port),
        health='{ type = "none" }',
    ) as group:
        lb = group.lb
        group.servers[0].stop()
        for _ in range(4):
            with clients.ftplib_session(lb.host, lb.port, group.user, group.password, "epsv"):
                pass
        failed = len([w for w in records(lb, "warning") if w["warning"] == "connect_failed"])
        assert failed >= 1

        def dead() -> dict[str, Any]:
            document = json.loads(get(admin_port, "/stats.json")[2])
            servers = {s["name"]: s for s in document["backends"][0]["servers"]}
            return dict(servers["s1"])

        assert eventually(lambda: dead()["retries"] == failed), dead()
        s1 = dead()
        assert (s1["redispatches"], s1["errors"], s1["warnings"]) == (failed, failed, failed)
        assert metric_sum(admin_port, "ftplb_server_redispatches_total", server="s1") == failed
        assert (
            metric_sum(admin_port, "ftplb_warnings_total", server="s1", warning="connect_failed")
            == failed
        )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_session_counts_on_its_frontend_as_soon_as_it_connects(workers: int) -> None:
    """With balance = "user" no server takes a session before USER; its frontend counts it
    at once, and the servers' total only once one takes it."""
    with api_farm(defaults=f"workers = {workers}", backend='balance = "user"') as api:
        lb = api.farm.lb
        if workers > 1:
            wait_ready(lb)
        with socket.create_connection((lb.host, lb.port), timeout=30) as waiting:
            assert waiting.recv(1024).startswith(b"220 ")

            def accepted() -> float:
                return total(scrape(api)[1], "ftplb_frontend_sessions_total", frontend="ftp")

            def ended() -> int:
                # The harness's readiness probes: sessions that ended before any server.
                return len(records(lb, "session"))

            assert eventually(lambda: accepted() == ended() + 1), (accepted(), ended())
            probes = ended()
            served = total(scrape(api)[1], "ftplb_sessions_total") - probes
            assert served == 0
            frontend = stats(api)["frontends"][0]
            assert (frontend["sessions"], frontend["current_sessions"]) == (probes + 1, 1)
            assert stats(api)["backends"][0]["sessions"] == 0
            waiting.sendall(b"USER " + api.farm.user.encode() + b"\r\n")
            assert waiting.recv(1024).startswith(b"331 ")
            assert eventually(lambda: total(scrape(api)[1], "ftplb_sessions_total") == probes + 1)
            assert accepted() == probes + 1


def test_peaks_with_two_workers_are_those_of_their_sum() -> None:
    """Two sessions held in each worker: the balancer had four at once, though neither
    worker alone had more than two; the peak stays once they are gone."""
    with api_farm(defaults="workers = 2", health='{ type = "none" }') as api:
        lb = api.farm.lb
        wait_ready(lb)
        per_worker = [[s for s in SOURCES if steered_index(s, 2) == index][:2] for index in (0, 1)]
        held = [
            clients.ftplib_session(lb.host, lb.port, api.farm.user, api.farm.password, "epsv", s)
            for sources in per_worker
            for s in sources
        ]
        try:

            def frontend() -> dict[str, Any]:
                return dict(stats(api)["frontends"][0])

            assert eventually(lambda: frontend()["current_sessions"] == 4), frontend()
            assert eventually(lambda: frontend()["max_sessions"] == 4), frontend()
            assert eventually(lambda: total(scrape(api)[1], "ftplb_server_max_sessions") == 4), (
                scrape(api)
            )
        finally:
            for client in held:
                client.close()
        assert eventually(lambda: frontend()["current_sessions"] == 0), frontend()
        assert frontend()["max_sessions"] == 4
