"""The PROXY protocol header, versions 1 and 2: parse what an upstream sends, build what we send.

An upstream balancer (HAProxy, an AWS NLB) puts one header in front of the
first byte of a connection, naming the client it took the connection from.
The parser reads it from the bytes received so far: it answers "need more",
the parsed header with the number of bytes it took, or a typed problem. It
never waits for more than a header can hold (107 bytes for version 1, 16 plus
the announced length for version 2), and it rejects a prefix as soon as it
cannot start a header, so a client that speaks FTP (or nothing) is refused
without a wait. The bytes after the header belong to the stream it prefixes.

The builder writes version 1 (text) or version 2 (binary, with the TLS facts
as PP2_TYPE_SSL and PP2_TYPE_AUTHORITY when the client's TLS ended here).
The layout follows HAProxy's proxy-protocol.txt.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ftplb.proto.addresses import HostPort, unmap_ipv4

V1_PREFIX: Final = b"PROXY "
V1_MAX_LENGTH: Final = 107
"""The longest version 1 header, CRLF included (two full IPv6 addresses and ports)."""
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED: Final = 16
"""The signature, the version and command byte, the family byte and the 16-bit length."""

_COMMAND_LOCAL: Final = 0x0
_COMMAND_PROXY: Final = 0x1

_FAMILY_UNSPEC: Final = 0x00
_FAMILY_TCP4: Final = 0x11
_FAMILY_TCP6: Final = 0x21
# Families the spec defines that carry no TCP client (UDP, UNIX sockets): the
# header is valid, and its addresses are not a client's to take.
_FAMILIES_WITHOUT_CLIENT: Final = frozenset((_FAMILY_UNSPEC, 0x12, 0x22, 0x31, 0x32))

_ADDRESS_BLOCK_TCP4: Final = 12
_ADDRESS_BLOCK_TCP6: Final = 36

PP2_TYPE_AUTHORITY: Final = 0x02
PP2_TYPE_SSL: Final = 0x20
PP2_SUBTYPE_SSL_VERSION: Final = 0x21
PP2_SUBTYPE_SSL_CIPHER: Final = 0x23
PP2_CLIENT_SSL: Final = 0x01
_SSL_FIXED: Final = 5
"""PP2_TYPE_SSL's fields before its sub-TLVs: the client flags byte, the 32-bit verify result."""
_TLV_HEAD: Final = 3


class ProxyProblem(StrEnum):
    """Why bytes are not a PROXY header: the ``detail`` of the refusal's log line."""

    NOT_PROXY = "not_proxy"
    """The stream does not start with either version's signature."""
    V1_TOO_LONG = "v1_too_long"
    """No CRLF within 107 bytes."""
    V1_MALFORMED = "v1_malformed"
    """The line is not ``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>`` or ``PROXY UNKNOWN``."""
    V2_BAD_VERSION = "v2_bad_version"
    """The version nibble is not 2."""
    V2_BAD_COMMAND = "v2_bad_command"
    """The command nibble is neither LOCAL nor PROXY."""
    V2_BAD_FAMILY = "v2_bad_family"
    """The address family and transport byte is none the spec defines."""
    V2_SHORT_ADDRESSES = "v2_short_addresses"
    """The announced length cannot hold the family's addresses."""
    V2_BAD_TLV = "v2_bad_tlv"
    """A TLV runs past the end of the header."""


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The bytes so far are a valid beginning of a header: read more."""


NEED_MORE: Final = NeedMore()


@dataclass(frozen=True, slots=True)
class Malformed:
    """The bytes cannot be a PROXY header."""

    problem: ProxyProblem


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """What a version 2 header tells of the client's TLS: protocol, cipher and SNI."""

    version: str
    cipher: str
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header.

    ``source`` and ``destination`` are None when the header names no TCP
    client: version 1 ``UNKNOWN``, version 2 ``LOCAL`` (an upstream's own
    health check) or a family without one. The connection's own addresses
    stand then. ``length`` is the number of bytes the header took.
    """

    version: int
    source: HostPort | None
    destination: HostPort | None
    length: int
    tlvs: tuple[tuple[int, bytes], ...] = ()

    @property
    def tls(self) -> TlsFacts | None:
        """The TLS facts of a version 2 header's PP2_TYPE_SSL and PP2_TYPE_AUTHORITY, if any."""
        facts = dict(self.tlvs)
        ssl = facts.get(PP2_TYPE_SSL)
        if ssl is None or len(ssl) < _SSL_FIXED:
            return None
        subs = _split_tlvs(ssl[_SSL_FIXED:])
        if subs is None:
            return None
        fields = dict(subs)
        authority = facts.get(PP2_TYPE_AUTHORITY)
        return TlsFacts(
            version=fields.get(PP2_SUBTYPE_SSL_VERSION, b"").decode("ascii", "replace"),
            cipher=fields.get(PP2_SUBTYPE_SSL_CIPHER, b"").decode("ascii", "replace"),
            server_name=None if authority is None else authority.decode("utf-8", "replace"),
        )


ParseResult = NeedMore | Malformed | ProxyHeader


def parse_proxy_header(data: bytes) -> ParseResult:
    """Read a version 1 or 2 header from the start of ``data``, the bytes received so far."""
    if not data:
        return NEED_MORE
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    return Malformed(ProxyProblem.NOT_PROXY)


# ------------------------------------------------------------ version 1


def _parse_v1(data: bytes) -> ParseResult:
    head = data[: len(V1_PREFIX)]
    if head != V1_PREFIX[: len(head)]:
        return Malformed(ProxyProblem.NOT_PROXY)
    end = data.find(b"\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            return Malformed(ProxyProblem.V1_TOO_LONG)
        return NEED_MORE
    if data[end - 1] != ord("\r"):
        return Malformed(ProxyProblem.V1_MALFORMED)
    fields = data[len(V1_PREFIX) : end - 1].split(b" ")
    length = end + 1
    if fields[0] == b"UNKNOWN":
        # The spec lets a sender put anything after UNKNOWN; the receiver ignores it.
        return ProxyHeader(1, None, None, length)
    addresses = _v1_addresses(fields)
    if addresses is None:
        return Malformed(ProxyProblem.V1_MALFORMED)
    return ProxyHeader(1, addresses[0], addresses[1], length)


def _v1_addresses(fields: list[bytes]) -> tuple[HostPort, HostPort] | None:
    if len(fields) != 5 or fields[0] not in (b"TCP4", b"TCP6"):
        return None
    version = 4 if fields[0] == b"TCP4" else 6
    source_host = _v1_host(fields[1], version)
    destination_host = _v1_host(fields[2], version)
    source_port = _v1_port(fields[3])
    destination_port = _v1_port(fields[4])
    if source_host is None or destination_host is None:
        return None
    if source_port is None or destination_port is None:
        return None
    return HostPort(source_host, source_port), HostPort(destination_host, destination_port)


def _v1_host(field: bytes, version: int) -> str | None:
    try:
        text = field.decode("ascii")
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version != version:
        return None
    return unmap_ipv4(text)


def _v1_port(field: bytes) -> int | None:
    # Plain ASCII decimal without a leading zero, as the spec writes it; int()
    # would also take signs, spaces and underscores.
    if not field.isdigit() or (len(field) > 1 and field[0] == ord("0")):
        return None
    port = int(field)
    return port if port <= 0xFFFF else None


# ------------------------------------------------------------ version 2


def _parse_v2(data: bytes) -> ParseResult:
    head = data[: len(V2_SIGNATURE)]
    if head != V2_SIGNATURE[: len(head)]:
        return Malformed(ProxyProblem.NOT_PROXY)
    if len(data) < _V2_FIXED:
        return NEED_MORE
    version_command, family, announced = struct.unpack_from("!BBH", data, len(V2_SIGNATURE))
    if version_command >> 4 != 2:
        return Malformed(ProxyProblem.V2_BAD_VERSION)
    command = version_command & 0x0F
    if command not in (_COMMAND_LOCAL, _COMMAND_PROXY):
        return Malformed(ProxyProblem.V2_BAD_COMMAND)
    if family not in _FAMILIES_WITHOUT_CLIENT and family not in (_FAMILY_TCP4, _FAMILY_TCP6):
        return Malformed(ProxyProblem.V2_BAD_FAMILY)
    address_block = {_FAMILY_TCP4: _ADDRESS_BLOCK_TCP4, _FAMILY_TCP6: _ADDRESS_BLOCK_TCP6}.get(
        family, 0
    )
    if announced < address_block:
        return Malformed(ProxyProblem.V2_SHORT_ADDRESSES)
    length = _V2_FIXED + announced
    if len(data) < length:
        return NEED_MORE
    if command == _COMMAND_LOCAL or address_block == 0:
        # LOCAL is the upstream's own connection (a health check), and the other
        # families name no TCP client: what follows is skipped unread.
        return ProxyHeader(2, None, None, length)
    body = data[_V2_FIXED:length]
    tlvs = _split_tlvs(body[address_block:])
    if tlvs is None:
        return Malformed(ProxyProblem.V2_BAD_TLV)
    source, destination = _v2_addresses(body, family)
    return ProxyHeader(2, source, destination, length, tlvs)


def _v2_addresses(body: bytes, family: int) -> tuple[HostPort, HostPort]:
    size = 4 if family == _FAMILY_TCP4 else 16
    source = ipaddress.ip_address(body[:size])
    destination = ipaddress.ip_address(body[size : 2 * size])
    source_port, destination_port = struct.unpack_from("!HH", body, 2 * size)
    return (
        HostPort(unmap_ipv4(str(source)), source_port),
        HostPort(unmap_ipv4(str(destination)), destination_port),
    )


def _split_tlvs(block: bytes) -> tuple[tuple[int, bytes], ...] | None:
    """The (type, value) pairs of a TLV block; None if one overruns it."""
    tlvs: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(block):
        if len(block) - offset < _TLV_HEAD:
            return None
        kind, size = struct.unpack_from("!BH", block, offset)
        offset += _TLV_HEAD
        if offset + size > len(block):
            return None
        tlvs.append((kind, block[offset : offset + size]))
        offset += size
    return tuple(tlvs)


# ------------------------------------------------------------ building


def build_v1(source: HostPort | None, destination: HostPort | None) -> bytes:
    """A version 1 header; ``PROXY UNKNOWN`` when either address is missing."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    source_ip, destination_ip = _same_family(source, destination)
    protocol = "TCP4" if source_ip.version == 4 else "TCP6"
    hosts = f"{_v1_text(source_ip)} {_v1_text(destination_ip)}"
    line = f"PROXY {protocol} {hosts} {source.port} {destination.port}\r\n"
    return line.encode("ascii")


def _v1_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The address as HAProxy writes it: an IPv4-mapped one keeps its dotted quad."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def build_v2(
    source: HostPort | None, destination: HostPort | None, tls: TlsFacts | None = None
) -> bytes:
    """A version 2 header: PROXY over TCP, or LOCAL when either address is missing.

    ``tls`` adds PP2_TYPE_SSL (client flag SSL, verify 0, with the version and
    cipher sub-TLVs) and, with a server name, PP2_TYPE_AUTHORITY.
    """
    if source is None or destination is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20 | _COMMAND_LOCAL, _FAMILY_UNSPEC, 0)
    source_ip, destination_ip = _same_family(source, destination)
    family = _FAMILY_TCP4 if source_ip.version == 4 else _FAMILY_TCP6
    body = (
        source_ip.packed
        + destination_ip.packed
        + struct.pack("!HH", source.port, destination.port)
        + (b"" if tls is None else _tls_tlvs(tls))
    )
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | _COMMAND_PROXY, family, len(body)) + body


def _tls_tlvs(tls: TlsFacts) -> bytes:
    subs = _tlv(PP2_SUBTYPE_SSL_VERSION, tls.version.encode("ascii")) + _tlv(
        PP2_SUBTYPE_SSL_CIPHER, tls.cipher.encode("ascii")
    )
    ssl = _tlv(PP2_TYPE_SSL, struct.pack("!BI", PP2_CLIENT_SSL, 0) + subs)
    if tls.server_name is None:
        return ssl
    return _tlv(PP2_TYPE_AUTHORITY, tls.server_name.encode("utf-8")) + ssl


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def _same_family(
    source: HostPort, destination: HostPort
) -> tuple[
    ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Address | ipaddress.IPv6Address
]:
    """Both addresses in one family: an IPv4 one beside an IPv6 one is written IPv4-mapped.

    That happens when the client came through an upstream over IPv6 and the
    frontend listens on IPv4, or the other way round.
    """
    source_ip = ipaddress.ip_address(source.host)
    destination_ip = ipaddress.ip_address(destination.host)
    if source_ip.version == destination_ip.version:
        return source_ip, destination_ip
    return _as_ipv6(source_ip), _as_ipv6(destination_ip)


def _as_ipv6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(f"::ffff:{address}")
