"""The typed, validated shape of an ftplb configuration.

Everything here is pure: it takes the plain data that a TOML parser produced
and either returns a frozen :class:`Config` or explains every problem it found,
each with the key path of the offending value so that the loader can point at
a file line. Unknown keys are errors, because a misspelt option that is
silently ignored is worse than a refusal to start.

Checks happen in two layers:

* pydantic validates each value on its own (types, ranges, forms);
* :func:`cross_check` validates what only the whole file can tell (a frontend
  naming a missing backend, overlapping passive port ranges, ...).

``Config.model_validate`` runs both, so no inconsistent ``Config`` can exist.
:func:`problems_from_error` turns the resulting ``ValidationError`` into one
:class:`Problem` per finding, cross-check findings included.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "Admin",
    "Backend",
    "Config",
    "Defaults",
    "Duration",
    "Endpoint",
    "Frontend",
    "Health",
    "KeyPath",
    "PortRange",
    "Problem",
    "Server",
    "cross_check",
    "format_key",
    "parse_duration",
    "parse_endpoint",
    "parse_port_range",
    "problems_from_error",
]

KeyPath = tuple[str | int, ...]
"""Where a value sits in the file: table keys and array indices, outermost first."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration, and the key path it is about."""

    path: KeyPath
    message: str


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
        {"value": _show(value), "forms": _DURATION_FORMS},
    )


Duration = Annotated[float, PlainValidator(parse_duration)]
"""Seconds as a float; the file may spell it ``"5s"`` or ``5``."""

PositiveDuration = Annotated[Duration, Field(gt=0)]
"""A duration that bounds a wait: zero would fail (or spin) every time."""


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
                "value": _show(value),
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
        {"value": _show(value)},
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
        {"value": _show(value)},
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
        {"value": _show(value)},
    )


IpLiteral = Annotated[str, PlainValidator(_check_ip_literal)]


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


def _show(value: object) -> str:
    """A value as the user wrote it, roughly: strings quoted, others as is."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


TlsMode = Literal["none", "explicit", "implicit"]
"""No TLS, AUTH TLS on the plain port (RFC 4217), or TLS from the first byte."""


def _check_file_path(value: object) -> str:
    # Relative paths are made absolute by the loader, against the file's folder.
    if isinstance(value, str) and value and "\0" not in value:
        return value
    raise PydanticCustomError(
        "file_path", "expected a file path, got {value}", {"value": _show(value)}
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
        {"value": _show(value)},
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


TlsServerName = Annotated[str, PlainValidator(_check_server_name)]


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


class _Section(BaseModel):
    # strict: a TOML file has real types, so "2" for a number is a mistake to report.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Defaults(_Section):
    """Settings for the whole balancer: timeouts, retries, logging, global limits."""

    timeout_connect: PositiveDuration = 5.0
    timeout_client: PositiveDuration = 300.0
    timeout_server: PositiveDuration = 300.0
    timeout_data: PositiveDuration = 30.0
    retries: Count = 2
    redispatch: bool = True
    log_format: Literal["text", "json"] = "text"
    log_commands: bool = False
    max_line_length: Annotated[int, Field(ge=512, le=65536)] = 4096
    max_connections: Count = 0
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Worker processes sharing the listeners (see docs/workers.md)."""


class Health(_Section):
    """How a backend's servers are checked; ``user``/``password`` serve ``type = "login"``."""

    type: Literal["none", "tcp", "ftp", "login"] = "ftp"
    interval: PositiveDuration = 2.0
    rise: Annotated[int, Field(ge=1)] = 2
    fall: Annotated[int, Field(ge=1)] = 2
    timeout: PositiveDuration = 2.0
    # validate_default: the check must also run when the key is absent.
    user: str | None = Field(default=None, validate_default=True)
    password: str | None = Field(default=None, validate_default=True)

    @field_validator("user", "password")
    @classmethod
    def _required_for_login(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("type") == "login":
            raise PydanticCustomError("login_credentials", 'required when type = "login"', {})
        return value


class Server(_Section):
    """One FTP server; ``passive_ports`` is its own range for frontends in mode = "tcp"."""

    name: Name
    address: ServerAddress
    weight: Annotated[int, Field(ge=0, le=256)] = 1
    max_connections: Count = 0
    passive_ports: PortRangeField | None = None


class Backend(_Section):
    """A pool of servers with its balancing, stickiness, data and health policy."""

    name: Name
    balance: Literal["roundrobin", "leastconn", "source", "random", "user"] = "roundrobin"
    sticky: Literal["none", "source", "user"] = "none"
    sticky_timeout: Duration = 3600.0
    data_mode: Literal["passive", "active", "client"] = "passive"
    source: IpLiteral | None = None
    health: Health = Health()
    user_map: dict[str, str] = Field(default_factory=dict)
    servers: Annotated[list[Server], Field(min_length=1)]
    # TLS towards the servers: "none" offloads, the others re-encrypt.
    tls: TlsMode = "none"
    tls_verify: bool = True
    tls_ca: FilePath | None = None
    tls_server_name: TlsServerName | None = None


class Frontend(_Section):
    """Where clients connect, and the backend that serves them."""

    name: Name
    bind: Annotated[list[BindAddress], Field(min_length=1)]
    mode: Literal["ftp", "tcp"] = "ftp"
    backend: str
    passive_address: IpLiteral | None = None
    passive_ports: PortRangeField | None = None
    max_connections: Count = 0
    banner: ReplyText = "ftplb ready"
    # FTPS terminated here, with this certificate.
    tls: TlsMode = "none"
    tls_certificate: FilePath | None = None
    tls_key: FilePath | None = None
    tls_required: bool = False


def _check_admin_user(value: object) -> str:
    # HTTP basic auth ends the user name at the first ':'.
    if isinstance(value, str) and value and value.isprintable() and ":" not in value:
        return value
    raise PydanticCustomError(
        "admin_user",
        "invalid user name {value}: expected printable text without ':'",
        {"value": _show(value)},
    )


AdminUser = Annotated[str, PlainValidator(_check_admin_user)]


class Admin(_Section):
    """The HTTP listener of the stats page, the JSON stats and the Prometheus metrics."""

    bind: BindAddress = Endpoint("127.0.0.1", 8404)
    stats_refresh: PositiveDuration = 5.0
    # HTTP basic auth when both are set (the cross-check refuses one alone).
    user: AdminUser | None = None
    password: Annotated[str, Field(min_length=1)] | None = None


_CROSS_CHECK_ERROR = "config_cross_check"


class Config(_Section):
    """A whole, consistent configuration."""

    defaults: Defaults = Defaults()
    frontends: Annotated[list[Frontend], Field(min_length=1)]
    backends: Annotated[list[Backend], Field(min_length=1)]
    admin: Admin | None = None

    def backend(self, name: str) -> Backend:
        """The backend called ``name``; KeyError if there is none."""
        index = _backend_index(self, name)
        if index is None:
            raise KeyError(name)
        return self.backends[index]

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        problems = cross_check(self)
        if problems:
            # pydantic has one error location per validator; the problems travel
            # in the context so that problems_from_error can report each one.
            summary = "; ".join(f"{format_key(p.path)}: {p.message}" for p in problems)
            raise PydanticCustomError(
                _CROSS_CHECK_ERROR, "{summary}", {"summary": summary, "problems": problems}
            )
        return self


# --------------------------------------------------------------------------
# Cross-checks
# --------------------------------------------------------------------------


def cross_check(config: Config) -> list[Problem]:
    """Every inconsistency between sections, each at the path of the value to fix."""
    return [
        *_duplicate_names(config),
        *_unknown_backends(config),
        *_bind_conflicts(config),
        *_passive_range_conflicts(config),
        *_unknown_mapped_servers(config),
        *_user_routing_in_tcp_mode(config),
        *_frontend_tls_settings(config),
        *_backend_tls_settings(config),
        *_passive_ranges_for_workers(config),
        *_admin_settings(config),
    ]


def _duplicate_names(config: Config) -> Iterator[Problem]:
    groups: list[tuple[str, KeyPath, list[str]]] = [
        ("frontend", ("frontends",), [f.name for f in config.frontends]),
        ("backend", ("backends",), [b.name for b in config.backends]),
    ]
    for b, backend in enumerate(config.backends):
        groups.append(("server", ("backends", b, "servers"), [s.name for s in backend.servers]))
    for kind, prefix, names in groups:
        first_seen: dict[str, int] = {}
        for index, name in enumerate(names):
            if name in first_seen:
                where = format_key((*prefix, first_seen[name]))
                yield Problem(
                    (*prefix, index, "name"), f'duplicate {kind} name "{name}" (also {where})'
                )
            else:
                first_seen[name] = index


def _unknown_backends(config: Config) -> Iterator[Problem]:
    known = [b.name for b in config.backends]
    for f, frontend in enumerate(config.frontends):
        if frontend.backend not in known:
            listed = ", ".join(f'"{name}"' for name in known)
            yield Problem(
                ("frontends", f, "backend"),
                f'unknown backend "{frontend.backend}" (backends: {listed})',
            )


def _binds_clash(a: Endpoint, b: Endpoint) -> bool:
    if a.port != b.port:
        return False
    if a.host == b.host:
        return True
    # A wildcard listener takes the port on every address of its family.
    same_family = (":" in a.host) == (":" in b.host)
    return same_family and (a.is_wildcard or b.is_wildcard)


def _bind_conflicts(config: Config) -> Iterator[Problem]:
    seen: list[tuple[Endpoint, KeyPath]] = []
    for f, frontend in enumerate(config.frontends):
        for i, endpoint in enumerate(frontend.bind):
            path: KeyPath = ("frontends", f, "bind", i)
            for other, other_path in seen:
                if _binds_clash(endpoint, other):
                    yield Problem(
                        path, f"{endpoint} clashes with {other} bound by {format_key(other_path)}"
                    )
                    break
            seen.append((endpoint, path))


def _passive_range_conflicts(config: Config) -> Iterator[Problem]:
    """Ranges that two listeners would both claim.

    Frontend ranges are always listened on. In mode = "tcp" each server's own
    range is listened on too, so those join the same pool of claims.
    """
    claimed: list[tuple[PortRange, KeyPath]] = []

    def claim(ports: PortRange, path: KeyPath) -> Iterator[Problem]:
        for other, other_path in claimed:
            if ports.overlaps(other):
                yield Problem(path, f"range {ports} overlaps {other} of {format_key(other_path)}")
                break
        claimed.append((ports, path))

    for f, frontend in enumerate(config.frontends):
        if frontend.passive_ports is not None:
            yield from claim(frontend.passive_ports, ("frontends", f, "passive_ports"))

    for f, frontend, b in _tcp_backends(config):
        for s, server in enumerate(config.backends[b].servers):
            path: KeyPath = ("backends", b, "servers", s, "passive_ports")
            if server.passive_ports is None:
                yield Problem(
                    path,
                    f'missing: {format_key(("frontends", f))} ("{frontend.name}") relays this '
                    'backend in mode = "tcp", so each server needs its own passive_ports',
                )
            else:
                yield from claim(server.passive_ports, path)


def _unknown_mapped_servers(config: Config) -> Iterator[Problem]:
    for b, backend in enumerate(config.backends):
        servers = {s.name for s in backend.servers}
        for user, server in backend.user_map.items():
            if server not in servers:
                yield Problem(
                    ("backends", b, "user_map", user),
                    f'unknown server "{server}" in backend "{backend.name}"',
                )


def _user_routing_in_tcp_mode(config: Config) -> Iterator[Problem]:
    """Routing on the USER name where no USER is ever read.

    A frontend in mode = "tcp" relays the control connection unread (it may be
    TLS from the first byte), so its server is chosen before any command.
    """
    for f, frontend, b in _tcp_backends(config):
        backend = config.backends[b]
        reason = (
            f'{format_key(("frontends", f))} ("{frontend.name}") relays this backend in '
            'mode = "tcp" and never reads USER'
        )
        if backend.balance == "user":
            yield Problem(
                ("backends", b, "balance"),
                f'"user" cannot work: {reason}; use "source" to keep a client on one server',
            )
        if backend.sticky == "user":
            yield Problem(
                ("backends", b, "sticky"),
                f'"user" cannot work: {reason}; use "source" to keep a client on one server',
            )
        if backend.user_map:
            yield Problem(("backends", b, "user_map"), f"cannot work: {reason}")


def _passive_ranges_for_workers(config: Config) -> Iterator[Problem]:
    """Frontend passive ranges too small to give every worker a slice of its own."""
    workers = config.defaults.workers
    for f, frontend in enumerate(config.frontends):
        ports = frontend.passive_ports
        if ports is not None and ports.count < workers:
            yield Problem(
                ("frontends", f, "passive_ports"),
                f"range {ports} has {ports.count} port{'s' if ports.count != 1 else ''}, "
                f"fewer than defaults.workers = {workers}: each worker needs a slice of its own",
            )


def _tcp_backends(config: Config) -> Iterator[tuple[int, Frontend, int]]:
    """(frontend index, frontend, backend index) for each backend relayed in tcp
    mode, once per backend (through its first tcp frontend)."""
    checked: set[int] = set()
    for f, frontend in enumerate(config.frontends):
        if frontend.mode != "tcp":
            continue
        b = _backend_index(config, frontend.backend)
        if b is None or b in checked:
            continue
        checked.add(b)
        yield f, frontend, b


def _backend_index(config: Config, name: str) -> int | None:
    for index, backend in enumerate(config.backends):
        if backend.name == name:
            return index
    return None


def _frontend_tls_settings(config: Config) -> Iterator[Problem]:
    """TLS keys that contradict each other on a frontend."""
    for f, frontend in enumerate(config.frontends):
        here: KeyPath = ("frontends", f)
        if frontend.tls != "none" and frontend.mode == "tcp":
            yield Problem(
                (*here, "tls"),
                'cannot work with mode = "tcp": that mode relays TLS unread; '
                'use mode = "ftp" to terminate TLS here',
            )
        if frontend.tls != "none" and frontend.tls_certificate is None:
            yield Problem(
                (*here, "tls_certificate"), f'missing: tls = "{frontend.tls}" needs a certificate'
            )
        if frontend.tls == "none":
            # Compared with the defaults, not "was it written": a dumped and
            # reloaded config spells every default out.
            changed = {
                "tls_certificate": frontend.tls_certificate is not None,
                "tls_key": frontend.tls_key is not None,
                "tls_required": frontend.tls_required,
            }
            for key in (key for key, set_ in changed.items() if set_):
                yield Problem((*here, key), 'has no effect without tls = "explicit" or "implicit"')


def _backend_tls_settings(config: Config) -> Iterator[Problem]:
    """TLS keys of a backend that only make sense with TLS towards its servers."""
    for f, frontend, b in _tcp_backends(config):
        if config.backends[b].tls != "none":
            yield Problem(
                ("backends", b, "tls"),
                f'cannot work: {format_key(("frontends", f))} ("{frontend.name}") relays this '
                'backend in mode = "tcp", where the client\'s own TLS goes to the servers unread',
            )
    for b, backend in enumerate(config.backends):
        if backend.tls != "none":
            continue
        changed = {
            "tls_verify": not backend.tls_verify,
            "tls_ca": backend.tls_ca is not None,
            "tls_server_name": backend.tls_server_name is not None,
        }
        for key in (key for key, set_ in changed.items() if set_):
            yield Problem(
                ("backends", b, key), 'has no effect without tls = "explicit" or "implicit"'
            )


def _admin_settings(config: Config) -> Iterator[Problem]:
    """Admin credentials given by halves, and an admin bind that a frontend also needs."""
    admin = config.admin
    if admin is None:
        return
    if (admin.user is None) != (admin.password is None):
        given, missing = ("user", "password") if admin.password is None else ("password", "user")
        yield Problem(
            ("admin", missing), f"missing: {given} is set, and basic auth needs both or neither"
        )
    for f, frontend in enumerate(config.frontends):
        for i, endpoint in enumerate(frontend.bind):
            if _binds_clash(admin.bind, endpoint):
                where = format_key(("frontends", f, "bind", i))
                yield Problem(("admin", "bind"), f"{admin.bind} clashes with {endpoint} of {where}")
        ports = frontend.passive_ports
        if ports is not None and admin.bind.port in ports:
            where = format_key(("frontends", f, "passive_ports"))
            yield Problem(
                ("admin", "bind"),
                f"port {admin.bind.port} is in the passive range {ports} of {where}",
            )


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def format_key(path: KeyPath) -> str:
    """A key path as messages show it: ``backends[0].servers[1].weight``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _BARE_KEY_RE.fullmatch(part) else _show(part)
            text += f".{key}" if text else key
    return text


_TABLE_ERRORS = {"model_type", "model_attributes_type", "dict_type", "dataclass_type"}
_ARRAY_ERRORS = {"list_type", "tuple_type"}


def problems_from_error(error: ValidationError) -> list[Problem]:
    """One :class:`Problem` per finding in ``error``, with messages for humans."""
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        kind = item["type"]
        if kind == _CROSS_CHECK_ERROR:
            problems.extend(item["ctx"]["problems"])
            continue
        path: KeyPath = tuple(item["loc"])
        if kind == "extra_forbidden":
            message = f"unknown key {_show(path[-1])}"
        elif kind == "missing":
            message = "missing required key"
        elif kind in _TABLE_ERRORS:
            message = f"expected a table, got {_show(item['input'])}"
        elif kind in _ARRAY_ERRORS:
            message = f"expected an array, got {_show(item['input'])}"
        else:
            message = _strip_prefix(item["msg"])
        problems.append(Problem(path, message))
    return problems


def _strip_prefix(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message
