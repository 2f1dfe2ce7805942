"""The ``[[frontends]]`` tables: where clients connect, and the FTPS terminated there."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ftplb.config.fields import (
    BindAddress,
    Count,
    FilePath,
    IpLiteral,
    Name,
    PortRangeField,
    ReplyText,
    TlsMode,
)
from ftplb.config.limits import ClientLimitOverrides

__all__ = ["Frontend"]


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
