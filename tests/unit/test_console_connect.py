"""Who ``ftplb status`` and ``ftplb top`` log in as, and where they connect, from the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftplb.admin.passwords import hash_password
from ftplb.config.general import Admin, AdminUserEntry
from ftplb.console.connect import ConnectError, open_source, reading_user

HASH = hash_password("pw", log2_n=4, r=1)


def user(name: str, role: str) -> AdminUserEntry:
    return AdminUserEntry.model_validate({"name": name, "password_hash": HASH, "role": role})


def test_the_reading_user() -> None:
    assert reading_user(Admin()) is None  # no users: anonymous reads
    assert reading_user(Admin(users=[user("ro", "read-only")])) == "ro"  # any role reads
    assert reading_user(Admin(users=[user("ops", "admin"), user("ro", "read-only")])) == "ops"
    # The legacy user's password is in the file: it reads without a prompt.
    assert reading_user(Admin(user="old", password="pw", users=[user("ops", "admin")])) == "old"


def test_several_users_and_no_single_admin_ask_for_one() -> None:
    admin = Admin(users=[user("a", "admin"), user("b", "admin"), user("c", "read-only")])
    with pytest.raises(ConnectError, match=r"several users \(a, b, c\): give --user"):
        reading_user(admin)


def test_the_url_comes_from_the_file_or_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "ftplb.toml"
    config.write_text(
        '[[frontends]]\nname = "f"\nbind = ["127.0.0.1:2121"]\nbackend = "b"\n'
        '[[backends]]\nname = "b"\n[[backends.servers]]\nname = "s"\naddress = "127.0.0.1:21"\n'
        '[admin]\nbind = "*:8405"\nuser = "old"\npassword = "plain"\n'
    )
    source = open_source(str(config), None, None)
    assert source.url == "http://127.0.0.1:8405"  # a wildcard is reached on loopback
    assert (source.client.user, source.client.password) == ("old", "plain")
    assert open_source(str(config), "http://[::1]:9", None).url == "http://[::1]:9"
    assert open_source(None, "http://127.0.0.1:9", None).client.user is None
    with pytest.raises(ConnectError, match="expected http://HOST:PORT"):
        open_source(None, "127.0.0.1:9", None)
    with pytest.raises(ConnectError, match="give -c CONFIG or --admin URL"):
        open_source(None, None, None)
    with pytest.raises(ConnectError, match=r"missing\.toml"):
        open_source(str(tmp_path / "missing.toml"), None, None)
