"""The one shared record of runtime server overrides: a JSON file in the run directory.

The process that hosts the admin listener (the master of ``workers = N``, or
the only process) writes it; every balancer process watches it and lays it
onto its pools (:func:`ftplb.balancing.overrides.apply_overrides`). One file
is the single source of truth: a worker that starts or restarts, and a new
generation after a reload, read the same record, so an action survives both.
A file replaced by ``os.replace`` is never seen half written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Mapping

from ftplb.balancing.overrides import (
    Override,
    OverrideError,
    ServerKey,
    overrides_from_json,
    overrides_to_json,
)
from ftplb.balancing.state import AdminState

__all__ = ["FILENAME", "WATCH_INTERVAL", "OverridesStore", "watch_overrides"]

FILENAME = "server-overrides.json"
WATCH_INTERVAL = 0.25
"""Seconds between looks at the file: an action reaches every worker well within a second."""

Stamp = tuple[int, int]


class OverridesStore:
    """The overrides file in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILENAME)
        self._lock_path = self.path + ".lock"

    def stamp(self) -> Stamp | None:
        """Changes whenever the file is replaced; None while there is none."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (status.st_ino, status.st_mtime_ns)

    def load(self) -> dict[ServerKey, Override]:
        """The overrides now in force; {} before the first action. OverrideError if unreadable."""
        try:
            with open(self.path, encoding="utf-8") as file:
                document = json.load(file)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise OverrideError(f"{self.path}: {error}") from error
        try:
            return overrides_from_json(document)
        except OverrideError as error:
            raise OverrideError(f"{self.path}: {error}") from error

    def change(
        self,
        key: ServerKey,
        *,
        user: str,
        admin: AdminState | None = None,
        weight: int | None = None,
        configured_weight: int | None = None,
    ) -> Override:
        """Set ``admin`` and/or ``weight`` (against ``configured_weight``) of one server.

        Read, change and replace happen under a lock, so two actions at once
        never lose one another. A server back to READY at its configured
        weight leaves the record.
        """
        with open(self._lock_path, "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            overrides = self.load()
            old = overrides.get(key, Override())
            new = Override(
                admin=old.admin if admin is None else admin,
                weight=old.weight if weight is None else weight,
                configured_weight=old.configured_weight if weight is None else configured_weight,
                user=user,
            )
            if new.admin is AdminState.READY and new.weight is None:
                overrides.pop(key, None)
            else:
                overrides[key] = new
            self._replace(overrides)
        return new

    def _replace(self, overrides: Mapping[ServerKey, Override]) -> None:
        descriptor, temporary = tempfile.mkstemp(prefix=".overrides-", dir=self.directory)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(overrides_to_json(overrides), file, indent=1)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


async def watch_overrides(
    store: OverridesStore,
    apply: Callable[[Mapping[ServerKey, Override]], None],
    on_error: Callable[[str], None],
    interval: float = WATCH_INTERVAL,
) -> None:
    """Call ``apply`` with the record now, and again each time it changes; runs until cancelled.

    A stat every ``interval`` is cheaper than any notification machinery, and
    it works the same in a lone process and in every worker.
    """
    seen: Stamp | None = None
    first = True
    while True:
        stamp = store.stamp()
        if first or stamp != seen:
            first = False
            seen = stamp
            try:
                apply(store.load())
            except OverrideError as error:
                on_error(str(error))
        await asyncio.sleep(interval)
