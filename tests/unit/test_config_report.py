"""One check lists every problem of a file, and offers the spelling a typo meant.

Key and type errors, the cross-checks between sections and the checks of TLS
files all run in the same pass: a cross-check runs on the sections that
validated. Each test asserts the whole list of messages, in file order.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ftplb.config.backends import Backend
from ftplb.config.frontends import Frontend
from ftplb.config.load import ConfigError, check_config, load_config
from ftplb.config.schema import Config, cross_check
from ftplb.config.sections import Sections, validated_sections
from ftplb.config.suggest import allowed_values, did_you_mean, keys_of_table

SEVERAL_STAGES = """\
[defaults]
timout_connect = "5s"

[[frontends]]
name = "ftp"
bind = ["127.0.0.1:2121"]
backend = "pool"
passive_ports = "40000-40999"

[[frontends]]
name = "ftp2"
bind = ["127.0.0.1:2122"]
backend = "poool"
passive_ports = "40500-41500"

[[frontends]]
name = "broken"
bind = ["127.0.0.1:99999"]
backend = "nowhere"
passive_ports = "40000-40010"

[[backends]]
name = "pool"
balance = "roundrobbin"

[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"
weight = "heavy"
"""


def problems(tmp_path: Path, text: str) -> tuple[str, list[str]]:
    path = tmp_path / "ftplb.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert check_config(path) == raised.value.problems
    return str(path), raised.value.problems


def test_key_type_and_cross_check_problems_in_one_list(tmp_path: Path) -> None:
    name, found = problems(tmp_path, SEVERAL_STAGES)
    # frontends[0] names a backend that failed validation but has a name: no
    # "unknown backend". frontends[2] failed validation: only its own problem,
    # not its unknown backend nor its range that overlaps frontends[0]'s.
    assert found == [
        f'{name}:2: defaults.timout_connect: unknown key "timout_connect"; '
        'did you mean "timeout_connect"?',
        f'{name}:13: frontends[1].backend: unknown backend "poool" (backends: "pool")',
        f"{name}:14: frontends[1].passive_ports: range 40500-41500 overlaps 40000-40999 of "
        "frontends[0].passive_ports",
        f'{name}:18: frontends[2].bind[0]: invalid address "127.0.0.1:99999": the port must be '
        'a number from 1 to 65535; expected "1.2.3.4:21", "[::1]:21", "localhost:21" or "*:21"',
        f"{name}:24: backends[0].balance: Input should be 'roundrobin', 'leastconn', 'source', "
        "'random' or 'user'; did you mean \"roundrobin\"?",
        f"{name}:29: backends[0].servers[0].weight: Input should be a valid integer",
    ]


def test_tls_files_are_checked_beside_key_errors(tmp_path: Path) -> None:
    text = """\
    [[frontends]]
    name = "ftps"
    bind = ["127.0.0.1:2121"]
    backend = "pool"
    tls = "explicit"
    tls_certificate = "absent.pem"

    [[backends]]
    name = "pool"
    retries = 2

    [[backends.servers]]
    name = "s1"
    address = "127.0.0.11:21"
    """
    name, found = problems(tmp_path, text)
    certificate = tmp_path / "absent.pem"
    assert found == [
        f"{name}:6: frontends[0].tls_certificate: cannot read {certificate}: "
        "No such file or directory",
        f'{name}:10: backends[0].retries: unknown key "retries"',
    ]


def test_tls_files_are_checked_beside_cross_check_problems(tmp_path: Path) -> None:
    text = """\
    [[frontends]]
    name = "ftps"
    bind = ["127.0.0.1:2121"]
    backend = "nope"
    tls = "implicit"
    tls_certificate = "absent.pem"

    [[backends]]
    name = "pool"

    [[backends.servers]]
    name = "s1"
    address = "127.0.0.11:21"
    """
    name, found = problems(tmp_path, text)
    certificate = tmp_path / "absent.pem"
    assert found == [
        f'{name}:4: frontends[0].backend: unknown backend "nope" (backends: "pool")',
        f"{name}:6: frontends[0].tls_certificate: cannot read {certificate}: "
        "No such file or directory",
    ]


def test_a_backend_without_a_readable_name_does_not_count(tmp_path: Path) -> None:
    text = """\
    [[frontends]]
    name = "ftp"
    bind = ["127.0.0.1:2121"]
    backend = "pool"

    [[backends]]
    name = 7

    [[backends.servers]]
    name = "s1"
    address = "127.0.0.11:21"
    """
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:4: frontends[0].backend: unknown backend "pool" (backends: )',
        f"{name}:7: backends[0].name: invalid name 7: use one or more letters, digits, "
        "'_', '-' or '.'",
    ]


def test_workers_check_needs_valid_defaults(tmp_path: Path) -> None:
    # With [defaults] refused, the worker count is unknown: no guess at it.
    text = """\
    [defaults]
    workers = 4
    retries = "many"

    [[frontends]]
    name = "ftp"
    bind = ["127.0.0.1:2121"]
    backend = "pool"
    passive_ports = "40000-40001"

    [[backends]]
    name = "pool"

    [[backends.servers]]
    name = "s1"
    address = "127.0.0.11:21"
    """
    name, found = problems(tmp_path, text)
    assert found == [f"{name}:3: defaults.retries: Input should be a valid integer"]
    name, found = problems(tmp_path, text.replace('retries = "many"', "retries = 1"))
    assert found == [
        f"{name}:9: frontends[0].passive_ports: range 40000-40001 has 2 ports, fewer than "
        "defaults.workers = 4: each worker needs a slice of its own"
    ]


def test_duplicate_names_count_backends_that_failed_validation(tmp_path: Path) -> None:
    text = """\
    [[frontends]]
    name = "ftp"
    bind = ["127.0.0.1:2121"]
    backend = "pool"

    [[backends]]
    name = "pool"

    [[backends.servers]]
    name = "s1"
    address = "127.0.0.11:21"

    [[backends]]
    name = "pool"
    sticky = "yes"

    [[backends.servers]]
    name = "s1"
    address = "127.0.0.12:21"
    """
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:14: backends[1].name: duplicate backend name "pool" (also backends[0])',
        f"{name}:15: backends[1].sticky: Input should be 'none', 'source' or 'user'",
    ]


def test_sections_of_a_valid_config_are_the_whole_config() -> None:
    data = {
        "frontends": [{"name": "f", "bind": ["127.0.0.1:21"], "backend": "b"}],
        "backends": [{"name": "b", "servers": [{"name": "s", "address": "127.0.0.1:21"}]}],
    }
    config = Config.model_validate(data)
    assert validated_sections(data) == config.sections()
    assert cross_check(config) == []


def test_sections_keep_the_files_indices() -> None:
    data: dict[str, object] = {
        "frontends": [
            {"name": "f", "bind": 1, "backend": "b"},
            {"name": "g", "bind": ["127.0.0.1:21"], "backend": "b"},
        ],
        "backends": [{"name": "b", "servers": []}, "not a table"],
        "admin": {"bind": "nowhere"},
    }
    sections = validated_sections(data)
    assert sections.frontends[0] is None
    assert isinstance(sections.frontends[1], Frontend)
    assert sections.backends == [None, None]
    assert sections.backend_names == ["b", None]
    assert sections.admin is None
    assert sections.defaults is not None and sections.defaults.workers == 1
    assert validated_sections({"frontends": "x"}) == Sections(
        defaults=sections.defaults, frontends=[], backends=[], backend_names=[], admin=None
    )


def test_cross_check_skips_the_missing_sections() -> None:
    frontend = Frontend.model_validate({"name": "f", "bind": ["127.0.0.1:21"], "backend": "x"})
    backend = Backend.model_validate(
        {"name": "b", "servers": [{"name": "s", "address": "127.0.0.1:21"}]}
    )
    sections = Sections(
        defaults=None,
        frontends=[None, frontend],
        backends=[None, backend],
        backend_names=["x", "b"],
        admin=None,
    )
    assert cross_check(sections) == []


# --------------------------------------------------------------------------
# Did you mean
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "wrong", "key", "message"),
    [
        (
            'timout_connect = "5s"',
            2,
            "defaults.timout_connect",
            'unknown key "timout_connect"; did you mean "timeout_connect"?',
        ),
        (
            'log_format = "jsn"',
            2,
            "defaults.log_format",
            "Input should be 'text' or 'json'; did you mean \"json\"?",
        ),
        ('colour = "blue"', 2, "defaults.colour", 'unknown key "colour"'),
        (
            'log_format = "xml"',
            2,
            "defaults.log_format",
            "Input should be 'text' or 'json'",
        ),
        ("log_format = 1", 2, "defaults.log_format", "Input should be 'text' or 'json'"),
    ],
    ids=["key", "value", "no-close-key", "no-close-value", "not-a-string"],
)
def test_did_you_mean_in_the_defaults(
    tmp_path: Path, line: str, wrong: int, key: str, message: str
) -> None:
    text = f"[defaults]\n{line}\n\n" + SEVERAL_STAGES.split("\n\n", 1)[1]
    text = text.replace('"poool"', '"pool"').replace('"40500-41500"', '"41000-41500"')
    text = text.replace('"roundrobbin"', '"roundrobin"').replace('"heavy"', "2")
    text = text.replace('"127.0.0.1:99999"', '"127.0.0.1:2123"').replace('"nowhere"', '"pool"')
    text = text.replace('"40000-40010"', '"42000-42010"')
    name, found = problems(tmp_path, text)
    assert found == [f"{name}:{wrong}: {key}: {message}"]


def test_did_you_mean_in_nested_tables(tmp_path: Path) -> None:
    text = """\
    [[frontends]]
    name = "ftp"
    bind = ["127.0.0.1:2121"]
    backend = "pool"
    tls = "explict"

    [[backends]]
    name = "pool"
    health = { typ = "tcp" }
    sticky_timout = "1h"

    [[backends.servers]]
    name = "s1"
    adress = "127.0.0.11:21"

    [admin]
    bind = "127.0.0.1:8404"

    [[admin.users]]
    name = "ops"
    password_hash = "x"
    roles = "admin"
    """
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:5: frontends[0].tls: Input should be 'none', 'explicit' or 'implicit'; "
        'did you mean "explicit"?',
        f'{name}:9: backends[0].health.typ: unknown key "typ"; did you mean "type"?',
        f'{name}:10: backends[0].sticky_timout: unknown key "sticky_timout"; '
        'did you mean "sticky_timeout"?',
        f"{name}:12: backends[0].servers[0].address: missing required key",
        f'{name}:14: backends[0].servers[0].adress: unknown key "adress"; did you mean "address"?',
        f"{name}:21: admin.users[0].password_hash: not a password hash: expected "
        "$scrypt$ln=15,r=8,p=1$<salt>$<hash> (ftplb hash-password makes one)",
        f'{name}:22: admin.users[0].roles: unknown key "roles"; did you mean "role"?',
    ]


def test_suggestion_helpers() -> None:
    assert did_you_mean("roundrobbin", ["roundrobin", "leastconn"]) == (
        '; did you mean "roundrobin"?'
    )
    assert did_you_mean("zzz", ["roundrobin", "leastconn"]) == ""
    assert "timeout_connect" in keys_of_table(Config, ("defaults",))
    assert "servers" in keys_of_table(Config, ("backends", 0))
    assert "interval" in keys_of_table(Config, ("backends", 3, "health"))
    assert "role" in keys_of_table(Config, ("admin", "users", 0))
    assert keys_of_table(Config, ("backends", 0, "user_map")) == []
    assert keys_of_table(Config, ("nowhere",)) == []
    assert allowed_values(Config, ("backends", 0, "sticky")) == ["none", "source", "user"]
    assert allowed_values(Config, ("frontends", 0, "tls")) == ["none", "explicit", "implicit"]
    assert allowed_values(Config, ("admin", "users", 0, "role")) == ["admin", "read-only"]
    assert allowed_values(Config, ("backends", 0, "name")) == []
    assert allowed_values(Config, ("backends", "x", "y")) == []
