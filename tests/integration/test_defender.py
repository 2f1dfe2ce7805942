"""The login defender of a real ``ftplb run``: bans after failed logins, their expiry and
doubling, the allow and deny lists, tcp mode, the admin API, and the record that workers share.

The servers are ProFTPD: it answers a wrong password with 530 at once (vsftpd
through PAM, and pyftpdlib, wait seconds first). Every brute-force loop is
bounded, and each attempt is a new connection from its own loopback address.
"""

from __future__ import annotations

import ftplib
import hashlib
import json
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftplb.runtime.steering import steered_index
from tests.integration import clients
from tests.integration.admin_api import (
    OPS,
    OPS_PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    Api,
    admin_section,
    ftplb,
)
from tests.integration.balancer import RunningBalancer, balancer, server_entries
from tests.integration.conftest import require_ipv6
from tests.integration.farms import Farm, farm, started_servers
from tests.integration.test_admin_live import free_port_for_admin
from tests.integration.workers_farm import records, wait_ready
from tests.support import free_port, passive_range, wait_until

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.150"
"""The brute-forcing address."""
NEIGHBOUR = "127.0.0.151"
"""A real client from another address, which must keep working."""
ALLOWED = "127.0.0.160"
DENIED = "127.0.0.170"

DEFENDER = f"""
[defender]
max_failures = 3
window = "1m"
ban_time = "2s"
ban_time_max = "1m"
allow = ["{ALLOWED}/32"]
deny = ["{DENIED}/31"]
"""

MAX_ATTEMPTS = 8
"""Bound of every brute-force loop: more than max_failures, fewer than a real attacker's."""

PROBE = b"defender probe " * 4096
REFUSED_WITHIN = 1.0
"""Seconds from a ban in one process until another process refuses the address."""


class ProxiedFTP(ftplib.FTP):
    """ftplib whose control connection starts with a PROXY v1 header naming ``client``:
    the test plays the upstream balancer in front of an ``accept_proxy`` frontend."""

    def __init__(self, client: str, source: str) -> None:
        super().__init__(timeout=10)
        self._client, self._source = client, source

    def connect(
        self,
        host: str = "",
        port: int = 0,
        timeout: float = -999,
        source_address: tuple[str, int] | None = None,
    ) -> str:
        self.host, self.port = host, port
        self.sock = socket.create_connection(
            (host, port), self.timeout, source_address=(self._source, 0)
        )
        self.af = self.sock.family
        self.sock.sendall(f"PROXY TCP4 {self._client} {host} 40000 {port}\r\n".encode())
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


def attempt(
    lb: RunningBalancer, source: str, user: str, password: str, client: str | None = None
) -> tuple[str, str]:
    """One login from ``source``: (the code of the greeting or of the login's final reply,
    the code of the reply to a NOOP after it, or "closed", or "-" when refused at connect).
    With ``client``, ``source`` is an upstream balancer that names that client."""
    ftp = (
        ProxiedFTP(client, source) if client else ftplib.FTP(timeout=10, source_address=(source, 0))
    )
    try:
        try:
            ftp.connect(lb.host, lb.port)
        except ftplib.error_temp as refused:
            return str(refused)[:3], "-"
        try:
            reply = ftp.login(user, password)
        except ftplib.error_perm as error:
            reply = str(error)
        try:
            after = ftp.sendcmd("NOOP")
        except ftplib.error_temp as error:
            after = str(error)
        except (EOFError, OSError):
            after = "closed"
        return reply[:3], after[:3] if after != "closed" else after
    finally:
        ftp.close()


def brute_force(group: Farm, source: str = ATTACKER) -> list[tuple[str, str]]:
    """Wrong passwords from ``source`` until it is refused at connect (at most MAX_ATTEMPTS)."""
    outcomes: list[tuple[str, str]] = []
    for number in range(MAX_ATTEMPTS):
        outcomes.append(attempt(group.lb, source, group.user, f"wrong-{number}"))
        if outcomes[-1] == ("421", "-"):
            break
    return outcomes


def banned_lines(lb: RunningBalancer, client: str) -> list[dict[str, str]]:
    return [
        fields
        for fields in records(lb, "warning")
        if fields.get("warning") == "client_banned" and fields.get("client") == client
    ]


def ends(lb: RunningBalancer, source: str) -> list[str]:
    """The ``end`` of every session line of ``source``, in order."""
    return [
        fields["end"]
        for fields in records(lb, "session")
        if fields.get("client", "").rpartition(":")[0] == source
    ]


def neighbour_downloads(group: Farm, tmp_path: Path) -> None:
    """curl from NEIGHBOUR fetches the probe file whole."""
    lb = group.lb
    dest = tmp_path / "probe.bin"
    url = clients.ftp_url(lb.host, lb.port, "probe.bin", group.user, group.password)
    clients.curl_retr(url, dest, "epsv", NEIGHBOUR).check()
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == hashlib.sha256(PROBE).hexdigest()


def metric(api: Api, name: str, **labels: str) -> float:
    status, _, text = api.call("GET", "/metrics")
    assert status == 200 and isinstance(text, str)
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{key}="{wanted}"' in series for key, wanted in labels.items()):
            total += float(value)
    return total


@pytest.fixture(scope="module")
def guarded() -> Iterator[Api]:
    """Two ProFTPD servers behind an ftplb with the defender and an admin listener."""
    port = free_port_for_admin()
    with farm(
        "proftpd", files={"probe.bin": PROBE}, sections=admin_section(port) + DEFENDER
    ) as group:
        yield Api(group, port)


def test_brute_force_is_banned_while_another_client_works_and_the_ban_doubles(
    guarded: Api, tmp_path: Path
) -> None:
    group, lb = guarded.farm, guarded.farm.lb
    # The third failure earns the ban: its 530 comes, then 421 and the close.
    assert brute_force(group) == [("530", "200"), ("530", "200"), ("530", "421"), ("421", "-")]
    expected = ["client_closed", "client_closed", "banned", "banned"]
    wait_until(lambda: ends(lb, ATTACKER) == expected, 5, "the attacker's session lines")
    (first,) = banned_lines(lb, ATTACKER)
    assert (first["failures"], first["offence"], first["ban_time"]) == ("3", "1", "2.0")
    neighbour_downloads(group, tmp_path)
    assert attempt(lb, NEIGHBOUR, group.user, group.password) == ("230", "200")

    # Shown by the API, the stats and the metrics.
    status, _, bans = guarded.call("GET", "/api/bans", user=VIEWER, password=VIEWER_PASSWORD)
    assert status == 200 and isinstance(bans, list)
    assert [(ban["address"], ban["offence"]) for ban in bans] == [(ATTACKER, 1)]
    status, _, stats = guarded.call("GET", "/stats.json")
    assert status == 200 and isinstance(stats, dict)
    assert [ban["address"] for ban in stats["bans"]] == [ATTACKER]
    status, _, page = guarded.call("GET", "/stats")
    assert status == 200 and isinstance(page, str)
    assert "Banned client addresses" in page and ATTACKER in page
    assert metric(guarded, "ftplb_defender_bans") == 1
    wait_until(
        lambda: (
            metric(guarded, "ftplb_refusals_total", reason="banned") >= 2
            and metric(guarded, "ftplb_defender_failures_total") >= 3
            and metric(guarded, "ftplb_defender_bans_made_total") == 1
        ),
        5,
        "the defender's counters",
    )

    # The ban ends by itself: the right password gets in again.
    wait_until(
        lambda: attempt(lb, ATTACKER, group.user, group.password) == ("230", "200"),
        10,
        "the 2 s ban to end",
    )
    assert metric(guarded, "ftplb_defender_bans") == 0
    # The next offence, while the first is remembered, is banned twice as long.
    assert brute_force(group)[-2:] == [("530", "421"), ("421", "-")]
    second = banned_lines(lb, ATTACKER)[-1]
    assert (second["offence"], second["ban_time"]) == ("2", "4.0")
    status, _, bans = guarded.call("GET", "/api/bans")
    assert isinstance(bans, list) and [ban["offence"] for ban in bans] == [2]

    # An operator lifts it: at once, and logged with the user.
    status, _, answer = guarded.call(
        "DELETE", f"/api/bans/{ATTACKER}", user=VIEWER, password=VIEWER_PASSWORD
    )
    assert status == 403, answer
    password = {"FTPLB_ADMIN_PASSWORD": OPS_PASSWORD}
    shown = ftplb("admin", "--url", guarded.url, "--user", OPS, "bans", env=password)
    assert shown.returncode == 0, shown.stderr
    assert [ban["address"] for ban in json.loads(shown.stdout)] == [ATTACKER]
    lifted_now = ftplb(
        "admin", "--url", guarded.url, "--user", OPS, "unban", ATTACKER, env=password
    )
    assert lifted_now.returncode == 0, lifted_now.stderr
    assert json.loads(lifted_now.stdout)["address"] == ATTACKER
    assert attempt(lb, ATTACKER, group.user, group.password) == ("230", "200")
    lifted = [f for f in records(lb, "info") if f.get("message") == "ban lifted"]
    assert [(f["user"], f["client"]) for f in lifted] == [(OPS, ATTACKER)]
    status, _, answer = guarded.call("DELETE", f"/api/bans/{ATTACKER}")
    assert (status, answer) == (404, {"error": f"{ATTACKER} is not banned"})
    again = ftplb("admin", "--url", guarded.url, "--user", OPS, "unban", ATTACKER, env=password)
    assert (again.returncode, again.stderr) == (
        1,
        f"ftplb admin: not found: {ATTACKER} is not banned (HTTP 404)\n",
    )
    status, _, answer = guarded.call("DELETE", "/api/bans/not-an-address")
    assert status == 400, answer


def test_the_allow_list_is_never_banned_and_the_deny_list_always_refused(guarded: Api) -> None:
    group, lb = guarded.farm, guarded.farm.lb
    outcomes = [attempt(lb, ALLOWED, group.user, f"wrong-{n}") for n in range(5)]
    assert outcomes == [("530", "200")] * 5
    assert attempt(lb, ALLOWED, group.user, group.password) == ("230", "200")
    assert banned_lines(lb, ALLOWED) == []
    for source in (DENIED, "127.0.0.171"):
        ftp = ftplib.FTP(timeout=10, source_address=(source, 0))
        with pytest.raises(ftplib.error_temp, match=r"^421 Access denied"):
            ftp.connect(lb.host, lb.port)
        ftp.close()
    wait_until(
        lambda: [ends(lb, source) for source in (DENIED, "127.0.0.171")] == [["denied"]] * 2,
        5,
        "the session lines of the denied addresses",
    )


def test_a_ban_outlives_a_reload(guarded: Api) -> None:
    group, lb = guarded.farm, guarded.farm.lb
    source = "127.0.0.152"
    assert brute_force(group, source)[-1] == ("421", "-")
    before = len([f for f in records(lb, "info") if f.get("message") == "reloaded"])
    lb.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: len([f for f in records(lb, "info") if f.get("message") == "reloaded"]) > before,
        10,
        "the reload",
    )
    assert attempt(lb, source, group.user, group.password) == ("421", "-")
    status, _, answer = guarded.call("DELETE", f"/api/bans/{source}")
    assert status == 200, answer


def test_in_tcp_mode_denied_and_banned_addresses_are_closed_at_connect() -> None:
    """A tcp frontend and an ftp frontend share one defender: a ban earned on the ftp
    one (where logins are read) holds on the tcp one, which closes without a word."""
    with started_servers("proftpd", ["127.0.0.11"]) as (server,):
        ftp_port, tcp_port = free_port(), free_port()
        text = f"""
[[frontends]]
name = "ftp"
bind = ["127.0.0.1:{ftp_port}"]
backend = "pool"
passive_ports = "{passive_range()}"

[[frontends]]
name = "tcp"
mode = "tcp"
bind = ["127.0.0.1:{tcp_port}"]
backend = "relay"

[[backends]]
name = "pool"
health = {{ type = "none" }}
{server_entries([(server.host, server.port)])}

[[backends]]
name = "relay"
health = {{ type = "none" }}
{server_entries([(server.host, server.port)], passive_ports=passive_range(20, bindable=True))}
{DEFENDER}
"""
        with balancer(text, "127.0.0.1", ftp_port) as lb:

            def greeting(source: str) -> bytes:
                with socket.create_connection(
                    ("127.0.0.1", tcp_port), timeout=10, source_address=(source, 0)
                ) as sock:
                    return sock.recv(1024)

            assert greeting(NEIGHBOUR).startswith(b"220")
            assert greeting(DENIED) == b""
            group = Farm([server], lb)
            assert brute_force(group)[-1] == ("421", "-")
            assert greeting(ATTACKER) == b""
            wait_until(
                lambda: len([f for f in records(lb, "session") if f.get("frontend") == "tcp"]) == 3,
                5,
                "three tcp session lines",
            )
            tcp_ends = [
                (f["client"].rpartition(":")[0], f["end"])
                for f in records(lb, "session")
                if f.get("frontend") == "tcp"
            ]
            assert sorted(tcp_ends) == sorted(
                [(NEIGHBOUR, "closed"), (DENIED, "denied"), (ATTACKER, "banned")]
            )


def test_an_ipv6_client_is_refused_by_an_ipv6_deny_network() -> None:
    """No server is ever reached: the refusal comes before one is chosen."""
    require_ipv6()
    port = free_port("::1")
    text = f"""
[[frontends]]
name = "ftp"
bind = ["[::1]:{port}"]
backend = "pool"

[[backends]]
name = "pool"
health = {{ type = "none" }}
[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"

[defender]
deny = ["2001:db8::/32", "::1/128"]
"""
    with balancer(text, "::1", port) as lb:
        ftp = ftplib.FTP(timeout=10)
        with pytest.raises(ftplib.error_temp, match=r"^421 Access denied"):
            ftp.connect("::1", port)
        ftp.close()
        # The harness's own probe of the listener was denied too.
        wait_until(lambda: ends(lb, "::1") == ["denied"] * 2, 5, "the denied sessions' lines")


# ------------------------------------------------------------ shared by workers

_STORE_USER = """
import sys
from ftplb.config.defender import Defender as Section
from ftplb.runtime.defender import Defender, FileStore, lift_ban
from ftplb.runtime.logs import EventLog

section = Section(max_failures=3, window=60.0, ban_time=60.0, ban_time_max=600.0)
store = FileStore(sys.argv[1])
defender = Defender(section.policy(), store, EventLog(stream=sys.stderr))
print("ready", flush=True)
for line in sys.stdin:
    command, address = line.split()
    if command == "fail":
        banned = defender.failed_login(address, frontend="ftp", session="-")
        print("banned" if banned else "counted", flush=True)
    elif command == "check":
        print(defender.refusal(address) or "admit", flush=True)
    elif command == "lift":
        print("lifted" if lift_ban(store, address) else "none", flush=True)
"""


class StoreUser:
    """A separate Python process that uses the defender's shared file, one command a line."""

    def __init__(self, directory: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _STORE_USER, str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.ask_nothing() == "ready"

    def ask_nothing(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def ask(self, command: str, address: str = ATTACKER) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command} {address}\n")
        self.process.stdin.flush()
        return self.ask_nothing()

    def stop(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            assert self.process.wait(10) == 0
        finally:
            self.process.stdout.close()


def test_two_processes_add_up_failures_and_share_bans(tmp_path: Path) -> None:
    first, second = StoreUser(tmp_path), StoreUser(tmp_path)
    try:
        assert first.ask("check") == "admit"
        assert [first.ask("fail"), first.ask("fail")] == ["counted", "counted"]
        # The third failure, in the other process, completes the count.
        assert second.ask("fail") == "banned"
        wait_until(lambda: first.ask("check") == "banned", REFUSED_WITHIN, "the ban in process 1")
        assert first.ask("check", NEIGHBOUR) == "admit"
        assert first.ask("lift") == "lifted"
        wait_until(lambda: second.ask("check") == "admit", REFUSED_WITHIN, "the lift in process 2")
        record = json.loads((tmp_path / "defender.json").read_text())
        assert record["bans"] == {} and record["failures"] == {}
    finally:
        first.stop()
        second.stop()


def test_with_two_workers_a_ban_shows_in_the_masters_api(tmp_path: Path) -> None:
    port = free_port_for_admin()
    with farm(
        "proftpd",
        files={"probe.bin": PROBE},
        defaults="workers = 2",
        sections=admin_section(port) + DEFENDER,
    ) as group:
        api = Api(group, port)
        wait_ready(group.lb)
        # The neighbour is steered to the worker the attacker does not reach.
        attacker_worker = steered_index(ATTACKER, 2)
        neighbour = next(
            f"127.0.0.{n}"
            for n in range(151, 200)
            if steered_index(f"127.0.0.{n}", 2) != attacker_worker
        )
        assert brute_force(group)[-1] == ("421", "-")
        (ban,) = banned_lines(group.lb, ATTACKER)
        assert ban["worker"] == str(attacker_worker)
        status, _, bans = api.call("GET", "/api/bans")
        assert status == 200 and isinstance(bans, list)
        assert [(b["address"], b["offence"]) for b in bans] == [(ATTACKER, 1)]
        assert attempt(group.lb, neighbour, group.user, group.password) == ("230", "200")

        def workers_of_neighbour() -> list[str]:
            lines = records(group.lb, "session")
            return [f["worker"] for f in lines if f["client"].startswith(neighbour + ":")]

        wait_until(
            lambda: workers_of_neighbour() == [str(1 - attacker_worker)],
            5,
            "the neighbour's session line, from the other worker",
        )
        status, _, answer = api.call("DELETE", f"/api/bans/{ATTACKER}")
        assert status == 200, answer
        assert attempt(group.lb, ATTACKER, group.user, group.password) == ("230", "200")


def test_behind_an_upstream_a_ban_made_in_one_worker_holds_in_the_other() -> None:
    """Behind an upstream every connection comes from its address, so the kernel spreads
    one client's sessions over both workers: failures counted by either add up, and
    once banned the client is refused by both, while another client logs in."""
    upstream = "127.0.0.180"
    attacker, neighbour = "203.0.113.7", "203.0.113.8"
    defender = DEFENDER.replace('ban_time = "2s"', 'ban_time = "1m"')
    with farm(
        "proftpd",
        defaults="workers = 2",
        frontend='accept_proxy = true\nproxy_trusted = ["127.0.0.0/8"]',
        sections=defender,
    ) as group:
        lb = group.lb
        wait_ready(lb)
        outcomes = []
        for number in range(MAX_ATTEMPTS):
            outcomes.append(attempt(lb, upstream, group.user, f"wrong-{number}", attacker))
            if outcomes[-1][1] != "200":
                break
        assert outcomes == [("530", "200"), ("530", "200"), ("530", "421")]
        (ban,) = banned_lines(lb, attacker)
        # 20 connections by the kernel's 4-tuple hash: all on one worker would
        # happen about twice in a million runs.
        refusals = 20
        for _ in range(refusals):
            assert attempt(lb, upstream, group.user, group.password, attacker) == ("421", "-")
        assert attempt(lb, upstream, group.user, group.password, neighbour) == ("230", "200")

        def sessions_of(client: str) -> list[tuple[str, str]]:
            lines = records(lb, "session")
            return [(f["worker"], f["end"]) for f in lines if f["client"].startswith(client + ":")]

        def banned_by() -> list[str]:
            return [worker for worker, end in sessions_of(attacker) if end == "banned"]

        # The attempt that earned the ban ended "banned" too, in the worker that banned.
        wait_until(
            lambda: len(banned_by()) == 1 + refusals and len(sessions_of(neighbour)) == 1,
            5,
            "the session lines of the refused client and of its neighbour",
        )
        banning = ban["worker"]
        other = "1" if banning == "0" else "0"
        by_worker = Counter(banned_by())
        assert by_worker[banning] >= 2 and by_worker[other] >= 1, (banning, banned_by())
        assert sessions_of(neighbour)[0][1] == "client_closed"
