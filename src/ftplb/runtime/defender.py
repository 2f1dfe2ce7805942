"""The login defender at work: where its record lives, and what sessions ask of it.

The rules are pure (:mod:`ftplb.balancing.defender`); this module keeps their
state in a store and answers the runtime's two questions: may this address
connect, and what follows from this failed login.

Two stores, one interface:

* :class:`MemoryStore` for a lone process: the record in memory.
* :class:`FileStore` for the workers of a master: one JSON file,
  ``defender.json`` in the master's run directory, which every worker and the
  master's admin listener read. As with the record of server overrides
  (:mod:`ftplb.admin.overrides_store`), a change is a read, a change and an
  ``os.replace`` under an ``flock``, so two workers counting failures at once
  never lose one; a reader never sees a file half written. A reader stats the
  file at each connect and reads it again only when it was replaced, so a ban
  one worker makes holds in every other at its next connect.

Both are small local operations, done on the event loop: a failed login
costs one locked read and write of a file bounded by ``MAX_TRACKED`` and
``MAX_BANS``, a connect one ``stat``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from ftplb.balancing.defender import (
    Ban,
    DefenderPolicy,
    DefenderRecord,
    Verdict,
    client_address,
    record_from_json,
    record_to_json,
)
from ftplb.proto.outcomes import EndReason
from ftplb.runtime.logs import EventLog, LogWarning

__all__ = [
    "FILENAME",
    "Defender",
    "DefenderStore",
    "FileStore",
    "MemoryStore",
    "StoreError",
    "active_bans",
    "lift_ban",
]

FILENAME = "defender.json"

_T = TypeVar("_T")

Clock = Callable[[], float]


class StoreError(Exception):
    """The shared record cannot be read or written; the message names the file."""


class DefenderStore(Protocol):
    """Where the defender's record lives: one process's memory, or a file shared by workers."""

    def read(self) -> DefenderRecord:
        """The record as it is now (StoreError if it cannot be read); do not change it."""
        ...

    def change(self, change: Callable[[DefenderRecord], _T]) -> _T:
        """Apply ``change`` to the record and keep the result, atomically; its return value."""
        ...


class MemoryStore:
    """The record of a lone process."""

    def __init__(self) -> None:
        self._record = DefenderRecord()

    def read(self) -> DefenderRecord:
        return self._record

    def change(self, change: Callable[[DefenderRecord], _T]) -> _T:
        return change(self._record)


class FileStore:
    """The record in ``directory/defender.json``, shared by every process that opens it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self._lock_path = self.path + ".lock"
        self._stamp: tuple[int, int, int] | None = None
        self._record = DefenderRecord()

    def read(self) -> DefenderRecord:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._record = None, DefenderRecord()
            return self._record
        except OSError as error:
            raise StoreError(f"{self.path}: {error.strerror or error}") from error
        # A replaced file is a new inode with a new mtime; its size helps on a coarse clock.
        stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
        if stamp != self._stamp:
            self._record = self._load()
            self._stamp = stamp
        return self._record

    def change(self, change: Callable[[DefenderRecord], _T]) -> _T:
        try:
            with open(self._lock_path, "a", encoding="utf-8") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    record = self._load()
                except StoreError:
                    record = DefenderRecord()  # a damaged record is replaced by a sound one
                result = change(record)
                self._replace(record)
        except OSError as error:
            raise StoreError(f"{self.path}: {error.strerror or error}") from error
        self._stamp = None  # read again: the file is ours now, but its stamp is not known
        return result

    def _load(self) -> DefenderRecord:
        try:
            with open(self.path, encoding="utf-8") as file:
                return record_from_json(json.load(file))
        except FileNotFoundError:
            return DefenderRecord()
        except (OSError, ValueError) as error:  # DefenderRecordError is a ValueError
            raise StoreError(f"{self.path}: {error}") from error

    def _replace(self, record: DefenderRecord) -> None:
        descriptor, temporary = tempfile.mkstemp(prefix=".defender-", dir=self.directory)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(record_to_json(record), file)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


class Defender:
    """The ``[defender]`` rules of one generation over the store of the whole process."""

    def __init__(
        self,
        policy: DefenderPolicy,
        store: DefenderStore,
        log: EventLog,
        clock: Clock = time.time,
    ) -> None:
        self.policy = policy
        self.store = store
        self._log = log
        self._clock = clock

    def refusal(self, address: str) -> EndReason | None:
        """Why ``address`` may not connect now (BANNED or DENIED), or None to admit it."""
        try:
            canonical = client_address(address)
        except ValueError:
            return None
        listed = self.policy.listed(canonical)
        if listed is Verdict.DENIED:
            return EndReason.DENIED
        if listed is Verdict.ADMIT:
            return None
        try:
            record = self.store.read()
        except StoreError as error:
            # Failing open: a damaged file must not lock every client out.
            self._log.warning(LogWarning.DEFENDER_UNREADABLE, reason=str(error))
            return None
        return EndReason.BANNED if record.ban_of(canonical, self._clock()) is not None else None

    def failed_login(self, address: str, *, frontend: str, session: str) -> bool:
        """Count a failed login of ``address``; True when the address is banned now."""
        try:
            canonical = client_address(address)
        except ValueError:
            return False
        if self.policy.listed(canonical) is not None:
            return False
        now = self._clock()
        policy = self.policy

        def count(record: DefenderRecord) -> tuple[Ban | None, bool]:
            # (the ban this failure earns, whether the address was banned already)
            if record.ban_of(canonical, now) is not None:
                return None, True  # a session opened before the ban: the ban stands
            return record.fail(policy, canonical, now), False

        try:
            ban, banned_already = self.store.change(count)
        except StoreError as error:
            self._log.warning(LogWarning.DEFENDER_UNREADABLE, reason=str(error))
            return False
        if banned_already:
            return True
        self._log.notify("defender_failure", frontend=frontend)
        if ban is None:
            return False
        self._log.warning(
            LogWarning.CLIENT_BANNED,
            frontend=frontend,
            session=session,
            client=canonical,
            failures=policy.max_failures,
            offence=ban.offence,
            ban_time=round(ban.until - ban.since, 3),
            until=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ban.until)),
        )
        return True


def active_bans(store: DefenderStore, clock: Clock = time.time) -> list[Ban]:
    """The bans in force now in ``store`` (StoreError if it cannot be read)."""
    return store.read().active_bans(clock())


def lift_ban(store: DefenderStore, address: str, clock: Clock = time.time) -> Ban | None:
    """End the ban on ``address`` (canonical or not; ValueError if not an address);
    the ban that was in force, or None when there was none."""
    canonical = client_address(address)
    now = clock()
    return store.change(lambda record: record.lift(canonical, now))
