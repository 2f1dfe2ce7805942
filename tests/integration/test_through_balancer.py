"""Every real client, in every data mode, through ftplb, against two of every real server.

The servers keep their default passive settings: they advertise their own
addresses and ports, and ftplb must rewrite all of it.  Clients check the
address in 227 replies, and active-mode clients use their own source address
(127.0.0.100), so a balancer that let the server reach the client directly, or
that advertised a wrong address, would fail here.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import clients, servers
from tests.integration.balancer import RunningBalancer, balancer, free_port, simple_config

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


def require(kind: str) -> None:
    problem = servers.available(kind)
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{kind} cannot run here: {problem}")
    pytest.skip(f"{kind} cannot run here: {problem}")


@pytest.fixture(scope="module", params=list(SERVER_HOSTS))
def farm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Farm]:
    kind: str = request.param
    require(kind)
    seed = tmp_path_factory.mktemp(f"{kind}-seed") / "big.bin"
    big_sha = clients.make_random_file(seed, SIZE)
    started: list[servers.FtpServer] = []
    try:
        for host in SERVER_HOSTS[kind]:
            root = servers.make_server_root(f"ftplb-{kind}-")
            shutil.copyfile(seed, root / "big.bin")
            (root / "big.bin").chmod(0o644)
            started.append(servers.START[kind](host, servers.free_port(host), root))
        port = free_port()
        config = simple_config([(s.host, s.port) for s in started], port=port)
        with balancer(config, "127.0.0.1", port) as lb:
            yield Farm(kind, started, lb, big_sha, started[0].user, started[0].password)
    finally:
        for server in started:
            server.stop()


def run_case(
    farm: Farm, tool: str, mode: str, work: Path, source: str | None = CLIENT_SOURCE
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
        listing = clients.curl_list(base, mode, source).check()  # type: ignore[arg-type]
        assert b"big.bin" in listing.stdout
        got = clients.curl_retr(base + "big.bin", download, mode, source).check()  # type: ignore[arg-type]
        put = clients.curl_stor(base + upload_name, upload, mode, source).check()  # type: ignore[arg-type]
        verbs = [*listing.data_setup_verbs, *got.data_setup_verbs, *put.data_setup_verbs]
    elif tool == "lftp":
        script = f"cls -1\nget big.bin -o {download}\nput {upload} -o {upload_name}\n"
        result = clients.lftp_run(
            lb.host,
            lb.port,
            farm.user,
            farm.password,
            script,
            mode,
            source,  # type: ignore[arg-type]
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
            source,  # type: ignore[arg-type]
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
def test_list_retr_stor(farm: Farm, tool: str, mode: str, tmp_path: Path) -> None:
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
def mode_farm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Farm]:
    kind, data_mode = request.param
    require(kind)
    seed = tmp_path_factory.mktemp(f"{kind}-{data_mode}-seed") / "big.bin"
    big_sha = clients.make_random_file(seed, SIZE)
    hosts = [h.replace("127.0.0.", "127.0.1.") for h in SERVER_HOSTS[kind]]
    started: list[servers.FtpServer] = []
    try:
        for host in hosts:
            root = servers.make_server_root(f"ftplb-{kind}-")
            shutil.copyfile(seed, root / "big.bin")
            (root / "big.bin").chmod(0o644)
            started.append(servers.START[kind](host, servers.free_port(host), root))
        port = free_port()
        config = simple_config(
            [(s.host, s.port) for s in started], port=port, backend=f'data_mode = "{data_mode}"'
        )
        with balancer(config, "127.0.0.1", port) as lb:
            user, password = started[0].user, started[0].password
            yield Farm(kind, started, lb, big_sha, user, password, data_mode)
    finally:
        for server in started:
            server.stop()


@pytest.mark.parametrize(("tool", "mode"), MODE_CASES, ids=[f"{t}-{m}" for t, m in MODE_CASES])
def test_server_data_modes(mode_farm: Farm, tool: str, mode: str, tmp_path: Path) -> None:
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
