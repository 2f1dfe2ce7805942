"""Tests for ftplb.config.locate: key paths to line numbers in TOML text."""

from __future__ import annotations

import textwrap
import tomllib

from hypothesis import given
from hypothesis import strategies as st

from ftplb.config.locate import find_line, index_lines

CONFIG = textwrap.dedent(
    """\
    # comment with [brackets] and key = "value"
    [defaults]
    retries = 2

    [[frontends]]
    name = "ftp"
    bind = [
      "127.0.0.1:2121",  # first
      "[::1]:2121",
    ]
    backend = "pool"

    [[backends]]
    name = "pool"
    health = { type = "login", user = "probe" }

    [[backends.servers]]
    name = "s1"
    address = "127.0.0.11:21"

    [[backends.servers]]
    name = "s2"
    weight = 3

    [[backends]]
    name = "other"

    [[backends.servers]]
    name = "t1"
    weight = 5
    """
)


def test_config_fixture_is_valid_toml() -> None:
    tomllib.loads(CONFIG)


def test_standard_table_and_its_keys() -> None:
    assert find_line(CONFIG, ("defaults",)) == 2
    assert find_line(CONFIG, ("defaults", "retries")) == 3


def test_array_of_tables_elements() -> None:
    assert find_line(CONFIG, ("frontends", 0)) == 5
    assert find_line(CONFIG, ("frontends", 0, "backend")) == 11
    assert find_line(CONFIG, ("backends", 0, "name")) == 14
    assert find_line(CONFIG, ("backends", 1, "name")) == 26


def test_nested_array_of_tables_counts_within_its_backend() -> None:
    assert find_line(CONFIG, ("backends", 0, "servers", 0, "address")) == 19
    assert find_line(CONFIG, ("backends", 0, "servers", 1, "weight")) == 23
    # The first server of the second backend is index 0 again.
    assert find_line(CONFIG, ("backends", 1, "servers", 0, "weight")) == 30
    assert find_line(CONFIG, ("backends", 1, "servers", 0)) == 28


def test_multi_line_array_elements_have_their_own_lines() -> None:
    assert find_line(CONFIG, ("frontends", 0, "bind")) == 7
    assert find_line(CONFIG, ("frontends", 0, "bind", 0)) == 8
    assert find_line(CONFIG, ("frontends", 0, "bind", 1)) == 9


def test_inline_table_keys_map_to_the_line_of_the_table() -> None:
    assert find_line(CONFIG, ("backends", 0, "health", "type")) == 15
    assert find_line(CONFIG, ("backends", 0, "health", "user")) == 15
    # A key the inline table lacks still points at it.
    assert find_line(CONFIG, ("backends", 0, "health", "password")) == 15


def test_missing_key_falls_back_to_the_enclosing_header() -> None:
    assert find_line(CONFIG, ("backends", 0, "servers", 1, "address")) == 21
    assert find_line(CONFIG, ("frontends", 0, "passive_ports")) == 5


def test_unknown_top_level_key_has_no_line() -> None:
    assert find_line(CONFIG, ("nothing", 0, "here")) is None
    assert find_line("", ("defaults",)) is None


def test_index_beyond_the_array_falls_back_to_the_array() -> None:
    # backends[7] does not exist: the nearest enclosing key is "backends".
    assert find_line(CONFIG, ("backends", 7, "name")) == 13


def test_dotted_headers_and_dotted_keys() -> None:
    text = textwrap.dedent(
        """\
        [[backends]]
        name = "pool"
        health.type = "tcp"

        [[backends]]
        name = "other"

        [backends.health]
        interval = "1s"

        [ "quoted key" . inner ]
        'literal key' = 1
        """
    )
    tomllib.loads(text)
    assert find_line(text, ("backends", 0, "health", "type")) == 3
    assert find_line(text, ("backends", 0, "health")) == 3
    # A standard table under an array of tables belongs to its last element.
    assert find_line(text, ("backends", 1, "health")) == 8
    assert find_line(text, ("backends", 1, "health", "interval")) == 9
    assert find_line(text, ("quoted key", "inner", "literal key")) == 12
    assert find_line(text, ("quoted key",)) == 11


def test_strings_never_look_like_structure() -> None:
    text = textwrap.dedent(
        '''\
        [defaults]
        banner = """
        [[frontends]]
        name = "fake"
        """
        other = 'a [b] # c'
        escaped = "quote \\" [x] = y"
        literal = \'\'\'
        [fake]\'\'\'
        last = 1
        '''
    )
    tomllib.loads(text)
    assert find_line(text, ("frontends",)) is None
    assert find_line(text, ("fake",)) is None
    assert find_line(text, ("defaults", "other")) == 6
    assert find_line(text, ("defaults", "escaped")) == 7
    assert find_line(text, ("defaults", "last")) == 10


def test_array_of_inline_tables_across_lines() -> None:
    text = textwrap.dedent(
        """\
        [[backends]]
        name = "pool"
        servers = [
          { name = "a", address = "127.0.0.1:21" },
          { name = "b", weight = 2 },
        ]
        """
    )
    tomllib.loads(text)
    assert find_line(text, ("backends", 0, "servers", 0, "address")) == 4
    assert find_line(text, ("backends", 0, "servers", 1, "weight")) == 5
    assert find_line(text, ("backends", 0, "servers", 1)) == 5
    assert find_line(text, ("backends", 0, "servers")) == 3


def test_nested_arrays_and_comments_inside_arrays() -> None:
    text = textwrap.dedent(
        """\
        matrix = [ # comment [
          [1, 2],
          [
            3,
            4,
          ],
        ]
        after = true
        """
    )
    tomllib.loads(text)
    assert find_line(text, ("matrix", 1, 1)) == 5
    assert find_line(text, ("matrix", 0, 1)) == 2
    assert find_line(text, ("after",)) == 8


def test_index_lines_records_first_definition() -> None:
    lines = index_lines(CONFIG)
    assert lines[("backends",)] == 13
    assert lines[("backends", 1)] == 25


def test_garbage_never_raises() -> None:
    for text in ["[[", "[", "= = =", 'a = "unterminated', "a = [1, ", "{", "a = {b = ", "'''"]:
        find_line(text, ("a", 0, "b"))


def test_a_stray_brace_in_an_array_ends_the_scan() -> None:
    # This once looped forever, recording array index after index.
    assert find_line("3=[}", ("a", 0, "b")) is None
    assert find_line("a = [}, 1]\nb = 2", ("b",)) == 2


@given(st.text(alphabet=st.sampled_from(list("[]{}\"'=.,#\n abc123\\")), max_size=60))
def test_arbitrary_text_never_raises(text: str) -> None:
    find_line(text, ("a", 0, "b"))


# Random backends with servers, each key on its own line; find_line must give
# back the line each key was written on.
_server_keys = st.lists(st.sampled_from(["address", "weight", "max_connections"]), unique=True)


@given(st.lists(st.lists(_server_keys, max_size=4), min_size=1, max_size=4))
def test_generated_configs_locate_every_key(backends: list[list[list[str]]]) -> None:
    lines: list[str] = []
    expected: dict[tuple[str | int, ...], int] = {}
    for b, servers in enumerate(backends):
        lines.append("[[backends]]")
        expected[("backends", b)] = len(lines)
        lines.append(f'name = "b{b}"  # [[backends.servers]]')
        expected[("backends", b, "name")] = len(lines)
        for s, keys in enumerate(servers):
            lines.append("")
            lines.append("  [[ backends . servers ]]")
            expected[("backends", b, "servers", s)] = len(lines)
            for key in keys:
                lines.append(f'  {key} = "{b}-{s}"')
                expected[("backends", b, "servers", s, key)] = len(lines)
            # An absent key falls back to the server's header.
            expected[("backends", b, "servers", s, "passive_ports")] = expected[
                ("backends", b, "servers", s)
            ]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)
    for path, line in expected.items():
        assert find_line(text, path) == line, path
