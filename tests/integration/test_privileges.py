"""``[defaults] user``: ftplb binds port 21 as root, then serves as that user.

Runs only as root (CI does): a real ``ftplb run`` listens on port 21 of a
127.0.0.x address with ``user = "nobody"``. The kernel's view of the serving
processes (/proc/PID/status) must show nobody's ids; a transfer through it,
a reload, a refused reload that would need root again, and a graceful stop
must all work, and the temporary directories must be gone afterwards.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftplb import cli
from tests.integration import clients
from tests.integration.balancer import (
    RunningBalancer,
    log_fields,
    simple_config,
    start_balancer,
)
from tests.integration.farms import started_servers
from tests.support import free_port, skip_or_fail, wait_until

pytestmark = pytest.mark.integration

USER = "nobody"
SIZE = 2 * 1024 * 1024


def _require_root() -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root: it binds port 21 and drops to another user")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        skip_or_fail(f"no user {USER!r} on this machine")


def _free_privileged_address() -> tuple[str, int]:
    """A 127.0.0.x address whose port 21 is free right now."""
    for last in range(150, 250):
        host = f"127.0.0.{last}"
        with socket.socket() as probe:
            try:
                probe.bind((host, 21))
            except OSError:
                continue
        return host, 21
    raise AssertionError("no 127.0.0.x address with a free port 21")


def _free_privileged_port(host: str) -> int:
    for port in range(990, 1000):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        return port
    raise AssertionError(f"no free port below 1024 on {host}")


def _ids(pid: int) -> tuple[list[int], list[int]]:
    """The (real, effective, saved, filesystem) uids and gids of ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return [int(v) for v in fields["Uid"]], [int(v) for v in fields["Gid"]]


@pytest.fixture
def shared_tmpdir() -> Iterator[Path]:
    """A TMPDIR like /tmp (sticky, open to all) that the dropped user can reach;
    pytest's tmp_path is root's alone."""
    path = Path(tempfile.mkdtemp(prefix="ftplb-test-tmp-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _serving_pids(lb: RunningBalancer, workers: int) -> list[int]:
    if workers == 1:
        return [lb.process.pid]
    lines = [log_fields(line) for line in lb.log_lines("info")]
    pids = [int(f["pid"]) for f in lines if f.get("message") == "worker started"]
    assert len(pids) == workers, lb.log_text()
    return pids


def _reloaded_lines(lb: RunningBalancer) -> int:
    return sum(1 for line in lb.log_lines("info") if log_fields(line).get("message") == "reloaded")


def _download(
    lb: RunningBalancer, user: str, password: str, work: Path, data: bytes, port: int = 0
) -> None:
    url = clients.ftp_url(lb.host, port or lb.port, "blob.bin", user, password)
    target = work / "download.bin"
    target.unlink(missing_ok=True)
    clients.curl_retr(url, target, "epsv").check()
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("workers", [1, 2])
def test_serves_as_the_configured_user_after_binding_port_21(
    tmp_path: Path, shared_tmpdir: Path, workers: int
) -> None:
    _require_root()
    nobody = pwd.getpwnam(USER)
    data = os.urandom(SIZE)
    host, port = _free_privileged_address()
    with started_servers("pyftpdlib", ["127.0.0.11"], files={"blob.bin": data}) as group:
        admin = f'[admin]\nbind = "127.0.0.1:{free_port()}"\n'
        text = simple_config(
            [group[0].address],
            port=port,
            host=host,
            defaults=f'workers = {workers}\nuser = "{USER}"',
            sections=admin,
        )
        lb = start_balancer(text, host, port, {**os.environ, "TMPDIR": str(shared_tmpdir)})
        try:
            # A lone process reads its file again on SIGHUP, as the dropped user.
            lb.workdir.chmod(0o755)
            lb.config_path.chmod(0o644)
            wait_until(
                lambda: lb.log_text().count("privileges dropped") == workers,
                30,
                "every serving process to drop root",
            )
            for pid in _serving_pids(lb, workers):
                uids, gids = _ids(pid)
                assert uids == [nobody.pw_uid] * 4, f"pid {pid}: Uid {uids}"
                assert gids == [nobody.pw_gid] * 4, f"pid {pid}: Gid {gids}"
            if workers > 1:
                # The master keeps root, to restart a worker on port 21.
                assert _ids(lb.process.pid)[0][0] == 0
            _download(lb, group[0].user, group[0].password, tmp_path, data)

            # A reload works as the dropped user, and may add a port of 1024 or more ...
            high = free_port(host)
            lb.config_path.write_text(
                simple_config(
                    [group[0].address],
                    port=port,
                    host=host,
                    extra_binds=[f"{host}:{high}"],
                    defaults=f'workers = {workers}\nuser = "{USER}"',
                    sections=admin,
                )
            )
            before = _reloaded_lines(lb)
            lb.process.send_signal(signal.SIGHUP)
            expected = before + (1 if workers == 1 else 1 + workers)
            wait_until(lambda: _reloaded_lines(lb) >= expected, 15, "the reload")
            _download(lb, group[0].user, group[0].password, tmp_path, data)
            _download(lb, group[0].user, group[0].password, tmp_path, data, port=high)

            if workers > 1:
                # A worker that dies is restarted as root, binds port 21 and the new
                # port beside its dropped peers (same socket owner), and drops too.
                os.kill(_serving_pids(lb, workers)[0], signal.SIGKILL)
                wait_until(
                    lambda: lb.log_text().count("privileges dropped") == workers + 1,
                    30,
                    "the restarted worker to drop root",
                )
                restarted = _serving_pids(lb, workers + 1)[-1]
                assert _ids(restarted)[0] == [nobody.pw_uid] * 4
                assert "worker_restart_failed" not in lb.log_text()
                _download(lb, group[0].user, group[0].password, tmp_path, data, port=high)

            # ... but one that adds a port below 1024 is refused, with the reason.
            extra = f"{host}:{_free_privileged_port(host)}"
            lb.config_path.write_text(
                simple_config(
                    [group[0].address],
                    port=port,
                    host=host,
                    extra_binds=[f"{host}:{high}", extra],
                    defaults=f'workers = {workers}\nuser = "{USER}"',
                    sections=admin,
                )
            )
            lb.process.send_signal(signal.SIGHUP)
            wait_until(
                lambda: "ports below 1024 need root" in lb.log_text(), 15, "the refused reload"
            )
            assert any(
                "warning=reload_refused" in line and extra in line
                for line in lb.log_lines("warning")
            ), lb.log_text()
            _download(lb, group[0].user, group[0].password, tmp_path, data)
        finally:
            status = lb.stop()
        assert status == 0, lb.log_text()[-4000:]
    # The metrics and run directories, handed to the user, are gone.
    assert list(shared_tmpdir.iterdir()) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_user_it_cannot_switch_to_is_a_start_error(shared_tmpdir: Path, workers: int) -> None:
    """A process that is not root cannot become another user: exit 1, a clear message.

    The interpreter may live where another user cannot run it (under /root), so
    the child is a fork of this test that becomes nobody and runs ``ftplb run``.
    """
    _require_root()  # to become nobody
    nobody = pwd.getpwnam(USER)
    config = shared_tmpdir / "ftplb.toml"
    config.write_text(
        simple_config(
            [("127.0.0.11", 21)],
            port=free_port(),
            defaults=f'user = "daemon"\nworkers = {workers}',
        )
    )
    config.chmod(0o644)
    output_path = shared_tmpdir / "output.txt"
    with output_path.open("wb") as output:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 2
            try:
                # pytest's capture owns sys.stdout and sys.stderr: replace them.
                sys.stdout = sys.stderr = open(output.fileno(), "w", closefd=False)  # noqa: SIM115
                tempfile.tempdir = str(shared_tmpdir)  # pytest's is root's alone
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                code = cli.main(["run", "-c", str(config)])
            finally:
                sys.stderr.flush()
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    text = output_path.read_text()
    assert os.waitstatus_to_exitcode(status) == 1, text
    assert "cannot switch to user daemon" in text
    assert "not root" in text
    assert "Traceback" not in text
