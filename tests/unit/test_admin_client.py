"""``ftplb admin``'s defaults: the target, the URL and the user from the configuration."""

from __future__ import annotations

import pytest

from ftplb.admin.passwords import hash_password
from ftplb.admin_client import default_url, default_user, parse_target, read_password
from ftplb.config.fields import Endpoint
from ftplb.config.general import Admin, AdminUserEntry

HASH = hash_password("pw", log2_n=4, r=1)


def test_parse_target() -> None:
    assert parse_target("pool/s1") == ("pool", "s1")
    for bad in ("pool", "pool/", "/s1", "pool/s1/x", ""):
        with pytest.raises(ValueError, match="expected BACKEND/SERVER"):
            parse_target(bad)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8404"),
        ("0.0.0.0", "http://127.0.0.1:8404"),
        ("::", "http://[::1]:8404"),
        ("::1", "http://[::1]:8404"),
        ("10.0.0.5", "http://10.0.0.5:8404"),
    ],
)
def test_default_url_reaches_the_bind_from_this_host(host: str, url: str) -> None:
    assert default_url(Admin(bind=Endpoint(host, 8404))) == url


def user(name: str, role: str) -> AdminUserEntry:
    return AdminUserEntry.model_validate({"name": name, "password_hash": HASH, "role": role})


def test_default_user_is_the_only_admin() -> None:
    assert default_user(Admin()) is None
    assert default_user(Admin(users=[user("ops", "admin"), user("ro", "read-only")])) == "ops"
    assert default_user(Admin(user="old", password="pw", users=[user("ro", "read-only")])) == "old"
    assert default_user(Admin(user="old", password="pw", users=[user("ops", "admin")])) is None
    assert default_user(Admin(users=[user("a", "admin"), user("b", "admin")])) is None


def test_the_password_comes_from_the_environment_then_the_legacy_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    legacy = Admin(user="old", password="plain")
    monkeypatch.setenv("FTPLB_ADMIN_PASSWORD", "from env")
    assert read_password("old", legacy) == "from env"
    monkeypatch.delenv("FTPLB_ADMIN_PASSWORD")
    assert read_password("old", legacy) == "plain"
