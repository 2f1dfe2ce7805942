"""What a misspelt key or value was probably meant to be.

Given the model of the whole file and the key path of a problem, this finds
what is valid at that place (the keys of the table there, or the values a
fixed-choice field allows) and offers the closest one, as difflib judges it.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = ["allowed_values", "did_you_mean", "keys_of_table"]

KeyPath = tuple[str | int, ...]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``'; did you mean "X"?'`` for the choice closest to ``word``; "" if none is close."""
    matches = difflib.get_close_matches(word, sorted(set(choices)), n=1)
    return f'; did you mean "{matches[0]}"?' if matches else ""


def keys_of_table(root: type[BaseModel], path: KeyPath) -> list[str]:
    """The keys valid in the table at ``path`` (names and aliases); [] if it is no model."""
    model = _model_in(_annotation_at(root, path))
    if model is None:
        return []
    keys = []
    for name, field in model.model_fields.items():
        keys.append(name)
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                keys.append(alias)
    return keys


def allowed_values(root: type[BaseModel], path: KeyPath) -> list[str]:
    """The strings a fixed-choice field at ``path`` allows; [] for any other field."""
    annotation = _strip(_annotation_at(root, path))
    if get_origin(annotation) is not Literal:
        return []
    return [value for value in get_args(annotation) if isinstance(value, str)]


def _annotation_at(root: type[BaseModel], path: KeyPath) -> object:
    """The type of the value at ``path``, or None where the path leaves the models."""
    annotation: object = root
    for part in path:
        if isinstance(part, int):
            annotation = _item_type(annotation)
            continue
        model = _model_in(annotation)
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        annotation = field.annotation
    return annotation


def _strip(annotation: object) -> object:
    """``X`` from ``Annotated[X, ...]`` and from ``X | None``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _strip(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        kept = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(kept) == 1:
            return _strip(kept[0])
    return annotation


def _item_type(annotation: object) -> object:
    annotation = _strip(annotation)
    if get_origin(annotation) in (list, tuple):
        args = get_args(annotation)
        return args[0] if args else None
    return None


def _model_in(annotation: object) -> type[BaseModel] | None:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
