"""The command line as administrators use it: check, run, demo, and the log lines."""

from __future__ import annotations

import contextlib
import ftplib
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import clients
from tests.integration.farms import farm
from tests.support import free_port

pytestmark = pytest.mark.integration

FTPLB = [sys.executable, "-m", "ftplb"]


def ftplb(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FTPLB, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


GOOD = """\
[[frontends]]
name = "ftp"
bind = ["127.0.0.1:2121"]
backend = "pool"
passive_ports = "40000-40999"

[[backends]]
name = "pool"

[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"
"""


def test_check_accepts_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    result = ftplb("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_check_accepts_the_example_config() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "ftplb.toml"
    result = ftplb("check", "-c", str(example))
    assert result.returncode == 0, result.stderr


def test_the_example_headers_check_command_works_as_written() -> None:
    root = Path(__file__).resolve().parents[2]
    header = (root / "examples" / "ftplb.toml").read_text().split("\n\n", 1)[0]
    commands = re.findall(r"`ftplb (check [^`]*)`", header)
    assert commands, header
    for command in commands:
        result = subprocess.run(
            [*FTPLB, *command.split()],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout == "examples/ftplb.toml: configuration is valid\n"


def test_check_takes_the_file_with_or_without_c(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    assert ftplb("check", str(path)).stdout == f"{path}: configuration is valid\n"
    both = ftplb("check", "-c", str(path), str(path))
    neither = ftplb("check")
    assert both.returncode == neither.returncode == 2
    assert "not allowed with argument -c/--config" in both.stderr
    assert "one of the arguments -c/--config FILE is required" in neither.stderr


@pytest.mark.parametrize(
    ("broken", "line", "key", "words"),
    [
        (GOOD.replace('backend = "pool"', 'backend = "pool"\nbakend = 1'), 5, "bakend", "unknown"),
        (GOOD.replace('name = "s1"', 'name = "s1"\nweight = "heavy"'), 12, "weight", "integer"),
        (GOOD.replace('"40000-40999"', '"40999-40000"'), 5, "passive_ports", ""),
        (GOOD.replace('backend = "pool"', 'backend = "nope"'), 4, "backend", "nope"),
        (GOOD.replace("127.0.0.11:21", "127.0.0.300:21"), 12, "address", ""),
        (GOOD.replace('"127.0.0.1:2121"', '"localhost"'), 3, "bind", ""),
    ],
    ids=["unknown-key", "wrong-type", "bad-range", "unknown-backend", "bad-address", "no-port"],
)
def test_check_names_file_line_and_key(
    tmp_path: Path, broken: str, line: int, key: str, words: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(broken)
    result = ftplb("check", "-c", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{path}:{line}:"), result.stderr
    assert key in first
    assert words in first


def test_check_reports_overlapping_ranges_and_every_problem(tmp_path: Path) -> None:
    text = GOOD + (
        '\n[[frontends]]\nname = "ftp2"\nbind = ["127.0.0.1:2122"]\nbackend = "pool"\n'
        'passive_ports = "40500-41500"\n'
    )
    path = tmp_path / "overlap.toml"
    path.write_text(text.replace('name = "s1"', 'name = "s1"\nweight = -1'))
    result = ftplb("check", "-c", str(path))
    assert result.returncode == 1
    assert "weight" in result.stderr
    path.write_text(text)
    result = ftplb("check", "-c", str(path))
    assert result.returncode == 1
    assert "passive_ports" in result.stderr and "overlap" in result.stderr


# An unknown key, a wrong type, an unknown backend and overlapping ranges: problems
# that validation and the cross-checks find, reported in one run, in file order.
SEVERAL_PROBLEMS = """\
[defaults]
retrys = 1

[[frontends]]
name = "ftp"
bind = ["127.0.0.1:2121"]
backend = "pool"
passive_ports = "40000-40999"

[[frontends]]
name = "ftp2"
bind = ["127.0.0.1:2122"]
backend = "pol"
passive_ports = "40500-41500"

[[backends]]
name = "pool"

[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"
weight = "heavy"
"""


def several_problems_expected(path: Path) -> str:
    return (
        f'{path}:2: defaults.retrys: unknown key "retrys"; did you mean "retries"?\n'
        f'{path}:13: frontends[1].backend: unknown backend "pol" (backends: "pool")\n'
        f"{path}:14: frontends[1].passive_ports: range 40500-41500 overlaps 40000-40999 of "
        "frontends[0].passive_ports\n"
        f"{path}:22: backends[0].servers[0].weight: Input should be a valid integer\n"
    )


@pytest.mark.parametrize("form", ["-c", "positional"])
def test_check_lists_every_problem_in_one_run(tmp_path: Path, form: str) -> None:
    path = tmp_path / "several.toml"
    path.write_text(SEVERAL_PROBLEMS)
    result = ftplb("check", *(["-c"] if form == "-c" else []), str(path))
    assert result.returncode == 1
    assert result.stderr == several_problems_expected(path)
    assert result.stdout == ""


def test_run_lists_every_problem_as_check_does(tmp_path: Path) -> None:
    path = tmp_path / "several.toml"
    path.write_text(SEVERAL_PROBLEMS)
    result = ftplb("run", "-c", str(path))
    assert result.returncode == 1
    assert result.stderr == several_problems_expected(path)


def test_check_offers_the_key_a_typo_meant(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[defaults]\ntimout_connect = 5\n\n" + GOOD)
    result = ftplb("check", str(path))
    assert result.returncode == 1
    assert result.stderr == (
        f'{path}:2: defaults.timout_connect: unknown key "timout_connect"; '
        'did you mean "timeout_connect"?\n'
    )


def test_check_reports_a_syntax_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "syntax.toml"
    path.write_text(GOOD.replace('name = "s1"', "name = s1"))
    result = ftplb("check", "-c", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}:11:")


def test_check_reports_a_missing_file(tmp_path: Path) -> None:
    result = ftplb("check", "-c", str(tmp_path / "absent.toml"))
    assert result.returncode == 1
    assert "absent.toml" in result.stderr and "Traceback" not in result.stderr


def test_run_refuses_a_bad_file_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('backend = "pool"', 'backend = "nope"'))
    result = ftplb("run", "-c", str(path))
    assert result.returncode == 1
    assert "nope" in result.stderr and "Traceback" not in result.stderr


def test_run_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "busy.toml"
        path.write_text(GOOD.replace("2121", str(port)))
        result = ftplb("run", "-c", str(path))
    assert result.returncode == 1
    # One plain line, whatever hint follows (the port may be in the ephemeral range).
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"ftplb: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_run_reports_a_port_in_use_as_json_with_json_logs(tmp_path: Path, workers: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "busy.toml"
        settings = f'[defaults]\nlog_format = "json"\nworkers = {workers}\n\n'
        path.write_text(settings + GOOD.replace("2121", str(port)))
        result = ftplb("run", "-c", str(path))
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    errors = [line for line in lines if line["event"] == "error"]
    assert len(errors) == 1
    assert errors[0]["message"].startswith(
        f"cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_cleanly_on_signals(signum: signal.Signals) -> None:
    with farm(files={"f.txt": b"x"}) as group:
        # Hold a session open: stopping must not wait for it or crash on it.
        with clients.ftplib_session(
            group.lb.host, group.lb.port, group.user, group.password, "pasv"
        ):
            group.lb.process.send_signal(signum)
            assert group.lb.process.wait(15) == 0
        group.lb.stopped = True
    assert "Traceback" not in group.lb.log_text()


def test_json_logs_and_masked_password() -> None:
    defaults = 'log_format = "json"\nlog_commands = true'
    with farm(
        files={"f.txt": b"hello"}, defaults=defaults, credentials=("alice", "S3cret!pw")
    ) as group:
        with clients.ftplib_session(
            group.lb.host, group.lb.port, group.user, group.password, "epsv"
        ) as ftp:
            assert ftp.retr("f.txt") == b"hello"
        group.lb.stop()
        records = [json.loads(line) for line in group.lb.log_text().splitlines()]
    commands = [r["command"] for r in records if r["event"] == "command"]
    assert "PASS ****" in commands
    assert f"USER {group.user}" in commands
    assert all(group.password not in json.dumps(r) for r in records)
    transfer = next(r for r in records if r["event"] == "transfer")
    assert transfer["command"] == "RETR" and transfer["path"] == "f.txt"
    assert transfer["bytes_to_client"] == 5 and transfer["result"] == 226
    assert transfer["client_mode"] == "EPSV" and transfer["server_mode"] == "PASV"
    session = next(r for r in records if r["event"] == "session" and r["server"] != "-")
    for field in ("client", "frontend", "server", "user", "duration", "bytes_in", "bytes_out"):
        assert field in session
    assert session["user"] == group.user and session["end"] == "quit"


@contextlib.contextmanager
def running_demo(port: int, stats_port: int) -> Iterator[str]:
    """A running ``ftplb demo`` and what it printed, up to its stats URL."""
    with subprocess.Popen(
        [*FTPLB, "demo", "--port", str(port), "--stats-port", str(stats_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        # Leaving the with block closes the pipe of its output.
        try:
            assert process.stdout is not None
            lines: list[str] = []
            deadline = time.monotonic() + 20
            stats_url = f"http://127.0.0.1:{stats_port}/stats"
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                lines.append(line)
                if not line or stats_url in line:
                    break
            output = "".join(lines)
            assert stats_url in output, output
            yield output
        finally:
            process.send_signal(signal.SIGINT)
            status = process.wait(15)
    assert status == 0


def test_demo_serves_the_printed_curl_command() -> None:
    port = free_port()
    stats_port = free_port()
    with running_demo(port, stats_port) as output:
        match = re.search(r"(curl -u \S+ ftp://\S+/hello\.txt)", output)
        assert match is not None, output
        command = match.group(1)
        # The hints are printed once the balancer listens: run the command exactly as printed.
        outputs = {
            subprocess.run(
                command.split(), capture_output=True, text=True, timeout=20, check=True
            ).stdout
            for _ in range(4)
        }
        assert outputs == {"Hello from demo server s1.\n", "Hello from demo server s2.\n"}
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats", timeout=10) as page:
            assert b"s1" in page.read()


def test_demo_keeps_its_servers_and_the_kernels_ports_out_of_its_passive_range() -> None:
    port = free_port()
    with running_demo(port, free_port()) as output:
        servers = re.search(
            r"Servers: s1 at 127\.0\.0\.1:(\d+), s2 at 127\.0\.0\.1:(\d+);.*"
            r"passive ports (\d+)-(\d+)\.",
            output,
        )
        assert servers is not None, output
        s1, s2, first, last = (int(group) for group in servers.groups())
        passive = range(first, last + 1)
        assert s1 not in passive and s2 not in passive
        ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        low, high = int(ephemeral[0]), int(ephemeral[1])
        assert last < low or first > high, (passive, low, high)
        # The printed range is the one the balancer hands out.
        ftp = ftplib.FTP()
        try:
            ftp.connect("127.0.0.1", port, timeout=10)
            ftp.login("demo", "demo")
            for _ in range(3):
                assert ftp.makepasv()[1] in passive
            assert ftp.sendcmd("EPSV").startswith("229")
        finally:
            ftp.close()


def test_demo_says_an_upload_lands_on_one_server() -> None:
    with running_demo(free_port(), free_port()) as output:
        assert "curl -u demo:demo -T README.md ftp://" in output
        assert (
            "Note: s1 and s2 have separate disks. An upload lands on one server only: a later\n"
            "      session finds the file only if it reaches the same server.\n"
            '      To keep a client on one server, set sticky = "source" in [[backends]]\n'
            '      (the demo has sticky = "none").\n'
        ) in output


@pytest.mark.parametrize("option", ["--port", "--stats-port"])
def test_demo_reports_a_taken_port_before_anything_else(option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {"--port": free_port(), "--stats-port": free_port(), option: busy}
        result = ftplb("demo", *(f"{name}={number}" for name, number in ports.items()))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"ftplb: cannot listen on 127.0.0.1:{busy} ({option}): Address already in use\n"
    )


@pytest.mark.parametrize("section", ["defaults", "frontend"])
def test_connection_limits_answer_421(section: str) -> None:
    limit = "max_connections = 2"
    with farm(
        files={"f.txt": b"x"},
        defaults=limit if section == "defaults" else "",
        frontend=limit if section == "frontend" else "",
    ) as group:
        lb = group.lb
        held = [
            clients.ftplib_session(lb.host, lb.port, group.user, group.password, "pasv")
            for _ in range(2)
        ]
        try:
            with pytest.raises(ftplib.error_temp, match=r"^421"):
                clients.ftplib_session(lb.host, lb.port, group.user, group.password, "pasv")
        finally:
            for session in held:
                session.close()
        # A freed slot is usable again.
        deadline = time.monotonic() + 5
        while True:
            try:
                with clients.ftplib_session(
                    lb.host, lb.port, group.user, group.password, "pasv"
                ) as ftp:
                    assert ftp.retr("f.txt") == b"x"
                break
            except ftplib.error_temp:
                assert time.monotonic() < deadline
                time.sleep(0.1)
