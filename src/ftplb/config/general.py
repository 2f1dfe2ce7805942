"""The sections about the balancer as a whole: ``[defaults]`` and ``[admin]``."""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass
from typing import Annotated, Literal, Self

from pydantic import Field, PlainSerializer, PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from ftplb.config.fields import (
    BindAddress,
    Count,
    Endpoint,
    PositiveDuration,
    Section,
    parse_endpoint,
)
from ftplb.config.limits import ClientLimitDefaults
from ftplb.config.password_hash import PasswordHashError, parse_password_hash
from ftplb.config.problems import as_written

__all__ = ["Admin", "AdminUserEntry", "Defaults", "SyslogAddress"]


@dataclass(frozen=True, slots=True)
class SyslogAddress:
    """Where syslog lines go: a Unix datagram socket ``path``, or ``udp`` to a host and port."""

    path: str = ""
    udp: Endpoint | None = None

    def __str__(self) -> str:
        return f"udp://{self.udp}" if self.udp is not None else self.path


_SYSLOG_FORMS = '"/dev/log" (a Unix socket path) or "udp://127.0.0.1:514"'


def parse_syslog_address(value: object) -> SyslogAddress:
    """A :class:`SyslogAddress` from an absolute socket path or ``udp://HOST:PORT``."""

    def error(reason: str) -> PydanticCustomError:
        return PydanticCustomError(
            "syslog_address",
            "invalid syslog address {value}: {reason}; expected {forms}",
            {"value": as_written(value), "reason": reason, "forms": _SYSLOG_FORMS},
        )

    if isinstance(value, SyslogAddress):
        return value
    if not isinstance(value, str) or not value:
        raise error("not a string")
    if value.startswith("udp://"):
        try:
            endpoint = parse_endpoint(value.removeprefix("udp://"))
        except PydanticCustomError as problem:
            reason = (problem.context or {}).get("reason", "not HOST:PORT")
            raise error(str(reason)) from None
        if endpoint.is_wildcard:
            raise error("the host must be a specific address, not a wildcard")
        return SyslogAddress(udp=endpoint)
    if "://" in value:
        raise error("the only scheme is udp://")
    if not value.startswith("/") or "\0" in value:
        raise error("a Unix socket path must be absolute")
    return SyslogAddress(path=value)


SyslogAddressField = Annotated[
    SyslogAddress, PlainValidator(parse_syslog_address), PlainSerializer(str)
]


def _check_user(value: object) -> str:
    # Looked up when the file is read, so that `ftplb check` names an unknown user.
    if isinstance(value, str) and value:
        try:
            pwd.getpwnam(value)
        except KeyError:
            pass
        else:
            return value
        raise PydanticCustomError(
            "user",
            "unknown user {value}: no such user on this system",
            {"value": as_written(value)},
        )
    raise PydanticCustomError(
        "user", "invalid user {value}: expected a user name", {"value": as_written(value)}
    )


def _check_group(value: object) -> str:
    if isinstance(value, str) and value:
        try:
            grp.getgrnam(value)
        except KeyError:
            pass
        else:
            return value
        raise PydanticCustomError(
            "group",
            "unknown group {value}: no such group on this system",
            {"value": as_written(value)},
        )
    raise PydanticCustomError(
        "group", "invalid group {value}: expected a group name", {"value": as_written(value)}
    )


SystemUser = Annotated[str, PlainValidator(_check_user)]
SystemGroup = Annotated[str, PlainValidator(_check_group)]


class Defaults(ClientLimitDefaults):
    """Settings for the whole balancer: timeouts, retries, logging, global limits,
    and the per-client limits of every frontend (its base class)."""

    timeout_connect: PositiveDuration = 5.0
    timeout_client: PositiveDuration = 300.0
    timeout_server: PositiveDuration = 300.0
    timeout_data: PositiveDuration = 30.0
    timeout_shutdown: PositiveDuration = 300.0
    """How long a graceful stop (SIGTERM) lets running sessions and transfers finish."""
    retries: Count = 2
    redispatch: bool = True
    log_format: Literal["text", "json"] = "text"
    log_commands: bool = False
    log_target: Literal["stderr", "syslog"] = "stderr"
    """Where log lines go: stderr, or syslog as RFC 5424 messages (see docs/logs.md)."""
    syslog_address: SyslogAddressField = SyslogAddress(path="/dev/log")
    max_line_length: Annotated[int, Field(ge=512, le=65536)] = 4096
    max_connections: Count = 0
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Worker processes sharing the listeners (see docs/workers.md)."""
    # Privileges (docs/operations.md, "Running as a system service").
    user: SystemUser | None = None
    """The user to run as once the listeners are open; ftplb starts as root to open them."""
    group: SystemGroup | None = None
    """The group to run as with ``user``; by default the user's primary group."""

    @model_validator(mode="after")
    def _group_needs_user(self) -> Self:
        if self.group is not None and self.user is None:
            raise PydanticCustomError(
                "group_without_user", "group is set without user: set both, or neither"
            )
        return self


def _check_admin_user(value: object) -> str:
    # HTTP basic auth ends the user name at the first ':'.
    if isinstance(value, str) and value and value.isprintable() and ":" not in value:
        return value
    raise PydanticCustomError(
        "admin_user",
        "invalid user name {value}: expected printable text without ':'",
        {"value": as_written(value)},
    )


AdminUser = Annotated[str, PlainValidator(_check_admin_user)]


def _check_password_hash(value: object) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "password_hash",
            "invalid password hash {value}: expected text (ftplb hash-password makes one)",
            {"value": as_written(value)},
        )
    try:
        parse_password_hash(value)
    except PasswordHashError as error:
        raise PydanticCustomError("password_hash", "{reason}", {"reason": str(error)}) from None
    # Kept as written: the configuration dumps and reloads as text.
    return value


PasswordHashText = Annotated[str, PlainValidator(_check_password_hash)]

AdminRole = Literal["admin", "read-only"]
"""What a user may do: "admin" reads and acts on servers, "read-only" only reads."""


class AdminUserEntry(Section):
    """One ``[[admin.users]]`` table: a user of the admin listener."""

    name: AdminUser
    password_hash: PasswordHashText
    # The least privilege unless the file says otherwise.
    role: AdminRole = "read-only"


class Admin(Section):
    """The HTTP listener of the stats page, the JSON stats, the metrics and the API."""

    bind: BindAddress = Endpoint("127.0.0.1", 8404)
    stats_refresh: PositiveDuration = 5.0
    users: list[AdminUserEntry] = []
    # The legacy single user, with its password in plain text: an "admin"
    # user when both are set (the cross-check refuses one alone).
    user: AdminUser | None = None
    password: Annotated[str, Field(min_length=1)] | None = None

    @property
    def plain_password(self) -> bool:
        """True when the file holds a password in plain text (the legacy keys)."""
        return self.password is not None
