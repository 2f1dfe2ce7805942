"""Property tests of the pure FTP parsers: split invariance, robustness, round trips."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftplb.proto.addresses import (
    HostPort,
    format_eprt_arg,
    format_epsv_reply,
    format_pasv_reply,
    format_port_arg,
    parse_eprt_arg,
    parse_epsv_arg,
    parse_epsv_reply,
    parse_pasv_reply,
    parse_port_arg,
)
from ftplb.proto.commands import Command, CommandParser
from ftplb.proto.errors import ProtocolError
from ftplb.proto.replies import Reply, ReplyParser, format_multiline, format_reply

# Sized so that the whole file runs in a few seconds; CI can raise them with a
# hypothesis profile.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROBUST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------ helpers


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def feed_replies(parser: ReplyParser, pieces: list[bytes]) -> tuple[list[Reply], bool]:
    """Replies gathered over all pieces, and whether the parser raised."""
    replies: list[Reply] = []
    try:
        for piece in pieces:
            replies.extend(parser.feed(piece))
    except ProtocolError as error:
        assert error.code == 421
        return replies, True
    return replies, False


def feed_commands(parser: CommandParser, pieces: list[bytes]) -> list[object]:
    results: list[object] = []
    for piece in pieces:
        for item in parser.feed(piece):
            assert isinstance(item, Command | ProtocolError)
            # Exceptions compare by identity, so compare what they say.
            results.append((item.code, item.message) if isinstance(item, ProtocolError) else item)
    return results


def assert_only_an_open_reply_is_buffered(parser: ReplyParser, data: bytes) -> None:
    """What the parser holds back is a partial line, or a multi-line reply still open."""
    held = data[len(data) - parser.buffered :]
    if b"\n" in held:
        assert held[3:4] == b"-", held


_TELNET_COMMAND_BYTES = range(0xF0, 0xFF)
_LINE_TOO_LONG = (500, "Command line too long")
_UNRECOGNIZED = (500, "Syntax error, command unrecognized")


def expected_command(raw: bytes) -> object:
    """What one LF-terminated line must parse to, by the rules of RFC 959 and commands.py.

    The line ending (LF, or CRLF) is dropped; leading Telnet signals (IAC and a
    command byte, or a bare Data Mark) are skipped; a line with nothing else is
    ignored (None); then the verb is up to 16 letters and the argument is
    every byte after the first space.
    """
    body = raw[:-1]
    if body.endswith(b"\r"):
        body = body[:-1]
    while True:
        if len(body) >= 2 and body[0] == 0xFF and body[1] in _TELNET_COMMAND_BYTES:
            body = body[2:]
        elif body[:1] == b"\xf2":
            body = body[1:]
        else:
            break
    if not body:
        return None
    verb, _, arg = body.partition(b" ")
    if not verb.isalpha() or len(verb) > 16:
        return _UNRECOGNIZED
    return Command(verb.upper(), arg, raw)


def expected_commands(stream: bytes, max_line: int) -> list[object]:
    """What ``CommandParser(max_line).feed(stream)`` must return, errors as (code, message)."""
    *lines, partial = stream.split(b"\n")
    results: list[object] = []
    for line in lines:
        item = _LINE_TOO_LONG if len(line) > max_line else expected_command(line + b"\n")
        if item is not None:
            results.append(item)
    if len(partial) > max_line:
        results.append(_LINE_TOO_LONG)
    return results


def would_terminate(line: bytes, code: int) -> bool:
    prefix = str(code).encode()
    return line == prefix or line.startswith(prefix + b" ")


# ------------------------------------------------------------ strategies

codes = st.integers(100, 599)
line_bytes = st.binary(max_size=40).filter(lambda line: b"\n" not in line and b"\r" not in line)
endings = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def reply_streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, tuple[bytes, ...]]]]:
    """A valid stream of replies, with the code and lines each one must parse to."""
    stream = b""
    expected: list[tuple[int, tuple[bytes, ...]]] = []
    for _ in range(draw(st.integers(1, 5))):
        code = draw(codes)
        prefix = str(code).encode()
        if draw(st.booleans()):
            text = draw(line_bytes)
            first = prefix + (b" " + text if text or draw(st.booleans()) else b"")
            lines: tuple[bytes, ...] = (first,)
        else:
            first = prefix + b"-" + draw(line_bytes)
            middle = [
                line for line in draw(st.lists(line_bytes)) if not would_terminate(line, code)
            ]
            last = prefix + (b" " + draw(line_bytes) if draw(st.booleans()) else b"")
            lines = (first, *middle, last)
        for line in lines:
            stream += line + draw(endings)
        expected.append((code, lines))
    return stream, expected


ipv4_hosts = st.ip_addresses(v=4).map(str)
ipv6_hosts = st.ip_addresses(v=6).map(str)
ports = st.integers(1, 65535)
ipv4_hostports = st.builds(HostPort.of, ipv4_hosts, ports)
any_hostports = st.builds(HostPort.of, ipv4_hosts | ipv6_hosts, ports)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid form with a few bytes replaced, inserted or deleted."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if action == "insert" or position == len(data):
            data.insert(position, byte)
        elif action == "replace":
            data[position] = byte
        else:
            del data[position]
    return bytes(data)


valid_address_forms = st.one_of(
    ipv4_hostports.map(format_port_arg),
    any_hostports.map(format_eprt_arg),
    ipv4_hostports.map(format_pasv_reply),
    ports.map(format_epsv_reply),
    st.sampled_from([b"ALL", b"1", b"2", b""]),
)
address_inputs = st.binary(max_size=80) | mutated(valid_address_forms)


# ------------------------------------------------------------ (1) split invariance


@FAST
@given(reply_streams(), st.lists(st.integers(min_value=0), max_size=20))
def test_reply_stream_split_anywhere_parses_the_same(
    stream_and_expected: tuple[bytes, list[tuple[int, tuple[bytes, ...]]]], cuts: list[int]
) -> None:
    stream, expected = stream_and_expected
    whole, whole_failed = feed_replies(ReplyParser(), [stream])
    pieces, pieces_failed = feed_replies(ReplyParser(), split_at(stream, cuts))
    assert not whole_failed and not pieces_failed
    assert pieces == whole
    assert [(reply.code, reply.lines) for reply in whole] == expected
    assert b"".join(reply.raw for reply in whole) == stream


@FAST
@given(reply_streams())
def test_reply_stream_byte_by_byte_parses_the_same(
    stream_and_expected: tuple[bytes, list[tuple[int, tuple[bytes, ...]]]],
) -> None:
    stream, expected = stream_and_expected
    parser = ReplyParser()
    bytewise = [
        reply for index in range(len(stream)) for reply in parser.feed(stream[index : index + 1])
    ]
    assert [(reply.code, reply.lines) for reply in bytewise] == expected
    assert bytewise == ReplyParser().feed(stream)
    assert parser.buffered == 0


@ROBUST
@given(
    st.tuples(st.binary(max_size=300), st.none()) | reply_streams(),
    st.lists(st.integers(min_value=0), max_size=20),
    st.integers(3, 40),
    st.integers(4, 200),
)
def test_reply_errors_do_not_depend_on_the_split(
    stream_and_expected: tuple[bytes, list[tuple[int, tuple[bytes, ...]]] | None],
    cuts: list[int],
    max_line: int,
    max_reply: int,
) -> None:
    stream, expected = stream_and_expected
    parser = ReplyParser(max_line, max_reply)
    whole, whole_failed = feed_replies(parser, [stream])
    pieces, pieces_failed = feed_replies(ReplyParser(max_line, max_reply), split_at(stream, cuts))
    assert whole_failed == pieces_failed
    if not whole_failed:
        assert pieces == whole
        # Within the limits, a valid stream parses in full, and any stream
        # leaves nothing behind but the reply in progress.
        if expected is not None:
            assert [(reply.code, reply.lines) for reply in whole] == expected
        assert b"".join(reply.raw for reply in whole) == stream[: len(stream) - parser.buffered]
        assert_only_an_open_reply_is_buffered(parser, stream)


command_lines = st.one_of(
    st.sampled_from(
        [b"USER bob", b"PASS x y", b"retr  a b ", b"\xff\xf4\xff\xf2ABOR", b"", b"9X", b"\xf2NOOP"]
    ),
    st.binary(max_size=30).filter(lambda line: b"\n" not in line),
)
command_streams = st.lists(st.tuples(command_lines, endings), max_size=12).map(
    lambda lines: b"".join(line + ending for line, ending in lines)
) | st.binary(max_size=200)


@FAST
@given(command_streams, st.lists(st.integers(min_value=0), max_size=20), st.integers(1, 40))
def test_command_stream_split_anywhere_parses_the_same(
    stream: bytes, cuts: list[int], max_line: int
) -> None:
    whole = feed_commands(CommandParser(max_line), [stream])
    pieces = feed_commands(CommandParser(max_line), split_at(stream, cuts))
    bytewise = feed_commands(
        CommandParser(max_line), [stream[index : index + 1] for index in range(len(stream))]
    )
    assert whole == expected_commands(stream, max_line)
    assert pieces == whole
    assert bytewise == whole


@FAST
@given(st.lists(st.tuples(command_lines, endings), max_size=12))
def test_commands_keep_their_raw_lines(lines: list[tuple[bytes, bytes]]) -> None:
    stream = b"".join(line + ending for line, ending in lines)
    results = feed_commands(CommandParser(10_000), [stream])
    # One result per line, in order, except for lines that hold no command.
    expected = [expected_command(line + ending) for line, ending in lines]
    assert results == [item for item in expected if item is not None]
    for command in results:
        if isinstance(command, Command):
            assert command.verb.isalpha() and command.verb.isupper()
            assert command.raw.rstrip(b"\r\n").endswith(command.arg)


# ------------------------------------------------------------ (2) robustness


@ROBUST
@given(st.binary(max_size=400) | mutated(reply_streams().map(lambda pair: pair[0])))
def test_reply_parser_only_raises_protocol_error(data: bytes) -> None:
    parser = ReplyParser(max_line_length=64, max_reply_bytes=256)
    try:
        replies = parser.feed(data)
    except ProtocolError as error:
        assert error.code == 421
        return
    for reply in replies:
        assert 100 <= reply.code <= 599
        assert reply.raw
    assert b"".join(reply.raw for reply in replies) == data[: len(data) - parser.buffered]
    assert_only_an_open_reply_is_buffered(parser, data)


@ROBUST
@given(st.binary(max_size=400) | mutated(command_streams))
def test_command_parser_never_raises(data: bytes) -> None:
    results = feed_commands(CommandParser(max_line_length=32), [data])
    assert results == expected_commands(data, 32)
    for item in results:
        if isinstance(item, Command):
            assert 1 <= len(item.verb) <= 16


PARSERS: list[tuple[Callable[[bytes], object], set[int]]] = [
    (parse_pasv_reply, {425}),
    (parse_epsv_reply, {425}),
    (parse_port_arg, {501}),
    (parse_eprt_arg, {501, 522}),
    (parse_epsv_arg, {501, 522}),
]


@ROBUST
@given(address_inputs)
def test_address_parsers_only_raise_protocol_error(data: bytes) -> None:
    for parse, allowed_codes in PARSERS:
        try:
            result = parse(data)
        except ProtocolError as error:
            assert error.code in allowed_codes
            continue
        if isinstance(result, HostPort):
            assert HostPort.of(result.host, result.port) == result
            assert 1 <= result.port <= 65535


# ------------------------------------------------------------ (3) round trips


@FAST
@given(ipv4_hosts | ipv6_hosts, ports)
def test_hostport_is_canonical(host: str, port: int) -> None:
    address = HostPort.of(host, port)
    assert HostPort.of(address.host, address.port) == address
    parsed = ipaddress.ip_address(address.host)
    assert str(parsed) == address.host
    original = ipaddress.ip_address(host)
    mapped = getattr(original, "ipv4_mapped", None)
    assert parsed == (mapped or original)
    assert address.family == (1 if parsed.version == 4 else 2)


@FAST
@given(ipv4_hosts, ports)
def test_ipv4_mapped_is_unmapped(host: str, port: int) -> None:
    assert HostPort.of(f"::ffff:{host}", port) == HostPort.of(host, port)


@FAST
@given(ipv4_hostports)
def test_port_round_trip(address: HostPort) -> None:
    assert parse_port_arg(format_port_arg(address)) == address


@FAST
@given(any_hostports)
def test_eprt_round_trip(address: HostPort) -> None:
    assert parse_eprt_arg(format_eprt_arg(address)) == address


@FAST
@given(ipv4_hostports)
def test_227_round_trip_through_reply_parser(address: HostPort) -> None:
    [reply] = ReplyParser().feed(format_pasv_reply(address))
    assert reply.code == 227
    assert parse_pasv_reply(reply.text) == address


@FAST
@given(ports)
def test_229_round_trip_through_reply_parser(port: int) -> None:
    [reply] = ReplyParser().feed(format_epsv_reply(port))
    assert reply.code == 229
    assert parse_epsv_reply(reply.text) == port


@FAST
@given(st.sampled_from([None, "ALL", 1, 2]))
def test_epsv_arg_round_trip(value: str | int | None) -> None:
    arg = b"" if value is None else str(value).encode()
    assert parse_epsv_arg(arg) == value


text_lines = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30)


@FAST
@given(codes, st.lists(text_lines, min_size=1, max_size=6))
def test_format_reply_round_trip(code: int, lines: list[str]) -> None:
    data = format_reply(code, "\n".join(lines))
    parser = ReplyParser()
    [reply] = parser.feed(data)
    assert parser.buffered == 0
    assert reply.code == code
    assert reply.raw == data
    assert len(reply.lines) == len(lines)
    encoded = [line.encode() for line in lines]
    # Middle lines that would read as the end are indented by one space.
    middle = [b" " + line if would_terminate(line, code) else line for line in encoded[1:-1]]
    expected = [encoded[0], *middle, encoded[-1]] if len(encoded) > 1 else encoded
    assert reply.text == b"\n".join(expected)


@FAST
@given(
    codes,
    line_bytes,
    st.lists(line_bytes, max_size=6),
    line_bytes,
)
def test_format_multiline_round_trip(
    code: int, first: bytes, middle: list[bytes], last: bytes
) -> None:
    middle = [line for line in middle if not would_terminate(line, code)]
    data = format_multiline(code, first, middle, last)
    [reply] = ReplyParser().feed(data)
    prefix = str(code).encode()
    assert reply.code == code
    assert reply.lines == (prefix + b"-" + first, *middle, prefix + b" " + last)
    assert reply.raw == data
