"""Protocol errors, each carrying the FTP reply it maps to."""

from __future__ import annotations


class ProtocolError(Exception):
    """A violation of the FTP protocol, answered with ``code`` and ``message``.

    Parsers raise it for malformed input; the control session turns it into a
    reply to the client (or, for a broken server, into a 421 and a close).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message

    def reply(self) -> bytes:
        """The single-line FTP reply for this error, CRLF-terminated."""
        return f"{self.code} {self.message}\r\n".encode("utf-8", "replace")
