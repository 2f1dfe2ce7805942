"""FEAT replies: what the balancer hides, adds and passes untouched (exact bytes)."""

from __future__ import annotations

import pytest

from ftplb.proto.features import filter_feat, own_feat
from ftplb.proto.replies import Reply, ReplyParser


def reply(raw: bytes) -> Reply:
    (parsed,) = ReplyParser().feed(raw)
    return parsed


def test_own_feat() -> None:
    assert own_feat() == (
        b"211-Features:\r\n EPRT\r\n EPSV\r\n PASV\r\n REST STREAM\r\n211 End\r\n"
    )


def test_own_feat_with_extras() -> None:
    assert own_feat((b"AUTH TLS", b"PBSZ")) == (
        b"211-Features:\r\n EPRT\r\n EPSV\r\n PASV\r\n REST STREAM\r\n AUTH TLS\r\n PBSZ\r\n"
        b"211 End\r\n"
    )


def test_filter_feat_hides_security_and_fxp_and_adds_eprt_epsv() -> None:
    server = reply(
        b"211-Extensions supported:\r\n"
        b" AUTH TLS\r\n PBSZ\r\n PROT\r\n CCC\r\n ADAT\r\n SSCN\r\n CPSV\r\n HOST\r\n"
        b" MDTM\r\n SIZE\r\n UTF8\r\n"
        b"211 Done.\r\n"
    )
    assert filter_feat(server) == (
        b"211-Extensions supported:\r\n MDTM\r\n SIZE\r\n UTF8\r\n EPRT\r\n EPSV\r\n211 Done.\r\n"
    )


def test_filter_feat_matches_names_in_any_case_and_spacing() -> None:
    server = reply(b"211-Features\r\n auth tls\r\n  Pbsz \r\nEPSV\r\n eprt\r\n211 End\r\n")
    # Kept lines stay as the server wrote them; present names are not added twice.
    assert filter_feat(server) == b"211-Features\r\nEPSV\r\n eprt\r\n211 End\r\n"


def test_filter_feat_name_is_the_first_space_separated_word() -> None:
    # RFC 2389: feature-label SP params. Only a space separates them.
    server = reply(b"211-Features\r\n AUTH TLS SSL\r\n AUTH\tTLS\r\n211 End\r\n")
    assert filter_feat(server) == (b"211-Features\r\n AUTH\tTLS\r\n EPRT\r\n EPSV\r\n211 End\r\n")


def test_filter_feat_adds_extras_the_server_lacks() -> None:
    server = reply(b"211-Features\r\n MLST size*;\r\n AUTH TLS\r\n211 End\r\n")
    assert filter_feat(server, (b"AUTH TLS", b"MLST type*;", b"PBSZ")) == (
        b"211-Features\r\n MLST size*;\r\n EPRT\r\n EPSV\r\n AUTH TLS\r\n PBSZ\r\n211 End\r\n"
    )


def test_filter_feat_rewrites_a_reply_with_no_features() -> None:
    assert filter_feat(reply(b"211-Features:\r\n211 End\r\n")) == (
        b"211-Features:\r\n EPRT\r\n EPSV\r\n211 End\r\n"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"211 No features\r\n",  # single line: nothing to rewrite
        b"214-Help\r\n AUTH\r\n214 End\r\n",  # not a FEAT answer
        b"500 FEAT not understood\r\n",
    ],
)
def test_filter_feat_passes_other_replies_untouched(raw: bytes) -> None:
    assert filter_feat(reply(raw)) == raw
