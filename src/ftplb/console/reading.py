"""``/stats.json`` back into a :class:`Snapshot`, so the terminal shows the page's tables.

Keys this version does not know are left out, and fields an older balancer
does not send take their defaults: ``ftplb status`` of one version can watch
a balancer of another.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from ftplb.admin.snapshot import (
    BackendStats,
    BanInfo,
    FrontendStats,
    ProcessStats,
    ServerStats,
    Snapshot,
    TransferInProgress,
)

__all__ = ["StatsFormatError", "snapshot_from_json"]

_T = TypeVar("_T")


class StatsFormatError(ValueError):
    """The answer is not ``/stats.json`` as this version reads it."""


def _build(kind: type[_T], data: Any, **nested: Any) -> _T:
    if not isinstance(data, dict):
        raise StatsFormatError(f"expected an object for {kind.__name__}, got {type(data).__name__}")
    known = {field.name for field in fields(kind)}  # type: ignore[arg-type]
    values = {key: value for key, value in data.items() if key in known}
    try:
        return kind(**{**values, **nested})
    except TypeError as error:
        raise StatsFormatError(f"{kind.__name__}: {error}") from None


def _list(data: Any, key: str) -> list[Any]:
    if not isinstance(data, dict):
        raise StatsFormatError(f"expected an object with {key!r}, got {type(data).__name__}")
    value = data.get(key, [])
    if not isinstance(value, list):
        raise StatsFormatError(f"{key!r} is not a list")
    return value


def snapshot_from_json(data: Any) -> Snapshot:
    """The snapshot that ``data`` (the parsed ``/stats.json``) describes."""
    if not isinstance(data, dict):
        raise StatsFormatError("the answer is not a JSON object")
    backends = tuple(
        _build(
            BackendStats,
            backend,
            servers=tuple(_build(ServerStats, s) for s in _list(backend, "servers")),
        )
        for backend in _list(data, "backends")
    )
    frontends = tuple(
        _build(FrontendStats, frontend, binds=tuple(_list(frontend, "binds")))
        for frontend in _list(data, "frontends")
    )
    transfers = tuple(_build(TransferInProgress, t) for t in _list(data, "transfers"))
    # No "bans" (an older ftplb) and "bans": null both mean no defender.
    bans = (
        None if data.get("bans") is None else tuple(_build(BanInfo, b) for b in _list(data, "bans"))
    )
    process = data.get("process")
    return _build(
        Snapshot,
        data,
        frontends=frontends,
        backends=backends,
        transfers=transfers,
        bans=bans,
        process=None if process is None else _build(ProcessStats, process),
    )
