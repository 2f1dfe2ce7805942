"""Running as a service: notify messages, [defaults] user and group, privileged binds."""

from __future__ import annotations

import grp
import os
import pwd
import textwrap
from pathlib import Path

import pytest

from ftplb.config.changes import keep_restart_only, restart_only_changes
from ftplb.config.load import ConfigError, load_config, load_config_text
from ftplb.runtime.notify import Notifier, format_notification, monotonic_usec
from ftplb.runtime.privileges import privileged_binds_added, target_identity
from tests.config_texts import ONE_SERVER

# ------------------------------------------------------------------ notify


def test_a_notification_is_key_value_lines_in_the_given_order() -> None:
    message = format_notification({"READY": 1, "MAINPID": 4321, "STATUS": "serving"})
    assert message == b"READY=1\nMAINPID=4321\nSTATUS=serving\n"


def test_a_reload_notification_carries_the_monotonic_clock() -> None:
    before = monotonic_usec()
    message = format_notification({"RELOADING": 1, "MONOTONIC_USEC": monotonic_usec()})
    after = monotonic_usec()
    first, second = message.decode().splitlines()
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_a_value_cannot_start_a_second_assignment() -> None:
    message = format_notification({"STATUS": "one\nREADY=1\r"})
    assert message == b"STATUS=one READY=1 \n"


@pytest.mark.parametrize("key", ["", "ready", "A=B"])
def test_a_bad_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="invalid notify key"):
        format_notification({key: 1})


def test_without_notify_socket_the_notifier_is_off() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    notifier.ready("serving")  # nothing to send to, and no error
    assert Notifier.from_environment({"NOTIFY_SOCKET": ""}).address is None
    assert Notifier.from_environment({"NOTIFY_SOCKET": "@x"}).address == "@x"


# ------------------------------------------------------------ user, group


def _someone() -> tuple[str, str]:
    """A user and a group that exist here."""
    entry = pwd.getpwuid(os.getuid())
    return entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name


def with_defaults(lines: str) -> str:
    return f"[defaults]\n{lines}\n{ONE_SERVER}"


def test_user_and_group_default_to_none() -> None:
    defaults = load_config_text(ONE_SERVER).defaults
    assert (defaults.user, defaults.group) == (None, None)
    assert target_identity(defaults) is None


def test_existing_user_and_group_are_accepted() -> None:
    user, group = _someone()
    defaults = load_config_text(with_defaults(f'user = "{user}"\ngroup = "{group}"')).defaults
    assert (defaults.user, defaults.group) == (user, group)
    identity = target_identity(defaults)  # this process is that user: no switch needed
    assert identity is not None
    assert (identity.uid, identity.gid) == (os.getuid(), os.getgid())


@pytest.mark.parametrize(
    ("lines", "line", "key", "words"),
    [
        ('user = "no-such-user-ftplb"', 2, "defaults.user", 'unknown user "no-such-user-ftplb"'),
        ("user = 0", 2, "defaults.user", "expected a user name"),
        ('user = "{user}"\ngroup = "no-such-group-ftplb"', 3, "defaults.group", "unknown group"),
    ],
)
def test_an_unknown_user_or_group_names_file_line_and_key(
    tmp_path: Path, lines: str, line: int, key: str, words: str
) -> None:
    user, _ = _someone()
    path = tmp_path / "ftplb.toml"
    path.write_text(textwrap.dedent(with_defaults(lines.format(user=user))))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    [problem] = raised.value.problems
    assert problem.startswith(f"{path}:{line}: {key}: ")
    assert words in problem


def test_group_without_user_is_refused() -> None:
    _, group = _someone()
    with pytest.raises(ConfigError) as raised:
        load_config_text(with_defaults(f'group = "{group}"'))
    assert "group is set without user" in str(raised.value)


def test_user_and_group_need_a_restart() -> None:
    user, group = _someone()
    old = load_config_text(ONE_SERVER)
    new = load_config_text(with_defaults(f'user = "{user}"\ngroup = "{group}"'))
    assert restart_only_changes(old, new) == ["defaults.user", "defaults.group"]
    kept, keys = keep_restart_only(old, new)
    assert (kept.defaults.user, kept.defaults.group) == (None, None)
    assert keys == ["defaults.user", "defaults.group"]


# -------------------------------------------------------- privileged binds


def _binds(*binds: str) -> str:
    listed = ", ".join(f'"{b}"' for b in binds)
    return ONE_SERVER.replace('bind = ["127.0.0.1:2121"]', f"bind = [{listed}]")


def test_only_new_binds_below_1024_need_root_again() -> None:
    old = load_config_text(_binds("127.0.0.1:21", "127.0.0.1:2121"))
    same = load_config_text(_binds("localhost:21", "127.0.0.1:2122"))
    assert privileged_binds_added(old, same) == []  # localhost is 127.0.0.1
    more = load_config_text(_binds("127.0.0.1:21", "127.0.0.2:21", "[::1]:990", "127.0.0.1:1024"))
    assert privileged_binds_added(old, more) == ["127.0.0.2:21", "[::1]:990"]
