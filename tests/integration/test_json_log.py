"""``log_format = "json"``: every line a real ftplb writes is JSON, health flips included.

A real ``ftplb run`` serves two pyftpdlib servers; one of them stops and comes
back, so the log holds connect failures, session ends and both health flips;
then a reload is refused (an invalid file) and one succeeds.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration import clients, farms, servers
from tests.integration.balancer import RunningBalancer

pytestmark = pytest.mark.integration

CONTENT = b"json log\n" * 100
HEALTH = '{ type = "ftp", interval = "300ms", rise = 1, fall = 1, timeout = "1s" }'


def records(lb: RunningBalancer) -> list[dict[str, Any]]:
    """Every line of the log (stdout and stderr), each parsed as one JSON object."""
    parsed = []
    for line in lb.log_text().splitlines():
        record = json.loads(line)  # a plain-text line fails the test here
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def flips(lb: RunningBalancer, server: str) -> list[str]:
    return [r["state"] for r in records(lb) if r["event"] == "health" and r["server"] == server]


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(0.05)


def reload_refused_then_done(lb: RunningBalancer) -> None:
    """SIGHUP with an invalid file (refused), then with the valid one again (reloaded)."""
    valid = lb.config_path.read_text()
    lb.config_path.write_text(valid.replace("[defaults]", '[defaults]\ntimeout_client = "soon"'))
    lb.process.send_signal(signal.SIGHUP)
    wait_until(lambda: any(r.get("warning") == "reload_refused" for r in records(lb)), 5, "refused")
    lb.config_path.write_text(valid)
    lb.process.send_signal(signal.SIGHUP)
    wait_until(lambda: any(r.get("message") == "reloaded" for r in records(lb)), 10, "reloaded")


def session(lb: RunningBalancer, user: str, password: str) -> None:
    with clients.ftplib_session(lb.host, lb.port, user, password, "pasv") as ftp:
        assert ftp.retr("f.txt") == CONTENT


def test_a_server_going_down_and_back_logs_only_json_lines() -> None:
    with farms.farm(
        files={"f.txt": CONTENT}, health=HEALTH, defaults='log_format = "json"'
    ) as farm:
        lb = farm.lb
        first = farm.servers[0]
        first.stop()
        # Sessions that pick s1 before the checks notice fail over to s2.
        for _ in range(4):
            session(lb, farm.user, farm.password)
        wait_until(lambda: flips(lb, "s1") == ["DOWN"], 5, "s1 DOWN")
        restarted = servers.start_pyftpdlib(first.host, first.port, first.root)
        try:
            wait_until(lambda: flips(lb, "s1") == ["DOWN", "UP"], 5, "s1 UP again")
            session(lb, farm.user, farm.password)
            reload_refused_then_done(lb)
            session(lb, farm.user, farm.password)
        finally:
            restarted.stop()
    logged = records(lb)  # after the balancer stopped: its last lines too

    health = [r for r in logged if r["event"] == "health"]
    down, up = health  # each flip once, and s2 never flipped
    # A check may be under way as s1 stops: it then loses its connection
    # before the banner, instead of finding the port closed.
    assert (down["layer"], down["detail"]) in {
        ("L4", "connect refused"),
        ("L7", "connection lost reading banner"),
        ("L7", "connection closed reading banner"),
    }, health
    assert (up["layer"], up["detail"]) == ("L7", "220 banner"), health
    for record, state in ((down, "DOWN"), (up, "UP")):
        assert isinstance(record["time"], str) and isinstance(record["duration"], float)
        shown = {
            k: v for k, v in record.items() if k not in ("time", "duration", "layer", "detail")
        }
        assert shown == {
            "event": "health",
            "backend": "pool",
            "server": "s1",
            "state": state,
            "check": "ftp",
        }

    (refused,) = [r for r in logged if r.get("warning") == "reload_refused"]
    assert "timeout_client" in refused["problems"], refused
    assert [r["generation"] for r in logged if r.get("message") == "reloaded"] == [2]
    # Sessions that picked s1 before the checks noticed log a connect failure
    # each; whether any did depends on when the check ran, so only their form
    # is checked.
    warnings = [r for r in logged if r["event"] == "warning" and r is not refused]
    assert all(
        (r["warning"], r["message"], r["server"])
        == ("connect_failed", "server connect failed", "s1")
        for r in warnings
    ), warnings
    ends = [r["end"] for r in logged if r["event"] == "session" and r.get("user") == farm.user]
    assert ends == ["quit"] * 6, ends
    assert [r["message"] for r in logged if r["event"] == "info"][-1] == "stopping"
