"""FTP server replies: an incremental parser and the formatters (RFC 959 §4.2).

A reply is kept as the exact bytes the server sent, so that the balancer can
forward it untouched; only the code and the split into lines are interpreted.

Grammar accepted by :class:`ReplyParser`:

* a single-line reply is ``ddd text`` or just ``ddd``;
* a multi-line reply starts with ``ddd-text`` and ends at the first later line
  that starts with the same three digits followed by a space, or that is
  exactly those three digits. The lines in between are arbitrary bytes: they
  may even begin with other digits;
* lines end with CRLF or a bare LF. A CR right before the LF belongs to the
  line ending, a CR anywhere else belongs to the line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from ftplb.proto.errors import ProtocolError

_CR = 0x0D
_SPACE = 0x20

_MALFORMED = "Service not available, malformed reply from server"


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete server reply, single- or multi-line."""

    code: int
    lines: tuple[bytes, ...]
    """Each line as received, without its line ending; the first includes ``ddd-``/``ddd ``."""
    raw: bytes
    """The exact bytes received, line endings included."""

    @property
    def text(self) -> bytes:
        """The lines joined by LF, without the code prefix of the first and last line."""
        first = self.lines[0][4:]
        if len(self.lines) == 1:
            return first
        return b"\n".join((first, *self.lines[1:-1], self.lines[-1][4:]))

    @property
    def is_preliminary(self) -> bool:
        """A 1xx reply: another reply to the same command will follow."""
        return self.code < 200

    @property
    def is_final(self) -> bool:
        """Any reply but 1xx: the command it answers is complete."""
        return self.code >= 200


class ReplyParser:
    """Splits a server's byte stream into :class:`Reply` values.

    ``feed`` may be given the stream in pieces of any size; the replies are the
    same whatever the split. Malformed input raises ``ProtocolError(421, ...)``
    and leaves the parser failed: every later ``feed`` raises again, because a
    server that broke the framing cannot be trusted to resynchronise. Replies
    completed earlier in the failing call are dropped with it: the session is
    about to close anyway.
    """

    __slots__ = (
        "_buffer",
        "_failure",
        "_line_start",
        "_lines",
        "_max_line_length",
        "_max_reply_bytes",
        "_multiline_code",
        "_scan_from",
        "_terminator",
    )

    def __init__(self, max_line_length: int = 8192, max_reply_bytes: int = 4 * 1024 * 1024) -> None:
        if max_line_length < 3 or max_reply_bytes < 4:
            raise ValueError("limits too small to hold any reply")
        self._max_line_length = max_line_length
        self._max_reply_bytes = max_reply_bytes
        # The buffer always starts with the reply in progress: the lines of a
        # multi-line reply received so far, then the partial line.
        self._buffer = bytearray()
        self._line_start = 0
        # Every byte before this offset is known to hold no LF, so that a
        # stream fed byte by byte is scanned once, not once per byte.
        self._scan_from = 0
        self._multiline_code = 0  # 0 when no multi-line reply is open
        self._terminator = b""
        self._lines: list[bytes] = []
        self._failure: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a reply."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Reply]:
        """Consume ``data`` and return the replies it completes, in order."""
        if self._failure is not None:
            raise ProtocolError(421, self._failure)
        if not data:
            return []
        buffer = self._buffer
        buffer += data
        replies: list[Reply] = []
        reply_start = 0
        line_start = self._line_start
        scan_from = self._scan_from
        while (newline := buffer.find(b"\n", scan_from)) >= 0:
            line_end = newline
            if newline > line_start and buffer[newline - 1] == _CR:
                line_end -= 1
            if line_end - line_start > self._max_line_length:
                self._fail("line too long")
            if newline + 1 - reply_start > self._max_reply_bytes:
                self._fail("reply too large")
            line = bytes(buffer[line_start:line_end])
            line_start = scan_from = newline + 1
            if self._multiline_code:
                self._lines.append(line)
                if not self._ends_multiline(line):
                    continue
                code, lines = self._multiline_code, tuple(self._lines)
                self._multiline_code, self._lines = 0, []
            else:
                code, multiline = self._parse_first_line(line)
                if multiline:
                    self._multiline_code, self._terminator, self._lines = code, line[:3], [line]
                    continue
                lines = (line,)
            replies.append(Reply(code, lines, bytes(buffer[reply_start:line_start])))
            reply_start = line_start

        partial = len(buffer) - line_start
        # A partial line may end in the CR of its CRLF: that CR is not counted.
        if partial > self._max_line_length and (
            partial > self._max_line_length + 1 or buffer[-1] != _CR
        ):
            self._fail("line too long")
        if len(buffer) - reply_start > self._max_reply_bytes:
            self._fail("reply too large")
        del buffer[:reply_start]
        self._line_start = line_start - reply_start
        self._scan_from = len(buffer)
        return replies

    def _ends_multiline(self, line: bytes) -> bool:
        return line.startswith(self._terminator) and (len(line) == 3 or line[3] == _SPACE)

    def _parse_first_line(self, line: bytes) -> tuple[int, bool]:
        """The code of a reply's first line, and whether it opens a multi-line reply."""
        digits = line[:3]
        separator = line[3:4]
        if len(digits) != 3 or not digits.isdigit() or separator not in (b"", b" ", b"-"):
            self._fail("bad first line")
        code = int(digits)
        if not 100 <= code <= 599:
            self._fail("code out of range")
        return code, separator == b"-"

    def _fail(self, reason: str) -> NoReturn:
        # The reason is for logs; the client only ever sees the 421 text.
        self._failure = f"{_MALFORMED} ({reason})"
        raise ProtocolError(421, self._failure)


def format_reply(code: int, text: str) -> bytes:
    """Encode a reply the balancer itself sends, as UTF-8 (RFC 2640).

    ``"\\n"``, ``"\\r\\n"`` or a lone ``"\\r"`` in ``text`` starts a new line and
    makes a multi-line reply. A middle line that would read as the end of that
    reply is indented by one space, as RFC 959 suggests.
    """
    _check_code(code)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    encoded = [line.encode("utf-8", "replace") for line in lines]
    if len(encoded) == 1:
        return b"%d %s\r\n" % (code, encoded[0])
    terminator = b"%d" % code
    middle = [b" " + line if _would_terminate(line, terminator) else line for line in encoded[1:-1]]
    return format_multiline(code, encoded[0], middle, encoded[-1])


def format_multiline(code: int, first: bytes, middle: Sequence[bytes], last: bytes) -> bytes:
    """Encode ``ddd-first``, the middle lines exactly as given, then ``ddd last``.

    Raises ``ValueError`` for a line holding CR or LF, or a middle line that a
    client would read as the end of the reply.
    """
    _check_code(code)
    terminator = b"%d" % code
    for line in (first, *middle, last):
        if b"\n" in line or b"\r" in line:
            raise ValueError(f"reply line contains a line break: {line!r}")
    for line in middle:
        if _would_terminate(line, terminator):
            raise ValueError(f"middle line would end the reply early: {line!r}")
    parts = [b"%s-%s\r\n" % (terminator, first)]
    parts.extend(line + b"\r\n" for line in middle)
    parts.append(b"%s %s\r\n" % (terminator, last))
    return b"".join(parts)


def _would_terminate(line: bytes, terminator: bytes) -> bool:
    return line.startswith(terminator) and (len(line) == 3 or line[3] == _SPACE)


def _check_code(code: int) -> None:
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
        raise ValueError(f"reply code must be 100..599, not {code!r}")
