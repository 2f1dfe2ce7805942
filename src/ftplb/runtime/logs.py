"""Session, transfer and event log lines, as text or JSON lines, on stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]

# Warnings that the metrics count, by their message: one name for the code
# that writes each one and for the counter that reads it.
CONNECT_FAILED = "server connect failed"
PASSIVE_LISTENER_FAILED = "cannot open a passive listener"
FOREIGN_DATA_REFUSED = "refused a data connection from a foreign address"
ORPHAN_DATA_REFUSED = "data connection refused: no control session from this address to the server"

Observer = Callable[[str, dict[str, Any]], None]
"""Called with each record's kind and fields (read-only), e.g. to count it in metrics."""


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    # Quote only what would be ambiguous in a key=value line.
    if not text or " " in text or '"' in text or "=" in text or "\\" in text:
        return json.dumps(text)
    return text


class EventLog:
    """Writes one line per record; never raises on a closed or full stream."""

    __slots__ = ("_fixed", "_format", "_observers", "_second", "_stamp", "_stream")

    def __init__(
        self,
        log_format: LogFormat = "text",
        stream: TextIO | None = None,
        fixed: Mapping[str, Any] | None = None,
    ) -> None:
        # Fields on every line, right after the kind (a worker's `worker=<i>`).
        self._fixed: dict[str, Any] = dict(fixed or {})
        self._format = log_format
        self._stream = stream if stream is not None else sys.stderr
        self._second = -1
        self._stamp = ""
        self._observers: tuple[Observer, ...] = ()

    def add_observer(self, observer: Observer) -> None:
        """Also hand every record to ``observer``, after its line is written."""
        self._observers = (*self._observers, observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop handing records to ``observer``; unknown observers are ignored."""
        # Equality, not identity: each access to a bound method makes a new object.
        self._observers = tuple(o for o in self._observers if o != observer)

    def notify(self, kind: str, **fields: Any) -> None:
        """Hand a record to the observers only: an event worth counting, not a line."""
        self._tell(kind, fields)

    def _tell(self, kind: str, fields: dict[str, Any]) -> None:
        for observer in self._observers:
            try:
                observer(kind, fields)
            except Exception:
                continue  # an observer (metrics) must never take a session down

    def write(self, kind: str, **fields: Any) -> None:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        stamp = self._stamp
        shown = {**self._fixed, **fields} if self._fixed else fields
        if self._format == "json":
            line = json.dumps({"time": stamp, "event": kind, **shown}, default=str)
        else:
            line = " ".join([stamp, kind, *(f"{k}={_text_value(v)}" for k, v in shown.items())])
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # logging must never take a session down
        if self._observers:
            self._tell(kind, fields)

    def session(self, **fields: Any) -> None:
        self.write("session", **fields)

    def transfer(self, **fields: Any) -> None:
        self.write("transfer", **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self.write("warning", message=message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self.write("info", message=message, **fields)
