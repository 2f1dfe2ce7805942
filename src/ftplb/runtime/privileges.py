"""Dropping root: run as ``[defaults] user`` and ``group`` once the listeners are open.

ftplb starts as root to bind port 21 (and any port below 1024), then gives
root up for good: supplementary groups, then the group, then the user, in
that order (once the user is set, the groups can no longer change). What
opens later needs no root: passive ports are 1024 or more.

A reload cannot bind a new port below 1024 after the drop; :func:`privileged_binds_added`
finds such binds so that the reload is refused with that reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import os
import pwd
from dataclasses import dataclass

from ftplb.config.general import Defaults
from ftplb.config.schema import Config
from ftplb.runtime.listeners import resolve_host, show_address

__all__ = [
    "Identity",
    "PrivilegeError",
    "drop_privileges",
    "hand_over",
    "privileged_binds_added",
    "target_identity",
]

FIRST_UNPRIVILEGED_PORT = 1024

_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2


class PrivilegeError(Exception):
    """The configured user or group cannot be taken on; the message says why."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Whom to run as: a user, its group, and the user's supplementary groups."""

    user: str
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.user} (uid {self.uid}, gid {self.gid})"


def target_identity(defaults: Defaults) -> Identity | None:
    """The identity to drop to, None when ``user`` is not set; PrivilegeError if impossible.

    A process that is not root can only "drop" to itself: any other user is
    refused before a listener opens.
    """
    if defaults.user is None:
        return None
    try:
        entry = pwd.getpwnam(defaults.user)
        gid = grp.getgrnam(defaults.group).gr_gid if defaults.group else entry.pw_gid
    except KeyError as error:
        raise PrivilegeError(f"cannot run as user {defaults.user}: {error.args[0]}") from None
    identity = Identity(defaults.user, entry.pw_uid, gid)
    euid = os.geteuid()
    if euid != 0 and (euid != identity.uid or os.getegid() != identity.gid):
        raise PrivilegeError(
            f"cannot switch to user {identity}: ftplb runs as uid {euid}, not root; "
            "start it as root, or remove [defaults] user and group"
        )
    return identity


def hand_over(path: str, identity: Identity) -> None:
    """Let ``identity`` write in and remove the directory ``path`` (owned by this process);
    PrivilegeError if it cannot.

    The group is left as it is (root's) and may write too: a master that
    stays root keeps removing the files of its dropped workers, without
    needing CAP_DAC_OVERRIDE.
    """
    try:
        os.chmod(path, 0o770)  # first: once it is another user's, only CAP_FOWNER could
        os.chown(path, identity.uid, -1)
    except OSError as error:
        raise PrivilegeError(
            f"cannot hand {path} to user {identity}: {error.strerror or error}"
        ) from error


def drop_privileges(identity: Identity) -> bool:
    """Become ``identity`` for good: groups, then group, then user; PrivilegeError if refused.

    False when this process runs as that user already (it was started as it).
    """
    if os.getuid() == identity.uid and os.geteuid() == identity.uid:
        return False
    death_signal = _parent_death_signal()
    try:
        os.initgroups(identity.user, identity.gid)
        os.setgid(identity.gid)
        os.setuid(identity.uid)
    except OSError as error:
        raise PrivilegeError(f"cannot switch to user {identity}: {error.strerror}") from error
    # A change of credentials clears the parent-death signal that a worker asked for.
    if death_signal:
        _set_parent_death_signal(death_signal)
    return True


def privileged_binds_added(old: Config, new: Config) -> list[str]:
    """The listener addresses below port 1024 that ``new`` adds to ``old``, as text."""
    before = {
        (resolve_host(bind.host), bind.port) for frontend in old.frontends for bind in frontend.bind
    }
    added: list[str] = []
    for frontend in new.frontends:
        for bind in frontend.bind:
            address = (resolve_host(bind.host), bind.port)
            if bind.port < FIRST_UNPRIVILEGED_PORT and address not in before:
                added.append(show_address(*address))
    return added


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _parent_death_signal() -> int:
    value = ctypes.c_int(0)
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(_PR_GET_PDEATHSIG, ctypes.byref(value))
    return value.value


def _set_parent_death_signal(signum: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(_PR_SET_PDEATHSIG, signum)
