"""The demo's choice of passive range, and what it tells its user (no sockets)."""

from __future__ import annotations

import pytest

from ftplb.config.fields import PortRange
from ftplb.config.load import load_config_text
from ftplb.demo import demo_config, demo_hints, demo_passive_range


@pytest.mark.parametrize(
    ("ephemeral", "expected"),
    [
        ((32768, 60999), PortRange(32668, 32767)),
        ((1100, 60999), PortRange(61000, 61099)),
        ((1024, 65535), PortRange(40000, 40099)),
        (None, PortRange(32668, 32767)),
    ],
    ids=["below", "above", "no-room", "unknown"],
)
def test_passive_range_keeps_out_of_the_ephemeral_ports(
    ephemeral: tuple[int, int] | None, expected: PortRange
) -> None:
    assert demo_passive_range(ephemeral) == expected


def test_hints_name_the_servers_the_range_and_where_uploads_go() -> None:
    config = load_config_text(demo_config(2121, [3001, 3002], 8404, PortRange(32668, 32767)))
    assert demo_hints(config, 8404) == (
        "ftplb demo: two FTP servers behind ftp://127.0.0.1:2121 (user demo, password demo); "
        "Ctrl-C stops.\n"
        'Servers: s1 at 127.0.0.1:3001, s2 at 127.0.0.1:3002; balance = "roundrobin"; '
        "passive ports 32668-32767.\n"
        "Try:  curl -u demo:demo ftp://127.0.0.1:2121/hello.txt\n"
        "      curl -u demo:demo -T README.md ftp://127.0.0.1:2121/\n"
        "Note: s1 and s2 have separate disks. An upload lands on one server only: a later\n"
        "      session finds the file only if it reaches the same server.\n"
        '      To keep a client on one server, set sticky = "source" in [[backends]]\n'
        '      (the demo has sticky = "none").\n'
        "Stats: http://127.0.0.1:8404/stats\n"
    )


def test_hints_show_a_sticky_setting_in_force() -> None:
    text = demo_config(2121, [3001, 3002], 0, PortRange(32668, 32767))
    config = load_config_text(text.replace('balance = "roundrobin"', 'sticky = "source"'))
    hints = demo_hints(config)
    assert '      With sticky = "source", a client keeps its server.\n' in hints
    assert "Stats:" not in hints
