"""Unit tests for the FTP command parser and the verb rules."""

from __future__ import annotations

import pytest

from ftplb.proto.commands import Command, CommandParser, loggable
from ftplb.proto.errors import ProtocolError


def only_command(data: bytes, parser: CommandParser | None = None) -> Command:
    results = (parser or CommandParser()).feed(data)
    assert len(results) == 1, results
    [result] = results
    assert isinstance(result, Command), result
    return result


def summary(results: list[Command | ProtocolError]) -> list[object]:
    """Results in a comparable form: exceptions compare by identity."""
    return [
        (item.code, item.message) if isinstance(item, ProtocolError) else item for item in results
    ]


# ------------------------------------------------------------ valid lines


def test_command_with_argument() -> None:
    command = only_command(b"RETR file.txt\r\n")
    assert command == Command(b"RETR", b"file.txt", b"RETR file.txt\r\n")


def test_command_without_argument() -> None:
    command = only_command(b"PASV\r\n")
    assert command.verb == b"PASV"
    assert command.arg == b""


def test_bare_lf_ending() -> None:
    command = only_command(b"NOOP\n")
    assert command.verb == b"NOOP"
    assert command.raw == b"NOOP\n"


def test_lower_case_verb_is_upper_cased() -> None:
    command = only_command(b"rEtR x\r\n")
    assert command.verb == b"RETR"
    assert command.raw == b"rEtR x\r\n"


def test_argument_keeps_spaces() -> None:
    command = only_command(b"STOR  two leading and trailing  \r\n")
    assert command.arg == b" two leading and trailing  "


def test_verb_followed_by_space_only_has_empty_argument() -> None:
    assert only_command(b"NOOP \r\n").arg == b""


def test_argument_keeps_non_utf8_bytes() -> None:
    command = only_command(b"CWD /d\xe9j\xe0/\xff\xfe\r\n")
    assert command.arg == b"/d\xe9j\xe0/\xff\xfe"


def test_argument_keeps_inner_cr() -> None:
    assert only_command(b"CWD a\rb\r\n").arg == b"a\rb"


def test_sixteen_letter_verb_is_accepted() -> None:
    assert only_command(b"A" * 16 + b"\r\n").verb == b"A" * 16


def test_several_commands_in_one_feed() -> None:
    results = CommandParser().feed(b"USER bob\r\nPASS secret\r\nSYST\r\n")
    assert [item.verb for item in results if isinstance(item, Command)] == [
        b"USER",
        b"PASS",
        b"SYST",
    ]


def test_partial_line_is_buffered() -> None:
    parser = CommandParser()
    assert parser.feed(b"LIST /pu") == []
    assert parser.buffered == 8
    command = only_command(b"b\r\n", parser)
    assert command.arg == b"/pub"
    assert parser.buffered == 0


def test_bytewise_feed_gives_same_results() -> None:
    data = b"user a\r\n\xff\xf4\xff\xf2ABOR\r\nbad1 x\r\n\r\nRETR  x \n"
    whole = CommandParser().feed(data)
    parser = CommandParser()
    pieces: list[Command | ProtocolError] = []
    for index in range(len(data)):
        pieces.extend(parser.feed(data[index : index + 1]))
    assert summary(pieces) == summary(whole)


# ------------------------------------------------------------ telnet


@pytest.mark.parametrize(
    "prefix",
    [
        b"\xff\xf4\xff\xf2",  # IAC IP, IAC DM: what clients send before ABOR
        b"\xff\xf4",
        b"\xf2",  # DM when it arrives inline
        b"\xff\xf4\xf2",
        b"\xff\xf0\xff\xfe\xff\xf1",
    ],
)
def test_telnet_prefix_is_removed(prefix: bytes) -> None:
    command = only_command(prefix + b"ABOR\r\n")
    assert command.verb == b"ABOR"
    assert command.raw == prefix + b"ABOR\r\n"


def test_escaped_iac_is_not_a_telnet_command() -> None:
    [error] = CommandParser().feed(b"\xff\xffABOR\r\n")
    assert isinstance(error, ProtocolError)
    assert error.code == 500


def test_iac_with_data_byte_is_not_stripped() -> None:
    [error] = CommandParser().feed(b"\xffAABOR\r\n")
    assert isinstance(error, ProtocolError)


def test_line_of_telnet_signals_only_is_ignored() -> None:
    assert CommandParser().feed(b"\xff\xf4\xff\xf2\r\n") == []


# ------------------------------------------------------------ ignored and bad lines


@pytest.mark.parametrize("data", [b"\r\n", b"\n", b"\r\n\n\r\n"])
def test_empty_lines_are_ignored(data: bytes) -> None:
    assert CommandParser().feed(data) == []


@pytest.mark.parametrize(
    "line",
    [
        b" NOOP",  # the verb would be empty
        b"RETR1 x",
        b"RE-TR x",
        b"RETR\tx",
        b"A" * 17,
        b"\xc3\xa9T x",
        b"\r",  # a CR before the CR of the ending
        b"\x00",
    ],
)
def test_bad_verbs_yield_500(line: bytes) -> None:
    [error] = CommandParser().feed(line + b"\r\n")
    assert isinstance(error, ProtocolError)
    assert (error.code, error.message) == (500, "Syntax error, command unrecognized")


def test_bad_line_does_not_stop_the_parser() -> None:
    results = CommandParser().feed(b"123\r\nNOOP\r\n")
    assert isinstance(results[0], ProtocolError)
    assert results[1] == Command(b"NOOP", b"", b"NOOP\r\n")


# ------------------------------------------------------------ line length


def test_line_at_limit_is_accepted() -> None:
    # The limit counts every byte before the LF, the CR included.
    command = only_command(b"RETR abcd\r\n", CommandParser(max_line_length=10))
    assert command.arg == b"abcd"


def test_overlong_line_then_good_line() -> None:
    results = CommandParser(max_line_length=10).feed(b"RETR abcde\r\nNOOP\r\n")
    assert summary(results) == [
        (500, "Command line too long"),
        Command(b"NOOP", b"", b"NOOP\r\n"),
    ]


def test_overlong_line_reported_before_lf() -> None:
    parser = CommandParser(max_line_length=10)
    assert parser.feed(b"RETR abcd\r") == []
    [error] = parser.feed(b"e")
    assert isinstance(error, ProtocolError)
    assert (error.code, error.message) == (500, "Command line too long")
    assert parser.buffered == 0
    # The rest of that line is discarded, whatever its length.
    assert parser.feed(b"x" * 100) == []
    assert parser.feed(b"yyy\r\nNO") == []
    assert only_command(b"OP\r\n", parser).verb == b"NOOP"


def test_huge_line_yields_exactly_one_error() -> None:
    parser = CommandParser(max_line_length=100)
    results: list[Command | ProtocolError] = []
    for _ in range(50):
        results.extend(parser.feed(b"A" * 1000))
    results.extend(parser.feed(b"\r\nQUIT\r\n"))
    assert summary(results) == [
        (500, "Command line too long"),
        Command(b"QUIT", b"", b"QUIT\r\n"),
    ]
    assert parser.buffered == 0


def test_two_overlong_lines_yield_two_errors() -> None:
    results = CommandParser(max_line_length=5).feed(b"NOOP 12345\r\nNOOP 67890\r\n")
    assert summary(results) == [(500, "Command line too long")] * 2


def test_max_line_length_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CommandParser(max_line_length=0)


# ------------------------------------------------------------ logging


def test_loggable_masks_password() -> None:
    assert loggable(only_command(b"PASS hunter2\r\n")) == "PASS ****"
    assert loggable(only_command(b"pass hunter2\r\n")) == "PASS ****"
    assert loggable(only_command(b"ACCT 12345\r\n")) == "ACCT ****"


def test_loggable_masks_even_empty_password() -> None:
    assert loggable(only_command(b"PASS\r\n")) == "PASS ****"


def test_loggable_plain_command() -> None:
    assert loggable(only_command(b"RETR /pub/a file.txt\r\n")) == "RETR /pub/a file.txt"


def test_loggable_without_argument_has_no_trailing_space() -> None:
    assert loggable(only_command(b"PASV\r\n")) == "PASV"


def test_loggable_escapes_undecodable_bytes() -> None:
    assert loggable(only_command(b"CWD caf\xe9\r\n")) == "CWD caf\\xe9"


def test_loggable_keeps_utf8() -> None:
    assert loggable(only_command("CWD café\r\n".encode())) == "CWD café"


def test_loggable_escapes_control_characters() -> None:
    assert loggable(only_command(b"CWD a\rb\x1b[2J\r\n")) == "CWD a\\x0db\\x1b[2J"


def test_discarded_line_ending_at_the_start_of_a_chunk() -> None:
    # The overlong line's LF can be the first byte of the next read: the
    # command after it must survive, and nothing before it may leak through.
    parser = CommandParser(max_line_length=5)
    assert summary(parser.feed(b"NOOP 12345")) == [(500, "Command line too long")]
    assert summary(parser.feed(b"\nNOOP\r\n")) == [Command(b"NOOP", b"", b"NOOP\r\n")]


def test_discarded_tail_with_bare_lf_leaves_nothing_behind() -> None:
    parser = CommandParser(max_line_length=5)
    assert summary(parser.feed(b"NOOP 12345")) == [(500, "Command line too long")]
    assert summary(parser.feed(b"ab\nQUIT\r\n")) == [Command(b"QUIT", b"", b"QUIT\r\n")]
    assert parser.buffered == 0
