"""A real ``ftplb run`` with an admin listener, its users, and a client of its runtime API.

Each FTP server's root holds a ``whoami`` file with the server's name, so a
client learns at once which server its session reached. The admin users'
hashes come from ``ftplb hash-password`` itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from tests.integration import clients
from tests.integration.balancer import DEFAULT_HEALTH
from tests.integration.farms import Farm, farm
from tests.integration.test_admin_live import free_port_for_admin

OPS, OPS_PASSWORD = "ops", "ops: long pass phrase"
VIEWER, VIEWER_PASSWORD = "viewer", "look only"
LEGACY, LEGACY_PASSWORD = "old", "plain pw"
FTPLB = [sys.executable, "-m", "ftplb"]
APPLIED_WITHIN = 1.0
"""Seconds from an action's answer until every balancer process follows it."""
SOURCES = [f"127.0.0.{n}" for n in range(100, 164)]


def ftplb(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FTPLB, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def hash_with_the_cli(password: str) -> str:
    result = ftplb("hash-password", stdin=password + "\n")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("$scrypt$ln=15,r=8,p=1$"), line
    return line


def admin_section(port: int) -> str:
    return f"""
[admin]
bind = "127.0.0.1:{port}"
user = "{LEGACY}"
password = "{LEGACY_PASSWORD}"

[[admin.users]]
name = "{OPS}"
password_hash = "{hash_with_the_cli(OPS_PASSWORD)}"
role = "admin"

[[admin.users]]
name = "{VIEWER}"
password_hash = "{hash_with_the_cli(VIEWER_PASSWORD)}"
role = "read-only"
"""


@dataclass
class Api:
    farm: Farm
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        user: str | None = OPS,
        password: str = OPS_PASSWORD,
        content_type: str | None = "application/json",
    ) -> tuple[int, dict[str, str], object]:
        headers: dict[str, str] = {}
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if body is not None and content_type is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), _decode(response.read())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), _decode(error.read())

    def act(self, server: str, body: dict[str, object], **kwargs: str) -> tuple[int, object]:
        status, _, answer = self.call(
            "POST", f"/api/servers/pool/{server}", json.dumps(body).encode(), **kwargs
        )
        return status, answer

    def server(self, name: str) -> dict[str, object]:
        status, _, answer = self.call("GET", f"/api/servers/pool/{name}")
        assert status == 200 and isinstance(answer, dict), (status, answer)
        return answer

    def landed(self, source: str | None = None) -> str:
        """The server that a new session (from ``source``) reaches."""
        lb = self.farm.lb
        with clients.ftplib_session(
            lb.host, lb.port, self.farm.user, self.farm.password, "epsv", source
        ) as client:
            return client.retr("whoami").decode()


def _decode(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


@contextlib.contextmanager
def api_farm(defaults: str = "", backend: str = "", health: str = DEFAULT_HEALTH) -> Iterator[Api]:
    """Two pyftpdlib servers (s1, s2) behind an ftplb with the admin users; ``defaults``,
    ``backend`` and ``health`` go to :func:`tests.integration.balancer.simple_config`."""
    port = free_port_for_admin()
    with farm(
        sections=admin_section(port),
        defaults=defaults,
        backend=backend,
        health=health,
    ) as group:
        for index, server in enumerate(group.servers, start=1):
            (server.root / "whoami").write_text(f"s{index}")
            (server.root / "whoami").chmod(0o644)
        yield Api(group, port)
