"""``ftplb status`` and ``ftplb top`` in a real terminal, against a real ``ftplb run``.

tmux is the terminal: each test starts its own tmux server (its own ``-L``
socket), runs the command in a 200x50 window, reads the screen with
``capture-pane`` and types with ``send-keys``. Two pyftpdlib servers stand
behind the balancer, and curl downloads a file slowly (``--limit-rate``), so
that ``top`` has a transfer in progress whose bytes rise from one screen to
the next.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import clients
from tests.integration.admin_api import (
    OPS,
    OPS_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    admin_section,
)
from tests.integration.farms import Farm, farm
from tests.integration.test_admin_live import free_port_for_admin
from tests.support import skip_or_fail, wait_until

pytestmark = pytest.mark.integration

FTPLB = [sys.executable, "-m", "ftplb"]
SIZE = 24 * 1024 * 1024
RATE = "1M"
"""curl's --limit-rate: about 24 s for SIZE, less what the socket buffers hold."""
WAIT = 20.0
WIDTH, HEIGHT = 200, 50


@dataclass
class Terminal:
    """One tmux server of a test's own, with one window running one command."""

    socket: str

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            # The window's size is the terminal's: not a COLUMNS or LINES of the test run.
            env={k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES"}},
        )
        return done.stdout

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Run ``argv`` in a new window; when it ends, the screen shows ``EXIT=<status>``.

        bash runs it: on Ctrl-C, bash waits for the command and carries on
        when the command handled the signal, so the status line is written.
        """
        sets = [part for key, value in (env or {}).items() for part in ("-e", f"{key}={value}")]
        command = f"{shlex.join(argv)}; echo EXIT=$?; sleep 600"
        self.tmux(
            "-f", "/dev/null", "new-session", "-d", "-x", str(WIDTH), "-y", str(HEIGHT), *sets,
            "bash", "-c", command,
        )  # fmt: skip

    def wait_for_exit(self, what: str) -> int:
        """The command's exit status, once it has ended."""
        screen = self.wait_for("EXIT=", what)
        match = re.search(r"^EXIT=(\d+)$", screen, re.MULTILINE)
        assert match is not None, screen
        return int(match.group(1))

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def wait_for(self, text: str, what: str) -> str:
        """The screen once it shows ``text``."""
        return self.wait_for_all((text,), what)

    def wait_for_all(self, texts: tuple[str, ...], what: str) -> str:
        """The first screen that shows every one of ``texts``."""
        shown = [""]

        def showing() -> bool:
            shown[0] = self.screen()
            return all(text in shown[0] for text in texts)

        try:
            wait_until(showing, WAIT, what)
        except AssertionError as error:
            raise AssertionError(f"{error}; the screen:\n{shown[0]}") from None
        return shown[0]


@contextlib.contextmanager
def terminal() -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        skip_or_fail("tmux missing: run scripts/install-test-deps.sh as root")
    term = Terminal(f"ftplb-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield term
    finally:
        # Only the tmux server of this test, by its own socket.
        subprocess.run(
            ["tmux", "-L", term.socket, "kill-server"], capture_output=True, timeout=10, check=False
        )


@contextlib.contextmanager
def watched_farm() -> Iterator[tuple[Farm, str]]:
    """Two pyftpdlib servers (s1, s2) with ``slow.bin`` behind a balancer with admin users."""
    port = free_port_for_admin()
    content = os.urandom(SIZE)
    with farm("pyftpdlib", files={"slow.bin": content}, sections=admin_section(port)) as group:
        yield group, f"http://127.0.0.1:{port}"


def slow_download(
    group: Farm, pool: ThreadPoolExecutor, dest: Path
) -> Future[clients.ClientResult]:
    lb = group.lb
    url = clients.ftp_url(lb.host, lb.port, "slow.bin", group.user, group.password)
    started = pool.submit(clients.curl_retr, url, dest, "epsv", None, ["--limit-rate", RATE])
    wait_until(lambda: dest.exists() and dest.stat().st_size > 0, WAIT, "the download to start")
    return started


_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def transfer_bytes(screen: str) -> float:
    """The bytes so far of the one transfer of ``slow.bin`` on the screen."""
    (line,) = [line for line in screen.splitlines() if "slow.bin" in line]
    # The first size on the line is the Bytes column; the Rate column's ends in "/s".
    match = re.search(r"(\d+(?:\.\d+)?) (B|KiB|MiB|GiB)(?!/s)", line)
    assert match is not None, line
    return float(match.group(1)) * _UNITS[match.group(2)]


def ftplb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FTPLB, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_top_shows_the_servers_and_a_transfer_whose_bytes_rise(tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as pool, watched_farm() as (group, url), terminal() as term:
        down = tmp_path / "slow.bin"
        download = slow_download(group, pool, down)
        term.start(
            [*FTPLB, "top", "--admin", url, "--user", VIEWER, "--interval", "0.5"],
            {"FTPLB_ADMIN_PASSWORD": VIEWER_PASSWORD},
        )
        first = term.wait_for_all(("slow.bin", "2/2 UP"), "the transfer and both servers UP")
        for shown in ("Frontend ftp", "Backend pool", "s1", "s2", "Transfers in progress", "RETR"):
            assert shown in first, shown
        assert group.user in first
        before = transfer_bytes(first)
        # The same screen, redrawn: the bytes rise while curl reads.
        wait_until(lambda: transfer_bytes(term.screen()) > before, WAIT, "the bytes to rise")

        download.result(60).check()
        assert (
            hashlib.sha256(down.read_bytes()).digest()
            == hashlib.sha256((group.servers[0].root / "slow.bin").read_bytes()).digest()
        )
        term.wait_for("No transfer in progress.", "the finished transfer to leave the table")
        term.keys("q")
        assert term.wait_for_exit("top to end on q") == 0
        assert "Traceback" not in term.screen()


def test_top_ends_on_ctrl_c_without_a_traceback() -> None:
    with watched_farm() as (_, url):
        with terminal() as term:
            term.start(
                [*FTPLB, "top", "--admin", url, "--user", OPS],
                {"FTPLB_ADMIN_PASSWORD": OPS_PASSWORD},
            )
            term.wait_for("Backend pool", "top's first screen")
            term.keys("C-c")
            assert term.wait_for_exit("top to end on Ctrl-C") == 0
            assert "Traceback" not in term.screen()
        with terminal() as term:
            # No user: the listener refuses, and top says so in one line.
            term.start([*FTPLB, "top", "--admin", url])
            assert term.wait_for_exit("top without a user to end") == 1
            screen = term.screen()
            assert "ftplb top: authentication failed" in screen
            assert "Traceback" not in screen


def test_status_prints_the_tables_once(tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as pool, watched_farm() as (group, url), terminal() as term:
        download = slow_download(group, pool, tmp_path / "slow.bin")
        # The transfers table is published at least once a second: wait until
        # both the servers and the transfer are in it, so that the one screen
        # below has something to show.
        wait_until(
            lambda: all(
                shown in ftplb("status", "-c", str(group.lb.config_path)).stdout
                for shown in ("2/2 UP", "slow.bin")
            ),
            WAIT,
            "the servers UP and the transfer published",
        )
        term.start(
            [*FTPLB, "status", "--admin", url, "--user", OPS],
            {"FTPLB_ADMIN_PASSWORD": OPS_PASSWORD},
        )
        assert term.wait_for_exit("status to end") == 0
        screen = term.screen()
        for shown in ("Frontend ftp", "Backend pool", "s1", "s2", "UP", "2/2 UP", "slow.bin"):
            assert shown in screen, shown
        assert transfer_bytes(screen) > 0
        # The table fits the terminal: no line wider than the window.
        assert max(len(line) for line in screen.splitlines()) <= WIDTH
        download.result(60).check()


def test_status_with_the_configuration_file() -> None:
    with watched_farm() as (group, _):
        config = str(group.lb.config_path)
        # The file has several users: the legacy one, whose password is in the file, reads.
        result = ftplb("status", "-c", config)
        assert result.returncode == 0, result.stderr
        assert "Backend pool" in result.stdout and "s1" in result.stdout
        # A hashed user: the password comes from the environment.
        result = ftplb("status", "-c", config, "--user", VIEWER, env={
            "FTPLB_ADMIN_PASSWORD": VIEWER_PASSWORD
        })  # fmt: skip
        assert result.returncode == 0, result.stderr
        # ... and without it, there is no prompt off a terminal: one line says what to set.
        result = ftplb("status", "-c", config, "--user", VIEWER)
        assert result.returncode == 1
        assert (
            result.stderr == f"ftplb status: no password for {VIEWER!r}: set FTPLB_ADMIN_PASSWORD\n"
        )


def test_status_says_in_one_line_why_it_cannot_read(tmp_path: Path) -> None:
    with watched_farm() as (_, url):
        result = ftplb("status", "--admin", url, "--user", OPS, env={
            "FTPLB_ADMIN_PASSWORD": "wrong"
        })  # fmt: skip
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == (
            "ftplb status: authentication failed: wrong user name or password (HTTP 401)\n"
        )
    # The balancer has stopped: nothing listens there any more.
    result = ftplb("status", "--admin", url)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"ftplb status: cannot reach {url}: Connection refused\n"

    no_admin = tmp_path / "no-admin.toml"
    no_admin.write_text(
        '[[frontends]]\nname = "f"\nbind = ["127.0.0.1:2121"]\nbackend = "b"\n'
        '[[backends]]\nname = "b"\n[[backends.servers]]\nname = "s"\naddress = "127.0.0.1:21"\n'
    )
    result = ftplb("status", "-c", str(no_admin))
    assert (result.returncode, result.stderr) == (
        1,
        f"ftplb status: {no_admin} has no [admin] section: give --admin URL\n",
    )
    result = ftplb("status")
    assert (result.returncode, result.stderr) == (
        1,
        "ftplb status: give -c CONFIG or --admin URL\n",
    )
