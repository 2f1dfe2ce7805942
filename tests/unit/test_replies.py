"""Unit tests for the FTP reply parser and formatters."""

from __future__ import annotations

import pytest

from ftplb.proto.errors import ProtocolError
from ftplb.proto.replies import Reply, ReplyParser, format_multiline, format_reply

MALFORMED = "Service not available, malformed reply from server"


def feed_bytewise(parser: ReplyParser, data: bytes) -> list[Reply]:
    replies: list[Reply] = []
    for index in range(len(data)):
        replies.extend(parser.feed(data[index : index + 1]))
    return replies


# ------------------------------------------------------------ single-line


def test_single_line_reply() -> None:
    [reply] = ReplyParser().feed(b"226 Transfer complete.\r\n")
    assert reply.code == 226
    assert reply.lines == (b"226 Transfer complete.",)
    assert reply.raw == b"226 Transfer complete.\r\n"
    assert reply.text == b"Transfer complete."


def test_code_alone_is_a_reply() -> None:
    [reply] = ReplyParser().feed(b"226\r\n")
    assert reply.code == 226
    assert reply.lines == (b"226",)
    assert reply.text == b""


def test_code_and_space_only() -> None:
    [reply] = ReplyParser().feed(b"200 \r\n")
    assert reply.code == 200
    assert reply.text == b""


def test_bare_lf_ending() -> None:
    [reply] = ReplyParser().feed(b"200 OK\n")
    assert reply.lines == (b"200 OK",)
    assert reply.raw == b"200 OK\n"


def test_cr_inside_line_belongs_to_the_line() -> None:
    [reply] = ReplyParser().feed(b"200 a\rb\r\r\n")
    # Only the CR right before LF is part of the ending.
    assert reply.lines == (b"200 a\rb\r",)
    assert reply.text == b"a\rb\r"


def test_text_keeps_non_utf8_bytes() -> None:
    [reply] = ReplyParser().feed(b'257 "/d\xe9j\xe0\xff" created\r\n')
    assert reply.text == b'"/d\xe9j\xe0\xff" created'


def test_several_replies_in_one_feed() -> None:
    replies = ReplyParser().feed(b"150 Opening\r\n226 Done\r\n")
    assert [reply.code for reply in replies] == [150, 226]
    assert [reply.raw for reply in replies] == [b"150 Opening\r\n", b"226 Done\r\n"]


def test_partial_reply_is_buffered() -> None:
    parser = ReplyParser()
    assert parser.feed(b"220 Welc") == []
    assert parser.buffered == 8
    [reply] = parser.feed(b"ome\r\n")
    assert reply.raw == b"220 Welcome\r\n"
    assert parser.buffered == 0


def test_empty_feed_returns_nothing() -> None:
    parser = ReplyParser()
    assert parser.feed(b"") == []
    assert parser.buffered == 0


def test_preliminary_and_final() -> None:
    preliminary, final = ReplyParser().feed(b"150 Opening\r\n226 Done\r\n")
    assert preliminary.is_preliminary and not preliminary.is_final
    assert final.is_final and not final.is_preliminary


@pytest.mark.parametrize("code", [100, 199, 200, 599])
def test_code_range_bounds_accepted(code: int) -> None:
    [reply] = ReplyParser().feed(b"%d x\r\n" % code)
    assert reply.code == code


# ------------------------------------------------------------ multi-line


def test_multiline_reply() -> None:
    data = b"211-Features:\r\n EPSV\r\n UTF8\r\n211 End\r\n"
    [reply] = ReplyParser().feed(data)
    assert reply.code == 211
    assert reply.lines == (b"211-Features:", b" EPSV", b" UTF8", b"211 End")
    assert reply.raw == data
    assert reply.text == b"Features:\n EPSV\n UTF8\nEnd"


def test_multiline_middle_lines_may_start_with_other_codes() -> None:
    data = b"230-Welcome\r\n220 not the end\r\n230-still not\r\n230x nor this\r\n230 Logged in\r\n"
    [reply] = ReplyParser().feed(data)
    assert reply.code == 230
    assert len(reply.lines) == 5
    assert reply.text == b"Welcome\n220 not the end\n230-still not\n230x nor this\nLogged in"


def test_multiline_ends_at_bare_code() -> None:
    replies = ReplyParser().feed(b"211-Status\r\n data\r\n211\r\n200 next\r\n")
    assert [reply.code for reply in replies] == [211, 200]
    assert replies[0].lines[-1] == b"211"
    assert replies[0].text == b"Status\n data\n"


def test_multiline_with_empty_and_binary_middle_lines() -> None:
    data = b"250-a\r\n\r\n\xff\x00\r\n250 b\r\n"
    [reply] = ReplyParser().feed(data)
    assert reply.lines == (b"250-a", b"", b"\xff\x00", b"250 b")
    assert reply.raw == data


def test_multiline_with_mixed_line_endings() -> None:
    data = b"214-Help\n LIST\r\n214 ok\n"
    [reply] = ReplyParser().feed(data)
    assert reply.lines == (b"214-Help", b" LIST", b"214 ok")
    assert reply.raw == data


def test_multiline_is_buffered_until_complete() -> None:
    parser = ReplyParser()
    assert parser.feed(b"211-Features:\r\n EPSV\r\n") == []
    assert parser.buffered == len(b"211-Features:\r\n EPSV\r\n")
    [reply] = parser.feed(b"211 End\r\n")
    assert reply.raw == b"211-Features:\r\n EPSV\r\n211 End\r\n"
    assert parser.buffered == 0


def test_bytewise_feed_gives_same_replies() -> None:
    data = b"220 hi\r\n211-F\r\n 200 x\r\n211\r\n150 a\n226 b\r\n230-x\n\n230 y\n"
    assert feed_bytewise(ReplyParser(), data) == ReplyParser().feed(data)


# ------------------------------------------------------------ malformed


@pytest.mark.parametrize(
    "data",
    [
        b"hello\r\n",
        b"22 short\r\n",
        b"22\r\n",
        b"\r\n",
        b"\n",
        b"\n200 ok\r",
        b"2x0 bad\r\n",
        b"220x bad separator\r\n",
        b"220\tbad separator\r\n",
        b" 220 leading space\r\n",
        b"+20 sign\r\n",
        b"\xd9\xa2\xd9\xa2\xd9\xa2 arabic digits\r\n",
    ],
)
def test_bad_first_line_raises_421(data: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        ReplyParser().feed(data)
    assert caught.value.code == 421
    assert caught.value.message == f"{MALFORMED} (bad first line)"


def test_empty_line_after_a_reply_is_a_bad_first_line() -> None:
    parser = ReplyParser()
    assert len(parser.feed(b"200 ok\r\n")) == 1
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"\n")
    assert caught.value.message == f"{MALFORMED} (bad first line)"


@pytest.mark.parametrize("code", [b"000", b"099", b"600", b"999"])
def test_code_out_of_range_raises_421(code: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        ReplyParser().feed(code + b" x\r\n")
    assert caught.value.code == 421
    assert caught.value.message == f"{MALFORMED} (code out of range)"


def test_garbage_after_good_reply_raises() -> None:
    parser = ReplyParser()
    assert len(parser.feed(b"220 ok\r\n")) == 1
    with pytest.raises(ProtocolError):
        parser.feed(b"garbage\r\n")


def test_failed_parser_stays_failed() -> None:
    parser = ReplyParser()
    with pytest.raises(ProtocolError):
        parser.feed(b"bad\r\n")
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"220 fine\r\n")
    assert caught.value.code == 421
    assert caught.value.message == f"{MALFORMED} (bad first line)"
    with pytest.raises(ProtocolError) as again:
        parser.feed(b"")
    assert again.value.message == f"{MALFORMED} (bad first line)"


def test_line_at_limit_is_accepted() -> None:
    line = b"200 " + b"x" * 12
    [reply] = ReplyParser(max_line_length=16).feed(line + b"\r\n")
    assert reply.lines == (line,)


def test_line_over_limit_raises() -> None:
    with pytest.raises(ProtocolError) as caught:
        ReplyParser(max_line_length=16).feed(b"200 " + b"x" * 13 + b"\r\n")
    assert caught.value.code == 421
    assert caught.value.message == f"{MALFORMED} (line too long)"


def test_default_line_limit_is_8192() -> None:
    line = b"200 " + b"x" * 8188
    [reply] = ReplyParser().feed(line + b"\r\n")
    assert reply.lines == (line,)
    with pytest.raises(ProtocolError) as caught:
        ReplyParser().feed(line + b"x\r\n")
    assert caught.value.message == f"{MALFORMED} (line too long)"
    parser = ReplyParser()
    assert parser.feed(line + b"\r") == []
    with pytest.raises(ProtocolError) as partial:
        parser.feed(b"x")
    assert partial.value.message == f"{MALFORMED} (line too long)"


def test_default_reply_limit_is_4_mib() -> None:
    middle = b" " + b"x" * 8000 + b"\r\n"
    first, last = b"211-a\r\n", b"211 b\r\n"
    filler = 4 * 1024 * 1024 - len(first) - len(last)
    body = middle * (filler // len(middle)) + b" " * (filler % len(middle) - 2) + b"\r\n"
    [reply] = ReplyParser().feed(first + body + last)
    assert len(reply.raw) == 4 * 1024 * 1024
    with pytest.raises(ProtocolError) as caught:
        ReplyParser().feed(first + b" " + body + last)
    assert caught.value.message == f"{MALFORMED} (reply too large)"


def test_partial_line_over_limit_raises_before_lf() -> None:
    parser = ReplyParser(max_line_length=16)
    assert parser.feed(b"200 " + b"x" * 12) == []
    # The CR of a CRLF is not part of the line, so it must not trip the limit.
    assert parser.feed(b"\r") == []
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"y")
    assert caught.value.message == f"{MALFORMED} (line too long)"


def test_partial_line_two_over_limit_raises_even_ending_in_cr() -> None:
    # 17 bytes then a CR: the line is over the limit whatever follows the CR.
    with pytest.raises(ProtocolError) as caught:
        ReplyParser(max_line_length=16).feed(b"200 " + b"x" * 13 + b"\r")
    assert caught.value.message == f"{MALFORMED} (line too long)"


def test_huge_line_without_lf_raises() -> None:
    with pytest.raises(ProtocolError) as caught:
        ReplyParser().feed(b"220 " + b"A" * 100_000)
    assert caught.value.code == 421


def test_huge_middle_line_raises() -> None:
    with pytest.raises(ProtocolError):
        ReplyParser(max_line_length=100).feed(b"211-x\r\n" + b"y" * 101 + b"\r\n211 z\r\n")


def test_reply_over_size_limit_raises() -> None:
    parser = ReplyParser(max_line_length=100, max_reply_bytes=64)
    parser.feed(b"211-start\r\n")
    with pytest.raises(ProtocolError) as caught:
        for _ in range(20):
            parser.feed(b" line\r\n")
    assert caught.value.code == 421
    assert caught.value.message == f"{MALFORMED} (reply too large)"


def test_open_reply_exactly_at_size_limit_is_held() -> None:
    parser = ReplyParser(max_line_length=100, max_reply_bytes=10)
    assert parser.feed(b"211-abcd\r\n") == []
    assert parser.buffered == 10
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"2")
    assert caught.value.message == f"{MALFORMED} (reply too large)"


def test_complete_reply_one_byte_over_size_limit_raises() -> None:
    data = b"211-a\r\n211 b\r\n"
    with pytest.raises(ProtocolError) as caught:
        ReplyParser(max_reply_bytes=len(data) - 1).feed(data)
    assert caught.value.message == f"{MALFORMED} (reply too large)"


def test_many_replies_may_exceed_size_limit_together() -> None:
    # The size limit applies to one reply, not to one feed.
    data = b"200 ok\r\n" * 100
    replies = ReplyParser(max_line_length=100, max_reply_bytes=64).feed(data)
    assert len(replies) == 100


def test_reply_exactly_at_size_limit_is_accepted() -> None:
    data = b"211-a\r\n211 b\r\n"
    [reply] = ReplyParser(max_reply_bytes=len(data)).feed(data)
    assert reply.raw == data


@pytest.mark.parametrize(("max_line", "max_reply"), [(0, 100), (2, 100), (100, 3)])
def test_limits_must_be_sane(max_line: int, max_reply: int) -> None:
    with pytest.raises(ValueError) as caught:
        ReplyParser(max_line_length=max_line, max_reply_bytes=max_reply)
    assert str(caught.value) == "limits too small to hold any reply"


def test_smallest_limits_hold_the_smallest_reply() -> None:
    assert [reply.raw for reply in ReplyParser(3, 4).feed(b"200\n")] == [b"200\n"]


# ------------------------------------------------------------ formatting


def test_format_reply_single_line() -> None:
    assert format_reply(226, "Transfer complete.") == b"226 Transfer complete.\r\n"


def test_format_reply_utf8() -> None:
    assert format_reply(257, '"/déjà" created') == '257 "/déjà" created\r\n'.encode()


def test_format_reply_replaces_what_utf8_cannot_encode() -> None:
    # Paths decoded with surrogateescape may reach a reply; they must not raise.
    assert format_reply(550, "a\udcffb") == b"550 a?b\r\n"
    assert format_reply(550, "a\udcff\nb") == b"550-a?\r\n550 b\r\n"


def test_format_reply_multiline() -> None:
    assert format_reply(211, "Status\nall good\nEnd") == b"211-Status\r\nall good\r\n211 End\r\n"


@pytest.mark.parametrize("separator", ["\n", "\r\n", "\r"])
def test_format_reply_line_breaks(separator: str) -> None:
    assert format_reply(200, f"a{separator}b") == b"200-a\r\n200 b\r\n"


def test_format_reply_indents_middle_lines_that_would_end_it() -> None:
    data = format_reply(211, "a\n211 b\n211\n211-c\nend")
    assert data == b"211-a\r\n 211 b\r\n 211\r\n211-c\r\n211 end\r\n"
    [reply] = ReplyParser().feed(data)
    assert len(reply.lines) == 5


def test_format_multiline() -> None:
    data = format_multiline(211, b"Features:", [b" EPSV", b" UTF8"], b"End")
    assert data == b"211-Features:\r\n EPSV\r\n UTF8\r\n211 End\r\n"


def test_format_multiline_without_middle() -> None:
    assert format_multiline(211, b"a", [], b"b") == b"211-a\r\n211 b\r\n"


@pytest.mark.parametrize(
    ("middle", "message"),
    [
        (b"211 End", "middle line would end the reply early: b'211 End'"),
        (b"211", "middle line would end the reply early: b'211'"),
        (b"a\r\nb", "reply line contains a line break: b'a\\r\\nb'"),
        (b"a\nb", "reply line contains a line break: b'a\\nb'"),
        (b"a\rb", "reply line contains a line break: b'a\\rb'"),
    ],
)
def test_format_multiline_rejects_unsafe_middle(middle: bytes, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        format_multiline(211, b"a", [middle], b"b")
    assert str(caught.value) == message


def test_format_multiline_rejects_line_breaks_in_first_and_last() -> None:
    with pytest.raises(ValueError) as first:
        format_multiline(211, b"a\n", [], b"b")
    assert str(first.value) == "reply line contains a line break: b'a\\n'"
    with pytest.raises(ValueError) as last:
        format_multiline(211, b"a", [], b"b\r\n")
    assert str(last.value) == "reply line contains a line break: b'b\\r\\n'"


@pytest.mark.parametrize("code", [99, 600, 0, -200, True, 200.0, "200"])
def test_format_rejects_bad_codes(code: int) -> None:
    message = f"reply code must be 100..599, not {code!r}"
    with pytest.raises(ValueError) as single:
        format_reply(code, "x")
    assert str(single.value) == message
    with pytest.raises(ValueError) as multi:
        format_multiline(code, b"a", [], b"b")
    assert str(multi.value) == message


@pytest.mark.parametrize("code", [100, 599])
def test_format_accepts_the_code_range_bounds(code: int) -> None:
    assert format_reply(code, "x") == b"%d x\r\n" % code
    assert format_multiline(code, b"a", [], b"b") == b"%d-a\r\n%d b\r\n" % (code, code)
