"""Data-connection addresses: the 227/229 replies and the PORT/EPRT/EPSV arguments.

Parsing is strict, because these addresses decide where the balancer connects
(RFC 959, RFC 1123 §4.1.2.6, RFC 2428). Numbers are plain ASCII decimal: no
signs, no spaces inside, no empty fields. Addresses are validated with
:mod:`ipaddress` and kept in canonical text, with IPv4-mapped IPv6 addresses
unmapped, so that two spellings of one address compare equal.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ftplb.proto.errors import ProtocolError

# Network protocol numbers of RFC 2428 (EPRT, EPSV).
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2

_MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class HostPort:
    """An IP address in canonical text and a TCP port.

    Build it with :meth:`of`, which validates and canonicalises; the plain
    constructor trusts its arguments.
    """

    host: str
    port: int

    @property
    def family(self) -> int:
        """1 for IPv4, 2 for IPv6 (the RFC 2428 protocol numbers)."""
        return FAMILY_IPV6 if ":" in self.host else FAMILY_IPV4

    @classmethod
    def of(cls, host: str, port: int) -> HostPort:
        """Validate and canonicalise; ``ValueError`` on a bad host or port."""
        return cls(unmap_ipv4(host), _checked_port(port))


@functools.lru_cache(maxsize=4096)
def unmap_ipv4(host: str) -> str:
    """Canonical text of ``host``; ``::ffff:a.b.c.d`` becomes ``a.b.c.d``.

    Raises ``ValueError`` if ``host`` is not an IP address. Cached: a balancer
    sees the same few server and client addresses over and over, and parsing
    one with ``ipaddress`` costs more than the rest of a PASV reply's handling.
    """
    if not isinstance(host, str):
        raise ValueError(f"host must be an IP address string, not {host!r}")
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def kernel_host(host: str) -> str:
    """The canonical text of an address the kernel reported (getpeername, accept).

    The kernel already prints canonical text (inet_ntop follows RFC 5952, as
    ``ipaddress`` does), so this only unmaps IPv4-mapped IPv6: parsing every
    address again would cost more than the rest of a session's bookkeeping.
    """
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _checked_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= _MAX_PORT:
        raise ValueError(f"port must be 1..{_MAX_PORT}, not {port!r}")
    return port


def _decimal(field: bytes, maximum: int) -> int | None:
    """``field`` as a plain decimal number up to ``maximum``, else None."""
    if not field.isdigit():  # ASCII digits only; False for b""
        return None
    digits = field.lstrip(b"0") or b"0"
    # Checked before int(): a huge digit string must not cost time, nor hit
    # the interpreter's limit on integer string conversion.
    if len(digits) > len(str(maximum)):
        return None
    value = int(digits)
    return value if value <= maximum else None


def _ipv4_octets(address: HostPort) -> bytes:
    if address.family != FAMILY_IPV4:
        raise ValueError(f"PASV and PORT carry IPv4 addresses only, not {address.host}")
    return ipaddress.IPv4Address(address.host).packed


# ---------------------------------------------------------------- 227 / PORT

# RFC 1123 §4.1.2.6: the parentheses are optional, so scan for the numbers.
# Each group is bounded to three digits and must not touch other digits, which
# keeps the scan linear on hostile input.
_PASV_NUMBERS = re.compile(rb"(?<![0-9])" + rb",".join([rb"([0-9]{1,3})"] * 6) + rb"(?![0-9])")
_BAD_227 = "Can't open data connection: unreadable 227 reply from server"
_BAD_PORT = "Syntax error in PORT arguments"


def parse_pasv_reply(text: bytes) -> HostPort:
    """The address in a 227 reply's text: the first run ``h1,h2,h3,h4,p1,p2``."""
    match = _PASV_NUMBERS.search(text)
    if match is None:
        raise ProtocolError(425, _BAD_227)
    numbers = [int(group) for group in match.groups()]
    address = _from_six_numbers(numbers)
    if address is None:
        raise ProtocolError(425, _BAD_227)
    return address


def format_pasv_reply(address: HostPort) -> bytes:
    """``227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).`` with CRLF; IPv4 only."""
    return b"227 Entering Passive Mode (%s).\r\n" % format_port_arg(address)


def parse_port_arg(arg: bytes) -> HostPort:
    """The address in a PORT argument ``h1,h2,h3,h4,p1,p2``; spaces around it are tolerated."""
    fields = arg.strip(b" ").split(b",")
    if len(fields) != 6:
        raise ProtocolError(501, _BAD_PORT)
    numbers: list[int] = []
    for field in fields:
        number = _decimal(field, 255)
        if number is None:
            raise ProtocolError(501, _BAD_PORT)
        numbers.append(number)
    address = _from_six_numbers(numbers)
    if address is None:
        raise ProtocolError(501, _BAD_PORT)
    return address


def format_port_arg(address: HostPort) -> bytes:
    """``h1,h2,h3,h4,p1,p2`` for PORT (and inside 227); IPv4 only, else ``ValueError``."""
    octets = _ipv4_octets(address)
    port = _checked_port(address.port)
    return b"%d,%d,%d,%d,%d,%d" % (*octets, port >> 8, port & 0xFF)


def _from_six_numbers(numbers: list[int]) -> HostPort | None:
    """Four address bytes and two port bytes, each 0..255; None if out of range or port 0."""
    if any(number > 255 for number in numbers):
        return None
    port = numbers[4] * 256 + numbers[5]
    if port == 0:
        return None
    # Four numbers of 0..255 joined by dots are canonical IPv4 text already.
    return HostPort(".".join(map(str, numbers[:4])), port)


# ---------------------------------------------------------------- 229 / EPRT / EPSV

# RFC 2428: "(<d><d><d>port<d>)" with one delimiter in ASCII 33..126. Digits
# are refused as delimiters: they could not be told apart from the port.
_EPSV_PORT = re.compile(rb"\(([\x21-\x2f\x3a-\x7e])\1\1([0-9]{1,5})\1\)")
_BAD_229 = "Can't open data connection: unreadable 229 reply from server"
_BAD_EPRT = "Syntax error in EPRT arguments"
_BAD_EPSV = "Syntax error in EPSV arguments"
_UNSUPPORTED_PROTOCOL = "Network protocol not supported, use (1,2)"

EpsvArg: TypeAlias = Literal["ALL"] | int | None


def parse_epsv_reply(text: bytes) -> int:
    """The port in a 229 reply's text, e.g. ``(|||6446|)``."""
    match = _EPSV_PORT.search(text)
    if match is None:
        raise ProtocolError(425, _BAD_229)
    port = int(match.group(2))
    if not 1 <= port <= _MAX_PORT:
        raise ProtocolError(425, _BAD_229)
    return port


def format_epsv_reply(port: int) -> bytes:
    """``229 Entering Extended Passive Mode (|||port|)`` with CRLF."""
    return b"229 Entering Extended Passive Mode (|||%d|)\r\n" % _checked_port(port)


def parse_eprt_arg(arg: bytes) -> HostPort:
    """The address in an EPRT argument ``<d>proto<d>addr<d>port<d>``."""
    text = arg.strip(b" ")
    delimiter = text[:1]
    if not delimiter or not 0x21 <= delimiter[0] <= 0x7E or delimiter.isdigit():
        raise ProtocolError(501, _BAD_EPRT)
    fields = text.split(delimiter)
    if len(fields) != 5 or fields[0] or fields[4]:
        raise ProtocolError(501, _BAD_EPRT)
    protocol, host, port_field = fields[1:4]
    if not protocol.isdigit():
        raise ProtocolError(501, _BAD_EPRT)
    family = protocol.lstrip(b"0")
    if family not in (b"1", b"2"):
        raise ProtocolError(522, _UNSUPPORTED_PROTOCOL)
    port = _decimal(port_field, _MAX_PORT)
    if not port:
        raise ProtocolError(501, _BAD_EPRT)
    try:
        # A zone index ("%eth0") has no meaning for the peer: refused.
        if not host.isascii() or b"%" in host:
            raise ValueError("not a plain address")
        address_type = ipaddress.IPv4Address if family == b"1" else ipaddress.IPv6Address
        address = address_type(host.decode("ascii"))
    except ValueError:
        raise ProtocolError(501, _BAD_EPRT) from None
    return HostPort.of(str(address), port)


def format_eprt_arg(address: HostPort) -> bytes:
    """``|1|1.2.3.4|5000|`` or ``|2|::1|5000|``."""
    ip = ipaddress.ip_address(address.host)
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    if "%" in address.host:
        raise ValueError(f"EPRT cannot carry a scoped address: {address.host}")
    return b"|%d|%s|%d|" % (family, str(ip).encode("ascii"), _checked_port(address.port))


def parse_epsv_arg(arg: bytes) -> EpsvArg:
    """``None`` for plain EPSV, ``"ALL"`` for EPSV ALL, else the protocol 1 or 2."""
    text = arg.strip(b" ")
    if not text:
        return None
    if text.upper() == b"ALL":
        return "ALL"
    if not text.isdigit():
        raise ProtocolError(501, _BAD_EPSV)
    family = text.lstrip(b"0")
    if family == b"1":
        return FAMILY_IPV4
    if family == b"2":
        return FAMILY_IPV6
    raise ProtocolError(522, _UNSUPPORTED_PROTOCOL)
