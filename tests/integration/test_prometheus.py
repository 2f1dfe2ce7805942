"""A real Prometheus scrapes ftplb's /metrics and sees a running download's bytes.

Debian's ``prometheus`` runs in the foreground, on loopback, with a generated
configuration that scrapes the admin listener every second and keeps its
database in a temporary directory. While a client reads a large download
slowly (the transfer cannot end before it has read everything), Prometheus's
HTTP API must already report the byte counter rising.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import clients
from tests.integration.farms import farm
from tests.integration.test_admin_live import admin_section, free_port_for_admin
from tests.integration.test_live_stats import BIG, SIZE, read_exactly
from tests.integration.workers_farm import records
from tests.support import free_port, skip_or_fail, wait_until

pytestmark = pytest.mark.integration

QUERY = 'sum(ftplb_transfer_bytes_total{direction="out"})'


@contextlib.contextmanager
def prometheus(tmp_path: Path, admin_port: int) -> Iterator[int]:
    """A Prometheus scraping ``127.0.0.1:admin_port`` every second; yields its port."""
    binary = shutil.which("prometheus")
    if binary is None:
        skip_or_fail("prometheus is not installed: run scripts/install-test-deps.sh")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: ftplb\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{admin_port}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: ready(port), 30, "prometheus ready")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def query(port: int, expression: str) -> float | None:
    """The value of an instant query, None while it has no result."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as answer:
        document = json.load(answer)
    assert document["status"] == "success", document
    result = document["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def scraped_at_least(port: int, amount: int) -> bool:
    value = query(port, QUERY)
    return value is not None and value >= amount


def test_prometheus_sees_the_bytes_of_a_download_that_still_runs(tmp_path: Path) -> None:
    admin_port = free_port_for_admin()
    with (
        farm(files={"big.bin": BIG}, sections=admin_section(admin_port)) as group,
        prometheus(tmp_path, admin_port) as port,
    ):
        wait_until(lambda: query(port, "up") == 1.0, 30, "prometheus scraped ftplb")
        lb = group.lb
        digest = hashlib.sha256()
        with clients.ftplib_session(lb.host, lb.port, group.user, group.password, "epsv") as client:
            client.ftp.voidcmd("TYPE I")
            with client.ftp.transfercmd("RETR big.bin") as conn:
                read_exactly(conn, 2 * 1024 * 1024, digest)
                wait_until(lambda: scraped_at_least(port, 2 * 1024 * 1024), 30, "bytes scraped")
                first = query(port, QUERY)
                assert first is not None
                read_exactly(conn, 10 * 1024 * 1024, digest)
                wait_until(
                    lambda: scraped_at_least(port, int(first) + 1), 30, "bytes rising in prometheus"
                )
                later = query(port, QUERY)
                assert later is not None and first < later < SIZE
                assert not records(lb, "transfer"), "the transfer should still be running"
                read_exactly(conn, SIZE - 12 * 1024 * 1024, digest)
            client.ftp.voidresp()
        assert digest.hexdigest() == hashlib.sha256(BIG).hexdigest()
        wait_until(lambda: query(port, QUERY) == float(SIZE), 30, "the whole file scraped")
        # The series Prometheus keeps from ftplb's own families.
        assert query(port, "ftplb_build_info") == 1.0
        assert query(port, 'sum(process_open_fds{worker="main"})') is not None
