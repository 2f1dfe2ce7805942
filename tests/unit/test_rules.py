"""The rule table, pinned row by row: a changed rule must fail here, and in the session tests."""

from __future__ import annotations

import pytest

from ftplb.proto.rules import (
    RULES,
    UNLISTED,
    Direction,
    Handling,
    TlsNeed,
    VerbRule,
    rule_for,
)

H = Handling
D = Direction
NONE, CONTROL, DATA = TlsNeed.NONE, TlsNeed.CONTROL, TlsNeed.DATA

# verb: (handling, before_login, transfer, secret, tls, unrouted reply)
EXPECTED: dict[bytes, tuple[Handling, bool, Direction | None, bool, TlsNeed, object]] = {
    b"USER": (H.LOGIN, True, None, False, CONTROL, None),
    b"PASS": (H.LOGIN, True, None, True, CONTROL, (503, "Login with USER first.")),
    b"ACCT": (H.LOGIN, True, None, True, CONTROL, (503, "Login with USER first.")),
    b"REIN": (H.REIN, True, None, False, NONE, None),
    b"QUIT": (H.QUIT, True, None, False, NONE, None),
    b"AUTH": (H.AUTH, True, None, False, NONE, None),
    b"PBSZ": (H.PBSZ, True, None, False, NONE, None),
    b"PROT": (H.PROT, True, None, False, NONE, None),
    b"CCC": (H.CCC, True, None, False, NONE, None),
    b"ADAT": (H.UNSUPPORTED, True, None, False, NONE, None),
    b"MIC": (H.UNSUPPORTED, True, None, False, NONE, None),
    b"CONF": (H.UNSUPPORTED, True, None, False, NONE, None),
    b"ENC": (H.UNSUPPORTED, True, None, False, NONE, None),
    b"PASV": (H.PASSIVE, False, None, False, NONE, None),
    b"EPSV": (H.PASSIVE, False, None, False, NONE, None),
    b"PORT": (H.ACTIVE, False, None, False, NONE, None),
    b"EPRT": (H.ACTIVE, False, None, False, NONE, None),
    b"LPSV": (H.UNSUPPORTED, True, None, False, NONE, None),
    b"LPRT": (H.UNSUPPORTED, True, None, False, NONE, None),
    b"SPSV": (H.UNSUPPORTED, True, None, False, NONE, None),
    b"RETR": (H.TRANSFER, False, D.DOWNLOAD, False, DATA, None),
    b"LIST": (H.TRANSFER, False, D.DOWNLOAD, False, DATA, None),
    b"NLST": (H.TRANSFER, False, D.DOWNLOAD, False, DATA, None),
    b"MLSD": (H.TRANSFER, False, D.DOWNLOAD, False, DATA, None),
    b"STOR": (H.TRANSFER, False, D.UPLOAD, False, DATA, None),
    b"STOU": (H.TRANSFER, False, D.UPLOAD, False, DATA, None),
    b"APPE": (H.TRANSFER, False, D.UPLOAD, False, DATA, None),
    b"ABOR": (H.ABOR, False, None, False, NONE, None),
    b"FEAT": (H.FEAT, True, None, False, NONE, None),
    b"SYST": (H.FORWARD, True, None, False, NONE, (215, "UNIX Type: L8")),
    b"NOOP": (H.FORWARD, True, None, False, NONE, (200, "NOOP ok.")),
    b"OPTS": (H.FORWARD, True, None, False, NONE, (200, "OK.")),
    b"HELP": (H.FORWARD, True, None, False, NONE, (214, "Log in with USER and PASS.")),
    b"STAT": (H.FORWARD, True, None, False, NONE, (211, "Not logged in.")),
    b"CLNT": (H.FORWARD, True, None, False, NONE, (200, "Noted.")),
    b"HOST": (H.FORWARD, True, None, False, NONE, (502, "HOST is not supported before login.")),
    b"LANG": (H.FORWARD, True, None, False, NONE, (502, "LANG is not supported before login.")),
    **{
        verb: (H.FORWARD, False, None, False, NONE, None)
        for verb in b"CWD CDUP XCWD XCUP PWD XPWD MKD XMKD RMD XRMD DELE RNFR RNTO SIZE MDTM "
        b"MLST TYPE STRU MODE ALLO REST SMNT".split()
    },
}


def test_the_table_has_exactly_the_expected_verbs() -> None:
    assert sorted(RULES) == sorted(EXPECTED)


@pytest.mark.parametrize("verb", sorted(EXPECTED))
def test_each_row(verb: bytes) -> None:
    handling, before_login, transfer, secret, tls, unrouted = EXPECTED[verb]
    assert rule_for(verb) == VerbRule(
        handling,
        before_login=before_login,
        transfer=transfer,
        secret=secret,
        tls=tls,
        unrouted=unrouted,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("verb", [b"SITE", b"XYZZY", b"", b"MFMT"])
def test_a_verb_without_a_row_is_forwarded_and_judged_by_the_server(verb: bytes) -> None:
    assert rule_for(verb) is UNLISTED
    assert VerbRule(Handling.FORWARD, before_login=True) == UNLISTED


def test_lookup_ignores_case() -> None:
    assert rule_for(b"retr") is RULES[b"RETR"]
    assert rule_for(b"Pass") is RULES[b"PASS"]


ANSWERED_HERE = {H.PASSIVE, H.ACTIVE, H.AUTH, H.PBSZ, H.PROT, H.CCC, H.UNSUPPORTED}
SERVERLESS = {H.AUTH, H.PBSZ, H.PROT, H.CCC, H.UNSUPPORTED}


@pytest.mark.parametrize("handling", list(Handling))
def test_who_answers_each_handling(handling: Handling) -> None:
    assert handling.answered_by_balancer is (handling in ANSWERED_HERE)
    assert handling.needs_server is (handling not in SERVERLESS)
