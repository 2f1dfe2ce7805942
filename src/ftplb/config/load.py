"""Read a TOML configuration file into a validated :class:`Config`.

Every problem is reported the way a compiler would, so an editor can jump to
it: ``FILE:LINE: KEY: MESSAGE``, for example
``ftplb.toml:14: backends[0].servers[0].weight: Input should be less than or equal to 256``.
All problems in a file are reported together, not just the first.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from pydantic import ValidationError

from ftplb.config.locate import index_lines, nearest_line
from ftplb.config.schema import Config, Problem, format_key, problems_from_error

__all__ = ["ConfigError", "check_config", "load_config", "load_config_text"]

# tomllib (3.11) has no line attribute; the position is only in the message.
_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END_RE = re.compile(r"\s*\(at end of document\)$")


class ConfigError(Exception):
    """A configuration that cannot be used, with one formatted line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: str | os.PathLike[str]) -> Config:
    """The configuration in the TOML file at ``path``; ConfigError if it is unusable."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError([f"{source}: cannot read file: {reason}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError([f"{source}:{line}: not valid UTF-8 text"]) from None
    return load_config_text(text, source)


def load_config_text(text: str, source: str = "<string>") -> Config:
    """The configuration in ``text``; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_syntax_problem(str(error), text, source)]) from None
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        problems = problems_from_error(error)
    raise ConfigError(_format_problems(problems, text, source))


def check_config(path: str | os.PathLike[str]) -> list[str]:
    """Every problem in the file at ``path``, formatted; [] when it is valid."""
    try:
        load_config(path)
    except ConfigError as error:
        return error.problems
    return []


def _syntax_problem(message: str, text: str, source: str) -> str:
    position = _TOML_POSITION_RE.search(message)
    if position is not None:
        line, column = position.groups()
        return (
            f"{source}:{line}: TOML syntax error: {message[: position.start()]} (column {column})"
        )
    at_end = _TOML_AT_END_RE.search(message)
    if at_end is not None:
        line = str(text.count("\n") + (0 if text.endswith("\n") else 1))
        return f"{source}:{line}: TOML syntax error: {message[: at_end.start()]} (at end of file)"
    return f"{source}: TOML syntax error: {message}"


def _format_problems(problems: list[Problem], text: str, source: str) -> list[str]:
    lines = index_lines(text)
    located = [(nearest_line(lines, problem.path), problem) for problem in problems]
    # In file order, as a compiler would list them; problems with no line first.
    located.sort(key=lambda pair: pair[0] or 0)
    formatted = []
    for line, problem in located:
        where = source if line is None else f"{source}:{line}"
        key = format_key(problem.path)
        formatted.append(
            f"{where}: {key}: {problem.message}" if key else f"{where}: {problem.message}"
        )
    return formatted
