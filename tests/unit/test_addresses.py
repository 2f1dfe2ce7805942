"""Unit tests for the 227/229 replies and the PORT/EPRT/EPSV arguments."""

from __future__ import annotations

import pytest

from ftplb.proto.addresses import (
    HostPort,
    format_eprt_arg,
    format_epsv_reply,
    format_pasv_reply,
    format_port_arg,
    kernel_host,
    parse_eprt_arg,
    parse_epsv_arg,
    parse_epsv_reply,
    parse_pasv_reply,
    parse_port_arg,
    unmap_ipv4,
)
from ftplb.proto.errors import ProtocolError


def assert_protocol_error(function: object, arg: bytes, code: int, message: str | None) -> None:
    assert callable(function)
    with pytest.raises(ProtocolError) as caught:
        function(arg)
    assert caught.value.code == code
    if message is not None:
        assert caught.value.message == message


# ------------------------------------------------------------ HostPort


def test_hostport_ipv4() -> None:
    address = HostPort.of("192.0.2.7", 21)
    assert address == HostPort("192.0.2.7", 21)
    assert address.family == 1


def test_hostport_ipv6_is_compressed() -> None:
    address = HostPort.of("2001:DB8:0:0:0:0:0:1", 2121)
    assert address.host == "2001:db8::1"
    assert address.family == 2


def test_hostport_unmaps_ipv4_mapped() -> None:
    address = HostPort.of("::ffff:127.0.0.1", 5000)
    assert address == HostPort("127.0.0.1", 5000)
    assert address.family == 1


def test_hostport_mapped_in_hex_form() -> None:
    assert HostPort.of("::ffff:7f00:1", 1).host == "127.0.0.1"


@pytest.mark.parametrize(
    "host", ["", "localhost", "1.2.3", "1.2.3.256", "01.2.3.4", " 1.2.3.4", "::g", "1.2.3.4:21"]
)
def test_hostport_rejects_bad_hosts(host: str) -> None:
    with pytest.raises(ValueError):
        HostPort.of(host, 21)


def test_hostport_rejects_non_string_host() -> None:
    with pytest.raises(ValueError):
        HostPort.of(2130706433, 21)  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [0, -1, 65536, True, 21.0])
def test_hostport_rejects_bad_ports(port: int) -> None:
    with pytest.raises(ValueError) as caught:
        HostPort.of("127.0.0.1", port)
    assert str(caught.value) == f"port must be 1..65535, not {port!r}"


@pytest.mark.parametrize("port", [1, 65535])
def test_hostport_port_bounds(port: int) -> None:
    assert HostPort.of("127.0.0.1", port).port == port


def test_unmap_ipv4() -> None:
    assert unmap_ipv4("::ffff:10.1.2.3") == "10.1.2.3"
    assert unmap_ipv4("::1") == "::1"
    assert unmap_ipv4("10.1.2.3") == "10.1.2.3"
    assert unmap_ipv4("FE80:0::1") == "fe80::1"
    with pytest.raises(ValueError):
        unmap_ipv4("not an address")


# ------------------------------------------------------------ 227


@pytest.mark.parametrize(
    "text",
    [
        b"Entering Passive Mode (127,0,0,1,156,64).",
        b"Entering Passive Mode (127,0,0,1,156,64)",
        b"Entering Passive Mode 127,0,0,1,156,64",
        b"=127,0,0,1,156,64",
        b"127,0,0,1,156,64",
        b"Entering Passive Mode (127,000,000,001,156,064).",
        b"227 Entering Passive Mode (127,0,0,1,156,64).",  # the whole line works too
        b"Mode 2 of 3 (127,0,0,1,156,64)",  # stray numbers before the run
        b"Multi\nline (127,0,0,1,156,64)\nEnd",
    ],
)
def test_parse_pasv_reply(text: bytes) -> None:
    assert parse_pasv_reply(text) == HostPort("127.0.0.1", 156 * 256 + 64)


def test_parse_pasv_reply_takes_first_run() -> None:
    text = b"(10,0,0,1,0,21) then (10,0,0,2,0,22)"
    assert parse_pasv_reply(text) == HostPort("10.0.0.1", 21)


def test_parse_pasv_reply_max_port() -> None:
    assert parse_pasv_reply(b"(1,2,3,4,255,255)").port == 65535


def test_parse_pasv_reply_zero_address_is_syntactically_valid() -> None:
    # Whether 0.0.0.0 is usable is the session's call, not the parser's.
    assert parse_pasv_reply(b"(0,0,0,0,4,0)") == HostPort("0.0.0.0", 1024)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"Entering Passive Mode",
        b"Entering Passive Mode (127,0,0,1,156)",
        b"Entering Passive Mode (127,0,0,1,156,)",
        b"Entering Passive Mode (127,0,0,1,,64)",
        b"Entering Passive Mode (256,0,0,1,156,64)",
        b"Entering Passive Mode (127,0,0,1,256,64)",
        b"Entering Passive Mode (127,0,0,1,0,0)",
        b"Entering Passive Mode (127,0,0,1,156,6400)",
        b"Entering Passive Mode (1270,0,0,1,156,64)",
        b"Entering Passive Mode (1234,1,2,3,4,5)",  # no run may start inside a number
        b"Entering Passive Mode (127, 0, 0, 1, 156, 64)",
        b"Entering Passive Mode (127,0,0,1,-1,64)",
        b"Entering Passive Mode (\xd9\xa1,0,0,1,156,64)",
        b"9" * 10_000,
    ],
)
def test_parse_pasv_reply_rejects(text: bytes) -> None:
    assert_protocol_error(
        parse_pasv_reply, text, 425, "Can't open data connection: unreadable 227 reply from server"
    )


def test_format_pasv_reply() -> None:
    address = HostPort("127.0.0.1", 40000)
    assert format_pasv_reply(address) == b"227 Entering Passive Mode (127,0,0,1,156,64).\r\n"


def test_format_pasv_reply_rejects_ipv6() -> None:
    with pytest.raises(ValueError) as caught:
        format_pasv_reply(HostPort("::1", 40000))
    assert str(caught.value) == "PASV and PORT carry IPv4 addresses only, not ::1"


# ------------------------------------------------------------ 229


@pytest.mark.parametrize(
    ("text", "port"),
    [
        (b"Entering Extended Passive Mode (|||6446|)", 6446),
        (b"Entering Extended Passive Mode (|||6446|).", 6446),
        (b"(!!!1!)", 1),
        (b"(~~~65535~)", 65535),
        (b"(###00021#)", 21),
        (b"()))6446))", 6446),
        (b"EPSV (see RFC 2428) ok (|||2121|)", 2121),
        (b"229 Entering Extended Passive Mode (|||6446|)", 6446),
    ],
)
def test_parse_epsv_reply(text: bytes, port: int) -> None:
    assert parse_epsv_reply(text) == port


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"Entering Extended Passive Mode",
        b"Entering Extended Passive Mode (|||0|)",
        b"Entering Extended Passive Mode (|||65536|)",
        b"Entering Extended Passive Mode (|||123456|)",
        b"Entering Extended Passive Mode (|||6446)",
        b"Entering Extended Passive Mode (||6446|)",
        b"Entering Extended Passive Mode (|!|6446|)",
        b"Entering Extended Passive Mode (|||6446!)",
        b"Entering Extended Passive Mode (~~~6446~~)",
        b"Entering Extended Passive Mode (|||6446|",
        b"Entering Extended Passive Mode (|||-1|)",
        b"Entering Extended Passive Mode (|||+21|)",
        b"Entering Extended Passive Mode (|||  21|)",
        b"Entering Extended Passive Mode (|||64a6|)",
        b"Entering Extended Passive Mode (|||0x21|)",
        b"Entering Extended Passive Mode (   6446 )",
        b"Entering Extended Passive Mode (11164461)",
        b"Entering Extended Passive Mode (\x7f\x7f\x7f6446\x7f)",
        b"Entering Extended Passive Mode (|1|127.0.0.1|6446|)",
        b"6446",
    ],
)
def test_parse_epsv_reply_rejects(text: bytes) -> None:
    assert_protocol_error(
        parse_epsv_reply, text, 425, "Can't open data connection: unreadable 229 reply from server"
    )


def test_format_epsv_reply() -> None:
    assert format_epsv_reply(6446) == b"229 Entering Extended Passive Mode (|||6446|)\r\n"


@pytest.mark.parametrize("port", [0, 65536, -5])
def test_format_epsv_reply_rejects_bad_port(port: int) -> None:
    with pytest.raises(ValueError):
        format_epsv_reply(port)


# ------------------------------------------------------------ PORT


@pytest.mark.parametrize(
    "arg",
    [
        b"127,0,0,1,156,64",
        b" 127,0,0,1,156,64",
        b"127,0,0,1,156,64  ",
        b"127,000,0,001,156,064",
        b"0127,0,0,1,156,64",  # plain decimal, leading zeros included
    ],
)
def test_parse_port_arg(arg: bytes) -> None:
    assert parse_port_arg(arg) == HostPort("127.0.0.1", 40000)


BAD_PORT = "Syntax error in PORT arguments"


@pytest.mark.parametrize(
    "arg",
    [
        b"",
        b"127,0,0,1,156",
        b"127,0,0,1,156,64,1",
        b"127,0,0,1,156,",
        b",127,0,0,1,156",
        b"127,0,,1,156,64",
        b"256,0,0,1,156,64",
        b"127,0,0,1,256,64",
        b"127,0,0,1,0,0",
        b"127,0,0,1,+1,64",
        b"127,0,0,1,-1,64",
        b"127, 0,0,1,156,64",
        b"127,0,0,1,156,64\r",
        b"(127,0,0,1,156,64)",
        b"127.0.0.1,156,64",
        b"127,0,0,1,0x9c,64",
        b"\xd9\xa1,0,0,1,156,64",
        b"1" * 5000 + b",0,0,1,156,64",
        b"X127,0,0,1,156,64X",  # only spaces are trimmed
        b"\t127,0,0,1,156,64",
    ],
)
def test_parse_port_arg_rejects(arg: bytes) -> None:
    assert_protocol_error(parse_port_arg, arg, 501, BAD_PORT)


def test_format_port_arg() -> None:
    assert format_port_arg(HostPort("10.20.30.40", 65535)) == b"10,20,30,40,255,255"
    assert format_port_arg(HostPort("10.20.30.40", 1)) == b"10,20,30,40,0,1"


def test_format_port_arg_rejects_ipv6_and_bad_port() -> None:
    with pytest.raises(ValueError) as ipv6:
        format_port_arg(HostPort("::1", 5000))
    assert str(ipv6.value) == "PASV and PORT carry IPv4 addresses only, not ::1"
    with pytest.raises(ValueError) as port:
        format_port_arg(HostPort("127.0.0.1", 0))
    assert str(port.value) == "port must be 1..65535, not 0"


# ------------------------------------------------------------ EPRT


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (b"|1|132.235.1.2|6275|", HostPort("132.235.1.2", 6275)),
        (b"|2|1080::8:800:200C:417A|5282|", HostPort("1080::8:800:200c:417a", 5282)),
        (b"|2|::1|65535|", HostPort("::1", 65535)),
        (b"|2|::ffff:127.0.0.1|5000|", HostPort("127.0.0.1", 5000)),
        (b"!1!10.0.0.1!21!", HostPort("10.0.0.1", 21)),
        (b"  |1|10.0.0.1|21|  ", HostPort("10.0.0.1", 21)),
        (b"|1|10.0.0.1|00021|", HostPort("10.0.0.1", 21)),
        (b"|01|10.0.0.1|21|", HostPort("10.0.0.1", 21)),
        (b"|002|::1|21|", HostPort("::1", 21)),
        (b"~1~10.0.0.1~21~", HostPort("10.0.0.1", 21)),  # the last printable delimiter
        (b"X1X10.0.0.1X21X", HostPort("10.0.0.1", 21)),
    ],
)
def test_parse_eprt_arg(arg: bytes, expected: HostPort) -> None:
    address = parse_eprt_arg(arg)
    assert address == expected
    assert address.family == (2 if ":" in expected.host else 1)


BAD_EPRT = "Syntax error in EPRT arguments"
UNSUPPORTED = "Network protocol not supported, use (1,2)"


@pytest.mark.parametrize(
    "arg",
    [
        b"",
        b"|",
        b"|1|10.0.0.1|21",
        b"1|10.0.0.1|21|",
        b"|1|10.0.0.1|21||",
        b"|1|10.0.0.1|21|x",
        b"|1|10.0.0.1|",
        b"|1|10.0.0.1||",
        b"||10.0.0.1|21|",
        b"|x|10.0.0.1|21|",
        b"|+1|10.0.0.1|21|",
        b"|1|::1|21|",  # family mismatch
        b"|2|10.0.0.1|21|",  # family mismatch
        b"|1|10.0.0.256|21|",
        b"|1|010.0.0.1|21|",
        b"|1| 10.0.0.1|21|",
        b"|1|localhost|21|",
        b"|2|fe80::1%eth0|21|",
        b"|2|::1\xff|21|",
        b"|1|10.0.0.1|0|",
        b"|1|10.0.0.1|65536|",
        b"|1|10.0.0.1|-21|",
        b"|1|10.0.0.1|+21|",
        b"|1|10.0.0.1| 21|",
        b"|1|10.0.0.1|" + b"9" * 5000 + b"|",
        b"1110.0.0.11211",  # a digit cannot be the delimiter
        b" |1|10.0.0.1|21| x",
        b"\x7f1\x7f10.0.0.1\x7f21\x7f",
        b"\xff1\xff10.0.0.1\xff21\xff",
        b"\t|1|10.0.0.1|21|",  # only spaces are trimmed
    ],
)
def test_parse_eprt_arg_rejects(arg: bytes) -> None:
    assert_protocol_error(parse_eprt_arg, arg, 501, BAD_EPRT)


@pytest.mark.parametrize(
    "arg",
    [
        b"|3|10.0.0.1|21|",
        b"|0|10.0.0.1|21|",
        b"|99999999999|x|21|",
        b"|12|::1|21|",
        b"|10|10.0.0.1|21|",
        b"|20|::1|21|",
    ],
)
def test_parse_eprt_arg_unknown_protocol(arg: bytes) -> None:
    assert_protocol_error(parse_eprt_arg, arg, 522, UNSUPPORTED)


def test_format_eprt_arg() -> None:
    assert format_eprt_arg(HostPort("1.2.3.4", 5000)) == b"|1|1.2.3.4|5000|"
    assert format_eprt_arg(HostPort("::1", 5000)) == b"|2|::1|5000|"
    assert format_eprt_arg(HostPort.of("2001:db8::0:1", 21)) == b"|2|2001:db8::1|21|"


def test_format_eprt_arg_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        format_eprt_arg(HostPort("not-an-ip", 21))
    with pytest.raises(ValueError) as port:
        format_eprt_arg(HostPort("::1", 0))
    assert str(port.value) == "port must be 1..65535, not 0"
    with pytest.raises(ValueError) as scoped:
        format_eprt_arg(HostPort("fe80::1%eth0", 21))
    assert str(scoped.value) == "EPRT cannot carry a scoped address: fe80::1%eth0"


# ------------------------------------------------------------ EPSV argument


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (b"", None),
        (b"  ", None),
        (b"ALL", "ALL"),
        (b"all", "ALL"),
        (b"aLl", "ALL"),
        (b" ALL ", "ALL"),
        (b"1", 1),
        (b"2", 2),
        (b"02", 2),
    ],
)
def test_parse_epsv_arg(arg: bytes, expected: object) -> None:
    assert parse_epsv_arg(arg) == expected


@pytest.mark.parametrize("arg", [b"0", b"3", b"6", b"12", b"99999999999999999999999"])
def test_parse_epsv_arg_unknown_protocol(arg: bytes) -> None:
    assert_protocol_error(parse_epsv_arg, arg, 522, UNSUPPORTED)


@pytest.mark.parametrize(
    "arg",
    [b"AL", b"ALLL", b"ALL 1", b"-1", b"+1", b"1.0", b"|1|", b"\xd9\xa1", b"1 2", b"X", b"\t1"],
)
def test_parse_epsv_arg_rejects(arg: bytes) -> None:
    assert_protocol_error(parse_epsv_arg, arg, 501, "Syntax error in EPSV arguments")


@pytest.mark.parametrize(
    ("reported", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("::ffff:127.0.0.100", "127.0.0.100"),
        ("2001:db8::1", "2001:db8::1"),
    ],
)
def test_kernel_host_unmaps_only_ipv4_mapped(reported: str, canonical: str) -> None:
    assert kernel_host(reported) == canonical
    assert kernel_host(reported) == unmap_ipv4(reported)
