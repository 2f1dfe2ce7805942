"""The sections of a configuration that the cross-checks read, valid or not.

A file with a misspelt key in one backend still has frontends, ranges and
names worth checking against each other, so that one ``ftplb check`` lists
every problem rather than the first layer of them. :class:`Sections` holds
each section at its place in the file, as a validated model, or None where
that section failed validation; the cross-checks skip the Nones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from ftplb.config.backends import Backend
from ftplb.config.defender import Defender
from ftplb.config.frontends import Frontend
from ftplb.config.general import Admin, Defaults

__all__ = ["Sections", "present", "validated_sections"]

_Model = TypeVar("_Model", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Sections:
    """Each section of a file, validated, or None where it failed validation.

    ``frontends`` and ``backends`` keep the file's indices, so that a problem
    found in the third frontend is reported at ``frontends[2]`` whatever
    happened to the first two. ``backend_names`` holds the name of each
    backend as written, even of one that failed validation: a frontend that
    names it is not refused as naming an unknown backend.
    """

    defaults: Defaults | None
    frontends: Sequence[Frontend | None]
    backends: Sequence[Backend | None]
    backend_names: Sequence[str | None]
    admin: Admin | None
    defender: Defender | None = None


def present(items: Sequence[_Model | None]) -> Iterator[tuple[int, _Model]]:
    """(index in the file, section) of every section that validated."""
    for index, item in enumerate(items):
        if item is not None:
            yield index, item


def validated_sections(data: Mapping[str, object]) -> Sections:
    """Each section of the parsed TOML ``data`` validated on its own.

    Their problems are not kept: validating the whole file reports them.
    """
    frontends = _tables(data.get("frontends"))
    backends = _tables(data.get("backends"))
    admin = data.get("admin")
    defender = data.get("defender")
    return Sections(
        defaults=_validated(Defaults, data.get("defaults", {})),
        frontends=[_validated(Frontend, table) for table in frontends],
        backends=[_validated(Backend, table) for table in backends],
        backend_names=[_name(table) for table in backends],
        admin=None if admin is None else _validated(Admin, admin),
        defender=None if defender is None else _validated(Defender, defender),
    )


def _tables(value: object) -> list[object]:
    # Anything but an array of tables is the whole file's problem to report.
    return list(value) if isinstance(value, list) else []


def _validated(model: type[_Model], value: object) -> _Model | None:
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _name(table: object) -> str | None:
    if isinstance(table, dict):
        name = table.get("name")
        if isinstance(name, str):
            return name
    return None
