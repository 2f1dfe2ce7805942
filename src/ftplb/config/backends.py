"""The ``[[backends]]`` tables: pools of servers, their health check and TLS towards them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ftplb.config.fields import (
    Count,
    FilePath,
    IpLiteral,
    Name,
    PortRangeField,
    PositiveDuration,
    Section,
    ServerAddress,
    TlsCiphers,
    TlsMode,
    TlsServerName,
    TlsVersion,
)

__all__ = ["Backend", "Health", "Server"]


class Health(Section):
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


class Server(Section):
    """One FTP server; ``passive_ports`` is its own range for frontends in mode = "tcp"."""

    name: Name
    address: ServerAddress
    weight: Annotated[int, Field(ge=0, le=256)] = 1
    max_connections: Count = 0
    passive_ports: PortRangeField | None = None


class Backend(Section):
    """A pool of servers with its balancing, stickiness, data and health policy."""

    name: Name
    balance: Literal["roundrobin", "leastconn", "source", "random", "user"] = "roundrobin"
    sticky: Literal["none", "source", "user"] = "none"
    sticky_timeout: PositiveDuration = 3600.0
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
    tls_min_version: TlsVersion = "1.2"
    tls_max_version: TlsVersion = "1.3"
    tls_ciphers: TlsCiphers | None = None
    # A PROXY protocol header naming the client, at the start of each connection
    # to a server: the control connection, and the data connections too with
    # send_proxy_data.
    send_proxy: Literal["none", "v1", "v2"] = "none"
    send_proxy_data: bool = False
