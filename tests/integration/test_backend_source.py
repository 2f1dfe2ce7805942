"""``source`` on a backend: every connection to the servers, control and data, leaves from it.

vsftpd refuses a data connection from any address but the control connection's
("425 Security: Bad IP connecting"), so these transfers only succeed when the
data legs follow the control connection's source address.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import clients
from tests.integration.farms import farm

pytestmark = pytest.mark.integration

SOURCE = "127.0.0.9"


@pytest.mark.parametrize("data_mode", ["passive", "active"])
def test_vsftpd_sees_one_source_address(data_mode: str, tmp_path: Path) -> None:
    content = b"from one address\n" * 1000
    backend = f'source = "{SOURCE}"\ndata_mode = "{data_mode}"'
    with farm("vsftpd", ["127.0.0.61", "127.0.0.62"], {"f.txt": content}, backend=backend) as group:
        lb = group.lb
        for mode in ("epsv", "pasv"):
            with clients.ftplib_session(lb.host, lb.port, group.user, group.password, mode) as ftp:
                assert ftp.retr("f.txt") == content
                assert ftp.stor(f"up-{mode}.txt", content).startswith("226")
        url = clients.ftp_url(lb.host, lb.port, "f.txt", group.user, group.password)
        clients.curl_retr(url, tmp_path / "f.txt", "epsv").check()
        assert (tmp_path / "f.txt").read_bytes() == content
        log = "\n".join(server.log_text() for server in group.servers)
        assert SOURCE in log  # vsftpd logged our connections as coming from it
