"""Small configuration texts that several tests start from."""

from __future__ import annotations

ONE_SERVER = """
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
"""Frontend ftp -> backend pool -> s1; append tables ([admin], ...) after it."""

TWO_SERVERS = (
    ONE_SERVER
    + """weight = 2
[[backends.servers]]
name = "s2"
address = "127.0.0.12:21"
"""
)
"""As ONE_SERVER, with s1 at weight 2 and s2 at weight 1."""
