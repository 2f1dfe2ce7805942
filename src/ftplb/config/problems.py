"""How a configuration's problems are named and worded.

A :class:`Problem` pairs a message with the key path of the value it is about,
so that the loader can point at a file line. :func:`problems_from_error` turns
a pydantic ``ValidationError`` into one :class:`Problem` per finding, the
cross-check findings of :class:`~ftplb.config.schema.Config` included (or
left out, for a loader that runs the cross-checks itself), and offers the
closest valid key or value for a misspelt one; :func:`format_key` spells a
key path the way messages show it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from ftplb.config.suggest import allowed_values, did_you_mean, keys_of_table

__all__ = [
    "CROSS_CHECK_ERROR",
    "KeyPath",
    "Problem",
    "as_written",
    "format_key",
    "problems_from_error",
]

KeyPath = tuple[str | int, ...]
"""Where a value sits in the file: table keys and array indices, outermost first."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration, and the key path it is about."""

    path: KeyPath
    message: str


CROSS_CHECK_ERROR = "config_cross_check"
"""The pydantic error type that carries the cross-check problems in its context."""


def as_written(value: object) -> str:
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


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def format_key(path: KeyPath) -> str:
    """A key path as messages show it: ``backends[0].servers[1].weight``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if _BARE_KEY_RE.fullmatch(part) else as_written(part)
            text += f".{key}" if text else key
    return text


_TABLE_ERRORS = {"model_type", "model_attributes_type", "dict_type", "dataclass_type"}
_ARRAY_ERRORS = {"list_type", "tuple_type"}


def problems_from_error(
    error: ValidationError,
    model: type[BaseModel] | None = None,
    *,
    cross_checks: bool = True,
) -> list[Problem]:
    """One :class:`Problem` per finding in ``error``, with messages for humans.

    ``model`` is the model that raised ``error``: given it, a misspelt key or
    fixed-choice value is offered its closest valid spelling. With
    ``cross_checks=False`` the cross-check findings are left out.
    """
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        kind = item["type"]
        if kind == CROSS_CHECK_ERROR:
            if cross_checks:
                problems.extend(item["ctx"]["problems"])
            continue
        path: KeyPath = tuple(item["loc"])
        if kind == "extra_forbidden":
            message = f"unknown key {as_written(path[-1])}"
            if model is not None:
                message += did_you_mean(str(path[-1]), keys_of_table(model, path[:-1]))
        elif kind == "literal_error" and model is not None and isinstance(item["input"], str):
            choices = allowed_values(model, path)
            message = _strip_prefix(item["msg"]) + did_you_mean(item["input"], choices)
        elif kind == "missing":
            message = "missing required key"
        elif kind in _TABLE_ERRORS:
            message = f"expected a table, got {as_written(item['input'])}"
        elif kind in _ARRAY_ERRORS:
            message = f"expected an array, got {as_written(item['input'])}"
        else:
            message = _strip_prefix(item["msg"])
        problems.append(Problem(path, message))
    return problems


def _strip_prefix(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message
