"""CommandParser limits and loggable() on commands the parser itself never makes."""

from __future__ import annotations

import pytest

from ftplb.proto.commands import Command, CommandParser, loggable
from ftplb.proto.errors import ProtocolError


def test_default_line_limit_is_4096_bytes_before_the_lf() -> None:
    line = b"RETR " + b"x" * 4090 + b"\r"  # 4096 bytes, the CR included
    [command] = CommandParser().feed(line + b"\n")
    assert command == Command(b"RETR", b"x" * 4090, line + b"\n")
    [error] = CommandParser().feed(b"x" + line + b"\n")
    assert isinstance(error, ProtocolError)
    assert (error.code, error.message) == (500, "Command line too long")


@pytest.mark.parametrize("limit", [0, -1])
def test_max_line_length_must_be_positive(limit: int) -> None:
    with pytest.raises(ValueError) as caught:
        CommandParser(max_line_length=limit)
    assert str(caught.value) == "max_line_length must be positive"


def test_smallest_limit_takes_one_byte_lines() -> None:
    parser = CommandParser(max_line_length=1)
    assert parser.feed(b"A\n") == [Command(b"A", b"", b"A\n")]
    [error] = parser.feed(b"AB\n")
    assert isinstance(error, ProtocolError)
    assert (error.code, error.message) == (500, "Command line too long")


def test_loggable_escapes_a_verb_that_is_not_ascii() -> None:
    # Commands built elsewhere (tests, a future parser) may carry any bytes.
    assert loggable(Command(b"R\xe9TR", b"x", b"")) == "R\\xe9TR x"
    assert loggable(Command(b"\xffNOOP", b"", b"")) == "\\xffNOOP"


def test_loggable_escapes_control_characters_in_the_verb() -> None:
    assert loggable(Command(b"NO\x1bOP", b"", b"")) == "NO\\x1bOP"


def test_lf_first_in_a_fresh_parser_ends_an_empty_line() -> None:
    parser = CommandParser()
    assert parser.feed(b"\n") == []
    assert parser.buffered == 0
    assert parser.feed(b"NOOP\r\n") == [Command(b"NOOP", b"", b"NOOP\r\n")]
