"""Holes a programmer left in a sketch (`...`, `pass  # TODO`, `todo!()`), found with tree-sitter, and the
edit that fills them: the one home of the hole patterns.

A hole is one *unit* of code whose whole text matches a pattern. Units are the statements of a body
(Python `block`, C/C++ `compound_statement`, JS/TS `statement_block`, Go `statement_list`, Rust
`block`: what `_BODIES` lists) and every comment; a statement followed on its line by a comment
(`pass  # TODO`) is one unit of both, joined by the text between them. A unit's text is matched with
`re.fullmatch` (DOTALL), after a trailing `;` is dropped.

Rules:
- The default patterns (`DEFAULT_PATTERNS`, documented in docs/lsp.md) cover Python (`...`,
  `pass  # TODO`/`# FIXME`, `raise NotImplementedError[(...)]`, `# TODO: <what>`) and C / C++ / JS / TS /
  Go / Rust (`/* TODO */`, `// TODO`, `todo!()`, `unimplemented!()`, `panic("TODO")`,
  `throw new Error("TODO")`). The `holePatterns` option replaces them.
- A pattern with a non-empty named group `hint` keeps its unit: the comment stays in the document and
  in the prompt, and the hole is the line after it (`# TODO: parse the header` is read by the model
  and stays as the comment of the code it asked for). A hint comment right before another hole is
  that hole's hint, not a hole of its own.
- A unit alone on its line(s) is a *line hole*: the hole is its whole lines, indentation and line
  break included, so a fill is whole lines (`complete_fill` ends it with a line break). A unit that
  shares its line with other code (`def f(): ...`, `{ todo!() }`) is replaced exactly.
- Scope: the selection when there is one (the holes inside it), else the innermost function or class
  around the cursor that holds a hole (`_DEFINITIONS`). A cursor outside every definition finds none.
- Offsets are string offsets into the text (tree-sitter's byte offsets converted once,
  `lsp.positions.char_offsets`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from lsp import positions, syntax

DEFAULT_PATTERNS: tuple[str, ...] = (
    r"\.\.\.",                                                    # Python: a statement that is only ...
    r"pass\s*#\s*(TODO|FIXME)\b.*",                              # Python: pass  # TODO / # FIXME
    r"raise\s+NotImplementedError(\s*\(.*\))?",                  # Python: raise NotImplementedError[(...)]
    r"(#|//|/\*)\s*(TODO|FIXME)\b:?\s*(?P<hint>.*?)\s*(\*/)?",   # # TODO: <what> (hint); // TODO, /* TODO */
    r"(todo|unimplemented)!\s*\(.*\)",                            # Rust
    r"panic\(\s*\"TODO\b.*\"\s*\)",                               # Go
    r"throw\s+new\s+Error\(\s*[\"'`]TODO\b.*[\"'`]\s*\)",         # JS / TS
)
"""Matched against a unit's whole text (see the module docstring). A non-empty `hint` group keeps the unit."""

_BODIES = frozenset({"block", "compound_statement", "statement_block", "statement_list", "module",
                     "translation_unit", "program", "source_file"})
_DEFINITIONS = frozenset({
    "function_definition", "class_definition",                                       # Python, C, C++
    "class_specifier", "struct_specifier",                                           # C++
    "function_declaration", "generator_function_declaration", "method_definition",   # JS, TS, Go
    "function_expression", "arrow_function", "class_declaration", "class",
    "method_declaration", "func_literal",                                            # Go
    "function_item", "impl_item", "trait_item", "closure_expression",               # Rust
})
_NAME_FIELDS = ("name", "declarator", "type")


class BadPattern(ValueError):
    """A `holePatterns` entry that is not a regular expression."""


@dataclass(frozen=True)
class Hole:
    start: int
    """String offsets of the text a fill replaces (start == end: an insertion after a hint)."""
    end: int
    written: str
    """The hole's text as written (empty after a hint): what a sequential engine leaves in a later suffix."""
    hint: str | None = None
    """The hint comment's words, for a hole after `# TODO: <what>`."""
    lines: bool = True
    """Whole lines: the fill is whole lines, indentation and final line break included."""


@dataclass(frozen=True)
class Holes:
    """The holes of one scope, in document order."""

    name: str
    """The function or class name, or "" for a selection outside every definition."""
    start: int
    end: int
    holes: tuple[Hole, ...]

    def pieces(self, text: str) -> list[str]:
        """The len(holes) + 1 texts around the holes: the whole document, cut at every hole."""
        cuts = [0] + [x for h in self.holes for x in (h.start, h.end)] + [len(text)]
        return [text[cuts[i]:cuts[i + 1]] for i in range(0, len(cuts), 2)]

    def title(self) -> str:
        n = len(self.holes)
        where = f"`{self.name}`" if self.name else "the selection"
        return f"Fill {n} hole{'s' if n != 1 else ''} in {where}"


@lru_cache(maxsize=32)
def compile_patterns(patterns: tuple[str, ...]) -> tuple[re.Pattern, ...]:
    """Compiled patterns; `BadPattern` names the first one that does not compile."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p, re.DOTALL))
        except re.error as exc:
            raise BadPattern(f"hole pattern {p!r} is not a regular expression: {exc}") from None
    return tuple(out)


def find_holes(text: str, start: int, end: int | None = None, *, language: str | None,
               patterns: tuple[str, ...] | None = None) -> Holes | None:
    """The holes to fill for a cursor at `start` (or the selection [start, end)), or None when there
    are none, the cursor is outside every definition, or the language has no grammar."""
    parser = syntax.parser_for(language)
    if parser is None:
        return None
    compiled = compile_patterns(patterns if patterns is not None else DEFAULT_PATTERNS)
    data = text.encode("utf-8", "surrogatepass")
    root = parser.parse(data).root_node
    offset = positions.char_offsets(data)
    found = _holes(text, root, offset, compiled)
    if end is not None and end > start:
        inside = tuple(h for h in found if start <= h.start and h.end <= end)
        definition = _innermost(root, offset, start, end)
        return Holes(_name(definition) if definition is not None else "", start, end, inside) if inside else None
    node = root.descendant_for_byte_range(_byte(text, start), _byte(text, start))
    while node is not None:
        if node.type in _DEFINITIONS:
            lo, hi = offset(node.start_byte), offset(node.end_byte)
            inside = tuple(h for h in found if lo <= h.start and h.end <= _line_end(text, hi))
            if inside:
                return Holes(_name(node), lo, hi, inside)
        node = node.parent
    return None


def complete_fill(hole: Hole, fill: str) -> str:
    """The text that replaces `hole`: a line hole's fill ends in a line break."""
    if hole.lines and fill and not fill.endswith("\n"):
        return fill + "\n"
    return fill


def edits(holes: Holes, fills: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, new text) for each hole whose fill is not blank (a blank fill leaves its hole as written)."""
    return [(h.start, h.end, complete_fill(h, f)) for h, f in zip(holes.holes, fills) if f.strip()]


def apply(text: str, changes: list[tuple[int, int, str]]) -> str:
    """`text` with non-overlapping (start, end, new) changes applied."""
    out, at = [], 0
    for start, end, new in sorted(changes):
        out += [text[at:start], new]
        at = end
    return "".join(out) + text[at:]


# internals ------------------------------------------------------------------------------------------

def _byte(text: str, offset: int) -> int:
    return len(text[:offset].encode("utf-8", "surrogatepass"))


def _line_start(text: str, at: int) -> int:
    return text.rfind("\n", 0, at) + 1


def _line_end(text: str, at: int) -> int:
    """The offset after the line break that ends the line holding `at` (or the end of the text)."""
    nl = text.find("\n", at)
    return len(text) if nl < 0 else nl + 1


def _units(root):
    """(first node, last node) of every unit: body statements (with a comment on their last line) and comments."""
    stack = [root]
    while stack:
        node = stack.pop()
        children = node.children
        stack.extend(reversed(children))
        if node.type not in _BODIES:
            if node.type == "comment" and (node.parent is None or node.parent.type not in _BODIES):
                yield node, node
            continue
        i = 0
        while i < len(children):
            child = children[i]
            if not child.is_named or child.type in _BODIES:  # a body inside a body (Go) is walked on its own
                i += 1
                continue
            nxt = children[i + 1] if i + 1 < len(children) else None
            if child.type != "comment" and nxt is not None and nxt.type == "comment" \
                    and nxt.start_point[0] == child.end_point[0]:
                yield child, nxt  # a comment after code on its line is no hole of its own
                i += 2
                continue
            yield child, child
            i += 1


def _holes(text: str, root, offset, patterns: tuple[re.Pattern, ...]) -> list[Hole]:
    holes: dict[int, Hole] = {}
    covered: list[tuple[int, int]] = []
    for first, last in _units(root):
        lo, hi = offset(first.start_byte), offset(last.end_byte)
        hi = lo + len(text[lo:hi].rstrip())
        if any(a <= lo and hi <= b for a, b in covered):
            continue
        unit = text[lo:hi].strip()
        unit = unit[:-1].rstrip() if unit.endswith(";") else unit
        match = next((m for p in patterns if (m := p.fullmatch(unit))), None)
        if match is None:
            continue
        line_lo, line_hi = _line_start(text, lo), _line_end(text, hi)
        alone = not text[line_lo:lo].strip() and not text[hi:line_hi].strip()
        hint = match.groupdict().get("hint")
        if hint and not alone:
            continue
        covered.append((lo, hi))
        if hint:
            holes[line_hi] = holes.get(line_hi) or Hole(line_hi, line_hi, "", hint.strip())
            continue
        hole = Hole(line_lo, line_hi, text[line_lo:line_hi]) if alone else Hole(lo, hi, text[lo:hi], lines=False)
        holes[hole.start] = hole  # a hint hole at the same place was this hole's hint
    ordered = sorted(holes.values(), key=lambda h: (h.start, h.end))
    out: list[Hole] = []
    for h in ordered:  # drop overlaps (a unit inside a hole already taken)
        if out and h.start < out[-1].end:
            continue
        out.append(h)
    return out


def _innermost(root, offset, start: int, end: int):
    """The innermost definition that holds [start, end) (string offsets), or None."""
    best, stack = None, [root]
    while stack:
        node = stack.pop()
        if offset(node.start_byte) <= start and end <= offset(node.end_byte):
            if node.type in _DEFINITIONS:
                best = node
            stack.extend(node.children)
    return best


def _name(node) -> str:
    """A definition's name: its name field, the identifier inside its declarator (C), its type (a Rust
    impl), or the variable it is assigned to (an arrow function); "" when it has none."""
    for field in _NAME_FIELDS:
        child = node.child_by_field_name(field)
        while child is not None and child.child_by_field_name("declarator") is not None:
            child = child.child_by_field_name("declarator")
        if child is not None:
            if field != "name" and child.type not in ("identifier", "field_identifier", "type_identifier",
                                                      "qualified_identifier", "destructor_name",
                                                      "operator_name", "generic_type", "scoped_type_identifier"):
                continue
            return child.text.decode("utf-8", "replace")
    parent = node.parent
    if parent is not None and parent.type in ("variable_declarator", "pair", "assignment_expression"):
        target = parent.child_by_field_name("name") or parent.child_by_field_name("key") \
            or parent.child_by_field_name("left")
        if target is not None:
            return target.text.decode("utf-8", "replace")
    return ""
