"""Every client x every server x every data mode, directly, without a balancer.

These are the baseline for the balancer's integration tests: if a combination
fails here, the fixture or the environment is at fault, not the balancer. Each
case lists the server's root, downloads a 10 MB file and uploads another, compares
sha256 on both sides, and checks from the client's own trace that it really used
the data mode under test (clients fall back silently otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.clients import (
    ACTIVE_MODES,
    CLIENT_SOURCE_IPV4,
    DATA_MODES,
    LFTP_MODES,
    MODE_VERB,
    ClientResult,
    DataMode,
    LftpMode,
    curl_list,
    curl_retr,
    curl_stor,
    ftp_url,
    ftplib_session,
    lftp_run,
    make_random_file,
    sha256_file,
)
from tests.integration.conftest import require_ipv6
from tests.integration.servers import SERVER_KINDS, FtpServer, StartFtpServer

pytestmark = pytest.mark.integration

FILE_SIZE = 10 * 1024 * 1024
DOWNLOAD_NAME = "download.bin"

# Active-mode clients get an address of their own: if they shared the balancer's
# address, a server could connect straight to them and hide a broken balancer.
CLIENT_SOURCE = {"ipv4": CLIENT_SOURCE_IPV4, "ipv6": "::1"}
SERVER_HOST_IPV6 = "::1"

# PASV and PORT cannot carry IPv6 addresses. lftp 4.9.2 sends "EPRT |2|::|port|"
# (the unspecified address) on IPv6, which most servers rightly refuse, so lftp
# is tested with EPSV only there; curl and ftplib cover EPRT.
IPV6_MODES: tuple[DataMode, ...] = ("epsv", "eprt")
LFTP_IPV6_MODES: tuple[LftpMode, ...] = ("epsv",)


@dataclass(frozen=True, slots=True)
class Payload:
    path: Path
    sha256: str


@dataclass(frozen=True, slots=True)
class Target:
    """A running server, its address family and the file it serves for RETR."""

    server: FtpServer
    family: str
    download_sha256: str


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> tuple[Payload, Payload]:
    """(download, upload): two different 10 MB random files, made once."""
    folder = tmp_path_factory.mktemp("payloads")
    made = []
    for name in ("download.src", "upload.src"):
        path = folder / name
        made.append(Payload(path, make_random_file(path, FILE_SIZE)))
    return made[0], made[1]


def _serve(start: StartFtpServer, kind: str, host: str | None, download: Payload) -> FtpServer:
    server = start(kind, host=host)
    target = server.root / DOWNLOAD_NAME
    target.write_bytes(download.path.read_bytes())
    target.chmod(0o644)
    return server


@pytest.fixture(scope="module", params=SERVER_KINDS)
def ipv4_target(
    request: pytest.FixtureRequest,
    ftp_server_factory: StartFtpServer,
    payloads: tuple[Payload, Payload],
) -> Iterator[Target]:
    server = _serve(ftp_server_factory, request.param, None, payloads[0])
    yield Target(server, "ipv4", payloads[0].sha256)
    server.stop()


@pytest.fixture(scope="module", params=SERVER_KINDS)
def ipv6_target(
    request: pytest.FixtureRequest,
    ftp_server_factory: StartFtpServer,
    payloads: tuple[Payload, Payload],
) -> Iterator[Target]:
    require_ipv6()
    server = _serve(ftp_server_factory, request.param, SERVER_HOST_IPV6, payloads[0])
    yield Target(server, "ipv6", payloads[0].sha256)
    server.stop()


# ---------------------------------------------------------------------------
# checks shared by all clients


def _source_for(target: Target, mode: str) -> str | None:
    return CLIENT_SOURCE[target.family] if mode in ACTIVE_MODES else None


def _assert_mode_used(data_setup_verbs: tuple[str, ...], mode: str, trace: object) -> None:
    expected = MODE_VERB[mode]
    assert data_setup_verbs, f"no data connection was set up; trace: {trace}"
    assert set(data_setup_verbs) == {expected}, (
        f"expected only {expected}, client sent {data_setup_verbs}; trace: {trace}"
    )


def _assert_active_address(commands: tuple[str, ...], source: str | None) -> None:
    """PORT/EPRT must name the client's own source address."""
    if source is None:
        return
    for command in commands:
        verb, _, argument = command.partition(" ")
        if verb.upper() == "PORT":
            assert argument.startswith(source.replace(".", ",") + ","), command
        elif verb.upper() == "EPRT":
            assert f"|{source}|" in argument, command


def _assert_files(target: Target, downloaded: Path, upload_name: str, upload: Payload) -> None:
    assert sha256_file(downloaded) == target.download_sha256, "RETR content differs"
    stored = target.server.root / upload_name
    assert stored.exists(), f"STOR left no {upload_name} in {target.server.root}"
    assert sha256_file(stored) == upload.sha256, "STOR content differs on the server's disk"


def _upload_name(client: str, target: Target, mode: str) -> str:
    return f"up-{client}-{target.family}-{mode}.bin"


# ---------------------------------------------------------------------------
# curl


def _check_curl(
    target: Target, mode: DataMode, payloads: tuple[Payload, Payload], tmp: Path
) -> None:
    server = target.server
    source = _source_for(target, mode)
    upload_name = _upload_name("curl", target, mode)
    downloaded = tmp / "downloaded.bin"

    def url(path: str) -> str:
        return ftp_url(server.host, server.port, path, server.user, server.password)

    results: list[ClientResult] = [
        curl_list(url(""), mode, source).check(),
        curl_retr(url(DOWNLOAD_NAME), downloaded, mode, source).check(),
        curl_stor(url(upload_name), payloads[1].path, mode, source).check(),
    ]
    assert DOWNLOAD_NAME.encode() in results[0].stdout, results[0].stdout
    for result in results:
        _assert_mode_used(result.data_setup_verbs, mode, result.stderr)
        _assert_active_address(result.commands, source)
    _assert_files(target, downloaded, upload_name, payloads[1])


@pytest.mark.parametrize("mode", DATA_MODES)
def test_curl_ipv4(
    ipv4_target: Target, mode: DataMode, payloads: tuple[Payload, Payload], tmp_path: Path
) -> None:
    _check_curl(ipv4_target, mode, payloads, tmp_path)


@pytest.mark.parametrize("mode", IPV6_MODES)
def test_curl_ipv6(
    ipv6_target: Target, mode: DataMode, payloads: tuple[Payload, Payload], tmp_path: Path
) -> None:
    _check_curl(ipv6_target, mode, payloads, tmp_path)


# ---------------------------------------------------------------------------
# lftp


def _check_lftp(
    target: Target, mode: LftpMode, payloads: tuple[Payload, Payload], tmp: Path
) -> None:
    server = target.server
    source = _source_for(target, mode)
    upload_name = _upload_name("lftp", target, mode)
    downloaded = tmp / "downloaded.bin"
    script = "\n".join(
        [
            "ls",
            f'get {DOWNLOAD_NAME} -o "{downloaded}"',
            f'put "{payloads[1].path}" -o {upload_name}',
        ]
    )
    result = lftp_run(
        server.host, server.port, server.user, server.password, script, mode, source
    ).check()
    assert DOWNLOAD_NAME.encode() in result.stdout, result.stdout
    # ls, get and put each open one data connection.
    assert len(result.data_setup_verbs) >= 3, result.stderr
    _assert_mode_used(
        result.data_setup_verbs, mode if target.family == "ipv4" else "epsv", result.stderr
    )
    _assert_active_address(result.commands, source)
    _assert_files(target, downloaded, upload_name, payloads[1])


@pytest.mark.parametrize("mode", LFTP_MODES)
def test_lftp_ipv4(
    ipv4_target: Target, mode: LftpMode, payloads: tuple[Payload, Payload], tmp_path: Path
) -> None:
    _check_lftp(ipv4_target, mode, payloads, tmp_path)


@pytest.mark.parametrize("mode", LFTP_IPV6_MODES)
def test_lftp_ipv6(
    ipv6_target: Target, mode: LftpMode, payloads: tuple[Payload, Payload], tmp_path: Path
) -> None:
    _check_lftp(ipv6_target, mode, payloads, tmp_path)


# ---------------------------------------------------------------------------
# Python ftplib


def _check_ftplib(
    target: Target, mode: DataMode, payloads: tuple[Payload, Payload], tmp: Path
) -> None:
    server = target.server
    source = _source_for(target, mode)
    upload_name = _upload_name("ftplib", target, mode)
    downloaded = tmp / "downloaded.bin"
    with ftplib_session(
        server.host, server.port, server.user, server.password, mode, source
    ) as client:
        listing = client.list()
        retr_reply = client.retr_to(DOWNLOAD_NAME, downloaded)
        stor_reply = client.stor(upload_name, payloads[1].path)
        commands = client.commands
        setup_verbs = client.data_setup_verbs
    assert DOWNLOAD_NAME.encode() in listing, listing
    assert retr_reply.startswith("226") or retr_reply.startswith("250"), retr_reply
    assert stor_reply.startswith("226") or stor_reply.startswith("250"), stor_reply
    assert len(setup_verbs) == 3, commands
    _assert_mode_used(setup_verbs, mode, commands)
    _assert_active_address(commands, source)
    _assert_files(target, downloaded, upload_name, payloads[1])


@pytest.mark.parametrize("mode", DATA_MODES)
def test_ftplib_ipv4(
    ipv4_target: Target, mode: DataMode, payloads: tuple[Payload, Payload], tmp_path: Path
) -> None:
    _check_ftplib(ipv4_target, mode, payloads, tmp_path)


@pytest.mark.parametrize("mode", IPV6_MODES)
def test_ftplib_ipv6(
    ipv6_target: Target, mode: DataMode, payloads: tuple[Payload, Payload], tmp_path: Path
) -> None:
    _check_ftplib(ipv6_target, mode, payloads, tmp_path)
