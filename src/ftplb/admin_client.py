"""``ftplb admin``: the runtime API of a running ftplb, from a shell.

A thin client of ``/api/servers`` and ``/api/bans`` (urllib from the standard library): it
sends one request and turns the answer into the server's JSON or into a
sentence that says what went wrong. Where the listener is, and who logs in,
come from the command line, the configuration file and the environment.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from ftplb.config.general import Admin

__all__ = [
    "PASSWORD_ENV",
    "AdminClient",
    "AdminClientError",
    "default_url",
    "default_user",
    "parse_target",
    "read_password",
]

PASSWORD_ENV = "FTPLB_ADMIN_PASSWORD"
TIMEOUT = 10.0

_CODES = {
    400: "the request was refused",
    401: "authentication failed: wrong user name or password",
    403: "not allowed",
    404: "not found",
    415: "the request was refused",
}


class AdminClientError(Exception):
    """A request that did not succeed; the message is for the operator."""


def parse_target(text: str) -> tuple[str, str]:
    """``BACKEND/SERVER`` as (backend, server); ValueError when it is not that."""
    backend, slash, server = text.partition("/")
    if not slash or not backend or not server or "/" in server:
        raise ValueError(f"expected BACKEND/SERVER, got {text!r}")
    return backend, server


def default_url(admin: Admin) -> str:
    """The URL of the listener that ``admin`` opens, as seen from this host."""
    host = admin.bind.host
    if host == "0.0.0.0":  # a wildcard listens on loopback too
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{admin.bind.port}"


def default_user(admin: Admin) -> str | None:
    """The one user that can act, when the configuration has exactly one."""
    names = [entry.name for entry in admin.users if entry.role == "admin"]
    if admin.user is not None:
        names.append(admin.user)
    return names[0] if len(names) == 1 else None


def read_password(user: str, admin: Admin | None) -> str:
    """``user``'s password: the environment, the legacy plain one, or a prompt."""
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env
    if admin is not None and admin.user == user and admin.password is not None:
        return admin.password
    if not sys.stdin.isatty():
        raise AdminClientError(f"no password for {user!r}: set {PASSWORD_ENV}")
    return getpass.getpass(f"password for {user}: ")


@dataclass(frozen=True, slots=True)
class AdminClient:
    """Requests to the admin listener at ``url``, as ``user`` (None: without credentials)."""

    url: str
    user: str | None = None
    password: str = ""

    def show(self, target: tuple[str, str] | None = None) -> Any:
        """Every server, or the one ``target``, as the API shows them."""
        return self._request("GET", _server_path(target))

    def stats(self) -> Any:
        """The whole ``/stats.json``: what ``ftplb status`` and ``ftplb top`` show."""
        return self._request("GET", "/stats.json")

    def act(self, target: tuple[str, str], action: dict[str, object]) -> Any:
        """Send ``action`` (``{"state": "drain"}``, ``{"weight": 3}``); the server after it."""
        return self._request("POST", _server_path(target), action)

    def bans(self) -> Any:
        """The login defender's bans in force."""
        return self._request("GET", "/api/bans")

    def unban(self, address: str) -> Any:
        """Lift the ban on ``address``; the ban that was lifted."""
        return self._request("DELETE", "/api/bans/" + urllib.parse.quote(address, safe=""))

    def _request(self, method: str, path: str, body: object = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        url = self.url.rstrip("/") + path
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise AdminClientError(_http_problem(error)) from None
        except urllib.error.URLError as error:
            reason = error.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise AdminClientError(f"cannot reach {self.url}: {text}") from None
        except (OSError, ValueError) as error:
            raise AdminClientError(f"{self.url}: {error}") from None


def _server_path(target: tuple[str, str] | None) -> str:
    if target is None:
        return "/api/servers"
    backend, server = (urllib.parse.quote(part, safe="") for part in target)
    return f"/api/servers/{backend}/{server}"


def _http_problem(error: urllib.error.HTTPError) -> str:
    detail = ""
    try:
        body = json.loads(error.read())
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            detail = body["error"]
    except (OSError, ValueError):
        pass
    words = _CODES.get(error.code, "the request failed")
    shown = f"{words}: {detail}" if detail else words
    return f"{shown} (HTTP {error.code})"
