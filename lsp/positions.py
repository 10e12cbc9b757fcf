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
"""
from __future__ import annotations

import re

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
_BREAK = re.compile(r"\r\n|\r|\n")


def code_units(text: str, encoding: str = UTF16) -> int:
    """Length of `text` in code units of `encoding`."""
    if encoding == UTF32 or text.isascii():
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _line_bounds(text: str, line: int) -> tuple[int, int] | None:
    """(start, end) offsets of 0-based `line` (end before its break), or None past the last line."""
    if line < 0:
        line = 0
    start, n = 0, 0
    for m in _BREAK.finditer(text):
        if n == line:
            return start, m.start()
        start, n = m.end(), n + 1
    return (start, len(text)) if n == line else None


def to_offset(text: str, line: int, character: int, encoding: str = UTF16) -> int:
    """String offset of an LSP position in `text` (clamped as the module docstring says)."""
    bounds = _line_bounds(text, line)
    if bounds is None:
        return len(text)
    start, end = bounds
    character = max(character, 0)
    segment = text[start:end]
    if encoding == UTF32 or segment.isascii():
        return start + min(character, len(segment))
    used = 0
    for i, ch in enumerate(segment):
        if used >= character:
            return start + i
        used += code_units(ch, encoding)
    return end


def to_position(text: str, offset: int, encoding: str = UTF16) -> tuple[int, int]:
    """LSP (line, character) of a string offset in `text` (clamped to [0, len(text)])."""
    offset = min(max(offset, 0), len(text))
    line, start = 0, 0
    for m in _BREAK.finditer(text, 0, offset):
        if m.end() > offset:  # offset between "\r" and "\n": count it as the end of that line
            break
        line, start = line + 1, m.end()
    return line, code_units(text[start:offset], encoding)


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
