"""From an Authorization header to a Caller: users, roles, the open listener, the cache."""

from __future__ import annotations

import base64

import pytest

from ftplb.admin.actions import Caller, Role
from ftplb.admin.auth import ANONYMOUS, Authenticator, basic_credentials
from ftplb.admin.passwords import hash_password, verify_password
from ftplb.config.general import Admin, AdminUserEntry
from ftplb.config.password_hash import PasswordHash

OPS_HASH = hash_password("ops-pw", log2_n=4, r=1)
VIEWER_HASH = hash_password("view:pw", log2_n=4, r=1)


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def settings(*, legacy: bool = True, hashed: bool = True) -> Admin:
    users = (
        [
            AdminUserEntry(name="ops", password_hash=OPS_HASH, role="admin"),
            AdminUserEntry(name="viewer", password_hash=VIEWER_HASH, role="read-only"),
        ]
        if hashed
        else []
    )
    if legacy:
        return Admin(users=users, user="old", password="plain pw")
    return Admin(users=users)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (header("ops", "a:b c"), ("ops", "a:b c")),
        (header("ops", ""), ("ops", "")),
        ("basic " + base64.b64encode(b"x:y").decode(), ("x", "y")),
        ("Bearer abc", None),
        ("Basic", None),
        ("Basic !!!!", None),
        ("Basic " + base64.b64encode(b"no colon").decode(), None),
        ("Basic " + base64.b64encode(b"\xff:\xfe").decode(), None),
    ],
)
def test_basic_credentials(value: str | None, expected: tuple[str, str] | None) -> None:
    assert basic_credentials(value) == expected


async def test_each_user_gets_its_role() -> None:
    auth = Authenticator(settings())
    assert not auth.open
    assert await auth.caller(header("ops", "ops-pw")) == Caller("ops", Role.ADMIN)
    assert await auth.caller(header("viewer", "view:pw")) == Caller("viewer", Role.READ_ONLY)
    assert await auth.caller(header("old", "plain pw")) == Caller("old", Role.ADMIN)


@pytest.mark.parametrize(
    "value",
    [
        None,
        header("ops", "wrong"),
        header("ops", "view:pw"),  # another user's password
        header("viewer", "ops-pw"),
        header("old", "plain pw "),
        header("nobody", "ops-pw"),
        header("OPS", "ops-pw"),
        "Bearer x",
    ],
)
async def test_wrong_or_missing_credentials_get_none(value: str | None) -> None:
    assert await Authenticator(settings()).caller(value) is None


async def test_without_users_every_request_is_anonymous_and_read_only() -> None:
    auth = Authenticator(Admin())
    assert auth.open
    assert await auth.caller(None) == ANONYMOUS
    assert await auth.caller(header("ops", "whatever")) == ANONYMOUS
    assert (ANONYMOUS.name, ANONYMOUS.role) == ("", Role.READ_ONLY)
    assert not ANONYMOUS.may_act


async def test_only_the_legacy_user() -> None:
    auth = Authenticator(settings(hashed=False))
    assert await auth.caller(header("old", "plain pw")) == Caller("old", Role.ADMIN)
    assert await auth.caller(header("old", "plain")) is None
    assert await auth.caller(header("ops", "ops-pw")) is None


async def test_a_verified_password_is_remembered_and_a_wrong_one_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []

    def counting(password: str, stored: str | PasswordHash) -> bool:
        checked.append(password)
        return verify_password(password, stored)

    monkeypatch.setattr("ftplb.admin.auth.verify_password", counting)
    auth = Authenticator(settings())
    for _ in range(3):
        assert await auth.caller(header("ops", "ops-pw")) == Caller("ops", Role.ADMIN)
    assert checked == ["ops-pw"]
    for _ in range(2):
        assert await auth.caller(header("ops", "bad")) is None
    assert checked == ["ops-pw", "bad", "bad"]
    # Remembered per user: the same password under another name is checked (and fails).
    assert await auth.caller(header("viewer", "ops-pw")) is None
    assert checked == ["ops-pw", "bad", "bad", "ops-pw"]
    # An unknown name costs a check too, so its answer comes as late as a wrong password's.
    assert await auth.caller(header("nobody", "x")) is None
    assert checked == ["ops-pw", "bad", "bad", "ops-pw", "x"]
