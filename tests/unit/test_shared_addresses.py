"""The addresses a ``workers = N`` master checks before its workers share them."""

from __future__ import annotations

from ftplb.config.load import load_config_text
from ftplb.supervisor import shared_addresses

CONFIG = """\
[defaults]
workers = 2

[[frontends]]
name = "ftp"
bind = ["localhost:2121", "[::1]:2121"]
backend = "ftp_pool"
passive_ports = "41000-41999"

[[frontends]]
name = "pass"
bind = ["127.0.0.2:990"]
mode = "tcp"
backend = "tcp_pool"

[[backends]]
name = "ftp_pool"

[[backends.servers]]
name = "f1"
address = "127.0.0.11:21"

[[backends]]
name = "tcp_pool"

[[backends.servers]]
name = "t1"
address = "127.0.0.21:990"
passive_ports = "50000-50002"

[[backends.servers]]
name = "t2"
address = "127.0.0.22:990"
passive_ports = 50010
"""


def test_binds_of_every_frontend_and_the_passive_ports_of_tcp_mode() -> None:
    addresses = shared_addresses(load_config_text(CONFIG))
    assert addresses == [
        ("127.0.0.1", 2121),  # "localhost" binds the IPv4 loopback
        ("::1", 2121),
        # mode ftp opens its passive listeners per transfer: none here.
        ("127.0.0.2", 990),
        ("127.0.0.2", 50000),
        ("127.0.0.2", 50001),
        ("127.0.0.2", 50002),
        ("127.0.0.2", 50010),
    ]
