"""Real FTP servers as test fixtures: pyftpdlib, vsftpd, ProFTPD and Pure-FTPd.

Each ``start_*`` function writes a config into a fresh temp dir, starts the server
as a foreground process bound to one loopback address and port, waits for its 220
banner and returns an :class:`FtpServer` handle. The servers keep their default
passive-mode settings on purpose: the balancer must cope with unmodified servers.

vsftpd and Pure-FTPd are unpacked from their .deb into ``<repo>/.deps/root`` by
``scripts/install-test-deps.sh``; ProFTPD is installed from apt. The system servers
need root and the ``ftptest`` account that the same script creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPS_ROOT = Path(os.environ.get("FTPLB_DEPS_ROOT", REPO_ROOT / ".deps" / "root"))
VSFTPD_BIN = DEPS_ROOT / "usr" / "sbin" / "vsftpd"
PUREFTPD_BIN = DEPS_ROOT / "usr" / "sbin" / "pure-ftpd"
PURE_PW_BIN = DEPS_ROOT / "usr" / "bin" / "pure-pw"
PAM_SERVICE = "ftplb-test"
PAM_SERVICE_FILE = Path("/etc/pam.d") / PAM_SERVICE

SYSTEM_USER = "ftptest"
SYSTEM_PASSWORD = "ftptest"

STARTUP_TIMEOUT = 10.0
STOP_GRACE = 5.0
LOG_TAIL_CHARS = 4000


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries its log output."""


@dataclass
class ForegroundProcess:
    """A process this test session started, as leader of its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self) -> None:
        """Stop it by its PID: SIGTERM, wait, SIGKILL after a grace period.

        The signal goes to the process group it leads: forking servers
        (vsftpd, ProFTPD, Pure-FTPd) leave one child per session otherwise.
        Calling it again does nothing, so a recycled PID is never signalled.
        """
        if self._stopped:
            return
        self._stopped = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            try:
                self.process.wait(timeout=STOP_GRACE)
                break
            except subprocess.TimeoutExpired:
                continue
        # Session children may outlive the leader for a moment; make sure none stays.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


def spawn_foreground(name: str, argv: list[str], workdir: Path) -> ForegroundProcess:
    """Start ``argv`` in ``workdir`` in its own process group, output to output.log."""
    log_path = workdir / "output.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    return ForegroundProcess(name, process, workdir, log_path)


@dataclass
class FtpServer:
    """A running FTP server process that this test session started."""

    kind: str
    host: str
    port: int
    root: Path
    user: str
    password: str
    proc: ForegroundProcess = field(repr=False)
    owns_root: bool = False
    """Remove ``root`` when the server stops (it was made for this server alone)."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def workdir(self) -> Path:
        return self.proc.workdir

    @property
    def log_path(self) -> Path:
        return self.proc.log_path

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def log_text(self) -> str:
        """The server's captured stdout/stderr and log files, for error messages."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def is_running(self) -> bool:
        return self.proc.is_running()

    def stop(self) -> None:
        self.proc.stop()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------
# availability


def _is_root() -> bool:
    return os.geteuid() == 0


def _system_user_problem() -> str | None:
    if not _is_root():
        return "needs root (it switches to the ftptest account)"
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return f"system user {SYSTEM_USER!r} missing: run scripts/install-test-deps.sh as root"
    return None


def _proftpd_binary() -> str | None:
    return shutil.which("proftpd") or (
        "/usr/sbin/proftpd" if Path("/usr/sbin/proftpd").exists() else None
    )


def available(kind: str) -> str | None:
    """None when ``kind`` can run here, else the reason why not."""
    if kind == "pyftpdlib":
        try:
            import pyftpdlib  # noqa: F401, PLC0415
        except ImportError:
            return "pyftpdlib is not installed"
        return None
    if kind == "vsftpd":
        if not VSFTPD_BIN.exists():
            return f"{VSFTPD_BIN} missing: run scripts/install-test-deps.sh as root"
        if not PAM_SERVICE_FILE.exists():
            return f"{PAM_SERVICE_FILE} missing: run scripts/install-test-deps.sh as root"
        return _system_user_problem()
    if kind == "proftpd":
        if _proftpd_binary() is None:
            return "proftpd missing: run scripts/install-test-deps.sh as root"
        return _system_user_problem()
    if kind == "pureftpd":
        for binary in (PUREFTPD_BIN, PURE_PW_BIN):
            if not binary.exists():
                return f"{binary} missing: run scripts/install-test-deps.sh as root"
        return _system_user_problem()
    return f"unknown server kind {kind!r}"


# ---------------------------------------------------------------------------
# helpers


def ipv6_loopback_problem() -> str | None:
    """None when ::1 can be bound here (some containers disable IPv6), else why not."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        return f"IPv6 loopback ::1 unusable: {exc}"
    return None


def _is_ipv6(host: str) -> bool:
    return ":" in host


def _make_workdir(kind: str) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=f"ftplb-conf-{kind}-"))
    # Config files must belong to root and not be world-writable (vsftpd, ProFTPD check).
    workdir.chmod(0o755)
    return workdir


def read_banner(host: str, port: int, timeout: float = 3.0) -> bytes:
    """The first reply line of an FTP service (then QUIT)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        with contextlib.suppress(OSError):
            sock.sendall(b"QUIT\r\n")
        return data


def poll_banner(
    read: Callable[[], bytes],
    exited: Callable[[], str | None],
    timeout: float,
    interval: float = 0.05,
) -> str | None:
    """Call ``read`` until it returns a 220 banner: None then, else why it never did.

    ``exited`` says why the process behind the port is gone (None while it runs),
    so that a crash ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        gone = exited()
        if gone is not None:
            return gone
        try:
            banner = read()
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if banner.startswith(b"220"):
                return None
            last = f"unexpected banner {banner!r}"
        time.sleep(interval)
    return last


def _wait_for_banner(server: FtpServer, timeout: float = STARTUP_TIMEOUT) -> None:
    last_error = poll_banner(
        lambda: read_banner(server.host, server.port, timeout=2.0),
        lambda: None if server.is_running() else "process exited",
        timeout,
    )
    if last_error is None:
        return
    log = server.log_text()[-LOG_TAIL_CHARS:]
    server.stop()
    raise ServerStartError(
        f"{server.kind} on {server.host} port {server.port} did not answer 220 "
        f"within {timeout:.0f} s ({last_error}).\nServer output:\n{log}"
    )


def _spawn(
    kind: str,
    argv: list[str],
    *,
    host: str,
    port: int,
    root: Path,
    user: str,
    password: str,
    workdir: Path,
) -> FtpServer:
    proc = spawn_foreground(kind, argv, workdir)
    server = FtpServer(kind, host, port, root, user, password, proc)
    _wait_for_banner(server)
    return server


def make_server_root(prefix: str = "ftplb-root-") -> Path:
    """A fresh directory that the system test account can reach and write.

    vsftpd changes into ``local_root`` after dropping privileges, so every
    directory on the way must be searchable by others (pytest's tmp_path is not).
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def _unreachable_ancestor(path: Path) -> Path | None:
    for ancestor in path.resolve().parents:
        if not ancestor.stat().st_mode & 0o001:
            return ancestor
    return None


def _prepare_system_root(root: Path) -> pwd.struct_passwd:
    """Make ``root`` usable by the system test account (owner ftptest, mode 0755)."""
    account = pwd.getpwnam(SYSTEM_USER)
    root.mkdir(parents=True, exist_ok=True)
    blocked = _unreachable_ancestor(root)
    if blocked is not None:
        raise ServerStartError(
            f"{root} is not reachable by {SYSTEM_USER}: {blocked} is not searchable "
            "by others (use make_server_root())"
        )
    os.chown(root, account.pw_uid, account.pw_gid)
    root.chmod(0o755)
    return account


def _require(kind: str) -> None:
    problem = available(kind)
    if problem is not None:
        raise ServerStartError(f"{kind} cannot run here: {problem}")


# ---------------------------------------------------------------------------
# pyftpdlib

_PYFTPDLIB_MAIN = textwrap.dedent(
    """
    import logging, sys
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.log import config_logging
    from pyftpdlib.servers import FTPServer, ThreadedFTPServer

    host, port, root, user, password, sessions = sys.argv[1:7]
    idle = sessions == "idle"
    config_logging(level=logging.WARNING if idle else logging.INFO)
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    handler = FTPHandler
    handler.authorizer = authorizer
    if idle:
        handler.timeout = 0  # no idle timeout: the sessions are held on purpose
        server = FTPServer((host, int(port)), handler, backlog=1024)
        server.max_cons = 0  # unlimited (the default is 512)
    else:
        server = ThreadedFTPServer((host, int(port)), handler)
    server.serve_forever()
    """
)


def start_pyftpdlib(
    host: str,
    port: int,
    root: Path,
    user: str = "ftptest",
    password: str = "ftptest",
    *,
    idle_sessions: bool = False,
) -> FtpServer:
    """pyftpdlib's ThreadedFTPServer in a subprocess, with a DummyAuthorizer user.

    With ``idle_sessions``, its single-process FTPServer (epoll) instead, for holding
    thousands of idle sessions: no idle timeout, no connection cap, a backlog of 1024,
    and only warnings in its log.
    """
    _require("pyftpdlib")
    workdir = _make_workdir("pyftpdlib")
    root.mkdir(parents=True, exist_ok=True)
    sessions = "idle" if idle_sessions else "threaded"
    argv = [sys.executable, "-c", _PYFTPDLIB_MAIN, host, str(port), str(root), user, password]
    return _spawn(
        "pyftpdlib",
        [*argv, sessions],
        host=host,
        port=port,
        root=root,
        user=user,
        password=password,
        workdir=workdir,
    )


# ---------------------------------------------------------------------------
# vsftpd


def start_vsftpd(
    host: str,
    port: int,
    root: Path,
    user: str = SYSTEM_USER,
    password: str = SYSTEM_PASSWORD,
    *,
    extra_config: Mapping[str, str] | None = None,
) -> FtpServer:
    """vsftpd 3.0.3 in the foreground, the system user chrooted into ``root``.

    ``extra_config`` adds or overrides settings ("pasv_address", "ssl_enable",
    ...): vsftpd keeps the last value of a setting given twice.
    """
    _require("vsftpd")
    workdir = _make_workdir("vsftpd")
    _prepare_system_root(root)
    empty = workdir / "empty"
    empty.mkdir(mode=0o755)
    if _is_ipv6(host):
        listen = f"listen=NO\nlisten_ipv6=YES\nlisten_address6={host}\n"
    else:
        listen = f"listen=YES\nlisten_ipv6=NO\nlisten_address={host}\n"
    config = listen + textwrap.dedent(
        f"""\
            listen_port={port}
            background=NO
            anonymous_enable=NO
            local_enable=YES
            write_enable=YES
            local_umask=022
            local_root={root}
            chroot_local_user=YES
            allow_writeable_chroot=YES
            secure_chroot_dir={empty}
            pam_service_name={PAM_SERVICE}
            userlist_enable=NO
            tcp_wrappers=NO
            seccomp_sandbox=NO
            isolate_network=NO
            max_clients=0
            max_per_ip=0
            xferlog_enable=YES
            xferlog_std_format=NO
            log_ftp_protocol=YES
            vsftpd_log_file={workdir / "vsftpd.log"}
            """
    )
    config += "".join(f"{key}={value}\n" for key, value in (extra_config or {}).items())
    conf = workdir / "vsftpd.conf"
    conf.write_text(config)
    conf.chmod(0o600)
    return _spawn(
        "vsftpd",
        [str(VSFTPD_BIN), str(conf)],
        host=host,
        port=port,
        root=root,
        user=user,
        password=password,
        workdir=workdir,
    )


# ---------------------------------------------------------------------------
# ProFTPD


def start_proftpd(
    host: str,
    port: int,
    root: Path,
    user: str = SYSTEM_USER,
    password: str = SYSTEM_PASSWORD,
    *,
    extra_config: Mapping[str, str] | None = None,
) -> FtpServer:
    """ProFTPD standalone in the foreground (-n), the system user chrooted into ``root``.

    ``extra_config`` adds directives, such as ``{"MasqueradeAddress": "127.0.0.1",
    "PassivePorts": "50000 50099"}``.
    """
    _require("proftpd")
    binary = _proftpd_binary()
    assert binary is not None
    workdir = _make_workdir("proftpd")
    _prepare_system_root(root)
    config = textwrap.dedent(
        f"""\
        ServerType standalone
        ServerName "ftplb test proftpd"
        DefaultServer on
        UseIPv6 {"on" if _is_ipv6(host) else "off"}
        DefaultAddress {host}
        SocketBindTight on
        Port {port}
        User nobody
        Group nogroup
        Umask 022
        MaxInstances 500
        PidFile {workdir / "proftpd.pid"}
        ScoreboardFile {workdir / "proftpd.scoreboard"}
        DelayTable none
        WtmpLog off
        UseReverseDNS off
        RequireValidShell off
        AuthOrder mod_auth_unix.c
        DefaultRoot {root}
        AllowOverwrite on
        SystemLog {workdir / "proftpd.log"}
        TransferLog {workdir / "xfer.log"}
        """
    )
    config += "".join(f"{key} {value}\n" for key, value in (extra_config or {}).items())
    conf = workdir / "proftpd.conf"
    conf.write_text(config)
    conf.chmod(0o600)
    return _spawn(
        "proftpd",
        [binary, "-n", "-c", str(conf)],
        host=host,
        port=port,
        root=root,
        user=user,
        password=password,
        workdir=workdir,
    )


# ---------------------------------------------------------------------------
# Pure-FTPd


def _sha512_crypt(password: str) -> str:
    """A SHA512-crypt hash ($6$), which libcrypt verifies in a few milliseconds."""
    with warnings.catch_warnings():
        # crypt is deprecated (removed in 3.13); it is the stdlib's only crypt(3).
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # noqa: PLC0415

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def _make_puredb(workdir: Path, user: str, password: str, root: Path) -> Path:
    """A puredb with one virtual user mapped onto the ftptest account, home ``root``.

    The passwd line is written here rather than by ``pure-pw useradd``: pure-pw
    hashes with argon2id at t=255, which costs 1-5 s per login on two cores.
    """
    account = pwd.getpwnam(SYSTEM_USER)
    passwd_file = workdir / "pureftpd.passwd"
    pdb = workdir / "pureftpd.pdb"
    # user:hash:uid:gid:gecos:home/./ then 12 optional limit fields.
    fields = [user, _sha512_crypt(password), str(account.pw_uid), str(account.pw_gid), ""]
    passwd_file.write_text(":".join([*fields, f"{root}/./", *[""] * 12]) + "\n")
    passwd_file.chmod(0o600)
    subprocess.run(
        [str(PURE_PW_BIN), "mkdb", str(pdb), "-f", str(passwd_file)],
        check=True,
        capture_output=True,
        timeout=10,
    )
    return pdb


def start_pureftpd(
    host: str,
    port: int,
    root: Path,
    user: str = SYSTEM_USER,
    password: str = SYSTEM_PASSWORD,
    *,
    extra_args: Sequence[str] = (),
) -> FtpServer:
    """Pure-FTPd in the foreground with a puredb virtual user chrooted into ``root``.

    ``extra_args`` go to the command line, such as ``["-P", "127.0.0.1", "-p",
    "50000:50099"]`` (advertised passive address and port range).
    """
    _require("pureftpd")
    workdir = _make_workdir("pureftpd")
    _prepare_system_root(root)
    pdb = _make_puredb(workdir, user, password, root)
    argv = [
        str(PUREFTPD_BIN),
        "-S",
        f"{host},{port}",
        "-l",
        f"puredb:{pdb}",
        "-A",  # chroot every user into their home
        "-E",  # no anonymous logins
        "-H",  # no reverse DNS
        "-c",
        "500",
        "-C",
        "500",
        "-g",
        str(workdir / "pure-ftpd.pid"),
        "-O",
        f"stats:{workdir / 'xfer.log'}",
        *extra_args,
    ]
    return _spawn(
        "pureftpd",
        argv,
        host=host,
        port=port,
        root=root,
        user=user,
        password=password,
        workdir=workdir,
    )


StartServer = Callable[..., FtpServer]
# What the ftp_server_factory fixture yields: start(kind, host=None, port=None, root=None).
StartFtpServer = Callable[..., FtpServer]

START: dict[str, StartServer] = {
    "pyftpdlib": start_pyftpdlib,
    "vsftpd": start_vsftpd,
    "proftpd": start_proftpd,
    "pureftpd": start_pureftpd,
}

SERVER_KINDS: tuple[str, ...] = tuple(START)

# One loopback address per server kind, so a test can tell them apart.
DEFAULT_HOSTS: dict[str, str] = {
    "pyftpdlib": "127.0.0.11",
    "vsftpd": "127.0.0.12",
    "proftpd": "127.0.0.13",
    "pureftpd": "127.0.0.14",
}
