"""Which line of a TOML text defines a given key path.

The loader uses this to put a line number on every configuration problem.
tomllib keeps no positions, so this module scans the text itself. It is not a
TOML parser: it only follows the structure that decides where a key lives
(table headers, arrays of tables, dotted keys, inline tables, arrays that span
lines) and skips over strings so that their contents are never mistaken for
structure. It never raises; on text it does not understand it just knows less.
"""

from __future__ import annotations

import tomllib

__all__ = ["find_line", "index_lines", "nearest_line"]

KeyPath = tuple[str | int, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_BLANKS = " \t\r"
# Characters that end a bare value such as 42, true or 1979-05-27T07:32:00.
_SCALAR_ENDS = frozenset(",]}\n#")


def find_line(text: str, path: KeyPath) -> int | None:
    """The 1-based line that defines ``path``, or of its nearest enclosing key or table.

    For ``("backends", 0, "servers", 1, "weight")`` that is the ``weight = ...``
    line of the second ``[[backends.servers]]`` of the first backend; if that
    server has no weight, the line of its ``[[backends.servers]]`` header.
    None when not even the first key of the path is in the text.
    """
    return nearest_line(index_lines(text), path)


def index_lines(text: str) -> dict[KeyPath, int]:
    """Every key path the text defines, with the line that defines it first.

    Build it once when locating many paths in the same text.
    """
    scanner = _Scanner(text)
    scanner.scan()
    return scanner.lines


def nearest_line(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """Like :func:`find_line`, over an index made by :func:`index_lines`."""
    for length in range(len(path), 0, -1):
        line = lines.get(path[:length])
        if line is not None:
            return line
    return None


class _Scanner:
    """One pass over the text, recording the line of every key path it meets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}
        # How many elements each array of tables has so far. The key includes
        # the parent's index, so [[backends.servers]] counts per backend.
        self.table_arrays: dict[KeyPath, int] = {}

    # -- statements ---------------------------------------------------------

    def scan(self) -> None:
        table: KeyPath = ()
        while self.pos < len(self.text):
            self._skip_blanks_comments_newlines()
            if self.pos >= len(self.text):
                break
            start = self.pos
            if self.text.startswith("[[", self.pos):
                table = self._array_table_header()
            elif self._peek() == "[":
                table = self._table_header()
            else:
                self._key_value(table)
            if self.pos == start:
                self._advance()  # not understood: move on rather than loop

    def _table_header(self) -> KeyPath:
        line = self.line
        self._advance()
        keys = self._key()
        self._skip_to_line_end()
        path = self._resolve(keys)
        self._record_with_parents(path, line)
        return path

    def _array_table_header(self) -> KeyPath:
        line = self.line
        self._advance(2)
        keys = self._key()
        self._skip_to_line_end()
        if not keys:
            return ()
        array = (*self._resolve(keys[:-1]), keys[-1])
        index = self.table_arrays.get(array, 0)
        self.table_arrays[array] = index + 1
        path = (*array, index)
        self._record_with_parents(path, line)
        return path

    def _resolve(self, keys: list[str]) -> KeyPath:
        """A header's keys as a path: an array of tables stands for its last element."""
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            count = self.table_arrays.get(path)
            if count:
                path = (*path, count - 1)
        return path

    def _key_value(self, table: KeyPath) -> None:
        line = self.line
        keys = self._key()
        if not keys or self._peek() != "=":
            self._skip_to_line_end()
            return
        self._advance()
        path = (*table, *keys)
        self._record_with_parents(path, line, start=len(table) + 1)
        self._value(path)

    def _record_with_parents(self, path: KeyPath, line: int, start: int = 1) -> None:
        # A dotted key or header also defines its parents, unless seen earlier.
        for length in range(start, len(path) + 1):
            self.lines.setdefault(path[:length], line)

    # -- keys ---------------------------------------------------------------

    def _key(self) -> list[str]:
        """A possibly dotted, possibly quoted key; the scanner stops after it."""
        keys: list[str] = []
        while True:
            self._skip_blanks()
            char = self._peek()
            if char in ('"', "'"):
                start = self.pos
                self._string()
                keys.append(_unquote(self.text[start : self.pos]))
            else:
                start = self.pos
                while self._peek() in _BARE_KEY_CHARS:
                    self._advance()
                if self.pos == start:
                    return keys
                keys.append(self.text[start : self.pos])
            self._skip_blanks()
            if self._peek() != ".":
                return keys
            self._advance()

    # -- values -------------------------------------------------------------

    def _value(self, path: KeyPath) -> None:
        self._skip_blanks()
        char = self._peek()
        if char in ('"', "'"):
            self._string()
        elif char == "[":
            self._array(path)
        elif char == "{":
            self._inline_table(path)
        else:
            while self.pos < len(self.text) and self._peek() not in _SCALAR_ENDS:
                self._advance()

    def _array(self, path: KeyPath) -> None:
        self._advance()
        index = 0
        while self.pos < len(self.text):
            self._skip_blanks_comments_newlines()
            if self._peek() in ("]", ""):
                self._advance()
                return
            if self._peek() == ",":  # stray comma: let the loop make progress
                self._advance()
                continue
            self.lines.setdefault((*path, index), self.line)
            start = self.pos
            self._value((*path, index))
            if self.pos == start:
                # Not a value at all (a stray "}"): step over it, or this
                # loop would record index after index without end.
                self._advance()
            index += 1
            self._skip_blanks_comments_newlines()
            if self._peek() == ",":
                self._advance()

    def _inline_table(self, path: KeyPath) -> None:
        self._advance()
        while self.pos < len(self.text):
            self._skip_blanks_comments_newlines()
            char = self._peek()
            if char in ("}", ""):
                self._advance()
                return
            if char == ",":
                self._advance()
                continue
            line = self.line
            keys = self._key()
            self._skip_blanks()
            if not keys or self._peek() != "=":
                self._advance()
                continue
            self._advance()
            self._record_with_parents((*path, *keys), line, start=len(path) + 1)
            self._value((*path, *keys))

    def _string(self) -> None:
        """Skip a basic, literal or multi-line string, whatever its contents."""
        quote = self._peek()
        if self.text.startswith(quote * 3, self.pos):
            self._advance(3)
            end = self.text.find(quote * 3, self.pos)
            while quote == '"' and end >= 0 and _escaped(self.text, end):
                end = self.text.find(quote * 3, end + 1)
            if end < 0:
                self._advance(len(self.text) - self.pos)
                return
            # A closing run may hold up to two extra quotes that belong to the string.
            stop = end + 3
            while stop < len(self.text) and stop - end < 5 and self.text[stop] == quote:
                stop += 1
            self._advance(stop - self.pos)
            return
        self._advance()
        while self.pos < len(self.text):
            char = self._peek()
            if char == "\n":
                return  # unterminated: tomllib would have refused it anyway
            self._advance()
            if char == quote:
                return
            if char == "\\" and quote == '"':
                self._advance()

    # -- characters ---------------------------------------------------------

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _advance(self, count: int = 1) -> None:
        end = min(self.pos + count, len(self.text))
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def _skip_blanks(self) -> None:
        while self._peek() in _BLANKS and self.pos < len(self.text):
            self._advance()

    def _skip_blanks_comments_newlines(self) -> None:
        while self.pos < len(self.text):
            char = self._peek()
            if char in _BLANKS or char == "\n":
                self._advance()
            elif char == "#":
                self._skip_to_line_end()
            else:
                return

    def _skip_to_line_end(self) -> None:
        end = self.text.find("\n", self.pos)
        self._advance((len(self.text) if end < 0 else end) - self.pos)


def _escaped(text: str, index: int) -> bool:
    """True when an odd run of backslashes precedes ``text[index]``."""
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _unquote(quoted: str) -> str:
    # tomllib knows every escape; a key it cannot read keeps its raw spelling.
    try:
        value = tomllib.loads(f"k = {quoted}")["k"]
    except tomllib.TOMLDecodeError:
        return quoted
    return value if isinstance(value, str) else quoted
