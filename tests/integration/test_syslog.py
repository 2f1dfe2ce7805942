"""``log_target = "syslog"``: a real ftplb logs to a real rsyslogd, over a Unix socket and UDP.

The test runs its own rsyslogd in the foreground, with a configuration of its
own: an ``imuxsock`` input on a socket in a temporary directory and an
``imudp`` input on a free loopback port, written to a file in the RFC 5424
form. rsyslogd fills APP-NAME and MSGID only when it parsed a message as RFC
5424, so finding them there shows ftplb's messages are that.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess

from ftplb.config.general import SyslogAddress
from ftplb.config.load import load_config_text
from ftplb.runtime import metrics
from ftplb.runtime.logs import EventLog
from ftplb.runtime.syslog_target import MAX_DATAGRAM, SyslogTarget
from tests.integration import clients, farms
from tests.integration.balancer import RunningBalancer, launch_balancer, log_fields, simple_config
from tests.metrics_processes import act_as_process
from tests.support import free_port, skip_or_fail, wait_until

pytestmark = pytest.mark.integration

CONTENT = b"syslog\n" * 500
CLIENT = "127.0.0.121"

RECEIVED = re.compile(
    r"(?P<version>\d+) <(?P<pri>\d+)>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) "
    r"(?P<pid>\S+) (?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)"
)
"""One received line: rsyslog's PROTOCOL-VERSION, then the RFC 5424 message it parsed."""


@dataclass
class Syslogd:
    """A running rsyslogd and what it receives."""

    socket_path: Path
    udp_port: int
    received: Path

    def records(self) -> list[dict[str, str]]:
        lines = self.received.read_text(errors="replace").splitlines()
        matched = [RECEIVED.fullmatch(line) for line in lines]
        assert all(matched), lines
        return [m.groupdict() for m in matched if m is not None]


def rsyslog_config(work: Path, udp_port: int) -> str:
    return f"""
global(workDirectory="{work}")
module(load="imuxsock" SysSock.Use="off")
module(load="imudp")
input(type="imuxsock" Socket="{work}/log.sock" UseSpecialParser="off" ParseHostname="on"
      IgnoreTimestamp="off" CreatePath="on")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
template(name="kept" type="string"
         string="%protocol-version% <%pri%>1 %timereported:::date-rfc3339% %hostname% %app-name% %procid% %msgid% %structured-data% %msg%\\n")
*.* action(type="omfile" file="{work}/received.log" template="kept")
"""  # noqa: E501 - an rsyslog template is one string


@contextlib.contextmanager
def syslogd() -> Iterator[Syslogd]:
    binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    if not Path(binary).exists():
        skip_or_fail("rsyslogd is not installed (scripts/install-test-deps.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="ftplb-syslog-"))
    udp_port = free_port()
    conf = work / "rsyslog.conf"
    conf.write_text(rsyslog_config(work, udp_port))
    output = (work / "rsyslogd.out").open("wb")
    process = subprocess.Popen(
        [binary, "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")],
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    daemon = Syslogd(work / "log.sock", udp_port, work / "received.log")
    try:
        ready_on_both(daemon, process)
        yield daemon
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        output.close()


def ready_on_both(daemon: Syslogd, process: subprocess.Popen[bytes]) -> None:
    """Send a probe on each input until rsyslogd has written both."""
    probes = {
        "unix": b"<14>1 - - probe - - - unix ready",
        "udp": b"<14>1 - - probe - - - udp ready",
    }

    def written() -> bool:
        if process.poll() is not None:
            log = (daemon.received.parent / "rsyslogd.out").read_text(errors="replace")
            raise AssertionError(f"rsyslogd exited with {process.returncode}: {log}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(probes["udp"], ("127.0.0.1", daemon.udp_port))
        if daemon.socket_path.exists():
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            with unix, contextlib.suppress(OSError):
                unix.sendto(probes["unix"], str(daemon.socket_path))
        text = daemon.received.read_text() if daemon.received.exists() else ""
        return "unix ready" in text and "udp ready" in text

    wait_until(written, 10, "rsyslogd to receive on its socket and its UDP port")


@contextlib.contextmanager
def ftplb_to_syslog(config_text: str, port: int, daemon: Syslogd) -> Iterator[RunningBalancer]:
    """``ftplb run``, ready once syslog has its ``listening`` line (stderr stays empty)."""
    lb = launch_balancer(config_text, "127.0.0.1", port)
    process = lb.process
    try:

        def listening() -> bool:
            assert process.poll() is None, lb.log_text()
            return any("listening" in r["msg"] for r in daemon.records() if r["app"] == "ftplb")

        wait_until(listening, 15, "the listening line in syslog")
        yield lb
    finally:
        lb.stop()


@pytest.mark.parametrize(("form", "log_format"), [("unix", "text"), ("udp", "json")])
def test_a_session_line_reaches_syslog_as_rfc_5424(form: str, log_format: str) -> None:
    with syslogd() as daemon, farms.started_servers("pyftpdlib", ["127.0.0.11"]) as group:
        for server in group:
            (server.root / "f.txt").write_bytes(CONTENT)
        address = (
            str(daemon.socket_path) if form == "unix" else f"udp://127.0.0.1:{daemon.udp_port}"
        )
        port = free_port()
        text = simple_config(
            [(s.host, s.port) for s in group],
            port=port,
            health='{ type = "none" }',
            defaults=(
                f'log_format = "{log_format}"\nlog_target = "syslog"\nsyslog_address = "{address}"'
            ),
        )
        with ftplb_to_syslog(text, port, daemon) as lb:
            server = group[0]
            with clients.ftplib_session(
                lb.host, lb.port, server.user, server.password, "pasv", CLIENT
            ) as ftp:
                assert ftp.retr("f.txt") == CONTENT

            def ours(msgid: str) -> list[dict[str, str]]:
                return [r for r in daemon.records() if r["app"] == "ftplb" and r["msgid"] == msgid]

            wait_until(lambda: ours("session"), 10, "the session line in syslog")
            pid = str(lb.process.pid)
        assert lb.process.returncode == 0
        stderr = lb.log_text()
        (received,) = [r for r in ours("session") if CLIENT in r["msg"]]
        (transfer,) = ours("transfer")

    assert (received["version"], received["pri"], received["pid"]) == ("1", "30", pid)
    assert received["host"] == (socket.gethostname() or "-")
    assert received["sd"] == "-"
    # The header's TIMESTAMP is the line's own, milliseconds and offset included.
    assert re.fullmatch(r"\S+T\S+\.\d{3}\+00:00", received["time"]), received
    if log_format == "json":
        line, other = json.loads(received["msg"]), json.loads(transfer["msg"])
        assert line["time"] == received["time"]
    else:
        stamp, kind, _ = received["msg"].split(" ", 2)
        assert (stamp, kind) == (received["time"], "session")
        line, other = log_fields(received["msg"]), log_fields(transfer["msg"])
    assert line["end"] == "quit" and line["session"] == other["session"] != "-", (line, other)
    # Every line went to syslog: nothing of the run was written on stderr.
    assert stderr == "", stderr


# ------------------------------------------------------------- the target alone


def test_a_full_receiver_drops_lines_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))  # and never read: its queue fills up
        target = SyslogTarget(SyslogAddress(path=str(path)))
        sent = 0
        while target.dropped == 0 and sent < 100_000:
            assert target.send("info", "2026-12-05T05:41:07.123+00:00", "x" * 1000)
            sent += 1
        assert target.dropped == 1, sent
        receiver.setblocking(False)
        first = receiver.recv(65536)
    assert first.startswith(b"<30>1 2026-12-05T05:41:07.123+00:00 ")
    target.close()


def test_dropped_lines_are_counted_in_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = str(tmp_path / "metrics")
    act_as_process(monkeypatch, directory)
    path = tmp_path / "full.sock"

    def dropped_total() -> float | None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return registry.get_sample_value("ftplb_log_lines_dropped_total")

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))  # and never read: its queue fills up
        log = EventLog("text", io.StringIO(), syslog=SyslogTarget(SyslogAddress(path=str(path))))
        recorder = metrics.Metrics()
        recorder.attach(log, {}, load_config_text(simple_config([("127.0.0.11", 21)], port=2121)))
        sent = 0
        while log.syslog_dropped < 3 and sent < 100_000:
            log.info("x" * 1000)
            sent += 1
        recorder.sample()
        assert dropped_total() == 3
        log.info("one more")  # dropped too: the receiver still reads nothing
        recorder.stop()  # what is left is counted before the log is let go
        assert log.syslog_dropped == 4
        assert dropped_total() == 4
    log.close()


def test_an_unreachable_receiver_leaves_the_line_on_the_stream(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = EventLog(
        "text", stream, syslog=SyslogTarget(SyslogAddress(path=str(tmp_path / "none.sock")))
    )
    log.info("stopping")
    log.error("cannot bind")
    first, second = stream.getvalue().splitlines()
    assert first.endswith(" info message=stopping")
    assert second == "ftplb: cannot bind"
    assert log.syslog_dropped == 0


def test_a_fatal_error_goes_to_syslog_and_to_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    stream = io.StringIO()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(5)
        log = EventLog("json", stream, syslog=SyslogTarget(SyslogAddress(path=str(path))))
        log.info("listening")
        log.error("cannot bind")
        info, error = receiver.recv(65536), receiver.recv(65536)
        log.close()
    assert info.startswith(b"<30>1 ") and b" info - {" in info
    assert error.startswith(b"<27>1 ") and b" error - {" in error
    # Only the error is on the stream: whoever started ftplb sees why it stopped.
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "cannot bind"
    assert json.loads(error.split(b" - ", 1)[1])["message"] == "cannot bind"


def test_a_line_too_long_for_a_datagram_is_cut_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "small.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        receiver.settimeout(5)
        target = SyslogTarget(SyslogAddress(path=str(path)))
        huge = "x" * 4_000_000  # beyond any socket's send buffer
        assert target.send("transfer", "2026-12-05T05:41:07.123+00:00", huge)
        assert target.send("info", "2026-12-05T05:41:07.124+00:00", "after")
        cut, after = receiver.recv(1 << 20), receiver.recv(65536)
        target.close()
    assert len(cut) == MAX_DATAGRAM and cut.startswith(b"<30>1 2026-12-05T05:41:07.123+00:00 ")
    assert after.endswith(b" info - after")
    assert target.dropped == 0
