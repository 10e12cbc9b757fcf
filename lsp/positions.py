"""LSP positions <-> offsets into a Python string: the one place where columns are counted.

Rules (LSP 3.17):
- A position is (line, character), both 0-based. `character` counts code units of the negotiated
  position encoding: "utf-16" (the default: a character above U+FFFF counts 2), "utf-8" (bytes) or
  "utf-32" (code points, which is what a Python string index counts).
- Lines end at "\\n", "\\r\\n" or "\\r", nothing else.
- Out-of-range positions clamp, never raise: a character past the end of its line means the end of
  the line (before the line break), a line past the last line means the end of the document, and a
  column that falls inside a character (half a surrogate pair, a byte inside a UTF-8 sequence) means
  the start of the character after it.
- Cost (`Lines`): a document's line table is one C-speed split; a column on an ASCII line (or in
  UTF-32) is an index with no counting, elsewhere a lookup in a table of code-unit starts built once
  per line (numpy), so converting many positions of one long line costs one pass over it, not one
  per position (pygls counts the line in Python for each position).
"""
from __future__ import annotations

import re
from bisect import bisect_right
from functools import lru_cache
from itertools import accumulate, chain, repeat

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
_SPLIT = re.compile(r"(\r\n|\r|\n)")


def code_units(text: str, encoding: str = UTF16) -> int:
    """Length of `text` in code units of `encoding`."""
    if encoding == UTF32 or text.isascii():
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


class Lines:
    """The line table of `text`: LSP positions <-> string offsets for many positions of one text.

    `bounds[2k]` is where line k starts and `bounds[2k + 1]` where it ends (before its break)."""

    def __init__(self, text: str):
        self.text = text
        if "\r" in text:
            pieces = map(len, _SPLIT.split(text))  # line, break, line, ..., line
        else:  # the common case, and str.split is a memchr
            lengths = list(map(len, text.split("\n")))
            pieces = chain(chain.from_iterable(zip(lengths[:-1], repeat(1))), lengths[-1:])
        self.bounds = list(accumulate(pieces, initial=0))
        self.count = len(self.bounds) // 2
        """Number of lines (an empty text and a text ending in a break have an empty last line)."""
        self._ascii = text.isascii()
        self._units: dict[tuple[int, str], object] = {}

    def line_of(self, offset: int) -> int:
        """The line that holds `offset` (a break belongs to the line it ends)."""
        return max(bisect_right(self.bounds, offset) - 1, 0) // 2

    def offset(self, line: int, character: int, encoding: str = UTF16) -> tuple[int, int, bool]:
        """(string offset, line, clamped) of an LSP position; `clamped` when the position was out of
        range (past its line's end, past the last line, negative) and moved as the module rules say."""
        if line < 0:
            line, character, clamped = 0, 0, True
        elif line >= self.count:
            return len(self.text), self.count - 1, True
        else:
            clamped = character < 0
            character = max(character, 0)
        start, end = self.bounds[2 * line], self.bounds[2 * line + 1]
        table = self._table(line, encoding)
        if table is None:
            return start + min(character, end - start), line, clamped or character > end - start
        import numpy as np

        i = int(np.searchsorted(table, character, "left"))
        exact = i < len(table) and int(table[i]) == character  # not past the end, not inside a character
        return start + min(i, end - start), line, clamped or not exact

    def units_at(self, line: int, offset: int, encoding: str = UTF16) -> int:
        """The column (code units of `encoding`) of string `offset` on `line`."""
        i = offset - self.bounds[2 * line]
        table = self._table(line, encoding)
        return i if table is None else int(table[i])

    def _table(self, line: int, encoding: str):
        """None when a column of `line` is a string index (ASCII, UTF-32), else the code-unit start of
        each character and the line's length in units, as one numpy array."""
        if encoding == UTF32 or self._ascii:
            return None
        key = (line, encoding)
        if key not in self._units:
            segment = self.text[self.bounds[2 * line]:self.bounds[2 * line + 1]]
            self._units[key] = None if segment.isascii() else _unit_starts(segment, encoding)
        return self._units[key]


def _unit_starts(segment: str, encoding: str):
    import numpy as np

    points = np.frombuffer(segment.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if encoding == UTF8:
        units = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
    else:
        units = 1 + (points > 0xFFFF)
    table = np.zeros(len(points) + 1, dtype=np.int64)
    np.cumsum(units, out=table[1:])
    return table


def lines_of(text: str) -> Lines:
    """The line table of `text`, kept for the last few texts: a request converts several positions of
    one document version (the string's hash is cached, so a hit costs no pass over it)."""
    return _lines_of(text)


@lru_cache(maxsize=4)
def _lines_of(text: str) -> Lines:
    return Lines(text)


def to_offset(text: str, line: int, character: int, encoding: str = UTF16) -> int:
    """String offset of an LSP position in `text` (clamped as the module docstring says)."""
    return lines_of(text).offset(line, character, encoding)[0]


def to_position(text: str, offset: int, encoding: str = UTF16) -> tuple[int, int]:
    """LSP (line, character) of a string offset in `text` (clamped to [0, len(text)]; an offset inside
    a line break counts as the end of that line)."""
    lines = lines_of(text)
    offset = min(max(offset, 0), len(text))
    line = lines.line_of(offset)
    return line, lines.units_at(line, min(offset, lines.bounds[2 * line + 1]), encoding)


def char_offsets(data: bytes):
    """A function from a byte offset of UTF-8 `data` (what tree-sitter reports) to the string offset
    of the same place in `data.decode()`, built in one pass over `data`. A byte offset inside a
    character maps to the offset after that character; lookups cost O(1), where decoding
    `data[:byte]` per identifier made a parse quadratic in the file size."""
    if data.isascii():
        return _same
    import numpy as np

    starts = (np.frombuffer(data, dtype=np.uint8) & 0xC0) != 0x80  # bytes that begin a code point
    table = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum(starts, out=table[1:])
    return lambda byte: int(table[byte])


def _same(byte: int) -> int:
    return byte
