"""The paths under test: two vsftpd servers, and the balancers in front of them.

Every process runs in the foreground with a config generated into a temp dir,
is bound to its own loopback address, and is stopped by its PID:

    127.0.0.21, 127.0.0.22   vsftpd s1, s2 (started by tests/integration/servers.py)
    127.0.0.2                ftplb, mode ftp (``python -m ftplb run -c CFG``)
    127.0.0.3                HAProxy 2.6 mode tcp, the seeds' configuration
    127.0.0.4                HAProxy, the same plus splice and 1 MiB pipes
    127.0.0.5                ProFTPD mod_proxy, reverse, round robin
    127.0.0.6                ftplb terminating explicit FTPS (AUTH TLS), plain to the servers
    127.0.0.7                HAProxy mode tcp with ``ssl crt`` on every bind (implicit FTPS)
    127.0.0.8                ftplb, mode ftp, with transfer rate limits far above the link
    127.0.0.12, 127.0.0.13   workers section: ftplb with N workers, HAProxy tuned with N threads
    127.0.0.14               small-range section: ftplb with 10 passive ports
    127.0.0.15, 127.0.0.16   idle section: ftplb with 2 workers, HAProxy (seed config)
    127.0.0.23, 127.0.0.24   idle section: two single-process pyftpdlib servers

The HAProxy paths need what the seeds' configuration needs from the servers:
each vsftpd advertises the balancer's address (``pasv_address``) and its own
passive port range, and HAProxy forwards each range to its server on the same
port. ftplb and mod_proxy need neither; they ignore the address in a 227 and
connect to the server's control address. The clients use EPSV (229 carries
only a port), so the same two servers serve every path.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import socket
import ssl
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration import servers
from tests.integration.balancer import RunningBalancer, start_balancer
from tests.integration.servers import (
    ForegroundProcess,
    FtpServer,
    poll_banner,
    read_banner,
    spawn_foreground,
)

SERVER_HOSTS = ("127.0.0.21", "127.0.0.22")
CONTROL_PORT = 2121
FTPLB_HOST = "127.0.0.2"
HAPROXY_HOST = "127.0.0.3"
HAPROXY_TUNED_HOST = "127.0.0.4"
PROFTPD_HOST = "127.0.0.5"
FTPLB_TLS_HOST = "127.0.0.6"
HAPROXY_TLS_HOST = "127.0.0.7"
FTPLB_LIMITED_HOST = "127.0.0.8"
WORKERS_FTPLB_HOST = "127.0.0.12"
WORKERS_HAPROXY_HOST = "127.0.0.13"
SMALL_RANGE_HOST = "127.0.0.14"
IDLE_FTPLB_HOST = "127.0.0.15"
IDLE_HAPROXY_HOST = "127.0.0.16"
IDLE_SERVER_HOSTS = ("127.0.0.23", "127.0.0.24")

# Each server's own passive range (the HAProxy scheme); the balancers' client-side ranges.
SERVER_PASSIVE_FIRST = 50000
SERVER_PASSIVE_SIZE = 500
FTPLB_PASSIVE = (40000, 40999)
FTPLB_TLS_PASSIVE = (41000, 41999)
PROFTPD_PASSIVE = (42000, 42999)
FTPLB_LIMITED_PASSIVE = (43000, 43999)
WORKERS_FTPLB_PASSIVE = (44000, 44999)
SMALL_RANGE_PASSIVE = (45000, 45999)  # the section uses the first 10 (--range-ports)
IDLE_FTPLB_PASSIVE = (46000, 46999)

# Every transfer rate limit set, at 1 TB/s: far above any link, so the figures show
# what pacing costs when it never has to wait (the buckets' bookkeeping per chunk).
FAR_ABOVE_THE_LINK = """\
transfer_rate_per_session = "1000GB"
transfer_rate_per_user = "1000GB"
transfer_rate_per_ip = "1000GB"
"""

# Room for 5,000 held sessions (2 fds each), and in the tuned case maxconn/4 pipes
# (2 fds each), under the hard limit of 20,000 fds.
HAPROXY_MAXCONN = 7000
PROFTPD_MAX_INSTANCES = 6000

START_TIMEOUT = 15.0
STOP_GRACE = 10.0

HAPROXY_BIN = shutil.which("haproxy") or "/usr/sbin/haproxy"
PROFTPD_BIN = shutil.which("proftpd") or "/usr/sbin/proftpd"
PROFTPD_MODULES = Path("/usr/lib/proftpd")


class SetupError(RuntimeError):
    """A path under test could not be started; the message says why."""


@dataclass(frozen=True, slots=True)
class PathSpec:
    """How a path is named in tables, and what it is."""

    key: str
    label: str


DIRECT = PathSpec("direct", "direct (client → vsftpd)")
FTPLB = PathSpec("ftplb", "ftplb (mode ftp)")
FTPLB_LIMITED = PathSpec("ftplb_limited", "ftplb, rate limits far above the link")
HAPROXY = PathSpec("haproxy", "HAProxy 2.6 tcp (seed config)")
HAPROXY_TUNED = PathSpec("haproxy_tuned", "HAProxy 2.6 tcp + splice")
PROFTPD = PathSpec("proftpd", "ProFTPD mod_proxy (reverse)")
FTPLB_TLS = PathSpec("ftplb_tls", "ftplb, explicit FTPS terminated")
HAPROXY_TLS = PathSpec("haproxy_tls", "HAProxy 2.6 tcp + ssl crt (implicit FTPS)")
PLAIN_PATHS = (DIRECT, FTPLB, FTPLB_LIMITED, HAPROXY, HAPROXY_TUNED, PROFTPD)
TLS_PATHS = (FTPLB_TLS, HAPROXY_TLS)
ALL_PATHS = (*PLAIN_PATHS, *TLS_PATHS)


@dataclass
class PathUnderTest:
    """A running path: the addresses clients use and the process whose cost is measured.

    ``targets`` has one address for a balancer; for the direct path it has
    the servers', which a client takes in turn (a perfect round robin).
    """

    spec: PathSpec
    targets: tuple[tuple[str, int], ...]
    pid: int | None
    stop: Callable[[], None]
    # ProFTPD forks one process per session: its CPU must be counted over the tree.
    forks_sessions: bool = False
    notes: list[str] = field(default_factory=list)
    # FTPS paths: the CA that signed the balancer's certificate, and whether
    # TLS starts with the first byte (implicit) or after AUTH TLS.
    ca_file: Path | None = None
    implicit_tls: bool = False

    @property
    def key(self) -> str:
        return self.spec.key

    def target(self, index: int) -> tuple[str, int]:
        return self.targets[index % len(self.targets)]


# --------------------------------------------------------------------------- processes


def wait_for_banner(
    proc: ForegroundProcess,
    host: str,
    port: int,
    read: Callable[[], bytes] | None = None,
    over: str = "",
) -> None:
    """Wait until ``host:port`` answers 220 (through the balancer, from a server).

    ``read`` fetches the banner (plain FTP by default); ``over`` names its
    transport in the error ("over TLS").
    """

    def exited() -> str | None:
        code = proc.process.poll()
        return None if code is None else f"exited with {code}"

    last = poll_banner(read or (lambda: read_banner(host, port)), exited, START_TIMEOUT, 0.1)
    if last is None:
        return
    tail = proc.log_tail()
    proc.stop()
    where = f" {over}" if over else ""
    raise SetupError(f"{proc.name} on {host}:{port} did not answer 220{where} ({last}):\n{tail}")


def _tmpfs_or_tmp() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() else None


def _workdir(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"ftplb-bench-{name}-"))
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- servers


def server_passive_range(index: int) -> tuple[int, int]:
    """Server ``index``'s own passive port range (first, last)."""
    first = SERVER_PASSIVE_FIRST + index * SERVER_PASSIVE_SIZE
    return first, first + SERVER_PASSIVE_SIZE - 1


def vsftpd_extra_settings(index: int, advertised: str) -> dict[str, str]:
    """Settings added to the test starter's vsftpd.conf (vsftpd: the last value wins)."""
    first, last = server_passive_range(index)
    return {
        "pasv_enable": "YES",
        "pasv_address": advertised,
        "pasv_min_port": str(first),
        "pasv_max_port": str(last),
        # No per-command log writes, in any path.
        "log_ftp_protocol": "NO",
        "xferlog_enable": "NO",
    }


def start_vsftpd_pair(roots: list[Path]) -> list[FtpServer]:
    """Two vsftpd servers, each with its own root, port range and pasv_address."""
    problem = servers.available("vsftpd")
    if problem is not None:
        raise SetupError(f"vsftpd cannot run here: {problem}")
    started: list[FtpServer] = []
    try:
        for index, (host, root) in enumerate(zip(SERVER_HOSTS, roots, strict=True)):
            extra = vsftpd_extra_settings(index, HAPROXY_HOST)
            started.append(servers.start_vsftpd(host, CONTROL_PORT, root, extra_config=extra))
    except BaseException:
        for server in started:
            server.stop()
        raise
    return started


def direct_path(backends: list[FtpServer]) -> PathUnderTest:
    return PathUnderTest(DIRECT, tuple(s.address for s in backends), pid=None, stop=lambda: None)


# --------------------------------------------------------------------------- ftplb


def ftplb_config(
    backends: Sequence[FtpServer],
    host: str = FTPLB_HOST,
    passive: tuple[int, int] = FTPLB_PASSIVE,
    limits: str = "",
    *,
    port: int = CONTROL_PORT,
) -> str:
    """mode ftp, round robin, no health checks (HAProxy and mod_proxy run none either);
    ``limits`` adds lines to ``[defaults]``."""
    first, last = passive
    servers_toml = "\n".join(
        f'[[backends.servers]]\nname = "s{i}"\naddress = "{s.host}:{s.port}"\n'
        for i, s in enumerate(backends, start=1)
    )
    return (
        textwrap.dedent(
            f"""\
        [defaults]
        timeout_connect = "5s"
        timeout_client = "600s"
        timeout_server = "600s"
        LIMITS
        [[frontends]]
        name = "ftp"
        bind = ["{host}:{port}"]
        mode = "ftp"
        backend = "pool"
        passive_ports = "{first}-{last}"

        [[backends]]
        name = "pool"
        balance = "roundrobin"
        health = {{ type = "none" }}

        """
        ).replace("LIMITS\n", limits)
        + servers_toml
    )


def start_ftplb(backends: list[FtpServer]) -> PathUnderTest:
    return _start_ftplb(FTPLB, ftplb_config(backends), FTPLB_HOST)


def start_ftplb_limited(backends: list[FtpServer]) -> PathUnderTest:
    text = ftplb_config(backends, FTPLB_LIMITED_HOST, FTPLB_LIMITED_PASSIVE, FAR_ABOVE_THE_LINK)
    return _start_ftplb(FTPLB_LIMITED, text, FTPLB_LIMITED_HOST)


def _start_ftplb(spec: PathSpec, config: str, host: str) -> PathUnderTest:
    running: RunningBalancer = start_balancer(config, host, CONTROL_PORT)

    def stop() -> None:
        status = running.stop()
        if status != 0:
            print(f"  ftplb exited with {status}:\n{running.log_text()[-2000:]}", flush=True)
        shutil.rmtree(running.workdir, ignore_errors=True)

    return PathUnderTest(spec, ((host, CONTROL_PORT),), pid=running.process.pid, stop=stop)


# --------------------------------------------------------------------------- HAProxy


def haproxy_config(
    bind_host: str,
    backends: list[FtpServer],
    *,
    tuned: bool,
    nbthread: int | None = None,
    maxconn: int = HAPROXY_MAXCONN,
    passive: bool = True,
) -> str:
    """HAProxy mode tcp the seeds' way: control port balanced, each passive range forwarded.

    ``tuned`` adds only splice in both directions and 1 MiB pipes; ``nbthread``
    sets the thread count (HAProxy's default is one per CPU); ``passive=False``
    leaves out the passive ranges, for sessions that never transfer.
    """
    tuning_global = "    tune.pipesize 1048576\n" if tuned else ""
    tuning_defaults = "    option splice-request\n    option splice-response\n" if tuned else ""
    threads = f"    nbthread {nbthread}" if nbthread is not None else ""
    lines = [
        "global",
        f"    maxconn {maxconn}",
        tuning_global.rstrip("\n"),
        threads,
        "",
        "defaults",
        "    mode tcp",
        f"    maxconn {maxconn}",
        "    timeout connect 5s",
        "    timeout client 600s",
        "    timeout server 600s",
        tuning_defaults.rstrip("\n"),
        "",
        "frontend ftp_control",
        f"    bind {bind_host}:{CONTROL_PORT}",
        "    default_backend ftp_servers",
        "",
        "backend ftp_servers",
        "    balance roundrobin",
    ]
    lines += [f"    server s{i} {s.host}:{s.port}" for i, s in enumerate(backends, start=1)]
    for i, server in enumerate(backends if passive else [], start=1):
        first, last = server_passive_range(i - 1)
        lines += [
            "",
            f"frontend ftp_passive_s{i}",
            f"    bind {bind_host}:{first}-{last}",
            f"    default_backend ftp_passive_s{i}",
            "",
            f"backend ftp_passive_s{i}",
            # No port: connect to the port the client connected to.
            f"    server s{i} {server.host}",
        ]
    return "\n".join(line for line in lines if line is not None) + "\n"


def haproxy_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [HAPROXY_BIN, "-v"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        return out.splitlines()[0] if out else "?"
    return "not installed"


def start_haproxy(backends: list[FtpServer], *, tuned: bool) -> PathUnderTest:
    spec = HAPROXY_TUNED if tuned else HAPROXY
    host = HAPROXY_TUNED_HOST if tuned else HAPROXY_HOST
    return _start_haproxy(spec, host, haproxy_config(host, backends, tuned=tuned))


# --------------------------------------------------------------------------- ProFTPD mod_proxy


def proftpd_proxy_config(workdir: Path, tables: Path, backends: list[FtpServer]) -> str:
    """ProFTPD as a reverse proxy: mod_tls must load before mod_proxy (Debian's build)."""
    first, last = PROFTPD_PASSIVE
    reverse_servers = " ".join(f"ftp://{s.host}:{s.port}" for s in backends)
    return textwrap.dedent(
        f"""\
        ModulePath {PROFTPD_MODULES}
        LoadModule mod_tls.c
        LoadModule mod_proxy.c
        ServerType standalone
        ServerName "ftplb bench mod_proxy"
        DefaultServer on
        UseIPv6 off
        DefaultAddress {PROFTPD_HOST}
        SocketBindTight on
        Port {CONTROL_PORT}
        User nobody
        Group nogroup
        MaxInstances {PROFTPD_MAX_INSTANCES}
        PassivePorts {first} {last}
        PidFile {workdir / "proftpd.pid"}
        ScoreboardFile {workdir / "proftpd.scoreboard"}
        DelayTable none
        WtmpLog off
        UseReverseDNS off
        RequireValidShell off
        TimeoutIdle 600
        SystemLog {workdir / "proftpd.log"}
        <IfModule mod_delay.c>
          DelayEngine off
        </IfModule>
        <IfModule mod_proxy.c>
          ProxyEngine on
          ProxyRole reverse
          ProxyTables {tables}
          ProxyLog {workdir / "proxy.log"}
          ProxyReverseServers {reverse_servers}
          ProxyReverseConnectPolicy RoundRobin
          # The servers advertise HAProxy's address in 227 (the seeds' scheme), which
          # mod_proxy refuses as foreign; EPSV towards them carries no address.
          ProxyDataTransferPolicy EPSV
          # Plain FTP on both sides: no TLS towards the servers either.
          ProxyTLSEngine off
        </IfModule>
        """
    )


def proftpd_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [PROFTPD_BIN, "-v"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        return out.strip() or "?"
    return "not installed"


def start_proftpd_proxy(backends: list[FtpServer]) -> PathUnderTest:
    if not Path(PROFTPD_BIN).exists() or not (PROFTPD_MODULES / "mod_proxy.so").exists():
        raise SetupError(
            "proftpd with mod_proxy is not installed "
            "(scripts/bench.sh installs proftpd-mod-proxy as root)"
        )
    workdir = _workdir("proftpd")
    # mod_proxy keeps its round-robin state in SQLite files (ProxyTables) that every
    # session process updates; on tmpfs, no session waits for a disk sync.
    tables = Path(tempfile.mkdtemp(prefix="ftplb-bench-proxytables-", dir=_tmpfs_or_tmp()))
    tables.chmod(0o755)
    cfg = workdir / "proftpd.conf"
    cfg.write_text(proftpd_proxy_config(workdir, tables, backends))
    cfg.chmod(0o600)
    proc = spawn_foreground("proftpd", [PROFTPD_BIN, "-n", "-c", str(cfg)], workdir)
    wait_for_banner(proc, PROFTPD_HOST, CONTROL_PORT)

    def stop() -> None:
        proc.stop()
        shutil.rmtree(tables, ignore_errors=True)

    return PathUnderTest(
        PROFTPD,
        ((PROFTPD_HOST, CONTROL_PORT),),
        pid=proc.pid,
        stop=stop,
        forks_sessions=True,
    )


# --------------------------------------------------------------------------- FTPS


@dataclass(frozen=True, slots=True)
class BenchPki:
    ca_file: Path
    server_pem: Path
    """Key and certificate chain, for both ftplb and HAProxy."""


@functools.cache
def bench_pki() -> BenchPki:
    """A throwaway CA and a certificate for the TLS paths' addresses (trustme)."""
    try:
        import trustme  # noqa: PLC0415 - a test dependency, only needed here
    except ImportError as error:
        raise SetupError("the TLS paths need trustme (pip install trustme)") from error
    workdir = _workdir("pki")
    atexit.register(shutil.rmtree, workdir, True)
    ca = trustme.CA()
    cert = ca.issue_cert(FTPLB_TLS_HOST, HAPROXY_TLS_HOST)
    pki = BenchPki(workdir / "ca.pem", workdir / "server.pem")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(pki.server_pem))
    return pki


def ftplb_tls_config(backends: list[FtpServer], pki: BenchPki) -> str:
    """The ftplb config, on its own address and ports, terminating explicit FTPS."""
    first, last = FTPLB_TLS_PASSIVE
    text = ftplb_config(backends)
    text = text.replace(f'"{FTPLB_HOST}:{CONTROL_PORT}"', f'"{FTPLB_TLS_HOST}:{CONTROL_PORT}"')
    text = text.replace(
        f'passive_ports = "{FTPLB_PASSIVE[0]}-{FTPLB_PASSIVE[1]}"',
        f'passive_ports = "{first}-{last}"\ntls = "explicit"\ntls_certificate = "{pki.server_pem}"',
    )
    return text


def start_ftplb_tls(backends: list[FtpServer]) -> PathUnderTest:
    pki = bench_pki()
    running = start_balancer(ftplb_tls_config(backends, pki), FTPLB_TLS_HOST, CONTROL_PORT)

    def stop() -> None:
        status = running.stop()
        if status != 0:
            print(f"  ftplb exited with {status}:\n{running.log_text()[-2000:]}", flush=True)
        shutil.rmtree(running.workdir, ignore_errors=True)

    return PathUnderTest(
        FTPLB_TLS,
        ((FTPLB_TLS_HOST, CONTROL_PORT),),
        pid=running.process.pid,
        stop=stop,
        ca_file=pki.ca_file,
    )


def haproxy_tls_config(backends: list[FtpServer], pki: BenchPki) -> str:
    """The seed HAProxy config with ``ssl crt`` on the control bind and every passive range.

    That is implicit FTPS: HAProxy cannot answer AUTH TLS, so TLS has to start
    with the first byte on every connection, control and data alike.
    """
    text = haproxy_config(HAPROXY_TLS_HOST, backends, tuned=False)
    bind = f"    bind {HAPROXY_TLS_HOST}:"
    lines = [
        line + f" ssl crt {pki.server_pem}" if line.startswith(bind) else line
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def start_haproxy_tls(backends: list[FtpServer]) -> PathUnderTest:
    if not Path(HAPROXY_BIN).exists():
        raise SetupError("haproxy is not installed (scripts/bench.sh installs it as root)")
    pki = bench_pki()
    workdir = _workdir(HAPROXY_TLS.key)
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(haproxy_tls_config(backends, pki))
    proc = spawn_foreground(HAPROXY_TLS.key, [HAPROXY_BIN, "-f", str(cfg), "-db"], workdir)
    wait_for_tls_banner(proc, HAPROXY_TLS_HOST, CONTROL_PORT, pki)
    return PathUnderTest(
        HAPROXY_TLS,
        ((HAPROXY_TLS_HOST, CONTROL_PORT),),
        pid=proc.pid,
        stop=proc.stop,
        ca_file=pki.ca_file,
        implicit_tls=True,
    )


def wait_for_tls_banner(proc: ForegroundProcess, host: str, port: int, pki: BenchPki) -> None:
    """:func:`wait_for_banner` over implicit TLS."""
    context = ssl.create_default_context(cafile=str(pki.ca_file))

    def read() -> bytes:
        with (
            socket.create_connection((host, port), timeout=3) as raw,
            context.wrap_socket(raw, server_hostname=host) as sock,
        ):
            return sock.recv(4096)

    wait_for_banner(proc, host, port, read, "over TLS")


STARTERS: dict[str, Callable[[list[FtpServer]], PathUnderTest]] = {
    DIRECT.key: direct_path,
    FTPLB.key: start_ftplb,
    FTPLB_LIMITED.key: start_ftplb_limited,
    HAPROXY.key: lambda b: start_haproxy(b, tuned=False),
    HAPROXY_TUNED.key: lambda b: start_haproxy(b, tuned=True),
    PROFTPD.key: start_proftpd_proxy,
    FTPLB_TLS.key: start_ftplb_tls,
    HAPROXY_TLS.key: start_haproxy_tls,
}


# --------------------------------------------------------------------------- new sections


def start_ftplb_workers(backends: list[FtpServer], workers: int) -> PathUnderTest:
    """ftplb with ``[defaults] workers = N``: ``pid`` is the master, whose process
    tree holds the workers (see docs/workers.md)."""
    text = ftplb_config(
        backends, WORKERS_FTPLB_HOST, WORKERS_FTPLB_PASSIVE, f"workers = {workers}\n"
    )
    spec = PathSpec(f"ftplb_w{workers}", f"ftplb, workers = {workers}")
    return _start_ftplb(spec, text, WORKERS_FTPLB_HOST)


def start_haproxy_threads(backends: list[FtpServer], nbthread: int) -> PathUnderTest:
    """The tuned HAProxy (splice, 1 MiB pipes) with ``nbthread N``."""
    spec = PathSpec(f"haproxy_t{nbthread}", f"HAProxy tuned, nbthread {nbthread}")
    config = haproxy_config(WORKERS_HAPROXY_HOST, backends, tuned=True, nbthread=nbthread)
    return _start_haproxy(spec, WORKERS_HAPROXY_HOST, config)


def small_range_config(backends: list[FtpServer], ports: int = 10) -> str:
    """ftplb with ``ports`` passive ports (10 for the section); ``timeout_data`` covers
    the login ramp, since every session gets its passive reply before any connects."""
    first = SMALL_RANGE_PASSIVE[0]
    passive = (first, first + ports - 1)
    return ftplb_config(backends, SMALL_RANGE_HOST, passive, 'timeout_data = "120s"\n')


def start_ftplb_small_range(backends: list[FtpServer], ports: int = 10) -> PathUnderTest:
    spec = PathSpec("ftplb_small_range", f"ftplb, passive_ports of {ports} ports")
    return _start_ftplb(spec, small_range_config(backends, ports), SMALL_RANGE_HOST)


def start_ftplb_idle(backends: list[FtpServer], workers: int) -> PathUnderTest:
    text = ftplb_config(backends, IDLE_FTPLB_HOST, IDLE_FTPLB_PASSIVE, f"workers = {workers}\n")
    spec = PathSpec("ftplb", f"ftplb, workers = {workers}")
    return _start_ftplb(spec, text, IDLE_FTPLB_HOST)


def start_haproxy_idle(backends: list[FtpServer], maxconn: int) -> PathUnderTest:
    """The seed HAProxy without passive ranges (idle sessions never transfer)."""
    config = haproxy_config(
        IDLE_HAPROXY_HOST, backends, tuned=False, maxconn=maxconn, passive=False
    )
    return _start_haproxy(HAPROXY, IDLE_HAPROXY_HOST, config)


def _start_haproxy(spec: PathSpec, host: str, config: str) -> PathUnderTest:
    if not Path(HAPROXY_BIN).exists():
        raise SetupError("haproxy is not installed (scripts/bench.sh installs it as root)")
    workdir = _workdir(spec.key)
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(config)
    proc = spawn_foreground(spec.key, [HAPROXY_BIN, "-f", str(cfg), "-db"], workdir)
    wait_for_banner(proc, host, CONTROL_PORT)
    return PathUnderTest(spec, ((host, CONTROL_PORT),), pid=proc.pid, stop=proc.stop)


def start_pyftpdlib_async(host: str, root: Path) -> FtpServer:
    """pyftpdlib's single-process FTPServer (epoll), no connection cap, no idle timeout."""
    # One process for every session, unlike vsftpd's two per session: 10,000 idle
    # sessions would take 20,000 vsftpd processes of a pid_max of 32,768 on a shared box.
    user, password = servers.SYSTEM_USER, servers.SYSTEM_PASSWORD
    return servers.start_pyftpdlib(host, CONTROL_PORT, root, user, password, idle_sessions=True)
