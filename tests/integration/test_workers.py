"""``workers = 2``: real servers and clients through a master and two worker processes.

Clients come from many loopback addresses (127.0.0.100-115). The kernel must
steer every connection of one address to one worker (the steering program),
so each address's sessions carry one ``worker=`` in the log, and the worker
is the one that :func:`steered_index` names: workers start in order, so
socket index ``i`` of every SO_REUSEPORT group is worker ``i``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import select
import signal
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ftplb.config.load import load_config_text
from ftplb.runtime.logs import EventLog
from ftplb.runtime.steering import attach_steering, steered_index
from ftplb.supervisor import Supervisor, WorkerExit
from tests.integration import clients, servers
from tests.integration.balancer import balancer, run_until_exit, startup_error_config
from tests.integration.clients import DataMode
from tests.integration.farms import Farm, farm
from tests.integration.test_tcp_mode import LB_HOST, server_pair, tcp_config
from tests.integration.workers_farm import (
    advertised_port,
    current_pids,
    holding_port,
    is_gone,
    messages,
    records,
    sessions_by_source,
    slices,
    source_of,
    started_pids,
    wait_ready,
)
from tests.metrics_processes import act_as_process
from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration

WORKERS = 2
SOURCES = [f"127.0.0.{n}" for n in range(100, 116)]
MODES: tuple[DataMode, ...] = ("epsv", "pasv", "port")
SEED = os.urandom(256 * 1024)
SEED_SHA = hashlib.sha256(SEED).hexdigest()
UPLOAD_SIZE = 64 * 1024


# ---------------------------------------------------------------------------
# the kernel runs the steering program


def test_kernel_steers_each_source_ip_to_one_socket() -> None:
    """Many connections per source over a two-socket group: the program decides."""
    port = free_port("127.0.0.1")
    group = []
    try:
        for _ in range(WORKERS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            attach_steering(sock, WORKERS)
            group.append(sock)
        seen: dict[str, set[int]] = {}
        for source in SOURCES:
            for _ in range(6):
                with socket.create_connection(
                    ("127.0.0.1", port), timeout=5, source_address=(source, 0)
                ):
                    ready, _, _ = select.select(group, [], [], 5)
                    assert len(ready) == 1
                    conn, peer = ready[0].accept()
                    conn.close()
                    assert peer[0] == source
                    seen.setdefault(source, set()).add(group.index(ready[0]))
        # Without the program the kernel hashes the 4-tuple: six connections
        # from one address would land on both sockets almost every time.
        assert {source: indices for source, indices in seen.items()} == {
            source: {steered_index(source, WORKERS)} for source in SOURCES
        }
        assert {index for indices in seen.values() for index in indices} == {0, 1}
    finally:
        for sock in group:
            sock.close()


def test_kernel_accepts_the_ipv6_program() -> None:
    if servers.ipv6_loopback_problem() is not None:
        pytest.skip("no IPv6 loopback")
    group = []
    port = free_port("::1")
    try:
        for _ in range(WORKERS):
            sock = socket.socket(socket.AF_INET6)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("::1", port))
            sock.listen(64)
            attach_steering(sock, WORKERS)
            group.append(sock)
        hits: Counter[int] = Counter()
        for _ in range(8):
            with socket.create_connection(("::1", port), timeout=5):
                ready, _, _ = select.select(group, [], [], 5)
                ready[0].accept()[0].close()
                hits[group.index(ready[0])] += 1
        assert hits == Counter({steered_index("::1", WORKERS): 8})
    finally:
        for sock in group:
            sock.close()


# ---------------------------------------------------------------------------
# mode = "ftp" with two workers


@dataclass
class Workload:
    farm: Farm
    failures: list[str] = field(default_factory=list)
    uploads: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Upload name -> (source, sha256)."""
    ports: dict[str, list[int]] = field(default_factory=dict)
    """Source -> passive ports advertised to it."""


def one_session(work: Workload, source: str, mode: DataMode) -> None:
    lb = work.farm.lb
    name = f"up-{uuid.uuid4().hex[:12]}.bin"
    data = os.urandom(UPLOAD_SIZE)
    with clients.ftplib_session(
        lb.host, lb.port, work.farm.user, work.farm.password, mode, source
    ) as client:
        send = client.ftp.sendcmd

        def recording(cmd: str) -> str:
            reply = send(cmd)
            if reply[:3] in ("227", "229"):
                work.ports.setdefault(source, []).append(advertised_port(reply))
            return reply

        # Replacing a method on one instance is what mypy's method-assign is wary of; here it is
        # the point: this client's commands (not every FTP's) pass through the recorder.
        client.ftp.sendcmd = recording  # type: ignore[method-assign]
        listing = client.list()
        if b"seed.bin" not in listing:
            work.failures.append(f"{source} {mode}: LIST lacks seed.bin: {listing!r}")
        if hashlib.sha256(client.retr("seed.bin")).hexdigest() != SEED_SHA:
            work.failures.append(f"{source} {mode}: RETR seed.bin corrupted")
        client.stor(name, data)
        if client.retr(name) != data:
            work.failures.append(f"{source} {mode}: RETR of own upload differs")
        expected = {"epsv": "EPSV", "pasv": "PASV", "port": "PORT"}[mode]
        if set(client.data_setup_verbs) != {expected}:
            work.failures.append(f"{source} {mode}: used {client.data_setup_verbs}")
    work.uploads[name] = (source, hashlib.sha256(data).hexdigest())


@pytest.fixture(scope="module", params=["pyftpdlib", "vsftpd"])
def workload(request: pytest.FixtureRequest) -> Iterator[Workload]:
    kind: str = request.param
    sources = SOURCES if kind == "pyftpdlib" else SOURCES[:8]
    with farm(
        kind,
        files={"seed.bin": SEED},
        defaults=f"workers = {WORKERS}",
        backend='sticky = "source"',
    ) as group:
        wait_ready(group.lb)
        work = Workload(group)
        jobs = [(source, mode) for mode in MODES for source in sources]
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(one_session, work, s, m) for s, m in jobs]:
                try:
                    future.result(timeout=120)
                except Exception as error:
                    work.failures.append(f"{type(error).__name__}: {error}")
        wait_until(
            lambda: sum(map(len, sessions_by_source(group.lb).values())) >= len(jobs),
            10,
            "every session logged",
        )
        yield work


def test_sessions_and_transfers_are_intact(workload: Workload) -> None:
    assert workload.failures == []
    sessions = sessions_by_source(workload.farm.lb)
    assert sum(map(len, sessions.values())) == len(workload.uploads)
    transfers = records(workload.farm.lb, "transfer")
    assert Counter(t["command"] for t in transfers) >= Counter(
        {"LIST": len(workload.uploads), "STOR": len(workload.uploads)}
    )


def test_both_workers_serve_and_each_source_stays_on_its_worker(workload: Workload) -> None:
    # The workload's own sources only: the harness's readiness probe (from 127.0.0.1)
    # may connect while only the first worker listens, and then lands on it.
    sessions = {
        source: rs
        for source, rs in sessions_by_source(workload.farm.lb).items()
        if source in workload.ports
    }
    assert len(sessions) == len(workload.ports)
    workers_of = {source: {r["worker"] for r in rs} for source, rs in sessions.items()}
    assert workers_of == {source: {str(steered_index(source, WORKERS))} for source in sessions}
    assert {w for ws in workers_of.values() for w in ws} == {"0", "1"}


def test_stick_source_pins_each_source_to_one_server(workload: Workload) -> None:
    sessions = sessions_by_source(workload.farm.lb)
    server_of = {}
    for source, rs in sessions.items():
        assert len({r["server"] for r in rs}) == 1, (source, rs)
        server_of[source] = rs[0]["server"]
    assert set(server_of.values()) == {"s1", "s2"}
    # Each upload is on the disk of its source's server, and only there.
    for name, (source, sha) in workload.uploads.items():
        holders = workload.farm.holder_of(name)
        assert [f"s{workload.farm.servers.index(h) + 1}" for h in holders] == [server_of[source]]
        assert clients.sha256_file(holders[0].root / name) == sha


def test_passive_ports_lie_in_the_serving_workers_slice(workload: Workload) -> None:
    lb = workload.farm.lb
    found = slices(lb)
    assert set(found) == {0, 1}
    configured = load_config_text(lb.config_path.read_text()).frontends[0].passive_ports
    assert configured is not None
    assert sorted([*found[0], *found[1]]) == list(configured)  # disjoint, covering
    sessions = sessions_by_source(lb)
    checked = 0
    for source, ports in workload.ports.items():
        worker = int(sessions[source][0]["worker"])
        assert all(port in found[worker] for port in ports), (source, worker, ports)
        checked += len(ports)
    assert checked >= 2 * len(sessions)


def test_every_worker_line_names_its_worker(workload: Workload) -> None:
    lb = workload.farm.lb
    for kind in ("session", "transfer", "health"):
        lines = records(lb, kind)
        assert all(r.get("worker") in ("0", "1") for r in lines), kind
    listening = messages(lb, "listening")
    assert sorted(r["worker"] for r in listening) == ["0", "1"]
    # The master's own lines name the worker they are about.
    assert sorted(r["worker"] for r in messages(lb, "worker started")) == ["0", "1"]


# ---------------------------------------------------------------------------
# mode = "tcp" with two workers


def test_tcp_mode_data_follows_control_to_the_same_worker(tmp_path: Path) -> None:
    seed = tmp_path / "big.bin"
    seed.write_bytes(SEED)
    sources = SOURCES[:8]
    with server_pair("vsftpd", ("127.0.0.73", "127.0.0.74"), seed) as (group, ranges):
        port = free_port(LB_HOST)
        text = tcp_config(group, ranges, host=LB_HOST, port=port, defaults="workers = 2")
        with balancer(text, LB_HOST, port) as lb:
            wait_ready(lb)
            for source in sources:
                for mode in ("pasv", "epsv"):
                    with clients.ftplib_session(
                        LB_HOST, port, group[0].user, group[0].password, mode, source
                    ) as client:
                        assert b"big.bin" in client.list()
                        assert client.retr("big.bin") == SEED
                        client.stor(f"up-{mode}.bin", SEED[:1000])
            wait_until(lambda: len(records(lb, "session")) >= 2 * len(sources) + 1, 10, "sessions")
            worker_of: dict[str, set[str]] = {}
            for record in records(lb, "session"):
                # (The harness's start-up probe comes from 127.0.0.1.)
                if source_of(record) in sources:
                    worker_of.setdefault(source_of(record), set()).add(record["worker"])
            assert worker_of == {s: {str(steered_index(s, WORKERS))} for s in sources}
            data = [r for r in records(lb, "data") if source_of(r) in sources]
            assert len(data) >= 3 * 2 * len(sources)  # LIST, RETR, STOR per session
            for record in data:
                assert {record["worker"]} == worker_of[source_of(record)], record
                assert record["end"] == "closed", record
            refused = [r for r in records(lb, "warning") if r["warning"] == "orphan_data_refused"]
            assert refused == []


# ---------------------------------------------------------------------------
# the master: restarts, stop, startup errors


def test_a_killed_worker_is_restarted_and_sigterm_stops_everything() -> None:
    with farm("pyftpdlib", files={"seed.bin": SEED}, defaults="workers = 2") as group:
        lb = group.lb
        wait_ready(lb)
        before = current_pids(lb)
        assert sorted(before) == [0, 1]
        # A restarted worker runs the configuration the master started with,
        # whatever the file says now.
        lb.config_path.write_text("this is not TOML")
        os.kill(before[0], signal.SIGKILL)
        wait_until(
            lambda: (
                len(started_pids(lb).get(0, [])) == 2
                and sum(r["worker"] == "0" for r in messages(lb, "listening")) == 2
            ),
            15,
            "worker 0 restarted and listening",
        )
        exited = messages(lb, "worker exited")
        assert [(r["worker"], r["pid"], r["status"]) for r in exited] == [
            ("0", str(before[0]), "signal SIGKILL")
        ]
        after = current_pids(lb)
        assert after[1] == before[1] and after[0] != before[0]
        assert not is_gone(after[0])
        # Service goes on, on both workers.
        for source in SOURCES[:8]:
            with clients.ftplib_session(
                lb.host, lb.port, group.user, group.password, "epsv", source
            ) as client:
                assert hashlib.sha256(client.retr("seed.bin")).hexdigest() == SEED_SHA
        wait_until(lambda: len(sessions_by_source(lb)) == 8, 10, "sessions logged")
        served = {r["worker"] for rs in sessions_by_source(lb).values() for r in rs}
        assert served == {"0", "1"}
        pids = [lb.process.pid, *(p for ps in started_pids(lb).values() for p in ps)]
        assert lb.stop() == 0
        wait_until(lambda: all(is_gone(pid) for pid in pids), 10, "every process gone")
        stopped = [r for r in messages(lb, "worker exited") if r["pid"] != str(before[0])]
        assert sorted(r["worker"] for r in stopped) == ["0", "1"]
        assert all(r["status"] == "exit status 0" for r in stopped), stopped


def test_a_bind_error_in_the_workers_is_the_same_clear_exit_1(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    config = tmp_path / "ftplb.toml"
    outcomes = {}
    with holding_port("127.0.0.1", port):
        for workers in (1, 2):
            config.write_text(startup_error_config(port, workers=workers))
            outcomes[workers] = run_until_exit(config)
    single, multi = outcomes[1], outcomes[2]
    assert single.returncode == multi.returncode == 1, multi.stderr

    def error_lines(stderr: str) -> list[str]:
        return [line for line in stderr.splitlines() if line.startswith("ftplb: ")]

    # The same message as a single process gives, once, and no traceback.
    assert error_lines(single.stderr)[0].startswith(
        f"ftplb: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert error_lines(multi.stderr) == error_lines(single.stderr)
    assert "Traceback" not in multi.stderr
    # The master finds the port taken before it starts any worker.
    assert "worker started" not in multi.stderr


def test_a_second_run_with_workers_on_the_same_port_is_refused(tmp_path: Path) -> None:
    """Its workers would join the first run's SO_REUSEPORT group and share its clients."""
    port = free_port("127.0.0.1")
    text = startup_error_config(port, workers=2)
    with balancer(text, "127.0.0.1", port) as first:
        config = tmp_path / "second.toml"
        config.write_text(text)
        second = run_until_exit(config)
        assert second.returncode == 1, second.stderr
        assert f"ftplb: cannot listen on 127.0.0.1:{port}: Address already in use" in (
            second.stderr
        )
        assert "worker started" not in second.stderr
        # The first run still answers every connection itself.
        for _ in range(8):
            assert servers.read_banner("127.0.0.1", port).startswith(b"421")
        assert first.process.poll() is None


def test_check_refuses_a_passive_range_smaller_than_the_workers(tmp_path: Path) -> None:
    config = tmp_path / "ftplb.toml"
    config.write_text(
        '[defaults]\nworkers = 3\n\n[[frontends]]\nname = "ftp"\nbind = ["127.0.0.1:2121"]\n'
        'backend = "pool"\npassive_ports = "40000-40001"\n\n[[backends]]\nname = "pool"\n\n'
        '[[backends.servers]]\nname = "s1"\naddress = "127.0.0.11:21"\n'
    )
    completed = subprocess.run(
        [sys.executable, "-m", "ftplb", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stderr == (
        f"{config}:8: frontends[0].passive_ports: range 40000-40001 has 2 ports, fewer than "
        "defaults.workers = 3: each worker needs a slice of its own\n"
    )


# ---------------------------------------------------------------------------
# the master's rules, with stand-in workers (no balancer: fast and exact)

FAKE_WORKER = r"""
import json, os, signal, sys, time
args = sys.argv[1:]
behaviour = args[0]
status = os.fdopen(int(args[args.index("--status-fd") + 1]), "w")
slot = args[args.index("--worker") + 1]
config = sys.stdin.read()
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(f"{slot} {os.getpid()} {os.environ.get('FTPLB_METRICS_DIR')} {len(config)}\n")
if behaviour == "error":
    status.write(json.dumps({"error": "cannot listen on 127.0.0.1:1: Permission denied"}) + "\n")
    sys.exit(1)
if behaviour == "die":
    sys.exit(3)
status.write('{"ready": true}\n')
status.close()
if behaviour == "ready-then-die":
    time.sleep(0.05)
    sys.exit(4)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(60)
"""

MINIMAL = """
[defaults]
workers = 2

[[frontends]]
name = "ftp"
bind = ["127.0.0.1:2121"]
backend = "pool"

[[backends]]
name = "pool"

[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"
"""


@pytest.fixture
def fake_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fake.log"
    path.write_text("")
    monkeypatch.setenv("FAKE_LOG", str(path))
    monkeypatch.setattr("ftplb.supervisor.BACKOFF_FIRST", 0.01)
    monkeypatch.setattr("ftplb.supervisor.BACKOFF_MAX", 0.02)
    return path


def with_admin(text: str) -> str:
    return text + f'\n[admin]\nbind = "127.0.0.1:{free_port()}"\n'


def fake_supervisor(
    behaviour: str,
    exits: list[WorkerExit] | None = None,
    log: io.StringIO | None = None,
    text: str = MINIMAL,
    metrics_dir: str | None = None,
) -> Supervisor:
    return Supervisor(
        "unused.toml",
        load_config_text(text),
        text,
        log=EventLog(stream=log if log is not None else io.StringIO()),
        command=[sys.executable, "-c", FAKE_WORKER, behaviour],
        on_worker_exit=exits.append if exits is not None else None,
        metrics_dir=metrics_dir,
    )


def user_errors(master_log: io.StringIO) -> list[str]:
    """The master's fatal errors for the user, from its log (text format)."""
    return [line for line in master_log.getvalue().splitlines() if line.startswith("ftplb: ")]


async def test_master_stops_ready_workers_and_tells_each_the_metrics_dir(
    fake_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exits: list[WorkerExit] = []
    master_log = io.StringIO()
    text = with_admin(MINIMAL)
    metrics_dir = str(tmp_path / "metrics")
    act_as_process(monkeypatch, metrics_dir)  # what `ftplb run` sets up before the master starts
    supervisor = fake_supervisor("serve", exits, master_log, text, metrics_dir)
    task = asyncio.ensure_future(supervisor.run())
    for _ in range(1500):
        if "workers ready" in master_log.getvalue():
            break
        await asyncio.sleep(0.01)
    pids = supervisor.pids
    started = [line.split() for line in fake_log.read_text().splitlines()]
    # Started one after the other, each told where metric files go and
    # given the configuration text.
    size = str(len(text))
    assert started == [
        ["0/2", str(pids[0]), metrics_dir, size],
        ["1/2", str(pids[1]), metrics_dir, size],
    ]
    supervisor.stop()
    assert await asyncio.wait_for(task, 15) == 0
    assert sorted((e.slot.index, e.pid, e.returncode) for e in exits) == [
        (0, pids[0], 0),
        (1, pids[1], 0),
    ]
    assert all(is_gone(pid) for pid in pids)


async def test_without_admin_the_workers_record_no_metrics(fake_log: Path) -> None:
    master_log = io.StringIO()
    supervisor = fake_supervisor("serve", None, master_log)
    task = asyncio.ensure_future(supervisor.run())
    for _ in range(1500):
        if "workers ready" in master_log.getvalue():
            break
        await asyncio.sleep(0.01)
    assert supervisor.metrics_dir is None
    started = [line.split() for line in fake_log.read_text().splitlines()]
    assert [fields[2] for fields in started] == ["None", "None"]
    supervisor.stop()
    assert await asyncio.wait_for(task, 15) == 0


async def test_master_reports_a_worker_startup_error(fake_log: Path) -> None:
    master_log = io.StringIO()
    assert await asyncio.wait_for(fake_supervisor("error", None, master_log).run(), 15) == 1
    assert user_errors(master_log) == ["ftplb: cannot listen on 127.0.0.1:1: Permission denied"]
    assert len(fake_log.read_text().splitlines()) == 1  # worker 1 never started


async def test_master_reports_a_worker_that_dies_before_it_is_ready(fake_log: Path) -> None:
    master_log = io.StringIO()
    assert await asyncio.wait_for(fake_supervisor("die", None, master_log).run(), 15) == 1
    assert user_errors(master_log) == ["ftplb: worker 0 ended before it was ready (exit status 3)"]


async def test_master_restarts_dying_workers_then_gives_up(fake_log: Path) -> None:
    exits: list[WorkerExit] = []
    master_log = io.StringIO()
    supervisor = fake_supervisor("ready-then-die", exits, master_log)
    assert await asyncio.wait_for(supervisor.run(), 30) == 1
    [err] = user_errors(master_log)
    assert err.startswith("ftplb: worker ")
    assert "keeps dying (exit status 4, 5 times in a row soon after its start); giving up" in err
    # Restarted until it gave up: 2 first starts and 4 restarts of the dying worker at least.
    assert len(fake_log.read_text().splitlines()) >= 6
    assert all(is_gone(e.pid) for e in exits)
    assert {e.returncode for e in exits} <= {4, 0, -signal.SIGTERM}
