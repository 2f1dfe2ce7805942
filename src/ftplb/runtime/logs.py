"""Session, transfer and event log lines, as text or JSON lines, on stderr."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    # Quote only what would be ambiguous in a key=value line.
    if not text or " " in text or '"' in text or "=" in text or "\\" in text:
        return json.dumps(text)
    return text


class EventLog:
    """Writes one line per record; never raises on a closed or full stream."""

    __slots__ = ("_format", "_second", "_stamp", "_stream")

    def __init__(self, log_format: LogFormat = "text", stream: TextIO | None = None) -> None:
        self._format = log_format
        self._stream = stream if stream is not None else sys.stderr
        self._second = -1
        self._stamp = ""

    def write(self, kind: str, **fields: Any) -> None:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        stamp = self._stamp
        if self._format == "json":
            line = json.dumps({"time": stamp, "event": kind, **fields}, default=str)
        else:
            line = " ".join([stamp, kind, *(f"{k}={_text_value(v)}" for k, v in fields.items())])
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # logging must never take a session down

    def session(self, **fields: Any) -> None:
        self.write("session", **fields)

    def transfer(self, **fields: Any) -> None:
        self.write("transfer", **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self.write("warning", message=message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self.write("info", message=message, **fields)
