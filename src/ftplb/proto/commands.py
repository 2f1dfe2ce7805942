"""FTP client commands: an incremental parser, and their text for log lines.

Arguments stay bytes from end to end: paths are often not UTF-8, and may start
or end with spaces, so the parser never decodes, strips or re-encodes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftplb.proto.errors import ProtocolError
from ftplb.proto.rules import rule_for

_CR = 0x0D
_IAC = 0xFF
# Telnet commands that may precede a command, e.g. IAC IP and IAC DM before
# ABOR (RFC 959 §4.1.3). DM alone is the urgent byte when it arrives inline.
_TELNET_COMMANDS = range(0xF0, 0xFF)
_DATA_MARK = 0xF2
_MAX_VERB_LENGTH = 16

_LINE_TOO_LONG = (500, "Command line too long")
_UNRECOGNIZED = (500, "Syntax error, command unrecognized")


@dataclass(frozen=True, slots=True)
class Command:
    """One command line from a client."""

    verb: bytes
    """ASCII upper-case, e.g. ``b"RETR"``."""
    arg: bytes
    """Every byte after the space that follows the verb, without the line ending; not stripped."""
    raw: bytes
    """The whole line as received, line ending included."""


class CommandParser:
    """Splits a client's byte stream into :class:`Command` values.

    Bad lines do not stop the parser: each yields a ``ProtocolError`` in the
    returned list, for the session to answer, and parsing resumes at the next
    line. The result is the same whatever the split of the stream.
    """

    __slots__ = ("_buffer", "_discarding", "_max_line_length", "_scan_from")

    def __init__(self, max_line_length: int = 4096) -> None:
        if max_line_length < 1:
            raise ValueError("max_line_length must be positive")
        self._max_line_length = max_line_length
        self._buffer = bytearray()
        # Every byte before this offset is known to hold no LF.
        self._scan_from = 0
        # True while skipping the rest of an overlong line, already reported.
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of a partial line held while waiting for its LF."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Command | ProtocolError]:
        """Consume ``data`` and return the commands (or errors) of the lines it completes."""
        results: list[Command | ProtocolError] = []
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return results
            self._discarding = False
            data = data[newline + 1 :]
        if not data:
            return results
        buffer = self._buffer
        buffer += data
        line_start = 0
        scan_from = self._scan_from
        while (newline := buffer.find(b"\n", scan_from)) >= 0:
            # The limit counts every byte before the LF, a CR included.
            if newline - line_start > self._max_line_length:
                results.append(ProtocolError(*_LINE_TOO_LONG))
            else:
                parsed = _parse_line(bytes(buffer[line_start : newline + 1]))
                if parsed is not None:
                    results.append(parsed)
            line_start = scan_from = newline + 1

        if len(buffer) - line_start > self._max_line_length:
            # Report as soon as the limit is passed: a client that never sends
            # LF must not make us wait, nor buffer without bound.
            results.append(ProtocolError(*_LINE_TOO_LONG))
            self._discarding = True
            buffer.clear()
        else:
            del buffer[:line_start]
        self._scan_from = len(buffer)
        return results


def _parse_line(raw: bytes) -> Command | ProtocolError | None:
    """Parse one complete line (ending in LF); None for a line to ignore."""
    end = len(raw) - 1
    if end > 0 and raw[end - 1] == _CR:
        end -= 1
    start = 0
    while start < end:
        byte = raw[start]
        if byte == _IAC and start + 1 < end and raw[start + 1] in _TELNET_COMMANDS:
            start += 2
        elif byte == _DATA_MARK:
            start += 1
        else:
            break
    if start == end:
        # An empty line, or one that held only Telnet signals: no command, so
        # no reply either (a reply here would desynchronise the client).
        return None
    space = raw.find(b" ", start, end)
    verb = raw[start:end] if space < 0 else raw[start:space]
    if len(verb) > _MAX_VERB_LENGTH or not verb.isalpha():
        return ProtocolError(*_UNRECOGNIZED)
    arg = b"" if space < 0 else raw[space + 1 : end]
    return Command(verb.upper(), arg, raw)


# Control characters would let a client forge or garble log lines, so they are
# shown as escapes, like the undecodable bytes.
_ESCAPE_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


def loggable(command: Command) -> str:
    """The command as text for a log line, with secrets masked.

    ``PASS ****`` for secret verbs; otherwise the verb, then a space and the
    argument when there is one. Undecodable bytes and control characters
    appear as ``\\xNN`` escapes.
    """
    verb = command.verb.decode("ascii", "backslashreplace").translate(_ESCAPE_CONTROLS)
    if rule_for(command.verb).secret:
        return f"{verb} ****"
    if not command.arg:
        return verb
    arg = command.arg.decode("utf-8", "backslashreplace").translate(_ESCAPE_CONTROLS)
    return f"{verb} {arg}"
