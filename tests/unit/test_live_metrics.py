"""Counting what still runs: transfer and control bytes each sample, the rest at the end.

No sockets and no event loop: a frontend here is a plain object holding
running transfers whose meters the test moves by hand, as a relay would.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ftplb.admin.process_metrics import labelled_pids, start_time
from ftplb.admin.snapshot import (
    STATS_VERSION,
    BackendStats,
    BanInfo,
    FrontendStats,
    ProcessStats,
    ServerStats,
    Snapshot,
    TransferInProgress,
    build_snapshot,
    collect,
)
from ftplb.config.load import load_config_text
from ftplb.config.schema import Config
from ftplb.proto.outcomes import EndReason
from ftplb.runtime import metrics as m
from ftplb.runtime.logs import EventLog
from ftplb.runtime.probes import ProbeResult
from ftplb.runtime.process_report import (
    ProcessReport,
    read_reports,
    remove_report,
    report_path,
    write_report,
)
from ftplb.runtime.progress import RunningTransfer, cut_short_detail, data_key
from ftplb.runtime.relay import RelayMeter
from tests.metrics_processes import act_as_process
from tests.unit.test_metrics import CONFIG, FakeChecks, pools, value


class HandMeter(RelayMeter):
    """A meter moved by the test instead of a relay."""

    __slots__ = ("moved_in", "moved_out")

    def __init__(self) -> None:
        super().__init__()
        self.moved_in = 0
        self.moved_out = 0

    @property
    def a_to_b(self) -> int:
        return self.moved_in

    @property
    def b_to_a(self) -> int:
        return self.moved_out


@dataclass
class Frontend:
    name: str = "ftp"
    sessions: set[str] = field(default_factory=set)
    running: dict[str, RunningTransfer] = field(default_factory=dict)
    controls: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    def running_transfers(self) -> Iterator[RunningTransfer]:
        return iter(list(self.running.values()))

    def control_counts(self) -> Iterator[tuple[str, str, int, int]]:
        for key, (server, bytes_in, bytes_out) in self.controls.items():
            yield key, server, bytes_in, bytes_out

    def start(self, key: str, command: str = "RETR") -> HandMeter:
        meter = HandMeter()
        self.running[key] = RunningTransfer(
            key, self.name, "127.0.0.100", "s1", "alice", command, "/big", meter=meter
        )
        return meter


@pytest.fixture
def config() -> Config:
    return load_config_text(CONFIG)


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    path = str(tmp_path / "metrics")
    act_as_process(monkeypatch, path, pid=2001)
    yield path


def recorder(config: Config, frontend: Frontend, worker: int | None = None) -> m.Metrics:
    metrics = m.Metrics(worker=worker)
    metrics.attach(EventLog("text", io.StringIO()), pools(), config, frontends=[frontend])
    return metrics


def log_of(metrics: m.Metrics) -> EventLog:
    log = metrics._log
    assert log is not None
    return log


def transfer_line(log: EventLog, session: str, to_client: int, result: int | str = 226) -> None:
    log.transfer(
        session=session,
        frontend="ftp",
        client="127.0.0.100",
        server="s1",
        user="alice",
        command="RETR",
        path="/big",
        bytes_to_client=to_client,
        bytes_to_server=0,
        duration=1.0,
        client_mode="EPSV",
        server_mode="PASV",
        result=result,
        error="-",
    )


def out_bytes(directory: str) -> float:
    return value(collect(directory), "ftplb_transfer_bytes_total", direction="out")


def test_a_running_transfer_counts_at_each_sample_and_once_in_all(
    directory: str, config: Config
) -> None:
    frontend = Frontend()
    metrics = recorder(config, frontend)
    meter = frontend.start("S1")
    meter.moved_out = 1000
    metrics.sample()
    assert out_bytes(directory) == 1000
    meter.moved_out = 5000
    metrics.sample()
    assert out_bytes(directory) == 5000
    assert value(collect(directory), "ftplb_transfer_bytes_total", server="s1") == 5000
    # It ends: the session takes it out of the running set, then logs its line.
    meter.moved_out = 7000
    del frontend.running["S1"]
    transfer_line(log_of(metrics), "S1", 7000)
    metrics.sample()
    assert out_bytes(directory) == 7000
    # The next transfer of the same session starts from nothing.
    meter = frontend.start("S1")
    meter.moved_out = 300
    metrics.sample()
    assert out_bytes(directory) == 7300


def test_a_line_written_between_samples_counts_only_the_remainder(
    directory: str, config: Config
) -> None:
    frontend = Frontend()
    metrics = recorder(config, frontend)
    frontend.start("S2").moved_out = 400
    metrics.sample()
    del frontend.running["S2"]
    transfer_line(log_of(metrics), "S2", 400)  # nothing moved since the sample
    metrics.flush()
    assert out_bytes(directory) == 400


def test_a_transfer_with_no_running_record_counts_at_its_line(
    directory: str, config: Config
) -> None:
    metrics = recorder(config, Frontend())
    transfer_line(log_of(metrics), "S3", 900)
    metrics.flush()
    assert out_bytes(directory) == 900


def test_control_bytes_count_while_the_session_runs(directory: str, config: Config) -> None:
    frontend = Frontend()
    metrics = recorder(config, frontend)
    frontend.controls["S4"] = ("s1", 40, 600)
    metrics.sample()
    got = collect(directory)
    assert value(got, "ftplb_control_bytes_total", direction="in") == 40
    assert value(got, "ftplb_control_bytes_total", direction="out") == 600
    del frontend.controls["S4"]
    log_of(metrics).session(
        session="S4",
        frontend="ftp",
        server="s1",
        bytes_in=45,
        bytes_out=700,
        end=EndReason.QUIT,
    )
    metrics.flush()
    got = collect(directory)
    assert value(got, "ftplb_control_bytes_total", direction="in") == 45
    assert value(got, "ftplb_control_bytes_total", direction="out") == 700


def test_a_tcp_data_connection_is_keyed_by_frontend_and_client(
    directory: str, config: Config
) -> None:
    frontend = Frontend()
    metrics = recorder(config, frontend)
    key = data_key("ftp", "127.0.0.100:40000")
    frontend.start(key, command="-").moved_out = 2500
    metrics.sample()
    del frontend.running[key]
    log_of(metrics).data(
        frontend="ftp",
        client="127.0.0.100:40000",
        server="s1",
        bytes_to_server=0,
        bytes_to_client=3000,
        end=EndReason.CLOSED,
    )
    metrics.flush()
    assert out_bytes(directory) == 3000


def test_a_session_counts_when_a_server_takes_it_and_not_again_at_its_end(
    directory: str, config: Config
) -> None:
    metrics = recorder(config, Frontend())
    log = log_of(metrics)
    log.notify("session_open", session="S5", frontend="ftp", server="s2")
    metrics.flush()
    assert value(collect(directory), "ftplb_sessions_total", server="s2") == 1
    log.session(session="S5", frontend="ftp", server="s2", end=EndReason.QUIT)
    # One that never reached a server counts when it ends.
    log.session(session="S6", frontend="ftp", server="-", end=EndReason.NO_SERVER)
    metrics.flush()
    got = collect(directory)
    assert value(got, "ftplb_sessions_total", server="s2") == 1
    assert value(got, "ftplb_sessions_total") == 2
    assert value(got, "ftplb_session_ends_total", reason="quit") == 1


def test_a_transfer_cut_short_counts_under_its_own_result(directory: str, config: Config) -> None:
    metrics = recorder(config, Frontend())
    transfer_line(log_of(metrics), "S7", 123, result="-")
    metrics.flush()
    got = collect(directory)
    assert value(got, "ftplb_transfers_total", command="RETR", result="cut") == 1
    assert out_bytes(directory) == 123
    assert cut_short_detail("client_closed") == "client_closed"
    assert cut_short_detail("quit", "reset_by_client") == "quit: reset_by_client"


def test_the_process_report_lists_running_transfers_for_the_snapshot(
    directory: str, config: Config
) -> None:
    frontend = Frontend()
    metrics = recorder(config, frontend, worker=1)
    frontend.start("S8").moved_out = 4096
    metrics.sample()
    (report,) = read_reports(directory)
    assert (report.pid, report.worker) == (2001, 1)
    (entry,) = report.transfers
    assert (entry["session"], entry["bytes"], entry["backend"]) == ("S8", 4096, "pool")
    snapshot = build_snapshot(config, collect(directory), reports=[report])
    (running,) = snapshot.transfers
    assert (running.session, running.command, running.path) == ("S8", "RETR", "/big")
    assert (running.bytes, running.worker, running.server) == (4096, 1, "s1")
    assert running.rate > 0
    metrics.stop()
    assert read_reports(directory) == []


def test_the_snapshot_lists_the_longest_running_first_and_skips_bad_entries(
    config: Config,
) -> None:
    def entry(session: str, started: float) -> dict[str, object]:
        return {
            "session": session,
            "frontend": "ftp",
            "backend": "pool",
            "server": "s1",
            "client": "c",
            "user": "u",
            "command": "RETR",
            "path": "/f",
            "bytes": 1,
            "started": started,
            "rate": 0.0,
            "worker": None,
        }

    reports = [
        ProcessReport(1, 0, 0.0, (entry("young", 990.0), {"session": "broken"})),
        ProcessReport(2, 1, 0.0, (entry("old", 900.0),)),
    ]
    snapshot = build_snapshot(config, [], now=1000.0, reports=reports)
    assert [t.session for t in snapshot.transfers] == ["old", "young"]
    assert [t.elapsed for t in snapshot.transfers] == [100.0, 10.0]


def test_reports_are_replaced_whole_and_removed_for_a_dead_process(directory: str) -> None:
    write_report(directory, ProcessReport(3001, 0, 1.0))
    write_report(directory, ProcessReport(3002, 1, 2.0))
    report_path(directory, 3003).write_text("{not json")
    assert [r.pid for r in read_reports(directory)] == [3001, 3002]
    m.mark_process_dead(3001, directory)
    assert [r.pid for r in read_reports(directory)] == [3002]
    remove_report(directory, 3002)
    remove_report(directory, 3002)  # twice is fine
    m.clear_directory(directory)
    assert not list(Path(directory).glob("process_*"))


def test_a_worker_set_up_from_the_environment_keeps_prometheus_clients_own_values(
    tmp_path: Path,
) -> None:
    """The supervisor's way: PROMETHEUS_MULTIPROC_DIR set before the import, no class swapped."""
    directory = tmp_path / "from-env"
    directory.mkdir()
    program = """
import os, sys
from prometheus_client import values
chosen = values.ValueClass
from ftplb.runtime import metrics
metrics.enable(sys.argv[1])
assert values.ValueClass is chosen, "enable() replaced the value class"
recorder = metrics.Metrics()
recorder._add(recorder._instruments.sessions, ("ftp", "pool", "s1"))
recorder.flush()
print(os.getpid())
"""
    env = {**os.environ, m.ENV_VAR: str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", program, str(directory)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout)
    assert (directory / f"counter_{pid}.db").exists()
    assert value(collect(str(directory)), "ftplb_sessions_total", server="s1") == 1


@pytest.mark.parametrize("variable", ["unset", "another"])
def test_enable_refuses_when_prometheus_client_keeps_its_values_elsewhere(
    tmp_path: Path, variable: str
) -> None:
    """Imported without the variable (values in memory), or for another directory: a clear error."""
    program = """
import sys
from ftplb.runtime import metrics
try:
    metrics.enable(sys.argv[1])
except RuntimeError as error:
    print(error)
"""
    env = {k: v for k, v in os.environ.items() if k != m.ENV_VAR}
    if variable == "another":
        env[m.ENV_VAR] = str(tmp_path / "another")
    wanted = tmp_path / "wanted"
    done = subprocess.run(
        [sys.executable, "-c", program, str(wanted)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{m.ENV_VAR} must name {wanted} before prometheus_client is imported"
    )


def test_admin_md_documents_every_stats_json_field_and_the_metrics_content_type() -> None:
    text = (Path(__file__).parents[2] / "docs" / "admin.md").read_text()
    section = text[text.index("### `/stats.json`") : text.index("### `/metrics`")]
    kinds = (
        Snapshot,
        FrontendStats,
        BackendStats,
        ServerStats,
        TransferInProgress,
        ProcessStats,
        BanInfo,
    )
    for kind in kinds:
        for item in fields(kind):
            assert f"`{item.name}`" in section, (kind.__name__, item.name)
    assert f"`version` (now **{STATS_VERSION}**)" in section
    assert f"`Content-Type: {CONTENT_TYPE_LATEST}`" in text


def test_process_labels_name_the_workers_and_the_serving_process_main() -> None:
    reports = [ProcessReport(10, 0, 1.0), ProcessReport(11, 1, 1.0), ProcessReport(12, None, 1.0)]
    assert labelled_pids(reports, 12) == {12: "main", 10: "0", 11: "1"}
    assert labelled_pids([], 99) == {99: "main"}
    started = start_time(os.getpid())
    assert started is not None and 0 < started <= time.time()


def test_rates_peaks_logins_and_state_durations_reach_the_snapshot(
    directory: str, config: Config
) -> None:
    frontend = Frontend()
    the_pools = pools()
    s2 = the_pools["pool"].servers[1]
    checks = FakeChecks({"s2": ProbeResult(False, "L4", "connect refused", 0.002)})
    metrics = m.Metrics()
    log = EventLog("text", io.StringIO())
    metrics.attach(log, the_pools, config, checkers={"pool": checks}, frontends=[frontend])
    for _ in range(4):  # the frontend counts each session at once; the fourth never gets a server
        log.notify("accept", frontend="ftp")
    for number in range(3):
        log.notify("session_open", session=f"R{number}", frontend="ftp", server="s1")
    log.notify("login", frontend="ftp", server="s1", result="ok")
    log.notify("login", frontend="ftp", server="s1", result="failed")
    log.notify("retry", frontend="ftp", server="s2", redispatch=True)
    log.notify("retry", frontend="ftp", server="s2", redispatch=False)
    frontend.sessions = {"a", "b"}
    the_pools["pool"].servers[0].active = 2
    s2.healthy = False
    metrics.sample()  # attach() sampled once: 4 and 3 sessions over two intervals
    snapshot = build_snapshot(config, collect(directory), reports=read_reports(directory))
    ftp = snapshot.frontends[0]
    assert (ftp.sessions, ftp.session_rate, ftp.session_rate_max, ftp.max_sessions) == (
        4,
        2.0,
        2.0,
        2,
    )
    assert (ftp.logins, ftp.failed_logins) == (1, 1)
    one, two = snapshot.backends[0].servers
    assert (one.sessions, one.session_rate, one.max_sessions, one.logins) == (3, 1.5, 2, 1)
    assert (two.retries, two.redispatches) == (2, 1)
    assert two.state == "DOWN" and two.state_since is not None and two.state_since < 5
    assert two.last_check_reason == "L4 connect refused"
    frontend.sessions = set()
    the_pools["pool"].servers[0].active = 0
    metrics.sample()  # the window now spans three intervals; peaks stay
    snapshot = build_snapshot(config, collect(directory))
    ftp = snapshot.frontends[0]
    assert (ftp.session_rate, ftp.session_rate_max, ftp.max_sessions) == (1.333, 2.0, 2)
    assert snapshot.backends[0].servers[0].session_rate == 1.0
    assert snapshot.backends[0].servers[1].downtime > 0
