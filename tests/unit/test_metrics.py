"""Metrics: events and samples -> files -> sums over processes -> snapshot -> page.

No sockets and no event loop: events go through a real EventLog into a
Metrics, and the files are read back with prometheus_client's own collector.
Two processes are simulated with two process ids writing into one directory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.metrics_core import Metric

from ftplb.admin.snapshot import (
    BackendStats,
    FrontendStats,
    ServerStats,
    Snapshot,
    build_snapshot,
    collect,
    snapshot_dict,
)
from ftplb.admin.stats_page import render
from ftplb.balancing.pool import Pool
from ftplb.balancing.state import AdminState, Server
from ftplb.config.load import ConfigError, load_config_text
from ftplb.config.schema import Config
from ftplb.proto.outcomes import EndReason
from ftplb.runtime import metrics as m
from ftplb.runtime.logs import EventLog, LogWarning
from ftplb.runtime.probes import ProbeResult
from tests.metrics_processes import act_as_process

CONFIG = """
[[frontends]]
name = "ftp"
bind = ["127.0.0.1:2121"]
backend = "pool"

[[frontends]]
name = "other"
bind = ["127.0.0.1:2122"]
backend = "spare"

[[backends]]
name = "pool"
[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"
weight = 3
[[backends.servers]]
name = "s2"
address = "127.0.0.12:21"

[[backends]]
name = "spare"
[[backends.servers]]
name = "s9"
address = "127.0.0.19:21"
"""


@pytest.fixture
def config() -> Config:
    return load_config_text(CONFIG)


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    path = str(tmp_path / "metrics")
    act_as_process(monkeypatch, path, pid=1001)
    yield path


def pools() -> dict[str, Pool]:
    return {
        "pool": Pool("pool", [Server("s1", "127.0.0.11", 21), Server("s2", "127.0.0.12", 21)]),
        "spare": Pool("spare", [Server("s9", "127.0.0.19", 21)]),
    }


@dataclass
class FakeChecks:
    results: dict[str, ProbeResult]

    def result(self, server_name: str) -> ProbeResult | None:
        return self.results.get(server_name)


def value(families: list[Metric], sample: str, **labels: str) -> float:
    """The sum of the samples called ``sample`` whose labels include ``labels``."""
    return sum(
        s.value
        for family in families
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def session(
    log: EventLog, server: str, end: EndReason, bytes_in: int = 0, bytes_out: int = 0
) -> None:
    log.session(
        frontend="ftp",
        client="127.0.0.100:40000",
        server=server,
        user="alice",
        duration=0.1,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        end=end,
    )


def transfer(log: EventLog, command: str, result: int, to_client: int, to_server: int) -> None:
    log.transfer(
        frontend="ftp",
        client="127.0.0.100",
        server="s1",
        user="alice",
        command=command,
        path="/f",
        bytes_to_client=to_client,
        bytes_to_server=to_server,
        duration=0.1,
        client_mode="EPSV",
        server_mode="PASV",
        result=result,
        error="-",
    )


def attached(
    config: Config, the_pools: dict[str, Pool] | None = None, **kw: Any
) -> tuple[m.Metrics, EventLog]:
    log = EventLog("text", io.StringIO())
    metrics = m.Metrics()
    metrics.attach(log, the_pools if the_pools is not None else pools(), config, **kw)
    return metrics, log


# ---------------------------------------------------------------- counters


def test_session_events_become_counters(directory: str, config: Config) -> None:
    metrics, log = attached(config)
    session(log, "s1", EndReason.QUIT, bytes_in=100, bytes_out=2000)
    session(log, "s1", EndReason.CLIENT_CLOSED, bytes_in=5, bytes_out=7)
    session(log, "s2", EndReason.SERVER_TIMEOUT)
    metrics.flush()
    got = collect(directory)
    labels = {"frontend": "ftp", "backend": "pool"}
    assert value(got, "ftplb_sessions_total", server="s1", **labels) == 2
    assert value(got, "ftplb_sessions_total", server="s2", **labels) == 1
    assert value(got, "ftplb_session_ends_total", server="s1", reason="quit") == 1
    assert value(got, "ftplb_session_ends_total", reason="client_closed") == 1
    assert value(got, "ftplb_session_ends_total", server="s2", reason="server_timeout") == 1
    assert value(got, "ftplb_control_bytes_total", server="s1", direction="in") == 105
    assert value(got, "ftplb_control_bytes_total", server="s1", direction="out") == 2007
    assert value(got, "ftplb_refusals_total") == 0


def test_counts_reach_the_files_only_when_flushed(directory: str, config: Config) -> None:
    metrics, log = attached(config)
    session(log, "s1", EndReason.QUIT)
    assert value(collect(directory), "ftplb_sessions_total") == 0
    metrics.sample()  # what the 1 s timer does
    assert value(collect(directory), "ftplb_sessions_total") == 1


def test_transfers_by_command_and_result_class(directory: str, config: Config) -> None:
    metrics, log = attached(config)
    transfer(log, "RETR", 226, to_client=4096, to_server=0)
    transfer(log, "RETR", 426, to_client=100, to_server=0)
    transfer(log, "STOR", 226, to_client=0, to_server=777)
    transfer(log, "XFOO\r\n", 226, to_client=1, to_server=1)  # never a label of its own
    metrics.flush()
    got = collect(directory)
    assert value(got, "ftplb_transfers_total", command="RETR", result="2xx") == 1
    assert value(got, "ftplb_transfers_total", command="RETR", result="4xx") == 1
    assert value(got, "ftplb_transfers_total", command="STOR", result="2xx") == 1
    assert value(got, "ftplb_transfers_total", command="other") == 1
    assert value(got, "ftplb_transfer_bytes_total", direction="out") == 4197
    assert value(got, "ftplb_transfer_bytes_total", direction="in", backend="pool") == 778


def test_refusals_connect_failures_and_passive_listeners(directory: str, config: Config) -> None:
    metrics, log = attached(config)
    log.warning(LogWarning.CONNECT_FAILED, frontend="ftp", server="s2", client="x", reason="no")
    session(log, "-", EndReason.NO_SERVER)
    session(log, "-", EndReason.NO_SERVER)
    session(log, "-", EndReason.LIMIT)
    session(log, "-", EndReason.QUIT)  # quit before USER: not a refusal
    log.warning(LogWarning.PASSIVE_LISTENER_FAILED, frontend="ftp", reason="no free port")
    log.notify("passive", frontend="ftp")
    log.notify("passive", frontend="ftp")
    log.warning(LogWarning.FOREIGN_DATA_REFUSED, side="client", peer="x")
    log.warning(LogWarning.ORPHAN_DATA_REFUSED, frontend="ftp", client="x", server="s1")
    log.warning(LogWarning.PROXY_HEADER_REFUSED, frontend="tcp", peer="x", reason="not_proxy")
    session(log, "-", EndReason.PROXY_REFUSED)
    metrics.flush()
    got = collect(directory)
    assert value(got, "ftplb_server_connect_failures_total", server="s2", backend="pool") == 1
    assert value(got, "ftplb_refusals_total", reason="no_server", frontend="ftp") == 2
    assert value(got, "ftplb_refusals_total", reason="limit") == 1
    assert value(got, "ftplb_session_ends_total", server="-", reason="quit") == 1
    assert value(got, "ftplb_passive_listeners_total", result="opened") == 2
    assert value(got, "ftplb_passive_listeners_total", result="failed") == 1
    assert value(got, "ftplb_data_connections_refused_total", frontend="-") == 1
    assert value(got, "ftplb_data_connections_refused_total", frontend="ftp") == 1
    assert value(got, "ftplb_data_connections_refused_total", frontend="tcp") == 1
    assert value(got, "ftplb_refusals_total", reason="proxy_refused") == 1


def test_tcp_mode_data_connections_count_as_transfers(directory: str, config: Config) -> None:
    metrics, log = attached(config)
    for end in (EndReason.CLOSED, EndReason.CLIENT_RESET, EndReason.IDLE_TIMEOUT):
        log.data(
            frontend="ftp", mode="tcp", client="c", server="s1", port=40000,
            duration=0.1, bytes_to_server=10, bytes_to_client=20, end=end,
        )  # fmt: skip
    metrics.flush()
    got = collect(directory)
    assert value(got, "ftplb_transfers_total", command="-", result="relayed") == 1
    assert value(got, "ftplb_transfers_total", command="-", result="failed") == 2
    assert value(got, "ftplb_transfer_bytes_total", server="s1", direction="out") == 60


@pytest.mark.parametrize("reason", list(EndReason))
def test_each_end_reason_counts_under_its_own_label(
    directory: str, config: Config, reason: EndReason
) -> None:
    metrics, log = attached(config)
    session(log, "s1", reason)
    metrics.flush()
    got = collect(directory)
    ends = {
        s.labels["reason"]: s.value
        for family in got
        for s in family.samples
        if s.name == "ftplb_session_ends_total" and s.value
    }
    refusals = {
        s.labels["reason"]: s.value
        for family in got
        for s in family.samples
        if s.name == "ftplb_refusals_total" and s.value
    }
    assert ends == {reason.value: 1}
    assert refusals == (
        {reason.value: 1}
        if reason
        in (
            EndReason.LIMIT,
            EndReason.SESSIONS_PER_IP,
            EndReason.SESSION_RATE,
            EndReason.NO_SERVER,
            EndReason.PROXY_REFUSED,
            EndReason.BANNED,
            EndReason.DENIED,
        )
        else {}
    )


def test_an_end_value_read_back_from_json_counts_like_its_member(
    directory: str, config: Config
) -> None:
    metrics, log = attached(config)
    log.write("session", frontend="ftp", server="s1", end="client_timeout")
    log.write("session", frontend="ftp", server="s1", end="client idle timeout")  # old text
    log.write("session", frontend="ftp", server="s1")
    metrics.flush()
    got = collect(directory)
    assert value(got, "ftplb_session_ends_total", reason="client_timeout") == 1
    assert value(got, "ftplb_session_ends_total", reason="other") == 2


def test_warnings_count_by_member_never_by_text(directory: str, config: Config) -> None:
    metrics, log = attached(config)
    log.write("warning", message="server connect failed", frontend="ftp", server="s2")
    log.write("warning", warning="connect_failed", frontend="ftp", server="s2")
    log.warning(LogWarning.CONNECT_FAILED, frontend="ftp", server="s1")
    metrics.flush()
    got = collect(directory)
    assert value(got, "ftplb_server_connect_failures_total", server="s2") == 0
    assert value(got, "ftplb_server_connect_failures_total", server="s1") == 1


@given(st.one_of(st.text(max_size=40), st.integers(), st.none()))
def test_end_labels_are_a_bounded_set(end: object) -> None:
    got = m._end(end)
    assert got is None or (isinstance(got, EndReason) and got == end)


# ------------------------------------------------------------------ samples


def test_state_is_sampled_from_the_pools(directory: str, config: Config) -> None:
    the_pools = pools()
    s1, s2 = the_pools["pool"].servers
    s1.active = 3
    s2.healthy = False
    the_pools["spare"].servers[0].admin = AdminState.MAINT
    checks = {
        "pool": FakeChecks(
            {
                "s1": ProbeResult(True, "L7", "220 ready", 0.004),
                "s2": ProbeResult(False, "L4", "connect refused", 0.001),
            }
        )
    }
    metrics, _ = attached(config, the_pools, checkers=checks)
    got = collect(directory)
    assert value(got, "ftplb_server_current_sessions", server="s1") == 3
    assert value(got, "ftplb_server_state", server="s1", state="UP") == 1
    assert value(got, "ftplb_server_state", server="s1", state="DOWN") == 0
    assert value(got, "ftplb_server_state", server="s2", state="DOWN") == 1
    assert value(got, "ftplb_server_state", server="s9", state="MAINT") == 1
    assert value(got, "ftplb_server_check_ok", server="s1") == 1
    assert value(got, "ftplb_server_check_ok", server="s2") == 0
    assert value(got, "ftplb_server_check_duration_seconds", server="s1") == 0.004
    assert value(got, "ftplb_health_checks_total", server="s2", result="fail", layer="L4") == 1
    assert value(got, "ftplb_worker_processes") == 1
    # The same result sampled again is the same check; a new result is a new one.
    metrics.sample()
    checks["pool"].results["s1"] = ProbeResult(True, "L7", "220 ready", 0.002)
    metrics.sample()
    got = collect(directory)
    assert value(got, "ftplb_health_checks_total", server="s1", result="ok") == 2
    assert value(got, "ftplb_server_check_duration_seconds", server="s1") == 0.002


def test_stop_zeroes_this_process_gauges_but_keeps_counters(directory: str, config: Config) -> None:
    the_pools = pools()
    the_pools["pool"].servers[0].active = 2
    metrics, log = attached(config, the_pools)
    session(log, "s1", EndReason.QUIT)
    metrics.stop()
    session(log, "s1", EndReason.QUIT)  # after stop: not observed any more
    metrics.flush()
    got = collect(directory)
    assert value(got, "ftplb_server_current_sessions") == 0
    assert value(got, "ftplb_worker_processes") == 0
    assert value(got, "ftplb_server_state") == 0
    assert value(got, "ftplb_sessions_total") == 1


def test_reattach_after_a_reload_zeroes_servers_that_are_gone(
    directory: str, config: Config
) -> None:
    old = pools()
    old["spare"].servers[0].active = 4
    metrics, log = attached(config, old)
    new = {"pool": pools()["pool"]}
    metrics.attach(log, new, config)
    got = collect(directory)
    assert value(got, "ftplb_server_current_sessions", server="s9") == 0
    assert value(got, "ftplb_server_state", server="s9") == 0
    assert value(got, "ftplb_server_state", server="s1", state="UP") == 1


def test_two_processes_are_summed_and_a_dead_one_loses_its_gauges(
    directory: str, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_pools = pools()
    first_pools["pool"].servers[0].active = 2
    first, first_log = attached(config, first_pools)
    session(first_log, "s1", EndReason.QUIT, bytes_in=10)
    first.flush()

    act_as_process(monkeypatch, directory, pid=1002)  # the same directory, another process
    second_pools = pools()
    second_pools["pool"].servers[0].active = 5
    second_pools["pool"].servers[1].healthy = False
    second, second_log = attached(config, second_pools)
    session(second_log, "s1", EndReason.QUIT, bytes_in=32)
    session(second_log, "s2", EndReason.SERVER_TIMEOUT)
    second.flush()

    names = {p.name for p in Path(directory).glob("*.db")}
    for pid in (1001, 1002):  # each process has files of its own
        assert {f"counter_{pid}.db", f"gauge_livesum_{pid}.db", f"gauge_livemax_{pid}.db"} <= names
    got = collect(directory)
    assert value(got, "ftplb_sessions_total", server="s1") == 2
    assert value(got, "ftplb_sessions_total") == 3
    assert value(got, "ftplb_control_bytes_total", direction="in") == 42
    assert value(got, "ftplb_server_current_sessions", server="s1") == 7
    assert value(got, "ftplb_worker_processes") == 2
    # livemax: each state that some live process sees.
    assert value(got, "ftplb_server_state", server="s2", state="UP") == 1
    assert value(got, "ftplb_server_state", server="s2", state="DOWN") == 1

    m.mark_process_dead(1001, directory)
    got = collect(directory)
    assert value(got, "ftplb_sessions_total") == 3  # what it counted still happened
    assert value(got, "ftplb_server_current_sessions", server="s1") == 5
    assert value(got, "ftplb_worker_processes") == 1
    assert value(got, "ftplb_server_state", server="s2", state="UP") == 0


def test_metrics_need_enable_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m, "_mode", m._Mode())  # a process that never called enable()
    with pytest.raises(RuntimeError, match="enable"):
        m.Metrics()


def test_clear_directory_removes_an_earlier_run(directory: str, config: Config) -> None:
    metrics, log = attached(config)
    session(log, "s1", EndReason.QUIT)
    metrics.flush()
    m.clear_directory(directory)
    assert not list(Path(directory).glob("*.db"))


# ----------------------------------------------------------------- snapshot


def test_snapshot_lays_out_frontends_backends_and_servers(directory: str, config: Config) -> None:
    the_pools = pools()
    the_pools["pool"].servers[0].active = 1
    the_pools["pool"].servers[1].healthy = False
    checks = {"pool": FakeChecks({"s1": ProbeResult(True, "L7", "ok", 0.003)})}
    metrics, log = attached(config, the_pools, checkers=checks)
    for _ in range(2):
        log.notify("accept", frontend="ftp")  # what the runtime tells at each connect
    session(log, "s1", EndReason.QUIT, bytes_in=50, bytes_out=60)
    session(log, "-", EndReason.LIMIT)
    transfer(log, "RETR", 226, to_client=1000, to_server=0)
    log.warning(LogWarning.CONNECT_FAILED, frontend="ftp", server="s2", client="c", reason="x")
    metrics.sample()
    snap = build_snapshot(config, collect(directory), now=0)
    assert snap.generated == "1970-01-01T00:00:00Z"
    assert snap.workers == 1
    ftp, other = snap.frontends
    assert (ftp.name, ftp.backend, ftp.binds) == ("ftp", "pool", ("127.0.0.1:2121",))
    assert (ftp.sessions, ftp.refusals, ftp.transfers) == (2, 1, 1)
    assert (ftp.bytes_in, ftp.bytes_out) == (50, 1060)
    assert ftp.end_reasons == {"limit": 1, "quit": 1}
    assert ftp.transfer_results == {"RETR 2xx": 1}
    assert other.sessions == 0 and other.end_reasons == {}
    pool, spare = snap.backends
    s1, s2 = pool.servers
    assert (s1.state, s1.current_sessions, s1.sessions, s1.weight) == ("UP", 1, 1, 3)
    assert (s1.bytes_in, s1.bytes_out, s1.transfers) == (50, 1060, 1)
    assert (s1.last_check, s1.last_check_duration, s1.checks_ok) == ("ok", 0.003, 1)
    assert (s2.state, s2.connect_failures, s2.last_check) == ("DOWN", 1, "-")
    assert (pool.servers_up, pool.sessions, pool.current_sessions) == (1, 1, 1)
    assert spare.servers[0].address == "127.0.0.19:21"
    data = snapshot_dict(snap)
    assert data["backends"][0]["servers"][0]["name"] == "s1"
    assert data["frontends"][0]["end_reasons"] == {"limit": 1, "quit": 1}


def test_snapshot_before_any_process_wrote(tmp_path: Path, config: Config) -> None:
    snap = build_snapshot(config, [])
    assert snap.workers == 0
    assert [s.state for b in snap.backends for s in b.servers] == ["-", "-", "-"]


def _hostile_snapshot() -> Snapshot:
    evil = '<script>alert("x")</script>&'
    server = ServerStats(
        name=evil, address="127.0.0.1:21", weight=1, state=evil, current_sessions=0,
        sessions=0, bytes_in=0, bytes_out=0, transfers=0, connect_failures=0,
        last_check="-", last_check_duration=None, checks_ok=0, checks_failed=0,
    )  # fmt: skip
    backend = BackendStats(evil, "roundrobin", (server,), 0, 0, 0, 0, 0, 0, 0)
    frontend = FrontendStats(
        name=evil, mode="ftp", binds=(evil,), backend=evil, current_sessions=0, sessions=0,
        bytes_in=0, bytes_out=0, transfers=0, refusals=0, end_reasons={evil: 1},
        transfer_results={evil: 2}, passive_listeners=0, passive_listener_failures=0,
        data_connections_refused=0,
    )  # fmt: skip
    return Snapshot(evil, 1, (frontend,), (backend,))


def test_the_page_escapes_every_value() -> None:
    page = render(_hostile_snapshot(), refresh_seconds=7)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert '<meta http-equiv="refresh" content="7">' in page


def _named(name: str) -> Snapshot:
    snap = _hostile_snapshot()
    (frontend,), (backend,) = snap.frontends, snap.backends
    server = replace(backend.servers[0], name=name, state=name)
    return replace(
        snap,
        generated=name,
        frontends=(replace(frontend, name=name, binds=(name,), end_reasons={name: 1}),),
        backends=(replace(backend, name=name, servers=(server,)),),
    )


@given(st.text(max_size=30))
def test_no_name_can_add_markup(name: str) -> None:
    # Escaped text has no '<' of its own: the tags are the page's, whatever the names.
    assert render(_named(name), 5).count("<") == render(_named("x"), 5).count("<")


def test_the_page_shows_the_numbers(directory: str, config: Config) -> None:
    the_pools = pools()
    the_pools["pool"].servers[1].healthy = False
    metrics, log = attached(config, the_pools)
    session(log, "s1", EndReason.QUIT, bytes_in=1234567)
    metrics.sample()
    page = render(build_snapshot(config, collect(directory)), refresh_seconds=0.2)
    assert '<meta http-equiv="refresh" content="1">' in page  # never below a second
    assert "<h2>Frontend ftp</h2>" in page and "<h2>Backend pool</h2>" in page
    assert '<tr class="down"><td class="name">s2</td>' in page
    assert "1,234,567" in page


# ------------------------------------------------------------------- config

BASE = """
[[frontends]]
name = "ftp"
bind = ["127.0.0.1:2121"]
backend = "pool"
passive_ports = "40000-40099"
[[backends]]
name = "pool"
[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(BASE + text)
    return [line.split(": ", 1)[1] for line in str(caught.value).splitlines()]


def test_admin_defaults() -> None:
    assert load_config_text(BASE).admin is None
    admin = load_config_text(BASE + "[admin]\n").admin
    assert admin is not None
    assert (str(admin.bind), admin.stats_refresh, admin.user, admin.password) == (
        "127.0.0.1:8404",
        5.0,
        None,
        None,
    )
    admin = load_config_text(
        BASE + '[admin]\nbind = "[::1]:9000"\nstats_refresh = "2s"\nuser = "ops"\npassword = "pw"\n'
    ).admin
    assert admin is not None
    assert (str(admin.bind), admin.stats_refresh, admin.user) == ("[::1]:9000", 2.0, "ops")


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('user = "ops"', "admin.password", "missing"),
        ('password = "pw"', "admin.user", "missing"),
        ('bind = "*:2121"', "admin.bind", "frontends[0].bind[0]"),
        ('bind = "127.0.0.1:40050"', "admin.bind", "frontends[0].passive_ports"),
        ('user = "a:b"\npassword = "pw"', "admin.user", "':'"),
        ('user = "ops"\npassword = ""', "admin.password", "at least 1"),
        ('stats_refresh = "0s"', "admin.stats_refresh", "greater than 0"),
        ('stats_refresh = "soon"', "admin.stats_refresh", "invalid duration"),
        ("port = 8404", "admin.port", "unknown key"),
    ],
)
def test_admin_errors_name_the_key(text: str, key: str, words: str) -> None:
    found = problems(f"[admin]\n{text}\n")
    assert any(p.startswith(key + ":") and words in p for p in found), found


def test_an_admin_bind_on_another_address_is_fine() -> None:
    config = load_config_text(BASE + '[admin]\nbind = "127.0.0.2:2121"\n')
    assert config.admin is not None and config.admin.bind.port == 2121


# ----------------------------------------------------------------- EventLog


def test_observers_see_records_and_never_break_the_log() -> None:
    stream = io.StringIO()
    log = EventLog("text", stream)
    seen: list[tuple[str, dict[str, Any]]] = []

    def broken(kind: str, fields: dict[str, Any]) -> None:
        raise RuntimeError("observer bug")

    log.add_observer(broken)
    log.add_observer(lambda kind, fields: seen.append((kind, dict(fields))))
    log.session(frontend="ftp", end=EndReason.QUIT)
    log.notify("passive", frontend="ftp")
    assert seen == [
        ("session", {"frontend": "ftp", "end": EndReason.QUIT}),
        ("passive", {"frontend": "ftp"}),
    ]
    assert stream.getvalue().count("\n") == 1  # notify writes no line
    log.remove_observer(broken)
    log.info("x")
    assert seen[-1][0] == "info"


def test_the_defenders_failures_and_bans_are_counted_per_frontend(
    directory: str, config: Config
) -> None:
    metrics, log = attached(config)
    for _ in range(3):
        log.notify("defender_failure", frontend="ftp")
    log.warning(LogWarning.CLIENT_BANNED, frontend="ftp", client="203.0.113.9")
    session(log, "-", EndReason.BANNED)
    session(log, "-", EndReason.DENIED)
    metrics.flush()
    got = collect(directory)
    assert value(got, "ftplb_defender_failures_total", frontend="ftp") == 3
    assert value(got, "ftplb_defender_bans_made_total", frontend="ftp") == 1
    assert value(got, "ftplb_refusals_total", reason="banned") == 1
    assert value(got, "ftplb_refusals_total", reason="denied") == 1
    assert value(got, "ftplb_warnings_total", warning="client_banned") == 1
