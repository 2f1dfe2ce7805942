"""ProtocolError: the reply it maps to, exactly."""

from __future__ import annotations

from ftplb.proto.errors import ProtocolError


def test_carries_code_message_and_reads_as_the_reply() -> None:
    error = ProtocolError(501, "Syntax error in PORT arguments")
    assert (error.code, error.message) == (501, "Syntax error in PORT arguments")
    assert str(error) == "501 Syntax error in PORT arguments"
    assert error.args == ("501 Syntax error in PORT arguments",)
    assert error.reply() == b"501 Syntax error in PORT arguments\r\n"


def test_reply_is_utf8() -> None:
    assert ProtocolError(550, "Fichier «été» absent").reply() == (
        "550 Fichier «été» absent\r\n".encode()
    )


def test_reply_replaces_what_utf8_cannot_encode() -> None:
    # A message built from a path decoded with surrogateescape must still be sent.
    assert ProtocolError(550, "No such file: a\udcffb").reply() == b"550 No such file: a?b\r\n"
