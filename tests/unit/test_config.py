"""Tests for the configuration schema and loader: valid files, and every kind of problem.

Problem tests assert the whole message: file name, exact line, dotted key and text.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ftplb.config.backends import Health
from ftplb.config.fields import (
    Endpoint,
    PortRange,
    parse_duration,
    parse_endpoint,
    parse_port_range,
)
from ftplb.config.general import SyslogAddress
from ftplb.config.load import (
    ConfigError,
    check_config,
    config_warnings,
    load_config,
    load_config_text,
)
from ftplb.config.problems import Problem, format_key, problems_from_error
from ftplb.config.schema import Config, cross_check

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ftplb.toml"

FULL = """\
[defaults]
timeout_connect = "5s"
timeout_client = "300s"
timeout_server = "300s"
timeout_data = "30s"
retries = 2
redispatch = true
log_format = "text"
max_line_length = 4096
max_connections = 0

[[frontends]]
name = "ftp"
bind = ["127.0.0.1:2121", "[::1]:2121"]
mode = "ftp"
backend = "pool"
passive_address = "127.0.0.1"
passive_ports = "40000-40999"
max_connections = 0
banner = "ftplb ready"

[[backends]]
name = "pool"
balance = "roundrobin"
sticky = "none"
sticky_timeout = "1h"
data_mode = "passive"
health = { type = "ftp", interval = "2s", rise = 2, fall = 2, timeout = "2s" }
user_map = { alice = "s1" }

[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"
weight = 1
max_connections = 0
passive_ports = "50000-50099"
"""

MINIMAL = """\
[[frontends]]
name = "ftp"
bind = ["127.0.0.1:2121"]
backend = "pool"

[[backends]]
name = "pool"

[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"
"""


def write(tmp_path: Path, text: str, name: str = "ftplb.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> tuple[str, list[str]]:
    """The file name and the problems that loading ``text`` from a file reports."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value) == "\n".join(raised.value.problems)
    return str(path), raised.value.problems


# --------------------------------------------------------------------------
# Valid configurations
# --------------------------------------------------------------------------


def test_full_config_from_the_documentation(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.defaults.timeout_connect == 5.0
    assert config.defaults.max_line_length == 4096
    frontend = config.frontends[0]
    assert frontend.bind == [Endpoint("127.0.0.1", 2121), Endpoint("::1", 2121)]
    assert frontend.passive_address == "127.0.0.1"
    assert frontend.passive_ports == PortRange(40000, 40999)
    backend = config.backend(frontend.backend)
    assert backend.sticky_timeout == 3600.0
    assert backend.health == Health(type="ftp", interval=2.0, rise=2, fall=2, timeout=2.0)
    assert backend.user_map == {"alice": "s1"}
    assert backend.servers[0].address == Endpoint("127.0.0.11", 21)
    assert backend.servers[0].passive_ports == PortRange(50000, 50099)
    assert check_config(write(tmp_path, FULL, "again.toml")) == []


def test_minimal_config_gets_the_documented_defaults() -> None:
    config = load_config_text(MINIMAL)
    d = config.defaults
    assert (d.timeout_connect, d.timeout_client, d.timeout_server, d.timeout_data) == (
        5.0,
        300.0,
        300.0,
        30.0,
    )
    assert (d.retries, d.redispatch, d.log_format) == (2, True, "text")
    assert (d.max_line_length, d.max_connections) == (4096, 0)
    frontend = config.frontends[0]
    assert frontend.mode == "ftp"
    assert frontend.passive_address is None
    assert frontend.passive_ports is None
    assert frontend.banner == "ftplb ready"
    backend = config.backends[0]
    assert (backend.balance, backend.sticky, backend.data_mode) == ("roundrobin", "none", "passive")
    assert backend.health == Health()
    assert backend.health.type == "ftp"
    assert backend.user_map == {}
    server = backend.servers[0]
    assert (server.weight, server.max_connections, server.passive_ports) == (1, 0, None)


def test_example_file_is_valid() -> None:
    assert check_config(EXAMPLE) == []
    config = load_config(EXAMPLE)
    assert {f.mode for f in config.frontends} == {"ftp", "tcp"}


def test_ipv6_and_wildcard_binds() -> None:
    text = MINIMAL.replace(
        '["127.0.0.1:2121"]', '["[::1]:2121", "[0:0::1]:2122", "[::]:21", "*:21", "localhost:99"]'
    )
    config = load_config_text(text)
    assert config.frontends[0].bind == [
        Endpoint("::1", 2121),
        Endpoint("::1", 2122),
        Endpoint("::", 21),
        Endpoint("0.0.0.0", 21),
        Endpoint("localhost", 99),
    ]
    assert [str(e) for e in config.frontends[0].bind] == [
        "[::1]:2121",
        "[::1]:2122",
        "[::]:21",
        "0.0.0.0:21",
        "localhost:99",
    ]


def test_tcp_mode_with_disjoint_server_ranges_is_valid() -> None:
    text = MINIMAL.replace('backend = "pool"', 'backend = "pool"\nmode = "tcp"').replace(
        'address = "127.0.0.11:21"', 'address = "127.0.0.11:21"\npassive_ports = "50000-50009"'
    )
    text += (
        '\n[[backends.servers]]\nname = "s2"\naddress = "127.0.0.12:21"\npassive_ports = 50010\n'
    )
    config = load_config_text(text)
    assert [s.passive_ports for s in config.backends[0].servers] == [
        PortRange(50000, 50009),
        PortRange(50010, 50010),
    ]


def test_login_health_with_credentials_is_valid() -> None:
    text = MINIMAL + '\n[backends.health]\ntype = "login"\nuser = "probe"\npassword = "secret"\n'
    health = load_config_text(text).backends[0].health
    assert (health.type, health.user, health.password) == ("login", "probe", "secret")


def test_config_is_frozen_and_round_trips_through_model_dump() -> None:
    config = load_config_text(FULL)
    with pytest.raises(ValidationError):
        config.frontends[0].name = "other"
    assert Config.model_validate(config.model_dump()) == config
    assert Config.model_validate(config.model_dump(mode="json")) == config


def test_backend_lookup_by_name() -> None:
    config = load_config_text(FULL)
    assert config.backend("pool") is config.backends[0]
    with pytest.raises(KeyError):
        config.backend("missing")


# --------------------------------------------------------------------------
# Value parsers
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (7, 7.0),
        (0.5, 0.5),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5", "5 s", "s", "-1s", "1w", "1.s", "", -1, True, float("inf")])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "127.0.0.1",
        "127.0.0.1:",
        ":21",
        "::1:21",
        "[127.0.0.1]:21",
        "example.com:21",
        "1.2.3.4:0",
        "1.2.3.4:65536",
        "1.2.3.4:\uff12\uff11",  # fullwidth digits
        "1.2.3:21",
        21,
    ],
)
def test_bad_endpoints_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_endpoint(bad)


@pytest.mark.parametrize("bad", ["1023-2000", "2000-1999", "40000-70000", "a-b", "-", "", 80, True])
def test_bad_port_ranges_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="1024 <= FIRST <= LAST <= 65535"):
        parse_port_range(bad)


def test_port_range_helpers() -> None:
    ports = parse_port_range("40000-40009")
    assert ports.count == 10
    assert 40000 in ports and 40009 in ports
    assert 39999 not in ports and 40010 not in ports
    assert list(ports)[:2] == [40000, 40001]
    assert parse_port_range("40000") == PortRange(40000, 40000)
    assert str(ports) == "40000-40009"


_ports = st.integers(1024, 65535)


@given(_ports, _ports, _ports, _ports)
def test_overlaps_means_a_port_in_common(a: int, b: int, c: int, d: int) -> None:
    left = PortRange(min(a, b), max(a, b))
    right = PortRange(min(c, d), max(c, d))
    common = max(left.first, right.first) <= min(left.last, right.last)
    assert left.overlaps(right) == common == right.overlaps(left)
    if common:
        assert max(left.first, right.first) in left
        assert max(left.first, right.first) in right


@given(st.ip_addresses(), st.integers(1, 65535))
def test_endpoint_text_round_trips(address: object, port: int) -> None:
    endpoint = parse_endpoint(str(Endpoint(str(address), port)))
    assert endpoint == Endpoint(str(address), port)
    assert parse_endpoint(str(endpoint)) == endpoint


def test_format_key() -> None:
    assert format_key(("backends", 0, "servers", 1, "weight")) == "backends[0].servers[1].weight"
    assert format_key(("backends", 0, "user_map", "odd key")) == 'backends[0].user_map."odd key"'


# --------------------------------------------------------------------------
# Problems: one test per kind, with file, line and key
# --------------------------------------------------------------------------


def test_unknown_key_at_top_level(tmp_path: Path) -> None:
    # Keys before the first header are top-level keys.
    name, found = problems(tmp_path, "frontend = 1\n\n" + MINIMAL)
    assert found == [f'{name}:1: frontend: unknown key "frontend"; did you mean "frontends"?']


def test_unknown_key_in_a_nested_table(tmp_path: Path) -> None:
    text = MINIMAL + "wieght = 2\n"
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:12: backends[0].servers[0].wieght: unknown key "wieght"; did you mean "weight"?'
    ]


def test_unknown_key_inside_an_inline_table(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'name = "pool"', 'name = "pool"\nhealth = { type = "tcp", intervall = "1s" }'
    )
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:8: backends[0].health.intervall: unknown key "intervall"; did you mean "interval"?'
    ]


def test_wrong_type(tmp_path: Path) -> None:
    text = MINIMAL + 'weight = "3"\nmax_connections = true\n'
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:12: backends[0].servers[0].weight: Input should be a valid integer",
        f"{name}:13: backends[0].servers[0].max_connections: Input should be a valid integer",
    ]


def test_table_where_a_value_belongs_and_the_reverse(tmp_path: Path) -> None:
    text = MINIMAL.replace('name = "pool"', 'name = "pool"\nhealth = "ftp"\nservers_x = 1')
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:8: backends[0].health: expected a table, got "ftp"',
        f'{name}:9: backends[0].servers_x: unknown key "servers_x"; did you mean "servers"?',
    ]


def test_value_out_of_range(tmp_path: Path) -> None:
    text = MINIMAL + "weight = 300\n"
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:12: backends[0].servers[0].weight: Input should be less than or equal to 256"
    ]


def test_bad_enumeration_value(tmp_path: Path) -> None:
    text = MINIMAL.replace('name = "pool"', 'name = "pool"\nbalance = "fastest"')
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:8: backends[0].balance: Input should be 'roundrobin', 'leastconn', "
        "'source', 'random' or 'user'"
    ]


def test_bad_duration(tmp_path: Path) -> None:
    text = '[defaults]\ntimeout_connect = "5 seconds"\ntimeout_data = 0\n\n' + MINIMAL
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:2: defaults.timeout_connect: invalid duration "5 seconds": expected a number '
        'of seconds or a string such as "250ms", "5s", "2m", "1h" or "1d"',
        f"{name}:3: defaults.timeout_data: Input should be greater than 0",
    ]


def test_a_zero_sticky_timeout_is_refused(tmp_path: Path) -> None:
    # A stick table cannot keep entries for no time: refused here, not by a crash at start.
    text = MINIMAL.replace('name = "pool"', 'name = "pool"\nsticky = "source"\nsticky_timeout = 0')
    name, found = problems(tmp_path, text)
    assert found == [f"{name}:9: backends[0].sticky_timeout: Input should be greater than 0"]


def test_bad_address(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        '["127.0.0.1:2121"]', '[\n  "127.0.0.1:2121",\n  "ftp.example.com:21",\n]'
    )
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:5: frontends[0].bind[1]: invalid address "ftp.example.com:21": the host must '
        'be an IP address or "localhost"; expected "1.2.3.4:21", "[::1]:21", "localhost:21" '
        'or "*:21"'
    ]


def test_log_target_and_syslog_address() -> None:
    defaults = load_config_text(MINIMAL).defaults
    assert (defaults.log_target, str(defaults.syslog_address)) == ("stderr", "/dev/log")
    text = '[defaults]\nlog_target = "syslog"\nsyslog_address = "udp://[::1]:514"\n' + MINIMAL
    defaults = load_config_text(text).defaults
    assert defaults.log_target == "syslog"
    assert defaults.syslog_address == SyslogAddress(udp=Endpoint("::1", 514))
    assert str(defaults.syslog_address) == "udp://[::1]:514"
    text = '[defaults]\nsyslog_address = "/run/systemd/journal/syslog"\n' + MINIMAL
    assert load_config_text(text).defaults.syslog_address == SyslogAddress(
        path="/run/systemd/journal/syslog"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"dev/log"', "a Unix socket path must be absolute"),
        ('"tcp://127.0.0.1:514"', "the only scheme is udp://"),
        ('"udp://127.0.0.1"', "no port"),
        ('"udp://*:514"', "the host must be a specific address, not a wildcard"),
        ('"udp://syslog.example.com:514"', 'the host must be an IP address or "localhost"'),
        ("514", "not a string"),
    ],
)
def test_bad_syslog_addresses_are_refused(tmp_path: Path, value: str, reason: str) -> None:
    name, found = problems(tmp_path, f"[defaults]\nsyslog_address = {value}\n" + MINIMAL)
    assert found == [
        f"{name}:2: defaults.syslog_address: invalid syslog address {value}: {reason}; "
        'expected "/dev/log" (a Unix socket path) or "udp://127.0.0.1:514"'
    ]


def test_server_address_cannot_be_a_wildcard(tmp_path: Path) -> None:
    text = MINIMAL.replace('"127.0.0.11:21"', '"*:21"')
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:11: backends[0].servers[0].address: invalid address "*:21": a server needs a '
        'specific address, not a wildcard; expected "1.2.3.4:21", "[::1]:21" or "localhost:21"'
    ]


def test_bad_passive_address_and_banner(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'backend = "pool"',
        'backend = "pool"\npassive_address = "lb.example"\nbanner = "a\\r\\n230 ok"',
    )
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:5: frontends[0].passive_address: invalid IP address "lb.example": expected an '
        'IPv4 or IPv6 literal such as "192.0.2.10"',
        f"{name}:6: frontends[0].banner: the banner must be a single line of printable text",
    ]


def test_bad_port_range(tmp_path: Path) -> None:
    text = MINIMAL.replace('backend = "pool"', 'backend = "pool"\npassive_ports = "21-30"')
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:5: frontends[0].passive_ports: invalid port range "21-30": expected '
        '"FIRST-LAST" or "PORT" with 1024 <= FIRST <= LAST <= 65535'
    ]


def test_bad_name(tmp_path: Path) -> None:
    text = MINIMAL.replace('name = "s1"', 'name = "s 1"')
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:10: backends[0].servers[0].name: invalid name "s 1": use one or more '
        "letters, digits, '_', '-' or '.'"
    ]


def test_missing_required_key_points_at_the_table_header(tmp_path: Path) -> None:
    text = MINIMAL.replace('address = "127.0.0.11:21"\n', "").replace('backend = "pool"\n', "")
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:1: frontends[0].backend: missing required key",
        f"{name}:8: backends[0].servers[0].address: missing required key",
    ]


def test_missing_section_has_no_line(tmp_path: Path) -> None:
    name, found = problems(tmp_path, "[defaults]\nretries = 1\n")
    assert found == [
        f"{name}: frontends: missing required key",
        f"{name}: backends: missing required key",
    ]


def test_empty_lists_are_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace('["127.0.0.1:2121"]', "[]")
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:3: frontends[0].bind: List should have at least 1 item after validation, not 0"
    ]


def test_login_health_without_user(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'name = "pool"', 'name = "pool"\nhealth = { type = "login", password = "x" }'
    )
    name, found = problems(tmp_path, text)
    assert found == [f'{name}:8: backends[0].health.user: required when type = "login"']


def test_login_health_in_its_own_table_without_credentials(tmp_path: Path) -> None:
    text = MINIMAL + '\n[backends.health]\ntype = "login"\n'
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:13: backends[0].health.user: required when type = "login"',
        f'{name}:13: backends[0].health.password: required when type = "login"',
    ]


def test_unknown_backend_name(tmp_path: Path) -> None:
    text = MINIMAL.replace('backend = "pool"', 'backend = "poool"')
    name, found = problems(tmp_path, text)
    assert found == [f'{name}:4: frontends[0].backend: unknown backend "poool" (backends: "pool")']


def test_duplicate_names(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        [[frontends]]
        name = "ftp"
        bind = ["127.0.0.1:21"]
        backend = "pool"

        [[frontends]]
        name = "ftp"
        bind = ["127.0.0.1:2121"]
        backend = "pool"

        [[backends]]
        name = "pool"
        [[backends.servers]]
        name = "s1"
        address = "127.0.0.11:21"
        [[backends.servers]]
        name = "s1"
        address = "127.0.0.12:21"

        [[backends]]
        name = "pool"
        [[backends.servers]]
        name = "s1"
        address = "127.0.0.13:21"
        """
    )
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:7: frontends[1].name: duplicate frontend name "ftp" (also frontends[0])',
        f'{name}:17: backends[0].servers[1].name: duplicate server name "s1" '
        "(also backends[0].servers[0])",
        f'{name}:21: backends[1].name: duplicate backend name "pool" (also backends[0])',
    ]


def test_same_bind_in_two_frontends(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent(
        """\

        [[frontends]]
        name = "other"
        bind = [
          "[::1]:2121",
          "127.0.0.1:2121",
        ]
        backend = "pool"

        [[frontends]]
        name = "wild"
        bind = ["*:2121"]
        backend = "pool"
        """
    )
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:17: frontends[1].bind[1]: 127.0.0.1:2121 clashes with 127.0.0.1:2121 bound "
        "by frontends[0].bind[0]",
        f"{name}:23: frontends[2].bind[0]: 0.0.0.0:2121 clashes with 127.0.0.1:2121 bound "
        "by frontends[0].bind[0]",
    ]


def test_overlapping_frontend_passive_ranges(tmp_path: Path) -> None:
    text = MINIMAL.replace('backend = "pool"', 'backend = "pool"\npassive_ports = "40000-40999"')
    text += textwrap.dedent(
        """\

        [[frontends]]
        name = "other"
        bind = ["127.0.0.1:2122"]
        backend = "pool"
        passive_ports = "40999-41999"
        """
    )
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:18: frontends[1].passive_ports: range 40999-41999 overlaps 40000-40999 of "
        "frontends[0].passive_ports"
    ]


TCP_TWO_SERVERS = """\
[[frontends]]
name = "pass"
bind = ["127.0.0.1:990"]
mode = "tcp"
backend = "pool"
passive_ports = "40000-40999"

[[backends]]
name = "pool"

[[backends.servers]]
name = "s1"
address = "127.0.0.11:990"
passive_ports = "{s1}"

[[backends.servers]]
name = "s2"
address = "127.0.0.12:990"
passive_ports = "{s2}"
"""


def test_overlapping_server_ranges_in_tcp_mode(tmp_path: Path) -> None:
    text = TCP_TWO_SERVERS.format(s1="50000-50100", s2="50100-50199")
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:19: backends[0].servers[1].passive_ports: range 50100-50199 overlaps "
        "50000-50100 of backends[0].servers[0].passive_ports"
    ]


def test_server_range_overlapping_a_frontend_range_in_tcp_mode(tmp_path: Path) -> None:
    text = TCP_TWO_SERVERS.format(s1="40500-40600", s2="50100-50199")
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:14: backends[0].servers[0].passive_ports: range 40500-40600 overlaps "
        "40000-40999 of frontends[0].passive_ports"
    ]


def test_overlapping_server_ranges_are_fine_outside_tcp_mode() -> None:
    text = TCP_TWO_SERVERS.format(s1="50000-50100", s2="50000-50100")
    config = load_config_text(text.replace('mode = "tcp"', 'mode = "ftp"'))
    assert config.backends[0].servers[1].passive_ports == PortRange(50000, 50100)


def test_an_ftp_server_in_tcp_mode_without_passive_ports_is_valid_but_warned(
    tmp_path: Path,
) -> None:
    # The default health check is "ftp": these are FTP servers, whose passive
    # transfers need a range relayed for them.
    text = TCP_TWO_SERVERS.format(s1="50000-50099", s2="x").replace('passive_ports = "x"\n', "")
    path = tmp_path / "ftplb.toml"
    path.write_text(text)
    assert check_config(path) == []
    assert config_warnings(path) == [
        f'{path}:16: backends[0].servers[1].passive_ports: warning: missing: frontends[0] ("pass")'
        ' relays this FTP server in mode = "tcp", and without a range of its own its passive'
        " transfers cannot pass ftplb"
    ]


@pytest.mark.parametrize("health", ["tcp", "none"])
def test_servers_not_checked_as_ftp_need_no_passive_ports_in_tcp_mode(
    tmp_path: Path, health: str
) -> None:
    text = (
        TCP_TWO_SERVERS.format(s1="x", s2="x")
        .replace('passive_ports = "x"\n', "")
        .replace('name = "pool"\n', f'name = "pool"\nhealth = {{ type = "{health}" }}\n')
    )
    path = tmp_path / "ftplb.toml"
    path.write_text(text)
    assert (check_config(path), config_warnings(path)) == ([], [])


def test_user_map_must_name_servers_of_the_backend(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        'name = "pool"', 'name = "pool"\nuser_map = { alice = "s1", bob = "s9" }'
    )
    name, found = problems(tmp_path, text)
    assert found == [f'{name}:8: backends[0].user_map.bob: unknown server "s9" in backend "pool"']


def test_toml_syntax_error(tmp_path: Path) -> None:
    name, found = problems(tmp_path, MINIMAL.replace('name = "s1"', "name = s1"))
    assert found == [f"{name}:10: TOML syntax error: Invalid value (column 8)"]


def test_toml_syntax_error_at_end_of_file(tmp_path: Path) -> None:
    name, found = problems(tmp_path, MINIMAL + "bind = [")
    assert found == [f"{name}:12: TOML syntax error: Invalid value (at end of file)"]


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as raised:
        load_config(missing)
    assert raised.value.problems == [f"{missing}: cannot read file: No such file or directory"]
    assert check_config(tmp_path) == [f"{tmp_path}: cannot read file: Is a directory"]


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.encode("utf-8") + b"# caf\xe9\n")
    assert check_config(path) == [f"{path}:12: not valid UTF-8 text"]


def test_several_problems_are_all_reported_in_file_order(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        [defaults]
        retries = -1
        log_format = "xml"

        [[frontends]]
        name = "ftp"
        bind = ["127.0.0.1:99999"]
        backend = "pool"
        colour = "blue"

        [[backends]]
        name = "pool"
        health = { type = "tcp", rise = 0 }

        [[backends.servers]]
        name = "s1"
        address = "127.0.0.11:21"
        weight = -1
        """
    )
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:2: defaults.retries: Input should be greater than or equal to 0",
        f"{name}:3: defaults.log_format: Input should be 'text' or 'json'",
        f'{name}:7: frontends[0].bind[0]: invalid address "127.0.0.1:99999": the port must be '
        'a number from 1 to 65535; expected "1.2.3.4:21", "[::1]:21", "localhost:21" or "*:21"',
        f'{name}:9: frontends[0].colour: unknown key "colour"',
        f"{name}:13: backends[0].health.rise: Input should be greater than or equal to 1",
        f"{name}:18: backends[0].servers[0].weight: Input should be greater than or equal to 0",
    ]


def test_several_cross_check_problems_are_all_reported(tmp_path: Path) -> None:
    text = MINIMAL.replace('backend = "pool"', 'backend = "nope"') + textwrap.dedent(
        """\

        [[frontends]]
        name = "ftp"
        bind = ["127.0.0.1:2121"]
        backend = "pool"
        """
    )
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:4: frontends[0].backend: unknown backend "nope" (backends: "pool")',
        f'{name}:14: frontends[1].name: duplicate frontend name "ftp" (also frontends[0])',
        f"{name}:15: frontends[1].bind[0]: 127.0.0.1:2121 clashes with 127.0.0.1:2121 bound "
        "by frontends[0].bind[0]",
    ]


def test_check_config_never_raises(tmp_path: Path) -> None:
    assert check_config(write(tmp_path, MINIMAL)) == []
    assert check_config(write(tmp_path, "[[[", "broken.toml")) != []
    assert check_config(tmp_path / "nowhere" / "x.toml") != []


def test_text_source_name_is_used() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config_text("x = 1\n", source="inline.toml")
    assert raised.value.problems == [
        "inline.toml: frontends: missing required key",
        "inline.toml: backends: missing required key",
        'inline.toml:1: x: unknown key "x"',
    ]


# --------------------------------------------------------------------------
# The schema on its own, without files
# --------------------------------------------------------------------------


def test_model_validate_refuses_inconsistent_configs() -> None:
    with pytest.raises(ValidationError) as raised:
        Config.model_validate(
            {
                "frontends": [{"name": "f", "bind": ["127.0.0.1:21"], "backend": "x"}],
                "backends": [{"name": "b", "servers": [{"name": "s", "address": "127.0.0.1:21"}]}],
            }
        )
    assert problems_from_error(raised.value) == [
        Problem(("frontends", 0, "backend"), 'unknown backend "x" (backends: "b")')
    ]


def test_cross_check_of_a_consistent_config_is_empty() -> None:
    assert cross_check(load_config_text(FULL)) == []


def test_health_model_requires_login_credentials() -> None:
    with pytest.raises(ValidationError):
        Health(type="login", user="u")
    assert Health(type="login", user="u", password="p").password == "p"


def test_user_routing_is_refused_for_tcp_mode_backends(tmp_path: Path) -> None:
    text = TCP_TWO_SERVERS.format(s1="50000-50099", s2="50100-50199").replace(
        'name = "pool"\n',
        'name = "pool"\nbalance = "user"\nsticky = "user"\nuser_map = { alice = "s1" }\n',
        1,
    )
    name, found = problems(tmp_path, text)
    reason = 'frontends[0] ("pass") relays this backend in mode = "tcp" and never reads USER'
    assert found == [
        f'{name}:10: backends[0].balance: "user" cannot work: {reason}; '
        'use "source" to keep a client on one server',
        f'{name}:11: backends[0].sticky: "user" cannot work: {reason}; '
        'use "source" to keep a client on one server',
        f"{name}:12: backends[0].user_map: cannot work: {reason}",
    ]


def test_user_routing_is_fine_for_backends_of_ftp_frontends() -> None:
    text = TCP_TWO_SERVERS.format(s1="50000-50099", s2="50100-50199").replace(
        'name = "pool"\n', 'name = "pool"\nbalance = "user"\nuser_map = { alice = "s1" }\n', 1
    )
    config = load_config_text(text.replace('mode = "tcp"', 'mode = "ftp"'))
    assert config.backends[0].balance == "user"
    with pytest.raises(ConfigError, match=r'backends\[0\].balance: "user" cannot work'):
        load_config_text(text)


# --------------------------------------------------------------------------
# TLS keys
# --------------------------------------------------------------------------

_PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
_PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


def _tls_frontend(text: str, lines: str) -> str:
    return text.replace('backend = "pool"\n', f'backend = "pool"\n{lines}\n', 1)


def _tls_backend(text: str, lines: str) -> str:
    return text.replace('name = "pool"\n', f'name = "pool"\n{lines}\n', 1)


def test_tls_defaults_are_off() -> None:
    config = load_config_text(MINIMAL)
    frontend, backend = config.frontends[0], config.backends[0]
    assert (frontend.tls, frontend.tls_certificate, frontend.tls_key) == ("none", None, None)
    assert frontend.tls_required is False
    assert (backend.tls, backend.tls_verify, backend.tls_ca, backend.tls_server_name) == (
        "none",
        True,
        None,
        None,
    )


def test_tls_paths_are_taken_from_the_config_files_folder(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "lb.pem").write_text(_PEM_KEY + _PEM_CERT)
    (tmp_path / "ca.pem").write_text(_PEM_CERT)
    text = _tls_frontend(MINIMAL, 'tls = "explicit"\ntls_certificate = "certs/lb.pem"')
    text = _tls_backend(
        text, 'tls = "implicit"\ntls_ca = "ca.pem"\ntls_server_name = "ftp.example"'
    )
    config = load_config(write(tmp_path, text))
    assert config.frontends[0].tls_certificate == str(tmp_path / "certs" / "lb.pem")
    assert config.backends[0].tls_ca == str(tmp_path / "ca.pem")
    assert config.backends[0].tls_server_name == "ftp.example"
    assert Config.model_validate(config.model_dump()) == config


def test_tls_with_a_separate_key_file(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text(_PEM_CERT)
    (tmp_path / "key.pem").write_text(_PEM_KEY.replace("PRIVATE", "EC PRIVATE"))
    lines = 'tls = "implicit"\ntls_certificate = "cert.pem"\ntls_key = "key.pem"'
    config = load_config(write(tmp_path, _tls_frontend(MINIMAL, lines)))
    assert config.frontends[0].tls_key == str(tmp_path / "key.pem")


def test_tls_needs_a_certificate_and_a_certificate_needs_tls(tmp_path: Path) -> None:
    name, found = problems(tmp_path, _tls_frontend(MINIMAL, 'tls = "explicit"'))
    assert found == [
        f'{name}:1: frontends[0].tls_certificate: missing: tls = "explicit" needs a certificate'
    ]
    (tmp_path / "lb.pem").write_text(_PEM_KEY + _PEM_CERT)
    lines = 'tls_certificate = "lb.pem"\ntls_required = true'
    name, found = problems(tmp_path, _tls_frontend(MINIMAL, lines))
    assert found == [
        f'{name}:5: frontends[0].tls_certificate: has no effect without tls = "explicit" or '
        '"implicit"',
        f'{name}:6: frontends[0].tls_required: has no effect without tls = "explicit" or '
        '"implicit"',
    ]


def test_backend_tls_keys_need_backend_tls(tmp_path: Path) -> None:
    text = _tls_backend(MINIMAL, 'tls_verify = false\ntls_server_name = "ftp.example"')
    name, found = problems(tmp_path, text)
    assert found == [
        f'{name}:8: backends[0].tls_verify: has no effect without tls = "explicit" or "implicit"',
        f'{name}:9: backends[0].tls_server_name: has no effect without tls = "explicit" or '
        '"implicit"',
    ]


def test_tls_is_refused_in_tcp_mode(tmp_path: Path) -> None:
    (tmp_path / "lb.pem").write_text(_PEM_KEY + _PEM_CERT)
    text = _tls_frontend(
        MINIMAL, 'mode = "tcp"\ntls = "explicit"\ntls_certificate = "lb.pem"'
    ).replace('address = "127.0.0.11:21"', 'address = "127.0.0.11:21"\npassive_ports = "50000"')
    text = _tls_backend(text, 'tls = "explicit"')
    _, found = problems(tmp_path, text)
    assert any('frontends[0].tls: cannot work with mode = "tcp"' in p for p in found), found
    assert any("backends[0].tls: cannot work" in p for p in found), found


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("not a certificate", "{path} holds no PEM certificate"),
        (_PEM_CERT, "{path} holds no private key, and tls_key is not set"),
    ],
)
def test_unusable_certificate_files(tmp_path: Path, content: str | None, message: str) -> None:
    pem = tmp_path / "lb.pem"
    if content is not None:
        pem.write_text(content)
    text = _tls_frontend(MINIMAL, 'tls = "explicit"\ntls_certificate = "lb.pem"')
    name, found = problems(tmp_path, text)
    assert found == [f"{name}:6: frontends[0].tls_certificate: {message.format(path=pem)}"]
    assert check_config(tmp_path / "ftplb.toml") == found


def test_unusable_key_and_ca_files(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text(_PEM_CERT)
    (tmp_path / "key.pem").write_text("garbage")
    text = _tls_frontend(
        MINIMAL, 'tls = "explicit"\ntls_certificate = "cert.pem"\ntls_key = "key.pem"'
    )
    text = _tls_backend(text, 'tls = "explicit"\ntls_ca = "missing-ca.pem"')
    name, found = problems(tmp_path, text)
    assert found == [
        f"{name}:7: frontends[0].tls_key: {tmp_path / 'key.pem'} holds no PEM private key",
        f"{name}:12: backends[0].tls_ca: cannot read {tmp_path / 'missing-ca.pem'}: "
        "No such file or directory",
    ]


@pytest.mark.parametrize("bad", ["", "-bad.example", "two words", "a..b"])
def test_bad_tls_server_names(tmp_path: Path, bad: str) -> None:
    text = _tls_backend(MINIMAL, f'tls = "explicit"\ntls_server_name = "{bad}"')
    _, found = problems(tmp_path, text)
    assert len(found) == 1 and "backends[0].tls_server_name: invalid TLS server name" in found[0]


def test_bad_tls_mode(tmp_path: Path) -> None:
    _, found = problems(tmp_path, _tls_frontend(MINIMAL, 'tls = "starttls"'))
    assert len(found) == 1 and "frontends[0].tls: Input should be" in found[0]


# --------------------------------------------------------------------------
# PROXY protocol
# --------------------------------------------------------------------------


def test_proxy_protocol_keys() -> None:
    text = _tls_frontend(MINIMAL, 'accept_proxy = true\nproxy_trusted = ["10.0.0.0/8", "::1"]')
    text = _tls_backend(text, 'send_proxy = "v2"\nsend_proxy_data = true')
    config = load_config_text(text)
    frontend, backend = config.frontends[0], config.backends[0]
    assert (frontend.accept_proxy, frontend.proxy_trusted) == (True, ["10.0.0.0/8", "::1/128"])
    assert (backend.send_proxy, backend.send_proxy_data) == ("v2", True)
    defaults = load_config_text(MINIMAL)
    assert (defaults.frontends[0].accept_proxy, defaults.frontends[0].proxy_trusted) == (False, [])
    assert (defaults.backends[0].send_proxy, defaults.backends[0].send_proxy_data) == (
        "none",
        False,
    )


def test_bad_proxy_protocol_values(tmp_path: Path) -> None:
    text = _tls_frontend(
        MINIMAL, 'accept_proxy = true\nproxy_trusted = ["10.0.0.1/8", "localhost", 7]'
    )
    name, found = problems(tmp_path, _tls_backend(text, 'send_proxy = "v3"'))
    assert found == [
        f'{name}:6: frontends[0].proxy_trusted[0]: invalid network "10.0.0.1/8": expected an '
        'address or a CIDR such as "10.0.0.0/8" or "2001:db8::/32", without host bits',
        f'{name}:6: frontends[0].proxy_trusted[1]: invalid network "localhost": expected an '
        'address or a CIDR such as "10.0.0.0/8" or "2001:db8::/32", without host bits',
        f"{name}:6: frontends[0].proxy_trusted[2]: invalid network 7: expected an "
        'address or a CIDR such as "10.0.0.0/8" or "2001:db8::/32", without host bits',
        f"{name}:10: backends[0].send_proxy: Input should be 'none', 'v1' or 'v2'",
    ]


def test_proxy_protocol_keys_need_their_companions(tmp_path: Path) -> None:
    text = _tls_frontend(MINIMAL, "accept_proxy = true")
    name, found = problems(tmp_path, _tls_backend(text, "send_proxy_data = true"))
    assert found == [
        f"{name}:1: frontends[0].proxy_trusted: missing: accept_proxy = true needs the networks "
        "allowed to send the header",
        f'{name}:9: backends[0].send_proxy_data: has no effect without send_proxy = "v1" or "v2"',
    ]
    name, found = problems(tmp_path, _tls_frontend(MINIMAL, 'proxy_trusted = ["127.0.0.1"]'))
    assert found == [f"{name}:5: frontends[0].proxy_trusted: has no effect without accept_proxy"]
