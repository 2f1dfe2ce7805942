"""Read a TOML configuration file into a validated :class:`Config`.

Every problem is reported the way a compiler would, so an editor can jump to
it: ``FILE:LINE: KEY: MESSAGE``, for example
``ftplb.toml:14: backends[0].servers[0].weight: Input should be less than or equal to 256``.
All problems in a file are reported together, not just the first: when some
sections fail validation, the cross-checks and the checks of TLS files still
run on the sections that passed, so one run lists the key and type errors
and the inconsistencies between sections alike, in file order.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from ftplb.config.locate import index_lines, nearest_line
from ftplb.config.problems import KeyPath, Problem, format_key, problems_from_error
from ftplb.config.schema import Config, advisories, cross_check
from ftplb.config.sections import Sections, present, validated_sections

__all__ = ["ConfigError", "check_config", "config_warnings", "load_config", "load_config_text"]

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
    return load_config_text(text, source, base_dir=os.path.dirname(os.path.abspath(source)))


def load_config_text(
    text: str, source: str = "<string>", *, base_dir: str | os.PathLike[str] | None = None
) -> Config:
    """The configuration in ``text``; ``source`` names it in error messages.

    Relative file paths in it (TLS certificates, keys, CAs) are taken from
    ``base_dir`` (the current directory when None), and made absolute.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([_syntax_problem(str(error), text, source)]) from None
    base = os.fspath(base_dir) if base_dir is not None else os.getcwd()
    _absolute_file_paths(data, base)
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        # The cross-checks run on whatever validated, whether or not the whole
        # file got as far as running them.
        problems = problems_from_error(error, Config, cross_checks=False)
        sections = validated_sections(data)
        problems += cross_check(sections)
        problems += _tls_file_problems(sections)
    else:
        problems = list(_tls_file_problems(config.sections()))
        if not problems:
            return config
    raise ConfigError(_format_problems(problems, text, source))


def check_config(path: str | os.PathLike[str]) -> list[str]:
    """Every problem in the file at ``path``, formatted; [] when it is valid."""
    try:
        load_config(path)
    except ConfigError as error:
        return error.problems
    return []


def config_warnings(path: str | os.PathLike[str]) -> list[str]:
    """What the valid file at ``path`` had better not do, formatted as
    ``FILE:LINE: KEY: warning: MESSAGE``; [] when it is not valid at all."""
    try:
        config = load_config(path)
        text = Path(path).read_text(encoding="utf-8")
    except (ConfigError, OSError, UnicodeDecodeError):
        return []
    warnings = [
        Problem(problem.path, f"warning: {problem.message}") for problem in advisories(config)
    ]
    return _format_problems(warnings, text, os.fspath(path))


# (section, key) of every value that names a file.
_FILE_KEYS = (
    ("frontends", "tls_certificate"),
    ("frontends", "tls_key"),
    ("backends", "tls_ca"),
)

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
_MAX_PEM_BYTES = 1 << 20


def _absolute_file_paths(data: dict[str, object], base: str) -> None:
    """Make relative file paths absolute against ``base``, in place, before validation.

    Leaves anything that is not a string alone, for the schema to report.
    """
    for section, key in _FILE_KEYS:
        for table in _tables(data.get(section)):
            _make_absolute(table, key, base)
    for frontend in _tables(data.get("frontends")):
        for entry in _tables(frontend.get("tls_sni")):
            _make_absolute(entry, "certificate", base)
            _make_absolute(entry, "key", base)


def _tables(value: object) -> Iterator[dict[str, object]]:
    """The tables of an array of tables; anything else is left for the schema to report."""
    if isinstance(value, list):
        yield from (table for table in value if isinstance(table, dict))


def _make_absolute(table: dict[str, object], key: str, base: str) -> None:
    value = table.get(key)
    if isinstance(value, str) and value and not os.path.isabs(value):
        table[key] = os.path.normpath(os.path.join(base, value))


def _read_pem(path: str) -> tuple[bytes | None, str]:
    """The start of a PEM file, or None and the reason it cannot be read."""
    try:
        with open(path, "rb") as file:
            return file.read(_MAX_PEM_BYTES), ""
    except OSError as error:
        return None, f"cannot read {path}: {error.strerror or error}"


def _tls_file_problems(config: Sections) -> Iterator[Problem]:
    """Files named for TLS that are missing, unreadable, or hold no PEM of the right kind.

    Only the PEM markers are looked at here; whether OpenSSL accepts the
    contents (a key that matches its certificate, say) is checked at start-up.
    """
    for f, frontend in present(config.frontends):
        here: KeyPath = ("frontends", f)
        yield from _pair_problems(
            (frontend.tls_certificate, (*here, "tls_certificate")),
            (frontend.tls_key, (*here, "tls_key")),
        )
        for i, entry in enumerate(frontend.tls_sni):
            yield from _pair_problems(
                (entry.certificate, (*here, "tls_sni", i, "certificate")),
                (entry.key, (*here, "tls_sni", i, "key")),
            )
    for b, backend in present(config.backends):
        if backend.tls_ca is not None:
            pem, problem = _read_pem(backend.tls_ca)
            if pem is None:
                yield Problem(("backends", b, "tls_ca"), problem)
            elif _PEM_CERTIFICATE not in pem:
                yield Problem(
                    ("backends", b, "tls_ca"), f"{backend.tls_ca} holds no PEM certificate"
                )


def _pair_problems(
    certificate: tuple[str | None, KeyPath], key: tuple[str | None, KeyPath]
) -> Iterator[Problem]:
    """A certificate file and its key file (or None: the key is in the certificate's file)."""
    cert_path, cert_where = certificate
    key_path, key_where = key
    cert_pem = b""
    if cert_path is not None:
        pem, problem = _read_pem(cert_path)
        if pem is None:
            yield Problem(cert_where, problem)
        elif _PEM_CERTIFICATE not in pem:
            yield Problem(cert_where, f"{cert_path} holds no PEM certificate")
        else:
            cert_pem = pem
    if key_path is not None:
        pem, problem = _read_pem(key_path)
        if pem is None:
            yield Problem(key_where, problem)
        elif not _PEM_PRIVATE_KEY.search(pem):
            yield Problem(key_where, f"{key_path} holds no PEM private key")
    elif cert_pem and not _PEM_PRIVATE_KEY.search(cert_pem):
        yield Problem(
            cert_where,
            f"{cert_path} holds no private key, and {key_where[-1]} is not set",
        )


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
