"""IPv6 on ::1: IPv6 clients in front of IPv4 servers, and IPv6 servers behind IPv4 clients."""

from __future__ import annotations

import ftplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import clients
from tests.integration.balancer import balancer, simple_config
from tests.integration.farms import started_servers
from tests.integration.test_through_balancer import EXPECTED_VERB, Farm, run_case, seeded_farm
from tests.support import free_port

pytestmark = pytest.mark.integration

IPV6_CLIENT_MODES = [
    ("curl", "epsv"),
    ("curl", "eprt"),
    ("lftp", "epsv"),
    ("lftp", "port"),  # lftp sends EPRT for IPv6 data addresses
    ("ftplib", "epsv"),
    ("ftplib", "eprt"),
]
IPV6_VERB = {"epsv": "EPSV", "eprt": "EPRT", "port": "EPRT"}


@pytest.fixture(scope="module", params=["pyftpdlib", "vsftpd"])
def v6_front(request: pytest.FixtureRequest) -> Iterator[Farm]:
    """An IPv6 frontend on ::1 before two IPv4 servers."""
    hosts = {"pyftpdlib": ["127.0.0.51", "127.0.0.52"], "vsftpd": ["127.0.0.53", "127.0.0.54"]}
    yield from seeded_farm(request.param, hosts[request.param], "::1")


@pytest.fixture(scope="module")
def v6_back() -> Iterator[Farm]:
    """An IPv4 frontend before two IPv6 servers on ::1."""
    yield from seeded_farm("pyftpdlib", ["::1", "::1"])


@pytest.mark.parametrize(
    ("tool", "mode"), IPV6_CLIENT_MODES, ids=[f"{t}-{m}" for t, m in IPV6_CLIENT_MODES]
)
def test_ipv6_client_ipv4_servers(
    v6_front: Farm, tool: str, mode: clients.DataMode, tmp_path: Path
) -> None:
    verbs = run_case(v6_front, tool, mode, tmp_path, source="::1")
    assert set(verbs) == {IPV6_VERB[mode]}, verbs
    lines = v6_front.lb.log_lines("transfer")
    # The server side stays IPv4: PASV towards it, whatever the client used.
    assert any(f"client_mode={IPV6_VERB[mode]} server_mode=PASV" in line for line in lines)


@pytest.mark.parametrize("mode", ["pasv", "epsv", "port", "eprt"])
def test_ipv4_client_ipv6_servers(v6_back: Farm, mode: clients.DataMode, tmp_path: Path) -> None:
    verbs = run_case(v6_back, "ftplib", mode, tmp_path)
    assert set(verbs) == {EXPECTED_VERB[mode]}
    lines = v6_back.lb.log_lines("transfer")
    assert any(f"client_mode={EXPECTED_VERB[mode]} server_mode=EPSV" in line for line in lines)


def test_pasv_on_an_ipv6_connection_is_refused(v6_front: Farm) -> None:
    lb = v6_front.lb
    with clients.ftplib_session(lb.host, lb.port, v6_front.user, v6_front.password, "epsv") as ftp:
        with pytest.raises(ftplib.error_temp, match=r"^425"):
            ftp.ftp.sendcmd("PASV")
        assert ftp.ftp.sendcmd("NOOP").startswith("200")


def test_dual_stack_frontend() -> None:
    hosts = ["127.0.0.55", "127.0.0.56"]
    with started_servers("pyftpdlib", hosts, {"hello.txt": b"hi"}) as group:
        port = free_port("127.0.0.1")
        config = simple_config(
            [(s.host, s.port) for s in group], port=port, extra_binds=[f"[::1]:{port}"]
        )
        with balancer(config, "127.0.0.1", port) as lb:
            cases: list[tuple[str, clients.DataMode]] = [("127.0.0.1", "pasv"), ("::1", "epsv")]
            for host, mode in cases:
                user, password = group[0].user, group[0].password
                with clients.ftplib_session(host, lb.port, user, password, mode) as ftp:
                    assert b"hello.txt" in ftp.list()
