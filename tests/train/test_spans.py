"""Syntax-aware spans on real Python (standard-library modules)."""
import ast
import random
import textwrap

from support import STDLIB
from train.spans import choose_syntax_spans, syntax_candidates

TYPED = textwrap.dedent('''\
    from typing import Optional

    def lookup(table: dict[str, int], key: str, default: Optional[int] = None) -> int:
        value: int = table.get(key, default)
        return value * 2
    ''')


def _parses_alone(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is a complete Python expression, statement(s), clause or argument list."""
    piece = text[start:end]
    col = start - (text.rfind("\n", 0, start) + 1)
    block = textwrap.dedent(" " * col + piece)
    indented = textwrap.indent(block, "    ")
    attempts = [("(" + piece + "\n)", "eval"), ("f" + piece, "eval"), (block, "exec"),
                (f"def f{piece}: pass", "exec"), ("if x:\n    pass\n" + block, "exec"),
                ("try:\n    pass\n" + block, "exec"), ("try:\n    pass\n" + block + "finally:\n    pass\n", "exec"),
                ("if x:\n" + indented, "exec")]
    for src, mode in attempts:
        try:
            ast.parse(src, mode=mode)
            return True
        except SyntaxError:
            continue
    return False


def test_node_spans_are_whole_statements_or_expressions_of_real_code():
    text = (STDLIB / "textwrap.py").read_text()
    cand = syntax_candidates(text)
    assert len(cand["node"]) > 500
    bad = [text[s:e] for s, e in random.Random(0).sample(cand["node"], 300) if not _parses_alone(text, s, e)]
    assert not bad, bad[:3]
    # a span cut in the middle of a token is caught by the check
    s, e = next((s, e) for s, e in cand["node"] if e - s > 20 and "(" in text[s:e])
    assert not _parses_alone(text, s, s + text[s:e].index("(") + 1)


def test_identifier_spans_are_every_occurrence_of_one_name():
    text = (STDLIB / "bisect.py").read_text()
    cand = syntax_candidates(text)
    for occurrences in cand["identifier"]:
        names = {text[s:e] for s, e in occurrences}
        assert len(names) == 1 and names.pop().isidentifier()
    lo = next(o for o in cand["identifier"] if text[o[0][0]:o[0][1]] == "lo")
    # every `lo` token the tokenize module sees is in the span list
    import io
    import tokenize
    expected = sum(1 for t in tokenize.generate_tokens(io.StringIO(text).readline)
                   if t.type == tokenize.NAME and t.string == "lo")
    assert len(lo) == expected


def test_annotation_slots_are_the_type_annotations():
    cand = syntax_candidates(TYPED)
    assert [TYPED[s:e] for s, e in cand["annotation"]] == ["dict[str, int]", "str", "Optional[int]", "int", "int"]


def test_syntax_spans_non_unicode_offsets_are_characters():
    text = "s = 'héllo wörld'\nt = s.upper()\nprint(t, s)\n"
    cand = syntax_candidates(text)
    assert {text[s:e] for s, e in cand["node"]} >= {"s.upper()", "'héllo wörld'", "print(t, s)"}
    assert all(text[s:e] == "s" for s, e in next(o for o in cand["identifier"] if text[o[0][0]:o[0][1]] == "s"))


def test_choose_syntax_spans_kinds():
    rng = random.Random(1)
    ann = choose_syntax_spans(rng, TYPED, 2, 8, {"node": 0, "identifier": 0, "annotation": 1})
    assert len(ann) == 2 and all(s < e for s, e in ann) and ann == sorted(ann)
    names = choose_syntax_spans(rng, TYPED, 1, 8, {"node": 0, "identifier": 1, "annotation": 0})
    assert len({TYPED[s:e] for s, e in names}) == 1 and len(names) >= 2
    assert choose_syntax_spans(rng, "", 1, 8, {"node": 1, "identifier": 1, "annotation": 1}) == []
