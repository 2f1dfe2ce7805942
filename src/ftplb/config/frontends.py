"""The ``[[frontends]]`` tables: where clients connect, and the FTPS terminated there."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ftplb.config.fields import (
    BindAddress,
    Cidr,
    Count,
    FilePath,
    IpLiteral,
    Name,
    PortRangeField,
    ReplyText,
    Section,
    TlsMode,
)

__all__ = ["Frontend"]


class Frontend(Section):
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
    # A PROXY protocol header (v1 or v2) before the first byte of every
    # connection, from these sources only.
    accept_proxy: bool = False
    proxy_trusted: list[Cidr] = Field(default_factory=list)
