"""Where ``ftplb status`` and ``ftplb top`` read: the admin listener, and who logs in.

``--admin URL`` names the listener; ``-c FILE`` takes it from the file's
``[admin]`` section. The user is ``--user``, else the file's only user (or
its legacy plain one); the password comes from ``FTPLB_ADMIN_PASSWORD``, the
legacy plain ``password``, or a prompt (see :func:`read_password`): a
``password_hash`` in the file is not a password.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftplb.admin.snapshot import Snapshot
from ftplb.admin_client import AdminClient, default_url, read_password
from ftplb.config.general import Admin
from ftplb.config.load import ConfigError, load_config
from ftplb.console.reading import StatsFormatError, snapshot_from_json

__all__ = ["ConnectError", "StatsSource", "open_source", "reading_user"]


class ConnectError(Exception):
    """The listener, or the user, cannot be worked out; the message says why."""


def reading_user(admin: Admin) -> str | None:
    """Who reads, from the file alone: None for a listener without users.

    Any user may read; with several users and no legacy one, the only
    ``admin`` user is taken, else :class:`ConnectError` asks for ``--user``.
    """
    if admin.user is not None:
        return admin.user  # its password is in the file
    names = [entry.name for entry in admin.users]
    if len(names) <= 1:
        return names[0] if names else None
    admins = [entry.name for entry in admin.users if entry.role == "admin"]
    if len(admins) == 1:
        return admins[0]
    raise ConnectError(f"the [admin] section has several users ({', '.join(names)}): give --user")


@dataclass(frozen=True, slots=True)
class StatsSource:
    """Reads ``/stats.json`` of one listener."""

    client: AdminClient

    @property
    def url(self) -> str:
        return self.client.url

    def read(self) -> Snapshot:
        """One reading; AdminClientError or StatsFormatError (both one line) if it fails."""
        data = self.client.stats()
        try:
            return snapshot_from_json(data)
        except StatsFormatError as error:
            raise StatsFormatError(f"{self.url}/stats.json: {error}") from None


def open_source(config_path: str | None, url: str | None, user: str | None) -> StatsSource:
    """The source named on the command line; ConnectError or AdminClientError if none."""
    settings: Admin | None = None
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as error:
            raise ConnectError("\n".join(error.problems)) from None
        settings = config.admin
        if settings is None and url is None:
            raise ConnectError(f"{config_path} has no [admin] section: give --admin URL")
    if url is None:
        if settings is None:
            raise ConnectError("give -c CONFIG or --admin URL")
        url = default_url(settings)
    if not url.startswith(("http://", "https://")):
        raise ConnectError(f"--admin {url!r}: expected http://HOST:PORT")
    if user is None and settings is not None:
        user = reading_user(settings)
    password = read_password(user, settings) if user is not None else ""
    return StatsSource(AdminClient(url, user, password))
