"""Every real client, in every data mode, through ftplb, against two of every real server.

The servers keep their default passive settings: they advertise their own
addresses and ports, and ftplb must rewrite all of it.  Clients check the
address in 227 replies, and active-mode clients use their own source address
(127.0.0.100), so a balancer that let the server reach the client directly, or
that advertised a wrong address, would fail here.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import clients, servers
from tests.integration.balancer import RunningBalancer, balancer, simple_config
from tests.integration.farms import started_servers
from tests.support import free_port

pytestmark = pytest.mark.integration

SIZE = 10 * 1024 * 1024
CLIENT_SOURCE = "127.0.0.100"

# Each server kind gets its own pair of loopback addresses.
SERVER_HOSTS = {
    "pyftpdlib": ("127.0.0.11", "127.0.0.12"),
    "vsftpd": ("127.0.0.21", "127.0.0.22"),
    "proftpd": ("127.0.0.31", "127.0.0.32"),
    "pureftpd": ("127.0.0.41", "127.0.0.42"),
}
CLIENT_MODES = [
    ("curl", "pasv"),
    ("curl", "epsv"),
    ("curl", "port"),
    ("curl", "eprt"),
    ("lftp", "pasv"),
    ("lftp", "epsv"),
    ("lftp", "port"),
    ("ftplib", "pasv"),
    ("ftplib", "epsv"),
    ("ftplib", "port"),
    ("ftplib", "eprt"),
]
EXPECTED_VERB = {"pasv": "PASV", "epsv": "EPSV", "port": "PORT", "eprt": "EPRT"}


@dataclass
class Farm:
    kind: str
    servers: list[servers.FtpServer]
    lb: RunningBalancer
    big_sha: str
    user: str
    password: str
    data_mode: str = "passive"

    def find_upload(self, name: str) -> Path:
        found = [s.root / name for s in self.servers if (s.root / name).exists()]
        assert len(found) == 1, f"{name} found on {len(found)} servers"
        return found[0]


def seeded_farm(
    kind: str, hosts: list[str], lb_host: str = "127.0.0.1", data_mode: str = "passive"
) -> Iterator[Farm]:
    """Two ``kind`` servers on ``hosts``, each holding the same random ``big.bin``."""
    big = os.urandom(SIZE)
    backend = "" if data_mode == "passive" else f'data_mode = "{data_mode}"'
    with started_servers(kind, hosts, {"big.bin": big}) as started:
        port = free_port(lb_host)
        config = simple_config(
            [(s.host, s.port) for s in started], port=port, host=lb_host, backend=backend
        )
        with balancer(config, lb_host, port) as lb:
            user, password = started[0].user, started[0].password
            sha = hashlib.sha256(big).hexdigest()
            yield Farm(kind, started, lb, sha, user, password, data_mode)


@pytest.fixture(scope="module", params=list(SERVER_HOSTS))
def farm(request: pytest.FixtureRequest) -> Iterator[Farm]:
    kind: str = request.param
    yield from seeded_farm(kind, list(SERVER_HOSTS[kind]))


def run_case(
    farm: Farm,
    tool: str,
    mode: clients.DataMode,
    work: Path,
    source: str | None = CLIENT_SOURCE,
) -> tuple[str, ...]:
    """LIST, RETR big.bin and STOR a fresh 10 MB file; returns the data-setup verbs sent.

    Active modes bind the client to ``source``, so that the data connection
    can only succeed if the balancer itself connects to that address.
    """
    lb = farm.lb
    if mode in ("pasv", "epsv"):
        source = None
    upload = work / "upload.bin"
    upload_sha = clients.make_random_file(upload, SIZE)
    upload_name = f"up-{uuid.uuid4().hex}.bin"
    download = work / "download.bin"
    verbs: list[str] = []
    if tool == "curl":
        base = clients.ftp_url(lb.host, lb.port, "", farm.user, farm.password)
        listing = clients.curl_list(base, mode, source).check()
        assert b"big.bin" in listing.stdout
        got = clients.curl_retr(base + "big.bin", download, mode, source).check()
        put = clients.curl_stor(base + upload_name, upload, mode, source).check()
        verbs = [*listing.data_setup_verbs, *got.data_setup_verbs, *put.data_setup_verbs]
    elif tool == "lftp":
        assert mode != "eprt", "lftp has no EPRT mode of its own"
        script = f"cls -1\nget big.bin -o {download}\nput {upload} -o {upload_name}\n"
        result = clients.lftp_run(
            lb.host,
            lb.port,
            farm.user,
            farm.password,
            script,
            mode,
            source,
        ).check()
        assert b"big.bin" in result.stdout
        verbs = list(result.data_setup_verbs)
    else:
        with clients.ftplib_session(
            lb.host,
            lb.port,
            farm.user,
            farm.password,
            mode,
            source,
        ) as ftp:
            assert b"big.bin" in ftp.list()
            assert ftp.retr_to("big.bin", download).startswith("226")
            assert ftp.stor(upload_name, upload).startswith("226")
            verbs = list(ftp.data_setup_verbs)
    assert clients.sha256_file(download) == farm.big_sha
    # The STOR went to whichever server this session landed on.
    assert clients.sha256_file(farm.find_upload(upload_name)) == upload_sha
    return tuple(verbs)


@pytest.mark.parametrize(("tool", "mode"), CLIENT_MODES, ids=[f"{t}-{m}" for t, m in CLIENT_MODES])
def test_list_retr_stor(farm: Farm, tool: str, mode: clients.DataMode, tmp_path: Path) -> None:
    verbs = run_case(farm, tool, mode, tmp_path)
    assert verbs, "the client sent no data-setup command"
    assert set(verbs) == {EXPECTED_VERB[mode]}, verbs
    transfers = farm.lb.log_lines("transfer")
    assert any(f"client_mode={EXPECTED_VERB[mode]}" in line for line in transfers)


SERVER_DATA_MODES = [
    (kind, data_mode) for kind in SERVER_HOSTS for data_mode in ("active", "client")
]
# With data_mode "active" the server always connects to ftplb; with "client" it
# does so exactly when the client uses PORT/EPRT.
MODE_CASES = [("curl", "epsv"), ("ftplib", "port"), ("curl", "eprt"), ("ftplib", "pasv")]


@pytest.fixture(
    scope="module", params=SERVER_DATA_MODES, ids=[f"{k}-{m}" for k, m in SERVER_DATA_MODES]
)
def mode_farm(request: pytest.FixtureRequest) -> Iterator[Farm]:
    kind, data_mode = request.param
    hosts = [h.replace("127.0.0.", "127.0.1.") for h in SERVER_HOSTS[kind]]
    yield from seeded_farm(kind, hosts, data_mode=data_mode)


@pytest.mark.parametrize(("tool", "mode"), MODE_CASES, ids=[f"{t}-{m}" for t, m in MODE_CASES])
def test_server_data_modes(
    mode_farm: Farm, tool: str, mode: clients.DataMode, tmp_path: Path
) -> None:
    run_case(mode_farm, tool, mode, tmp_path)
    data_mode = mode_farm.data_mode
    client_active = mode in ("port", "eprt")
    server_active = data_mode == "active" or client_active
    expected = "server_mode=PORT" if server_active else "server_mode=PASV"
    lines = [
        line
        for line in mode_farm.lb.log_lines("transfer")
        if f"client_mode={EXPECTED_VERB[mode]}" in line
    ]
    assert lines and all(expected in line for line in lines), lines
