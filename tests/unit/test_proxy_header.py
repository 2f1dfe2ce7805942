"""Unit tests of the PROXY protocol header parser and builder (versions 1 and 2).

The known headers are the examples of HAProxy's proxy-protocol.txt, and a
version 2 header as HAProxy sends it (``send-proxy-v2``) for 172.19.0.1:42578
to 172.19.0.3:80.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftplb.proto.addresses import HostPort
from ftplb.proto.proxy_header import (
    NEED_MORE,
    PP2_TYPE_SSL,
    V2_SIGNATURE,
    Malformed,
    ProxyHeader,
    ProxyProblem,
    TlsFacts,
    build_v1,
    build_v2,
    parse_proxy_header,
)

HAPROXY_V2_TCP4 = bytes.fromhex("0d0a0d0a000d0a515549540a 2111000c ac130001 ac130003 a652 0050")


def v2(version_command: int, family: int, body: bytes, announced: int | None = None) -> bytes:
    size = len(body) if announced is None else announced
    return V2_SIGNATURE + struct.pack("!BBH", version_command, family, size) + body


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


TCP4_BODY = bytes([192, 0, 2, 1, 192, 0, 2, 2]) + struct.pack("!HH", 40000, 21)


# ------------------------------------------------------------ version 1


def test_v1_tcp4_from_the_spec() -> None:
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nUSER x\r\n"
    parsed = parse_proxy_header(data)
    assert parsed == ProxyHeader(
        1, HostPort("192.168.0.1", 56324), HostPort("192.168.0.11", 443), len(data) - 8
    )
    assert data[parsed.length :] == b"USER x\r\n"


def test_v1_tcp6_longest_header_from_the_spec() -> None:
    full = ":".join(["ffff"] * 8)
    data = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(data) == 104
    assert parse_proxy_header(data) == ProxyHeader(
        1, HostPort(full, 65535), HostPort(full, 65535), 104
    )


def test_v1_tcp6_ipv4_mapped_is_unmapped() -> None:
    parsed = parse_proxy_header(b"PROXY TCP6 ::ffff:10.0.0.1 ::1 1000 21\r\n")
    assert isinstance(parsed, ProxyHeader)
    assert parsed.source == HostPort("10.0.0.1", 1000)
    assert parsed.destination == HostPort("::1", 21)


@pytest.mark.parametrize("data", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n"])
def test_v1_unknown_names_no_client(data: bytes) -> None:
    assert parse_proxy_header(data) == ProxyHeader(1, None, None, len(data))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"P",
        b"PROXY",
        b"PROXY ",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443",
        b"PROXY TCP4 1\r",
    ],
)
def test_v1_prefixes_need_more(data: bytes) -> None:
    assert parse_proxy_header(data) is NEED_MORE


@pytest.mark.parametrize(
    "data",
    [
        b"USER anonymous\r\n",
        b"PROXX TCP4",
        b"PROXY\r\n",
        b"\x16\x03\x01",  # a TLS ClientHello
    ],
)
def test_not_a_header(data: bytes) -> None:
    assert parse_proxy_header(data) == Malformed(ProxyProblem.NOT_PROXY)


def test_v1_without_crlf_in_107_bytes_is_too_long() -> None:
    data = b"PROXY TCP6 " + b"f" * 200
    assert parse_proxy_header(data[:106]) is NEED_MORE
    assert parse_proxy_header(data[:107]) == Malformed(ProxyProblem.V1_TOO_LONG)


def test_v1_crlf_past_byte_107_is_too_long() -> None:
    data = b"PROXY UNKNOWN " + b"x" * 150 + b"\r\n"
    assert parse_proxy_header(data) == Malformed(ProxyProblem.V1_TOO_LONG)


def test_v1_crlf_at_byte_107_is_taken() -> None:
    data = b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n"
    assert len(data) == 107
    assert parse_proxy_header(data) == ProxyHeader(1, None, None, 107)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY \r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF without CR
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # a field missing
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",  # one too many
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",  # two spaces
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",  # the wrong family
        b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 host 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1_0 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n",
    ],
)
def test_v1_malformed(line: bytes) -> None:
    assert parse_proxy_header(line) == Malformed(ProxyProblem.V1_MALFORMED)


def test_v1_port_zero_is_a_number() -> None:
    parsed = parse_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 21\r\n")
    assert isinstance(parsed, ProxyHeader)
    assert parsed.source == HostPort("1.2.3.4", 0)


# ------------------------------------------------------------ version 2


def test_v2_as_haproxy_sends_it() -> None:
    parsed = parse_proxy_header(HAPROXY_V2_TCP4 + b"USER x\r\n")
    assert parsed == ProxyHeader(2, HostPort("172.19.0.1", 42578), HostPort("172.19.0.3", 80), 28)


def test_v2_tcp6() -> None:
    body = bytes(15) + b"\x01" + bytes.fromhex("20010db8" + "00" * 11 + "07") + b"\x13\x88\x00\x15"
    assert parse_proxy_header(v2(0x21, 0x21, body)) == ProxyHeader(
        2, HostPort("::1", 5000), HostPort("2001:db8::7", 21), 52
    )


def test_v2_tcp6_ipv4_mapped_is_unmapped() -> None:
    mapped = bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 9])
    body = mapped + mapped + b"\x00\x01\x00\x02"
    parsed = parse_proxy_header(v2(0x21, 0x21, body))
    assert isinstance(parsed, ProxyHeader)
    assert parsed.source == HostPort("10.0.0.9", 1)


def test_v2_tlvs_are_kept_and_skipped() -> None:
    body = TCP4_BODY + tlv(0x04, b"\x00" * 5) + tlv(0x05, b"") + tlv(0xE0, b"custom")
    data = v2(0x21, 0x11, body) + b"220"
    parsed = parse_proxy_header(data)
    assert isinstance(parsed, ProxyHeader)
    assert parsed.tlvs == ((0x04, b"\x00" * 5), (0x05, b""), (0xE0, b"custom"))
    assert parsed.tls is None
    assert data[parsed.length :] == b"220"


def test_v2_local_names_no_client() -> None:
    # HAProxy's health checks: LOCAL, UNSPEC, no addresses.
    assert parse_proxy_header(v2(0x20, 0x00, b"")) == ProxyHeader(2, None, None, 16)
    # LOCAL with addresses: they are ignored, and so is what follows them.
    assert parse_proxy_header(v2(0x20, 0x11, TCP4_BODY + b"\xff")) == ProxyHeader(2, None, None, 29)


@pytest.mark.parametrize("family", [0x00, 0x12, 0x22, 0x31, 0x32])
def test_v2_families_without_a_tcp_client(family: int) -> None:
    body = bytes(216 if family >> 4 == 3 else 0)
    assert parse_proxy_header(v2(0x21, family, body)) == ProxyHeader(2, None, None, 16 + len(body))


def test_v2_every_prefix_needs_more() -> None:
    data = v2(0x21, 0x11, TCP4_BODY + tlv(0x04, b"ab"))
    for end in range(len(data)):
        assert parse_proxy_header(data[:end]) is NEED_MORE, end


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\r\n\r\n\x00\r\nQUIX\n", ProxyProblem.NOT_PROXY),
        (b"\r\nUSER", ProxyProblem.NOT_PROXY),
        (v2(0x11, 0x11, TCP4_BODY), ProxyProblem.V2_BAD_VERSION),
        (v2(0x31, 0x11, TCP4_BODY), ProxyProblem.V2_BAD_VERSION),
        (v2(0x22, 0x11, TCP4_BODY), ProxyProblem.V2_BAD_COMMAND),
        (v2(0x2F, 0x11, TCP4_BODY), ProxyProblem.V2_BAD_COMMAND),
        (v2(0x21, 0x13, TCP4_BODY), ProxyProblem.V2_BAD_FAMILY),
        (v2(0x21, 0x41, TCP4_BODY), ProxyProblem.V2_BAD_FAMILY),
        (v2(0x21, 0x10, TCP4_BODY), ProxyProblem.V2_BAD_FAMILY),
        (v2(0x21, 0x11, TCP4_BODY[:11]), ProxyProblem.V2_SHORT_ADDRESSES),
        (v2(0x21, 0x21, TCP4_BODY), ProxyProblem.V2_SHORT_ADDRESSES),
        (v2(0x21, 0x11, TCP4_BODY + b"\x04\x00"), ProxyProblem.V2_BAD_TLV),
        (v2(0x21, 0x11, TCP4_BODY + b"\x04\x00\x02a"), ProxyProblem.V2_BAD_TLV),
        (v2(0x21, 0x11, TCP4_BODY + tlv(4, b"") + b"\x04"), ProxyProblem.V2_BAD_TLV),
    ],
)
def test_v2_malformed(data: bytes, problem: ProxyProblem) -> None:
    # Rejected from the fixed part alone, without waiting for the announced length.
    assert parse_proxy_header(data) == Malformed(problem)


def test_v2_bad_family_is_rejected_before_its_body_arrives() -> None:
    assert parse_proxy_header(v2(0x21, 0x44, b"", announced=1000)) == Malformed(
        ProxyProblem.V2_BAD_FAMILY
    )


def test_v2_largest_length_is_waited_for() -> None:
    assert parse_proxy_header(v2(0x21, 0x11, TCP4_BODY, announced=0xFFFF)) is NEED_MORE


# ------------------------------------------------------------ TLS facts


def test_v2_tls_facts_of_a_bare_ssl_tlv() -> None:
    ssl = tlv(PP2_TYPE_SSL, b"\x01\x00\x00\x00\x00")
    parsed = parse_proxy_header(v2(0x21, 0x11, TCP4_BODY + ssl))
    assert isinstance(parsed, ProxyHeader)
    assert parsed.tls == TlsFacts("", "", None)


@pytest.mark.parametrize("value", [b"\x01\x00\x00\x00", b"\x01\x00\x00\x00\x00\x21\x00\x09TLS"])
def test_v2_broken_ssl_tlv_gives_no_tls_facts(value: bytes) -> None:
    parsed = parse_proxy_header(v2(0x21, 0x11, TCP4_BODY + tlv(PP2_TYPE_SSL, value)))
    assert isinstance(parsed, ProxyHeader)
    assert parsed.tls is None


# ------------------------------------------------------------ building


def test_build_v1_exact() -> None:
    assert (
        build_v1(HostPort("192.168.0.1", 56324), HostPort("192.168.0.11", 443))
        == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    )
    assert build_v1(HostPort("::1", 1), HostPort("2001:db8::1", 21)) == (
        b"PROXY TCP6 ::1 2001:db8::1 1 21\r\n"
    )
    assert build_v1(None, HostPort("::1", 21)) == b"PROXY UNKNOWN\r\n"


def test_build_v1_mixed_families_map_ipv4() -> None:
    assert build_v1(HostPort("192.0.2.1", 1000), HostPort("::1", 21)) == (
        b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1000 21\r\n"
    )
    assert build_v1(HostPort("::1", 1000), HostPort("192.0.2.1", 21)) == (
        b"PROXY TCP6 ::1 ::ffff:192.0.2.1 1000 21\r\n"
    )


def test_build_v2_exact_as_haproxy() -> None:
    assert build_v2(HostPort("172.19.0.1", 42578), HostPort("172.19.0.3", 80)) == HAPROXY_V2_TCP4


def test_build_v2_local() -> None:
    assert build_v2(HostPort("::1", 1), None) == V2_SIGNATURE + b"\x20\x00\x00\x00"


def test_build_v2_with_tls_exact() -> None:
    header = build_v2(
        HostPort("192.0.2.1", 40000),
        HostPort("192.0.2.2", 21),
        TlsFacts("TLSv1.3", "TLS_AES_128_GCM_SHA256", "ftp.example"),
    )
    authority = b"\x02\x00\x0bftp.example"
    ssl = (
        b"\x20\x00\x28"  # PP2_TYPE_SSL, 40 bytes
        + b"\x01\x00\x00\x00\x00"  # PP2_CLIENT_SSL, verify 0
        + b"\x21\x00\x07TLSv1.3"
        + b"\x23\x00\x16TLS_AES_128_GCM_SHA256"
    )
    assert header == v2(0x21, 0x11, TCP4_BODY + authority + ssl)
    parsed = parse_proxy_header(header)
    assert isinstance(parsed, ProxyHeader)
    assert parsed.tls == TlsFacts("TLSv1.3", "TLS_AES_128_GCM_SHA256", "ftp.example")


def test_build_v2_with_tlvs_past_32_kib() -> None:
    # Lengths are unsigned 16-bit: a long server name fits, up to 64 KiB in all.
    tls = TlsFacts("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", "a" * 40000)
    header = build_v2(HostPort("192.0.2.1", 40000), HostPort("192.0.2.2", 21), tls)
    parsed = parse_proxy_header(header)
    assert isinstance(parsed, ProxyHeader)
    assert (parsed.length, parsed.tls) == (len(header), tls)


# ------------------------------------------------------------ round trips

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ports = st.integers(0, 0xFFFF)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str).filter(lambda host: not host.startswith("::ffff:"))
hosts = st.one_of(ipv4, ipv6)
addresses = st.builds(HostPort.of, hosts, st.integers(1, 0xFFFF)) | st.builds(HostPort, ipv4, ports)
tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
tls_facts = st.none() | st.builds(
    TlsFacts,
    tokens,
    tokens,
    st.none() | st.text(st.characters(codec="utf-8"), max_size=60),
)


@FAST
@given(source=addresses, destination=addresses, tls=tls_facts, rest=st.binary(max_size=20))
def test_round_trip(
    source: HostPort, destination: HostPort, tls: TlsFacts | None, rest: bytes
) -> None:
    for version, header in (
        (1, build_v1(source, destination)),
        (2, build_v2(source, destination, tls)),
    ):
        parsed = parse_proxy_header(header + rest)
        assert isinstance(parsed, ProxyHeader)
        assert (parsed.version, parsed.source, parsed.destination) == (version, source, destination)
        assert parsed.length == len(header)
        if version == 2:
            assert parsed.tls == tls
        for end in range(len(header)):
            assert parse_proxy_header(header[:end]) is NEED_MORE


@FAST
@given(data=st.binary(max_size=200))
def test_any_bytes_get_an_answer(data: bytes) -> None:
    parsed = parse_proxy_header(data)
    if isinstance(parsed, ProxyHeader):
        assert 0 < parsed.length <= len(data)
