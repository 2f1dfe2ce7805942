"""What a reload changes, as its log line and the restart-only keys show it."""

from __future__ import annotations

from ftplb.config.changes import keep_restart_only, restart_only_changes, server_changes
from ftplb.config.load import load_config_text
from ftplb.config.schema import Config


def config(servers: str, *, workers: int = 1, admin: str = "", defaults: str = "") -> Config:
    return load_config_text(
        f"""
[defaults]
workers = {workers}
{defaults}

[[frontends]]
name = "ftp"
bind = ["127.0.0.1:2121"]
backend = "pool"

[[backends]]
name = "pool"
{servers}
{admin}
"""
    )


def entry(name: str, address: str, weight: int = 1) -> str:
    return f'[[backends.servers]]\nname = "{name}"\naddress = "{address}"\nweight = {weight}\n'


def test_servers_added_removed_and_changed_are_named_backend_slash_server() -> None:
    old = config(entry("s1", "127.0.0.11:21") + entry("s2", "127.0.0.12:21"))
    new = config(
        entry("s2", "127.0.0.12:21", weight=3)
        + entry("s3", "127.0.0.13:21")
        + entry("s4", "127.0.0.14:21")
    )
    changes = server_changes(old, new)
    assert (changes.added, changes.removed, changes.changed) == (
        ("pool/s3", "pool/s4"),
        ("pool/s1",),
        ("pool/s2",),
    )


def test_an_unchanged_file_changes_nothing() -> None:
    old = config(entry("s1", "127.0.0.11:21"))
    changes = server_changes(old, config(entry("s1", "127.0.0.11:21")))
    assert (changes.added, changes.removed, changes.changed) == ((), (), ())
    assert keep_restart_only(old, old) == (old, [])


def test_the_worker_count_and_the_admin_bind_keep_their_running_values() -> None:
    old = config(entry("s1", "127.0.0.11:21"), workers=2, admin='[admin]\nbind = "127.0.0.1:8404"')
    new = config(
        entry("s1", "127.0.0.11:21"),
        workers=4,
        admin='[admin]\nbind = "127.0.0.1:9404"\nstats_refresh = "2s"',
    )
    assert restart_only_changes(old, new) == ["defaults.workers", "admin.bind"]
    kept, keys = keep_restart_only(old, new)
    assert keys == ["defaults.workers", "admin.bind"]
    assert kept.defaults.workers == 2
    assert kept.admin is not None and new.admin is not None
    assert (kept.admin.bind, kept.admin.stats_refresh) == (
        old.admin.bind if old.admin else None,
        2.0,
    )


def test_an_admin_table_added_or_removed_needs_a_restart() -> None:
    without = config(entry("s1", "127.0.0.11:21"))
    with_admin = config(entry("s1", "127.0.0.11:21"), admin="[admin]")
    assert keep_restart_only(without, with_admin) == (
        with_admin.model_copy(update={"admin": None}),
        ["admin.bind"],
    )
    kept, keys = keep_restart_only(with_admin, without)
    assert (kept.admin, keys) == (with_admin.admin, ["admin.bind"])


def test_the_log_settings_keep_their_running_values() -> None:
    """Each process opens its log once: a reload cannot switch its format or target."""
    old = config(entry("s1", "127.0.0.11:21"))
    new = config(
        entry("s1", "127.0.0.11:21", weight=2),
        defaults='log_format = "json"\nlog_target = "syslog"\nsyslog_address = "udp://127.0.0.1:514"',
    )
    expected = ["defaults.log_format", "defaults.log_target", "defaults.syslog_address"]
    assert restart_only_changes(old, new) == expected
    kept, keys = keep_restart_only(old, new)
    assert keys == expected
    assert kept.defaults == old.defaults
    assert kept.backends == new.backends  # the rest of the reload applies
