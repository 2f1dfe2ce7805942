"""SFTP through a ``mode = "tcp"`` frontend, in front of two real OpenSSH servers.

Each server is Debian's ``sshd``, run in the foreground (``sshd -D -e -f``)
with a config, host key and authorized key that the test generates, on a
loopback address of its own, and stopped by its PID.  Both servers share one
host key, as the servers of one pool behind one address must (a client would
otherwise see the host key change from one session to the next), so curl
checks it with ``--hostpubsha256``.

The client is curl (``sftp://``, libssh2) with a key the test makes.  Each
server starts its sftp sessions in a folder of its own (``internal-sftp
-d``), so a file uploaded through ftplb is on exactly one server's disk, and
a download finds it only if it reaches that server again: source
stickiness, seen from the servers' side.  Each sshd's own log counts the
sessions it served.  The servers run as root and so do the tests; the login
is root's, with ``AuthorizedKeysFile`` pointing at the test's key only.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.balancer import RunningBalancer, balancer, log_fields
from tests.integration.clients import PROCESS_TIMEOUT, make_random_file, sha256_file
from tests.integration.servers import ForegroundProcess, spawn_foreground
from tests.support import free_port, skip_or_fail, wait_until

pytestmark = pytest.mark.integration

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen")
PRIVSEP_DIR = Path("/run/sshd")
LB_HOST = "127.0.0.1"
SERVER_HOSTS = ("127.0.0.151", "127.0.0.152")
SOURCES = ("127.0.9.201", "127.0.9.202")
SIZE = 10 * 1024 * 1024
START_TIMEOUT = 10.0


def _require_sshd() -> None:
    if not SSHD.exists() or SSH_KEYGEN is None:
        skip_or_fail(
            "OpenSSH server unavailable: install openssh-server (scripts/install-test-deps.sh)"
        )
    if os.geteuid() != 0:
        skip_or_fail("sshd needs root for its privilege separation; run the tests as root")
    if not PRIVSEP_DIR.is_dir():
        # What sshd's own service unit does (RuntimeDirectory=sshd): Debian's
        # sshd refuses to start without its privilege-separation directory.
        PRIVSEP_DIR.mkdir(mode=0o755)


@dataclass(frozen=True)
class Keys:
    host_key: Path
    host_sha256: str
    """The host key's SHA-256 fingerprint, base64 without padding (curl's --hostpubsha256)."""
    client_key: Path
    authorized_keys: Path


def _keygen(path: Path) -> None:
    assert SSH_KEYGEN is not None
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "ftplb-test", "-f", str(path)],
        check=True,
        timeout=30,
    )


def make_keys(work: Path) -> Keys:
    host_key, client_key = work / "host_ed25519", work / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    authorized = work / "authorized_keys"
    shutil.copyfile(client_key.with_suffix(".pub"), authorized)
    blob = base64.b64decode(host_key.with_suffix(".pub").read_text().split()[1])
    fingerprint = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return Keys(host_key, fingerprint, client_key, authorized)


_SSHD_CONFIG = """\
ListenAddress {host}:{port}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
# The key files live in a test's temporary folder, not in a home directory.
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# Each server starts its sftp sessions in a folder of its own ("~" to curl).
Subsystem sftp internal-sftp -d {files}
LogLevel VERBOSE
"""


@dataclass
class Sshd:
    name: str
    host: str
    port: int
    files: Path
    """Where its sftp sessions start: no other server sees this folder's files."""
    process: ForegroundProcess

    def log_text(self) -> str:
        return self.process.log_tail(chars=1 << 20)

    def sftp_sessions(self) -> int:
        """The sftp sessions this server started, by its own log."""
        return self.log_text().count("Starting session: subsystem 'sftp' for root")


def start_sshd(name: str, host: str, keys: Keys) -> Sshd:
    workdir = Path(tempfile.mkdtemp(prefix=f"ftplb-sshd-{name}-"))
    files = workdir / "files"
    files.mkdir()
    port = free_port(host)
    config = workdir / "sshd_config"
    config.write_text(
        _SSHD_CONFIG.format(
            host=host,
            port=port,
            host_key=keys.host_key,
            authorized_keys=keys.authorized_keys,
            files=files,
        )
    )
    process = spawn_foreground(f"sshd-{name}", [str(SSHD), "-D", "-e", "-f", str(config)], workdir)
    server = Sshd(name, host, port, files, process)
    try:
        wait_until(
            lambda: not process.is_running() or "Server listening" in server.log_text(),
            START_TIMEOUT,
            f"sshd {name} to listen",
        )
    except AssertionError:
        process.stop()
        raise
    if not process.is_running():
        log = process.log_tail()
        process.stop()
        raise RuntimeError(f"sshd {name} did not start:\n{log}")
    return server


@contextlib.contextmanager
def sftp_farm(keys: Keys) -> Iterator[tuple[list[Sshd], RunningBalancer]]:
    started: list[Sshd] = []
    try:
        for index, host in enumerate(SERVER_HOSTS, start=1):
            started.append(start_sshd(f"s{index}", host, keys))
        # No passive_ports: SSH has no data connections, and tcp mode needs none.
        entries = "\n".join(
            f'[[backends.servers]]\nname = "{s.name}"\naddress = "{s.host}:{s.port}"\n'
            for s in started
        )
        port = free_port(LB_HOST)
        text = f"""
[defaults]
timeout_connect = "2s"

[[frontends]]
name = "sftp"
bind = ["{LB_HOST}:{port}"]
mode = "tcp"
backend = "ssh"

[[backends]]
name = "ssh"
balance = "roundrobin"
sticky = "source"
health = {{ type = "tcp", interval = "500ms", rise = 1, fall = 2, timeout = "1s" }}

{entries}
"""
        with balancer(text, LB_HOST, port) as lb:
            yield started, lb
    finally:
        for server in started:
            server.process.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    _require_sshd()
    return make_keys(tmp_path_factory.mktemp("ssh-keys"))


def curl_sftp(
    lb: RunningBalancer, keys: Keys, source: str, name: str, *transfer: str
) -> subprocess.CompletedProcess[bytes]:
    """curl from ``source`` on the file ``name`` in the starting folder ("~") of the server."""
    argv = [
        "curl",
        "--silent",
        "--show-error",
        "--interface",
        source,
        "--user",
        "root:",
        "--key",
        str(keys.client_key),
        "--pubkey",
        str(keys.client_key.with_suffix(".pub")),
        "--hostpubsha256",
        keys.host_sha256,
        "--connect-timeout",
        "10",
        "--max-time",
        str(int(PROCESS_TIMEOUT) - 10),
        *transfer,
        f"sftp://{lb.host}:{lb.port}/~/{name}",
    ]
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROCESS_TIMEOUT, check=False
    )


def check(completed: subprocess.CompletedProcess[bytes]) -> None:
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-3000:]


def sessions_of(lb: RunningBalancer, source: str) -> list[str]:
    """The servers of the finished sessions from ``source``, from ftplb's log."""
    records = [log_fields(line) for line in lb.log_lines("session")]
    return [r["server"] for r in records if r.get("client", "").startswith(f"{source}:")]


def test_sftp_upload_and_download_balanced_and_sticky(keys: Keys, tmp_path: Path) -> None:
    with sftp_farm(keys) as (group, lb):
        by_name = {server.name: server for server in group}
        served: dict[str, str] = {}
        for source in SOURCES:
            src = tmp_path / f"{source}.up"
            digest = make_random_file(src, SIZE)
            name = f"{uuid.uuid4().hex}.bin"
            check(curl_sftp(lb, keys, source, name, "--upload-file", str(src)))
            # The upload is on one server's disk, and on no other's.
            holders = [s for s in group if (s.files / name).exists()]
            assert len(holders) == 1, holders
            assert sha256_file(holders[0].files / name) == digest
            # The download finds it: the second session went to the same server.
            dest = tmp_path / f"{source}.down"
            check(curl_sftp(lb, keys, source, name, "--output", str(dest)))
            assert sha256_file(dest) == digest
            logged = functools.partial(lambda src: len(sessions_of(lb, src)) == 2, source)
            wait_until(logged, 5, f"the two session lines of {source}")
            assert sessions_of(lb, source) == [holders[0].name] * 2, lb.log_text()[-3000:]
            served[source] = holders[0].name
        # Round robin gave the second source the other server; each server's own
        # log shows the two sftp sessions it served.
        assert sorted(served.values()) == ["s1", "s2"], served
        for server in by_name.values():
            assert server.sftp_sessions() == 2, server.log_text()[-3000:]
        assert all(log_fields(line)["mode"] == "tcp" for line in lb.log_lines("session")), (
            lb.log_lines("session")
        )
