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
    SniName,
    TlsCiphers,
    TlsMode,
    TlsVersion,
)
from ftplb.config.limits import ClientLimitOverrides

__all__ = ["Frontend", "SniCertificate"]


class SniCertificate(Section):
    """A certificate a frontend presents to clients that ask for one of ``names`` by SNI."""

    names: Annotated[list[SniName], Field(min_length=1)]
    certificate: FilePath
    key: FilePath | None = None


class Frontend(ClientLimitOverrides):
    """Where clients connect, and the backend that serves them; its per-client
    limits, when set, come from its base class."""

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
    tls_min_version: TlsVersion = "1.2"
    tls_max_version: TlsVersion = "1.3"
    tls_ciphers: TlsCiphers | None = None
    tls_session_reuse: Literal["optional", "required"] = "optional"
    tls_sni: list[SniCertificate] = Field(default_factory=list)
    # A PROXY protocol header (v1 or v2) before the first byte of every
    # connection, from these sources only.
    accept_proxy: bool = False
    proxy_trusted: list[Cidr] = Field(default_factory=list)
