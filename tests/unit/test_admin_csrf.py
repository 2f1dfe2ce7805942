"""The stats page's CSRF defence: per-user tokens and the same-origin check."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ftplb.admin.csrf import CsrfTokens, cross_origin_reason

SECRET = b"k" * 32


def test_a_token_is_the_hmac_sha256_of_the_user_name() -> None:
    expected = hmac.new(SECRET, b"ops", hashlib.sha256).hexdigest()
    assert CsrfTokens(SECRET).token("ops") == expected


def test_a_token_round_trips_for_its_user() -> None:
    tokens = CsrfTokens()
    assert tokens.valid("ops", tokens.token("ops"))
    assert tokens.valid("", tokens.token(""))
    assert tokens.valid("ünïcode", tokens.token("ünïcode"))


def test_the_token_of_another_user_is_refused() -> None:
    tokens = CsrfTokens()
    assert tokens.token("ops") != tokens.token("ops2")
    assert not tokens.valid("ops", tokens.token("ops2"))
    assert not tokens.valid("ops2", tokens.token("ops"))


@pytest.mark.parametrize("given", [None, "", "0" * 64, "not hex ä", "x"])
def test_a_missing_or_wrong_token_is_refused(given: str | None) -> None:
    assert not CsrfTokens(SECRET).valid("ops", given)


def test_a_token_differs_by_a_single_character() -> None:
    tokens = CsrfTokens(SECRET)
    token = tokens.token("ops")
    flipped = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert not tokens.valid("ops", flipped)
    assert not tokens.valid("ops", token + "0")
    assert not tokens.valid("ops", token[:-1])
    assert not tokens.valid("ops", token.upper())


def test_each_process_has_its_own_secret() -> None:
    # A token from an earlier run (or another balancer) is worthless here.
    assert CsrfTokens().token("ops") != CsrfTokens().token("ops")


OWN = "http://127.0.0.1:8404"


@pytest.mark.parametrize(
    ("origin", "fetch_site"),
    [
        (None, None),  # curl, a script: the token alone decides
        (OWN, None),
        (OWN, "same-origin"),
        ("HTTP://127.0.0.1:8404", "same-origin"),  # the scheme and host have no case
        (None, "same-origin"),
        (None, "none"),  # typed into the address bar
    ],
)
def test_same_origin_requests_pass(origin: str | None, fetch_site: str | None) -> None:
    assert cross_origin_reason(origin, fetch_site, OWN) is None


@pytest.mark.parametrize(
    ("origin", "fetch_site", "reason"),
    [
        ("http://evil.example", None, "Origin 'http://evil.example' is not 'http://127.0.0.1:8404'"),
        ("null", None, "Origin 'null' is not 'http://127.0.0.1:8404'"),
        ("http://127.0.0.1:8405", None, "Origin 'http://127.0.0.1:8405' is not 'http://127.0.0.1:8404'"),
        ("https://127.0.0.1:8404", None, "Origin 'https://127.0.0.1:8404' is not 'http://127.0.0.1:8404'"),
        (None, "cross-site", "Sec-Fetch-Site: cross-site"),
        (OWN, "cross-site", "Sec-Fetch-Site: cross-site"),
        ("http://evil.example", "cross-site", "Sec-Fetch-Site: cross-site"),
        ("http://localhost:8404", "same-site", "Origin 'http://localhost:8404' is not 'http://127.0.0.1:8404'"),
    ],
)  # fmt: skip
def test_requests_from_another_site_are_refused(
    origin: str | None, fetch_site: str | None, reason: str
) -> None:
    assert cross_origin_reason(origin, fetch_site, OWN) == reason
