"""docs/configuration.md documents every key of the schema, in the section of its table.

The schema's models are walked from :class:`Config` down, through nested models
and lists of models, and each model's TOML table (``[defaults]``,
``[[backends.servers]]``, ...) must have a ``##`` section in the page whose
heading names it. Each key of the model, as the file spells it (its alias when
it has one), must have a row of that section's key table: a line that starts
``| `key` |``. A key documented only in another table's section does not count.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ftplb.config.schema import Config

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

ROOT_HEADING = "Top level"
"""The heading of the section that lists the file's top-level keys."""


@dataclass(frozen=True)
class Table:
    """A model of the schema and the TOML header of its table ("" for the top level)."""

    header: str
    model: type[BaseModel]


def _toml_key(name: str, field: FieldInfo) -> str:
    """The key as a TOML file spells it: the field's alias when it has one."""
    if isinstance(field.validation_alias, str):
        return field.validation_alias
    return field.alias or name


def _models_in(annotation: object) -> Iterator[tuple[type[BaseModel], bool]]:
    """Each model inside a field's type, and whether it sits in a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, False
        return
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from _models_in(arguments[0])
    elif origin in (list, tuple):
        for argument in arguments:
            for model, _ in _models_in(argument):
                yield model, True
    elif origin in (typing.Union, types.UnionType):
        for argument in arguments:
            yield from _models_in(argument)


def _tables(model: type[BaseModel] = Config, path: str = "", header: str = "") -> Iterator[Table]:
    """Every table of the schema, from ``model`` down."""
    yield Table(header, model)
    for name, field in model.model_fields.items():
        key = _toml_key(name, field)
        dotted = f"{path}.{key}" if path else key
        for nested, in_list in _models_in(field.annotation):
            nested_header = f"[[{dotted}]]" if in_list else f"[{dotted}]"
            yield from _tables(nested, dotted, nested_header)


def _sections(text: str) -> dict[str, str]:
    """The page's ``##`` sections by heading, each up to the next ``##`` heading."""
    sections: dict[str, str] = {}
    parts = re.split(r"^## +(.+?) *$", text, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        sections[heading] = body
    return sections


def _section_of(table: Table, sections: dict[str, str]) -> str | None:
    if not table.header:
        return sections.get(ROOT_HEADING)
    wanted = f"`{table.header}`"
    for heading, body in sections.items():
        if wanted in heading:
            return body
    return None


_ROW_KEY_RE = re.compile(r"^\| *`([^`]+)` *\|", re.MULTILINE)


def _documented_keys(section: str) -> set[str]:
    return set(_ROW_KEY_RE.findall(section))


TABLES = list(_tables())


def test_the_schema_walk_finds_every_table() -> None:
    # Guards the walk itself: a model it missed would go unchecked.
    assert [table.header for table in TABLES] == [
        "",
        "[defaults]",
        "[[frontends]]",
        "[[frontends.tls_sni]]",
        "[[backends]]",
        "[backends.health]",
        "[[backends.servers]]",
        "[admin]",
        "[[admin.users]]",
        "[defender]",
    ]


@pytest.mark.parametrize("table", TABLES, ids=lambda table: table.header or "top level")
def test_every_key_has_a_row_in_its_tables_section(table: Table) -> None:
    sections = _sections(DOC.read_text(encoding="utf-8"))
    section = _section_of(table, sections)
    heading = f"`{table.header}`" if table.header else ROOT_HEADING
    assert section is not None, f"{DOC.name} has no '## ' section whose heading names {heading}"
    documented = _documented_keys(section)
    missing = [
        _toml_key(name, field)
        for name, field in table.model.model_fields.items()
        if _toml_key(name, field) not in documented
    ]
    assert not missing, (
        f"{DOC.name}, section {heading}: no row for the key(s) {', '.join(missing)} "
        "(a table row that starts with | `KEY` |)"
    )


@pytest.mark.parametrize("table", TABLES, ids=lambda table: table.header or "top level")
def test_no_row_names_a_key_the_table_does_not_have(table: Table) -> None:
    sections = _sections(DOC.read_text(encoding="utf-8"))
    section = _section_of(table, sections)
    assert section is not None
    known = {_toml_key(name, field) for name, field in table.model.model_fields.items()}
    stale = _documented_keys(section) - known
    assert not stale, f"{DOC.name}, section {table.header or ROOT_HEADING}: unknown key(s) {stale}"


def test_a_key_in_another_tables_section_does_not_count() -> None:
    # The check is per section: [admin] has a `user` key, and so does
    # [backends.health], yet neither row may stand in for the other.
    page = (
        "## `[admin]`\n\n| `bind` | x |\n\n"
        "## `[backends.health]`\n\n| `user` | x |\n| `password` | x |\n"
    )
    sections = _sections(page)
    admin = _section_of(Table("[admin]", Config), sections)
    assert admin is not None
    assert _documented_keys(admin) == {"bind"}
