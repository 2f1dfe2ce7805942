"""The field types shared by the sections of a configuration, and their validators.

Each type validates one value on its own (its type, range or form) and words
its refusal for a human: durations, addresses, port ranges, names and the
like. :class:`Section` is the base of every table in the file.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator
from pydantic_core import PydanticCustomError

from ftplb.config.ciphers import cipher_string_problem
from ftplb.config.problems import as_written

__all__ = [
    "BindAddress",
    "ByteRate",
    "Cidr",
    "Count",
    "Duration",
    "Endpoint",
    "FilePath",
    "IpLiteral",
    "Name",
    "PortRange",
    "PortRangeField",
    "PositiveDuration",
    "ReplyText",
    "Section",
    "ServerAddress",
    "SniName",
    "TlsCiphers",
    "TlsMode",
    "TlsServerName",
    "TlsVersion",
    "parse_byte_rate",
    "parse_duration",
    "parse_endpoint",
    "parse_port_range",
]


class Section(BaseModel):
    """The base of every table: unknown keys are errors, values are frozen and strict."""

    # strict: a TOML file has real types, so "2" for a number is a mistake to report.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_FORMS = 'a number of seconds or a string such as "250ms", "5s", "2m", "1h" or "1d"'


def parse_duration(value: object) -> float:
    """Seconds from ``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"``, ``"1d"`` or a number."""
    # bool is an int in Python, but `timeout = true` is surely a mistake.
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        raise PydanticCustomError(
            "duration",
            "invalid duration {value}: expected a non-negative, finite number of seconds",
            {"value": value},
        )
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value)
        if match is not None:
            return float(match[1]) * _DURATION_UNITS[match[2]]
    raise PydanticCustomError(
        "duration",
        "invalid duration {value}: expected {forms}",
        {"value": as_written(value), "forms": _DURATION_FORMS},
    )


Duration = Annotated[float, PlainValidator(parse_duration)]
"""Seconds as a float; the file may spell it ``"5s"`` or ``5``."""

PositiveDuration = Annotated[Duration, Field(gt=0)]
"""A duration that bounds a wait: zero would fail (or spin) every time."""


# --------------------------------------------------------------------------
# Byte rates
# --------------------------------------------------------------------------

# Decimal units as network rates are sold ("2MB" = 2,000,000 B/s), and the
# binary ones for those who think in pipes and buffers.
_RATE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
_RATE_RE = re.compile(r"(\d+(?:\.\d+)?) ?([KMG]i?B|B|)")
_RATE_FORMS = 'bytes per second: "0" (unlimited), "500", "500KB", "2MB", "1GB", "512KiB" or "2MiB"'
_RATE_MAX = 1000**4
"""1 TB/s: far beyond any link, and small enough to stay an exact integer."""


def parse_byte_rate(value: object) -> int:
    """Bytes per second from ``"500"``, ``"500KB"``, ``"2MB"``, ``"1GiB"`` or an integer."""
    rate: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        rate = value
    elif isinstance(value, str):
        match = _RATE_RE.fullmatch(value)
        if match is not None:
            rate = float(match[1]) * _RATE_UNITS[match[2]]
    # A rate below one byte per second would round to 0, which means unlimited.
    if rate is not None and (rate == 0 or 1 <= rate <= _RATE_MAX):
        return round(rate)
    raise PydanticCustomError(
        "byte_rate",
        "invalid rate {value}: expected {forms}",
        {"value": as_written(value), "forms": _RATE_FORMS},
    )


ByteRate = Annotated[int, PlainValidator(parse_byte_rate)]
"""Bytes per second as an integer, 0 for unlimited; the file may write ``"2MB"``."""


# --------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host (an IP literal or ``localhost``) and a TCP port."""

    host: str
    port: int

    @property
    def is_wildcard(self) -> bool:
        """True for ``0.0.0.0`` and ``::``, which listen on every address."""
        return self.host in ("0.0.0.0", "::")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


_BIND_FORMS = '"1.2.3.4:21", "[::1]:21", "localhost:21" or "*:21"'
_SERVER_FORMS = '"1.2.3.4:21", "[::1]:21" or "localhost:21"'


def parse_endpoint(value: object) -> Endpoint:
    """An :class:`Endpoint` from ``"1.2.3.4:21"``, ``"[::1]:21"``, ``"*:21"`` or ``"[::]:21"``.

    ``*`` means every IPv4 address; write ``[::]`` for every IPv6 address.
    """
    return _parse_endpoint(value, allow_wildcard=True)


def _server_endpoint(value: object) -> Endpoint:
    return _parse_endpoint(value, allow_wildcard=False)


def _parse_endpoint(value: object, *, allow_wildcard: bool) -> Endpoint:
    def error(reason: str) -> PydanticCustomError:
        return PydanticCustomError(
            "endpoint",
            "invalid address {value}: {reason}; expected {forms}",
            {
                "value": as_written(value),
                "reason": reason,
                "forms": _BIND_FORMS if allow_wildcard else _SERVER_FORMS,
            },
        )

    if isinstance(value, Endpoint):
        endpoint = value
    elif not isinstance(value, str):
        raise error("not a string")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise error("no port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            if not _is_ipv6(host):
                raise error("only an IPv6 address goes in brackets")
            host = str(ipaddress.IPv6Address(host))
        elif host == "*":
            host = "0.0.0.0"
        elif host != "localhost":
            if ":" in host:
                raise error("an IPv6 address must be in brackets")
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                raise error('the host must be an IP address or "localhost"') from None
        if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
            raise error("the port must be a number from 1 to 65535")
        endpoint = Endpoint(host, int(port_text))
    if endpoint.is_wildcard and not allow_wildcard:
        raise error("a server needs a specific address, not a wildcard")
    return endpoint


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


BindAddress = Annotated[Endpoint, PlainValidator(parse_endpoint), PlainSerializer(str)]
ServerAddress = Annotated[Endpoint, PlainValidator(_server_endpoint), PlainSerializer(str)]


# --------------------------------------------------------------------------
# Port ranges
# --------------------------------------------------------------------------

_PORT_RANGE_RE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive range of unprivileged TCP ports, ``first`` to ``last``."""

    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.first, self.last + 1))

    def overlaps(self, other: PortRange) -> bool:
        return self.first <= other.last and other.first <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def parse_port_range(value: object) -> PortRange:
    """A :class:`PortRange` from ``"40000-40999"``, ``"40000"`` or ``40000``."""
    if isinstance(value, PortRange):
        return value
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(text, str):
        match = _PORT_RANGE_RE.fullmatch(text)
        if match is not None:
            first = int(match[1])
            last = int(match[2]) if match[2] is not None else first
            if 1024 <= first <= last <= 65535:
                return PortRange(first, last)
    raise PydanticCustomError(
        "port_range",
        'invalid port range {value}: expected "FIRST-LAST" or "PORT" '
        "with 1024 <= FIRST <= LAST <= 65535",
        {"value": as_written(value)},
    )


PortRangeField = Annotated[PortRange, PlainValidator(parse_port_range), PlainSerializer(str)]


# --------------------------------------------------------------------------
# Small scalar types
# --------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _check_name(value: object) -> str:
    if isinstance(value, str) and _NAME_RE.fullmatch(value):
        return value
    raise PydanticCustomError(
        "name",
        "invalid name {value}: use one or more letters, digits, '_', '-' or '.'",
        {"value": as_written(value)},
    )


Name = Annotated[str, PlainValidator(_check_name)]


def _check_ip_literal(value: object) -> str:
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
    raise PydanticCustomError(
        "ip_address",
        'invalid IP address {value}: expected an IPv4 or IPv6 literal such as "192.0.2.10"',
        {"value": as_written(value)},
    )


IpLiteral = Annotated[str, PlainValidator(_check_ip_literal)]


def _check_cidr(value: object) -> str:
    # Host bits set ("10.0.0.1/8") are refused rather than masked: the writer
    # meant either the network or the host, and only they know which.
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_network(value))
        except ValueError:
            pass
    raise PydanticCustomError(
        "cidr",
        "invalid network {value}: expected an address or a CIDR such as "
        '"10.0.0.0/8" or "2001:db8::/32", without host bits',
        {"value": as_written(value)},
    )


Cidr = Annotated[str, PlainValidator(_check_cidr)]
"""An IPv4 or IPv6 network in canonical CIDR text; a bare address is a /32 or /128."""


def _check_reply_text(value: object) -> str:
    # The banner goes into a 220 reply line: a line break would let it forge replies.
    if isinstance(value, str) and value.isprintable():
        return value
    raise PydanticCustomError(
        "reply_text", "the banner must be a single line of printable text", {}
    )


ReplyText = Annotated[str, PlainValidator(_check_reply_text)]

Count = Annotated[int, Field(ge=0)]
"""A limit where 0 means unlimited."""


# --------------------------------------------------------------------------
# TLS settings
# --------------------------------------------------------------------------

TlsMode = Literal["none", "explicit", "implicit"]
"""No TLS, AUTH TLS on the plain port (RFC 4217), or TLS from the first byte."""


def _check_file_path(value: object) -> str:
    # Relative paths are made absolute by the loader, against the file's folder.
    if isinstance(value, str) and value and "\0" not in value:
        return value
    raise PydanticCustomError(
        "file_path", "expected a file path, got {value}", {"value": as_written(value)}
    )


FilePath = Annotated[str, PlainValidator(_check_file_path)]

_SERVER_NAME_RE = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?"
)


def _check_server_name(value: object) -> str:
    if isinstance(value, str) and (_SERVER_NAME_RE.fullmatch(value) or _is_ip(value)):
        return value
    raise PydanticCustomError(
        "server_name",
        "invalid TLS server name {value}: expected a DNS name or an IP address",
        {"value": as_written(value)},
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


TlsServerName = Annotated[str, PlainValidator(_check_server_name)]


def _check_tls_version(value: object) -> str:
    if value in ("1.2", "1.3"):
        return str(value)
    if value in ("1.0", "1.1"):
        raise PydanticCustomError(
            "tls_version",
            "TLS {value} is not offered: RFC 8996 retired TLS 1.0 and 1.1, and OpenSSL 3 "
            'refuses them at its default security level; expected "1.2" or "1.3"',
            {"value": value},
        )
    raise PydanticCustomError(
        "tls_version",
        'invalid TLS version {value}: expected "1.2" or "1.3"',
        {"value": as_written(value)},
    )


TlsVersion = Annotated[str, PlainValidator(_check_tls_version)]
"""A TLS protocol version, ``"1.2"`` or ``"1.3"``."""


def _check_ciphers(value: object) -> str:
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        raise PydanticCustomError(
            "tls_ciphers",
            'expected an OpenSSL cipher string such as "ECDHE+AESGCM", got {value}',
            {"value": as_written(value)},
        )
    problem = cipher_string_problem(value)
    if problem is not None:
        raise PydanticCustomError(
            "tls_ciphers",
            "invalid cipher string {value}: {problem}",
            {"value": as_written(value), "problem": problem},
        )
    return value


TlsCiphers = Annotated[str, PlainValidator(_check_ciphers)]
"""An OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are not set by it)."""


def _check_sni_name(value: object) -> str:
    if isinstance(value, str):
        name = value.removeprefix("*.")
        if _SERVER_NAME_RE.fullmatch(name) and not _is_ip(name) and not name.endswith("."):
            return value.lower()
    raise PydanticCustomError(
        "sni_name",
        'invalid SNI name {value}: expected a DNS name such as "ftp.example.com", '
        'or "*.example.com" for every name one label below it',
        {"value": as_written(value)},
    )


SniName = Annotated[str, PlainValidator(_check_sni_name)]
"""A name a client may send as SNI: exact, or ``*.`` and a domain (one label)."""
