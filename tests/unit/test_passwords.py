"""Admin password hashes: the text form, hashing and checking, and the config that holds them."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ftplb.admin.passwords import hash_password, verify_password
from ftplb.config.load import ConfigError, check_config, config_warnings, load_config_text
from ftplb.config.password_hash import PasswordHash, PasswordHashError, parse_password_hash
from ftplb.config.schema import PLAIN_PASSWORD_ADVICE
from tests.config_texts import ONE_SERVER

# Tests use a tiny cost (N = 16) so that each check takes microseconds.
CHEAP = 4
SALT = bytes(range(16))
DIGEST = bytes(range(100, 132))
SALT_B64 = base64.b64encode(SALT).decode().rstrip("=")
DIGEST_B64 = base64.b64encode(DIGEST).decode().rstrip("=")


def test_the_text_form_round_trips() -> None:
    text = f"$scrypt$ln=15,r=8,p=1${SALT_B64}${DIGEST_B64}"
    parsed = parse_password_hash(text)
    assert parsed == PasswordHash(15, 8, 1, SALT, DIGEST)
    assert (parsed.n, parsed.memory) == (32768, 32 * 1024 * 1024)
    assert str(parsed) == text


def test_hash_password_makes_a_fresh_salted_default_cost_hash() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second  # a new salt each time
    parsed = parse_password_hash(first)
    assert (parsed.log2_n, parsed.r, parsed.p, len(parsed.salt), len(parsed.digest)) == (
        15,
        8,
        1,
        16,
        32,
    )
    assert first.startswith("$scrypt$ln=15,r=8,p=1$")
    assert verify_password("s3cret", first)
    assert not verify_password("s3cret ", first)


@pytest.mark.parametrize("password", ["pw", "", "pässwörd:with colon", "x" * 200])
def test_verify_accepts_only_the_password_hashed(password: str) -> None:
    stored = hash_password(password, log2_n=CHEAP, r=1)
    assert verify_password(password, stored)
    assert verify_password(password, parse_password_hash(stored))
    assert not verify_password(password + "x", stored)
    assert not verify_password(password.upper() + "!", stored)


def test_verify_uses_the_cost_written_in_the_hash() -> None:
    stored = hash_password("pw", log2_n=5, r=2, p=3)
    assert stored.startswith("$scrypt$ln=5,r=2,p=3$")
    parsed = parse_password_hash(stored)
    # The same salt and digest with another cost is another hash.
    other = PasswordHash(6, 2, 3, parsed.salt, parsed.digest)
    assert verify_password("pw", parsed)
    assert not verify_password("pw", other)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "",
            "not a password hash: expected $scrypt$ln=15,r=8,p=1$<salt>$<hash> "
            "(ftplb hash-password makes one)",
        ),
        (f"$bcrypt$ln=15,r=8,p=1${SALT_B64}${DIGEST_B64}", "not a password hash"),
        (f"$scrypt$ln=15,r=8${SALT_B64}${DIGEST_B64}", "not a password hash"),
        (f"$scrypt$ln=15,r=8,p=1${SALT_B64}", "not a password hash"),
        (f"$scrypt$ln=15,r=8,p=1${SALT_B64}${DIGEST_B64}$", "not a password hash"),
        (f"$scrypt$ln=0,r=8,p=1${SALT_B64}${DIGEST_B64}", "scrypt parameters out of range"),
        (f"$scrypt$ln=25,r=8,p=1${SALT_B64}${DIGEST_B64}", "scrypt parameters out of range"),
        (f"$scrypt$ln=15,r=0,p=1${SALT_B64}${DIGEST_B64}", "scrypt parameters out of range"),
        (f"$scrypt$ln=15,r=8,p=17${SALT_B64}${DIGEST_B64}", "scrypt parameters out of range"),
        (f"$scrypt$ln=24,r=64,p=1${SALT_B64}${DIGEST_B64}", "scrypt cost too high"),
        (f"$scrypt$ln=15,r=8,p=1$A${DIGEST_B64}", "the salt is not valid base64"),
        (f"$scrypt$ln=15,r=8,p=1$AAAAAAA${DIGEST_B64}", "salt too short"),
        (f"$scrypt$ln=15,r=8,p=1${SALT_B64}$AAAA", "hash of the wrong size"),
    ],
)
def test_parse_refuses_what_is_not_a_usable_hash(text: str, message: str) -> None:
    with pytest.raises(PasswordHashError) as caught:
        parse_password_hash(text)
    assert str(caught.value).startswith(message)


# ------------------------------------------------------------------- config

BASE = ONE_SERVER
HASH = hash_password("pw", log2_n=CHEAP, r=1)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(BASE + text, "ftplb.toml")
    return caught.value.problems


def test_users_with_roles() -> None:
    config = load_config_text(
        BASE + f'[admin]\n[[admin.users]]\nname = "ops"\npassword_hash = "{HASH}"\n'
        f'role = "admin"\n[[admin.users]]\nname = "viewer"\npassword_hash = "{HASH}"\n'
    )
    assert config.admin is not None
    assert [(u.name, u.password_hash, u.role) for u in config.admin.users] == [
        ("ops", HASH, "admin"),
        ("viewer", HASH, "read-only"),  # the least privilege by default
    ]
    assert not config.admin.plain_password


def test_bad_user_tables_name_file_line_and_key() -> None:
    lines = problems(
        "[admin]\n"  # line 11
        "[[admin.users]]\n"
        'name = "ops"\n'
        'password_hash = "$scrypt$ln=15"\n'  # line 14
        'role = "boss"\n'  # line 15
        "[[admin.users]]\n"
        'name = "a:b"\n'  # line 17
        f'password_hash = "{HASH}"\n'
        "colour = 1\n"  # line 19
        "[[admin.users]]\n"
        'name = "nohash"\n'
    )
    assert lines == [
        "ftplb.toml:14: admin.users[0].password_hash: not a password hash: expected "
        "$scrypt$ln=15,r=8,p=1$<salt>$<hash> (ftplb hash-password makes one)",
        "ftplb.toml:15: admin.users[0].role: Input should be 'admin' or 'read-only'",
        'ftplb.toml:17: admin.users[1].name: invalid user name "a:b": '
        "expected printable text without ':'",
        'ftplb.toml:19: admin.users[1].colour: unknown key "colour"',
        "ftplb.toml:20: admin.users[2].password_hash: missing required key",
    ]


def test_duplicate_user_names_are_refused_naming_the_key() -> None:
    lines = problems(
        '[admin]\nuser = "ops"\npassword = "pw"\n'  # user on line 12
        f'[[admin.users]]\nname = "ops"\npassword_hash = "{HASH}"\n'  # name on line 15
        f'[[admin.users]]\nname = "bob"\npassword_hash = "{HASH}"\n'
        f'[[admin.users]]\nname = "bob"\npassword_hash = "{HASH}"\n'  # name on line 21
    )
    assert lines == [
        'ftplb.toml:15: admin.users[0].name: duplicate admin user name "ops" (also admin.user)',
        'ftplb.toml:21: admin.users[2].name: duplicate admin user name "bob" '
        "(also admin.users[1].name)",
    ]


def test_legacy_and_hashed_users_together_when_names_differ() -> None:
    config = load_config_text(
        BASE + '[admin]\nuser = "ops"\npassword = "pw"\n'
        f'[[admin.users]]\nname = "bob"\npassword_hash = "{HASH}"\n'
    )
    assert config.admin is not None
    assert (config.admin.user, [u.name for u in config.admin.users]) == ("ops", ["bob"])
    assert config.admin.plain_password


def test_check_warns_about_a_plain_password_and_still_passes(tmp_path: Path) -> None:
    path = tmp_path / "ftplb.toml"
    path.write_text(BASE + '[admin]\nuser = "ops"\npassword = "pw"\n')
    assert check_config(path) == []
    assert config_warnings(path) == [f"{path}:13: admin.password: warning: {PLAIN_PASSWORD_ADVICE}"]
    path.write_text(BASE + f'[admin]\n[[admin.users]]\nname = "a"\npassword_hash = "{HASH}"\n')
    assert config_warnings(path) == []
    path.write_text(BASE + '[admin]\nuser = "ops"\n')  # invalid: errors, not warnings
    assert config_warnings(path) == []
