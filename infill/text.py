"""Text facts shared by the commands, the evaluation harness and the language server, each defined once.

- Locations: `parse_location` reads `FILE:LINE:COL` (1-based; columns count characters), `split_at`
  cuts a text there, `read_source` reads a UTF-8 file. Their errors are `UserError` (one line).
- Annotations: `cut_annotation` ends a generated annotation at its first stop outside brackets and
  strings, `normalise` is its canonical text (an `ast` round trip), so spacing and quotes never decide
  a match.
"""
from __future__ import annotations

import ast
from pathlib import Path


class UserError(Exception):
    """An error the user can fix; printed as one line."""


def parse_location(spec: str) -> tuple[Path, int, int]:
    """`FILE:LINE:COL` (1-based) -> (path, line, col)."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise UserError(f"expected FILE:LINE:COL with 1-based numbers, got {spec!r}")
    line, col = int(parts[1]), int(parts[2])
    if line < 1 or col < 1:
        raise UserError(f"line and column are 1-based, got {line}:{col}")
    return Path(parts[0]), line, col


def split_at(text: str, line: int, col: int) -> tuple[str, str]:
    """(prefix, suffix) of `text` at 1-based line and column (columns count characters)."""
    lines = text.splitlines(keepends=True) or [""]
    if text.endswith("\n"):
        lines.append("")
    if line > len(lines):
        raise UserError(f"line {line} is past the end of the file ({len(lines)} lines)")
    body = lines[line - 1].rstrip("\r\n")
    if col > len(body) + 1:
        raise UserError(f"column {col} is past the end of line {line} ({len(body)} characters)")
    offset = sum(len(x) for x in lines[:line - 1]) + col - 1
    return text[:offset], text[offset:]


def read_source(path: Path) -> str:
    """The UTF-8 text of the file at `path`; UserError when it is missing or not text."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None


def cut_annotation(text: str, stops: str) -> str:
    """`text` up to the first character of `stops` outside brackets and strings, or a line break."""
    depth, quote = 0, ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0 and ch in stops:
                return text[:i]
            depth -= 1
        elif ch == "\n" or (depth == 0 and ch in stops):
            return text[:i]
    return text


def normalise(annotation: str) -> str | None:
    """The canonical text of an annotation (`ast` round trip), or None if it does not parse."""
    try:
        return ast.unparse(ast.parse(annotation.strip(), mode="eval").body)
    except (SyntaxError, ValueError, RecursionError):
        return None
