"""Applying a didChange (lsp/documents.py) against an independent reference: each change applied on its
own, positions counted with Python's codecs, character by character."""
import random
import re

import pytest
from lsprotocol import types

from lsp.documents import apply_changes
from lsp.positions import UTF8, UTF16, UTF32

_BREAKS = re.compile(r"\r\n|\r|\n")


def units_ref(ch: str, encoding: str) -> int:
    return {UTF8: len(ch.encode("utf-8", "surrogatepass")), UTF16: len(ch.encode("utf-16-le", "surrogatepass")) // 2,
            UTF32: 1}[encoding]


def offset_ref(text: str, line: int, character: int, encoding: str) -> int:
    """LSP position -> offset, one character at a time; clamps as lsp.positions says."""
    starts, ends = [0], []
    for m in _BREAKS.finditer(text):
        ends.append(m.start())
        starts.append(m.end())
    ends.append(len(text))
    if line < 0:
        line, character = 0, 0
    if line >= len(starts):
        return len(text)
    used, i = 0, starts[line]
    while i < ends[line] and used < max(character, 0):
        used += units_ref(text[i], encoding)
        i += 1
    return i


def apply_ref(text: str, changes, encoding: str) -> str:
    for c in changes:
        if getattr(c, "range", None) is None:
            text = c.text
            continue
        r = c.range
        s = offset_ref(text, r.start.line, r.start.character, encoding)
        e = max(s, offset_ref(text, r.end.line, r.end.character, encoding))
        text = text[:s] + c.text + text[e:]
    return text


def change(sl, sc, el, ec, text):
    return types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(sl, sc), types.Position(el, ec)), text=text)


def position_of(text: str, offset: int, encoding: str) -> tuple[int, int]:
    line_start, line = 0, 0
    for m in _BREAKS.finditer(text, 0, offset):
        if m.end() > offset:
            break
        line, line_start = line + 1, m.end()
    return line, sum(units_ref(ch, encoding) for ch in text[line_start:offset])


ALPHABET = ["a", "b", " ", "\n", "é", "😀", "\r\n", "\r", "\ud800", "日"]


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def random_changes(rng: random.Random, text: str, encoding: str, n: int, order: str):
    """`n` changes in `order` ("down": bottom to top, "up": top to bottom, "any"), each valid for the
    text the earlier ones leave, sometimes out of range."""
    out, current = [], text
    cursor = len(text) if order == "down" else 0
    for _ in range(n):
        if order == "down":
            e = rng.randint(0, cursor)
            s = rng.randint(0, e)
        elif order == "up":
            s = rng.randint(cursor, len(current))
            e = rng.randint(s, len(current))
        else:
            s = rng.randint(0, len(current))
            e = rng.randint(s, len(current))
        new = random_text(rng, rng.choice([0, 0, 1, 3]))
        (sl, sc), (el, ec) = position_of(current, s, encoding), position_of(current, e, encoding)
        if rng.random() < 0.05:
            ec += 50  # past the line's end
        if rng.random() < 0.02:
            sl, el = sl + 1000, el + 1000  # past the last line
        c = change(sl, sc, el, ec, new)
        out.append(c)
        current = apply_ref(current, [c], encoding)
        cursor = s if order == "down" else min(s + len(new), len(current))
    return out


@pytest.mark.parametrize("encoding", [UTF16, UTF8, UTF32])
@pytest.mark.parametrize("order", ["down", "up", "any"])
def test_random_changes_match_the_reference(encoding, order):
    rng = random.Random(f"{encoding}{order}")
    for _ in range(300):
        text = random_text(rng, rng.randint(0, 40))
        changes = random_changes(rng, text, encoding, rng.randint(1, 8), order)
        assert apply_changes(text, changes, encoding) == apply_ref(text, changes, encoding), (text, changes)


def test_a_whole_text_change_starts_again():
    changes = [change(0, 0, 0, 1, "X"), types.TextDocumentContentChangeWholeDocument(text="new\ntext"),
               change(1, 0, 1, 4, "line")]
    assert apply_changes("old", changes) == "new\nline"


def test_replace_all_on_a_long_line_bottom_to_top():
    """VS Code's Replace All: every range in one line, last first."""
    line = "x = [" + ", ".join(["abc"] * 1000) + "]"
    starts = [m.start() for m in re.finditer("abc", line)]
    changes = [change(0, s, 0, s + 3, "value_é") for s in reversed(starts)]
    assert apply_changes(line, changes) == line.replace("abc", "value_é")
    ups = []  # the same, top to bottom: each position in the text the earlier edits left
    for k, s in enumerate(starts):
        at = s + k * (len("value_é") - 3)
        ups.append(change(0, at, 0, at + 3, "value_é"))
    assert apply_changes(line, ups) == line.replace("abc", "value_é")
